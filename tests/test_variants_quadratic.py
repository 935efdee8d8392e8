"""Unnormalised SAM, momentum and the switch to SAM on quadratics, against what the update rules actually do.

Truths used: single steps and long runs of :mod:`samedge_lib.theory.updates` on quadratics with a known spectrum
(negative eigenvalues included), GD's own period-2 orbit at ``eta lam1 = 2``, and the inverse relations
between ``R(alpha)`` and ``alpha``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samedge_lib.core import quadratic
from samedge_lib.theory import edges
from samedge_lib.theory.updates import gd_step, sam_step


def test_one_usam_step_multiplies_each_component_and_shrinks_exactly_on_the_stable_set():
    eta, r = 0.1, 0.05
    e_u = edges.usam_edge(eta=eta, r=r)
    lo, hi = edges.usam_negative_window(eta=eta, r=r)
    assert lo < hi < 0 < e_u
    rng = np.random.default_rng(3)
    lam = np.concatenate([rng.uniform(1.2 * lo, 0.0, 150), rng.uniform(0.0, 1.3 * e_u, 150)])
    quad = quadratic.Quadratic(lam, seed=3, w_star=rng.normal(size=lam.size))
    w0 = quad.w_star + torch.as_tensor(rng.normal(scale=1e-3, size=lam.size))
    run = quadratic.variant_run(quad, w0, eta, r, 1, normalized=False)
    observed = run.multipliers()[0]
    np.testing.assert_allclose(observed, edges.usam_multiplier(eta=eta, r=r, lam=lam), atol=1e-9)
    stable = ((lam > 0) & (lam < e_u)) | ((lam > lo) & (lam < hi))
    assert ((np.abs(observed) < 1) == stable).all()
    assert stable[lam < 0].any(), "the example should probe the negative-curvature window"


@pytest.mark.parametrize(("factor", "converges"), [(0.999, True), (1.001, False)])
def test_usam_has_a_fixed_edge_and_no_self_tuning(factor, converges):
    """USAM is linear: 0.1 % below its edge the top component decays, 0.1 % above it grows, whatever ||g|| does.

    There ``|multiplier| = 1 -+ 0.0028``, so 5000 steps change it by ``exp(-+13.8)``.
    """
    eta, r = 0.1, 0.05
    lam1 = factor * edges.usam_edge(eta=eta, r=r)
    quad = quadratic.Quadratic([lam1, 0.3 * lam1])
    run = quadratic.variant_run(quad, [1e-3, 1e-3], eta, r, 5000, normalized=False)
    assert np.allclose(run.sam_edge, edges.usam_edge(eta=eta, r=r))
    change = abs(run.components[-1, 0]) / 1e-3
    assert (change < 1e-5) if converges else (change > 1e5)


def test_switching_sam_on_at_gds_edge_grows_the_top_component_by_one_plus_two_over_alpha():
    eta, rho = 0.2, 0.01
    quad = quadratic.Quadratic([2 / eta, 1.0])  # eta lam1 = 2: GD flips the top component exactly
    params = [torch.tensor([0.05, 0.3], dtype=torch.float64)]
    for _ in range(300):
        params, _ = gd_step(params, quad.grad_fn, eta)  # the second component dies, the first flips forever
    c_before = float(quad.components(params[0])[0])
    g = float(torch.linalg.vector_norm(quad.grad(params[0])))
    new, _ = sam_step(params, quad.grad_fn, eta, rho, eps=0.0)
    c_after = float(quad.components(new[0])[0])
    a = edges.alpha(eta=eta, rho=rho, grad_norm=g)
    assert c_after / c_before == pytest.approx(-edges.switch_growth(a), rel=1e-9)


@pytest.mark.parametrize(("beta", "nesterov"), [(0.5, False), (0.9, False), (0.8, True)])
def test_variant_run_of_sam_with_momentum_settles_on_its_own_edge(beta, nesterov):
    eta_eff, rho = 1.6, 0.05
    eta = eta_eff * (1 + beta) / ((1 + 2 * beta) if nesterov else 1.0)
    quad = quadratic.Quadratic([1.0, 0.1])
    run = quadratic.variant_run(quad, [0.3, 0.2], eta, rho, 1500, beta=beta, nesterov=nesterov)
    assert run.frame()["lambda1_over_edge"].iloc[-1] == pytest.approx(1.0, rel=1e-9)
    amp = edges.momentum_two_cycle_amplitude(eta=eta, rho=rho, beta=beta, nesterov=nesterov, lam1=1.0)
    assert abs(run.components[-1, 0]) == pytest.approx(amp, rel=1e-9)
    naive = edges.sam_edge(eta=eta, rho=rho, grad_norm=run.grad_norm[-1])
    assert abs(1.0 / naive - 1) > 0.05, "the momentum-free formula should miss this orbit"


def test_variant_run_without_variants_is_sam_run():
    quad = quadratic.Quadratic([3.0, 1.0, 0.5], seed=1)
    a = quadratic.sam_run(quad, [0.1, -0.2, 0.3], 0.4, 0.05, 50)
    b = quadratic.variant_run(quad, [0.1, -0.2, 0.3], 0.4, 0.05, 50)
    assert np.array_equal(a.components, b.components) and np.array_equal(a.sam_edge, b.sam_edge)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("r", [0.0, 0.05])
def test_linear_thresholds_bracket_the_momentum_edges(r, nesterov):
    eta = 0.1
    betas = [0.3, 0.8, 0.95]
    grid = np.geomspace(0.8 / eta, 4.2 / eta, 801)
    found = quadratic.linear_thresholds(grid, eta, r, betas, nesterov, steps=2500)
    for _, row in found.iterrows():
        edge = edges.momentum_usam_edge(eta=eta, r=r, beta=row["beta"], nesterov=nesterov)
        assert row["lower"] < edge <= row["upper"], (row["beta"], row["lower"], edge, row["upper"])


def test_linear_thresholds_refuse_a_grid_that_misses_the_switch():
    with pytest.raises(ValueError, match="straddle"):
        quadratic.linear_thresholds(np.linspace(1.0, 2.0, 20), 0.1, 0.0, [0.5])
    with pytest.raises(ValueError, match="betas"):
        quadratic.linear_thresholds(np.linspace(1.0, 50.0, 20), 0.1, 0.0, [0.0], nesterov=True)


def test_alpha_of_ratio_inverts_r_and_the_regime_bounds_mean_what_they_say():
    ratios = np.linspace(0.0, 0.999, 50)
    np.testing.assert_allclose(edges.edge_ratio(edges.alpha_of_ratio(ratios)), ratios, atol=1e-12)
    low, high = edges.regime_bounds(0.1)
    assert edges.edge_ratio(low) / math.sqrt(low) == pytest.approx(0.9, rel=1e-12)
    assert edges.edge_ratio(high) == pytest.approx(0.9, rel=1e-12)
    assert (low, high) == pytest.approx((0.0445679, 8.1), rel=1e-5)
    assert edges.edge_ratio(0.5) == pytest.approx(0.5, rel=1e-15)
    assert [edges.edge_regime(a) for a in (0.01, 0.5, 20.0)] == ["square-root", "crossover", "GD-like"]
    with pytest.raises(ValueError, match="ratio"):
        edges.alpha_of_ratio(1.0)
