"""The losses of the paper's experiments (official ``image_classification.py`` and ``transformer.py``).

* :func:`squared_error_mean` -- the official image loss ``optax.squared_error(logits, onehot).mean()``: the
  mean over **examples and classes** of ``(f - y)^2``, with no 1/2. It fixes the Hessian scale the paper's
  sharpness numbers (and so the comparison with ``2/eta`` and the SAM-edge) refer to.
* :func:`squared_error_half_sum` -- Cohen et al.'s convention ``1/2 sum_k (f_k - y_k)^2``, averaged over
  examples. It equals ``num_classes / 2`` times the official loss -- a factor **5** for 10 classes -- so its
  gradient and *every Hessian eigenvalue* are 5x larger, and the same step size sits 5x closer to (or beyond)
  the edge of stability. Do not mix the two when comparing sharpness with ``2/eta``.
* :func:`token_cross_entropy` -- the Transformer's mean negative log-likelihood per unmasked token.

All losses take ``(outputs, targets)`` and return a scalar tensor; :data:`LOSSES` / :func:`get_loss` look them
up by name. Every operation used has double-backward and forward-mode derivatives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

#: ``loss(outputs, targets) -> scalar tensor``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_onehot(logits: torch.Tensor, targets: torch.Tensor, name: str) -> torch.Tensor:
    """``targets`` as float one-hot rows matching ``logits`` ``(N, C)``; integer labels ``(N,)`` encoded."""
    if logits.dim() != 2:
        raise ValueError(f"{name}: logits must have shape (N, num_classes), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name}: logits must be floating point, got {logits.dtype}")
    n, c = logits.shape
    if targets.dim() == 1 and not targets.is_floating_point() and targets.dtype != torch.bool:
        if targets.shape[0] != n:
            raise ValueError(f"{name}: {targets.shape[0]} integer labels for {n} rows of logits")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise ValueError(
                f"{name}: integer labels must lie in [0, {c}), got [{int(targets.min())}, {int(targets.max())}]"
            )
        return F.one_hot(targets.long(), c).to(logits.dtype)
    if targets.shape != logits.shape:
        raise ValueError(
            f"{name}: targets must be one-hot rows of the logits' shape {tuple(logits.shape)} "
            "or integer labels "
            f"of shape ({n},), got {tuple(targets.shape)} ({targets.dtype})"
        )
    return targets.to(logits.dtype)


def squared_error_mean(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The official image loss ``((logits - onehot)**2).mean()`` over N x classes (no 1/2).

    ``targets`` are one-hot rows ``(N, C)`` or integer labels ``(N,)``.
    """
    y = _as_onehot(logits, targets, "squared_error_mean")
    return ((logits - y) ** 2).mean()


def squared_error_half_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cohen et al.'s ``1/2 sum_k (f_k - y_k)^2``, mean over examples: ``C/2`` x :func:`squared_error_mean`.

    With 10 classes it is 5x the official loss, so its Hessian eigenvalues are 5x the official ones.
    ``targets`` are one-hot rows ``(N, C)`` or integer labels ``(N,)``.
    """
    y = _as_onehot(logits, targets, "squared_error_half_sum")
    return 0.5 * ((logits - y) ** 2).sum(dim=1).mean()


def token_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pad_token: int | None = 0,
    inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood per unmasked token (``log_softmax`` over the vocabulary).

    Args:
        logits: ``(B, T, V)`` floating point.
        targets: ``(B, T)`` integer token ids in ``[0, V)``.
        pad_token: tokens equal to it are masked out; ``None`` averages over every token.
        inputs: the model's input tokens ``(B, T)``. The official code (Haiku example) masks on the *inputs*,
            ``mask = inputs != pad``; pass them to reproduce that exactly. Without them the mask is
            ``targets != pad``, the natural choice (no loss on predicting padding). On tiny_shakespeare there
            is no NUL character, so both masks are all ones and every choice gives the plain mean over tokens.

    An all-masked batch has no loss to average and raises :class:`ValueError` (the official code returns NaN).

    """
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(
            f"token_cross_entropy: logits must be floating point (B, T, V), got {logits.dtype} {tuple(logits.shape)}"
        )
    if targets.shape != logits.shape[:2] or targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(
            f"token_cross_entropy: targets must be integer ids of shape {tuple(logits.shape[:2])}, "
            f"got {targets.dtype} {tuple(targets.shape)}"
        )
    vocab = logits.shape[-1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(
            f"token_cross_entropy: target ids must lie in [0, {vocab}), got [{int(targets.min())}, "
            f"{int(targets.max())}]"
        )
    nll = -torch.gather(torch.log_softmax(logits, dim=-1), -1, targets.long().unsqueeze(-1)).squeeze(-1)
    if pad_token is None:
        return nll.mean()
    if inputs is not None and inputs.shape != targets.shape:
        raise ValueError(
            f"token_cross_entropy: inputs must have the targets' shape {tuple(targets.shape)}, "
            f"got {tuple(inputs.shape)}"
        )
    mask = (inputs if inputs is not None else targets) != pad_token
    count = int(mask.sum())
    if count == 0:
        raise ValueError(f"token_cross_entropy: every token is the pad token {pad_token}; nothing to average")
    return (nll * mask.to(nll.dtype)).sum() / count


#: The losses by name (what configs and the command line use).
LOSSES: dict[str, LossFn] = {
    "mse_mean": squared_error_mean,
    "mse_half_sum": squared_error_half_sum,
    "cross_entropy": token_cross_entropy,
}


def get_loss(name: str) -> LossFn:
    """The loss called ``name`` in :data:`LOSSES`; an unknown name raises :class:`ValueError` listing them."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(repr(n) for n in LOSSES)}")
    return LOSSES[name]


__all__ = [
    "LOSSES",
    "LossFn",
    "get_loss",
    "squared_error_half_sum",
    "squared_error_mean",
    "token_cross_entropy",
]
