"""HessianOperator / DenseOperator against dense float64 Hessians and closed forms."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_mlp_loss
from torch.func import functional_call

from samedge_lib.core.hessian import (
    FD_DENOMINATOR_EPS,
    FD_STEP,
    GRAD_EVALS_PER_MATVEC,
    HVP_METHODS,
    DenseOperator,
    HessianOperator,
    SymmetricOperator,
    check_deterministic,
    dense_hessian,
)
from samedge_lib.engine.models import make_model

F64 = torch.float64
FD_FACTOR = 2 * FD_STEP / (2 * FD_STEP + FD_DENOMINATOR_EPS)  # 0.995025: the official systematic factor
EXACT_METHODS = ("exact", "exact_fresh", "forward_over_reverse")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


@pytest.fixture(params=["tanh", "gelu", "relu"])
def mlp(request):
    loss_fn, params = make_mlp_loss(request.param)
    return request.param, loss_fn, params, dense_hessian(loss_fn, params)


# ---------------------------------------------------------------------------- the dense reference
def test_dense_hessian_of_quadratic_is_its_matrix():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(7, 7, generator=g, dtype=F64)
    A = A + A.T
    b = torch.randn(7, generator=g, dtype=F64)

    def loss_fn(ps):
        w = torch.cat([ps[0].reshape(-1), ps[1]])
        return 0.5 * w @ A @ w + b @ w

    params = [torch.randn(2, 2, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)]
    H = dense_hessian(loss_fn, params)
    assert torch.allclose(H, A, atol=1e-12, rtol=0)


def test_dense_hessian_of_least_squares_is_two_xtx_over_n():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(30, 6, generator=g, dtype=F64)
    y = torch.randn(30, generator=g, dtype=F64)

    def loss_fn(ps):
        return ((X @ ps[0] - y) ** 2).mean()

    H = dense_hessian(loss_fn, [torch.zeros(6, dtype=F64)])
    assert torch.allclose(H, 2 * X.T @ X / 30, atol=1e-13, rtol=0)


# ---------------------------------------------------------------------------- HVP methods
@pytest.mark.parametrize("method", EXACT_METHODS)
def test_exact_methods_match_dense_hessian(mlp, method):
    _, loss_fn, params, H = mlp
    op = HessianOperator(loss_fn, params, method=method)
    assert op.dim == H.shape[0] == sum(p.numel() for p in params)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(op.dim, generator=g, dtype=F64)
        assert rel_err(op.matvec(v), H @ v) < 1e-10
    V = torch.randn(op.dim, 4, generator=g, dtype=F64)
    assert rel_err(op.matmat(V), H @ V) < 1e-10
    assert op.n_matvec == 7


def layernorm_cnn_loss(seed: int = 0):
    """A tiny float64 CNN of the CIFAR-10 kind: conv -> ReLU -> LayerNorm over channels -> max-pool -> dense.

    The LayerNorm scale and offset are moved away from 1 and 0, so that the mixed second derivatives
    between them and the convolution are not degenerate. Returns ``(loss_fn, params)``.
    """
    g = torch.Generator().manual_seed(seed)
    model = make_model("cifar10", seed=seed, num_blocks=1, feature_multiplier=2, image_size=4, in_channels=2, n_out=3)
    model = model.to(F64)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() + 0.3 * torch.randn(p.shape, generator=g, dtype=F64) for p in model.parameters()]
    x = torch.randn(5, 2, 4, 4, generator=g, dtype=F64)
    y = torch.randn(5, 3, generator=g, dtype=F64)

    def loss_fn(ps):
        return ((functional_call(model, dict(zip(names, ps, strict=True)), (x,)) - y) ** 2).mean()

    return loss_fn, params


def gradient_difference(loss_fn, params, v: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(grad(w + eps v) - grad(w - eps v)) / (2 eps)`` from first derivatives only (no double backward)."""
    shapes = [p.shape for p in params]
    parts = [c.view(s) for c, s in zip(torch.split(v, [p.numel() for p in params]), shapes, strict=True)]

    def grad_at(sign: float) -> torch.Tensor:
        leaves = [(p + sign * eps * u).requires_grad_(True) for p, u in zip(params, parts, strict=True)]
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fn(leaves), leaves)])

    return (grad_at(1.0) - grad_at(-1.0)) / (2 * eps)


