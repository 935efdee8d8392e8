"""The update rules (GD, SAM, unnormalised SAM) on lists of parameter tensors.

The rules are written functionally: a *gradient function* maps a list of parameter tensors to
``(loss, [gradients])`` on one fixed batch, and each rule returns the new parameters together
with what it computed on the way (the loss and gradient at ``w_t`` are exactly what the
measurement code needs, so nothing is computed twice).

SAM is implemented exactly as the official code (``sam_neighbor`` and ``update`` in ``sam_edge.py`` of
https://github.com/google-deepmind/sam_edge): the ascent step is ``e = rho * g / (||g|| + 1e-5)`` with the
*global* L2 norm over all parameters, both gradients are taken on the same batch, and the descent step
``eta * grad(w + e)`` is applied at ``w``.
``rho = 0`` skips the ascent step and gives plain GD (SGD on minibatches).

The rules use only the tensors' own methods and arithmetic, so this module imports no torch: the theory layer (and
the reading side that asks an update rule for its edge) stays free of torch's import cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from samedge_lib.theory.edges import SAM_NORM_EPS

if TYPE_CHECKING:
    import torch

Params = list["torch.Tensor"]
#: ``grad_fn(params) -> (loss, grads)`` on one fixed batch; ``grads`` matches ``params`` in shape.
GradFn = Callable[[Sequence["torch.Tensor"]], tuple["torch.Tensor", Params]]


def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of all entries of all tensors together (the norm SAM normalises by)."""
    return sum((t.detach().double() ** 2).sum() for t in tensors).sqrt().to(tensors[0].dtype)


def add_scaled(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], scale: float | torch.Tensor) -> Params:
    """Return ``[x + scale * y]`` (new tensors)."""
    return [x + scale * y for x, y in zip(xs, ys, strict=True)]


def sam_perturbation(grads: Sequence[torch.Tensor], rho: float, eps: float = SAM_NORM_EPS) -> Params:
    """The SAM ascent step ``rho * g / (||g|| + eps)`` (official code: ``eps = 1e-5``)."""
    norm = global_norm(grads)
    scale = rho / (norm + eps)
    return [scale * g for g in grads]


@dataclass
class StepInfo:
    """What one update computed at the current iterate ``w_t`` (all on the update's batch).

    Attributes:
        loss: the loss at ``w_t``.
        grad: the gradient at ``w_t``.
        grad_norm: ``||grad||`` (the number that enters the SAM-edge).
        update_grad: the gradient actually stepped along (the SAM gradient; ``grad`` for GD).

    """

    loss: torch.Tensor
    grad: Params
    grad_norm: torch.Tensor
    update_grad: Params


def gd_step(params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float) -> tuple[Params, StepInfo]:
    """One GD step ``w - eta * grad(w)``."""
    loss, g = grad_fn(params)
    new = add_scaled(params, g, -eta)
    return new, StepInfo(loss, g, global_norm(g), g)


def sam_gradient(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    grad_fn: GradFn,
    rho: float,
    eps: float = SAM_NORM_EPS,
) -> Params:
    """The SAM gradient ``grad(w + rho g/(||g|| + eps))`` given ``g = grad(w)`` (same batch)."""
    if rho == 0:
        return list(grads)
    e = sam_perturbation(grads, rho, eps)
    _, g_sam = grad_fn(add_scaled(params, e, 1.0))
    return g_sam


def sam_step(
    params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float, rho: float, eps: float = SAM_NORM_EPS
) -> tuple[Params, StepInfo]:
    """One SAM step ``w - eta * grad(w + rho g/(||g|| + eps))``; ``rho = 0`` is exactly :func:`gd_step`."""
    if rho == 0:
        return gd_step(params, grad_fn, eta)
    loss, g = grad_fn(params)
    g_sam = sam_gradient(params, g, grad_fn, rho, eps)
    new = add_scaled(params, g_sam, -eta)
    return new, StepInfo(loss, g, global_norm(g), g_sam)


def usam_step(params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float, r: float) -> tuple[Params, StepInfo]:
    """One unnormalised-SAM step ``w - eta * grad(w + r * grad(w))`` (no normalisation of the ascent)."""
    loss, g = grad_fn(params)
    _, g_u = grad_fn(add_scaled(params, g, r))
    new = add_scaled(params, g_u, -eta)
    return new, StepInfo(loss, g, global_norm(g), g_u)


def momentum_step(
    params: Sequence[torch.Tensor],
    velocity: Sequence[torch.Tensor] | None,
    grad_fn: GradFn,
    eta: float,
    rho: float,
    beta: float,
    *,
    nesterov: bool = False,
    normalized: bool = True,
    eps: float = SAM_NORM_EPS,
) -> tuple[Params, Params, StepInfo]:
    """One step of SAM (or USAM, or GD) with heavy-ball or Nesterov momentum, in ``torch.optim.SGD``'s convention.

    ``s`` is the SAM gradient (:func:`sam_gradient`; ``grad(w + rho g)`` when ``normalized=False``, i.e. USAM;
    ``g`` when ``rho = 0``); then ``v <- beta v + s`` and ``w <- w - eta v`` (heavy ball) or
    ``w <- w - eta (s + beta v)`` (Nesterov), exactly as ``torch.optim.SGD(momentum=beta, nesterov=...)`` with
    ``dampening=0`` steps on ``s`` (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html).
    ``velocity=None`` starts from zero, which equals PyTorch's first step (its buffer starts as ``s``).

    Returns the new parameters, the new velocity and what the step computed at ``w_t``.
    """
    loss, g = grad_fn(params)
    if rho == 0:
        s = list(g)
    elif normalized:
        s = sam_gradient(params, g, grad_fn, rho, eps)
    else:
        _, s = grad_fn(add_scaled(params, g, rho))
    v = list(s) if velocity is None else add_scaled(s, velocity, beta)
    direction = add_scaled(s, v, beta) if nesterov else v
    return add_scaled(params, direction, -eta), v, StepInfo(loss, g, global_norm(g), s)
