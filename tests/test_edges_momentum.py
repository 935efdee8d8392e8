"""The edges beyond the paper (momentum, the collapse variable, the elasticity) against independent truths.

Truths used: the spectral radius of the linear recursion the update rule defines on one eigen-component
(written out here from PyTorch's momentum conventions, not from the closed forms), long float64 runs of
SAM with momentum on a 2-D quadratic, and finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from samedge_lib.theory import edges


def companion(h: float, eta: float, beta: float, nesterov: bool) -> np.ndarray:
    """State (c, v) -> (c+, v+) for v+ = beta v + h c and c+ = c - eta v+ (heavy ball) or c - eta (h c + beta v+)."""
    if nesterov:
        return np.array([[1 - eta * h * (1 + beta), -eta * beta * beta], [h, beta]])
    return np.array([[1 - eta * h, -eta * beta], [h, beta]])


def spectral_radius(m: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(m))))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("beta", [0.3, 0.5, 0.9, 0.99])
def test_momentum_edge_is_where_the_recursion_loses_stability(beta: float, nesterov: bool):
    rng = np.random.default_rng(int(100 * beta) + nesterov)
    for _ in range(20):
        eta, rho, g = 10 ** rng.uniform(-2, 0.5), 10 ** rng.uniform(-3, 0), 10 ** rng.uniform(-3, 1)
        s = edges.momentum_sam_edge(eta=eta, rho=rho, beta=beta, nesterov=nesterov, grad_norm=g)
        for lam, stable in ((s * (1 - 1e-6), True), (s * (1 + 1e-6), False)):
            h = lam + rho * lam**2 / g  # the SAM curvature of that eigendirection at frozen ||g||
            r = spectral_radius(companion(h, eta, beta, nesterov))
            assert (r < 1) == stable, (eta, rho, g, beta, lam / s, r)


def test_beta_zero_and_rho_zero_limits():
    assert edges.momentum_sam_edge(eta=0.5, rho=0.1, beta=0.0, grad_norm=0.3) == pytest.approx(
        edges.sam_edge(eta=0.5, rho=0.1, grad_norm=0.3), rel=1e-15
    )
    assert edges.momentum_sam_edge(eta=0.5, rho=0.0, beta=0.9, grad_norm=0.3) == pytest.approx(2 * 1.9 / 0.5, rel=1e-15)
    assert edges.momentum_sam_edge(eta=0.5, rho=0.0, beta=0.9, nesterov=True, grad_norm=0.3) == pytest.approx(
        2 * 1.9 / (0.5 * 2.8)
    )
    assert edges.momentum_usam_edge(eta=0.5, r=0.2, beta=0.0) == pytest.approx(edges.usam_edge(eta=0.5, r=0.2))


@pytest.mark.parametrize(("beta", "nesterov"), [(0.5, False), (0.9, False), (0.9, True)])
def test_sam_with_momentum_settles_on_its_two_cycle(beta: float, nesterov: bool):
    """Normalised SAM (no eps) with momentum on a 2-D quadratic: the orbit's amplitude and lam1 on the edge."""
    lam = np.array([1.0, 0.1])
    eta_eff = 1.6  # eta_eff * lam1 = 1.6 < 2: a 2-cycle exists
    eta = eta_eff * (1 + beta) if not nesterov else eta_eff * (1 + beta) / (1 + 2 * beta)
    rho = 0.05
    w, v = np.array([0.3, 0.2]), np.zeros(2)
    for _ in range(40000):
        g = lam * w
        s = lam * (w + rho * g / np.linalg.norm(g))
        v = beta * v + s
        w = w - eta * (s + beta * v if nesterov else v)
    a = edges.momentum_two_cycle_amplitude(eta=eta, rho=rho, beta=beta, nesterov=nesterov, lam1=1.0)
    assert abs(w[0]) == pytest.approx(a, rel=1e-9)
    assert abs(w[1]) < 1e-12
    g_norm = float(np.linalg.norm(lam * w))
    assert edges.momentum_sam_edge(eta=eta, rho=rho, beta=beta, nesterov=nesterov, grad_norm=g_norm) == pytest.approx(
        1.0, rel=1e-9
    )


def test_collapse_variable_is_one_exactly_on_the_edge():
    rng = np.random.default_rng(0)
    g, eta, rho = 10 ** rng.uniform(-3, 1, 100), 10 ** rng.uniform(-2, 0.5, 100), 10 ** rng.uniform(-3, 0, 100)
    s = edges.sam_edge(eta=eta, rho=rho, grad_norm=g)
    assert np.max(np.abs(edges.collapse_variable(eta=eta, rho=rho, grad_norm=g, lam1=s) - 1)) < 1e-12
    assert np.all(edges.collapse_variable(eta=eta, rho=rho, grad_norm=g, lam1=0.9 * s) < 1)
    assert np.all(edges.collapse_variable(eta=eta, rho=rho, grad_norm=g, lam1=1.1 * s) > 1)


@pytest.mark.parametrize("a", [1e-4, 0.01, 0.5, 1.0, 8.1, 100.0])
def test_elasticity_is_the_log_derivative_of_the_edge(a: float):
    eta, rho = 0.7, 0.2
    g = 2 * rho * a / eta
    d = 1e-5
    fd = (
        math.log(edges.sam_edge(eta=eta, rho=rho, grad_norm=g * math.exp(d)))
        - math.log(edges.sam_edge(eta=eta, rho=rho, grad_norm=g * math.exp(-d)))
    ) / (2 * d)
    assert edges.edge_elasticity(a) == pytest.approx(fd, rel=1e-7)
    assert 0 < edges.edge_elasticity(a) <= 0.5


@pytest.mark.parametrize(
    ("beta", "nesterov", "match"), [(1.0, False, r"\[0, 1\)"), (-0.1, False, r"\[0, 1\)"), (0.0, True, "beta > 0")]
)
def test_bad_momentum_is_refused(beta, nesterov, match):
    with pytest.raises(ValueError, match=match):
        edges.momentum_sam_edge(eta=0.5, rho=0.1, beta=beta, nesterov=nesterov, grad_norm=0.1)
