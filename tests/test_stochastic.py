"""Stochastic SAM's quantities against independent truths: enumeration, dense matrices, closed forms, quadratics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import functional_call

from samedge_lib.core import stochastic as st
from samedge_lib.core.hessian import DenseOperator, HessianOperator, dense_hessian
from samedge_lib.theory.edges import alpha, collapse_variable, noise_dominated_sam_edge, sam_edge
from samedge_lib.theory.updates import sam_gradient

F64 = torch.float64


def tiny_problem(n: int = 12, seed: int = 0, act: str = "tanh"):
    """A float64 two-layer network with squared error: (data loss, params, x, y)."""
    g = torch.Generator().manual_seed(seed)
    nonlin = {"tanh": torch.nn.Tanh(), "relu": torch.nn.ReLU()}[act]
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), nonlin, torch.nn.Linear(6, 3)).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=F64))
    names = [name for name, _ in model.named_parameters()]
    x = torch.randn(n, 4, generator=g, dtype=F64)
    y = torch.randn(n, 3, generator=g, dtype=F64)

    def loss(ps, xb, yb):
        out = functional_call(model, dict(zip(names, ps, strict=True)), (xb,))
        return ((out - yb) ** 2).mean()

    return loss, [p.detach().clone() for p in model.parameters()], x, y


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def autograd_grad(loss, params, x, y) -> torch.Tensor:
    """The plain batch gradient by torch.autograd (not torch.func): the independent route."""
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    return flat(torch.autograd.grad(loss(leaves, x, y), leaves))


# ------------------------------------------------------------------------------------------------
# gradient noise
# ------------------------------------------------------------------------------------------------
def test_per_example_gradients_equal_one_backward_per_example():
    loss, params, x, y = tiny_problem()
    stacked = st.per_example_gradients(loss, params, x, y)
    for i in range(x.shape[0]):
        ref = autograd_grad(loss, params, x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(flat([g[i] for g in stacked]), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("b", [1, 2, 3, 5, 8])
def test_sampling_identity_is_exact_by_enumerating_every_batch(b):
    """E||g_B||^2 over all C(N, B) batches (without replacement) equals ||g||^2 + (N-B)/(B(N-1)) tr Sigma."""
    n = 8
    loss, params, x, y = tiny_problem(n=n)
    g = autograd_grad(loss, params, x, y)
    tr_sigma = st.gradient_noise_trace(loss, params, x, y, chunk=3)
    sq = [
        float(autograd_grad(loss, params, x[list(idx)], y[list(idx)]).norm() ** 2)
        for idx in itertools.combinations(range(n), b)
    ]
    exact = sum(sq) / len(sq)
    assert st.expected_sq_grad_norm(float(g.norm()), tr_sigma, n, b) == pytest.approx(exact, rel=1e-12)


def test_noise_trace_with_and_without_the_mean_gradient_is_the_population_variance():
    loss, params, x, y = tiny_problem(n=10)
    rows = torch.stack([autograd_grad(loss, params, x[i : i + 1], y[i : i + 1]) for i in range(10)])
    population = float(((rows - rows.mean(0)) ** 2).sum(1).mean())
    assert st.gradient_noise_trace(loss, params, x, y, chunk=4) == pytest.approx(population, rel=1e-12)
    g = autograd_grad(loss, params, x, y)
    assert st.gradient_noise_trace(loss, params, x, y, mean_grad=g, chunk=10) == pytest.approx(population, rel=1e-12)


def test_sampling_factor_ends_and_errors():
    assert st.sampling_factor(100, 100) == 0
    assert st.sampling_factor(100, 1) == 1
    for bad in [(1, 1), (10, 0), (10, 11), (10.0, 2)]:
        with pytest.raises(ValueError):
            st.sampling_factor(*bad)


def test_random_batches_average_to_the_identity():
    """Monte Carlo over random batches (the run's route) agrees with the identity within its standard error."""
    n, b = 12, 3
    loss, params, x, y = tiny_problem(n=n)
    g = autograd_grad(loss, params, x, y)
    expected = st.expected_sq_grad_norm(float(g.norm()), st.gradient_noise_trace(loss, params, x, y), n, b)

    def sq(idx):
        return float(autograd_grad(loss, params, x[idx], y[idx]).norm() ** 2)

    draws = st.random_batch_sq_grad_norms(sq, n, b, 400, torch.Generator().manual_seed(3))
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - expected) < 4 * se