@pytest.mark.parametrize("method", HVP_METHODS)
def test_every_method_on_a_model_with_layernorm(method):
    """The CNN's LayerNorm block, where the HVP route matters.

    ``forward_over_reverse`` is ``torch.func.jvp`` of ``torch.func.grad``. The neighbouring route, ``jvp`` of
    ``torch.func.jacrev``, gets the mixed LayerNorm block wrong in torch 2.13 (a relative error of 0.28 on this
    model, measured); this test fails if the library's route changes to it. Two references: the dense
    Hessian (reverse over reverse) and a central difference of plain gradients (first derivatives only).
    """
    loss_fn, params = layernorm_cnn_loss()
    H = dense_hessian(loss_fn, params)
    op = HessianOperator(loss_fn, params, method=method, fd_eps=1e-5, fd_denominator_eps=0.0)
    g = torch.Generator().manual_seed(8)
    for _ in range(3):
        v = torch.randn(op.dim, generator=g, dtype=F64)
        assert rel_err(H @ v, gradient_difference(loss_fn, params, v)) < 1e-6  # the references agree
        assert rel_err(op.matvec(v), H @ v) < (1e-6 if method == "finite_difference" else 1e-10)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_finite_difference_is_the_official_estimator_on_smooth_models(activation):
    loss_fn, params = make_mlp_loss(activation)
    H = dense_hessian(loss_fn, params)
    op = HessianOperator(loss_fn, params, method="finite_difference")
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(op.dim, generator=g, dtype=F64)
        hv = op.matvec(v)
        # the systematic -0.5 % of the 2 eps + 1e-5 denominator is there ...
        assert rel_err(hv, H @ v) == pytest.approx(1 - FD_FACTOR, rel=2e-3)
        # ... and once it is accounted for, only the O(eps^2) truncation error remains
        assert rel_err(hv, FD_FACTOR * (H @ v)) < 1e-5
    unbiased = HessianOperator(loss_fn, params, method="finite_difference", fd_denominator_eps=0.0)
    v = torch.randn(op.dim, generator=g, dtype=F64)
    assert rel_err(unbiased.matvec(v), H @ v) < 1e-5


def test_finite_difference_is_exact_up_to_its_factor_on_a_quadratic():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(9, 9, generator=g, dtype=F64)
    A = A + A.T

    def loss_fn(ps):
        return 0.5 * ps[0] @ A @ ps[0]

    op = HessianOperator(loss_fn, [torch.randn(9, generator=g, dtype=F64)], method="finite_difference")
    v = torch.randn(9, generator=g, dtype=F64)
    assert rel_err(op.matvec(v), FD_FACTOR * (A @ v)) < 1e-10
    # the step is taken along the unit vector, so the map is positively homogeneous
    assert rel_err(op.matvec(7.5 * v), 7.5 * op.matvec(v)) < 1e-10
    assert torch.equal(op.matvec(torch.zeros(9, dtype=F64)), torch.zeros(9, dtype=F64))


def test_finite_difference_uses_the_configured_step():
    # loss = sum(w^4)/4: the central difference of w^3 along e_i with step h and denominator 2h + c
    # is ((w + h)^3 - (w - h)^3) / (2h + c) = (6 w^2 h + 2 h^3) / (2h + c), computable by hand.
    w = torch.tensor([0.5, -1.0, 2.0], dtype=F64)

    def loss_fn(ps):
        return (ps[0] ** 4).sum() / 4

    for h, c in [(1e-3, 1e-5), (0.1, 0.0), (0.05, 0.01)]:
        op = HessianOperator(loss_fn, [w], method="finite_difference", fd_eps=h, fd_denominator_eps=c)
        for i in range(3):
            e = torch.zeros(3, dtype=F64)
            e[i] = 1.0
            expected = torch.zeros(3, dtype=F64)
            expected[i] = (6 * w[i] ** 2 * h + 2 * h**3) / (2 * h + c)
            assert torch.allclose(op.matvec(e), expected, rtol=1e-10, atol=1e-12)


def test_relu_finite_difference_differs_from_exact_only_through_kinks():
    # Exact methods differentiate the current linear piece; on a ReLU net they agree with the dense
    # Hessian of that piece (tested above). The official finite difference is the same up to its
    # factor as long as no activation flips within +-eps.
    loss_fn, params = make_mlp_loss("relu")
    H = dense_hessian(loss_fn, params)
    op = HessianOperator(loss_fn, params, method="finite_difference", fd_eps=1e-7)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(6), dtype=F64)
    factor = 2e-7 / (2e-7 + FD_DENOMINATOR_EPS)
    assert rel_err(op.matvec(v), factor * (H @ v)) < 1e-6


