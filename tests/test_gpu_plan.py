"""The GPU session plan (``tools/gpu_paper_runs.py``) and its unpacking (``tools/gpu_unpack.py``), on the CPU.

The plan is run for real at the smoke preset (tiny runs and benchmarks, a temporary runs root, output folder
and copy of ``results/``), as one GPU machine would run it, several times in a row:

1. a first session whose runs stop after 6 steps (``--stop-after``): every stage runs and packs its archive;
2. its output is unpacked into a copy of ``results/`` and a fresh runs root, as back on the CPU;
3. a session on that fresh root (a new machine with the returned run folder carried): the unfinished run
   resumes from its returned checkpoint, the benchmarks stored in ``results/`` are not run again;
4. a session on the same root (the same machine, warm): every run is complete and only loaded;
5. a session with too little time: every stage is skipped, with the reason.

The paper-preset plan is only printed (``--plan-only``), and its expected finish steps are recomputed here
from the stored files with a separate (vectorised) reading of the same rules.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts import REPO, load_script

from samedge_lib.engine.data import CIFAR10_FILES
from samedge_lib.record.config import preset_config

plan_mod = load_script("tools/gpu_paper_runs.py")
unpack_mod = load_script("tools/gpu_unpack.py")
STORED_MNIST = REPO / "results" / "paper" / "mnist-sam-rho0.1-eta0.01-c3a8febd39"
SMOKE = ["--preset", "smoke", "--sharpness-max-seconds", "3"]


def call(main, argv: list) -> tuple[int, str]:
    """Run a script's ``main`` in this process; its exit code and what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([str(a) for a in argv])
    return code, buf.getvalue()


def members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, data_dir):
    """The five invocations of the module docstring, with their outputs."""
    import torch

    if not all((data_dir / CIFAR10_FILES[f].relpath).is_file() for f in ("data_batch_1", "test_batch", "batches.meta")):
        pytest.skip(f"no CIFAR-10 in {data_dir}")
    tmp = tmp_path_factory.mktemp("gpu_plan")
    results = tmp / "results"
    shutil.copytree(REPO / "results", results)
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the benchmarks' processes
    try:
        out = {}
        # The first call's budget counts from the script's start (its import); this module imported it at test
        # collection, which in a full test run is minutes before this fixture: the session starts now.
        plan_mod.T0 = time.perf_counter()
        base = ["--results", results, *SMOKE]
        out[1] = call(plan_mod.main, ["--out", tmp / "out1", "--root", tmp / "root1", *base, "--stop-after", 6])
        results2 = tmp / "results2"
        shutil.copytree(results, results2)
        argv = [tmp / "out1", "--results", results2, "--runs", tmp / "root2", "--any-preset"]
        out["unpack"] = call(unpack_mod.main, argv)
        out["returned"] = {p.parent.name: p.read_bytes() for p in (tmp / "root2").glob("*/checkpoint.pt")}
        base2 = ["--results", results2, *SMOKE]
        out[3] = call(plan_mod.main, ["--out", tmp / "out3", "--root", tmp / "root2", *base2])
        snapshot = {p: p.read_bytes() for p in (tmp / "root2").glob("*/steps.csv")}
        out[4] = call(plan_mod.main, ["--out", tmp / "out4", "--root", tmp / "root2", *base2])
        out[5] = call(plan_mod.main, ["--out", tmp / "out5", "--root", tmp / "root5", *base, "--budget", 4])
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env
    return tmp, out, snapshot


def record(folder: Path) -> dict:
    return json.loads((folder / "session.json").read_text())


def smoke_runs() -> dict[str, list[str]]:
    """Stage -> run names of the smoke plan."""
    names: dict[str, list[str]] = {}
    costs = [plan_mod.stored_costs(REPO / "results", task) for task in ("mnist", "cifar10")]
    for pr in plan_mod.planned_runs("smoke", REPO / "results", *costs, 4.0):
        names.setdefault(pr.stage, []).append(pr.cfg.run_name())
    return names


def cpu_tag() -> str:
    import torch

    return plan_mod.provenance.machine_tag(torch.device("cpu"))


