"""samedge_lib.core.quadratic: one SAM step's per-eigendirection multipliers on a quadratic (A4), the 2-cycle a long
SAM run converges to, sitting on the SAM-edge (A5), and the stability map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samedge_lib.core.quadratic import (
    Quadratic,
    boundary_distance,
    random_orthogonal,
    sam_run,
    stability_boundary,
    stability_map,
)
from samedge_lib.theory.edges import sam_edge
from samedge_lib.theory.updates import sam_step

F64 = torch.float64


def random_quadratic(dim: int, seed: int, lam_max: float = 10.0) -> Quadratic:
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.05, lam_max, dim)
    return Quadratic(lam, seed=seed, w_star=rng.normal(size=dim))


# ------------------------------------------------------------------------------------------- the loss


def test_quadratic_loss_grad_hessian_against_autograd() -> None:
    q = random_quadratic(6, seed=3)
    w = torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(0))
    h = torch.autograd.functional.hessian(q.loss, w)
    torch.testing.assert_close(h, q.hessian(), rtol=1e-12, atol=1e-12)
    wr = w.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(q.loss(wr), wr)
    torch.testing.assert_close(g, q.grad(w), rtol=1e-12, atol=1e-12)
    # the spectrum is the one asked for, and w* is a minimiser with loss 0
    torch.testing.assert_close(torch.linalg.eigvalsh(q.hessian()), torch.sort(q.eigenvalues).values)
    assert q.loss(q.w_star).item() == 0.0
    loss, grads = q.grad_fn([w])
    assert loss.item() == pytest.approx(q.loss(w).item()) and len(grads) == 1


def test_components_and_eigenvectors() -> None:
    q = random_quadratic(5, seed=1)
    v = q.eigenvectors
    torch.testing.assert_close(v.T @ v, torch.eye(5, dtype=F64), rtol=0, atol=1e-13)
    w = q.w_star + 2.5 * v[:, 3]
    torch.testing.assert_close(q.components(w), torch.tensor([0, 0, 0, 2.5, 0], dtype=F64), rtol=0, atol=1e-13)
    assert torch.equal(Quadratic([1.0, 2.0]).eigenvectors, torch.eye(2, dtype=F64))
    torch.testing.assert_close(random_orthogonal(4, 7), random_orthogonal(4, 7), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eigenvalues": [[1.0, 2.0]]}, "eigenvalues"),
        ({"eigenvalues": [1.0, float("nan")]}, "eigenvalues"),
        ({"eigenvalues": [1.0, 2.0], "eigenvectors": [[1.0, 1.0], [0.0, 1.0]]}, "orthogonal"),
        ({"eigenvalues": [1.0, 2.0], "eigenvectors": np.eye(3)}, "shape"),
        ({"eigenvalues": [1.0, 2.0], "w_star": [1.0]}, "w_star"),
        ({"eigenvalues": [1.0, 2.0], "eigenvectors": np.eye(2), "seed": 1}, "either"),
    ],
)
def test_quadratic_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Quadratic(**kwargs)


def test_sam_run_rejects_bad_input() -> None:
    q = Quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match="eta"):
        sam_run(q, [1.0, 1.0], eta=0.0, rho=0.1, steps=3)
    with pytest.raises(ValueError, match="rho"):
        sam_run(q, [1.0, 1.0], eta=0.1, rho=-0.1, steps=3)
    with pytest.raises(ValueError, match="steps"):
        sam_run(q, [1.0, 1.0], eta=0.1, rho=0.1, steps=0)
    with pytest.raises(ValueError, match="w0"):
        sam_run(q, [1.0, 1.0, 1.0], eta=0.1, rho=0.1, steps=3)


# ------------------------------------------------------------------------------------------------ A4


@pytest.mark.parametrize(("seed", "rho"), [(0, 0.05), (1, 0.5), (2, 0.002), (3, 5.0)])
def test_a4_one_step_multipliers(seed: int, rho: float) -> None:
    dim, eta = 200, 0.15
    q = random_quadratic(dim, seed=seed, lam_max=13.0)
    w0 = torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(seed))
    run = sam_run(q, w0, eta, rho, steps=1)
    lam = q.eigenvalues.numpy()
    g = run.grad_norm[0]
    assert g == pytest.approx(float(torch.linalg.vector_norm(q.grad(w0))), rel=1e-14)
    predicted = 1 - eta * lam - eta * rho * lam**2 / g  # Proposition A, typed here
    observed = run.multipliers()[0]
    assert np.max(np.abs(observed - predicted)) < 1e-11
    s = sam_edge(eta=eta, rho=rho, grad_norm=g)
    n_unstable = int(np.sum(np.abs(observed) > 1))
    assert n_unstable == int(np.sum(lam > s))
    assert run.sam_edge[0] == s


def test_a4_counts_cover_none_some_and_most() -> None:
    """The instability count is exercised in all regimes (not only trivially 0 = 0)."""
    eta, dim = 0.15, 200
    counts = []
    for lam_max, rho in ((5.0, 1e-4), (20.0, 1e-4), (20.0, 50.0)):
        q = random_quadratic(dim, seed=5, lam_max=lam_max)
        lam = q.eigenvalues.numpy()
        w0 = torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(9))
        run = sam_run(q, w0, eta, rho, steps=1)
        n = int(np.sum(np.abs(run.multipliers()[0]) > 1))
        assert n == int(np.sum(lam > run.sam_edge[0]))
        counts.append(n)
    assert counts[0] == 0 and 0 < counts[1] < dim // 2 < counts[2] < dim


def test_gd_run_multipliers() -> None:
    q = random_quadratic(20, seed=4)
    run = sam_run(q, torch.ones(20, dtype=F64), eta=0.1, rho=0.0, steps=1)
    np.testing.assert_allclose(run.multipliers()[0], 1 - 0.1 * q.eigenvalues.numpy(), rtol=0, atol=1e-12)
    assert np.all(run.sam_edge == 20.0)


# ------------------------------------------------------------------------------------------------ A5


@pytest.mark.parametrize(("seed", "eta", "rho"), [(0, 0.15, 0.05), (1, 0.05, 0.3)])
def test_a5_long_run_converges_to_the_two_cycle_on_the_edge(seed: int, eta: float, rho: float) -> None:
    dim = 50
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.5, 0.9 * 2 / eta, dim)
    q = Quadratic(lam, seed=seed, w_star=rng.normal(size=dim))
    lam1 = float(lam.max())
    top = int(np.argmax(lam))
    run = sam_run(q, q.w_star + torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(1)), eta, rho, 3000)
    c_end = run.components[-1]
    amplitude = eta * rho * lam1 / (2 - eta * lam1)  # Proposition C, typed here
    assert abs(abs(c_end[top]) - amplitude) / amplitude < 1e-10
    assert np.max(np.abs(np.delete(c_end, top))) < 1e-10 * amplitude
    assert abs(run.sam_edge[-1] - lam1) / lam1 < 1e-10
    assert run.grad_norm[-1] == pytest.approx(lam1 * amplitude, rel=1e-10)
    # a period-2 orbit: the sign flips every step and the loss repeats
    assert c_end[top] * run.components[-2, top] < 0
    assert run.loss[-1] == pytest.approx(run.loss[-2], rel=1e-10)
    frame = run.frame()
    assert list(frame.columns) == ["step", "loss", "grad_norm", "sam_edge", "lambda1_over_edge", "c1"]
    assert abs(frame["lambda1_over_edge"].iloc[-1] - 1) < 1e-10


def test_official_eps_shifts_the_cycle_slightly() -> None:
    """With the official +1e-5 the orbit is close to, but measurably off, the exact edge."""
    q = Quadratic([10.0, 3.0, 1.0])
    run = sam_run(q, [1.0, 1.0, 1.0], eta=0.15, rho=0.05, steps=3000, eps=1e-5)
    err = abs(run.sam_edge[-1] - 10.0) / 10.0
    assert 1e-9 < err < 1e-4


# ---------------------------------------------------------------------------------------- stability map


def test_stability_map_growth_equals_the_multiplier_and_an_unbatched_step() -> None:
    alphas, ratios = np.array([0.01, 1.0, 30.0]), np.array([0.05, 0.5, 0.95, 1.1])
    eta, rho = 0.2, 0.03
    smap = stability_map(alphas, ratios, eta=eta, rho=rho)
    assert smap.growth.shape == (4, 3)
    for i, y in enumerate(ratios):
        for j, a in enumerate(alphas):
            lam, g = 2 * y / eta, 2 * rho * a / eta
            assert smap.growth[i, j] == pytest.approx(abs(1 - eta * lam - eta * rho * lam**2 / g), rel=1e-12)
            # the same cell with an ordinary (unbatched) SAM step on a Quadratic
            q = Quadratic([lam, lam / 2])
            w = torch.tensor([0.6 * g / lam, 0.8 * g / (lam / 2)], dtype=F64)
            new, info = sam_step([w], q.grad_fn, eta, rho, eps=0.0)
            assert info.grad_norm.item() == pytest.approx(g, rel=1e-14)
            assert smap.growth[i, j] == pytest.approx(abs(new[0][0].item() / w[0].item()), rel=1e-12)


def test_stability_map_boundary_is_the_sam_edge_curve() -> None:
    alphas = np.logspace(-3, 3, 61)
    ratios = np.linspace(0.004, 1.2, 300)
    smap = stability_map(alphas, ratios)
    b = stability_boundary(smap)
    assert b["single_crossing"].all()
    # R(alpha) lies inside the observed bracket in every column, so the error is below the grid resolution
    assert ((b["lower"] < b["theory"]) & (b["theory"] <= b["upper"])).all()
    d = boundary_distance(smap)
    assert d <= b["half_spacing"].max() + 1e-15
    assert d < 0.0021


def test_stability_map_reports_grids_that_miss_the_boundary() -> None:
    smap = stability_map([0.01, 1.0], [0.5, 0.6, 0.7])  # R(0.01) ~ 0.095 lies below the grid, R(1) ~ 0.618 in it
    b = stability_boundary(smap)
    assert np.isnan(b["boundary"].iloc[0])
    assert b["boundary"].iloc[1] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="extend the ratio grid"):
        boundary_distance(smap)
    with pytest.raises(ValueError, match="alphas"):
        stability_map([1.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="rho"):
        stability_map([1.0, 2.0], [0.5, 0.6], rho=0.0)
