"""Stochastic SAM: gradient noise, the SAM batch sharpness, m-sharpness and SAM's two-step drift.

The paper (Long & Bartlett 2024, https://arxiv.org/abs/2309.12488) measures its Transformer against a SAM-edge
computed from the gradient norm of the *minibatch* the update uses, as the official code does
(``hessian_norm.py`` and ``transformer.py`` of https://github.com/google-deepmind/sam_edge). This module holds
the quantities that say why that edge, and what changes with the batch:

* **gradient noise** -- the per-example gradient covariance ``Sigma`` (its trace from per-example gradients
  computed with ``torch.func.vmap``, :func:`gradient_noise_trace`) and the exact identity for a batch of ``B``
  of ``N`` examples drawn uniformly *without replacement* (:func:`sampling_factor`,
  :func:`expected_sq_grad_norm`):

  ``E ||g_B||^2 = ||g||^2 + (N - B)/(B (N - 1)) tr Sigma``,  ``Sigma = (1/N) sum_i (g_i - g)(g_i - g)^T``,

  the finite-population variance of a sample mean. The noise inflates ``||g_B||`` and with it the minibatch
  SAM-edge ``S(eta, rho, ||g_B||)``; where the noise dominates and ``alpha_B << 1`` that edge grows like
  ``B^(-1/4)`` (:func:`samedge_lib.theory.edges.noise_dominated_sam_edge`);
* **the SAM batch sharpness** ``Q = eta s^T H s / (2 g^T s)`` (:func:`sam_batch_sharpness`), with ``s`` the
  direction the update steps along and ``H, g`` on the same data. To second order one step changes that data's
  loss by ``-eta g^T s + (eta^2/2) s^T H s``, which is positive exactly when ``Q > 1``; when ``g`` is an
  eigenvector of ``H`` it equals the collapse variable ``Lambda``, so ``Q = 1`` is the SAM-edge. It is SAM's
  analogue of the batch sharpness of Andreyev & Beneventano (https://arxiv.org/abs/2412.20553), for which
  ``s = g`` and the threshold is ``2/eta``;
* **Hutchinson's estimator** of ``tr H`` (:func:`hutchinson_trace`), for comparing what SAM flattens at small
  and at full batch (Wen, Ma & Li, https://arxiv.org/abs/2211.05729: full-batch SAM regularises ``lambda_max``,
  batch-1 SAM the trace);
* **m-SAM** (Foret et al., https://arxiv.org/abs/2010.01412, "m-sharpness"): the batch is split into ``K``
  micro-batches of ``m`` examples (a fresh random partition every step, :func:`msam_permutation`), each takes
  its own ascent ``rho g_k/||g_k||``, and the ``K`` perturbed gradients are averaged (:func:`msam_gradient`).
  Freezing the ``||g_k||``, one step multiplies a perturbation by ``I - eta A_m`` with the symmetric
  ``A_m = (1/K) sum_k [H_k + rho H_k^2/||g_k||]`` (:class:`MSamOperator`); the m-edge is
  ``(eta/2) lambda_max(A_m) = 1``, which for ``K = 1`` is the SAM-edge (``A_1 = H + rho H^2/||g||``);
* **the drift** (Bartlett, Long & Bousquet, JMLR 24(316), 2023, https://jmlr.org/beta/papers/v24/23-043.html): away
  from a quadratic, SAM's oscillation along ``v_1`` performs gradient descent on ``lambda_1``. Over two steps the
  oscillating part ``rho H g/||g||`` cancels and what remains of ``w_{t+2} - w_t`` beyond the plain gradient steps
  is ``-(eta rho^2/2) grad lambda_1`` to leading order (the third derivative along ``v_1``).
  :func:`sharpness_gradient` computes ``grad_w (v_1^T H(w) v_1)`` with ``v_1`` held fixed (a third-order
  derivative by triple backward) and :func:`drift_alignment` the cosine of the two-step residual with
  ``-grad lambda_1``.

Functions take a *data loss* ``loss(params, x, y)``: the mean loss of the examples ``x, y`` at ``params``
(:meth:`samedge_lib.engine.tasks.Task.loss` on a batch). Per-example and per-micro-batch derivatives use ``torch.func``
(``vmap`` over ``grad``, ``jvp``); the mean over examples of a loss that is itself a mean over examples is what
makes ``g = (1/N) sum_i g_i`` exact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.func import grad, grad_and_value, jvp, vmap

from samedge_lib.theory.edges import SAM_NORM_EPS
from samedge_lib.theory.updates import StepInfo

#: ``loss(params, x, y) -> scalar``: the mean loss over the examples ``x, y`` (first axis) at ``params``.
DataLoss = Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]

#: Offset of the m-SAM partitions' seeds, so they never coincide with the seeds of the minibatch order
#: (:func:`samedge_lib.engine.tasks.build_task` seeds epoch ``e`` with ``seed * 1_000_003 + e``).
_PARTITION_SEED_OFFSET = 1 << 40


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    sizes = [p.numel() for p in like]
    return [c.view(p.shape) for c, p in zip(torch.split(flat, sizes), like, strict=True)]


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    """Signed cosine of two flat vectors (float64); NaN when either is zero or not finite."""
    u64, v64 = u.double().reshape(-1), v.double().reshape(-1)
    den = float(u64.norm() * v64.norm())
    return float(u64 @ v64) / den if den > 0 and math.isfinite(den) else math.nan


# ------------------------------------------------------------------------------------------------
# Gradient noise and the sampling identity
# ------------------------------------------------------------------------------------------------
def sampling_factor(n: int, b: int) -> float:
    """``(N - B)/(B (N - 1))``: the variance of a mean of ``B`` of ``N`` items drawn without replacement, per unit of
    the population variance. 0 at ``B = N`` (the full batch has no noise), ``1`` at ``B = 1``.
    """
    if isinstance(n, bool) or isinstance(b, bool) or not isinstance(n, int) or not isinstance(b, int):
        raise ValueError(f"n and b must be integers, got n={n!r}, b={b!r}")
    if n < 2 or not 1 <= b <= n:
        raise ValueError(f"need n >= 2 and 1 <= b <= n, got n={n}, b={b}")
    return (n - b) / (b * (n - 1))


def expected_sq_grad_norm(grad_norm: float, trace_sigma: float, n: int, b: int) -> float:
    """``E ||g_B||^2 = ||g||^2 + (N - B)/(B (N - 1)) tr Sigma`` for a batch of ``B`` of ``N`` drawn without replacement.

    Exact for every ``w`` (no model assumption): ``g_B - g`` is the deviation of a sample mean from the population
    mean, whose expected squared norm is the finite-population variance; the cross term has mean zero.
    """
    if not (grad_norm >= 0 and trace_sigma >= 0):
        raise ValueError(f"grad_norm and trace_sigma must be >= 0, got {grad_norm!r}, {trace_sigma!r}")
    return grad_norm**2 + sampling_factor(n, b) * trace_sigma


def per_example_gradients(loss: DataLoss, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list:
    """The gradients of every example's own loss, stacked: one tensor ``[n, *p.shape]`` per parameter.

    ``torch.func.vmap`` over ``torch.func.grad`` of ``loss(params, x_i[None], y_i[None])``: one batched backward
    pass instead of ``n`` (the loss must be free of data-dependent Python control flow).
    """

    def one(ps: tuple[torch.Tensor, ...], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss(list(ps), xi.unsqueeze(0), yi.unsqueeze(0))

    return list(vmap(grad(one), in_dims=(None, 0, 0))(tuple(p.detach() for p in params), x, y))


def gradient_noise_trace(
    loss: DataLoss,
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mean_grad: torch.Tensor | None = None,
    chunk: int = 250,
) -> float:
    """``tr Sigma = (1/N) sum_i ||g_i - g||^2`` over the ``N`` examples ``x, y``, from per-example gradients.

    ``mean_grad`` is the flat gradient of the mean loss (``g = (1/N) sum_i g_i``); without it a first pass computes
    it. The per-example gradients are made ``chunk`` examples at a time (memory: ``chunk x`` the parameters) and
    the squared deviations summed in float64.
    """
    n = int(x.shape[0])
    if n < 1:
        raise ValueError("gradient_noise_trace needs at least one example")
    if mean_grad is None:
        total = None
        for start in range(0, n, chunk):
            gs = per_example_gradients(loss, params, x[start : start + chunk], y[start : start + chunk])
            s = torch.cat([g.double().reshape(g.shape[0], -1).sum(0) for g in gs])
            total = s if total is None else total + s
        mean_grad = total / n
    means = _unflat(mean_grad.reshape(-1).to(dtype=params[0].dtype), params)
    acc = 0.0
    for start in range(0, n, chunk):
        gs = per_example_gradients(loss, params, x[start : start + chunk], y[start : start + chunk])
        for g, mu in zip(gs, means, strict=True):  # per example and tensor in the working dtype, summed in float64
            acc += float(((g - mu) ** 2).reshape(g.shape[0], -1).sum(1).double().sum())
    return acc / n


def random_batch_sq_grad_norms(
    sq_grad_norm_of: Callable[[torch.Tensor], float], n: int, b: int, n_batches: int, generator: torch.Generator
) -> torch.Tensor:
    """``||g_B||^2`` of ``n_batches`` batches of ``b`` indices drawn uniformly without replacement from ``range(n)``.

    ``sq_grad_norm_of(indices)`` computes one batch's squared gradient norm (the caller's plain minibatch gradient,
    independent of the per-example route of :func:`gradient_noise_trace`). Returns a float64 tensor.
    """
    sampling_factor(n, b)  # validates n and b
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    out = [sq_grad_norm_of(torch.randperm(n, generator=generator)[:b]) for _ in range(n_batches)]
    return torch.tensor(out, dtype=torch.float64)


def hutchinson_trace(op, n_probes: int, generator: torch.Generator) -> tuple[float, float]:
    """Hutchinson's estimate of ``tr H``: the mean of ``z^T H z`` over Rademacher probes ``z``, and its standard error.

    ``op`` is any symmetric operator of :mod:`samedge_lib.core.hessian` (``matvec``, ``dim``, ``dtype``, ``device``).
    Unbiased for every ``n_probes``; its variance is ``2 (||H||_F^2 - sum_i H_ii^2)`` per probe. The standard
    error is NaN for a single probe.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    values = []
    for _ in range(n_probes):
        z = torch.randint(0, 2, (op.dim,), generator=generator).to(dtype=op.dtype, device=op.device) * 2 - 1
        values.append(float(z.double() @ op.matvec(z).double()))
    v = torch.tensor(values, dtype=torch.float64)
    se = float(v.std(unbiased=True) / math.sqrt(n_probes)) if n_probes > 1 else math.nan
    return float(v.mean()), se


