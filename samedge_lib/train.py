"""The run loop: GD/SAM updates, step-indexed sharpness measurements, checkpoints and resume.

One call of :func:`run` turns a :class:`~samedge_lib.config.RunConfig` into a folder
``<runs_root>/<config.run_name()>/`` holding

* ``config.json`` -- the validated configuration;
* ``provenance.json`` -- commit, versions, device, dtype/TF32, timings;
* ``measurements.csv`` -- one row per (measurement step, data): loss, accuracy, ``||g||``, SAM-edge,
  ``2/eta``, alpha, the top-k eigenvalues with residuals and matvec counts, alignments of ``g`` and
  of the SAM gradient with ``v1``, the official estimator when asked for, test metrics, and a
  ``data`` column saying which data each number was measured on;
* ``steps.csv`` -- every step's loss, ``||g||`` and edge (free: SAM computes ``g`` anyway);
* ``status.json`` -- ``finished`` / ``diverged`` (with step and reason) / ``running``;
* ``checkpoint.pt`` -- parameters, RNG state, the last eigenvectors and results so far.

Measurements happen at steps ``0, m, 2m, ...`` and at the last step, at ``w_t`` on the batch the
update at step ``t`` uses, *before* that update (as the official code). A killed run resumes from
its last checkpoint and produces exactly the results of an uninterrupted run (bitwise on the CPU;
wall-clock columns aside). A finished configuration is loaded, not recomputed, unless ``force``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from . import provenance
from .config import RunConfig
from .edges import gd_edge, sam_edge, usam_edge
from .eigen import lanczos, official_power_iteration
from .hessian import HessianOperator
from .tasks import Batch, Task, build_task
from .updates import StepInfo, gd_step, global_norm, sam_gradient, sam_step, usam_step

DEFAULT_RUNS_ROOT = provenance.REPO_ROOT / "runs"


class RunDivergedError(RuntimeError):
    """Raised by :func:`run` with ``raise_on_divergence=True`` when the loss becomes NaN/inf or too large."""


@dataclass
class RunResult:
    """A run's folder and its tables, as loaded from disk."""

    config: RunConfig
    path: Path
    measurements: pd.DataFrame
    steps: pd.DataFrame
    status: dict
    provenance: dict

    @property
    def finished(self) -> bool:
        """True when the run completed all its steps."""
        return self.status.get("state") == "finished"


