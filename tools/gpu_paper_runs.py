"""One GPU session of paper-scale work, planned from the costs that earlier GPU sessions measured.

A GPU session lasts about 15 minutes, the machine's start-up included, and runs one command of at most 10
minutes, so the plan gets ``--budget`` seconds (570 by default) from this script's start. The stages, in order
of value:

1. ``mnist-edge``: full-batch SAM on MNIST at the paper's setting (all 60,000 images, the 784-1000-1000-1000-10
   MLP, eta = 0.01, rho = 0.1: the defaults of ``image_classification.py`` in
   https://github.com/google-deepmind/sam_edge, the code of Long & Bartlett, "Sharpness-Aware Minimization and
   the Edge of Stability", https://arxiv.org/abs/2309.12488), strict float32, a check every 100 steps and the
   official estimator at every 5th check, until lambda_1 has met the SAM-edge and stayed on it for 2,000 steps:
   the estimated contact step plus 2,000, and never fewer than 10,000 steps.
2. ``sam-speed``: ``benchmarks/sam_speed.py`` at this preset, this library against the JAX reference loop on the
   same card, strict float32 then TF32 (one call per mode, merged into one file).
3. ``sharpness``: ``benchmarks/sharpness_benchmark.py`` at this preset, bounded by the time left.
4. ``extra``: MNIST rho = 0.03 and 0.3 in TF32 to their edges (estimated contact plus 2,000 steps), then CIFAR-10
   SAM (rho = 0.1) to 3,000 steps.

**Costs.** Before anything runs, the plan reads what the stored runs cost on the card they ran on and prints,
for every run, the step it expects to finish at within the time left, with the numbers that give it:

* per SAM step without checks: ``timings.seconds_per_step_excluding_measurements`` of the run's
  ``provenance.json`` (``results/paper/<run>/``);
* per check, with and without the official estimator: the median ``measure_seconds`` of ``measurements.csv``
  (the first check excluded: it also warms the card up, and its excess over the median is counted once per call);
* start-up of a run (data and model onto the card): the session log's seconds for the call less the run's own;
* TF32: the SAM-step speedup stored in ``results/benchmark/<card>.json`` (``mnist.tf32.speedup_tf32``), which
  divides the step and check costs.

The steps a run gets are simulated check by check as the engine takes them (a check at every multiple of
``measure_every`` and at the last step, before that step's update). A stage only starts when it can do useful
work in the time left (a run: reach its next check; a benchmark: its stored duration); otherwise it is skipped
with the reason printed. A run may use all the time left (the stages after it are worth less), less what
packing and one check's overrun need.

**Resuming.** Runs live in ``--root`` (``runs/gpu`` by default: a folder git ignores, so it survives between
commands on the same machine and can be carried to a fresh one) and resume from their checkpoints, as
``samedge_lib.engine.train.run`` does after any stop. A stored run of the same configuration is copied from
``<results>/paper/`` into the root first when it can be continued (it holds a checkpoint) or is complete (it is
then loaded, not recomputed); a run begun or complete keeps the step count it was begun with. A benchmark whose
result for this card and preset is already in the root or in ``<results>/benchmark/`` is not run again.

**Output.** After every stage (and every run of stage 4) its files are packed into ``OUT``:
``session.json`` (the plan, the numbers it came from, expected and measured finish steps, versions, the log),
one archive per stage (``1-mnist-edge.tgz`` ...: run folders without checkpoints, benchmark JSON files), and,
when a run is left unfinished, its folder with the checkpoint in parts of at most 16 MiB (``resume.tar.00`` ...)
so that a later session can continue it. ``tools/gpu_unpack.py`` puts all of it into ``results/`` and ``runs/gpu``.

Usage (on the GPU machine, from the repository root; data in ``$SAMEDGE_DATA``)::

    python tools/gpu_paper_runs.py --out "$OUT" --source-commit <commit>      # the session
    python tools/gpu_paper_runs.py --out /tmp/plan --plan-only                 # print the plan, run nothing
    python tools/gpu_paper_runs.py --out /tmp/o --root /tmp/r --preset smoke   # the whole script, tiny, on a CPU
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # the budget counts from here

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from samedge_lib.engine import device as provenance  # noqa: E402  (device, machine tag, provenance record)
from samedge_lib.engine.device import resolve_device  # noqa: E402
from samedge_lib.engine.train import run  # noqa: E402
from samedge_lib.record import runfolder as rf  # noqa: E402
from samedge_lib.record.config import RunConfig, preset_config  # noqa: E402
from samedge_lib.record.results import summarize  # noqa: E402
from samedge_lib.theory.edges import sam_edge  # noqa: E402

SCHEMA = "samedge-gpu-session/1"
STAGES = ("mnist-edge", "sam-speed", "sharpness", "extra")
ARCHIVES = {name: f"{i}-{name}.tgz" for i, name in enumerate(STAGES, 1)}
SESSION = "session.json"
RESUME = "resume.tar"
#: What comes back from a GPU machine's output folder: at most this many files of at most this many bytes.
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20
#: Seconds kept free after every stage for its final commit and its packing.
PACK_RESERVE_S = 5.0
#: The issue's goal for the headline run: contact, then this many steps on the edge, and at least this many steps.
ON_EDGE_STEPS, MIN_EDGE_STEPS = 2000, 10_000
#: lambda_1 / SAM-edge at or above this counts as contact (the chapters' "at the edge").
CONTACT_RATIO = 0.95
#: Target steps are rounded up to a multiple of this (whole blocks of official checks: 5 checks of 100 steps).
STEP_ROUNDING = 500


# ---------------------------------------------------------------------------------------------- the costs
@dataclasses.dataclass(frozen=True)
class Costs:
    """What one stored run cost per step and per check on the card it ran on, and how they scale."""

    source: str
    device: str
    steps_done: int
    wall_seconds: float
    step_s: float
    check_s: float
    official_check_s: float
    first_check_extra_s: float
    startup_s: float
    speedup: float = 1.0  # divides the step and check costs (TF32)

    @property
    def steps_per_s_with_checks(self) -> float:
        """The stored run's SAM steps per second, its checks included."""
        return self.steps_done / self.wall_seconds

    def check(self, cfg: RunConfig, step: int) -> float:
        """Seconds of the check at ``step`` (with the official estimator where the engine runs it)."""
        official = bool(cfg.official_every) and (step // cfg.measure_every) % cfg.official_every == 0
        return (self.official_check_s if official else self.check_s) / self.speedup

    def simulate(
        self, cfg: RunConfig, start: int, budget: float = math.inf, stop_after: int | None = None
    ) -> tuple[int, float]:
        """``(step reached, loop seconds)`` for a call from ``start`` that stops once ``budget`` seconds are used.

        As the engine: the budget is looked at before every check and every update; a check comes before the
        update of its step; the first check of a call costs its warm-up once more.
        """
        t, step, measured = self.first_check_extra_s, start, False
        step_s = self.step_s / self.speedup
        while True:
            if (stop_after is not None and step >= start + stop_after) or t >= budget:
                return step, t
            if not measured and (step % cfg.measure_every == 0 or step == cfg.steps):
                t += self.check(cfg, step)
                measured = True
                continue
            if step >= cfg.steps:
                return step, t
            t += step_s
            step += 1
            measured = False

    def describe(self) -> str:
        """One line: where the numbers come from and what they are."""
        text = (
            f"{self.source} on {self.device}: {self.steps_done} steps in {self.wall_seconds:.1f} s = "
            f"{self.steps_per_s_with_checks:.2f} steps/s with checks; {self.step_s:.5f} s per step, "
            f"{self.check_s:.3f} s per check ({self.official_check_s:.3f} s with the official estimator), "
            f"first check +{self.first_check_extra_s:.2f} s, start-up {self.startup_s:.1f} s"
        )
        return text + (f"; divided by {self.speedup:.2f} (TF32)" if self.speedup != 1 else "")


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _log_startup(log: Path, name: str) -> float | None:
    """Seconds a run's call spent before its loop, from the session log (``None`` when the log does not say)."""
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        m = re.match(r"\[\s*([\d.]+) s\] (\S+): (.*)", line)
        if not m or m.group(2) != name:
            continue
        call = re.search(r'"call_seconds": ([\d.eE+-]+)', m.group(3))
        loop = re.search(r'"loop_seconds": ([\d.eE+-]+)', m.group(3))
        if call and loop:
            return max(float(call.group(1)) - float(loop.group(1)), 0.0)
        wall = re.search(r'"wall_seconds": ([\d.eE+-]+)', m.group(3))
        if wall and float(m.group(1)) >= float(wall.group(1)):  # one call computed the whole run
            return float(m.group(1)) - float(wall.group(1))
    return None


def stored_costs(results: Path, task: str) -> Costs | None:
    """The costs of the longest stored paper-scale full-batch SAM run of ``task`` on a GPU (``None`` if none)."""
    best = None
    for folder in sorted((results / "paper").glob(f"{task}-sam-*")):
        try:
            cfg = rf.read_config(folder)
            prov = json.loads((folder / rf.PROVENANCE).read_text())
            status = json.loads((folder / rf.STATUS).read_text())
        except (OSError, ValueError, rf.RunFolderError):
            continue
        timings = prov.get("timings", {})
        if cfg.batch_size is not None or prov.get("device") != "cuda" or not timings.get("wall_seconds"):
            continue
        if best is None or status.get("steps_done", 0) > best[2].get("steps_done", 0):
            best = (folder, prov, status)
    if best is None:
        return None
    folder, prov, status = best
    meas = pd.read_csv(folder / rf.MEASUREMENTS)
    first, rest = meas.iloc[0], meas.iloc[1:]
    with_official = rest["official_lambda"].notna()
    official = float(rest.loc[with_official, "measure_seconds"].median()) if with_official.any() else math.nan
    plain = float(rest.loc[~with_official, "measure_seconds"].median())
    if not math.isfinite(official):
        official = plain
    first_is_official = bool(pd.notna(first["official_lambda"]))
    startup = _log_startup(results / "paper" / "gpu_session.log", folder.name)
    return Costs(
        source=_rel(folder, results.parent),
        device=prov.get("device_name", "?"),
        steps_done=int(status["steps_done"]),
        wall_seconds=float(prov["timings"]["wall_seconds"]),
        step_s=float(prov["timings"]["seconds_per_step_excluding_measurements"]),
        check_s=plain,
        official_check_s=official,
        first_check_extra_s=max(float(first["measure_seconds"]) - (official if first_is_official else plain), 0.0),
        startup_s=startup if startup is not None else 0.0,
    )


def stored_tf32_speedup(results: Path, device: str) -> tuple[float, str]:
    """The TF32 speedup of a SAM step stored for ``device`` by the sharpness benchmark, and where it is from."""
    for path in sorted((results / "benchmark").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        speedup = data.get("mnist", {}).get("tf32", {}).get("speedup_tf32") if isinstance(data, dict) else None
        if data.get("device") == device and speedup:
            return float(speedup), _rel(path, results.parent)
    return 1.0, f"no TF32 figure stored for {device}: TF32 runs are costed as strict float32"


def stored_benchmark_seconds(results: Path, preset: str, device: str) -> tuple[float, str]:
    """How long the stored sharpness benchmark of ``preset`` on ``device`` took (0 when none is stored)."""
    for path in sorted((results / "benchmark").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("preset") == preset and data.get("device") == device:
            if data.get("elapsed_s"):
                return float(data["elapsed_s"]), _rel(path, results.parent)
    return 0.0, f"none of preset {preset} is stored for {device}"


def contact_step(costs_run: Path, eta: float, rho: float) -> tuple[float, str]:
    """When lambda_1 meets the SAM-edge of radius ``rho`` on the stored run's trajectory, and how that was found.

    The stored MNIST run (rho = 0.1) is the only paper-scale trajectory there is, so it stands in for the other
    radii: its lambda_1 and ||g|| give ``lambda_1 / SAMedge(||g||, eta, rho)`` at every check. The first check at
    or above :data:`CONTACT_RATIO` is the contact; before any, a straight line through the last third of the
    checks is extrapolated to it (an early guess: the ratio rises ever more slowly, so contact comes later).
    """
    meas = pd.read_csv(costs_run / rf.MEASUREMENTS)
    ratio = meas["lambda_1"] / sam_edge(grad_norm=meas["grad_norm"].to_numpy(), eta=eta, rho=rho)
    hit = meas.loc[ratio >= CONTACT_RATIO, "step"]
    if len(hit):
        return float(hit.iloc[0]), f"measured at step {int(hit.iloc[0])}"
    tail = meas["step"] >= meas["step"].max() * 2 / 3
    slope, icept = np.polyfit(meas.loc[tail, "step"], ratio[tail], 1)
    if slope <= 0:
        return math.inf, "the ratio does not rise on the stored run: no estimate"
    at = (CONTACT_RATIO - icept) / slope
    return float(at), (
        f"ratio {ratio.iloc[-1]:.3f} at step {int(meas['step'].iloc[-1])}, rising {1e3 * slope:.4f} per 1,000 steps "
        f"over the last third: {CONTACT_RATIO} at step {at:.0f}"
    )


def round_up(steps: float, multiple: int = STEP_ROUNDING) -> int:
    """``steps`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(steps / multiple) * multiple)


# ---------------------------------------------------------------------------------------------- the runs
@dataclasses.dataclass
class PlannedRun:
    """One run of the plan: its configuration, its costs and why its target is what it is."""

    stage: str
    label: str
    cfg: RunConfig
    costs: Costs
    why_target: str
    start: int = 0


def planned_runs(preset: str, results: Path, mnist: Costs | None, cifar: Costs | None, speedup: float) -> list:
    """The runs of stages 1 and 4 at ``preset``, in order (a run whose costs are unknown is left out, with why)."""
    runs: list[PlannedRun | str] = []
    base = dict(measure_every=100, official_every=5, k=2)
    if preset == "smoke":  # the plan's machinery at the smallest size: a few steps and checks, both estimators
        base = dict(measure_every=10, official_every=2, k=2)
    mnist_steps = {"smoke": 20}
    cifar_steps = {"smoke": 10}
    if mnist is None:
        runs.append("mnist: no stored paper-scale GPU run of MNIST SAM to take the costs from")
    else:
        folder = results.parent / mnist.source
        eta = preset_config("mnist", preset).eta
        for stage, rho, tf32 in (("mnist-edge", 0.1, False), ("extra", 0.03, True), ("extra", 0.3, True)):
            if preset in mnist_steps:
                steps, why = mnist_steps[preset], f"the {preset} plan's size"
            else:
                at, how = contact_step(folder, eta, rho)
                floor = MIN_EDGE_STEPS if stage == "mnist-edge" else 0
                cap = preset_config("mnist", preset).steps
                steps = min(max(round_up(at + ON_EDGE_STEPS) if math.isfinite(at) else cap, floor), cap)
                why = f"contact {how}; +{ON_EDGE_STEPS} on the edge" + (f", at least {floor}" if floor else "")
                why += f", at most {cap}" if steps == cap else ""
            cfg = preset_config("mnist", preset, rho=rho, steps=steps, tf32=tf32, **base)
            if preset == "paper":
                cfg = cfg.replace(device="auto")
            costs = dataclasses.replace(mnist, speedup=speedup) if tf32 else mnist
            label = f"MNIST SAM rho {rho:g} {'TF32' if tf32 else 'strict float32'}"
            runs.append(PlannedRun(stage, label, cfg, costs, why))
    if cifar is None:
        runs.append("cifar10: no stored paper-scale GPU run of CIFAR-10 SAM to take the costs from")
    else:
        steps = cifar_steps.get(preset, 3000)
        overrides = dict(base, official_every=0) if preset == "smoke" else base
        cfg = preset_config("cifar10", preset, rho=0.1, steps=steps, **overrides)
        why = f"the {preset} plan's size" if preset in cifar_steps else "the stored CIFAR-10 run's 3,000 steps"
        runs.append(PlannedRun("extra", "CIFAR-10 SAM rho 0.1 strict float32", cfg, cifar, why))
    return runs


def same_but_steps(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configurations differ in their step count at most."""
    return a.replace(steps=b.steps).identity() == b.identity()


def folder_state(folder: Path) -> dict[str, Any]:
    """What a run folder holds: its status, whether it can be continued, and its steps done."""
    out: dict[str, Any] = {"exists": (folder / rf.CONFIG).exists(), "checkpoint": (folder / rf.CHECKPOINT).exists()}
    try:
        status = rf.read_status(folder)
    except rf.RunFolderError:
        status = {}
    out.update(state=status.get("state"), steps_done=int(status.get("steps_done") or 0))
    return out


def settle(pr: PlannedRun, root: Path, results: Path, say: Callable[[str], None], dry: bool = False) -> None:
    """Fix ``pr``'s target and the step it starts at (``pr.start``); copy a stored folder into ``root`` to go on from.

    Folders of the same configuration but for the step count are looked for in ``root`` and ``<results>/paper``.
    One that can be continued (it holds a checkpoint), finished or diverged sets the target: a run begun keeps its
    step count, and a complete one is not recomputed because a later estimate moved the target. The folder of the
    target configuration is then copied into ``root`` when it can be continued or is complete, so the engine
    resumes or loads it. ``dry``: decide, copy nothing.
    """
    candidates = []
    for where in (root, results / "paper"):
        for folder in sorted(where.glob(f"{pr.cfg.task}-*")) if where.exists() else []:
            try:
                cfg = rf.read_config(folder)
            except rf.RunFolderError:
                continue
            if same_but_steps(cfg, pr.cfg):
                candidates.append((folder, cfg, folder_state(folder)))
    for folder, cfg, st in candidates:
        resumable = st["checkpoint"] and st["state"] not in rf.TERMINAL_STATES
        if cfg.steps != pr.cfg.steps and (resumable or st["state"] in rf.TERMINAL_STATES):
            say(f"  {pr.label}: {_rel(folder, REPO)} was begun with {cfg.steps} steps; it keeps that target")
            pr.cfg = pr.cfg.replace(steps=cfg.steps)
            break
    dest = rf.run_path(pr.cfg, root)
    here = folder_state(dest)
    pr.start = _start_step(here, pr.cfg.steps)
    for folder, cfg, st in candidates:
        usable = st["checkpoint"] or st["state"] in rf.TERMINAL_STATES
        if folder == dest or (cfg.identity() == pr.cfg.identity() and (here["checkpoint"] or pr.start)):
            continue  # the root's own copy goes on
        if cfg.identity() == pr.cfg.identity() and usable and not folder_state(dest)["exists"]:
            if not dry:
                shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(rf.LOCK, "*.tmp"))
            say(f"  {pr.label}: {_rel(folder, REPO)} ({st['state']}, {st['steps_done']} steps) goes on in the root")
            pr.start = _start_step(st, pr.cfg.steps)
        elif not usable:
            say(
                f"  {pr.label}: {_rel(folder, REPO)} ({st['state']} at step {st['steps_done']} of {cfg.steps}) holds "
                "no checkpoint, so it cannot be continued"
            )


def _start_step(st: dict[str, Any], steps: int) -> int:
    """The step a run starts at from a folder in state ``st``: the end when complete, its checkpoint's, or 0."""
    if st["state"] in rf.TERMINAL_STATES:
        return steps
    return st["steps_done"] if st["checkpoint"] else 0


# ---------------------------------------------------------------------------------------------- packing
def _tar_bytes(members: Iterable[tuple[Path, str]], gzip: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for path, arcname in members:
            tar.add(path, arcname=arcname)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def run_members(folder: Path, checkpoint: bool = False) -> list[tuple[Path, str]]:
    """A run folder's files for an archive (``runs/<name>/<file>``); the checkpoint only when asked."""
    keep = (rf.CONFIG, rf.PROVENANCE, rf.STATUS, rf.MEASUREMENTS, rf.STEPS) + ((rf.CHECKPOINT,) if checkpoint else ())
    return [(folder / f, f"runs/{folder.name}/{f}") for f in keep if (folder / f).exists()]


class Session:
    """The session record (``OUT/session.json``), the log, the clock and the output folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.lines: list[str] = []
        stages = {name: {"runs": {}} for name in args.stages}
        self.record: dict[str, Any] = {
            "schema": SCHEMA,
            "preset": args.preset,
            "budget_s": args.budget,
            "stages": stages,
        }
        self.stage_files: dict[str, list[tuple[Path, str]]] = {}

    def elapsed(self) -> float:
        """Seconds since this script started."""
        return time.perf_counter() - T0

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.args.budget - self.elapsed()

    def say(self, line: str) -> None:
        """Print ``line`` and keep it for the record."""
        print(line, flush=True)
        self.lines.append(line)

    def stage(self, name: str) -> dict[str, Any]:
        """The record of stage ``name``."""
        return self.record["stages"].setdefault(name, {"runs": {}})

    def pack(self, name: str, resume: list[Path]) -> None:
        """Write stage ``name``'s archive, the checkpoint parts of the first unfinished run, and the record."""
        members = self.stage_files.get(name, [])
        if members:
            archive = ARCHIVES[name]
            _write(self.out / archive, _tar_bytes(members, gzip=True))
            self.stage(name)["archive"] = archive
            self.stage(name)["packed_at_s"] = round(self.elapsed(), 1)
            self.say(f"  packed {archive} ({len(members)} files) at {self.elapsed():.0f} s")
        self.pack_resume(resume)
        self.write_record()

    def pack_resume(self, unfinished: list[Path]) -> None:
        """The first unfinished run folder (with its checkpoint) in as many parts as the free file slots allow."""
        for old in self.out.glob(f"{RESUME}.*"):
            old.unlink()
        self.record.pop("resume", None)
        free = MAX_FILES - 1 - len([a for a in ARCHIVES.values() if (self.out / a).exists()])
        for folder in unfinished:
            if not (folder / rf.CHECKPOINT).exists():
                continue
            data = _tar_bytes(run_members(folder, checkpoint=True), gzip=False)
            parts = math.ceil(len(data) / MAX_FILE_BYTES)
            if parts > free:
                self.say(
                    f"  {folder.name}: its checkpoint needs {parts} files of 16 MiB, {free} are free: not returned"
                )
                continue
            for i in range(parts):
                _write(self.out / f"{RESUME}.{i:02d}", data[i * MAX_FILE_BYTES : (i + 1) * MAX_FILE_BYTES])
            self.record["resume"] = {
                "run": folder.name,
                "parts": parts,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            self.say(
                f"  {folder.name}: folder and checkpoint in {parts} part(s) {RESUME}.NN ({len(data) / 2**20:.1f} MiB)"
            )
            return

    def write_record(self) -> None:
        """Write ``session.json`` (atomically)."""
        self.record["elapsed_s"] = round(self.elapsed(), 1)
        self.record["log"] = self.lines
        _write(self.out / SESSION, json.dumps(self.record, indent=1, default=float).encode())


# ---------------------------------------------------------------------------------------------- environment
def versions() -> dict[str, Any]:
    """The installed versions this session uses (JAX and its GPU plugins read from their metadata, not imported)."""
    out: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda}
    jax_dists = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt")
    for dist in ("numpy", *jax_dists):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            if dist in ("jax", "jaxlib"):
                out[dist] = None
    return out


def code_digest() -> str:
    """sha256 over this checkout's library, benchmark and tool sources (which code ran, without git)."""
    h = hashlib.sha256()
    for path in sorted([*REPO.glob("samedge_lib/**/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("tools/*.py")]):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def load_script(name: str) -> Any:
    """A benchmark script as a module (for its presets and schema)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- the stages
class Plan:
    """Everything a session runs, costed before it starts."""

    def __init__(self, args: argparse.Namespace, session: Session, device: torch.device, start_s: float) -> None:
        self.args, self.session, self.device = args, session, device
        self.say = session.say
        self.results: Path = args.results
        self.root: Path = args.root
        self.tag = provenance.machine_tag(device)
        self.start_s = start_s  # what starting a Python process with torch and the card cost here
        self.mnist = stored_costs(self.results, "mnist")
        self.cifar = stored_costs(self.results, "cifar10")
        self.speedup, self.speedup_source = (1.0, "")
        if self.mnist is not None:
            self.speedup, self.speedup_source = stored_tf32_speedup(self.results, self.mnist.device)
        self.runs = planned_runs(args.preset, self.results, self.mnist, self.cifar, self.speedup)
        self.speed = load_script("sam_speed")
        self.bench = load_script("sharpness_benchmark")
        self.state_dir = self.root / "benchmarks"

    # -- figures ---------------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """Every number the plan rests on, with where it is from."""
        out: dict[str, Any] = {"process_start_s": round(self.start_s, 2)}
        for name, c in (("mnist", self.mnist), ("cifar10", self.cifar)):
            if c is not None:
                out[name] = dataclasses.asdict(c) | {"steps_per_s_with_checks": c.steps_per_s_with_checks}
        out["tf32_speedup"] = {"value": self.speedup, "source": self.speedup_source}
        return out

    @staticmethod
    def guard(pr: PlannedRun, left: float) -> float:
        """A call's ``max_seconds`` with ``left`` seconds left: less its start-up, packing and one check's overrun."""
        return left - pr.costs.startup_s - PACK_RESERVE_S - pr.costs.official_check_s / pr.costs.speedup

    def run_seconds(self, pr: PlannedRun, start: int, left: float = math.inf) -> tuple[int, float]:
        """Expected ``(finish step, call seconds)`` of ``pr`` from ``start`` with ``left`` seconds left."""
        if start >= pr.cfg.steps:
            return pr.cfg.steps, 0.0
        step, t = pr.costs.simulate(pr.cfg, start, max(self.guard(pr, left), 0.0), self.args.stop_after)
        return step, pr.costs.startup_s + t + PACK_RESERVE_S

    def run_minimum(self, pr: PlannedRun, start: int) -> float:
        """Seconds a call of ``pr`` needs to get from ``start`` to its next check (and pack)."""
        nxt = min((start // pr.cfg.measure_every + 1) * pr.cfg.measure_every, pr.cfg.steps)
        _, t = pr.costs.simulate(pr.cfg.replace(steps=max(nxt, 1)), start)
        return pr.costs.startup_s + t + PACK_RESERVE_S + pr.costs.official_check_s / pr.costs.speedup

    def speed_seconds(self, mode: str) -> float:
        """Expected seconds of one ``sam_speed.py`` mode: both sides, each in its own process (figures: MNIST)."""
        p = self.speed.PRESETS[self.args.preset]
        c = self.mnist if mode == "strict" else dataclasses.replace(self.mnist, speedup=self.speedup)
        verify = 3
        torch_steps = verify + p["warmup"] + p["steps"]
        jax_steps = verify + 2 * p["warmup"] + p["check_every"] + p["steps"]
        checks = p["steps"] // p["check_every"] + 1
        work = (torch_steps + jax_steps) * c.step_s + checks * (c.check_s + c.official_check_s) + c.official_check_s
        return 2 * (self.start_s + c.startup_s + c.first_check_extra_s) + work / c.speedup + PACK_RESERVE_S

    # -- the plan, printed -----------------------------------------------------------------------------
    def show(self) -> None:
        """Print the plan: the costs it rests on and, stage by stage, what is expected in the time left."""
        self.say(f"plan: budget {self.args.budget:.0f} s from this script's start, preset {self.args.preset}")
        self.say(f"  starting Python with torch and the device took {self.start_s:.1f} s here")
        for c in (self.mnist, self.cifar):
            if c is not None:
                self.say(f"  costs: {c.describe()}")
        self.say(f"  TF32: SAM step speedup {self.speedup:.2f} ({self.speedup_source})")
        here = provenance.device_description(self.device)
        if self.mnist is not None and self.mnist.device != here:
            self.say(
                f"  the costs were measured on {self.mnist.device}, this is {here}: expected steps assume its speed"
            )
        for pr in self.runs:
            if isinstance(pr, str):
                self.say(f"  left out: {pr}")
        clock = self.session.elapsed()
        for stage in self.args.stages:
            n = STAGES.index(stage) + 1
            if stage == "sam-speed":
                for mode in ("strict", "tf32") if self.mnist is not None else ():
                    need = self.speed_seconds(mode)
                    if self.speed_done(mode) is not None:
                        self.say(f"  {n} sam-speed {mode}: measured earlier on this card")
                    elif clock + need <= self.args.budget:
                        self.say(f"  {n} sam-speed {mode}: expected {need:.0f} s")
                        clock += need
                    else:
                        self.say(
                            f"  {n} sam-speed {mode}: expected {need:.0f} s; skipped "
                            f"({self.args.budget - clock:.0f} s left)"
                        )
            elif stage == "sharpness":
                bound, least = self.sharpness_bound(self.args.budget - clock), self.sharpness_least()[0]
                if self.sharpness_done(bound) is not None:
                    self.say(f"  {n} sharpness: measured earlier on this card with as much time")
                elif bound >= max(least, 1.0):
                    self.say(f"  {n} sharpness: bounded to {bound:.0f} s (the stored run took {least:.0f} s)")
                    clock += bound + self.start_s
                else:
                    self.say(
                        f"  {n} sharpness: skipped ({max(bound, 0):.0f} s for it, the stored run took {least:.0f} s)"
                    )
            for pr in self.runs:
                if isinstance(pr, str) or pr.stage != stage:
                    continue
                left = self.args.budget - clock
                full = self.run_seconds(pr, pr.start)[1]
                head = (
                    f"  {n} {stage} {pr.label} ({pr.cfg.run_name()}): steps {pr.start} -> {pr.cfg.steps} "
                    f"({pr.why_target}); all of it needs {full:.0f} s"
                )
                if pr.start < pr.cfg.steps and left < self.run_minimum(pr, pr.start):
                    finish, secs = pr.start, 0.0
                    self.say(f"{head}; skipped ({left:.0f} s left): expected finish step {finish}")
                else:
                    finish, secs = self.run_seconds(pr, pr.start, left)
                    self.say(f"{head}; expected finish step {finish} in {secs:.0f} s")
                self.session.stage(stage)["runs"].setdefault(pr.cfg.run_name(), {}).update(
                    planned_start=pr.start,
                    target=pr.cfg.steps,
                    planned_left_s=left,
                    planned_finish=finish,
                    planned_seconds=round(secs, 1),
                    planned_full_seconds=round(full, 1),
                )
                clock += secs
        self.say(f"  expected end at {clock:.0f} s of {self.args.budget:.0f} s")

    def start_of(self, pr: PlannedRun) -> int:
        """The step ``pr`` starts at now, from its folder in the root."""
        return _start_step(folder_state(rf.run_path(pr.cfg, self.root)), pr.cfg.steps)

    def settle_all(self, dry: bool) -> None:
        """Fix every run's target and start before anything is costed (copies stored folders in unless ``dry``)."""
        if not dry:
            self.root.mkdir(parents=True, exist_ok=True)
        for pr in self.runs:
            if not isinstance(pr, str) and pr.stage in self.args.stages:
                settle(pr, self.root, self.results, self.say, dry=dry)

    def unfinished(self) -> list[Path]:
        """Run folders in the root that can still be continued, in plan order."""
        out = []
        for pr in self.runs:
            if isinstance(pr, str):
                continue
            folder = rf.run_path(pr.cfg, self.root)
            st = folder_state(folder)
            if st["checkpoint"] and st["state"] not in rf.TERMINAL_STATES:
                out.append(folder)
        return out

    # -- runs ----------------------------------------------------------------------------------------------
    def do_run(self, pr: PlannedRun) -> None:
        """Run (resume, or load) ``pr`` in the time left, or skip it with the reason; record both sides."""
        stage = self.session.stage(pr.stage)
        name = pr.cfg.run_name()
        entry = stage["runs"].setdefault(name, {})
        folder = rf.run_path(pr.cfg, self.root)
        start = self.start_of(pr)
        left = self.session.left()
        if start >= pr.cfg.steps:
            self.say(f"{pr.stage}: {pr.label}: already complete ({name}); loaded, nothing computed")
            res = run(pr.cfg, root=self.root, data_dir=self.args.data_dir, progress=False)
            entry.update(state=res.status.get("state"), finish=res.status.get("steps_done"), computed=False)
            self.session.stage_files.setdefault(pr.stage, []).extend(run_members(folder))
            return
        need = self.run_minimum(pr, start)
        if left < need:
            reason = f"{left:.0f} s left, it needs {need:.0f} s to reach its next check and pack"
            self.say(f"{pr.stage}: {pr.label}: skipped: {reason}")
            entry.update(state="skipped", reason=reason, start=start)
            if folder_state(folder)["exists"]:
                self.session.stage_files.setdefault(pr.stage, []).extend(run_members(folder))
            return
        finish, secs = self.run_seconds(pr, start, left)
        guard = self.guard(pr, left)
        self.say(
            f"{pr.stage}: {pr.label} ({name}): steps {start} -> {pr.cfg.steps}, --max-seconds {guard:.0f}; "
            f"expected finish step {finish} in {secs:.0f} s ({left:.0f} s left)"
        )
        entry.update(start=start, expected_finish=finish, expected_seconds=round(secs, 1), max_seconds=round(guard, 1))
        before = folder_state(folder)
        loop_before = self._loop_seconds(folder) if before["checkpoint"] else 0.0
        t = time.perf_counter()
        try:
            res = run(
                pr.cfg,
                root=self.root,
                data_dir=self.args.data_dir,
                progress=False,
                max_seconds=guard,
                stop_after=self.args.stop_after,
            )
        except Exception as err:  # a run that cannot go on is recorded; the other stages still run
            self.say(f"  failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            entry.update(state="failed", reason=f"{type(err).__name__}: {err}")
        else:
            call = time.perf_counter() - t
            loop = self._loop_seconds(folder) - loop_before
            done = int(res.status.get("steps_done") or 0)
            summary = summarize(res) | {
                "this_call": {"from_step": start, "to_step": done, "call_seconds": call, "loop_seconds": loop},
                "call_seconds": call,
                "loop_seconds": loop,
            }
            self.say(f"[{call:6.1f} s] {name}: {json.dumps(summary, default=float)}")
            rate = (done - start) / loop if loop > 0 else math.nan
            self.say(
                f"  measured: finish step {done} (expected {finish}), {call:.0f} s (expected {secs:.0f} s), "
                f"{rate:.2f} steps/s with checks this call, state {res.status.get('state')}"
            )
            entry.update(
                state=res.status.get("state"),
                finish=done,
                seconds=round(call, 1),
                steps_per_s_with_checks=rate,
                computed=True,
            )
        if folder_state(folder)["exists"]:
            self.session.stage_files.setdefault(pr.stage, []).extend(run_members(folder))

    @staticmethod
    def _loop_seconds(folder: Path) -> float:
        try:
            return float(json.loads((folder / rf.PROVENANCE).read_text())["timings"]["wall_seconds"])
        except (OSError, ValueError, KeyError):
            return 0.0

    # -- benchmarks -----------------------------------------------------------------------------------------
    def _subprocess(self, cmd: list[str], timeout: float, log: Path) -> tuple[int | str, float]:
        """Run ``cmd`` with its output in ``log`` (and echoed); return its exit code (or why none) and seconds."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # what this process cached for its runs is the benchmark's to use
        t = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code: int | str = proc.wait(timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired:
                code = f"stopped after {timeout:.0f} s"
            finally:  # a timeout, or this script interrupted: the benchmark and its children go too
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for line in log.read_text().splitlines()[-12:]:
            self.say(f"    | {line}")
        return code, time.perf_counter() - t

    def speed_done(self, mode: str) -> dict | None:
        """A stored result of ``mode`` on this card at this preset, if there is one (the root first, then results)."""
        stored = self.results / "benchmark" / f"sam-speed-{self.tag}.json"
        for path in (self.state_dir / f"sam-speed-{mode}.json", stored):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            entry = data.get("modes", {}).get(mode)
            if data.get("preset") == self.args.preset and data.get("machine_tag") == self.tag and entry:
                if "steps_per_s_with_checks" in entry.get("torch", {}):
                    return data
        return None

    def do_speed(self) -> None:
        """``sam_speed.py`` once per precision mode that is not measured yet and fits; merge what there is."""
        stage = self.session.stage("sam-speed")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        found = {k: self.versions.get(k) for k in ("torch", "jax", "jaxlib")}
        self.say(f"sam-speed: installed versions: {found} (nothing is fetched)")
        parts, measured = {}, False
        for mode in ("strict", "tf32"):
            done = self.speed_done(mode)
            if done is not None:
                self.say(f"sam-speed {mode}: already measured on this card at this preset; not run again")
                stage["runs"][mode] = {"state": "done earlier"}
                parts[mode] = done
                continue
            need, left = self.speed_seconds(mode), self.session.left()
            if left < need:
                reason = f"{left:.0f} s left, it is expected to need {need:.0f} s"
                self.say(f"sam-speed {mode}: skipped: {reason}")
                stage["runs"][mode] = {"state": "skipped", "reason": reason}
                continue
            path = self.state_dir / f"sam-speed-{mode}.json"
            timeout = left - PACK_RESERVE_S
            self.say(f"sam-speed {mode}: expected {need:.0f} s, stopped after {timeout:.0f} s ({left:.0f} s left)")
            cmd = [sys.executable, str(REPO / "benchmarks" / "sam_speed.py"), "--preset", self.args.preset]
            cmd += ["--precision", mode, "--out", str(path), "--timeout", f"{timeout:.0f}"]
            cmd += ["--data-dir", str(self.args.data_dir)] if self.args.data_dir else []
            log = self.state_dir / f"sam-speed-{self.tag}-{mode}.log"
            code, secs = self._subprocess(cmd, timeout, log)
            stage["runs"][mode] = {"state": "done" if code == 0 else "failed", "exit": code, "seconds": round(secs, 1)}
            stage["runs"][mode]["expected_seconds"] = round(need, 1)
            self.say(f"  measured: {secs:.0f} s (expected {need:.0f} s), exit {code}")
            if code == 0 and path.exists():
                parts[mode], measured = json.loads(path.read_text()), True
            files = self.session.stage_files.setdefault("sam-speed", [])
            files.append((log, f"logs/{log.name}"))
        if measured:  # what was only found stored is not packed again
            merged = self.merge_speed(parts, now=[m for m, r in stage["runs"].items() if r.get("state") == "done"])
            path = self.state_dir / f"sam-speed-{self.tag}.json"
            path.write_text(json.dumps(merged, indent=1, default=float))
            self.session.stage_files.setdefault("sam-speed", []).append((path, f"benchmark/{path.name}"))

    def merge_speed(self, parts: dict[str, dict], now: list[str]) -> dict:
        """One ``sam_speed.py`` file of every mode there is; a mode measured earlier keeps its own provenance."""
        first = next(iter(parts.values()))
        merged = {k: v for k, v in first.items() if k not in ("modes", "summary_lines", "provenance")}
        merged["modes"], merged["summary_lines"] = {}, []
        for mode in ("strict", "tf32"):
            if mode in parts:
                merged["modes"][mode] = dict(parts[mode]["modes"][mode])
                if mode not in now and parts[mode].get("provenance"):
                    merged["modes"][mode].setdefault("provenance", parts[mode]["provenance"])
                merged["summary_lines"] += [s for s in parts[mode].get("summary_lines", []) if s.startswith(mode)]
        merged["provenance"] = self.provenance()
        merged["measured_now"] = now
        return merged

    def provenance(self) -> dict:
        """The provenance of this session (JAX versions added, the given commit when git is absent)."""
        prov = provenance.collect_provenance(self.device, torch.float32)
        prov["versions"] = dict(prov["versions"], **{k: v for k, v in self.versions.items() if k.startswith("jax")})
        if prov["git"]["commit"] is None and self.args.source_commit:
            prov["git"] = {"commit": self.args.source_commit, "dirty": None, "from": "--source-commit"}
        prov["code_sha256"] = self.session.record.get("code_sha256")
        return prov

    def sharpness_cap(self) -> float:
        """The benchmark preset's own time guard, or ``--sharpness-max-seconds`` when lower."""
        cap = self.bench.PRESETS[self.args.preset]["max_seconds"]
        return min(cap, self.args.sharpness_max_seconds) if self.args.sharpness_max_seconds else cap

    def sharpness_bound(self, left: float) -> float:
        """The benchmark's ``--max-seconds`` with ``left`` seconds left (a sixth kept for its last section)."""
        return min(self.sharpness_cap(), (left - self.start_s - PACK_RESERVE_S) / 1.2)

    def sharpness_least(self) -> tuple[float, str]:
        """What the stored benchmark of this preset took on the costs' card: less time is not worth starting."""
        return stored_benchmark_seconds(self.results, self.args.preset, self.mnist.device if self.mnist else "")

    def sharpness_done(self, bound: float) -> Path | None:
        """A stored benchmark of this card, preset and schema that ran every section or had ``bound`` seconds."""
        for path in (self.state_dir / f"{self.tag}.json", self.results / "benchmark" / f"{self.tag}.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("schema") == self.bench.SCHEMA and data.get("preset") == self.args.preset:
                if not data.get("skipped") or data.get("settings", {}).get("max_seconds", 0) >= bound:
                    return path
        return None

    def do_sharpness(self) -> None:
        """The sharpness benchmark bounded by the time left, unless it ran already with as much time or won't fit."""
        stage = self.session.stage("sharpness")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{self.tag}.json"
        least, source = self.sharpness_least()
        left = self.session.left()
        bound = self.sharpness_bound(left)
        old = self.sharpness_done(bound)
        if old is not None:
            data = json.loads(old.read_text())
            held = data.get("settings", {}).get("max_seconds", 0)
            every = "every section" if not data.get("skipped") else f"sections skipped: {sorted(data['skipped'])}"
            self.say(f"sharpness: {_rel(old, REPO)} ran with {held:.0f} s ({every}); not run again ({bound:.0f} s now)")
            stage["runs"]["benchmark"] = {"state": "done earlier"}
            if old == path:
                self.session.stage_files.setdefault("sharpness", []).append((path, f"benchmark/{path.name}"))
            return
        if bound < max(least, 1.0):
            reason = f"{left:.0f} s left: {max(bound, 0):.0f} s for it, the stored run took {least:.0f} s ({source})"
            reason += "" if least else ", and less than 1 s is not worth starting"
            self.say(f"sharpness: skipped: {reason}")
            stage["runs"]["benchmark"] = {"state": "skipped", "reason": reason}
            return
        took = f"the stored run took {least:.0f} s: {source}" if least else source
        self.say(f"sharpness: --max-seconds {bound:.0f} ({left:.0f} s left; {took})")
        cmd = [sys.executable, str(REPO / "benchmarks" / "sharpness_benchmark.py"), "--preset", self.args.preset]
        cmd += ["--device", "auto", "--max-seconds", f"{bound:.1f}", "--out", str(path)]
        cmd += ["--data-dir", str(self.args.data_dir)] if self.args.data_dir else []
        cmd += ["--threads", str(torch.get_num_threads())] if self.device.type == "cpu" else []
        log = self.state_dir / f"{self.tag}.log"
        code, secs = self._subprocess(cmd, left - PACK_RESERVE_S, log)
        stage["runs"]["benchmark"] = {
            "state": "done" if code == 0 else "failed",
            "exit": code,
            "seconds": round(secs, 1),
        }
        self.say(f"  measured: {secs:.0f} s (bounded to {bound:.0f} s), exit {code}")
        files = self.session.stage_files.setdefault("sharpness", [])
        files.append((log, f"logs/{log.name}"))
        if code == 0 and path.exists():
            files.append((path, f"benchmark/{path.name}"))

    # -- the session ------------------------------------------------------------------------------------
    def execute(self) -> None:
        """Every chosen stage in order, packing after each (and after every run of ``extra``)."""
        for stage in STAGES:
            if stage not in self.args.stages:
                continue
            self.say(f"--- stage {STAGES.index(stage) + 1} {stage}: {self.session.left():.0f} s left")
            if stage == "sam-speed":
                if self.mnist is None:
                    self.say("sam-speed: skipped: no stored MNIST costs to plan it from")
                else:
                    self.do_speed()
            elif stage == "sharpness":
                self.do_sharpness()
            else:
                for pr in self.runs:
                    if not isinstance(pr, str) and pr.stage == stage:
                        self.do_run(pr)
                        self.session.pack(stage, self.unfinished())  # after every run: they are long
                continue
            self.session.pack(stage, self.unfinished())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (stages by name or number)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder the session's files are packed into")
    ap.add_argument("--root", type=Path, default=REPO / "runs" / "gpu", help="run folders (default runs/gpu)")
    ap.add_argument("--results", type=Path, default=REPO / "results", help="stored results: costs, runs, benchmarks")
    ap.add_argument("--data-dir", type=Path, default=None, help="dataset folder (default $SAMEDGE_DATA)")
    ap.add_argument("--preset", choices=("paper", "smoke"), default="paper", help="smoke: the whole plan, tiny")
    ap.add_argument("--budget", type=float, default=570.0, help="seconds for everything from this script's start")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)} (or 1-4)")
    ap.add_argument("--sharpness-max-seconds", type=float, default=None, help="cap the sharpness benchmark's bound")
    ap.add_argument("--source-commit", default=None, help="the commit this tree is (recorded when git is absent)")
    ap.add_argument("--plan-only", action="store_true", help="print the plan and write session.json, run nothing")
    ap.add_argument("--stop-after", type=int, default=None, help="stop every run after this many steps (tests)")
    args = ap.parse_args(argv)
    chosen = []
    for item in filter(None, (s.strip() for s in args.stages.split(","))):
        name = STAGES[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(STAGES) else item
        if name not in STAGES:
            ap.error(f"unknown stage {item!r}; the stages are {', '.join(STAGES)}")
        chosen.append(name)
    args.stages = chosen
    if not args.budget > 0:
        ap.error(f"--budget must be > 0, got {args.budget}")
    return args


_CALLS = 0


def main(argv: list[str] | None = None) -> int:
    """Plan, print the plan, run the stages that fit, pack after each; 0 unless the session was interrupted.

    The budget of the first call counts from this script's start (its imports included); a later call in the same
    process (tests) counts from its own start.
    """
    global T0, _CALLS
    if _CALLS:
        T0 = time.perf_counter()
    _CALLS += 1
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.tmp"):
        stale.unlink()
    device = resolve_device("auto" if args.preset == "paper" else "cpu")
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the card's start-up belongs to the start figure
    start_s = time.perf_counter() - T0
    session = Session(args)
    session.record.update(
        started_utc=rf.now_utc(),
        device=provenance.device_description(device),
        versions=versions(),
        source_commit=args.source_commit or provenance.git_commit()["commit"],
        code_sha256=code_digest(),
    )
    plan = Plan(args, session, device, start_s)
    plan.versions = session.record["versions"]
    session.record["provenance"] = plan.provenance()
    session.say(f"device: {session.record['device']}; versions: {json.dumps(session.record['versions'])}")
    plan.settle_all(dry=args.plan_only)
    session.record["figures"] = plan.figures()
    plan.show()
    session.write_record()
    if args.plan_only:
        return 0

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        plan.execute()
    except KeyboardInterrupt:
        session.say(f"interrupted at {session.elapsed():.0f} s; packing what there is")
        for stage in STAGES:
            session.pack(stage, plan.unfinished())
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    session.say(f"done at {session.elapsed():.0f} s of {args.budget:.0f} s")
    session.write_record()
    return 0


if __name__ == "__main__":
    sys.exit(main())