def test_first_session_packs_every_stage_after_it_ran(sessions):
    tmp, out, _ = sessions
    code, text = out[1]
    assert code == 0, text
    folder, root = tmp / "out1", tmp / "root1"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [
        "1-mnist-edge.tgz",
        "2-sam-speed.tgz",
        "3-sharpness.tgz",
        "4-extra.tgz",
        "resume.tar.00",
        "session.json",
    ]
    assert all(p.stat().st_size <= 16 * 2**20 for p in folder.iterdir())
    runs = smoke_runs()
    edge = runs["mnist-edge"][0]
    assert members(folder / "1-mnist-edge.tgz") == {f"runs/{edge}/{f}" for f in unpack_mod.RUN_FILES}  # no checkpoint
    tag = cpu_tag()
    assert f"benchmark/sam-speed-{tag}.json" in members(folder / "2-sam-speed.tgz")
    assert f"benchmark/{tag}.json" in members(folder / "3-sharpness.tgz")
    assert {m.split("/")[1] for m in members(folder / "4-extra.tgz")} == set(runs["extra"])
    # written after each stage, not all at the end: each archive is older than what the next stage made
    mtime = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    first_extra = root / runs["extra"][0] / "status.json"
    assert mtime["1-mnist-edge.tgz"] <= (root / "benchmarks" / "sam-speed-strict.json").stat().st_mtime_ns
    assert (root / "benchmarks" / "sam-speed-tf32.json").stat().st_mtime_ns <= mtime["2-sam-speed.tgz"]
    assert (
        mtime["2-sam-speed.tgz"] <= (root / "benchmarks" / f"{tag}.json").stat().st_mtime_ns <= mtime["3-sharpness.tgz"]
    )
    assert mtime["3-sharpness.tgz"] <= first_extra.stat().st_mtime_ns <= mtime["4-extra.tgz"]
    rec = record(folder)
    packed = [rec["stages"][s]["packed_at_s"] for s in plan_mod.STAGES]
    assert packed == sorted(packed)
    # both precision modes, measured by this library, in one file with the session's provenance
    with tarfile.open(folder / "2-sam-speed.tgz") as tar:
        speed = json.load(tar.extractfile(f"benchmark/sam-speed-{tag}.json"))
    assert set(speed["modes"]) == {"strict", "tf32"}
    assert all(speed["modes"][m]["torch"]["steps_per_s_with_checks"] > 0 for m in ("strict", "tf32"))
    assert speed["provenance"]["versions"]["torch"] and "jax" in speed["provenance"]["versions"]
    # every run stopped after 6 steps, as expected, and left its checkpoint (the first one comes back)
    for name in [edge, *runs["extra"]]:
        assert re.search(rf"{re.escape(name)}\): steps 0 -> \d+, --max-seconds \d+; expected finish step 6 ", text)
        assert json.loads((root / name / "status.json").read_text())["steps_done"] == 6
    assert text.count("measured: finish step 6 (expected 6)") == 4
    assert rec["resume"]["run"] == edge and rec["resume"]["parts"] == 1


def test_unpacking_fills_results_with_provenance_and_the_checkpoint(sessions):
    tmp, out, _ = sessions
    code, text = out["unpack"]
    assert code == 0, text
    results2, runs = tmp / "results2", smoke_runs()
    for name in [*runs["mnist-edge"], *runs["extra"]]:
        folder = results2 / "paper" / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(unpack_mod.RUN_FILES)
        assert json.loads((folder / "provenance.json").read_text())["git"]["commit"]
    speed = json.loads((results2 / "benchmark" / f"sam-speed-{cpu_tag()}.json").read_text())
    assert speed["preset"] == "smoke" and speed["provenance"]["device"] == "cpu"
    log = (results2 / "paper" / "gpu_session.log").read_text()
    assert log.startswith((REPO / "results" / "paper" / "gpu_session.log").read_text())  # appended, old lines kept
    assert log.count("# GPU session ") == 1 and "expected finish step" in log
    edge = runs["mnist-edge"][0]
    assert out["returned"] == {edge: (tmp / "root1" / edge / "checkpoint.pt").read_bytes()}  # only the first
    # once only, and never a smoke session into the real results/ without saying so
    assert call(unpack_mod.main, [tmp / "out1", "--results", results2, "--runs", tmp / "root2", "--any-preset"])[0] == 0
    assert (results2 / "paper" / "gpu_session.log").read_text().count("# GPU session ") == 1
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert call(unpack_mod.main, [tmp / "out1", "--results", tmp / "nowhere"])[0] == 2
    assert "preset 'smoke'" in err.getvalue() and not (tmp / "nowhere").exists()


