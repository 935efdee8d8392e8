"""Data-parallel runs: SAM steps per second and the cost of a sharpness check against the number of processes.

The question: what does splitting a full-batch run over ``torchrun`` processes (:mod:`samedge_lib.engine.distributed`)
buy, and what does the distributed code path cost when it has nothing to split? Each *mode* runs the same
configuration through the real command line, ``python -m samedge_lib.run`` or ``torchrun ... -m
samedge_lib.engine.cli``, into a fresh run folder, and the run's own timers are read back from its provenance:

* **steps/s**: updates per second of compute, checks excluded (``provenance.timings``; the time of every step
  includes its all-reduces and any wait for the slowest rank);
* **check seconds**: the median over the run's checks of their seconds (Lanczos on the all-reduced operator,
  the gradient norms, alignments and test metrics), and the Hessian-vector products per check;
* **command seconds**: the whole command, process start-up and data loading included.

Modes on a CPU with ``c`` cores: the plain run with 1 thread and with ``c`` threads, ``torchrun`` with 1 process
(gloo: the distributed path with nothing to split) and with 2..``c`` processes of one thread each. On CUDA: the
plain run and ``torchrun`` with 1 process (NCCL), which must not be slower by more than a few percent, and with
every GPU of the machine. The modes are interleaved over ``--repeats`` rounds (machine load drifts) and each
mode's best round is reported (the fastest steps and the fastest check: other processes only ever slow a run
down, so the best round is the closest to the machine's speed, as ``timeit`` advises,
https://docs.python.org/3/library/timeit.html); every round is stored.

Every mode's numbers are compared with the first mode's (the plain run with one thread). ``torchrun`` with one
process must be bitwise that run. Other thread or process counts sum in another order: their first check (step
0, before any update) differs by float32 round-off, and the trajectories then drift apart as the dynamics
amplify it -- at the edge of stability, where these presets train, by much more. The drift is stored per step
(``loss_rel_diff_by_step``), for the plain run with every core as for the processes.

Usage::

    python benchmarks/distributed_scaling.py --preset cpu          # this machine -> results/benchmark/
    python benchmarks/distributed_scaling.py --preset paper --out-dir "$OUT"   # on a GPU (tools/gpu_benchmarks.sh)

It writes ``results/benchmark/distributed-<machine-tag>.json``, which the benchmark appendix reads
(``samedge_lib.chapters.benchmark_report.scaling_table``), and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

SCHEMA = "samedge-distributed-scaling/1"
RHO = 0.1
#: Per preset: (task, preset of the run, overrides). Checks stay in (Lanczos, warm-started), the paper's
#: finite-difference estimator is left out (it is timed by benchmarks/sam_speed.py).
PRESETS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "smoke": [("mnist", "smoke", dict(steps=10, measure_every=5))],
    "cpu": [
        ("mnist", "cpu", dict(steps=60, measure_every=20, official_every=0)),
        ("cifar10", "cpu", dict(steps=12, measure_every=6, official_every=0)),
    ],
    "paper": [
        ("mnist", "paper", dict(steps=300, measure_every=100, official_every=0)),
        ("cifar10", "paper", dict(steps=300, measure_every=100, official_every=0)),
    ],
}


def modes_for(device: str, cores: int, gpus: int, preset: str) -> list[dict[str, Any]]:
    """The modes to time on this machine (see the module docstring); ``smoke`` keeps the two that matter."""
    if device == "cuda":
        modes = [
            dict(launcher="plain", processes=1, threads=None),
            dict(launcher="torchrun", processes=1, threads=None),
        ]
        if gpus > 1:
            modes.append(dict(launcher="torchrun", processes=gpus, threads=None))
        return modes
    if preset == "smoke":
        return [dict(launcher="plain", processes=1, threads=1), dict(launcher="torchrun", processes=2, threads=1)]
    modes = [dict(launcher="plain", processes=1, threads=1)]
    if cores > 1:
        modes.append(dict(launcher="plain", processes=1, threads=cores))
    modes += [dict(launcher="torchrun", processes=n, threads=1) for n in range(1, cores + 1)]
    return modes


def mode_name(mode: dict[str, Any]) -> str:
    """``plain, 1 thread``, ``torchrun, 2 processes x 1 thread``..."""
    threads = "" if mode["threads"] is None else f" x {mode['threads']} thread{'s' if mode['threads'] > 1 else ''}"
    if mode["launcher"] == "plain":
        return f"plain{threads.replace(' x ', ', ')}"
    return f"torchrun, {mode['processes']} process{'es' if mode['processes'] > 1 else ''}{threads}"


def command(mode: dict[str, Any], run_args: list[str]) -> list[str]:
    """The command line of ``mode``."""
    if mode["launcher"] == "plain":
        return [sys.executable, "-m", "samedge_lib.run", *run_args]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={mode['processes']}"]
    return [*launch, "-m", "samedge_lib.run", *run_args]


def run_mode(mode: dict[str, Any], run_args: list[str], root: Path, timeout: float) -> dict[str, Any]:
    """Run ``mode`` into ``root`` and read its timers and tables back."""
    from samedge_lib.record.runfolder import load_run

    env = dict(os.environ)
    if mode["threads"] is not None:
        env["OMP_NUM_THREADS"] = str(mode["threads"])
    t0 = time.perf_counter()
    proc = subprocess.run(
        command(mode, [*run_args, "--root", str(root), "--no-progress"]),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{mode_name(mode)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (folder,) = list(root.iterdir())
    res = load_run(folder)
    timing = res.provenance["timings"]
    meas = res.measurements
    checks = meas["measure_seconds"].to_numpy()
    return {
        "command_seconds": seconds,
        "wall_seconds": timing["wall_seconds"],
        "steps_per_s": 1.0 / timing["seconds_per_step_excluding_measurements"],
        "check_seconds": float(statistics.median(checks)),
        "checks": len(checks),
        "matvecs_per_check": float(meas["lanczos_matvecs"].mean()),
        "world_size": res.provenance["sessions"][-1]["world_size"],
        "device_name": res.provenance["device_name"],
        "_tables": (res.steps.drop(columns="wall_time"), meas.drop(columns=["wall_time", "measure_seconds"])),
    }


#: Columns left out of the relative differences: counts (accuracies), and quantities that are round-off sized
#: themselves or cosines near 0 (residuals, alignments), whose relative differences say nothing.
SKIP = ("accuracy", "test_accuracy", "residual_", "align_")


def _rel(u, v):
    import numpy as np

    ok = ~(np.isnan(u) | np.isnan(v))
    return np.abs(u[ok] - v[ok]) / np.abs(u[ok]).clip(1e-30)


def difference(a: tuple, b: tuple) -> dict[str, Any]:
    """How far run ``b``'s tables (steps, measurements) are from run ``a``'s.

    ``bitwise``: every column identical. ``first_check``: the largest relative difference at step 0 (the first
    check and the first step's loss, before any update: the round-off of one computation). ``whole_run``: the
    largest over every step and check. ``loss_rel_diff_by_step``: the step table's loss, step by step.
    """
    import numpy as np

    bitwise, first, whole = True, 0.0, 0.0
    for x, y in zip(a, b, strict=True):
        for col in x.columns:
            u, v = x[col].to_numpy(), y[col].to_numpy()
            if x[col].dtype.kind != "f":
                bitwise &= u.tolist() == v.tolist()
                continue
            bitwise &= np.array_equal(u, v, equal_nan=True)
            if col.startswith(SKIP):
                continue
            rel = _rel(u, v)
            whole = max(whole, float(rel.max(initial=0.0)))
            at0 = (x["step"] == 0).to_numpy()
            first = max(first, float(_rel(u[at0], v[at0]).max(initial=0.0)))
    by_step = _rel(a[0]["loss"].to_numpy(), b[0]["loss"].to_numpy())
    return {
        "bitwise": bool(bitwise),
        "first_check": first,
        "whole_run": whole,
        "loss_rel_diff_by_step": [float(x) for x in by_step],
    }


def load_note(when: str) -> str:
    """The 1-minute load average against the core count (other processes distort CPU timings)."""
    try:
        return f"1-min load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at the {when}"
    except OSError:
        return "load average unavailable"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time every mode of every task of the preset; write and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--repeats", type=int, default=None, help="rounds over the modes (default: 1 smoke, 3 otherwise)")
    ap.add_argument("--tasks", nargs="+", help="only these tasks of the preset")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    ap.add_argument("--note", action="append", default=[], help="a remark stored with the results")
    ap.add_argument("--out", default=None, help="JSON path (default results/benchmark/distributed-<machine>.json)")
    ap.add_argument("--out-dir", default=None, help="write <out-dir>/distributed-<machine>.json instead")
    args = ap.parse_args(argv)

    import torch

    from samedge_lib.engine import device as device_mod

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cores, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    modes = modes_for(device, cores, gpus, args.preset)
    repeats = args.repeats or (1 if args.preset == "smoke" else 3)
    tasks = [t for t in PRESETS[args.preset] if not args.tasks or t[0] in args.tasks]
    tag = device_mod.machine_tag(torch.device(device))
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "preset": args.preset,
        "machine_tag": tag,
        "device": device,
        "cores": cores,
        "gpus": gpus,
        "rho": RHO,
        "repeats": repeats,
        "provenance": device_mod.collect_provenance(torch.device(device), torch.float32),
        "notes": [load_note("start"), *args.note],
        "tasks": [],
    }
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, run_preset, overrides in tasks:
            run_args = ["--task", task, "--preset", run_preset, "--rho", str(RHO), "--device", device]
            run_args += [f"--set={k}={json.dumps(v)}" for k, v in overrides.items()]
            rounds: list[list[dict[str, Any]]] = [[] for _ in modes]
            for r in range(repeats):
                for i, mode in enumerate(modes):
                    print(f"{task}: {mode_name(mode)}, round {r + 1} of {repeats} ...", flush=True)
                    rounds[i].append(run_mode(mode, run_args, Path(tmp) / f"{task}-{i}-{r}", args.timeout))
            base = rounds[0][0]
            entries = []
            for mode, runs in zip(modes, rounds, strict=True):
                entry = {
                    **mode,
                    "name": mode_name(mode),
                    **{k: v for k, v in runs[0].items() if not k.startswith("_")},
                    "steps_per_s": max(x["steps_per_s"] for x in runs),
                    "check_seconds": min(x["check_seconds"] for x in runs),
                    "command_seconds": min(x["command_seconds"] for x in runs),
                    "steps_per_s_rounds": [x["steps_per_s"] for x in runs],
                    "check_seconds_rounds": [x["check_seconds"] for x in runs],
                    "command_seconds_rounds": [x["command_seconds"] for x in runs],
                    "versus_first_mode": difference(base["_tables"], runs[0]["_tables"]),
                }
                # the rounds of one mode compute the same numbers (only the timings differ)
                entry["rounds_bitwise"] = all(difference(runs[0]["_tables"], x["_tables"])["bitwise"] for x in runs)
                entries.append(entry)
            first = entries[0]
            for e in entries:
                e["speedup_steps"] = e["steps_per_s"] / first["steps_per_s"]
                e["speedup_checks"] = first["check_seconds"] / e["check_seconds"]
                versus = e["versus_first_mode"]
                same = (
                    "bitwise" if versus["bitwise"] else f"diff {versus['first_check']:.0e} -> {versus['whole_run']:.0e}"
                )
                lines.append(
                    f"{task:8s} {e['name']:36s} {e['steps_per_s']:8.2f} steps/s ({e['speedup_steps']:.2f}x)  "
                    f"check {e['check_seconds']:.3f} s ({e['speedup_checks']:.2f}x, {e['matvecs_per_check']:.0f} "
                    f"products)  command {e['command_seconds']:.1f} s  {same}"
                )
            out["tasks"].append({"task": task, "run_preset": run_preset, "overrides": overrides, "modes": entries})
    out["notes"].append(load_note("end"))
    out["summary_lines"] = lines
    folder = Path(args.out_dir) if args.out_dir else REPO / "results" / "benchmark"
    path = Path(args.out) if args.out else folder / f"distributed-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    head = "=== best of the rounds, relative to the first mode; diff: first check -> whole run ==="
    print("\n".join(["", head, *lines, *out["notes"], f"-> {path}"]))
    return out


if __name__ == "__main__":
    main()