def runs_root(root: str | Path | None = None) -> Path:
    """Where run folders go: the argument, else ``$SAMEDGE_RUNS``, else ``<repo>/runs``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("SAMEDGE_RUNS", DEFAULT_RUNS_ROOT))


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error saying so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(name)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_run(path: str | Path) -> RunResult:
    """Load a run folder written by :func:`run` (finished or not)."""
    path = Path(path)
    cfg = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    meas = pd.read_csv(path / "measurements.csv") if (path / "measurements.csv").exists() else pd.DataFrame()
    steps = pd.read_csv(path / "steps.csv") if (path / "steps.csv").exists() else pd.DataFrame()
    status = json.loads((path / "status.json").read_text()) if (path / "status.json").exists() else {}
    prov = json.loads((path / "provenance.json").read_text()) if (path / "provenance.json").exists() else {}
    return RunResult(cfg, path, meas, steps, status, prov)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _abs_cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u64, v64 = u.double(), v.double()
    den = float(u64.norm() * v64.norm())
    return float(abs(u64 @ v64)) / den if den > 0 else math.nan


class _Runner:
    """State of one run in progress (kept small: everything persistent is in the checkpoint)."""

    def __init__(self, cfg: RunConfig, path: Path, data_dir: str | Path | None, progress: bool) -> None:
        self.cfg = cfg
        self.path = path
        self.progress = progress
        self.device = resolve_device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        self.task: Task = build_task(cfg, self.device, self.dtype, data_dir)
        self.gen = torch.Generator().manual_seed(cfg.seed + 12345)
        self.prev_vecs: dict[str, torch.Tensor] = {}
        self.measurements: list[dict] = []
        self.steps_log: list[dict] = []
        self.start_step = 0
        self.elapsed = 0.0
        self.measure_seconds = 0.0
        self.params = self.task.params

    # -- gradients --------------------------------------------------------------------------
    def grad_fn_for(self, batch: Batch):
        """``grad_fn(params) -> (loss, grads)`` on ``batch``, chunked over examples if asked."""
        chunk = self.cfg.grad_chunk

        def grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
            ps = [p.detach().requires_grad_(True) for p in params]
            if chunk is None or chunk >= batch.size:
                loss = self.task.loss(ps, batch)
                grads = torch.autograd.grad(loss, ps)
                return loss.detach(), [g.detach() for g in grads]
            total = None
            grads_acc = [torch.zeros_like(p) for p in ps]
            for start in range(0, batch.size, chunk):
                sub = Batch(batch.x[start : start + chunk], batch.y[start : start + chunk], batch.label, batch.kind)
                w = sub.size / batch.size
                loss = self.task.loss(ps, sub) * w
                grads = torch.autograd.grad(loss, ps)
                for acc, g in zip(grads_acc, grads, strict=True):
                    acc.add_(g)
                total = loss.detach() if total is None else total + loss.detach()
            return total, grads_acc

        return grad_fn

    def update(self, step: int) -> StepInfo:
        """One GD/SAM/USAM update on the batch of ``step``."""
        batch = self.task.batch_at(step)
        grad_fn = self.grad_fn_for(batch)
        cfg = self.cfg
        if cfg.optimizer == "gd":
            new, info = gd_step(self.params, grad_fn, cfg.eta)
        elif cfg.optimizer == "sam":
            new, info = sam_step(self.params, grad_fn, cfg.eta, cfg.rho)
        else:
            new, info = usam_step(self.params, grad_fn, cfg.eta, cfg.rho)
        self.params = [p.detach() for p in new]
        return info

    def edge_of(self, grad_norm: float) -> float:
        """The run's own edge: 2/eta (GD), the SAM-edge (SAM) or the USAM edge."""
        cfg = self.cfg
        if cfg.optimizer == "usam":
            return float(usam_edge(cfg.eta, cfg.rho))
        return float(sam_edge(grad_norm, cfg.eta, cfg.rho))

    # -- measurement ------------------------------------------------------------------------
    def measure(self, step: int) -> list[dict]:
        """Measure at the current parameters on the data the config asks for (before the update)."""
        cfg = self.cfg
        batches: list[Batch] = []
        if cfg.measure_data in ("batch", "both"):
            batches.append(self.task.batch_at(step))
        if cfg.measure_data in ("fixed", "both") and self.task.fixed_batch is not None:
            batches.append(self.task.fixed_batch)
        rows = []
        test = self.task.metrics(self.params, self.task.test_batch) if self.task.test_batch is not None else {}
        for batch in batches:
            t0 = time.perf_counter()
            rows.append(self._measure_on(step, batch, test))
            rows[-1]["measure_seconds"] = time.perf_counter() - t0
        return rows

    def _measure_on(self, step: int, batch: Batch, test: dict[str, float]) -> dict:
        cfg = self.cfg

        def loss_fn(ps: Sequence[torch.Tensor]) -> torch.Tensor:
            return self.task.loss(ps, batch)

        op = HessianOperator(loss_fn, self.params, method=cfg.hvp)
        loss, g_flat = op.gradient()
        g_norm = float(g_flat.double().norm())
        res = lanczos(
            op,
            k=cfg.k,
            v0=self.prev_vecs.get(batch.kind),
            tol=cfg.lanczos_tol,
            max_iter=cfg.lanczos_max_iter,
            generator=self.gen,
        )
        self.prev_vecs[batch.kind] = res.eigenvectors.detach().clone()
        v1 = res.eigenvectors[:, 0]
        grad_fn = self.grad_fn_for(batch)
        g_list = op.unflatten(g_flat)
        if cfg.optimizer == "usam":
            _, g_upd = grad_fn([p + cfg.rho * g for p, g in zip(self.params, g_list, strict=True)])
        else:
            g_upd = sam_gradient(self.params, g_list, grad_fn, cfg.rho)
        row: dict[str, Any] = {
            "step": step,
            "data": batch.kind,
            "data_label": batch.label,
            "n_examples": batch.size,
            "loss": float(loss),
        }
        if self.task.classification:
            row["accuracy"] = self.task.metrics(self.params, batch)["accuracy"]
        row.update(
            grad_norm=g_norm,
            sam_grad_norm=float(global_norm(g_upd)),
            sam_edge=float(sam_edge(g_norm, cfg.eta, cfg.rho)) if cfg.optimizer != "usam" else math.nan,
            edge=self.edge_of(g_norm),
            gd_edge=float(gd_edge(cfg.eta)),
            alpha=cfg.eta * g_norm / (2 * cfg.rho) if cfg.rho > 0 else math.inf,
        )
        for i in range(cfg.k):
            row[f"lambda_{i + 1}"] = float(res.eigenvalues[i])
            row[f"residual_{i + 1}"] = float(res.residuals[i])
        row.update(
            lanczos_matvecs=int(res.n_matvec),
            lanczos_converged=bool(res.converged),
            align_g=_abs_cos(g_flat, v1),
            align_sam_g=_abs_cos(_flat(g_upd), v1),
        )
        if cfg.official_every and (step // cfg.measure_every) % cfg.official_every == 0:
            fd = HessianOperator(loss_fn, self.params, method="finite_difference")
            off = official_power_iteration(fd, k=1, generator=self.gen)
            row.update(official_lambda=float(off.eigenvalues[0]), official_matvecs=int(off.n_matvec))
        else:
            row.update(official_lambda=math.nan, official_matvecs=0)
        row.update({f"test_{k}": v for k, v in test.items()})
        return row

    # -- persistence --------------------------------------------------------------------------
    def checkpoint(self, next_step: int) -> None:
        """Save everything needed to continue at ``next_step`` exactly as an uninterrupted run would."""
        state = {
            "next_step": next_step,
            "params": [p.cpu() for p in self.params],
            "gen_state": self.gen.get_state(),
            "prev_vecs": {k: v.cpu() for k, v in self.prev_vecs.items()},
            "measurements": self.measurements,
            "steps_log": self.steps_log,
            "elapsed": self.elapsed,
            "measure_seconds": self.measure_seconds,
        }
        _atomic_save(state, self.path / "checkpoint.pt")
        self.write_tables()

    def restore(self) -> bool:
        """Load the checkpoint if there is one; return whether a run was resumed."""
        ckpt = self.path / "checkpoint.pt"
        if not ckpt.exists():
            return False
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        self.params = [p.to(self.device) for p in state["params"]]
        self.gen.set_state(state["gen_state"])
        self.prev_vecs = {k: v.to(self.device) for k, v in state["prev_vecs"].items()}
        self.measurements = state["measurements"]
        self.steps_log = state["steps_log"]
        self.elapsed = state["elapsed"]
        self.measure_seconds = state["measure_seconds"]
        self.start_step = state["next_step"]
        return True

    def write_tables(self) -> None:
        """Write the tidy tables (atomically) from what has been measured so far."""
        for name, rows in (("measurements.csv", self.measurements), ("steps.csv", self.steps_log)):
            tmp = self.path / (name + ".tmp")
            pd.DataFrame(rows).to_csv(tmp, index=False)
            os.replace(tmp, self.path / name)

    def write_status(self, state: str, **extra: Any) -> None:
        """Write ``status.json`` and the provenance record with timings."""
        done_steps = len(self.steps_log)
        status = {"state": state, "steps_done": done_steps, "steps_total": self.cfg.steps, **extra}
        _atomic_write_text(self.path / "status.json", json.dumps(status, indent=2))
        prov = provenance.collect(self.device, self.dtype)
        prov["timings"] = {
            "wall_seconds": self.elapsed,
            "measure_seconds": self.measure_seconds,
            "measure_share": self.measure_seconds / self.elapsed if self.elapsed > 0 else math.nan,
            "seconds_per_step_excluding_measurements": (self.elapsed - self.measure_seconds) / max(1, done_steps),
        }
        _atomic_write_text(self.path / "provenance.json", json.dumps(prov, indent=2))

    # -- the loop -----------------------------------------------------------------------------
    def is_measure_step(self, step: int) -> bool:
        """Steps 0, m, 2m, ... and the final iterate (step == steps)."""
        return step % self.cfg.measure_every == 0 or step == self.cfg.steps

    def loop(self, stop_after: int | None = None, max_seconds: float | None = None) -> tuple[str, dict]:
        """Run from ``start_step`` to the end; return the final state.

        ``stop_after`` (steps, for tests) and ``max_seconds`` (this call's wall-clock budget) stop early with a
        checkpoint, so the same call resumes the run later.
        """
        budget_start = time.perf_counter()
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.start_step, disable=not self.progress, desc=cfg.run_name())
        step = self.start_step
        last_ratio = math.nan
        try:
            while step <= cfg.steps:
                if (stop_after is not None and step >= self.start_step + stop_after) or (
                    max_seconds is not None and time.perf_counter() - budget_start >= max_seconds
                ):
                    self.checkpoint(step)
                    return "interrupted", {"stopped_at": step}
                t0 = time.perf_counter()
                if self.is_measure_step(step):
                    rows = self.measure(step)
                    mt = sum(r["measure_seconds"] for r in rows)
                    self.measure_seconds += mt
                    for r in rows:
                        r["wall_time"] = self.elapsed + (time.perf_counter() - t0)
                    self.measurements.extend(rows)
                    self.write_tables()  # cheap, and a crash loses nothing already measured
                    last_ratio = rows[0]["lambda_1"] / rows[0]["edge"]
                    bad = [r for r in rows if not math.isfinite(r["loss"]) or not math.isfinite(r["lambda_1"])]
                    if bad:
                        self.elapsed += time.perf_counter() - t0
                        return "diverged", {"step": step, "reason": f"non-finite measurement at step {step}"}
                if step == cfg.steps:
                    self.elapsed += time.perf_counter() - t0
                    break
                info = self.update(step)
                loss = float(info.loss)
                g_norm = float(info.grad_norm)
                self.elapsed += time.perf_counter() - t0
                self.steps_log.append(
                    {
                        "step": step,
                        "loss": loss,
                        "grad_norm": g_norm,
                        "edge": self.edge_of(g_norm),
                        "wall_time": self.elapsed,
                    }
                )
                if not math.isfinite(loss) or not math.isfinite(g_norm) or loss > cfg.max_loss:
                    reason = f"training loss {loss:.4g} (gradient norm {g_norm:.4g}) at step {step}"
                    reason += " is not finite" if not math.isfinite(loss) else f" exceeds max_loss={cfg.max_loss:g}"
                    return "diverged", {"step": step, "reason": reason}
                step += 1
                bar.update(1)
                if self.progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.4g}", lam1_over_edge=f"{last_ratio:.3f}")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.checkpoint(step)
        finally:
            bar.close()
        return "finished", {}


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
) -> RunResult:
    """Run ``cfg`` (or load its finished results) and return the tables.

    Args:
        cfg: the configuration; validated before anything is computed.
        root: folder holding run folders (default ``$SAMEDGE_RUNS`` or ``<repo>/runs``).
        data_dir: where the datasets are (default ``$SAMEDGE_DATA`` or the user cache).
        force: recompute even if a finished run of this configuration exists.
        progress: show a progress bar (steps, loss, last lambda1/edge).
        raise_on_divergence: raise :class:`RunDivergedError` (after saving everything) instead of returning.
        stop_after: stop (with a checkpoint) after this many steps; used to test resuming.
        max_seconds: stop (with a checkpoint) once this call has run this long; call again to continue.

    """
    cfg.validate()
    path = runs_root(root) / cfg.run_name()
    if path.exists() and not force:
        status_file = path / "status.json"
        if status_file.exists() and json.loads(status_file.read_text()).get("state") in (
            "finished",
            "diverged",
        ):
            return load_run(path)
        if (path / "config.json").exists():
            stored = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
            if stored.identity() != cfg.identity():
                raise RuntimeError(f"{path} holds a different configuration; remove it or use force=True")
    if force and path.exists():
        for name in ("checkpoint.pt", "measurements.csv", "steps.csv", "status.json"):
            (path / name).unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path / "config.json", json.dumps(cfg.to_dict(), indent=2))
    runner = _Runner(cfg, path, data_dir, progress)
    resumed = runner.restore()
    runner.write_status("running", resumed_from=runner.start_step if resumed else None)
    state, extra = runner.loop(stop_after=stop_after, max_seconds=max_seconds)
    if state == "interrupted":
        runner.write_status("interrupted", **extra)
        return load_run(path)
    runner.checkpoint(len(runner.steps_log))
    runner.write_status(state, **extra)
    result = load_run(path)
    if state == "diverged" and raise_on_divergence:
        raise RunDivergedError(
            f"run {cfg.run_name()} diverged: {extra['reason']}. Everything measured up to then is kept in {path}. "
            f"Try a smaller eta (now {cfg.eta:g}) or rho (now {cfg.rho:g})."
        )
    return result