def test_unpacking_replaces_a_shorter_stored_run_of_the_same_configuration(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / "paper", results / "paper")
    longer = preset_config("mnist", "paper", rho=0.1, steps=10000, measure_every=100, official_every=5, k=2)
    out = tmp_path / "out"
    out.mkdir()
    files = {f: (STORED_MNIST / f).read_bytes() for f in unpack_mod.RUN_FILES}
    files["config.json"] = json.dumps(longer.to_dict()).encode()
    files["status.json"] = json.dumps({"state": "finished", "steps_done": 10000, "steps_total": 10000}).encode()
    with tarfile.open(out / "1-mnist-edge.tgz", "w:gz") as tar:
        for f, data in files.items():
            info = tarfile.TarInfo(f"runs/{longer.run_name()}/{f}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    session = {"schema": plan_mod.SCHEMA, "preset": "paper", "source_commit": "abc123", "log": ["a line"]}
    session["stages"] = {"mnist-edge": {"archive": "1-mnist-edge.tgz"}}
    (out / "session.json").write_text(json.dumps(session))
    code, text = call(unpack_mod.main, [out, "--results", results, "--runs", tmp_path / "runs"])
    assert code == 0, text
    assert not (results / "paper" / STORED_MNIST.name).exists() and "removed " + STORED_MNIST.name in text
    prov = json.loads((results / "paper" / longer.run_name() / "provenance.json").read_text())
    assert prov["git"] == {"commit": "abc123", "dirty": None, "from": unpack_mod.SOURCE_NOTE}  # the GPU had no git
    assert (results / "paper" / "mnist-gd-eta0.01-b990698b70").exists()  # other runs untouched


def test_second_session_resumes_and_does_not_redo_finished_work(sessions):
    tmp, out, snapshot = sessions
    code, text = out[3]
    assert code == 0, text
    runs, root = smoke_runs(), tmp / "root2"
    edge = runs["mnist-edge"][0]
    assert re.search(rf"{re.escape(edge)}\): steps 6 -> 20, ", text)  # from the returned checkpoint
    prov = json.loads((root / edge / "provenance.json").read_text())
    assert [(s["from_step"], s["to_step"]) for s in prov["sessions"]] == [(0, 6), (6, 20)]
    assert "sam-speed strict: already measured on this card at this preset; not run again" in text
    assert "sam-speed tf32: already measured" in text and re.search(r"sharpness: .* not run again", text)
    for name in runs["extra"]:  # their checkpoints did not come back: from step 0, with the reason
        assert re.search(rf"{re.escape(name)} \(interrupted at step 6 of \d+\) holds no checkpoint", text)
        assert json.loads((root / name / "status.json").read_text())["state"] == "finished"
    rec = record(tmp / "out3")
    assert rec["stages"]["mnist-edge"]["runs"][edge]["finish"] == 20 and "resume" not in rec
    # the runs are packed; the benchmarks, found stored, are not packed again
    assert sorted(p.name for p in (tmp / "out3").iterdir()) == ["1-mnist-edge.tgz", "4-extra.tgz", "session.json"]
    # the same machine again: nothing is computed, everything is packed again
    code, text = out[4]
    assert code == 0, text
    assert text.count("already complete") == 1 + len(runs["extra"]) and "measured:" not in text
    assert {p: p.read_bytes() for p in root.glob("*/steps.csv")} == snapshot
    assert len(json.loads((root / edge / "provenance.json").read_text())["sessions"]) == 2
    assert all(
        not r["computed"] for s in ("mnist-edge", "extra") for r in record(tmp / "out4")["stages"][s]["runs"].values()
    )


def test_a_stage_without_the_time_it_needs_is_skipped_with_the_reason(sessions):
    tmp, out, _ = sessions
    code, text = out[5]
    assert code == 0, text
    for name in [n for names in smoke_runs().values() for n in names]:
        assert re.search(rf"\({re.escape(name)}\).*skipped \(\d+ s left\)", text)  # in the printed plan
    assert len(re.findall(r": skipped: \d+ s left, it needs \d+ s to reach its next check and pack", text)) == 4
    assert re.search(r"sam-speed strict: skipped: \d+ s left, it is expected to need \d+ s", text)
    assert re.search(r"sharpness: skipped: ", text)
    rec = record(tmp / "out5")
    assert all(r["state"] == "skipped" and r["reason"] for s in rec["stages"].values() for r in s["runs"].values())
    assert not any(p.is_dir() for p in (tmp / "root5").glob("*-*"))  # nothing computed
    assert [p.name for p in (tmp / "out5").iterdir()] == ["session.json"]


# ------------------------------------------------------------------------------------ the paper-scale plan
def stored_figures() -> dict:
    """The costs read independently of the plan: provenance, the checks' median seconds, the session log."""
    prov = json.loads((STORED_MNIST / "provenance.json").read_text())
    meas = pd.read_csv(STORED_MNIST / "measurements.csv")
    rest = meas.iloc[1:]
    official = rest[rest["official_lambda"].notna()]["measure_seconds"].median()
    plain = rest[rest["official_lambda"].isna()]["measure_seconds"].median()
    line = next(x for x in (REPO / "results/paper/gpu_session.log").read_text().splitlines() if STORED_MNIST.name in x)
    call_s = float(re.match(r"\[\s*([\d.]+) s\]", line).group(1))
    return dict(
        step=prov["timings"]["seconds_per_step_excluding_measurements"],
        plain=plain,
        official=official,
        first=meas["measure_seconds"].iloc[0] - official,  # the first check ran the official estimator too
        startup=call_s - prov["timings"]["wall_seconds"],
        rate=json.loads((STORED_MNIST / "status.json").read_text())["steps_done"] / prov["timings"]["wall_seconds"],
    )


def finish_step(f: dict, steps: int, loop_budget: float) -> int:
    """Where a run from step 0 stops: the first boundary (after a check or an update) at ``loop_budget`` seconds."""
    s = np.arange(steps + 1)
    check = np.where(s % 100 == 0, np.where((s // 100) % 5 == 0, f["official"], f["plain"]), 0.0)
    check[-1] = f["official"] if (steps // 100) % 5 == 0 else f["plain"]
    after_check = f["first"] + np.cumsum(check) + s * f["step"]  # at step s, its check done, s updates done
    after_update = after_check[:-1] + f["step"]  # update s done: step s + 1 reached
    times = np.stack([after_check[:-1], after_update], axis=1).ravel()
    labels = np.stack([s[:-1], s[:-1] + 1], axis=1).ravel()
    hit = np.nonzero(times >= loop_budget)[0]
    return int(labels[hit[0]]) if len(hit) else steps


def test_the_paper_plan_is_computed_from_the_stored_figures(tmp_path):
    f = stored_figures()
    code, text = call(plan_mod.main, ["--out", tmp_path / "o", "--root", tmp_path / "r", "--plan-only"])
    assert code == 0, text
    assert f"{f['rate']:.2f} steps/s with checks" in text and f"start-up {f['startup']:.1f} s" in text
    # the target: contact (a straight line through the last third of the ratio, to 0.95), + 2000, >= 10000
    meas = pd.read_csv(STORED_MNIST / "measurements.csv")
    ratio = meas["lambda_1"] / meas["sam_edge"]
    tail = meas["step"] >= meas["step"].max() * 2 / 3
    slope, icept = np.polyfit(meas["step"][tail], ratio[tail], 1)
    target = max(10000, math.ceil(((0.95 - icept) / slope + 2000) / 500) * 500)
    rec = record(tmp_path / "o")
    ((name, run),) = rec["stages"]["mnist-edge"]["runs"].items()
    assert run["target"] == target and run["planned_start"] == 0
    cfg = preset_config("mnist", "paper", rho=0.1, steps=target, measure_every=100, official_every=5, k=2)
    assert name == cfg.run_name() and cfg.replace(steps=3000).run_name() == STORED_MNIST.name  # the stored run's
    assert "holds no checkpoint, so it cannot be continued" in text
    n_off = len(range(0, target + 1, 500))
    full = (
        f["startup"]
        + f["first"]
        + target * f["step"]
        + n_off * f["official"]
        + (target // 100 + 1 - n_off) * f["plain"]
    )
    assert run["planned_full_seconds"] == pytest.approx(full + plan_mod.PACK_RESERVE_S, abs=0.1)
    assert run["planned_finish"] == target and f"expected finish step {target} in" in text
    # with less time: the finish step the same figures give, printed before anything starts
    code, text = call(
        plan_mod.main, ["--out", tmp_path / "o2", "--root", tmp_path / "r", "--plan-only", "--budget", 200]
    )
    (run,) = record(tmp_path / "o2")["stages"]["mnist-edge"]["runs"].values()
    loop = run["planned_left_s"] - f["startup"] - plan_mod.PACK_RESERVE_S - f["official"]
    expected = finish_step(f, target, loop)
    assert 3000 < expected < target and abs(run["planned_finish"] - expected) <= 1
    assert f"expected finish step {run['planned_finish']} in" in text
    assert not (tmp_path / "r").exists()  # --plan-only touches no runs root


def test_a_complete_run_keeps_its_step_count_and_is_not_recomputed(tmp_path):
    # the same configuration, finished at another step count than the plan now computes: it is what the plan runs
    results = tmp_path / "results"
    shutil.copytree(REPO / "results", results)
    done = preset_config("mnist", "paper", rho=0.1, steps=12000, measure_every=100, official_every=5, k=2)
    folder = results / "paper" / done.run_name()
    shutil.copytree(STORED_MNIST, folder)
    (folder / "config.json").write_text(json.dumps(done.to_dict()))
    (folder / "status.json").write_text(json.dumps({"state": "finished", "steps_done": 12000, "steps_total": 12000}))
    code, text = call(
        plan_mod.main, ["--out", tmp_path / "o", "--root", tmp_path / "r", "--results", results, "--plan-only"]
    )
    assert code == 0, text
    ((name, run),) = record(tmp_path / "o")["stages"]["mnist-edge"]["runs"].items()
    assert name == done.run_name() and run["target"] == run["planned_start"] == run["planned_finish"] == 12000
    assert "was begun with 12000 steps; it keeps that target" in text and run["planned_seconds"] == 0
