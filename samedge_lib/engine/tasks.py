"""Tasks: the data, model and loss of a run, built from a :class:`~samedge_lib.record.config.RunConfig`.

A :class:`Task` hides the differences between the full-batch image tasks and the minibatch
Transformer behind one small interface that the run loop uses: the parameters as a list of
tensors, a functional loss ``loss(params, batch)``, the batch an update at step ``t`` uses, an
optional fixed evaluation batch, and test metrics. Every batch carries a label saying which data
it is (``"train[0:2000] full batch"``, ``"minibatch of step 120"``...), so every logged number
can say on which data it was measured.

In a run started by ``torchrun`` every batch is one rank's shard of rows (``Batch.total`` says how many rows
the whole batch has) and the task's gradients, Hessian operators and metrics are those of the whole batch,
summed over the ranks (:mod:`samedge_lib.engine.distributed`): the run loop does not see the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from samedge_lib.core.hessian import HessianOperator
from samedge_lib.engine import data as data_mod
from samedge_lib.engine.distributed import AllReducedOperator, Communicator
from samedge_lib.engine.losses import get_loss
from samedge_lib.engine.models import make_model
from samedge_lib.record.config import ConfigError, RunConfig

#: ``grad_fn(params) -> (loss, grads)``: what the update rules of :mod:`samedge_lib.theory.updates` take.
GradFn = Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]]


@dataclass
class Batch:
    """Inputs, targets and a description of which data they are."""

    x: torch.Tensor
    y: torch.Tensor
    label: str
    kind: str  # "full" | "minibatch" | "fixed"
    total: int | None = None  # rows of the whole batch when this is one rank's shard of it

    @property
    def size(self) -> int:
        """Number of examples held here (sequences for the Transformer): this rank's shard when sharded."""
        return int(self.x.shape[0])

    @property
    def global_size(self) -> int:
        """Number of examples of the whole batch (over all ranks)."""
        return self.size if self.total is None else self.total

    @property
    def share(self) -> float:
        """The weight of this shard in the batch's loss, ``size / global_size`` (every loss is a mean over rows)."""
        return 1.0 if self.total is None else self.size / self.total