# ---------------------------------------------------------------------------- gradient, counters, purity
@pytest.mark.parametrize("method", HVP_METHODS)
def test_gradient_is_cached_and_matches_autograd(method):
    loss_fn, params = make_mlp_loss("tanh")
    leaves = [p.clone().requires_grad_(True) for p in params]
    loss_ref = loss_fn(leaves)
    grad_ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_ref, leaves)])
    op = HessianOperator(loss_fn, params, method=method)
    loss, g = op.gradient()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-14)
    assert rel_err(g, grad_ref) < 1e-13
    assert not g.requires_grad and not loss.requires_grad
    assert op.n_grad_evals == 1
    assert op.gradient()[1] is g and op.n_grad_evals == 1


@pytest.mark.parametrize("method", HVP_METHODS)
def test_counters(method):
    loss_fn, params = make_mlp_loss("gelu")
    op = HessianOperator(loss_fn, params, method=method)
    v = torch.ones(op.dim, dtype=F64)
    op.gradient()
    for _ in range(3):
        op.matvec(v)
    op.matmat(torch.ones(op.dim, 2, dtype=F64))
    assert op.n_matvec == 5
    assert op.n_grad_evals == 1 + 5 * GRAD_EVALS_PER_MATVEC[method]


def test_exact_builds_its_graph_once_and_shares_it_with_the_gradient():
    loss_fn, params = make_mlp_loss("tanh")
    calls = []

    def counting_loss(ps):
        calls.append(1)
        return loss_fn(ps)

    op = HessianOperator(counting_loss, params, method="exact")
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(7), dtype=F64)
    first = op.matvec(v)
    op.gradient()
    for _ in range(4):
        assert torch.equal(op.matvec(v), first)  # retained graph, same numbers
    assert len(calls) == 1


@pytest.mark.parametrize("method", HVP_METHODS)
def test_operator_does_not_touch_the_callers_parameters(method):
    loss_fn, params = make_mlp_loss("tanh")
    live = [torch.nn.Parameter(p.clone()) for p in params]
    before = [p.detach().clone() for p in live]
    with torch.no_grad():  # the operator must work inside no_grad too (measurement code often is)
        op = HessianOperator(loss_fn, live, method=method)
        op.gradient()
        hv = op.matvec(torch.ones(op.dim, dtype=F64))
    assert torch.isfinite(hv).all()
    for p, b in zip(live, before, strict=True):
        assert torch.equal(p.detach(), b) and p.grad is None and p.requires_grad
    # later in-place changes by the caller do not leak into the operator's point
    with torch.no_grad():
        live[0].add_(1.0)
    assert torch.equal(op.params[0], before[0])


@pytest.mark.parametrize("method", HVP_METHODS)
def test_parameters_the_gradient_does_not_depend_on(method):
    # a enters quadratically, b linearly (its gradient is constant), c not at all
    def loss_fn(ps):
        a, b, _ = ps
        return (a**2).sum() * 1.5 + 3.0 * b.sum()

    params = [torch.ones(2, dtype=F64), torch.ones(3, dtype=F64), torch.ones(1, dtype=F64)]
    op = HessianOperator(loss_fn, params, method=method)
    v = torch.arange(1.0, 7.0, dtype=F64)
    expected = torch.tensor([3.0, 6.0, 0.0, 0.0, 0.0, 0.0], dtype=F64)
    factor = FD_FACTOR if method == "finite_difference" else 1.0
    assert torch.allclose(op.matvec(v), factor * expected, rtol=1e-9, atol=1e-9)
    loss, g = op.gradient()
    assert torch.allclose(g, torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0, 0.0], dtype=F64))


