"""Eigen-solvers against dense eigendecompositions, known spectra and the official estimator's rules."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_mlp_loss

from samedge_lib.core.eigen import (
    EigResult,
    eigsh_reference,
    lanczos,
    official_power_iteration,
    official_stop,
    pyhessian_power_iteration,
    relative_residuals,
)
from samedge_lib.core.hessian import FD_DENOMINATOR_EPS, FD_STEP, DenseOperator, HessianOperator, dense_hessian

F64 = torch.float64
FD_FACTOR = 2 * FD_STEP / (2 * FD_STEP + FD_DENOMINATOR_EPS)


def spectrum_matrix(lam, seed: int = 0, dtype=F64) -> torch.Tensor:
    """``Q diag(lam) Q^T`` with a random orthogonal ``Q`` (float64)."""
    lam = torch.as_tensor(lam, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=g, dtype=F64))
    return (Q @ torch.diag(lam) @ Q.T).to(dtype), Q


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp_problem(activation: str, widths=(6, 10, 4), n: int = 32, seed: int = 0):
    loss_fn, params = make_mlp_loss(activation, seed=seed, n=n, widths=widths)
    return loss_fn, params, dense_hessian(loss_fn, params)


# ---------------------------------------------------------------------------- Lanczos on MLP Hessians
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_matches_dense_hessian_of_mlp(activation, k):
    loss_fn, params, H = mlp_problem(activation)
    exact = torch.linalg.eigvalsh(H).flip(0)[:k]  # largest algebraic, decreasing
    op = HessianOperator(loss_fn, params, method="exact")
    assert op.dim == 6 * 10 + 10 + 10 * 4 + 4
    res = lanczos(op, k=k, tol=1e-6, generator=gen(1), true_residuals=True)
    assert isinstance(res, EigResult) and res.converged and res.method == "lanczos-LA"
    assert res.eigenvalues.dtype == F64 and res.eigenvalues.shape == (k,)
    assert torch.all(res.eigenvalues[:-1] >= res.eigenvalues[1:])
    assert ((res.eigenvalues - exact).abs() / exact.abs()).max() < 1e-6
    assert res.residuals.max() < 1e-5 and res.ritz_residuals.max() <= 1e-6
    # the Ritz estimates of full-reorthogonalisation Lanczos are the true residuals
    assert torch.allclose(res.residuals, res.ritz_residuals, rtol=1e-2, atol=1e-12)
    assert res.n_matvec == res.n_iter + k == op.n_matvec
    U = res.eigenvectors
    assert U.shape == (op.dim, k)
    assert torch.allclose(U.T @ U, torch.eye(k, dtype=F64), atol=1e-8)
    assert torch.allclose(H @ U, U * res.eigenvalues, atol=1e-5 * exact.abs().max().item())


def test_lanczos_gives_the_same_answer_with_every_exact_hvp_method():
    loss_fn, params, H = mlp_problem("tanh")
    top = torch.linalg.eigvalsh(H)[-1]
    for method in ("exact_fresh", "forward_over_reverse"):
        res = lanczos(HessianOperator(loss_fn, params, method=method), tol=1e-8, generator=gen(2))
        assert res.eigenvalues[0] == pytest.approx(top.item(), rel=1e-10)


# ---------------------------------------------------------------------------- known spectra
@pytest.mark.parametrize(
    ("which", "expected"),
    [("LA", [10.0, 7.0, 6.5]), ("SA", [-9.0, -4.0, -3.0]), ("LM", [10.0, -9.0, 7.0])],
)
def test_lanczos_on_a_quadratic_with_known_spectrum(which, expected):
    lam = torch.cat([torch.tensor([10.0, 7.0, 6.5, -9.0, -4.0, -3.0]), torch.linspace(-2.5, 6.0, 194)])
    H, Q = spectrum_matrix(lam, seed=3)
    res = lanczos(DenseOperator(H), k=3, which=which, tol=1e-8, generator=gen(4), true_residuals=True)
    assert res.converged
    assert torch.allclose(res.eigenvalues, torch.tensor(expected, dtype=F64), rtol=1e-10, atol=0)
    assert res.residuals.max() < 1e-7
    # each vector is the matching column of Q up to sign
    for i, value in enumerate(expected):
        j = int(torch.nonzero(lam == value)[0])
        assert abs(torch.dot(res.eigenvectors[:, i], Q[:, j]).item()) > 1 - 1e-12


def test_negative_dominant_eigenvalue_la_versus_official_magnitude():
    # max |lambda| = 12 belongs to a negative eigenvalue; the largest algebraic is 6: the official estimator
    # returns the magnitude (hessian_norm.py reports ||H v||), Lanczos "LA" the signed largest
    lam = torch.cat([torch.tensor([-12.0, 6.0]), torch.linspace(-3.0, 3.0, 98)])
    H, _ = spectrum_matrix(lam, seed=5)
    la = lanczos(DenseOperator(H), k=1, which="LA", tol=1e-8, generator=gen(6))
    assert la.eigenvalues.item() == pytest.approx(6.0, rel=1e-10)
    lm = lanczos(DenseOperator(H), k=1, which="LM", tol=1e-8, generator=gen(6))
    assert lm.eigenvalues.item() == pytest.approx(-12.0, rel=1e-10)
    for seed in range(5):
        off = official_power_iteration(DenseOperator(H), k=1, generator=gen(seed))
        assert off.converged and off.eigenvalues.item() > 0
        assert off.eigenvalues.item() == pytest.approx(12.0, rel=1e-3)
        assert off.residuals.item() < 0.05  # (-12, v) is nearly an eigenpair: the sign is accounted for
    pyh = pyhessian_power_iteration(DenseOperator(H), k=1, generator=gen(7))
    assert pyh.eigenvalues.item() == pytest.approx(-12.0, rel=1e-2)  # PyHessian keeps the sign


def test_official_estimator_with_finite_differences_on_a_quadratic_loss():
    # the same through the real pipeline: finite-difference HVPs of 1/2 w^T A w are exact up to the 0.995 factor
    lam = torch.cat([torch.tensor([-12.0, 6.0]), torch.linspace(-3.0, 3.0, 58)])
    A, _ = spectrum_matrix(lam, seed=8)

    def loss_fn(ps):
        return 0.5 * ps[0] @ A @ ps[0]

    w = torch.randn(60, generator=gen(9), dtype=F64)
    op = HessianOperator(loss_fn, [w], method="finite_difference")
    off = official_power_iteration(op, k=1, generator=gen(10))
    assert off.eigenvalues.item() == pytest.approx(FD_FACTOR * 12.0, rel=1e-3)
    assert off.eigenvalues.item() / FD_FACTOR == pytest.approx(12.0, rel=1e-3)
    assert op.n_matvec == off.n_matvec == off.n_iter and op.n_grad_evals == 2 * off.n_matvec


# ---------------------------------------------------------------------------- warm start
@pytest.mark.parametrize("k", [1, 3])
def test_warm_start_from_a_slightly_perturbed_matrix_needs_far_fewer_matvecs(k):
    n = 200
    lam = torch.cat([torch.tensor([10.0, 9.0, 8.5]), torch.linspace(-2.0, 5.0, n - 3)])
    H, _ = spectrum_matrix(lam, seed=11)
    E = torch.randn(n, n, generator=gen(12), dtype=F64)
    E = (E + E.T) / 2
    H2 = H + 3e-2 * E / torch.linalg.matrix_norm(E)  # Frobenius 0.03, spectral norm about 0.004
    previous = lanczos(DenseOperator(H), k=k, tol=1e-10, generator=gen(13)).eigenvectors
    exact = torch.linalg.eigvalsh(H2).flip(0)[:k]
    colds = [lanczos(DenseOperator(H2), k=k, tol=1e-4, generator=gen(s)) for s in range(3)]
    warm = lanczos(DenseOperator(H2), k=k, tol=1e-4, v0=previous)
    for r in [*colds, warm]:
        assert r.converged and ((r.eigenvalues - exact).abs() / exact).max() < 1e-7
    cheapest_cold = min(r.n_matvec for r in colds)
    assert warm.n_matvec <= (0.3 if k == 1 else 0.6) * cheapest_cold
    # the top vector alone also works as a warm start for k = 1, given as [dim] or [dim, 1]
    assert lanczos(DenseOperator(H2), k=1, tol=1e-4, v0=previous[:, 0]).n_matvec <= 0.3 * cheapest_cold


def test_warm_start_from_an_exact_eigenvector_converges_in_one_matvec():
    H, Q = spectrum_matrix(torch.linspace(-1.0, 4.0, 50), seed=14)
    res = lanczos(DenseOperator(H), k=1, v0=Q[:, -1] * 3.0, tol=1e-10)
    assert res.converged and res.n_matvec == 1
    assert res.eigenvalues.item() == pytest.approx(4.0, rel=1e-12)


# ---------------------------------------------------------------------------- breakdown and tiny problems
def test_lanczos_handles_invariant_subspaces_and_repeated_eigenvalues():
    lam = torch.tensor([5.0, 3.0] + [0.0] * 38)
    H, _ = spectrum_matrix(lam, seed=15)
    # from a random start the Krylov space is invariant after 3 steps (3 distinct eigenvalues)
    three = lanczos(DenseOperator(H), k=3, tol=1e-10, generator=gen(16))
    assert three.converged and three.n_iter == 3
    assert torch.allclose(three.eigenvalues, torch.tensor([5.0, 3.0, 0.0], dtype=F64), atol=1e-12)
    # a second copy of 0 needs a restart after the breakdown
    four = lanczos(DenseOperator(H), k=4, tol=1e-10, generator=gen(16), true_residuals=True)
    assert four.converged
    assert torch.allclose(four.eigenvalues, torch.tensor([5.0, 3.0, 0.0, 0.0], dtype=F64), atol=1e-12)
    U = four.eigenvectors
    assert torch.allclose(U.T @ U, torch.eye(4, dtype=F64), atol=1e-10)
    assert torch.allclose(H @ U, U * four.eigenvalues, atol=1e-10)


def test_lanczos_when_dim_is_smaller_than_max_iter():
    lam = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.5])
    H, _ = spectrum_matrix(lam, seed=17)
    res = lanczos(DenseOperator(H), k=5, tol=1e-12, generator=gen(18))
    assert res.converged and res.n_iter <= 5
    assert torch.allclose(res.eigenvalues, lam.sort(descending=True).values.double(), atol=1e-12)
    one = lanczos(DenseOperator(torch.tensor([[4.0]], dtype=F64)), k=1)
    assert one.eigenvalues.item() == 4.0 and one.converged and one.n_matvec == 1
    zero = lanczos(DenseOperator(torch.zeros(6, 6, dtype=F64)), k=2, generator=gen(19))
    assert zero.converged and torch.equal(zero.eigenvalues, torch.zeros(2, dtype=F64))


def test_lanczos_reports_non_convergence_at_the_cap():
    H, _ = spectrum_matrix(torch.linspace(0.0, 1.0, 300), seed=20)  # no gap at all
    res = lanczos(DenseOperator(H), k=1, tol=1e-12, max_iter=5, generator=gen(21))
    assert not res.converged and res.n_matvec == 5 and res.ritz_residuals.item() > 1e-12


def test_lanczos_on_a_float32_operator_computes_in_float64():
    lam = torch.cat([torch.tensor([8.0, 7.0]), torch.linspace(-1.0, 4.0, 998)])
    H, _ = spectrum_matrix(lam, seed=22, dtype=torch.float32)
    res = lanczos(DenseOperator(H), k=2, tol=1e-5, generator=gen(23), true_residuals=True)
    assert res.converged and res.eigenvalues.dtype == F64 and res.eigenvectors.dtype == torch.float32
    assert torch.allclose(res.eigenvalues, torch.tensor([8.0, 7.0], dtype=F64), rtol=1e-6)
    assert res.residuals.max() < 1e-5


def test_eigsh_reference_agrees_with_eigvalsh():
    loss_fn, params, H = mlp_problem("tanh")
    ref = eigsh_reference(HessianOperator(loss_fn, params), k=3, generator=gen(24))
    assert torch.allclose(ref.eigenvalues, torch.linalg.eigvalsh(H).flip(0)[:3], rtol=1e-10)
    assert ref.residuals.max() < 1e-8


def test_eigsh_at_a_tolerance_stops_on_a_certified_residual():
    # ARPACK's tol is the same relative Ritz-residual criterion as Lanczos' tol; the true residual bounds
    # the error (Weyl): |theta - lambda| <= ||H u - theta u|| for a unit u
    loss_fn, params, H = mlp_problem("tanh", widths=(6, 20, 4))
    top = torch.linalg.eigvalsh(H)[-1].item()
    op = HessianOperator(loss_fn, params)
    res = eigsh_reference(op, k=1, tol=1e-3, generator=gen(31), true_residuals=False)
    assert res.n_matvec == res.n_iter == op.n_matvec and torch.isnan(res.residuals).all()
    bound = relative_residuals(op, res.eigenvalues, res.eigenvectors).item()
    assert abs(res.eigenvalues.item() - top) / top <= bound < 1e-2
    assert op.n_matvec == res.n_matvec + 1  # the certificate is one product


def test_relative_residuals_of_known_pairs():
    H = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=F64))
    u = torch.tensor([[1.0, 0.6], [0.0, 0.8], [0.0, 0.0]], dtype=F64)  # e_1 exact; a mix of e_1 and e_2
    theta = torch.tensor([4.0, (0.36 * 4 + 0.64 * 2)], dtype=F64)  # their Rayleigh quotients
    res = relative_residuals(DenseOperator(H), theta, u)
    mixed = torch.linalg.vector_norm(H @ u[:, 1] - theta[1] * u[:, 1]).item() / theta[1].item()
    assert res[0].item() == 0.0 and res[1].item() == pytest.approx(mixed, rel=1e-14) and mixed > 0.1


# ---------------------------------------------------------------------------- the official estimator
def test_official_stop_replays_the_rule():
    # dummy n_0 = 1: 2.0 changes by 1.0 (> 1e-3 * 2), 2.5 by 0.5, 2.5005 by 5e-4 <= 2.5e-3: stop after 3
    assert official_stop([2.0, 2.5, 2.5005, 2.6]) == 3
    # a first norm within 1e-3 of the dummy 1.0 stops at once; a tiny norm (<= abs_tol) too
    assert official_stop([1.0005, 3.0]) == 1
    assert official_stop([0.5, 0.0009]) == 2
    # never met: the whole trace
    assert official_stop([3.0, 6.0, 12.0]) == 3


def test_official_stop_on_a_trace_is_where_the_live_rule_stops():
    lam = torch.cat([torch.tensor([5.0, 4.6]), torch.linspace(-1.0, 4.0, 60)])
    H, _ = spectrum_matrix(lam, seed=32)
    for seed in range(4):
        live = official_power_iteration(DenseOperator(H), generator=gen(seed))
        trace = official_power_iteration(DenseOperator(H), generator=gen(seed), rel_tol=0.0, abs_tol=0.0)
        norms = [h[1][0] for h in trace.history]
        assert official_stop(norms) == live.n_matvec and norms[live.n_matvec - 1] == live.eigenvalues.item()


def test_official_dummy_norm_and_minimum_of_one_product():
    # ||H v|| = 1 for every unit v equals the dummy n_old = 1.0: the loop stops after one product
    one = official_power_iteration(DenseOperator(torch.eye(5, dtype=F64)), generator=gen(25))
    assert one.n_matvec == 1 and one.eigenvalues.item() == pytest.approx(1.0, abs=1e-5)
    # 2 I: |2 - 1| > 1e-3 * 2, then the second product repeats 2 exactly
    two = official_power_iteration(DenseOperator(2 * torch.eye(5, dtype=F64)), generator=gen(25))
    assert two.n_matvec == 2 and two.eigenvalues.item() == pytest.approx(2.0, rel=1e-12)
    # the returned vector is v_T = H v_{T-1} / ||H v_{T-1}||, a unit vector
    assert torch.linalg.vector_norm(two.eigenvectors).item() == pytest.approx(1.0, rel=1e-12)
    # ||H v|| <= 1e-3 stops at once, however large the relative change
    tiny = official_power_iteration(DenseOperator(1e-4 * torch.eye(5, dtype=F64)), generator=gen(25))
    assert tiny.n_matvec == 1 and tiny.converged
    zero = official_power_iteration(DenseOperator(torch.zeros(5, 5, dtype=F64)), generator=gen(25))
    assert zero.n_matvec == 1 and zero.eigenvalues.item() == 0.0


def test_official_value_is_the_norm_of_the_last_product():
    # diag(3, 1): from the start v0 (the generator's draw, normalised with +1e-5) the iterates are
    # explicit, so the whole run can be replayed by hand
    H = torch.diag(torch.tensor([3.0, 1.0], dtype=F64))
    z = torch.randn(2, generator=gen(26), dtype=F64)
    v = z / (torch.linalg.vector_norm(z) + 1e-5)
    norms = [1.0]
    while True:
        p = H @ v
        norms.append(torch.linalg.vector_norm(p).item())
        v = p / norms[-1]
        if not (abs(norms[-1] - norms[-2]) > 1e-3 * norms[-1] and norms[-1] > 1e-3) or len(norms) > 100:
            break
    off = official_power_iteration(DenseOperator(H), generator=gen(26))
    assert off.n_matvec == len(norms) - 1
    assert off.eigenvalues.item() == pytest.approx(norms[-1], rel=1e-14)
    assert torch.allclose(off.eigenvectors[:, 0], v, rtol=1e-14)


def test_official_iteration_cap_and_counting():
    H, _ = spectrum_matrix(torch.linspace(-1.0, 5.0, 30), seed=27)
    op = HessianOperator(lambda ps: 0.5 * ps[0] @ H @ ps[0], [torch.zeros(30, dtype=F64)], method="finite_difference")
    capped = official_power_iteration(op, generator=gen(28), rel_tol=0.0)  # the rule can never be met
    assert capped.n_matvec == capped.n_iter == 100 and not capped.converged
    assert op.n_matvec == 100 and op.n_grad_evals == 200
    short = official_power_iteration(DenseOperator(H), generator=gen(28), rel_tol=0.0, max_iter=7)
    assert short.n_matvec == 7 and not short.converged


def test_official_block_power_iteration():
    lam = torch.cat([torch.tensor([10.0, 6.0, 3.0]), torch.linspace(-0.3, 0.3, 47)])
    H, Q = spectrum_matrix(lam, seed=29)
    op = DenseOperator(H)
    res = official_power_iteration(op, k=3, generator=gen(30))
    assert res.converged and res.n_matvec == 3 * res.n_iter == op.n_matvec
    assert torch.all(res.eigenvalues[:-1] >= res.eigenvalues[1:])
    assert torch.allclose(res.eigenvalues, torch.tensor([10.0, 6.0, 3.0], dtype=F64), rtol=2e-3)
    # the vectors are orthonormal up to the +1e-5 of the official normalisation
    U = res.eigenvectors
    assert torch.allclose(U.T @ U, torch.eye(3, dtype=F64), atol=1e-4)
    assert abs(torch.dot(U[:, 0], Q[:, 0]).item()) > 0.999
    assert res.residuals.max() < 0.1


def test_pyhessian_power_iteration_top_k():
    lam = torch.cat([torch.tensor([10.0, 6.0, 3.0]), torch.linspace(-0.3, 0.3, 47)])
    H, _ = spectrum_matrix(lam, seed=31)
    res = pyhessian_power_iteration(DenseOperator(H), k=3, generator=gen(32))
    assert res.converged and res.n_matvec == res.n_iter
    assert torch.allclose(res.eigenvalues, torch.tensor([10.0, 6.0, 3.0], dtype=F64), rtol=1e-2)
    capped = pyhessian_power_iteration(DenseOperator(H), k=2, tol=0.0, max_iter=4, generator=gen(32))
    assert capped.n_matvec == 8 and not capped.converged


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "solver",
    [lanczos, official_power_iteration, pyhessian_power_iteration, eigsh_reference],
)
def test_bad_k_is_rejected(solver):
    op = DenseOperator(torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="k must be >= 1"):
        solver(op, k=0)
    with pytest.raises(ValueError, match="exceeds the operator's dimension 4"):
        solver(op, k=5)
    with pytest.raises(ValueError, match="k must be an int"):
        solver(op, k=1.5)


def test_other_bad_inputs_are_rejected():
    op = DenseOperator(torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="LA, SA, LM"):
        lanczos(op, which="BE")
    with pytest.raises(ValueError, match="LA, SA, LM"):
        eigsh_reference(op, which="largest")
    with pytest.raises(ValueError, match="tol"):
        lanczos(op, tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        lanczos(op, max_iter=0)
    with pytest.raises(ValueError, match="smaller than k"):
        lanczos(op, k=3, max_iter=2)
    with pytest.raises(ValueError, match="v0 must have shape"):
        lanczos(op, v0=torch.ones(5, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        lanczos(op, v0=torch.full((4,), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="rel_tol"):
        official_power_iteration(op, rel_tol=float("nan"))
    with pytest.raises(ValueError, match="max_iter"):
        official_power_iteration(op, max_iter=0)
    with pytest.raises(ValueError, match="k < dim"):
        eigsh_reference(op, k=4)
    with pytest.raises(TypeError, match="matvec"):
        lanczos(torch.eye(4), k=1)


def _spread_spectrum(n: int = 60, seed: int = 3) -> tuple[DenseOperator, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = torch.linspace(-1.0, 4.0, n, dtype=torch.float64)
    return DenseOperator(q @ torch.diag(lam) @ q.T), lam


def test_lanczos_history_is_the_run_step_by_step():
    op, lam = _spread_spectrum()
    res = lanczos(op, k=2, tol=1e-8, generator=torch.Generator().manual_seed(0))
    steps = [h[0] for h in res.history]
    assert steps == list(range(2, res.n_iter + 1))  # one entry per product once k Ritz pairs exist
    assert res.history[-1][1] == pytest.approx(res.eigenvalues.tolist(), abs=0)
    assert res.history[-1][2] == pytest.approx(res.ritz_residuals.tolist(), abs=0)
    # Ritz values approach lambda_1 from below and only grow (Cauchy interlacing)
    tops = [h[1][0] for h in res.history]
    assert all(b >= a - 1e-12 for a, b in zip(tops, tops[1:], strict=False)) and max(tops) <= lam.max() + 1e-12
    # the residual estimates bound the distance to the nearest eigenvalue at every step
    for _, values, estimates in res.history:
        for v, r in zip(values, estimates, strict=True):
            assert (lam - v).abs().min() <= r * abs(v) + 1e-12


def test_power_iteration_histories_end_at_the_reported_values():
    op, lam = _spread_spectrum()
    off = official_power_iteration(op, generator=torch.Generator().manual_seed(1))
    assert [h[0] for h in off.history] == list(range(1, off.n_matvec + 1))
    assert off.history[-1][1][0] == pytest.approx(off.eigenvalues[0].item(), rel=1e-15)
    # ||H v|| of a unit vector never exceeds the largest magnitude
    assert all(h[1][0] <= lam.abs().max() + 1e-12 for h in off.history)
    blk = official_power_iteration(op, k=3, generator=torch.Generator().manual_seed(1), max_iter=7)
    assert [h[0] for h in blk.history] == [3 * t for t in range(1, 8)]
    assert blk.history[-1][1] == pytest.approx(blk.eigenvalues.tolist(), rel=1e-15)
    py = pyhessian_power_iteration(op, k=2, generator=torch.Generator().manual_seed(1))
    assert [h[0] for h in py.history] == list(range(1, py.n_matvec + 1))
    assert len(py.history[-1][1]) == 2  # the first value found, then the current Rayleigh quotient