@dataclass
class Task:
    """Model, parameters and data of one run (see the module docstring)."""

    model: nn.Module
    names: list[str]
    params: list[torch.Tensor]
    loss_name: str
    batch_at: Callable[[int], Batch]
    fixed_batch: Batch | None  # minibatch runs: the Transformer's fixed evaluation batch, an image task's full batch
    test_batch: Batch | None
    classification: bool
    info: dict
    comm: Communicator | None = None  # the process group when the batches are shards (torchrun)

    def loss(self, params: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        """The training loss at ``params`` on ``batch``, computed functionally (params are not mutated)."""
        out = functional_call(self.model, dict(zip(self.names, params, strict=True)), (batch.x,))
        return get_loss(self.loss_name)(out, batch.y)

    def data_loss(self, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss at ``params`` on the examples ``x, y``: the form ``torch.func.vmap`` over examples or micro-batches
        needs (:mod:`samedge_lib.core.stochastic`).
        """
        return self.loss(params, Batch(x, y, "", "minibatch"))

    def grad_fn(self, batch: Batch, chunk: int | None = None) -> GradFn:
        """``grad_fn(params) -> (loss, grads)`` on ``batch``: one forward and one backward pass, detached.

        With ``chunk`` smaller than the batch, the loss and gradient are accumulated over chunks of that
        many examples, each weighted by its share of the batch (the same numbers up to rounding, less
        memory). This is the one gradient every update and measurement of the library goes through.

        When ``batch`` is one rank's shard, each rank computes its shard's share of the loss and gradient and one
        all-reduce sums them (:meth:`samedge_lib.engine.distributed.Communicator.sum_tensors`): every rank returns the
        whole batch's numbers.
        """
        local = self._shard_grad_fn(batch, chunk)
        comm = self.comm
        if comm is None:
            return local

        def summed(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
            loss, grads = local(params)
            total, *sums = comm.sum_tensors([loss.reshape(1), *grads])
            return total.reshape(()), sums

        return summed

    def _shard_grad_fn(self, batch: Batch, chunk: int | None) -> GradFn:
        """The gradient of ``batch``'s rows held here, weighted by their share of the whole batch."""

        def grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
            ps = [p.detach().requires_grad_(True) for p in params]
            with torch.enable_grad():
                if chunk is None or chunk >= batch.size:
                    loss = self.loss(ps, batch)
                    if batch.total is not None:
                        loss = loss * batch.share
                    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, ps)]
                total = torch.zeros((), dtype=ps[0].dtype, device=ps[0].device)
                grads = [torch.zeros_like(p) for p in ps]
                for start in range(0, batch.size, chunk):
                    sub = Batch(batch.x[start : start + chunk], batch.y[start : start + chunk], batch.label, batch.kind)
                    loss = self.loss(ps, sub) * (sub.size / batch.global_size)
                    for acc, g in zip(grads, torch.autograd.grad(loss, ps), strict=True):
                        acc.add_(g)
                    total = total + loss.detach()
            return total, grads

        return grad_fn

    def operator(
        self, params: Sequence[torch.Tensor], batch: Batch, method: str = "exact"
    ) -> HessianOperator | AllReducedOperator:
        """The Hessian of the loss on ``batch`` at ``params`` (a fresh operator; ``method`` from ``HVP_METHODS``).

        On a shard: the operator of the shard's weighted loss whose products and gradient are summed over the
        ranks (:class:`~samedge_lib.engine.distributed.AllReducedOperator`), i.e. the whole batch's Hessian.
        """
        if self.comm is None:
            return HessianOperator(lambda ps: self.loss(ps, batch), params, method=method)
        share = batch.share
        local = HessianOperator(lambda ps: self.loss(ps, batch) * share, params, method=method)
        return AllReducedOperator(local, self.comm)

    @torch.no_grad()
    def metrics(self, params: Sequence[torch.Tensor], batch: Batch, chunk: int = 4096) -> dict[str, float]:
        """Loss (and accuracy for image tasks) on ``batch``, evaluated in chunks without a graph.

        Summed over the ranks when ``batch`` is a shard.
        """
        total_loss, total_correct, n = 0.0, 0, batch.size
        state = dict(zip(self.names, params, strict=True))
        for start in range(0, n, chunk):
            x, y = batch.x[start : start + chunk], batch.y[start : start + chunk]
            out = functional_call(self.model, state, (x,))
            total_loss += float(get_loss(self.loss_name)(out, y)) * x.shape[0]
            if self.classification:
                total_correct += int((out.argmax(-1) == y.argmax(-1)).sum())
        if self.comm is not None:
            sums = torch.tensor([total_loss, total_correct, n], dtype=torch.float64, device=self.comm.device)
            total_loss, total_correct, n = self.comm.all_reduce_(sums).tolist()
            total_correct, n = int(total_correct), int(n)
        result = {"loss": total_loss / n}
        if self.classification:
            result["accuracy"] = total_correct / n
        return result


def _part(
    x: torch.Tensor, y: torch.Tensor, label: str, kind: str, comm: Communicator | None, device: torch.device, **to: Any
) -> Batch:
    """A batch of the rows ``x``, ``y`` on ``device`` (cast with ``to``); this rank's shard of them under torchrun.

    Only the shard is copied to the device, so a GPU holds ``1/world_size`` of the training set.
    """
    n = int(x.shape[0])
    if comm is None:
        return Batch(x.to(device=device, **to), y.to(device=device, **to), label, kind)
    if n < comm.world_size:
        raise ConfigError(
            f"the {label} has {n} rows, fewer than the {comm.world_size} processes that would share it; start "
            f"fewer processes (torchrun --nproc-per-node) or use more data"
        )
    rows = comm.rows(n)
    return Batch(x[rows].to(device=device, **to).clone(), y[rows].to(device=device, **to).clone(), label, kind, n)


