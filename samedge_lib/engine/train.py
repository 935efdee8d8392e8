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
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from samedge_lib.core import stochastic as st
from samedge_lib.engine import distributed
from samedge_lib.engine.commits import Committing
from samedge_lib.engine.device import DeviceError, collect_provenance, resolve_device
from samedge_lib.engine.measure import Measuring
from samedge_lib.engine.tasks import Batch, Task, build_task
from samedge_lib.record import runfolder as rf
from samedge_lib.record.config import ConfigError, RunConfig
from samedge_lib.record.runfolder import RunResult, load_run, runs_root
from samedge_lib.theory.rules import UpdateRule
from samedge_lib.theory.updates import StepInfo

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


class RunDivergedError(RuntimeError):
    """Raised by :func:`run` with ``raise_on_divergence=True`` when the loss becomes NaN/inf or too large."""


class RunDivergedWarning(rf.RunWarning):
    """:func:`run` returned a diverged run (``raise_on_divergence=False``); the message is the command line's line."""


class RunInterruptedError(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM in the command line) stopped a run; the last boundary was committed first."""


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


class _Runner(Measuring, Committing):
    """State of one run in progress; everything needed to continue is in its boundary and the rows.

    The checks at measurement steps are :class:`~samedge_lib.engine.measure.Measuring`'s, the commits and the
    resume :class:`~samedge_lib.engine.commits.Committing`'s; this class holds the state, the update and the loop.
    """

    def __init__(
        self,
        cfg: RunConfig,
        path: Path,
        data_dir: str | Path | None,
        progress: bool,
        comm: distributed.Communicator | distributed.Solo = distributed.SOLO,
    ) -> None:
        self.cfg = cfg
        self.rule = UpdateRule.of(cfg)  # the step, the edge and the collapse variable of the run's update rule
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
        self.base_provenance = collect_provenance(self.device, self.dtype)
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
        return self.rule.rho_at(step)

    def update(self, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, StepInfo]:
        """One update on the batch of ``step``: the new parameters and velocity (``self`` is not changed).

        Without momentum: GD, SAM, USAM or m-SAM (:meth:`step_from`); with momentum, the same gradient stepped
        through a heavy-ball or Nesterov buffer (:func:`samedge_lib.theory.updates.momentum_step`). Before ``sam_start``
        the step is GD's.
        """
        if self.rule.momentum > 0:
            new, velocity, info = self.rule.step(
                self.params, self.velocity, self.grad_fn_for(self.task.batch_at(step)), step
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
        if self.rule.is_msam:
            new, info = st.msam_step(params, self.task.data_loss, *self.micro(batch, step), cfg.eta, cfg.rho)
        else:
            new, _, info = self.rule.step(params, None, grad_fn, step)
        return [p.detach() for p in new], info

    def edge_of(self, grad_norm: float, step: int) -> float:
        """The edge of the update of ``step`` (:meth:`samedge_lib.theory.rules.UpdateRule.edge`)."""
        return self.rule.edge(grad_norm, step)

    def collapse_of(self, lam1: float, grad_norm: float, step: int) -> float:
        """``Lambda``, 1 on the edge of ``step``'s update (:meth:`~samedge_lib.theory.rules.UpdateRule.collapse`)."""
        return self.rule.collapse(lam1, grad_norm, step)

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