def test_noise_dominated_edge_is_the_small_alpha_limit_of_the_sam_edge():
    eta, rho = 1.25, 0.1
    for noise in (1e-6, 1e-8):
        exact = sam_edge(eta=eta, rho=rho, grad_norm=math.sqrt(noise))
        # S = (2 sqrt(alpha)/eta)(1 - sqrt(alpha)/2 + O(alpha)): the limit is off by about sqrt(alpha)/2
        a = alpha(eta=eta, rho=rho, grad_norm=math.sqrt(noise))
        assert noise_dominated_sam_edge(eta=eta, rho=rho, noise_sq=noise) == pytest.approx(exact, rel=math.sqrt(a))
        assert noise_dominated_sam_edge(eta=eta, rho=rho, noise_sq=noise) / exact - 1 > 0.4 * math.sqrt(a)
    # the B^(-1/4) law: the ratio of two batches' edges is the fourth root of their sampling factors
    ratio = noise_dominated_sam_edge(
        eta=eta, rho=rho, noise_sq=st.sampling_factor(1000, 25)
    ) / noise_dominated_sam_edge(eta=eta, rho=rho, noise_sq=st.sampling_factor(1000, 100))
    assert ratio == pytest.approx((975 / 25 / (900 / 100)) ** 0.25, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Hutchinson
# ------------------------------------------------------------------------------------------------
def test_hutchinson_is_exact_on_a_diagonal_matrix():
    """z^T D z = tr D for every sign vector z: the estimator's variance vanishes on a diagonal."""
    d = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=F64)
    mean, se = st.hutchinson_trace(DenseOperator(torch.diag(d)), 7, torch.Generator().manual_seed(0))
    assert mean == pytest.approx(float(d.sum()), rel=1e-14) and se == pytest.approx(0.0, abs=1e-14)


def test_hutchinson_agrees_with_the_dense_trace_of_a_network_hessian():
    loss, params, x, y = tiny_problem()
    trace = float(torch.trace(dense_hessian(lambda ps: loss(ps, x, y), params)))
    op = HessianOperator(lambda ps: loss(ps, x, y), params)
    mean, se = st.hutchinson_trace(op, 600, torch.Generator().manual_seed(1))
    assert abs(mean - trace) < 4 * se and se < 0.1 * abs(trace)