def test_flatten_unflatten_round_trip_and_shapes():
    loss_fn, params = make_mlp_loss("tanh")
    op = HessianOperator(loss_fn, params)
    flat = torch.arange(op.dim, dtype=F64)
    parts = op.unflatten(flat)
    assert [p.shape for p in parts] == [p.shape for p in params]
    assert torch.equal(op.flatten(parts), flat)
    assert op.dtype == F64 and op.device == torch.device("cpu")
    with pytest.raises(ValueError, match="flat vector of shape"):
        op.unflatten(flat[:-1])
    with pytest.raises(ValueError, match="shapes"):
        op.flatten(parts[:-1])
    with pytest.raises(ValueError, match="flat vector of shape"):
        op.matvec(torch.ones(op.dim + 1, dtype=F64))
    with pytest.raises(ValueError, match=r"\[dim, k\]|shape"):
        op.matmat(torch.ones(op.dim, dtype=F64))


def test_matvec_casts_to_the_operators_dtype():
    loss_fn, params = make_mlp_loss("tanh")
    op32 = HessianOperator(lambda ps: loss_fn([p.double() for p in ps]), [p.float() for p in params])
    out = op32.matvec(torch.ones(op32.dim, dtype=F64))
    assert out.dtype == torch.float32 and op32.dtype == torch.float32


# ---------------------------------------------------------------------------- bad input
def test_bad_constructor_arguments():
    loss_fn, params = make_mlp_loss("tanh")
    with pytest.raises(ValueError, match="exact, exact_fresh, forward_over_reverse, finite_difference"):
        HessianOperator(loss_fn, params, method="hutchinson")
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(loss_fn, [])
    with pytest.raises(ValueError, match="one dtype"):
        HessianOperator(loss_fn, [params[0], params[1].float()])
    with pytest.raises(ValueError, match="floating-point"):
        HessianOperator(loss_fn, [torch.ones(3, dtype=torch.long)])
    with pytest.raises(ValueError, match="fd_eps"):
        HessianOperator(loss_fn, params, method="finite_difference", fd_eps=0.0)
    with pytest.raises(ValueError, match="fd_denominator_eps"):
        HessianOperator(loss_fn, params, fd_denominator_eps=-1e-5)
    with pytest.raises(TypeError, match="callable"):
        HessianOperator("loss", params)


def test_non_scalar_loss_is_rejected():
    op = HessianOperator(lambda ps: ps[0] * 2, [torch.ones(3, dtype=F64)])
    with pytest.raises(ValueError, match="scalar"):
        op.gradient()


# ---------------------------------------------------------------------------- DenseOperator
def test_dense_operator_interface():
    g = torch.Generator().manual_seed(8)
    A = torch.randn(6, 6, generator=g, dtype=F64)
    A = A + A.T
    op = DenseOperator(A)
    assert isinstance(op, SymmetricOperator)
    assert isinstance(HessianOperator(lambda ps: (ps[0] ** 2).sum(), [torch.ones(2)]), SymmetricOperator)
    v = torch.randn(6, generator=g, dtype=F64)
    assert torch.allclose(op.matvec(v), A @ v, atol=1e-14, rtol=0)
    V = torch.randn(6, 3, generator=g, dtype=F64)
    assert torch.allclose(op.matmat(V), A @ V, atol=1e-14, rtol=0)
    assert op.n_matvec == 4 and op.n_grad_evals == 0
    assert op.dim == 6 and op.dtype == F64


def test_dense_operator_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        DenseOperator(torch.ones(3, 4))
    with pytest.raises(ValueError, match="symmetric"):
        DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="floating"):
        DenseOperator(torch.eye(3, dtype=torch.long))
    # float32 rounding noise is accepted and removed
    Q, _ = torch.linalg.qr(torch.randn(50, 50, generator=torch.Generator().manual_seed(9)))
    op = DenseOperator(Q @ torch.diag(torch.linspace(-1, 3, 50)) @ Q.T)
    assert torch.equal(op.matrix, op.matrix.T)


# ---------------------------------------------------------------------------- determinism probe
def test_check_deterministic():
    loss_fn, params = make_mlp_loss("tanh")
    op = HessianOperator(loss_fn, params)
    v = torch.ones(op.dim, dtype=F64)
    assert check_deterministic(op, v)
    assert op.n_matvec == 2

    class Noisy(DenseOperator):
        def matvec(self, v):
            return super().matvec(v) + 1e-6 * torch.randn(self.dim, dtype=self.dtype)

    noisy = Noisy(torch.eye(4, dtype=F64))
    assert not check_deterministic(noisy, torch.ones(4, dtype=F64))
    assert check_deterministic(noisy, torch.ones(4, dtype=F64), rtol=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        check_deterministic(noisy, torch.ones(4, dtype=F64), rtol=-1.0)
