"""The run loop: GD/SAM updates, step-indexed sharpness measurements, commits and exact resume.

One call of :func:`run` turns a :class:`~samedge_lib.record.config.RunConfig` into a run folder (layout and
commit protocol in :mod:`samedge_lib.record.runfolder`) holding

* ``measurements.csv`` -- one row per (measurement step, data): loss, accuracy, ``||g||``, the SAM-edge
  of the paper's formula at the run's ``eta``, ``rho`` and ``||g||`` (``sam_edge``), the run's own edge
  (``edge``: GD's, SAM's or USAM's, at the effective step size of its momentum, and GD's before
  ``sam_start``), ``2/eta``, alpha, the top-k eigenvalues with residuals and matvec counts, the collapse
  variable ``Lambda`` that equals 1 on the run's edge (``collapse``), alignments of ``g`` and of the SAM
  gradient with ``v1``, the official estimator when asked for, test metrics, and a ``data`` column saying
  which data each number was measured on;
* ``steps.csv`` -- every step's loss, ``||g||`` and edge (free: SAM computes ``g`` anyway);
* ``status.json`` -- ``running`` / ``finished`` / ``diverged`` / ``interrupted`` / ``failed`` (with the
  step and the reason), and how many steps and measurement rows are saved;
* ``checkpoint.pt`` -- parameters, the momentum buffer, RNG state, the last eigenvectors and every row so far;
* ``config.json`` and ``provenance.json`` (commit, versions, device, dtype/TF32, timings).

Measurements happen at steps ``0, m, 2m, ...`` and at the last step, at ``w_t`` on the batch the
update at step ``t`` uses, *before* that update (as the official code's ``hessian_norm.py`` checks).

**Commits and resume.** The state between two steps (a *boundary*) is committed to disk at a cadence
(:attr:`~samedge_lib.record.config.RunConfig.checkpoint_seconds`, adapted so that committing costs under 2 %
of the run), when the run ends, stops or fails. A run killed at any instant resumes from its last
commit and produces exactly the results of an uninterrupted run (bitwise on the CPU: every non-timing
column, the parameters, the momentum buffer, the RNG state and the eigenvectors). A Python error or Ctrl-C is met by
committing the last boundary first, so nothing measured before it is lost. A finished or diverged
configuration is loaded, not recomputed, unless ``force``. One process at a time computes in a folder
(:func:`samedge_lib.record.runfolder.locked`).

**Several processes.** Started by ``torchrun``, a run is data-parallel (:mod:`samedge_lib.engine.distributed`): each
rank holds a shard of every batch, every gradient and Hessian-vector product is summed over the ranks, and
every rank takes the same steps. Rank 0 alone touches the run folder; decisions that depend on the folder or
the clock are its own and are broadcast, so every rank leaves the loop at the same step. The checkpoint does
not depend on the number of processes: a run resumes with any number of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from samedge_lib.core import stochastic as st
from samedge_lib.core.eigen import lanczos, official_power_iteration
from samedge_lib.engine import distributed
from samedge_lib.engine.tasks import Batch, Task, build_task
from samedge_lib.record import provenance
from samedge_lib.record import runfolder as rf
from samedge_lib.record.config import ConfigError, RunConfig
from samedge_lib.record.runfolder import RunResult, load_run, runs_root
from samedge_lib.theory.edges import (
    alpha,
    collapse_variable,
    effective_eta,
    gd_edge,
    momentum_sam_edge,
    momentum_usam_edge,
    sam_edge,
)
from samedge_lib.theory.updates import (
    StepInfo,
    add_scaled,
    gd_step,
    global_norm,
    momentum_step,
    sam_gradient,
    sam_step,
    usam_step,
)

__all__ = [
    "DeviceError",
    "RunDivergedError",
    "RunDivergedWarning",
    "RunInterruptedError",
    "RunResult",
    "load_run",
    "resolve_device",
    "run",
    "runs_root",
]

#: Version tag of the checkpoint record; a checkpoint with another tag is refused.
CHECKPOINT_FORMAT = "samedge-run-checkpoint/2"

#: Commits are at least this many times their own duration apart, so they cost under 1/COST_FACTOR of the run.
COST_FACTOR = 50.0

#: The gradient-noise columns (``noise_every``): set in the full-batch row of a check, NaN elsewhere.
_NOISE_COLUMNS = (
    "trace_sigma",
    "noise_sq",
    "expected_sq_grad_norm",
    "mc_sq_grad_norm",
    "mc_sq_grad_norm_se",
    "trace_h",
    "trace_h_se",
)


class RunDivergedError(RuntimeError):
    """Raised by :func:`run` with ``raise_on_divergence=True`` when the loss becomes NaN/inf or too large."""


class RunDivergedWarning(rf.RunWarning):
    """:func:`run` returned a diverged run (``raise_on_divergence=False``); the message is the command line's line."""


class RunInterruptedError(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM in the command line) stopped a run; the last boundary was committed first."""


class DeviceError(RuntimeError):
    """The device asked for is not available, or the run did not fit into its memory."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a :class:`DeviceError`.

    Under ``torchrun`` a CUDA run takes the GPU of its local rank (``cuda:LOCAL_RANK``).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device='cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "cuda" and distributed.launched():
        index = distributed.local_rank()
        if index >= torch.cuda.device_count():
            err = DeviceError(
                f"local rank {index} needs GPU {index}, but torch sees {torch.cuda.device_count()}; start at most "
                f"that many processes per node (torchrun --nproc-per-node)"
            )
            err.local = True  # type: ignore[attr-defined]  # this node's alone: its rank prints it (samedge_lib.engine.cli)
            raise err
        return torch.device("cuda", index)
    return torch.device(name)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _abs_cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u64, v64 = u.double(), v.double()
    den = float(u64.norm() * v64.norm())
    return float(abs(u64 @ v64)) / den if den > 0 else math.nan


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


@dataclass(frozen=True)
class _Boundary:
    """The run's state between two steps: what a commit writes and what an error rolls back to."""

    next_step: int
    measured: bool  # the measurement at next_step (if one is due) is already in the rows
    params: list[torch.Tensor]
    velocity: list[torch.Tensor] | None  # the momentum buffer (None: no momentum, or before the first step)
    gen_state: torch.Tensor
    prev_vecs: dict[str, torch.Tensor]
    n_measurements: int
    n_steps: int
    elapsed: float
    measure_seconds: float


