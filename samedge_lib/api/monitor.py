"""Is my training run at its edge? An edge monitor for any PyTorch model and training loop.

Call an :class:`EdgeMonitor` every few steps of your own loop (or :meth:`EdgeMonitor.attach` it to the optimizer)::

    monitor = EdgeMonitor(optimizer, k=2, log_dir="runs/my-net")
    ...
    if step % 10 == 0:
        check = monitor(model, loss_fn, (x, y), step=step)   # or a DataLoader: the full batch
        print(check.ratio)                                   # lambda_1 / edge: 1 on the edge

Each check measures, at the current weights and on the data given:

* the top-``k`` Hessian eigenvalues of the loss, by the library's Lanczos (:func:`samedge_lib.core.eigen.lanczos`) on
  exact Hessian-vector products (:class:`samedge_lib.core.hessian.HessianOperator`), each with its true relative
  residual ``||H u - theta u|| / |theta|`` (the certificate);
* ``||g||``, the norm of the loss gradient on that data (the number the SAM-edge is evaluated at);
* the **edge** that applies to the optimizer, from :class:`samedge_lib.theory.rules.UpdateRule`: GD's ``2/eta``, the
  SAM-edge of Long & Bartlett (2024, Theorem 1, https://arxiv.org/abs/2309.12488), the edge of unnormalised SAM, each
  at the effective step size of heavy-ball or Nesterov momentum; for Adam no closed-form edge of ``lambda_1``
  applies, and the monitor reports instead the preconditioned sharpness ``lambda_max(P^-1 H)`` against
  ``(2 + 2 beta1)/((1 - beta1) eta)`` (Cohen et al., 2022, https://arxiv.org/abs/2207.14484;
  :func:`samedge_lib.theory.edges.adaptive_edge`);
* the ratio of the sharpness to the edge, the cost of the check in seconds and in optimizer steps, and its memory.

**Train or eval mode.** The Hessian is taken in the mode the model is in when the check is called (``mode="auto"``):
the mode the step's loss used. In train mode BatchNorm normalises with each batch's statistics (as the step does; its
running statistics are left untouched by the check); in eval mode it uses the running statistics. A loss that is not
a deterministic function of the weights (dropout active in train mode) has no Hessian to measure: the check refuses
it in one line and suggests ``mode="eval"``.

**Large models.** ``chunk_size`` splits each batch into chunks whose Hessian-vector products are computed one after
the other and summed (weighted by their share of the examples), so the memory is one chunk's double-backward graph.
(In train mode each chunk's BatchNorm then uses that chunk's statistics.) Each check reports its peak memory (GPU
memory on CUDA, the process's peak resident memory on a CPU) and its cost against one step of the optimizer.

**Logging.** With ``log_dir``, every check rewrites ``edge_monitor.csv`` (one row per check, written atomically by
:func:`samedge_lib.record.runfolder.atomic_write_text`, so a crash never leaves a torn table) and
``edge_monitor.json`` (what was measured and how), and writes TensorBoard scalars under ``edge/`` when
``torch.utils.tensorboard`` is importable. :func:`samedge_lib.reading.edge_log.plot_edge_log` draws ``lambda_1``
against the edge from the CSV.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samedge_lib.api.edge_rules import EdgeRule, edge_rule_of
from samedge_lib.api.operators import (
    _DROPOUT_TYPES,
    Batch,
    LossFn,
    _adam_preconditioner,
    _batches,
    _ChunkedHessian,
    _chunks,
    _Loss,
    _mode_words,
    _Preconditioned,
)
from samedge_lib.api.optim import _check_finite
from samedge_lib.core.eigen import EigResult, lanczos
from samedge_lib.core.hessian import HessianOperator
from samedge_lib.record.runfolder import atomic_write_json, atomic_write_text
from samedge_lib.theory.edges import gd_edge

__all__ = ["EdgeCheck", "EdgeMonitor", "EdgeRule", "check_edge", "edge_rule_of"]


CSV_NAME = "edge_monitor.csv"
JSON_NAME = "edge_monitor.json"


# ------------------------------------------------------------------------------------------------------
# One check
# ------------------------------------------------------------------------------------------------------
@dataclass
class EdgeCheck:
    """What one check measured (one row of ``edge_monitor.csv``).

    Attributes:
        step: the training step (the x axis).
        data: ``"batch"`` or ``"N batches"`` (a DataLoader: the full batch).
        n_examples: examples the loss averages over.
        mode: the mode the Hessian was taken in (``"train"`` or ``"eval"``, with what BatchNorm does).
        loss: the loss on the data.
        grad_norm: ``||g||`` on the data.
        eigenvalues: the top-``k`` Hessian eigenvalues, decreasing (``lambda_1`` first).
        residuals: their true relative residuals ``||H u - theta u|| / |theta|``.
        edge: the edge (``NaN`` where none applies; see ``note``).
        sharpness: the quantity compared with the edge: ``lambda_1``, or ``lambda_max(P^-1 H)`` for Adam.
        ratio: ``sharpness / edge``: 1 on the edge.
        gd_edge: ``2/eta`` for reference.
        preconditioned_lambda_1: ``lambda_max(P^-1 H)`` (Adam only; else NaN).
        preconditioned_residual: its relative residual estimate.
        matvecs: Hessian-vector products the check spent.
        converged: whether Lanczos met its tolerance for every pair.
        check_seconds: wall time of the check.
        step_seconds: wall time of one optimizer step (timed on the optimizer's hooks; before the first timed step,
            one gradient on this data times the gradients one step takes).
        cost_in_steps: ``check_seconds / step_seconds``.
        memory_mib: peak memory during the check (``memory_what`` says which).
        memory_what: ``"GPU peak allocated"`` or ``"process peak resident"``.
        edge_kind: what the edge is, in words.
        note: why no edge applies, when none does.

    """

    step: int
    data: str
    n_examples: int
    mode: str
    loss: float
    grad_norm: float
    eigenvalues: list[float]
    residuals: list[float]
    edge: float
    sharpness: float
    ratio: float
    gd_edge: float
    preconditioned_lambda_1: float
    preconditioned_residual: float
    matvecs: int
    converged: bool
    check_seconds: float
    step_seconds: float
    cost_in_steps: float
    memory_mib: float
    memory_what: str
    edge_kind: str
    note: str = ""

    @property
    def lambda_1(self) -> float:
        """The top Hessian eigenvalue."""
        return self.eigenvalues[0]

    def row(self) -> dict[str, Any]:
        """The check as one flat row (``lambda_i``, ``residual_i`` columns)."""
        d = asdict(self)
        eig, res = d.pop("eigenvalues"), d.pop("residuals")
        out = {k: d[k] for k in ("step", "data", "n_examples", "mode", "loss", "grad_norm")}
        for i, (e, r) in enumerate(zip(eig, res, strict=True)):
            out[f"lambda_{i + 1}"], out[f"residual_{i + 1}"] = e, r
        out.update((k, v) for k, v in d.items() if k not in out)
        return out

    def __str__(self) -> str:
        res = max(self.residuals)
        what = "lambda_max(P^-1 H)" if math.isfinite(self.preconditioned_lambda_1) else "lambda_1"
        edge = f"edge {self.edge:.4g}, ratio {self.ratio:.3f}" if math.isfinite(self.edge) else f"no edge ({self.note})"
        return (
            f"step {self.step}: lambda_1 {self.lambda_1:.4g} (max residual {res:.1e}), ||g|| {self.grad_norm:.3g}; "
            f"{what} {self.sharpness:.4g} vs {edge}; "
            f"check {self.check_seconds:.2f} s = {self.cost_in_steps:.1f} steps; "
            f"{self.memory_what} {self.memory_mib:.0f} MiB"
        )


@dataclass
class EdgeMonitor:
    """Checks a training run against its edge every time it is called (see the module docstring).

    Args:
        optimizer: the training loop's optimizer (:class:`~samedge_lib.api.optim.SAM`, ``torch.optim.SGD``,
            ``torch.optim.Adam``), from which the edge is read; ``None``: give the rule by keywords in ``rule``.
        k: eigenvalues per check.
        mode: ``"auto"`` (the model's mode at the call: the one the step's loss used), ``"train"`` or ``"eval"``.
        chunk_size: compute the Hessian-vector products in chunks of this many examples (``None``: each batch whole).
        tol: Lanczos' relative residual tolerance (the engine's tracker uses ``1e-3``).
        max_iter: cap on Lanczos steps per check.
        log_dir: folder for ``edge_monitor.csv`` / ``.json`` and TensorBoard scalars (``None``: no files).
        tensorboard: write TensorBoard scalars when ``torch.utils.tensorboard`` is importable.
        verbose: print one line per check.
        seed: seeds Lanczos' first start vector (later checks start from the previous eigenvectors).
        rule: the rule's keywords when there is no optimizer (``eta``, ``rho``, ``normalized``, ``momentum``,
            ``nesterov``).

    Attributes:
        history: every check so far.
        edge_rule: the edge that applies (:class:`EdgeRule`).

    """

    optimizer: torch.optim.Optimizer | None = None
    k: int = 1
    mode: str = "auto"
    chunk_size: int | None = None
    tol: float = 1e-3
    max_iter: int = 80
    log_dir: str | Path | None = None
    tensorboard: bool = True
    verbose: bool = True
    seed: int = 0
    rule: dict[str, Any] = field(default_factory=dict)
    history: list[EdgeCheck] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "train", "eval"):
            raise ValueError(f"mode must be 'auto', 'train' or 'eval', got {self.mode!r}")
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.chunk_size is not None and not (isinstance(self.chunk_size, int) and self.chunk_size >= 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {self.chunk_size!r}")
        _check_finite("tol", self.tol, positive=True)
        self.edge_rule = edge_rule_of(self.optimizer, **self.rule)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._v0: dict[str, torch.Tensor] = {}
        self._step_seconds: float | None = None
        self._t0: float | None = None
        self._steps_seen = 0
        self._writer: Any = None
        self._tb_tried = False
        if self.optimizer is not None:
            self.optimizer.register_step_pre_hook(self._before_step)
            self.optimizer.register_step_post_hook(self._after_step)

    # -- step timing -----------------------------------------------------------------------------------
    def _before_step(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _after_step(self, *_: Any) -> None:
        self._steps_seen += 1
        if self._t0 is not None:
            dt = time.perf_counter() - self._t0
            # the median of a short memory would be steadier; the smallest recent step is what a step costs
            self._step_seconds = dt if self._step_seconds is None else min(dt, 0.5 * (self._step_seconds + dt))

    # -- validation (before any compute) ---------------------------------------------------------------
    def _validate(self, model: nn.Module, loss_fn: LossFn, data: Any) -> tuple[list[Batch], str, bool]:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(model).__name__} has no trainable parameters: there is no Hessian to measure")
        if any(not p.is_floating_point() for p in params):
            raise ValueError("every trainable parameter must be floating point")
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError(f"the model's parameters lie on several devices ({sorted(map(str, devices))})")
        (device,) = devices
        batches, label = _batches(data)
        for x, y in batches:
            for name, t in (("inputs", x), ("targets", y)):
                if t.device != device:
                    raise ValueError(
                        f"the batch's {name} are on {t.device} but the model's parameters on {device}: "
                        f"move the batch with .to({str(device)!r})"
                    )
        train = model.training if self.mode == "auto" else self.mode == "train"
        if train:
            active = [type(m).__name__ for m in model.modules() if isinstance(m, _DROPOUT_TYPES) and m.p > 0]
            active += [
                type(m).__name__
                for m in model.modules()
                if isinstance(m, nn.MultiheadAttention) and float(getattr(m, "dropout", 0.0)) > 0
            ]
            if active:
                raise ValueError(
                    f"the model is in train mode with dropout ({active[0]}): its loss is random, so it has no Hessian; "
                    "check in eval mode (mode='eval', or call model.eval() first)"
                )
        return batches, label, train

    # -- the check -------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, loss_fn: LossFn, data: Any, *, step: int | None = None) -> EdgeCheck:
        """Check the run at the model's current weights on ``data`` (a batch ``(x, y)`` or a DataLoader).

        ``step`` labels the check (default: the optimizer steps seen so far, or the number of checks).
        """
        batches, label, train = self._validate(model, loss_fn, data)
        was_training = model.training
        model.train(train)
        try:
            return self._check(model, loss_fn, batches, label, train, step)
        finally:
            model.train(was_training)

    def _probe(self, loss: _Loss) -> None:
        """Refuse, in one line, a loss that is not a deterministic function of the weights (before Lanczos)."""
        with torch.no_grad():
            a, b = (loss.on(loss.params, loss.chunks[0]) for _ in range(2))
        if not torch.equal(a, b):
            raise ValueError(
                "the loss differs between two evaluations at the same weights (a random operation in the forward "
                "pass?): it has no Hessian to measure; check in eval mode (mode='eval')"
            )

    def _check(
        self, model: nn.Module, loss_fn: LossFn, batches: list[Batch], label: str, train: bool, step: int | None
    ) -> EdgeCheck:
        if step is None:
            step = self._steps_seen if self.optimizer is not None else len(self.history)
        chunks = _chunks(batches, self.chunk_size)
        loss = _Loss(model, loss_fn, chunks)
        self._probe(loss)
        cuda = loss.params[0].device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base_mem = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        if len(chunks) == 1:
            op: Any = HessianOperator(lambda ps: loss.on(ps, chunks[0]), loss.params, method="exact")
        else:
            op = _ChunkedHessian(loss, loss.params)
        try:
            loss_value, g_flat = op.gradient()
            g_norm = float(g_flat.double().norm())
            res = self._lanczos(op, "hessian")
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"the loss cannot be differentiated twice here: {first}") from None
        pre_lam, pre_res, note = math.nan, math.nan, self.edge_rule.why_none
        if self.edge_rule.kind == "adaptive":
            assert self.optimizer is not None
            p_diag = _adam_preconditioner(self.optimizer, loss.params)
            if isinstance(p_diag, str):
                note = p_diag
            else:
                pre = self._lanczos(_Preconditioned(op, p_diag.to(op.dtype)), "preconditioned", k=1)
                pre_lam, pre_res = float(pre.eigenvalues[0]), float(pre.residuals[0])
        check_seconds = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize()
            memory, memory_what = (torch.cuda.max_memory_allocated() - base_mem) / 2**20, "GPU peak allocated"
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
            memory_what = "process peak resident"
        step_seconds = self._step_seconds if self._step_seconds is not None else self._estimated_step(loss)
        lam = [float(x) for x in res.eigenvalues]
        edge = self.edge_rule.edge(g_norm) if self.edge_rule.kind != "adaptive" or math.isfinite(pre_lam) else math.nan
        sharp = pre_lam if self.edge_rule.kind == "adaptive" else lam[0]
        eta = self.edge_rule.eta
        check = EdgeCheck(
            step=int(step),
            data=label,
            n_examples=loss.n,
            mode=_mode_words(model, train),
            loss=float(loss_value),
            grad_norm=g_norm,
            eigenvalues=lam,
            residuals=[float(x) for x in res.residuals],
            edge=edge,
            sharpness=sharp,
            ratio=sharp / edge if math.isfinite(edge) and edge > 0 else math.nan,
            gd_edge=float(gd_edge(eta)) if math.isfinite(eta) else math.nan,
            preconditioned_lambda_1=pre_lam,
            preconditioned_residual=pre_res,
            matvecs=int(op.n_matvec),
            converged=bool(res.converged),
            check_seconds=check_seconds,
            step_seconds=step_seconds,
            cost_in_steps=check_seconds / step_seconds if step_seconds > 0 else math.nan,
            memory_mib=memory,
            memory_what=memory_what,
            edge_kind=self.edge_rule.description,
            note=note,
        )
        self.history.append(check)
        self._log(check)
        if self.verbose:
            print(check, flush=True)
        return check

    def _lanczos(self, op: Any, key: str, k: int | None = None) -> EigResult:
        k = self.k if k is None else k
        v0 = self._v0.get(key)
        if v0 is not None and (v0.shape[0] != op.dim or v0.device != op.device):
            v0 = None
        res = lanczos(
            op, k=k, v0=v0, tol=self.tol, max_iter=self.max_iter, generator=self._gen, true_residuals=key == "hessian"
        )
        self._v0[key] = res.eigenvectors.detach().clone()
        return res

    def _estimated_step(self, loss: _Loss) -> float:
        """One plain gradient on the data, times the gradients one step of the optimizer takes (2 for SAM)."""
        t0 = time.perf_counter()
        ps = [p.detach().requires_grad_(True) for p in loss.params]
        with torch.enable_grad():
            for c in loss.chunks:
                torch.autograd.grad(loss.on(ps, c), ps, allow_unused=True)
        per_grad = time.perf_counter() - t0
        rule = self.edge_rule.rule
        return per_grad * (2 if rule is not None and rule.rho > 0 else 1)

    # -- logging ---------------------------------------------------------------------------------------
    def table(self) -> Any:
        """The checks so far as a pandas DataFrame (the rows of ``edge_monitor.csv``)."""
        import pandas as pd

        return pd.DataFrame([c.row() for c in self.history])

    def _log(self, check: EdgeCheck) -> None:
        if self.log_dir is None:
            return
        folder = Path(self.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / CSV_NAME, self.table().to_csv(index=False))
        atomic_write_json(
            folder / JSON_NAME,
            {
                "edge": self.edge_rule.description,
                "mode": check.mode,
                "k": self.k,
                "lanczos_tol": self.tol,
                "lanczos_max_iter": self.max_iter,
                "chunk_size": self.chunk_size,
                "hessian": "exact Hessian-vector products (double backward), Lanczos with true residuals",
                "checks": len(self.history),
            },
        )
        writer = self._tensorboard(folder)
        if writer is not None:
            for name in ("lambda_1", "edge", "sharpness", "ratio", "grad_norm", "check_seconds", "cost_in_steps"):
                value = getattr(check, name)
                if math.isfinite(value):
                    writer.add_scalar(f"edge/{name}", value, check.step)
            writer.flush()

    def _tensorboard(self, folder: Path) -> Any:
        if not self.tensorboard:
            return None
        if not self._tb_tried:
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is not installed: the CSV is the log
                return None
            self._writer = SummaryWriter(str(folder))
        return self._writer

    # -- the hook form ---------------------------------------------------------------------------------
    def attach(self, model: nn.Module, loss_fn: LossFn, data: Any, *, every: int = 10) -> Any:
        """Check every ``every`` optimizer steps, before the step, on ``data`` (a fixed batch or a DataLoader, or a
        zero-argument callable returning the step's batch). Returns a handle; ``handle.remove()`` detaches it.
        """
        if self.optimizer is None:
            raise ValueError("attach needs the monitor's optimizer: EdgeMonitor(optimizer, ...)")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a positive integer, got {every!r}")

        def hook(*_: Any) -> None:
            if self._steps_seen % every == 0:
                self(model, loss_fn, data() if callable(data) else data, step=self._steps_seen)
                self._t0 = time.perf_counter()  # the step's timing starts after the check

        return self.optimizer.register_step_pre_hook(hook)


def check_edge(model: nn.Module, loss_fn: LossFn, data: Any, optimizer: torch.optim.Optimizer | None = None,
               **options: Any) -> EdgeCheck:  # fmt: skip
    """One check without keeping a monitor: ``EdgeMonitor(optimizer, verbose=False, **options)(model, loss_fn, data)``.

    ``options`` are :class:`EdgeMonitor`'s (``k``, ``mode``, ``chunk_size``, ``tol``, ``rule``, ...).
    """
    options.setdefault("verbose", False)
    return EdgeMonitor(optimizer, **options)(model, loss_fn, data)
