"""Paper-scale runs on one GPU within a fixed time budget (used to fill ``results/paper/``).

Runs the ``paper`` preset of each task in priority order (MNIST SAM rho=0.1, MNIST GD, CIFAR-10,
then the Transformer), each with a step count and a wall-clock guard that fit a short GPU lease.
A run stopped by its guard keeps a checkpoint and resumes when the same command is run again.
After every run the run folders (without checkpoints) are packed into ``<out>/paper_runs.tgz``.

Usage: python tools/gpu_paper_runs.py --root RUNS --out OUT [--only mnist]
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path

import torch

from samedge_lib.engine.train import run
from samedge_lib.record.config import TASKS, preset_config
from samedge_lib.record.results import summarize

#: (task, rho, overrides, wall-clock guard in seconds), in priority order.
PLAN: list[tuple[str, float, dict, float]] = [
    ("mnist", 0.1, dict(steps=3000, measure_every=100, official_every=5, k=2), 150.0),
    ("mnist", 0.0, dict(steps=3000, measure_every=100, official_every=5, k=2), 80.0),
    ("cifar10", 0.1, dict(steps=3000, measure_every=100, official_every=5, k=2), 40.0),
    ("cifar10", 0.0, dict(steps=3000, measure_every=100, official_every=5, k=2), 30.0),
    ("shakespeare", 0.1, dict(steps=2000, measure_every=100, k=2, measure_data="both"), 60.0),
]


def pack(root: Path, out: Path) -> None:
    """Write every run folder under ``root`` (checkpoints excluded) into ``out/paper_runs.tgz``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.name != "checkpoint.pt" and not f.name.endswith(".tmp"):
                tar.add(f, arcname=str(f.relative_to(root)))
    tmp = out / "paper_runs.tgz.tmp"
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out / "paper_runs.tgz")


def main() -> None:
    """Run the plan and pack the results after each run."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--only", choices=TASKS)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every guard by this")
    ap.add_argument("--preset", default="paper", help="'smoke' checks this script quickly on a CPU")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}", flush=True)
    for task, rho, overrides, guard in PLAN:
        if args.only and task != args.only:
            continue
        if args.preset != "paper":
            overrides = {k: v for k, v in overrides.items() if k in ("official_every", "measure_data")}
        cfg = preset_config(task, args.preset, rho=rho, device="auto", **overrides)
        t0 = time.perf_counter()
        res = run(cfg, root=args.root, data_dir=args.data_dir, progress=False, max_seconds=guard * args.scale)
        summary = summarize(res)
        print(
            f"[{time.perf_counter() - t0:6.1f} s] {cfg.run_name()}: {json.dumps(summary, default=float)}",
            flush=True,
        )
        pack(args.root, args.out)


if __name__ == "__main__":
    main()
