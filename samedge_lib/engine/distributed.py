"""Data-parallel full-batch runs on ``torch.distributed``, launched by ``torchrun``.

A run started as ``torchrun --nproc-per-node N -m samedge_lib.run ...`` (or with ``torchrun``'s multi-node
rendezvous flags) finds its rank, world size and rendezvous address in the environment variables ``torchrun``
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
https://pytorch.org/docs/stable/elastic/run.html) and joins the process group with
``torch.distributed.init_process_group`` (https://pytorch.org/docs/stable/distributed.html): backend **NCCL**
when the run's device is a CUDA GPU, **gloo** on CPUs (:func:`choose_backend`).

What is split and what is summed:

* Every batch (the full training set of the image tasks, each minibatch of the minibatch tasks, the fixed
  evaluation batch, the test set) is cut into ``N`` contiguous shards of rows (:meth:`Communicator.rows`), one
  per rank; the data each step uses does not depend on ``N`` (it is a function of the seed and the step).
* Every loss of the library is a mean over the rows of a batch, so the batch loss is the sum over shards of
  ``(n_shard / n) * shard loss``. Gradients, Hessian-vector products and the SAM gradient are linear in the
  loss, so each is the sum of its shards' weighted values: one ``all_reduce(SUM)`` per gradient
  (:meth:`Communicator.sum_tensors`) and per product (:class:`AllReducedOperator`). Every rank then holds the
  same numbers and takes the same update; Lanczos runs on every rank on the all-reduced operator, with the
  same seeded random start, so ``||g||``, the SAM-edge and the eigenvalues are global.
* The numbers equal the one-process run's to float32 round-off, not bitwise: the all-reduce adds the shards'
  partial sums in another order than one process sums the rows (``tests/test_distributed.py`` measures the
  difference at every step and check). With one process under ``torchrun`` the all-reduce is the identity and
  the numbers are bitwise the plain run's.

Rank 0 alone touches the run folder (it holds the lock, writes every file, reads the checkpoint and sends it to
the others); the other ranks only compute. Decisions that depend on the folder or the clock are taken by rank 0
and broadcast (:meth:`Communicator.on_writer`), errors in the phases every rank goes through together are
exchanged so that every rank raises the first one (:meth:`Communicator.agree`), and a collective that fails
because another process ended raises :class:`PeerLostError`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: The environment variables ``torchrun`` sets for every worker; a process with all of them joins a group.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: How often rank 0 tells the others that it still waits for the run folder's lock (seconds). Waiting in many
#: short collectives instead of one long one keeps the others inside the process group's timeout.
LOCK_POLL_SECONDS = 1.0


class DistributedError(RuntimeError):
    """The process group cannot be joined or used (bad launch environment, backend, device)."""


class PeerLostError(DistributedError):
    """A collective operation failed: another process of the run ended or cannot be reached."""


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (all of :data:`TORCHRUN_ENV` are set)."""
    return all(os.environ.get(name) for name in TORCHRUN_ENV)


def env_rank() -> int:
    """The global rank of this process, from ``torchrun``'s ``RANK`` (0 when not launched by it)."""
    return _env_int("RANK", 0) if launched() else 0


def local_rank() -> int:
    """The rank of this process on its node, from ``torchrun``'s ``LOCAL_RANK`` (0 when not launched by it)."""
    return _env_int("LOCAL_RANK", 0) if launched() else 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise DistributedError(f"{name}={raw!r} is not an integer; start the run with torchrun") from None