# ------------------------------------------------------------------------------------------------
# The SAM batch sharpness
# ------------------------------------------------------------------------------------------------
def sam_batch_sharpness(op, grad_flat: torch.Tensor, direction_flat: torch.Tensor, eta: float) -> float:
    """``Q = eta s^T H s / (2 g^T s)`` for the update direction ``s`` and the gradient ``g`` on the data of ``op``.

    One Hessian-vector product. ``Q > 1`` iff the step ``-eta s`` raises that data's loss to second order; for
    ``s = g`` (GD/SGD) ``Q`` is ``eta/2`` times the batch sharpness ``g^T H g/||g||^2``. NaN when ``g^T s = 0``.
    """
    s = direction_flat.to(dtype=op.dtype, device=op.device)
    g_s = float(grad_flat.double() @ s.double())
    if g_s == 0 or not math.isfinite(g_s):
        return math.nan
    return eta * float(s.double() @ op.matvec(s).double()) / (2.0 * g_s)


# ------------------------------------------------------------------------------------------------
# m-SAM
# ------------------------------------------------------------------------------------------------
def msam_permutation(size: int, seed: int, step: int) -> torch.Tensor:
    """The order in which the ``size`` examples of the batch of ``step`` are cut into micro-batches.

    A fresh uniformly random permutation every step (Foret et al.'s m-sharpness uses a new partition at every
    step), seeded by ``(seed, step)`` alone, so a resumed run draws exactly the partitions of an uninterrupted one.
    """
    gen = torch.Generator().manual_seed(_PARTITION_SEED_OFFSET + seed * 1_000_003 + step)
    return torch.randperm(size, generator=gen)