def build_task(
    cfg: RunConfig,
    device: torch.device,
    dtype: torch.dtype,
    data_dir: str | Path | None = None,
    comm: Communicator | None = None,
) -> Task:
    """Load the data and build the model of ``cfg`` on ``device`` in ``dtype`` (seeded by ``cfg.seed``).

    With ``comm`` (a run started by torchrun) every batch is this rank's shard of rows and the task's
    gradients, operators and metrics are summed over the ranks. The data a step uses is the same for every
    number of processes; only its split between them changes.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    model = make_model(cfg.task, generator=gen, **cfg.model).to(device=device, dtype=dtype)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for _, p in model.named_parameters()]
    if cfg.task in ("mnist", "cifar10"):
        loader = data_mod.load_mnist if cfg.task == "mnist" else data_mod.load_cifar10
        ds = loader(data_dir=data_dir, n_train=cfg.n_train, n_test=cfg.n_test)
        n = int(ds.x_train.shape[0])
        n_test = int(ds.x_test.shape[0])
        test = _part(ds.x_test, ds.t_test, f"{ds.name} test[0:{n_test}]", "fixed", comm, device, dtype=dtype)
        if cfg.batch_size is not None and cfg.batch_size < n:
            bs = cfg.batch_size
            x = ds.x_train.to(device=device, dtype=dtype)
            t = ds.t_train.to(device=device, dtype=dtype)

            def batch_at(step: int) -> Batch:
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step // (n // bs))
                idx = torch.randperm(n, generator=g)[(step % (n // bs)) * bs : (step % (n // bs) + 1) * bs]
                idx = idx.to(device)
                return _part(x[idx], t[idx], f"{ds.name} minibatch of step {step}", "minibatch", comm, device)

            # measure_data "fixed"/"both" on an image task: the full training batch, against which the stepped
            # minibatch's numbers are compared (the minibatch edge against the full-batch edge)
            fixed = _part(
                ds.x_train, ds.t_train, f"{ds.name} train[0:{n}] full batch", "full", comm, device, dtype=dtype
            )
        else:
            train = _part(
                ds.x_train, ds.t_train, f"{ds.name} train[0:{n}] full batch", "full", comm, device, dtype=dtype
            )

            def batch_at(step: int) -> Batch:
                return train

            fixed = None
        return Task(model, names, params, cfg.loss, batch_at, fixed, test, True, dict(ds.info), comm)
    # shakespeare
    text = data_mod.load_tiny_shakespeare(data_dir=data_dir)
    seq_len = int(cfg.model.get("seq_len", 64))
    batcher = data_mod.ChunkBatcher.from_tokens(
        text.train_tokens, batch_size=cfg.batch_size, seq_len=seq_len, seed=cfg.seed
    )
    test_rows = data_mod.chunk_rows(text.test_tokens, batch_size=cfg.batch_size, seq_len=seq_len)
    n_test = min(cfg.n_test or test_rows.shape[0], test_rows.shape[0])

    def batch_at(step: int) -> Batch:
        xb, yb = batcher.batch(step)
        return _part(xb, yb, f"tiny_shakespeare minibatch of step {step}", "minibatch", comm, device)

    xf, yf = batcher.fixed_batch(0)
    fixed = _part(xf, yf, "tiny_shakespeare fixed evaluation batch (train)", "fixed", comm, device)
    # Test metrics: the first n_test chunks of the held-out last 10,000 lines (all of them by default).
    xs, ys = test_rows[:n_test, :-1], test_rows[:n_test, 1:]
    test = _part(xs, ys, f"tiny_shakespeare test chunks [0:{n_test}]", "fixed", comm, device)
    return Task(model, names, params, cfg.loss, batch_at, fixed, test, False, dict(text.info), comm)