def choose_backend(device_type: str, nccl_available: bool) -> str:
    """The ``torch.distributed`` backend for a run on ``device_type``: NCCL for CUDA GPUs, gloo otherwise.

    NCCL is the backend PyTorch recommends for GPUs and gloo the one for CPUs
    (https://pytorch.org/docs/stable/distributed.html#which-backend-to-use); a CUDA build without NCCL
    (Windows) falls back to gloo, which also reduces CUDA tensors.
    """
    if device_type == "cuda" and nccl_available:
        return "nccl"
    return "gloo"


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank``'s shard of ``n`` rows: contiguous, sizes differing by at most one.

    The first ``n % world_size`` ranks hold one row more (the split of ``torch.tensor_split``).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not a rank of a world of {world_size} processes")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _shareable(err: BaseException) -> BaseException:
    """``err`` itself when it survives pickling (to send it to the other ranks), else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        text = (str(err).strip().splitlines() or [""])[0]
        return RuntimeError(f"{type(err).__name__}: {text}" if text else type(err).__name__)


def _from_rank(err: BaseException, rank: int, world_size: int) -> BaseException:
    """A copy of ``err`` raised on another rank than the one it happened on, its message naming that rank.

    Marked ``shared`` so that the command line prints it on rank 0 only.
    """
    copy: BaseException
    try:
        copy = type(err)(f"rank {rank} of {world_size}: {err}") if rank != 0 else pickle.loads(pickle.dumps(err))
    except Exception:
        copy = pickle.loads(pickle.dumps(err))
    copy.shared = True  # type: ignore[attr-defined]
    return copy


@dataclass
class Communicator:
    """The place of this process in the run's process group, and the collectives the engine uses.

    Attributes:
        rank: global rank (0 writes the run folder).
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        backend: ``"nccl"`` or ``"gloo"``.
        device: the device the collectives' tensors live on.

    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    distributed = True

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """The shard of ``n`` rows that this rank holds (see :func:`shard_bounds`)."""
        start, stop = shard_bounds(n, self.rank, self.world_size)
        return slice(start, stop)

    def describe(self) -> dict[str, Any]:
        """The process group for the provenance: backend, world size and every rank's host."""
        hosts = self.gather_object(os.uname().nodename)
        return {"backend": self.backend, "world_size": self.world_size, "hosts": hosts}

    # -- collectives on tensors -------------------------------------------------------------------------
    def _collective(self, name: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except RuntimeError as err:  # DistBackendError and gloo's "Connection closed by peer" are RuntimeErrors
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PeerLostError(
                f"rank {self.rank} of {self.world_size}: {name} failed, so another process of the run ended or "
                f"cannot be reached ({first}); that process printed why. Everything up to the last saved step is "
                f"kept; run the same command again to continue"
            ) from None

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place; return it."""
        self._collective("all_reduce", lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
        return tensor

    def sum_tensors(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The sums over ranks of ``tensors`` (one dtype and device), with one all-reduce of their concatenation."""
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.all_reduce_(flat)
        parts = torch.split(flat, [t.numel() for t in tensors])
        return [p.view(t.shape) for p, t in zip(parts, tensors, strict=True)]

    def check_identical(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Raise :class:`DistributedError` unless every rank holds bitwise the same ``tensors`` (rank 0's).

        The ranks take the same update from the same all-reduced numbers, so they stay identical; this checks it
        at the measurement steps (one broadcast of the parameters, a few milliseconds next to a check's
        dozens of Hessian-vector products).
        """
        mine = torch.cat([t.detach().reshape(-1) for t in tensors])
        ref = mine.clone()
        self._collective("broadcast", lambda: dist.broadcast(ref, src=0))
        differ = torch.tensor([0.0 if torch.equal(mine, ref) else 1.0], device=self.device)
        self.all_reduce_(differ)
        if differ.item() > 0:
            raise DistributedError(
                f"{int(differ.item())} of {self.world_size} ranks hold other {what} than rank 0; the backend's "
                f"all-reduce did not give every rank the same sum"
            )

    # -- collectives on Python objects -------------------------------------------------------------------
    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; ``torch.distributed.broadcast_object_list``)."""
        box = [obj]
        self._collective("broadcast_object_list", lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``torch.distributed.all_gather_object``)."""
        out: list[Any] = [None] * self.world_size
        self._collective("all_gather_object", lambda: dist.all_gather_object(out, obj))
        return out

    def on_writer(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank; its exception is raised on every rank."""
        outcome: tuple[bool, Any] = (True, None)
        if self.is_writer:
            try:
                outcome = (True, fn())
            except (Exception, KeyboardInterrupt) as err:
                outcome = (False, _shareable(err))
                self.broadcast_object(outcome)
                raise
        ok, value = self.broadcast_object(outcome)
        if not ok:
            raise _from_rank(value, 0, self.world_size)
        return value

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it raised on any rank, raise the first (in rank order) on every rank."""
        try:
            value, mine = fn(), None
        except (Exception, KeyboardInterrupt) as err:
            value, mine = None, err
        errors = self.gather_object(None if mine is None else _shareable(mine))
        first = next((r for r, e in enumerate(errors) if e is not None), None)
        if first is None:
            return value
        if first == self.rank and mine is not None:
            mine.shared = True  # type: ignore[attr-defined]  # rank 0 prints it
            raise mine
        raise _from_rank(errors[first], first, self.world_size)

    def own_error(self, err: BaseException) -> BaseException:
        """Mark ``err``, raised while computing, as this rank's own, so that a rank > 0 prints it too.

        Other errors of a rank > 0 are the same as rank 0's (every rank meets them) and only rank 0 prints them; a
        collective that failed because another rank ended is that rank's to explain.
        """
        if not self.is_writer and not isinstance(err, PeerLostError):
            err.local = True  # type: ignore[attr-defined]
        return err

    def writer_waits(self, attempt: Callable[[], T | None]) -> T:
        """Rank 0 calls ``attempt`` every :data:`LOCK_POLL_SECONDS` until it returns a value (or raises).

        The other ranks wait in one short broadcast per attempt rather than in one collective that could outlast
        the process group's timeout (a run waiting for another process's lock can wait for hours).
        """
        while True:
            value = self.on_writer(attempt)
            if value is not None:
                return value
            if self.is_writer:
                time.sleep(LOCK_POLL_SECONDS)

    def in_stages(self, fn: Callable[[], T]) -> T:
        """``fn`` on the first process of each node, then on the others (errors exchanged after each stage).

        Loading the data this way lets one process per node download a missing dataset while its neighbours
        wait, instead of every process downloading the same files at once.
        """
        first = self.agree(lambda: fn() if self.local_rank == 0 else None)
        rest = self.agree(lambda: None if self.local_rank == 0 else fn())
        return first if self.local_rank == 0 else rest


class Solo:
    """A process that is not part of a process group: every collective is the plain call (the ``python -m`` run).

    It has the interface of :class:`Communicator` that the engine uses, so the engine has one code path.
    """

    rank = 0
    world_size = 1
    local_rank = 0
    backend = None
    distributed = False
    is_writer = True

    def on_writer(self, fn: Callable[[], T]) -> T:
        """``fn()``."""
        return fn()

    def agree(self, fn: Callable[[], T]) -> T:
        """``fn()``."""
        return fn()

    def in_stages(self, fn: Callable[[], T]) -> T:
        """``fn()``."""
        return fn()

    def broadcast_object(self, obj: Any) -> Any:
        """``obj``."""
        return obj

    def check_identical(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Nothing to compare with."""

    def own_error(self, err: BaseException) -> BaseException:
        """``err``: the one process prints every error."""
        return err

    def describe(self) -> None:
        """No process group."""
        return None


#: The one :class:`Solo` (stateless).
SOLO = Solo()


class AllReducedOperator:
    """The Hessian of a batch loss split over ranks: each product is the sum of the shards' products.

    ``local`` is this rank's :class:`~samedge_lib.core.hessian.HessianOperator` of its shard's loss, weighted by the
    shard's share of the batch; :meth:`matvec` and :meth:`gradient` all-reduce its results, so every rank sees
    the operator of the whole batch (and the solvers of :mod:`samedge_lib.core.eigen` run on it unchanged).
    """

    def __init__(self, local: Any, comm: Communicator) -> None:
        self.local = local
        self.comm = comm
        self._gradient: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        """Length of the flat vectors (the number of parameters)."""
        return self.local.dim

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the products."""
        return self.local.dtype

    @property
    def device(self) -> torch.device:
        """Device of the vectors."""
        return self.local.device

    @property
    def n_matvec(self) -> int:
        """Products computed (each one all-reduced)."""
        return self.local.n_matvec

    @property
    def n_grad_evals(self) -> int:
        """Nominal gradient evaluations of this rank (on its shard)."""
        return self.local.n_grad_evals

    @property
    def params(self) -> list[torch.Tensor]:
        """The point at which the Hessian is taken."""
        return self.local.params

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate a list shaped like the parameters into one flat vector."""
        return self.local.flatten(tensors)

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into views shaped like the parameters."""
        return self.local.unflatten(flat)

    def gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, flat gradient)`` of the whole batch (one all-reduce, cached)."""
        if self._gradient is None:
            loss, grad = self.local.gradient()
            total_loss, total_grad = self.comm.sum_tensors([loss.reshape(1), grad])
            self._gradient = (total_loss.reshape(()), total_grad)
        return self._gradient

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` of the whole batch: this shard's product summed over ranks."""
        return self.comm.all_reduce_(self.local.matvec(v))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` column by column (counts ``k`` matvecs)."""
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)


_communicator: Communicator | None = None


def setup(device: torch.device) -> Communicator | None:
    """Join ``torchrun``'s process group for a run on ``device`` (once per process); ``None`` when not launched.

    Raises :class:`DistributedError` when the group was started for another kind of device, or when the
    rendezvous fails.
    """
    global _communicator
    if not launched():
        return None
    backend = choose_backend(device.type, dist.is_nccl_available())
    if _communicator is not None:
        if _communicator.backend != backend or _communicator.device.type != device.type:
            raise DistributedError(
                f"this process group runs {_communicator.backend} on {_communicator.device}; a run on {device} "
                f"needs {backend}: start runs on another device in another torchrun"
            )
        return _communicator
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=30))
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DistributedError(f"rank {rank} of {world} cannot join the process group ({backend}): {first}") from None
    _communicator = Communicator(rank, world, local, backend, device)
    atexit.register(shutdown)  # leave the group when the process ends, however main() was entered
    return _communicator


def shutdown() -> None:
    """Leave the process group (at the end of a ``torchrun`` worker; a no-op when there is none)."""
    global _communicator
    _communicator = None
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
