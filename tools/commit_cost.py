"""What one commit (checkpoint + tables + provenance + status, each fsync'd) costs, per task and preset.

A commit's cost grows with the model (parameters and warm-start eigenvectors) and with the tables (one
row per step), so it is timed at the *end* of each configuration: the step table holds every step and
the measurement table every measurement. The printed share is the cost divided by the time between two
commits, ``max(checkpoint_seconds, 50 x cost)`` (see ``RunConfig.checkpoint_seconds``), i.e. the part of
the run's wall-clock time spent committing.

Usage: python tools/commit_cost.py [--presets cpu paper] [--tasks mnist cifar10 shakespeare] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from samedge_lib.engine import commits, train
from samedge_lib.record.config import RunConfig, preset_config


def _synthetic_rows(runner: train._Runner) -> None:
    """Fill the runner's tables and eigenvectors as they are at the end of the run (values are irrelevant)."""
    cfg = runner.cfg
    runner.steps_log = [
        {"step": s, "loss": 0.1 + s * 1e-6, "grad_norm": 1.0 / (s + 1), "edge": 2 / cfg.eta, "wall_time": 0.01 * s}
        for s in range(cfg.steps)
    ]
    kinds = ["minibatch", "fixed"] if cfg.measure_data == "both" else ["full" if cfg.batch_size is None else "batch"]
    row = {"data_label": "synthetic", "lanczos_converged": True, "lanczos_matvecs": 40, "n_examples": 1000}
    row.update({name: 0.123456789 for name in ("loss", "grad_norm", "sam_grad_norm", "sam_edge", "edge", "gd_edge")})
    row.update({f"{name}_{i + 1}": 1.23456789 for i in range(cfg.k) for name in ("lambda", "residual")})
    row.update(alpha=0.5, align_g=0.1, align_sam_g=0.2, official_lambda=1.0, official_matvecs=20, test_loss=0.3)
    steps = range(0, cfg.steps + 1, cfg.measure_every)
    runner.measurements = [{**row, "step": s, "data": kind, "wall_time": 0.0} for s in steps for kind in kinds]
    dim = sum(p.numel() for p in runner.params)
    runner.prev_vecs = {kind: torch.randn(dim, cfg.k, dtype=runner.dtype) for kind in kinds}
    runner.next_step, runner.measured = cfg.steps, True


def commit_cost(cfg: RunConfig, repeats: int) -> dict:
    """Median seconds of one end-of-run commit of ``cfg`` (on the CPU, into a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        runner = train._Runner(cfg, Path(tmp), None, progress=False)
        _synthetic_rows(runner)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner.commit("running")
            times.append(time.perf_counter() - t0)
        size = (Path(tmp) / "checkpoint.pt").stat().st_size
        n_params = sum(p.numel() for p in runner.params)
    cost = statistics.median(times)
    interval = max(cfg.checkpoint_seconds, commits.COST_FACTOR * cost)
    return {
        "params": n_params,
        "cost_s": cost,
        "checkpoint_mb": size / 2**20,
        "interval_s": interval,
        "share": cost / interval,
    }


def main() -> None:
    """Print the commit cost and its share of the run time for each task and preset."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    ap.add_argument("--tasks", nargs="+", default=["mnist", "cifar10", "shakespeare"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    head = ("task", "preset", "params", "steps", "ckpt MB", "commit s", "every s", "share")
    print(f"{head[0]:12} {head[1]:6} " + " ".join(f"{h:>9}" for h in head[2:]))
    for preset in args.presets:
        for task in args.tasks:
            cfg = preset_config(task, preset, rho=0.1, device="cpu")
            r = commit_cost(cfg, args.repeats)
            print(
                f"{task:12} {preset:6} {r['params']:9d} {cfg.steps:9d} {r['checkpoint_mb']:9.2f} {r['cost_s']:9.4f} "
                f"{r['interval_s']:9.1f} {r['share']:9.2%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