def micro_batches(x: torch.Tensor, y: torch.Tensor, m: int, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x, y`` reordered by ``order`` and cut into ``K = n/m`` micro-batches: ``[K, m, ...]`` each."""
    n = int(x.shape[0])
    if m < 1 or n % m:
        raise ValueError(f"the micro-batch size m={m} must divide the batch of {n} examples")
    order = order.to(x.device)
    return x[order].reshape(n // m, m, *x.shape[1:]), y[order].reshape(n // m, m, *y.shape[1:])


def _norms_per_row(grads: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Global L2 norm of each row ``k`` of stacked gradients ``[K, ...]``: per tensor in its dtype (a float64 copy of
    ``K`` gradients costs more than the gradients), across tensors in float64.
    """
    sq = sum(torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1).double() ** 2 for g in grads)
    return torch.sqrt(sq).to(dtype)


@dataclass
class MSamGradient:
    """What one m-SAM gradient computed on a batch cut into ``K`` micro-batches.

    Attributes:
        loss: the batch loss (the mean of the micro-batch losses).
        grad: the batch gradient ``g = (1/K) sum_k g_k``.
        direction: the m-SAM direction ``s = (1/K) sum_k grad_k(w + rho g_k/(||g_k|| + eps))``.
        micro_grad_norms: ``||g_k||``, ``[K]``.

    """

    loss: torch.Tensor
    grad: list[torch.Tensor]
    direction: list[torch.Tensor]
    micro_grad_norms: torch.Tensor