# ------------------------------------------------------------------------------------------------
# the SAM batch sharpness
# ------------------------------------------------------------------------------------------------
def quadratic(eigs, seed=0):
    """``L(w) = 1/2 w^T H w`` with a random eigenbasis: (H, eigenvectors, grad_fn, operator factory)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=F64))
    H = q @ torch.diag(torch.tensor(eigs, dtype=F64)) @ q.T
    H = (H + H.T) / 2

    def grad_fn(ps):
        w = ps[0]
        return 0.5 * w @ H @ w, [H @ w]

    return H, q, grad_fn


def test_batch_sharpness_is_the_collapse_variable_when_the_gradient_is_an_eigenvector():
    eta, rho = 0.3, 0.05
    H, q, grad_fn = quadratic([4.0, 2.5, 1.0, 0.2])
    for j, c in [(0, 0.7), (1, -0.05), (3, 2.0)]:
        lam = float(H @ q[:, j] @ q[:, j])
        w = c * q[:, j] / lam  # g = H w = c v_j
        _, (g,) = grad_fn([w])
        (s,) = sam_gradient([w], [g], grad_fn, rho, eps=0.0)
        got = st.sam_batch_sharpness(DenseOperator(H), g, s, eta)
        assert got == pytest.approx(collapse_variable(eta=eta, rho=rho, grad_norm=abs(c), lam1=lam), rel=1e-12)


def test_batch_sharpness_above_one_iff_the_step_raises_the_loss_on_a_quadratic():
    """On a quadratic the second-order change is the exact change: Q > 1 exactly when the step raises the loss."""
    eta, rho = 0.4, 0.1
    H, _, grad_fn = quadratic([6.0, 3.0, 1.0, 0.1], seed=2)
    gen = torch.Generator().manual_seed(5)
    seen = set()
    for _ in range(200):
        w = torch.randn(4, generator=gen, dtype=F64) * 0.5
        loss, (g,) = grad_fn([w])
        (s,) = sam_gradient([w], [g], grad_fn, rho, eps=0.0)
        q = st.sam_batch_sharpness(DenseOperator(H), g, s, eta)
        new_loss, _ = grad_fn([w - eta * s])
        if abs(q - 1) > 1e-9:
            assert (q > 1) == bool(new_loss > loss)
            seen.add(q > 1)
    assert seen == {True, False}, "the draws should cover both sides of Q = 1"


# ------------------------------------------------------------------------------------------------
# m-SAM
# ------------------------------------------------------------------------------------------------
def test_msam_with_one_micro_batch_is_sam():
    loss, params, x, y = tiny_problem()
    xs, ys = st.micro_batches(x, y, 12, torch.arange(12))

    def grad_fn(ps):
        leaves = [p.detach().requires_grad_(True) for p in ps]
        value = loss(leaves, x, y)
        return value.detach(), list(torch.autograd.grad(value, leaves))

    _, g = grad_fn(params)
    r = st.msam_gradient(loss, params, xs, ys, rho=0.05)
    torch.testing.assert_close(flat(r.direction), flat(sam_gradient(params, g, grad_fn, 0.05)), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(flat(r.grad), flat(g), rtol=1e-12, atol=1e-14)


def test_msam_direction_is_the_mean_of_each_micro_batch_sam_gradient():
    loss, params, x, y = tiny_problem()
    order = st.msam_permutation(12, seed=3, step=7)
    xs, ys = st.micro_batches(x, y, 4, order)
    r = st.msam_gradient(loss, params, xs, ys, rho=0.05)
    parts = []
    for k in range(3):
        xk, yk = x[order[4 * k : 4 * k + 4]], y[order[4 * k : 4 * k + 4]]

        def grad_fn(ps, xk=xk, yk=yk):
            leaves = [p.detach().requires_grad_(True) for p in ps]
            value = loss(leaves, xk, yk)
            return value.detach(), list(torch.autograd.grad(value, leaves))

        _, gk = grad_fn(params)
        parts.append(flat(sam_gradient(params, gk, grad_fn, 0.05)))
    torch.testing.assert_close(flat(r.direction), torch.stack(parts).mean(0), rtol=1e-12, atol=1e-14)
    new, info = st.msam_step(params, loss, xs, ys, eta=0.5, rho=0.05)
    torch.testing.assert_close(flat(new), flat(params) - 0.5 * flat(r.direction), rtol=1e-12, atol=1e-14)
    assert float(info.grad_norm) == pytest.approx(float(autograd_grad(loss, params, x, y).norm()), rel=1e-12)


def test_partitions_are_fresh_every_step_and_reproducible():
    a, b = st.msam_permutation(50, 0, 3), st.msam_permutation(50, 0, 3)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, st.msam_permutation(50, 0, 4)) and not torch.equal(a, st.msam_permutation(50, 1, 3))
    with pytest.raises(ValueError, match="must divide"):
        st.micro_batches(torch.zeros(10, 2), torch.zeros(10), 3, torch.arange(10))


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_msam_operator_equals_its_dense_matrix(act):
    loss, params, x, y = tiny_problem(act=act)
    rho = 0.05
    xs, ys = st.micro_batches(x, y, 4, st.msam_permutation(12, 0, 1))
    norms = st.msam_gradient(loss, params, xs, ys, rho).micro_grad_norms
    op = st.MSamOperator(loss, params, xs, ys, norms, rho)
    dense = 0
    for k in range(3):
        hk = dense_hessian(lambda ps, k=k: loss(ps, xs[k], ys[k]), params)
        dense = dense + hk + rho * hk @ hk / norms[k]
    dense = dense / 3
    eye = torch.eye(op.dim, dtype=F64)
    columns = torch.stack([op.matvec(eye[:, i]) for i in range(op.dim)], dim=1)
    torch.testing.assert_close(columns, dense, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(columns, columns.T, rtol=1e-10, atol=1e-12)


def test_msam_operator_with_one_micro_batch_has_the_sam_edge():
    """K = 1: A = H + rho H^2/||g||, whose top eigenvalue times eta/2 is the collapse variable Lambda."""
    loss, params, x, y = tiny_problem()
    eta, rho = 0.2, 0.05
    xs, ys = st.micro_batches(x, y, 12, torch.arange(12))
    g_norm = float(autograd_grad(loss, params, x, y).norm())
    op = st.MSamOperator(loss, params, xs, ys, torch.tensor([g_norm], dtype=F64), rho)
    eye = torch.eye(op.dim, dtype=F64)
    top = float(torch.linalg.eigvalsh(torch.stack([op.matvec(eye[:, i]) for i in range(op.dim)], 1))[-1])
    lam1 = float(torch.linalg.eigvalsh(dense_hessian(lambda ps: loss(ps, x, y), params))[-1])
    assert eta / 2 * top == pytest.approx(collapse_variable(eta=eta, rho=rho, grad_norm=g_norm, lam1=lam1), rel=1e-10)


# ------------------------------------------------------------------------------------------------
# the drift
# ------------------------------------------------------------------------------------------------
def test_sharpness_gradient_is_the_derivative_of_lambda_1():
    loss, params, x, y = tiny_problem()

    def lam1_at(ps):
        return torch.linalg.eigh(dense_hessian(lambda q: loss(q, x, y), ps))

    vals, vecs = lam1_at(params)
    grad_l1 = st.sharpness_gradient(lambda ps: loss(ps, x, y), params, vecs[:, -1])
    direction = torch.randn(grad_l1.shape[0], generator=torch.Generator().manual_seed(4), dtype=F64)
    sizes = [p.numel() for p in params]

    def shifted(eps):
        parts = torch.split(direction, sizes)
        return [p + eps * d.view(p.shape) for p, d in zip(params, parts, strict=True)]

    h = 1e-5
    fd = (float(lam1_at(shifted(h))[0][-1]) - float(lam1_at(shifted(-h))[0][-1])) / (2 * h)
    assert float(grad_l1 @ direction) == pytest.approx(fd, rel=1e-6)


def test_drift_residual_vanishes_for_gd_and_on_sams_two_cycle():
    H, q, grad_fn = quadratic([3.0, 1.0, 0.5])
    eta, rho = 0.5, 0.05
    w0 = 0.3 * q[:, 1]
    g0 = grad_fn([w0])[1][0]
    w1 = w0 - eta * g0
    g1 = grad_fn([w1])[1][0]
    w2 = w1 - eta * g1
    assert float(st.drift_residual([w0], [w2], [g0], [g1], eta).abs().max()) < 1e-15
    # SAM's 2-cycle along v_1 (chapter 2's Proposition C): w -> -w, so the ascent parts cancel over two steps
    lam1 = 3.0
    amp = eta * rho * lam1 / (2 - eta * lam1)
    w0 = amp * q[:, 0]
    steps = [w0]
    grads = []
    for _ in range(2):
        _, (g,) = grad_fn([steps[-1]])
        (s,) = sam_gradient([steps[-1]], [g], grad_fn, rho, eps=0.0)
        grads.append(g)
        steps.append(steps[-1] - eta * s)
    torch.testing.assert_close(steps[1], -w0, rtol=1e-12, atol=1e-15)
    residual = st.drift_residual([steps[0]], [steps[2]], grads[:1], grads[1:], eta)
    assert float(residual.norm()) < 1e-14
    assert math.isnan(st.drift_alignment(torch.zeros(3, dtype=F64), q[:, 0]))
    assert st.drift_alignment(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0])) == pytest.approx(1.0)


def test_vmapped_routes_agree_with_autograd_on_the_cnn_with_layernorm_and_pooling():
    """The CIFAR CNN (convolutions, channel LayerNorm, max-pooling) through vmap: per-example gradients and A_m's
    products against plain autograd (torch.func's jacrev gets LayerNorm's mixed derivatives wrong in torch 2.13; this
    route must not).
    """
    from samedge_lib.engine.losses import get_loss
    from samedge_lib.engine.models import make_model

    model = make_model("cifar10", seed=0, feature_multiplier=2).to(F64)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=F64)
    y = torch.nn.functional.one_hot(torch.arange(4) % 10, 10).to(F64)

    def loss(ps, xb, yb):
        return get_loss("mse_mean")(functional_call(model, dict(zip(names, ps, strict=True)), (xb,)), yb)

    stacked = st.per_example_gradients(loss, params, x, y)
    for i in range(4):
        torch.testing.assert_close(
            flat([s[i] for s in stacked]),
            autograd_grad(loss, params, x[i : i + 1], y[i : i + 1]),
            rtol=1e-10,
            atol=1e-13,
        )
    xs, ys = st.micro_batches(x, y, 2, torch.arange(4))
    norms = st.msam_gradient(loss, params, xs, ys, 0.1).micro_grad_norms
    op = st.MSamOperator(loss, params, xs, ys, norms, 0.1)
    v = torch.randn(op.dim, generator=g, dtype=F64)
    ref = 0
    for k in range(2):
        hk = HessianOperator(lambda ps, k=k: loss(ps, xs[k], ys[k]), params)  # double backward
        hv = hk.matvec(v)
        ref = ref + hv + 0.1 * hk.matvec(hv) / norms[k]
    torch.testing.assert_close(op.matvec(v), ref / 2, rtol=1e-9, atol=1e-12)
