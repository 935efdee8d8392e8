"""The operators an edge check measures on a user's model: its loss on chunks of the data and the Hessian of it.

The batches (a tuple, a list of batches or a DataLoader for the full batch), the loss as a function of the weights
through :func:`torch.func.functional_call` in the model's mode, the Hessian summed over chunks of the batch
(:class:`samedge_lib.core.hessian.HessianOperator` per chunk, weighted by its share of the examples), and Adam's
diagonal preconditioner for the preconditioned sharpness ``lambda_max(P^-1 H)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from samedge_lib.api.optim import SAM
from samedge_lib.core.hessian import HessianOperator

#: ``loss_fn(outputs, targets) -> scalar``: a mean over the examples (``reduction="mean"``), as torch's losses.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: One batch: inputs and targets.
Batch = tuple[torch.Tensor, torch.Tensor]

_DROPOUT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)
_NORM_WITH_BATCH_STATS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


def _batches(data: Any) -> tuple[list[Batch], str]:
    """The batches of ``data``: one ``(inputs, targets)`` pair, or every pair a DataLoader (iterable) yields."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return [(data[0], data[1])], "batch"
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            f"data must be a batch (inputs, targets) or an iterable of them (a DataLoader), got {type(data).__name__}"
        )
    out = []
    for i, b in enumerate(data):
        if not (isinstance(b, (tuple, list)) and len(b) >= 2 and all(isinstance(t, torch.Tensor) for t in b[:2])):
            raise TypeError(f"item {i} of data is not an (inputs, targets) pair of tensors: {type(b).__name__}")
        out.append((b[0], b[1]))
    if not out:
        raise ValueError("data yielded no batches")
    return out, f"{len(out)} batches"


def _chunks(batches: list[Batch], chunk_size: int | None) -> list[Batch]:
    if chunk_size is None:
        return batches
    return [(x[i : i + chunk_size], y[i : i + chunk_size]) for x, y in batches for i in range(0, len(x), chunk_size)]


def _mode_words(model: nn.Module, train: bool) -> str:
    has_bn = any(isinstance(m, _NORM_WITH_BATCH_STATS) for m in model.modules())
    if train:
        return "train" + (" (BatchNorm: each batch's statistics; running statistics untouched)" if has_bn else "")
    return "eval" + (" (BatchNorm: running statistics)" if has_bn else "")


class _Loss:
    """The loss on a list of chunks as a pure function of the trainable parameters (buffers cloned per call)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, chunks: list[Batch]) -> None:
        self.model, self.loss_fn, self.chunks = model, loss_fn, chunks
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.n = sum(len(x) for x, _ in chunks)

    def on(self, params: Sequence[torch.Tensor], chunk: Batch) -> torch.Tensor:
        """The chunk's loss weighted by its share of the examples."""
        x, y = chunk
        state = {n: b.clone() for n, b in self.model.named_buffers()}  # BatchNorm's running stats stay untouched
        state.update(zip(self.names, params, strict=True))
        loss = self.loss_fn(functional_call(self.model, state, (x,)), y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar (a mean over the batch), got {shape}")
        return loss.reshape(()) * (len(x) / self.n) if len(self.chunks) > 1 else loss.reshape(())


class _ChunkedHessian:
    """The Hessian of a loss summed over chunks: each product is the sum of the chunks' exact products, taken one
    chunk at a time (:class:`~samedge_lib.core.hessian.HessianOperator`, ``exact_fresh``), so the memory is one chunk's.
    """

    def __init__(self, loss: _Loss, point: Sequence[torch.Tensor]) -> None:
        self._loss = loss
        self._point = [p.detach() for p in point]
        self._ops = [self._op(c) for c in loss.chunks[:1]]
        self.n_matvec = 0

    def _op(self, chunk: Batch) -> HessianOperator:
        return HessianOperator(lambda ps: self._loss.on(ps, chunk), self._point, method="exact_fresh")

    @property
    def dim(self) -> int:
        return self._ops[0].dim

    @property
    def dtype(self) -> torch.dtype:
        return self._ops[0].dtype

    @property
    def device(self) -> torch.device:
        return self._ops[0].device

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return self._ops[0].unflatten(flat)

    def gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        loss, grad = 0.0, None
        for c in self._loss.chunks:
            lc, gc = self._op(c).gradient()
            loss, grad = loss + lc, gc if grad is None else grad + gc
        return loss, grad

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvec += 1
        out = None
        for c in self._loss.chunks:
            hv = self._op(c).matvec(v)
            out = hv if out is None else out + hv
        return out


class _Preconditioned:
    """``P^{-1/2} H P^{-1/2}``: symmetric, with the eigenvalues of ``P^{-1} H`` (Cohen et al., 2022)."""

    def __init__(self, op: Any, p_diag: torch.Tensor) -> None:
        self.op, self.scale = op, p_diag.rsqrt()
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device
        self.n_matvec = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvec += 1
        return self.scale * self.op.matvec(self.scale * v)


def _adam_preconditioner(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> torch.Tensor | str:
    """Adam's ``P = (1 - beta1^t) (sqrt(v_t/(1 - beta2^t)) + eps)`` as a flat vector, or why it is not defined yet."""
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    group_of = {id(p): g for g in base.param_groups for p in g["params"]}
    parts = []
    for p in params:
        st, g = base.state.get(p, {}), group_of.get(id(p))
        if g is None:
            return "a parameter of the model is not in the optimizer"
        if "exp_avg_sq" not in st:
            return "Adam has taken no step yet, so its preconditioner is not defined"
        beta1, beta2 = g["betas"]
        t = float(st["step"])
        v = st["max_exp_avg_sq"] if g.get("amsgrad") else st["exp_avg_sq"]
        parts.append(((1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + g["eps"])).reshape(-1))
    return torch.cat(parts)