def msam_gradient(
    loss: DataLoss,
    params: Sequence[torch.Tensor],
    xs: torch.Tensor,
    ys: torch.Tensor,
    rho: float,
    eps: float = SAM_NORM_EPS,
) -> MSamGradient:
    """The m-SAM direction on micro-batches ``xs, ys`` (``[K, m, ...]``): every micro-batch ascends on its own.

    Each micro-batch ``k`` takes SAM's ascent ``e_k = rho g_k/(||g_k|| + eps)`` exactly as the official code's
    ``sam_neighbor`` does for the whole batch (``sam_edge.py`` of https://github.com/google-deepmind/sam_edge),
    then its gradient at ``w + e_k``; the ``K`` gradients are averaged. Both passes are one ``torch.func.vmap``
    over the micro-batches. With ``K = 1`` this is SAM's gradient (:func:`samedge_lib.theory.updates.sam_gradient`).
    """
    ps = tuple(p.detach() for p in params)
    k = int(xs.shape[0])

    def micro(p: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss(list(p), x, y)

    gv = grad_and_value(micro)
    grads, losses = vmap(gv, in_dims=(None, 0, 0))(ps, xs, ys)
    norms = _norms_per_row(grads, ps[0].dtype)
    scale = rho / (norms + eps)
    shifted = tuple(p.unsqueeze(0) + scale.view(k, *([1] * p.dim())) * g for p, g in zip(ps, grads, strict=True))
    sgrads, _ = vmap(gv, in_dims=(0, 0, 0))(shifted, xs, ys)
    return MSamGradient(
        loss=losses.mean().detach(),
        grad=[g.mean(0).detach() for g in grads],
        direction=[s.mean(0).detach() for s in sgrads],
        micro_grad_norms=norms.detach(),
    )


def msam_step(
    params: Sequence[torch.Tensor],
    loss: DataLoss,
    xs: torch.Tensor,
    ys: torch.Tensor,
    eta: float,
    rho: float,
    eps: float = SAM_NORM_EPS,
) -> tuple[list[torch.Tensor], StepInfo]:
    """One m-SAM step ``w - eta s`` (:func:`msam_gradient`), with what it computed at ``w``, as the update rules do."""
    r = msam_gradient(loss, params, xs, ys, rho, eps)
    new = [p - eta * s for p, s in zip(params, r.direction, strict=True)]
    g_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in r.grad)).to(r.grad[0].dtype)
    return new, StepInfo(r.loss, r.grad, g_norm, r.direction)