class _Runner:
    """State of one run in progress; everything needed to continue is in its boundary and the rows."""

    def __init__(
        self,
        cfg: RunConfig,
        path: Path,
        data_dir: str | Path | None,
        progress: bool,
        comm: distributed.Communicator | distributed.Solo = distributed.SOLO,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.comm = comm
        self.progress = progress and comm.is_writer
        self.device = resolve_device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32

        def load() -> Task:
            try:
                return build_task(cfg, self.device, self.dtype, data_dir, comm if comm.distributed else None)
            except ConfigError:
                raise
            except ValueError as err:  # the data's range checks (n_train larger than the dataset, ...)
                raise ConfigError(str(err)) from err

        self.task: Task = comm.in_stages(load)  # one process per node first: it downloads missing data
        self._check_batches()
        self._check_dimension()
        self.gen = torch.Generator().manual_seed(cfg.seed + 12345)
        self.params = self.task.params
        self.velocity: list[torch.Tensor] | None = None
        self.prev_vecs: dict[str, torch.Tensor] = {}
        self.measurements: list[dict] = []
        self.steps_log: list[dict] = []
        self.step_lines: list[str] = []  # steps_log rows formatted for steps.csv, filled at commits
        self.next_step = 0
        self.measured = False
        self.elapsed = 0.0
        self.measure_seconds = 0.0
        self.outcome: dict[str, Any] | None = None  # set when the run finished or diverged
        self.resumed_from: int | None = None
        self.sessions: list[dict[str, Any]] = []  # which process computed which steps (provenance)
        self.in_session = False
        self.commit_seconds = 0.0  # total time spent committing
        self.last_commit_cost = 0.0
        self.last_commit_end = time.perf_counter()
        self.last_commit_at: tuple[int, bool] | None = None
        self.base_provenance = provenance.collect(self.device, self.dtype)
        if comm.distributed:
            self.base_provenance["distributed"] = comm.describe()
        self.mark_boundary()

    # -- boundaries ---------------------------------------------------------------------------
    def mark_boundary(self) -> None:
        """Record the current state as the last consistent one (one assignment: safe against Ctrl-C)."""
        rf.fault_point("boundary")
        self.boundary = _Boundary(
            self.next_step,
            self.measured,
            list(self.params),
            None if self.velocity is None else list(self.velocity),
            self.gen.get_state(),
            dict(self.prev_vecs),
            len(self.measurements),
            len(self.steps_log),
            self.elapsed,
            self.measure_seconds,
        )

    def rollback(self) -> None:
        """Return to the last boundary (after an error or an interrupt in the middle of a step)."""
        b = self.boundary
        self.next_step, self.measured = b.next_step, b.measured
        self.params = list(b.params)
        self.velocity = None if b.velocity is None else list(b.velocity)
        self.gen.set_state(b.gen_state)
        self.prev_vecs = dict(b.prev_vecs)
        del self.measurements[b.n_measurements :]
        del self.steps_log[b.n_steps :]
        self.elapsed, self.measure_seconds = b.elapsed, b.measure_seconds

    def _check_batches(self) -> None:
        """What the configuration asks of the data that only the loaded data can tell (sizes, a fixed batch)."""
        cfg, task = self.cfg, self.task
        if cfg.measure_data == "fixed" and task.fixed_batch is None:
            raise ConfigError(
                f"measure_data='fixed' needs minibatches, but batch_size={cfg.batch_size} covers the whole training "
                f"set of {task.batch_at(0).size}; use measure_data='batch'"
            )
        stochastic = ("micro_batch", "noise_every", "drift_every", "batch_sharpness")
        used = [name for name in stochastic if getattr(cfg, name) not in (None, 0, False)]
        if self.comm.distributed and used:
            raise ConfigError(
                f"{', '.join(used)} run on one process only (their per-example and micro-batch work is not split "
                "between ranks); start the run without torchrun, or leave them at their defaults"
            )
        if cfg.micro_batch is not None:
            for batch in (task.batch_at(0), *([task.fixed_batch] if cfg.measure_data != "batch" else [])):
                if batch is not None and batch.size % cfg.micro_batch:
                    raise ConfigError(
                        f"micro_batch={cfg.micro_batch} must divide the {batch.size} examples of the {batch.label}"
                    )

    def _check_dimension(self) -> None:
        """What the configuration asks of the model that only the built model can tell: ``k`` Hessian eigenvalues.

        Checked before the run folder exists and before any step, so a ``k`` beyond the number of parameters is one
        line (``ConfigError``), not a traceback at the first check.
        """
        cfg = self.cfg
        dim = sum(p.numel() for p in self.task.params)
        if cfg.k > dim:
            raise ConfigError(
                f"k={cfg.k} exceeds the {dim} parameters of this {cfg.task} model: its Hessian has only {dim} "
                f"eigenvalues; choose k <= {dim} (the presets track 1 to 3)"
            )

    def _due(self, every: int, step: int) -> bool:
        """Whether a diagnostic asked for every ``every`` checks runs at the check of ``step`` (0: never)."""
        return bool(every) and (step // self.cfg.measure_every) % every == 0

    # -- gradients --------------------------------------------------------------------------
    def grad_fn_for(self, batch: Batch):
        """``grad_fn(params) -> (loss, grads)`` on ``batch``, chunked over examples if the config asks (one home:
        :meth:`samedge_lib.engine.tasks.Task.grad_fn`).
        """
        return self.task.grad_fn(batch, self.cfg.grad_chunk)

    def rho_at(self, step: int) -> float:
        """The radius the update of ``step`` uses: 0 for GD and for the GD steps before ``sam_start``."""
        cfg = self.cfg
        return 0.0 if cfg.optimizer == "gd" or step < cfg.sam_start else cfg.rho

    def update(self, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, StepInfo]:
        """One update on the batch of ``step``: the new parameters and velocity (``self`` is not changed).

        Without momentum: GD, SAM, USAM or m-SAM (:meth:`step_from`); with momentum, the same gradient stepped
        through a heavy-ball or Nesterov buffer (:func:`samedge_lib.theory.updates.momentum_step`). Before ``sam_start``
        the step is GD's.
        """
        cfg = self.cfg
        if cfg.momentum > 0:
            new, velocity, info = momentum_step(
                self.params,
                self.velocity,
                self.grad_fn_for(self.task.batch_at(step)),
                cfg.eta,
                self.rho_at(step),
                cfg.momentum,
                nesterov=cfg.nesterov,
                normalized=cfg.optimizer != "usam",
            )
            return [p.detach() for p in new], [v.detach() for v in velocity], info
        new, info = self.step_from(self.params, step)
        return new, None, info

    def step_from(self, params: list[torch.Tensor], step: int) -> tuple[list[torch.Tensor], StepInfo]:
        """The momentum-free update of ``step`` taken from ``params``: a pure function of both (no state read or
        changed; :meth:`lookahead` takes two of them).
        """
        batch = self.task.batch_at(step)
        grad_fn = self.grad_fn_for(batch)
        cfg = self.cfg
        rho = self.rho_at(step)
        if cfg.micro_batch is not None:
            new, info = st.msam_step(params, self.task.data_loss, *self.micro(batch, step), cfg.eta, cfg.rho)
        elif rho == 0:
            new, info = gd_step(params, grad_fn, cfg.eta)
        elif cfg.optimizer == "sam":
            new, info = sam_step(params, grad_fn, cfg.eta, rho)
        else:
            new, info = usam_step(params, grad_fn, cfg.eta, rho)
        return [p.detach() for p in new], info

    def micro(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """m-SAM's micro-batches of ``batch`` at ``step`` (a fresh partition every step, seeded by seed and step)."""
        order = st.msam_permutation(batch.size, self.cfg.seed, step)
        return st.micro_batches(batch.x, batch.y, self.cfg.micro_batch, order)

    def lookahead(self, step: int) -> dict[str, Any]:
        """The next two updates from the current parameters (the run takes exactly these unless they lie past its last
        step): the oscillation cosine ``cos(w_{t+1} - w_t, w_{t+2} - w_{t+1})`` and the two-step drift residual of
        :func:`samedge_lib.core.stochastic.drift_residual`.
        """
        w1, info1 = self.step_from(self.params, step)
        w2, info2 = self.step_from(w1, step + 1)
        d1 = _flat([b - a for a, b in zip(self.params, w1, strict=True)])
        d2 = _flat([b - a for a, b in zip(w1, w2, strict=True)])
        residual = st.drift_residual(self.params, w2, info1.grad, info2.grad, self.cfg.eta)
        return {"osc_cos": st.cosine(d1, d2), "residual": residual}

    def noise(self, step: int) -> dict[str, float]:
        """Gradient noise on the whole training set at the current parameters (the ``noise_every`` columns)."""
        cfg, task = self.cfg, self.task
        full = task.fixed_batch if task.fixed_batch is not None else task.batch_at(step)
        n = full.size
        b = min(cfg.batch_size or n, n)
        gen = torch.Generator().manual_seed((2 << 40) + cfg.seed * 1_000_003 + step)  # not the solvers' generator
        op = task.operator(self.params, full, cfg.hvp)
        _, g = op.gradient()
        g_norm = float(g.double().norm())
        tr_sigma = st.gradient_noise_trace(task.data_loss, self.params, full.x, full.y, mean_grad=g)
        out = {
            "trace_sigma": tr_sigma,
            "noise_sq": st.sampling_factor(n, b) * tr_sigma,
            "expected_sq_grad_norm": st.expected_sq_grad_norm(g_norm, tr_sigma, n, b),
            "mc_sq_grad_norm": math.nan,
            "mc_sq_grad_norm_se": math.nan,
        }
        if b < n:
            grad_fn = self.grad_fn_for

            def sq_norm(idx: torch.Tensor) -> float:
                idx = idx.to(full.x.device)
                _, gb = grad_fn(Batch(full.x[idx], full.y[idx], full.label, "minibatch"))(self.params)
                return float(global_norm(gb).double()) ** 2

            sq = st.random_batch_sq_grad_norms(sq_norm, n, b, cfg.noise_batches, gen)
            se = float(sq.std(unbiased=True)) / math.sqrt(len(sq)) if len(sq) > 1 else math.nan
            out.update(mc_sq_grad_norm=float(sq.mean()), mc_sq_grad_norm_se=se)
        out["trace_h"], out["trace_h_se"] = st.hutchinson_trace(op, cfg.hutchinson_probes, gen)
        return out

    @property
    def eta_eff(self) -> float:
        """The step size of the momentum-free rule with the same edge (``eta`` itself without momentum)."""
        cfg = self.cfg
        return (
            float(effective_eta(eta=cfg.eta, beta=cfg.momentum, nesterov=cfg.nesterov)) if cfg.momentum > 0 else cfg.eta
        )

    def edge_of(self, grad_norm: float, step: int) -> float:
        """The edge of the update of ``step``; NaN for a non-finite ``||g||``.

        ``2/eta`` (GD), the SAM-edge (SAM) or the USAM edge, each at the momentum's effective step size
        (:func:`samedge_lib.theory.edges.effective_eta`): ``2 (1 + beta)/eta`` for GD with heavy-ball momentum, ...
        """
        cfg = self.cfg
        rho = self.rho_at(step)
        if cfg.optimizer == "usam" and rho > 0:
            return float(momentum_usam_edge(eta=cfg.eta, r=rho, beta=cfg.momentum, nesterov=cfg.nesterov))
        if math.isnan(grad_norm):
            return math.nan
        return float(
            momentum_sam_edge(eta=cfg.eta, rho=rho, beta=cfg.momentum, nesterov=cfg.nesterov, grad_norm=grad_norm)
        )

    def collapse_of(self, lam1: float, grad_norm: float, step: int) -> float:
        """``Lambda = (eta_eff/2) lam1 (1 + rho lam1/||g||)``, exactly 1 on the edge of the update of ``step``.

        USAM puts its ``r`` in place of ``rho/||g||``; GD (``rho = 0``) gives ``eta_eff lam1 / 2``.
        """
        rho = self.rho_at(step)
        if not (math.isfinite(lam1) and math.isfinite(grad_norm)) or lam1 < 0:
            return math.nan
        if self.cfg.optimizer == "usam" and rho > 0:
            return float(collapse_variable(eta=self.eta_eff, rho=rho, grad_norm=1.0, lam1=lam1))
        if rho > 0 and grad_norm == 0:
            return math.nan
        return float(collapse_variable(eta=self.eta_eff, rho=rho, grad_norm=grad_norm if rho > 0 else 1.0, lam1=lam1))

    # -- measurement ------------------------------------------------------------------------
    def measure(self, step: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """Measure at the current parameters on the data the config asks for (before the update).

        Returns the rows and the new warm-start eigenvectors; the caller applies both.
        """
        cfg = self.cfg
        batches: list[Batch] = []
        if cfg.measure_data in ("batch", "both"):
            batches.append(self.task.batch_at(step))
        if cfg.measure_data in ("fixed", "both") and self.task.fixed_batch is not None:
            batches.append(self.task.fixed_batch)
        rows = []
        vecs = dict(self.prev_vecs)
        test = self.task.metrics(self.params, self.task.test_batch) if self.task.test_batch is not None else {}
        t0 = time.perf_counter()
        drift = self._due(cfg.drift_every, step)
        look = self.lookahead(step) if cfg.batch_sharpness or drift else None
        noise = self.noise(step) if self._due(cfg.noise_every, step) else None
        shared_seconds = time.perf_counter() - t0
        for batch in batches:
            t0 = time.perf_counter()
            rows.append(self._measure_on(step, batch, test, vecs, look if drift else None))
            if cfg.batch_sharpness:
                rows[-1]["osc_cos"] = look["osc_cos"]
            rows[-1]["measure_seconds"] = time.perf_counter() - t0
        if cfg.noise_every:  # the training set's noise: in the full-batch row (the first row of a full-batch run)
            for r in rows:
                r.update(dict.fromkeys(_NOISE_COLUMNS, math.nan))
            target = next((r for r in rows if r["data"] == "full"), rows[0])
            target.update(noise or {})
        rows[0]["measure_seconds"] += shared_seconds
        return rows, vecs

    def _measure_on(
        self,
        step: int,
        batch: Batch,
        test: dict[str, float],
        vecs: dict[str, torch.Tensor],
        look: dict[str, Any] | None = None,
    ) -> dict:
        cfg = self.cfg

        op = self.task.operator(self.params, batch, cfg.hvp)
        loss, g_flat = op.gradient()
        g_norm = float(g_flat.double().norm())
        res = lanczos(
            op,
            k=cfg.k,
            v0=vecs.get(batch.kind),
            tol=cfg.lanczos_tol,
            max_iter=cfg.lanczos_max_iter,
            generator=self.gen,
        )
        vecs[batch.kind] = res.eigenvectors.detach().clone()
        v1 = res.eigenvectors[:, 0]
        grad_fn = self.grad_fn_for(batch)
        g_list = op.unflatten(g_flat)
        rho = self.rho_at(step)
        extra: dict[str, Any] = {}
        if cfg.micro_batch is not None:  # m-SAM's direction on this data, and its stability operator A_m
            xs, ys = self.micro(batch, step)
            mg = st.msam_gradient(self.task.data_loss, self.params, xs, ys, cfg.rho)
            g_upd = mg.direction
            a_op = st.MSamOperator(self.task.data_loss, self.params, xs, ys, mg.micro_grad_norms, cfg.rho)
            key = f"msam_{batch.kind}"
            a_res = lanczos(
                a_op, k=1, v0=vecs.get(key), tol=cfg.lanczos_tol, max_iter=cfg.lanczos_max_iter, generator=self.gen
            )
            vecs[key] = a_res.eigenvectors.detach().clone()
            extra.update(
                msam_lambda=float(a_res.eigenvalues[0]),
                msam_residual=float(a_res.residuals[0]),
                msam_matvecs=int(a_res.n_matvec),
                msam_converged=bool(a_res.converged),
                msam_micro_batches=int(xs.shape[0]),
            )
        elif cfg.optimizer == "usam" and rho > 0:
            _, g_upd = grad_fn(add_scaled(self.params, g_list, rho))
        else:
            g_upd = sam_gradient(self.params, g_list, grad_fn, rho)
        row: dict[str, Any] = {
            "step": step,
            "data": batch.kind,
            "data_label": batch.label,
            "n_examples": batch.global_size,
            "loss": float(loss),
        }
        if self.task.classification:
            row["accuracy"] = self.task.metrics(self.params, batch)["accuracy"]
        finite_g = math.isfinite(g_norm)
        row.update(
            grad_norm=g_norm,
            sam_grad_norm=float(global_norm(g_upd)),
            sam_edge=float(sam_edge(eta=cfg.eta, rho=cfg.rho, grad_norm=g_norm))
            if cfg.optimizer != "usam" and finite_g
            else math.nan,
            edge=self.edge_of(g_norm, step),
            gd_edge=float(gd_edge(cfg.eta)),
            alpha=math.inf
            if cfg.rho == 0
            else float(alpha(eta=cfg.eta, rho=cfg.rho, grad_norm=g_norm))
            if finite_g
            else math.nan,
        )
        for i in range(cfg.k):
            row[f"lambda_{i + 1}"] = float(res.eigenvalues[i])
            row[f"residual_{i + 1}"] = float(res.residuals[i])
        row.update(
            collapse=self.collapse_of(row["lambda_1"], g_norm, step),
            lanczos_matvecs=int(res.n_matvec),
            lanczos_converged=bool(res.converged),
            align_g=_abs_cos(g_flat, v1),
            align_sam_g=_abs_cos(_flat(g_upd), v1),
        )
        if cfg.batch_sharpness:
            row["q_sam"] = st.sam_batch_sharpness(op, g_flat, _flat(g_upd), cfg.eta)
        row.update(extra)
        if cfg.drift_every:
            row.update(drift_cos=math.nan, drift_norm=math.nan, sharpness_grad_norm=math.nan)
        if look is not None:
            grad_l1 = st.sharpness_gradient(lambda ps: self.task.loss(ps, batch), self.params, v1)
            row.update(
                drift_cos=st.drift_alignment(look["residual"], grad_l1),
                drift_norm=float(look["residual"].double().norm()),
                sharpness_grad_norm=float(grad_l1.double().norm()),
            )
        if cfg.official_every and (step // cfg.measure_every) % cfg.official_every == 0:
            fd = self.task.operator(self.params, batch, "finite_difference")
            off = official_power_iteration(fd, k=1, generator=self.gen)
            row.update(official_lambda=float(off.eigenvalues[0]), official_matvecs=int(off.n_matvec))
        else:
            row.update(official_lambda=math.nan, official_matvecs=0)
        row.update({f"test_{k}": v for k, v in test.items()})
        return row

    # -- commits --------------------------------------------------------------------------------
    def _record(self, status: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint record of the current state (which must be a boundary)."""
        steps = {
            "step": torch.tensor([r["step"] for r in self.steps_log], dtype=torch.int64),
            **{
                c: torch.tensor([r[c] for r in self.steps_log], dtype=torch.float64)
                for c in rf.STEP_COLUMNS
                if c != "step"
            },
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "identity": self.cfg.identity(),
            "next_step": self.next_step,
            "measured": self.measured,
            "status": status,
            "params": [p.detach().cpu() for p in self.params],
            "velocity": None if self.velocity is None else [v.detach().cpu() for v in self.velocity],
            "gen_state": self.gen.get_state(),
            "prev_vecs": {k: v.detach().cpu() for k, v in self.prev_vecs.items()},
            "measurements": list(self.measurements),
            "steps": steps,
            "elapsed": self.elapsed,
            "measure_seconds": self.measure_seconds,
            "commit_seconds": self.commit_seconds,
            "sessions": [dict(x) for x in self.sessions],
        }

    def commit(self, state: str, **extra: Any) -> None:
        """Commit the current boundary: the checkpoint first, then provenance, tables and status."""
        t0 = time.perf_counter()
        if self.in_session:
            self.sessions[-1]["to_step"] = self.next_step
        status = {"state": state, **{k: v for k, v in extra.items() if v is not None}}
        if self.comm.is_writer:  # the other ranks of a torchrun run never touch the folder
            with rf.signals_deferred():  # an interrupt lands between commits, never inside torch.save
                rf.save_checkpoint(self.path, self._record(status))
                rf.fault_point("checkpoint:done")
                self.write_derived(status)
        self.last_commit_cost = time.perf_counter() - t0
        self.commit_seconds += self.last_commit_cost
        self.last_commit_end = time.perf_counter()
        self.last_commit_at = (self.next_step, self.measured)

    def write_derived(self, status: dict[str, Any]) -> None:
        """Rewrite provenance, tables and status from the current (committed) state; status last (rank 0 only)."""
        if not self.comm.is_writer:
            return
        prov = dict(self.base_provenance)
        prov["timings"] = rf.timings(self.elapsed, self.measure_seconds, len(self.steps_log), self.commit_seconds)
        prov["sessions"] = [dict(x) for x in self.sessions]
        rf.atomic_write_json(self.path / rf.PROVENANCE, prov)
        rf.fault_point("provenance.json:done")
        del self.step_lines[len(self.steps_log) :]
        for r in self.steps_log[len(self.step_lines) :]:
            self.step_lines.append(rf.csv_line(r[c] for c in rf.STEP_COLUMNS))
        rf.write_tables(self.path, self.measurements, self.step_lines)
        record = rf.status_record(
            status["state"],
            steps_done=len(self.steps_log),
            steps_total=self.cfg.steps,
            n_measurements=len(self.measurements),
            written_by={"pid": os.getpid(), "host": os.uname().nodename},
            **{k: v for k, v in status.items() if k != "state"},
        )
        rf.atomic_write_json(self.path / rf.STATUS, record)
        rf.fault_point("status.json:done")

    def begin_session(self) -> None:
        """Record that this process computes from the current step on (kept in the provenance)."""
        self.sessions.append(
            {
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "started_utc": rf.now_utc(),
                "device": self.base_provenance["device_name"],
                "world_size": self.comm.world_size,
                "from_step": self.next_step,
                "to_step": self.next_step,
            }
        )
        self.in_session = True

    def commit_due(self) -> bool:
        """Whether to commit at this boundary (step cadence, or time cadence adapted to the commit's cost)."""
        if self.last_commit_at == (self.next_step, self.measured):
            return False
        cfg = self.cfg
        if cfg.checkpoint_every and not self.measured and self.next_step % cfg.checkpoint_every == 0:
            return True
        if cfg.checkpoint_seconds > 0:
            interval = max(cfg.checkpoint_seconds, COST_FACTOR * self.last_commit_cost)
            return time.perf_counter() - self.last_commit_end >= interval
        return False

    def restore(self) -> bool:
        """Continue from the folder's checkpoint if there is one (checked against this run); return whether.

        Rank 0 reads it and sends it to the other ranks of a torchrun run.
        """
        state = self.comm.on_writer(lambda: rf.load_checkpoint(self.path))
        if state is None:
            return False
        ckpt = self.path / rf.CHECKPOINT
        problem = self._check_record(state)
        if problem:
            raise rf.checkpoint_refused(ckpt, problem)
        self.params = [p.to(self.device) for p in state["params"]]
        velocity = state.get("velocity")
        self.velocity = None if velocity is None else [v.to(self.device) for v in velocity]
        self.gen.set_state(state["gen_state"])
        self.prev_vecs = {k: v.to(self.device) for k, v in state["prev_vecs"].items()}
        self.measurements = list(state["measurements"])
        cols = state["steps"]
        n = int(cols["step"].numel())
        lists = {c: cols[c].tolist() for c in rf.STEP_COLUMNS}
        self.steps_log = [{c: lists[c][i] for c in rf.STEP_COLUMNS} for i in range(n)]
        self.step_lines = []
        self.next_step = state["next_step"]
        self.measured = state["measured"]
        self.elapsed = float(state["elapsed"])
        self.measure_seconds = float(state["measure_seconds"])
        self.commit_seconds = float(state.get("commit_seconds", 0.0))
        self.sessions = [dict(x) for x in state.get("sessions", [])]
        status = state["status"]
        if status["state"] in rf.TERMINAL_STATES:
            self.outcome = dict(status)
        self.resumed_from = self.next_step
        self.mark_boundary()
        self.last_commit_at = (self.next_step, self.measured)
        return True

    def _check_record(self, s: dict[str, Any]) -> str:
        """What is wrong with a checkpoint record for this run ("" when nothing)."""
        cfg = self.cfg
        if s.get("format") != CHECKPOINT_FORMAT:
            return f"its format is {s.get('format')!r}, this version reads {CHECKPOINT_FORMAT!r}"
        if s.get("identity") != cfg.identity():
            return f"it belongs to configuration {s.get('identity')!r}, this folder to {cfg.identity()!r}"
        step, measured, status = s.get("next_step"), s.get("measured"), s.get("status")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= cfg.steps:
            return f"next_step={step!r} is not a step of this run (0..{cfg.steps})"
        if not isinstance(measured, bool) or not isinstance(status, dict) or not isinstance(status.get("state"), str):
            return "its step state is malformed"
        params = s.get("params")
        want = self.task.params
        if not isinstance(params, list) or len(params) != len(want):
            held = len(params) if isinstance(params, list) else "no"
            return f"it holds {held} parameter tensors, the model {len(want)}"
        for i, (p, w) in enumerate(zip(params, want, strict=True)):
            if not isinstance(p, torch.Tensor) or p.shape != w.shape or p.dtype != w.dtype:
                return f"parameter {i} is not a {w.dtype} tensor of shape {list(w.shape)}"
        problem = self._check_velocity(s.get("velocity"), step, want)
        if problem:
            return problem
        gen = s.get("gen_state")
        ref = self.gen.get_state()
        if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8 or gen.shape != ref.shape:
            return "its random-generator state is malformed"
        dim = sum(w.numel() for w in want)
        vecs = s.get("prev_vecs")
        if not isinstance(vecs, dict) or not all(
            isinstance(v, torch.Tensor) and v.ndim == 2 and v.shape[0] == dim for v in vecs.values()
        ):
            return f"its eigenvectors are not [{dim}, k] tensors"
        meas, cols = s.get("measurements"), s.get("steps")
        if not isinstance(meas, list) or not all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in meas):
            return "its measurement rows are malformed"
        if not isinstance(cols, dict) or set(cols) != set(rf.STEP_COLUMNS):
            return "its step table is malformed"
        if not all(isinstance(c, torch.Tensor) and c.ndim == 1 and c.numel() == step for c in cols.values()):
            return f"its step table does not hold exactly the {step} steps done"
        if any(r["step"] > step for r in meas) or (measured and (not meas or meas[-1]["step"] != step)):
            return "its measurement rows do not match its step"
        for key in ("elapsed", "measure_seconds", "commit_seconds"):
            if not isinstance(s.get(key), (int, float)):
                return f"{key} is not a number"
        if not isinstance(s.get("sessions"), list) or not all(isinstance(x, dict) for x in s["sessions"]):
            return "its session list is malformed"
        return ""

    def _check_velocity(self, velocity: Any, step: int, want: Sequence[torch.Tensor]) -> str:
        """What is wrong with a checkpoint's momentum buffer for this run at ``step`` ("" when nothing).

        Without momentum there is none; with momentum there is none before the first step and one tensor
        per parameter (same shape and dtype) after it. Checkpoints written before momentum existed hold no
        ``velocity`` key, which reads as none.
        """
        if self.cfg.momentum == 0 or step == 0:
            return "" if velocity is None else "it holds a momentum buffer this run does not have"
        if not isinstance(velocity, list) or len(velocity) != len(want):
            return f"its momentum buffer is not a list of {len(want)} tensors"
        for i, (v, w) in enumerate(zip(velocity, want, strict=True)):
            if not isinstance(v, torch.Tensor) or v.shape != w.shape or v.dtype != w.dtype:
                return f"momentum buffer {i} is not a {w.dtype} tensor of shape {list(w.shape)}"
        return ""

    # -- the loop -----------------------------------------------------------------------------
    def is_measure_step(self, step: int) -> bool:
        """Steps 0, m, 2m, ..., the final iterate (step == steps) and the steps right after SAM switches on."""
        cfg = self.cfg
        after_switch = cfg.sam_start <= step < cfg.sam_start + cfg.measure_after_switch
        return step % cfg.measure_every == 0 or step == cfg.steps or after_switch

    def loop(self, stop_after: int | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """Run from the current boundary to the end; return the status to commit.

        ``stop_after`` (steps, for tests) and ``max_seconds`` (this call's wall-clock budget) stop early at a
        boundary, so the same call resumes the run later.
        """
        budget_start = time.perf_counter()
        cfg = self.cfg
        start = self.next_step
        bar = tqdm(total=cfg.steps, initial=start, disable=not self.progress, desc=cfg.run_name(), file=sys.stderr)
        last_ratio = math.nan
        try:
            while self.outcome is None:
                if (stop_after is not None and self.next_step >= start + stop_after) or (
                    max_seconds is not None  # rank 0's clock decides for every rank
                    and self.comm.on_writer(lambda: time.perf_counter() - budget_start >= max_seconds)
                ):
                    return {"state": "interrupted", "stopped_at": self.next_step}
                if self.commit_due():
                    self.commit("running", resumed_from=self.resumed_from)
                step = self.next_step
                t0 = time.perf_counter()
                if not self.measured and self.is_measure_step(step):
                    self.comm.check_identical(self.params, f"parameters at step {step}")
                    rows = self._measure_step(step, t0)
                    if rows and rows[0]["edge"] > 0:
                        last_ratio = rows[0]["lambda_1"] / rows[0]["edge"]
                    continue
                if step == cfg.steps:
                    self.outcome = {"state": "finished"}
                    break
                self._update_step(step, t0)
                bar.update(1)
                if self.progress and self.next_step % 10 == 0:
                    bar.set_postfix(loss=f"{self.steps_log[-1]['loss']:.4g}", lam1_over_edge=f"{last_ratio:.3f}")
        finally:
            bar.close()
        return self.outcome

    def _measure_step(self, step: int, t0: float) -> list[dict]:
        """Measure at ``step`` and apply the rows (or record the divergence); return the rows."""
        try:
            rows, vecs = self.measure(step)
            rf.fault_point("measured")
        except FloatingPointError as err:  # the Hessian-vector products overflowed: the run has blown up
            self.rollback()
            self.outcome = {
                "state": "diverged",
                "step": step,
                "reason": f"the Hessian-vector products became non-finite at step {step} ({err})",
            }
            return []
        for r in rows:
            r["wall_time"] = self.elapsed + (time.perf_counter() - t0)
        measure_time = sum(r["measure_seconds"] for r in rows)
        bad = [r for r in rows if not math.isfinite(r["loss"]) or not math.isfinite(r["lambda_1"])]
        self.measurements.extend(rows)
        self.prev_vecs = vecs
        self.measured = True
        self.measure_seconds += measure_time
        self.elapsed += time.perf_counter() - t0
        self.mark_boundary()
        if bad:
            self.outcome = {"state": "diverged", "step": step, "reason": f"non-finite measurement at step {step}"}
        return rows

    def _update_step(self, step: int, t0: float) -> None:
        """Take the update of ``step`` and apply it (or record the divergence it shows)."""
        cfg = self.cfg
        new_params, new_velocity, info = self.update(step)
        rf.fault_point("updated")
        loss = float(info.loss)
        g_norm = float(info.grad_norm)
        self.elapsed += time.perf_counter() - t0
        self.steps_log.append(
            {
                "step": step,
                "loss": loss,
                "grad_norm": g_norm,
                "edge": self.edge_of(g_norm, step),
                "wall_time": self.elapsed,
            }
        )
        self.params = new_params
        self.velocity = new_velocity
        self.next_step = step + 1
        self.measured = False
        self.mark_boundary()
        if not math.isfinite(loss) or not math.isfinite(g_norm) or loss > cfg.max_loss:
            reason = f"training loss {loss:.4g} (gradient norm {g_norm:.4g}) at step {step}"
            reason += " is not finite" if not math.isfinite(loss) else f" exceeds max_loss={cfg.max_loss:g}"
            if math.isfinite(loss) and not math.isfinite(g_norm):
                reason = f"gradient norm {g_norm:.4g} at step {step} is not finite (loss {loss:.4g})"
            self.outcome = {"state": "diverged", "step": step, "reason": reason}


# ----------------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------------


def _terminal_result(path: Path, cfg: RunConfig) -> RunResult | None:
    """The stored result when ``path`` holds a finished or diverged run of ``cfg`` that reads cleanly."""
    try:
        if rf.read_status(path).get("state") not in rf.TERMINAL_STATES:
            return None
        result = load_run(path)
    except rf.RunFolderError:
        return None
    return result if result.config.identity() == cfg.identity() else None


def _check_folder_config(path: Path, cfg: RunConfig) -> None:
    """Refuse a folder whose ``config.json`` describes another run."""
    if (path / rf.CONFIG).exists():
        stored = rf.read_config(path)
        if stored.identity() != cfg.identity():
            raise rf.RunFolderError(
                f"{path} holds a different configuration (identity {stored.identity()}, this run {cfg.identity()}); "
                f"move it away, or {rf.FORCE_HINT}"
            )


def _clear(path: Path) -> None:
    """Forget a folder's results for ``force``: the status first (so no step is claimed), then the rest."""
    for name in (rf.STATUS, rf.CHECKPOINT, rf.MEASUREMENTS, rf.STEPS, rf.PROVENANCE):
        (path / name).unlink(missing_ok=True)
        rf.fault_point(f"force:{name}")


def _deliver(result: RunResult, raise_on_divergence: bool) -> RunResult:
    """Return ``result``, or raise :class:`RunDivergedError` for a diverged run when asked (also when loaded).

    A diverged run that is returned comes with a :class:`RunDivergedWarning` carrying the same message.
    """
    if result.state == "diverged" and raise_on_divergence:
        cfg = result.config
        raise RunDivergedError(
            f"run {cfg.run_name()} diverged: {result.status.get('reason', 'no reason recorded')}. Everything "
            f"measured up to then is kept in {result.path}. Try a smaller eta (now {cfg.eta:g}) or rho "
            f"(now {cfg.rho:g})."
        )
    if result.state == "diverged":
        _warn_diverged(result)
    return result


def _warn_diverged(result: RunResult) -> None:
    """The command line's divergence line (exit code 3), as a warning of the Python API."""
    cfg = result.config
    warnings.warn(
        f"run {cfg.run_name()} diverged: {result.status.get('reason', 'no reason recorded')}; the run is returned "
        f"with the rows up to then (raise_on_divergence=True raises instead). Try a smaller eta (now {cfg.eta:g}) "
        f"or rho (now {cfg.rho:g})",
        RunDivergedWarning,
        stacklevel=4,
    )


def _note_other_world(result: RunResult, comm: Any) -> None:
    """Under torchrun: say so when the stored run it loads was computed by another number of processes.

    The run folder is named by the configuration alone (a run resumes with any number of processes), so ``torchrun``
    with 2 processes loads a one-process result of the same configuration; its numbers agree to float32 round-off.
    """
    if not comm.distributed or not comm.is_writer:
        return
    worlds = sorted({int(s.get("world_size", 1)) for s in result.provenance.get("sessions", [])}) or [1]
    if worlds != [comm.world_size]:
        by = " and ".join(map(str, worlds))
        print(
            f"samedge_lib.engine.train: loaded the {result.state} run {result.path}, computed by {by} process(es), not "
            f"by these {comm.world_size} (the same configuration; the numbers agree to float32 round-off); --force "
            f"recomputes it with {comm.world_size}",
            file=sys.stderr,
            flush=True,
        )


def _stopped_by_full_disk(path: Path, err: rf.DiskFullError, comm: Any) -> None:
    """After a commit that found no space: say so in ``status.json`` (small; it may still fit), keeping the last commit.

    The status keeps the row counts of the last commit that was written whole, so a reader still sees exactly those
    rows; the state becomes ``interrupted`` (the same command continues once there is space) with the reason.
    """
    comm.own_error(err)
    if not comm.is_writer:
        return
    with contextlib.suppress(Exception):
        status = rf.read_status(path)
        if status and status.get("state") not in rf.TERMINAL_STATES:
            reason = str(err).split(";")[0]
            status.update(
                state="interrupted", stopped_at=status.get("steps_done"), reason=reason, updated_utc=rf.now_utc()
            )
            rf.atomic_write_json(path / rf.STATUS, status)


def _check_budget(stop_after: int | None, max_seconds: float | None) -> None:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 0):
        raise ConfigError(f"stop_after={stop_after!r} must be an integer >= 0")
    if max_seconds is not None:
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)):
            raise ConfigError(f"max_seconds={max_seconds!r} must be a number of seconds")
        if not (math.isfinite(max_seconds) and max_seconds > 0):
            raise ConfigError(f"max_seconds={max_seconds!r} must be a finite number of seconds > 0")


def run(
    cfg: RunConfig,
    *,
    root: str | Path | None = None,
    data_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    raise_on_divergence: bool = False,
    stop_after: int | None = None,
    max_seconds: float | None = None,
    wait: bool = False,
) -> RunResult:
    """Run ``cfg`` (or load its finished results, or resume it) and return the tables.

    Args:
        cfg: the configuration; validated before anything is computed.
        root: folder holding run folders (default ``$SAMEDGE_RUNS`` or ``<repo>/runs``).
        data_dir: where the datasets are (default ``$SAMEDGE_DATA`` or the user cache).
        force: recompute even if a finished run of this configuration exists.
        progress: show a progress bar (steps, loss, last lambda1/edge).
        raise_on_divergence: raise :class:`RunDivergedError` (after saving everything) instead of returning
            the run with a :class:`RunDivergedWarning`; also when the diverged run is only loaded.
            ``warnings.simplefilter("error", samedge_lib.record.runfolder.RunWarning)`` turns every warning of
            the API (a diverged run here, a diverged summary, stored runs that stopped early) into an error.
        stop_after: stop (with a commit) after this many steps; used to test resuming.
        max_seconds: stop (with a commit) once this call has run this long; call again to continue.
        wait: if another process is computing this run, wait for it (then load or resume) instead of raising
            :class:`~samedge_lib.record.runfolder.RunLockedError`.

    Raises:
        ConfigError: invalid configuration (before anything is computed or created).
        samedge_lib.engine.data.DataError, DeviceError: the data or the device is not available; nothing is created.
        samedge_lib.record.runfolder.RunLockedError: another process holds the folder (and ``wait`` is false).
        samedge_lib.record.runfolder.RunFolderError: the folder holds another configuration or a damaged file.
        RunInterruptedError: Ctrl-C; the last completed step was committed (status ``interrupted``).
        RunDivergedError: see ``raise_on_divergence``.

    Any other error is recorded as status ``failed`` (with everything measured before it) and re-raised.

    In a process started by ``torchrun`` the run is one rank of a data-parallel run
    (:mod:`samedge_lib.engine.distributed`): every rank calls this function with the same arguments, rank 0 alone
    touches the folder, and every rank returns the same result or raises the same error.

    """
    cfg.validate()
    _check_budget(stop_after, max_seconds)
    comm = distributed.setup(resolve_device(cfg.device)) or distributed.SOLO
    path = rf.run_path(cfg, root)

    def stored() -> RunResult | None:  # rank 0: a finished run to load, or a folder that cannot be used
        if not force:
            done = _terminal_result(path, cfg)
            if done is not None:
                return done
            if path.exists():
                _check_folder_config(path, cfg)
        rf.check_writable(path)
        return None

    done = comm.on_writer(stored)
    if done is not None:
        _note_other_world(done, comm)
        return _deliver(done, raise_on_divergence)
    try:
        runner = _Runner(cfg, path, data_dir, progress, comm)
    except KeyboardInterrupt:
        raise RunInterruptedError("interrupted while loading the data; nothing was computed") from None
    except torch.cuda.OutOfMemoryError as err:
        raise DeviceError(f"the data and model do not fit into the GPU's memory ({_first_line(err)})") from None

    def note(message: str) -> None:
        print(f"samedge_lib.engine.train: {message}", file=sys.stderr, flush=True)

    def prepare() -> RunResult | None:  # rank 0, holding the lock: a finished run to load, or a folder to compute in
        rf.remove_stale_temps(path)
        if force:
            _clear(path)
        else:
            done = _terminal_result(path, cfg)  # another process may have finished it while we waited
            if done is not None:
                return done
            _check_folder_config(path, cfg)
        rf.atomic_write_json(path / rf.CONFIG, cfg.to_dict())
        return None

    def stored_status() -> dict:  # rank 0: the status of a folder without a checkpoint
        try:
            return rf.read_status(path)
        except rf.RunFolderError:
            raise rf.RunFolderError(
                f"{path / rf.STATUS} is torn and there is no checkpoint to rebuild it from; {rf.FORCE_HINT}"
            ) from None

    with rf.writer_locked(path, comm, wait=wait, on_wait=note):
        done = comm.on_writer(prepare)
        if done is not None:
            _note_other_world(done, comm)
            return _deliver(done, raise_on_divergence)
        if not runner.restore():
            status = comm.on_writer(stored_status)
            if status.get("state") in rf.TERMINAL_STATES:  # results without a checkpoint (stored runs): keep
                return _deliver(comm.on_writer(lambda: load_run(path)), raise_on_divergence)
        if runner.outcome is not None:  # killed after its final checkpoint: rebuild the other files, no compute
            runner.write_derived(runner.outcome)
            return _deliver(comm.on_writer(lambda: load_run(path)), raise_on_divergence)
        runner.begin_session()
        try:
            runner.commit("running", resumed_from=runner.resumed_from)
            final = runner.loop(stop_after=stop_after, max_seconds=max_seconds)
        except KeyboardInterrupt:
            runner.rollback()
            runner.commit("interrupted", stopped_at=runner.next_step, reason="interrupted (Ctrl-C or SIGTERM)")
            raise RunInterruptedError(
                f"run {cfg.run_name()} interrupted at step {runner.next_step} of {cfg.steps}; everything up to "
                f"there is saved in {path}; run the same command again to continue"
            ) from None
        except Exception as err:
            runner.rollback()
            if isinstance(err, rf.DiskFullError):  # a "failed" commit would not fit either; the last one stands
                _stopped_by_full_disk(path, err, comm)
                raise
            oom = isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError))
            reason = ("out of memory: " if oom else "") + _first_line(err)
            with contextlib.suppress(Exception):
                runner.commit("failed", step=runner.next_step, reason=reason)
            if oom:
                raise comm.own_error(
                    DeviceError(
                        f"run {cfg.run_name()} ran out of memory at step {runner.next_step} ({_first_line(err)}); "
                        f"everything up to there is saved in {path}; set grad_chunk (--set grad_chunk=N) or use a "
                        f"smaller model, then run again to continue"
                    )
                ) from None
            comm.own_error(err)
            raise
        try:
            runner.commit(final["state"], **{k: v for k, v in final.items() if k != "state"})
        except rf.DiskFullError as err:
            _stopped_by_full_disk(path, err, comm)
            raise
    return _deliver(comm.on_writer(lambda: load_run(path)), raise_on_divergence)
