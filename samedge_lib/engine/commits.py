"""Commits and resume of a run in progress: the boundary written to the run folder, and read back exactly.

A commit writes the checkpoint first (:mod:`samedge_lib.engine.checkpoint`), then the provenance, the tables and the
status (:mod:`samedge_lib.record.runfolder`'s atomic, ``fsync``'d writes), at a cadence that keeps its cost under
``1/COST_FACTOR`` of the run. A resume checks that the checkpoint belongs to this configuration and format before
it restores the parameters, the momentum buffer, the RNG state, the eigenvectors and every row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from samedge_lib.engine import checkpoint
from samedge_lib.record import runfolder as rf

#: Version tag of the checkpoint record; a checkpoint with another tag is refused.
CHECKPOINT_FORMAT = "samedge-run-checkpoint/2"

#: Commits are at least this many times their own duration apart, so they cost under 1/COST_FACTOR of the run.
COST_FACTOR = 50.0


class Committing:
    """The committing half of :class:`samedge_lib.engine.train._Runner` (its state: the boundary, the rows, the
    sessions, the commit timers, ``path`` and ``comm``).
    """

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
                checkpoint.save_checkpoint(self.path, self._record(status))
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
        state = self.comm.on_writer(lambda: checkpoint.load_checkpoint(self.path))
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