class MSamOperator:
    """m-SAM's frozen-norm stability operator ``A_m v = (1/K) sum_k [H_k v + rho H_k (H_k v)/||g_k||]``.

    ``H_k`` is the Hessian of micro-batch ``k``'s loss at ``params``; ``micro_grad_norms`` are the ``||g_k||``.
    Symmetric (each term is a symmetric matrix), so :func:`samedge_lib.core.eigen.lanczos` applies. A product costs
    two Hessian-vector products per micro-batch, i.e. about two of the whole batch, as ``torch.func.jvp`` of
    ``torch.func.grad`` vmapped over the micro-batches.
    """

    def __init__(
        self,
        loss: DataLoss,
        params: Sequence[torch.Tensor],
        xs: torch.Tensor,
        ys: torch.Tensor,
        micro_grad_norms: torch.Tensor,
        rho: float,
    ) -> None:
        self._params = tuple(p.detach() for p in params)
        if micro_grad_norms.shape != (xs.shape[0],):
            raise ValueError(
                f"need one gradient norm per micro-batch ({xs.shape[0]}), got {tuple(micro_grad_norms.shape)}"
            )
        if not bool((micro_grad_norms > 0).all()):
            raise ValueError("every micro-batch gradient norm must be > 0 (the operator divides by it)")
        self.xs, self.ys, self.rho = xs, ys, float(rho)
        self.norms = micro_grad_norms.to(dtype=self._params[0].dtype)
        self.n_matvec = 0
        params0 = self._params

        def hvp(x: torch.Tensor, y: torch.Tensor, v: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            def g(*p: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return tuple(grad(lambda q: loss(list(q), x, y))(p))

            return jvp(g, params0, v)[1]

        self._hv_shared = vmap(hvp, in_dims=(0, 0, None))  # H_k v for one v
        self._hv_own = vmap(hvp, in_dims=(0, 0, 0))  # H_k u_k for one u_k per micro-batch

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self._params)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the products."""
        return self._params[0].dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self._params[0].device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A_m v`` for a flat vector ``v``."""
        v = v.detach().to(dtype=self.dtype, device=self.device).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"matvec expects a flat vector of length {self.dim}, got {tuple(v.shape)}")
        self.n_matvec += 1
        k = self.xs.shape[0]
        with warnings.catch_warnings():
            # torch's first forward-AD call loads its decompositions through torch.jit.script, which warns
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
            u = self._hv_shared(self.xs, self.ys, tuple(_unflat(v, self._params)))
            w = self._hv_own(self.xs, self.ys, u)
        coef = (self.rho / self.norms).view(k, 1)
        u_flat = torch.cat([t.reshape(k, -1) for t in u], dim=1)
        w_flat = torch.cat([t.reshape(k, -1) for t in w], dim=1)
        return (u_flat + coef * w_flat).mean(0).detach()


# ------------------------------------------------------------------------------------------------
# The drift towards lower sharpness
# ------------------------------------------------------------------------------------------------
def sharpness_gradient(
    loss_of_params: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    params: Sequence[torch.Tensor],
    v1: torch.Tensor,
) -> torch.Tensor:
    """``grad_w (v^T H(w) v)`` at ``params`` with the flat vector ``v`` held fixed: the gradient of ``lambda_1``
    when ``v`` is its unit eigenvector (first-order perturbation theory: ``d lambda_1 = v^T dH v``).

    Triple backward: the gradient with a graph, its product with ``v`` differentiated again (``H v``), the
    quadratic form ``v^T H v`` differentiated once more.
    """
    leaves = [p.detach().requires_grad_(True) for p in params]
    vs = _unflat(v1.detach().to(dtype=leaves[0].dtype, device=leaves[0].device), leaves)
    with torch.enable_grad():
        loss = loss_of_params(leaves)
        g = torch.autograd.grad(loss, leaves, create_graph=True)
        gv = sum((gi * vi).sum() for gi, vi in zip(g, vs, strict=True))
        hv = torch.autograd.grad(gv, leaves, create_graph=True, allow_unused=True)
        quad = sum((h * vi).sum() for h, vi in zip(hv, vs, strict=True) if h is not None)
        if not isinstance(quad, torch.Tensor) or not quad.requires_grad:
            return torch.zeros(sum(p.numel() for p in leaves), dtype=leaves[0].dtype, device=leaves[0].device)
        out = torch.autograd.grad(quad, leaves, allow_unused=True)
    return _flat([torch.zeros_like(p) if o is None else o.detach() for o, p in zip(out, leaves, strict=True)])


def drift_residual(
    w0: Sequence[torch.Tensor],
    w2: Sequence[torch.Tensor],
    g0: Sequence[torch.Tensor],
    g1: Sequence[torch.Tensor],
    eta: float,
) -> torch.Tensor:
    """``(w_{t+2} - w_t)/2 + eta (g_t + g_{t+1})/2``: the mean of two steps minus their plain-gradient part.

    For SAM's steps ``-eta s`` this is ``-(eta/2)[(s_t - g_t) + (s_{t+1} - g_{t+1})]``: what the ascent adds. On a
    2-cycle along ``v_1`` its first-order part ``rho H g/||g||`` alternates in sign and cancels, leaving the
    second-order part ``-(eta rho^2/2) grad lambda_1``.
    """
    parts = [(b - a) / 2 + eta * (x + y) / 2 for a, b, x, y in zip(w0, w2, g0, g1, strict=True)]
    return _flat(parts)


def drift_alignment(residual: torch.Tensor, grad_lambda1: torch.Tensor) -> float:
    """``cos(residual, -grad lambda_1)``: positive when the two-step drift descends the sharpness."""
    return cosine(residual, -grad_lambda1)
