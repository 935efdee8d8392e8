"""Fault drill: kills at many instants, torn and planted files, two commands at once, non-finite input, CLI errors.

The reference for every resumed run is the same configuration run without interruption: every non-timing
column of both tables, the final parameters, RNG state and eigenvectors must be identical (bitwise, CPU).

Kills are simulated in a forked child that calls ``os._exit`` at a chosen fault point (see
:func:`samedge_lib.record.runfolder.set_fault_hook`): no handler, ``finally`` or buffer flush runs, which is what a
``SIGKILL`` leaves behind. ``tests/test_train.py`` and :func:`test_sigterm_commits_and_exits_130` send real
signals to real processes.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from samedge_lib.engine import cli as cli
from samedge_lib.engine import commits, train
from samedge_lib.engine import data as data_mod
from samedge_lib.record import runfolder as rf
from samedge_lib.record.config import ConfigError, RunConfig, preset_config

REPO = Path(__file__).resolve().parent.parent
WALL_COLUMNS = {"wall_time", "measure_seconds"}
KILLED = 137
SEED = 20240601

#: Every run of the drill computes with one torch thread (see ``one_torch_thread`` in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw):
    base = dict(steps=6, measure_every=2, k=2, n_train=64, n_test=32, checkpoint_every=1)
    base.update(kw)
    return preset_config("mnist", "smoke", rho=0.1, **base)


@pytest.fixture(scope="module")
def cached_mnist(data_dir):
    """Load MNIST once for the module (forked children inherit it): the drill restarts runs dozens of times."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_mod, "load_mnist", functools.cache(data_mod.load_mnist))
        yield


def _counting_run(cfg, root) -> tuple[train.RunResult, list[str]]:
    names: list[str] = []
    old = rf.set_fault_hook(names.append)
    try:
        return train.run(cfg, root=root, progress=False), names
    finally:
        rf.set_fault_hook(old)


def _run_killed_at(cfg, root: Path, kill_at: int, timeout: float = 120.0) -> int:
    """Run ``cfg`` in a forked child that dies at its ``kill_at``-th fault point; return the child's exit code."""

    def child() -> None:
        torch.set_num_threads(1)
        counter = itertools.count()

        def hook(name: str) -> None:
            if next(counter) == kill_at:
                os._exit(KILLED)

        rf.set_fault_hook(hook)
        try:
            train.run(cfg, root=root, progress=False)
        except BaseException:  # noqa: BLE001 -- report any escape as a distinct exit code
            os._exit(1)
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f"the child killed at fault point {kill_at} hung")
    return proc.exitcode


def _assert_same_run(ref: train.RunResult, got: train.RunResult) -> None:
    assert got.finished and got.status["steps_done"] == ref.status["steps_done"]
    for table in ("measurements", "steps"):
        a, b = getattr(ref, table), getattr(got, table)
        cols = [c for c in a.columns if c not in WALL_COLUMNS]
        assert list(a.columns) == list(b.columns)
        pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    ca = torch.load(ref.path / rf.CHECKPOINT, weights_only=True)
    cb = torch.load(got.path / rf.CHECKPOINT, weights_only=True)
    for pa, pb in zip(ca["params"], cb["params"], strict=True):
        assert torch.equal(pa, pb)
    assert (ca["velocity"] is None) == (cb["velocity"] is None)
    for va, vb in zip(ca["velocity"] or [], cb["velocity"] or [], strict=True):
        assert torch.equal(va, vb)
    assert torch.equal(ca["gen_state"], cb["gen_state"])
    assert ca["prev_vecs"].keys() == cb["prev_vecs"].keys()
    for key in ca["prev_vecs"]:
        assert torch.equal(ca["prev_vecs"][key], cb["prev_vecs"][key])


def _assert_consistent_prefix(ref: train.RunResult, folder: Path) -> None:
    """What a reader sees in a killed folder is one committed step: a prefix of the uninterrupted run."""
    if not (folder / rf.CONFIG).exists() or not (folder / rf.STATUS).exists():
        return
    seen = rf.load_run(folder)
    n_steps, n_meas = seen.status["steps_done"], seen.status["measurement_rows"]
    assert len(seen.steps) == n_steps and len(seen.measurements) == n_meas
    for table, n in (("steps", n_steps), ("measurements", n_meas)):
        a, b = getattr(ref, table).iloc[:n], getattr(seen, table)
        cols = [c for c in a.columns if c not in WALL_COLUMNS]
        if n:
            pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols], check_exact=True)


def test_kill_at_any_instant_resumes_to_the_uninterrupted_run(tmp_path, cached_mnist):
    cfg = _cfg()
    ref, names = _counting_run(cfg, tmp_path / "ref")
    n = len(names)
    # Every fault point of the final commit (the checkpoint that says "finished" and the files after it),
    # and a seeded random sample of the others.
    final_start = max(i for i, name in enumerate(names) if name == "boundary") + 1
    final = list(range(final_start, n))
    rng = random.Random(SEED)
    others = sorted(rng.sample(range(final_start), 12))
    kills = others + final
    instants = sorted({names[i] for i in kills})
    resumed_identical = 0
    for i in kills:
        root = tmp_path / f"kill{i}"
        assert _run_killed_at(cfg, root, i) == KILLED
        folder = root / cfg.run_name()
        _assert_consistent_prefix(ref, folder)
        again = train.run(cfg, root=root, progress=False)
        _assert_same_run(ref, again)
        resumed_identical += 1
    print(
        f"\nfault drill (single kills): {n} fault points in a run, {len(kills)} kills ({len(final)} inside the final "
        f"commit), {len(instants)} distinct instants, {resumed_identical} resumes identical"
    )
    assert resumed_identical == len(kills)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_momentum_run_killed_anywhere_resumes_to_the_uninterrupted_run(tmp_path, cached_mnist, nesterov):
    """The momentum buffer is part of the commit: a run killed inside an update, a measurement or a commit
    resumes to the uninterrupted run's tables, parameters and buffer, bitwise; so does a late switch to SAM."""
    cfg = _cfg(momentum=0.8, nesterov=nesterov, sam_start=2, measure_after_switch=2)
    ref, names = _counting_run(cfg, tmp_path / "ref")
    assert torch.load(ref.path / rf.CHECKPOINT, weights_only=True)["velocity"] is not None
    rng = random.Random(SEED + 2 + nesterov)
    updates = [i for i, name in enumerate(names) if name == "updated"]
    kills = sorted({*rng.sample(range(len(names)), 6), updates[0], updates[3], len(names) - 2})
    for i in kills:
        root = tmp_path / f"kill{i}"
        assert _run_killed_at(cfg, root, i) == KILLED
        _assert_consistent_prefix(ref, root / cfg.run_name())
        _assert_same_run(ref, train.run(cfg, root=root, progress=False))


def test_a_chain_of_kills_resumes_to_the_uninterrupted_run(tmp_path, cached_mnist):
    """Kill the run, kill its resumption, and so on at random instants; the survivor still matches."""
    cfg = _cfg(steps=8, measure_every=3)
    ref, names = _counting_run(cfg, tmp_path / "ref")
    rng = random.Random(SEED + 1)
    root = tmp_path / "chain"
    kills = 0
    for _ in range(10):
        code = _run_killed_at(cfg, root, rng.randrange(0, 25))
        assert code in (KILLED, 0)
        if code == 0:
            break
        kills += 1
        _assert_consistent_prefix(ref, root / cfg.run_name())
    print(f"\nfault drill (chain): {kills} successive kills, then resumed")
    assert kills >= 5, "the chain ended too early to prove anything"
    _assert_same_run(ref, train.run(cfg, root=root, progress=False))


def test_default_time_cadence_lets_a_killed_run_resume(tmp_path, cached_mnist, monkeypatch):
    """No step cadence, only the time cadence (here shortened so that every boundary is due): a kill resumes."""
    monkeypatch.setattr(commits, "COST_FACTOR", 0.0)  # else a commit waits 50x its cost, longer than this tiny run
    cfg = _cfg(checkpoint_every=0, checkpoint_seconds=1e-9)
    ref, names = _counting_run(cfg, tmp_path / "ref")
    kill_at = [i for i, name in enumerate(names) if name == "updated"][3]  # inside the update of step 3
    assert _run_killed_at(cfg, tmp_path / "k", kill_at) == KILLED
    res = train.run(cfg, root=tmp_path / "k", progress=False)
    assert res.provenance["sessions"][-1]["from_step"] == 3  # resumed, not restarted from 0
    _assert_same_run(ref, res)


def test_rerun_of_a_finished_run_is_a_load_and_never_remeasures(tmp_path, cached_mnist):
    """The old failure: a kill after the final checkpoint made the rerun measure the last step again."""
    cfg = _cfg()
    ref, names = _counting_run(cfg, tmp_path / "ref")
    kill_at = names.index("checkpoint:done", len(names) - 25)  # right after the final checkpoint's rename
    assert _run_killed_at(cfg, tmp_path / "k", kill_at) == KILLED
    status = json.loads((tmp_path / "k" / cfg.run_name() / rf.STATUS).read_text())
    assert status["state"] == "running"
    res, rerun_names = _counting_run(cfg, tmp_path / "k")
    assert "updated" not in rerun_names and "measured" not in rerun_names  # nothing recomputed
    assert list(res.measurements["step"]) == [0, 2, 4, 6]
    _assert_same_run(ref, res)


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (RuntimeError("a bug in the update"), None, "RuntimeError: a bug in the update"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), cli.EXIT_DATA_DEVICE, "out of memory"),
    ],
)
def test_an_error_mid_run_keeps_the_rows_and_says_failed(
    tmp_path, cached_mnist, capsys, monkeypatch, error, code, words
):
    cfg = _cfg()
    ref = train.run(cfg, root=tmp_path / "ref", progress=False)
    original = train._Runner.update

    def failing(self, step):
        if step == 3:
            raise error
        return original(self, step)

    monkeypatch.setattr(train._Runner, "update", failing)
    if code is None:  # not the user's doing: the error propagates (with its traceback), after the commit
        with pytest.raises(RuntimeError, match="a bug"):
            train.run(cfg, root=tmp_path, progress=False)
    else:
        got, _, err = _cli(_cli_args(tmp_path), capsys)
        assert got == code and words in _one_line(err)
    res = rf.load_run(tmp_path / cfg.run_name())
    assert res.state == "failed" and words in res.status["reason"] and res.status["step"] == 3
    assert list(res.measurements["step"]) == [0, 2] and len(res.steps) == 3  # measured before the error: kept
    monkeypatch.setattr(train._Runner, "update", original)
    _assert_same_run(ref, train.run(cfg, root=tmp_path, progress=False))


def test_rerun_of_a_diverged_run_does_not_train_past_the_divergence(tmp_path, cached_mnist):
    cfg = preset_config(
        "mnist", "smoke", eta=30.0, steps=40, measure_every=2, k=2, n_train=64, n_test=32, max_loss=1e300
    )
    ref, names = _counting_run(cfg, tmp_path / "ref")
    assert ref.state == "diverged"
    kill_at = len(names) - 1 - names[::-1].index("checkpoint:done")  # after the checkpoint that says "diverged"
    assert _run_killed_at(cfg, tmp_path / "k", kill_at) == KILLED
    res, rerun_names = _counting_run(cfg, tmp_path / "k")
    assert "updated" not in rerun_names and "measured" not in rerun_names
    assert res.state == "diverged" and res.status["reason"] == ref.status["reason"]
    for table in ("measurements", "steps"):
        a, b = getattr(ref, table), getattr(res, table)
        cols = [c for c in a.columns if c not in WALL_COLUMNS]
        pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)


# -- torn and planted files ----------------------------------------------------------------------------


def _finished(tmp_path, cfg=None):
    cfg = cfg or _cfg()
    res = train.run(cfg, root=tmp_path, progress=False)
    return cfg, res


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``main(args)`` in this process: exit code, stdout, stderr (argparse's own exit included)."""
    try:
        code = cli.main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _cli_args(root: Path, *extra: str, steps: int = 6, measure_every: int = 2) -> list[str]:
    """The CLI form of :func:`_cfg` (without its step cadence of commits)."""
    sets = [f"measure_every={measure_every}", "k=2", "n_train=64", "n_test=32"]
    args = ["--task", "mnist", "--preset", "smoke", "--rho", "0.1", "--steps", str(steps)]
    for item in sets:
        args += ["--set", item]
    return [*args, "--root", str(root), "--no-progress", *extra]


def _one_line(err: str) -> str:
    """The one error line of a command's stderr (progress notes of the data loader aside)."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("samedge_lib.engine.data: downloading")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.97])
def test_torn_checkpoint_is_refused_with_a_fix(tmp_path, cached_mnist, capsys, keep):
    cfg = _cfg(steps=6)
    part = train.run(cfg, root=tmp_path, progress=False, stop_after=3)
    assert part.state == "interrupted"
    ckpt = part.path / rf.CHECKPOINT
    blob = ckpt.read_bytes()
    ckpt.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(rf.RunFolderError, match="--force"):
        train.run(cfg, root=tmp_path, progress=False)
    code, _, err = _cli(_cli_args(tmp_path), capsys)
    line = _one_line(err)
    assert code == cli.EXIT_FOLDER and "checkpoint.pt" in line and "--force" in line
    ref = train.run(cfg, root=tmp_path / "ref", progress=False)
    _assert_same_run(ref, train.run(cfg, root=tmp_path, progress=False, force=True))


class _Payload:
    """Unpickling this runs ``Path.touch(marker)``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_checkpoint_code_is_never_run(tmp_path, cached_mnist, capsys):
    cfg = _cfg()
    part = train.run(cfg, root=tmp_path, progress=False, stop_after=2)
    marker = tmp_path / "payload-ran"
    torch.save({"format": commits.CHECKPOINT_FORMAT, "x": _Payload(marker)}, part.path / rf.CHECKPOINT)
    code, _, err = _cli(_cli_args(tmp_path), capsys)
    line = _one_line(err)
    assert code == cli.EXIT_FOLDER and "refused, not run" in line and "--force" in line
    assert "unsupported global" in line.lower()
    assert not marker.exists()


def test_planted_checkpoints_of_the_wrong_run_are_refused(tmp_path, cached_mnist):
    cfg = _cfg()
    other = _cfg(seed=1)
    part = train.run(cfg, root=tmp_path, progress=False, stop_after=2)
    foreign = train.run(other, root=tmp_path, progress=False, stop_after=2)
    ckpt = part.path / rf.CHECKPOINT
    good = torch.load(ckpt, weights_only=True)
    cases = {
        "belongs to configuration": torch.load(foreign.path / rf.CHECKPOINT, weights_only=True),
        "format": {**good, "format": "something-else/1"},
        "parameter 0": {**good, "params": [torch.zeros(3)] + good["params"][1:]},
        "next_step": {**good, "next_step": 10_000},
        "step table": {**good, "next_step": good["next_step"] + 1},
        "random-generator": {**good, "gen_state": torch.zeros(3, dtype=torch.uint8)},
        "momentum buffer this run does not have": {**good, "velocity": [p.clone() for p in good["params"]]},
        "not a checkpoint record": [1, 2, 3],
    }
    for words, planted in cases.items():
        torch.save(planted, ckpt)
        with pytest.raises(rf.RunFolderError, match=words):
            train.run(cfg, root=tmp_path, progress=False)
    torch.save(good, ckpt)
    ref = train.run(cfg, root=tmp_path / "ref", progress=False)
    _assert_same_run(ref, train.run(cfg, root=tmp_path, progress=False))


def test_planted_momentum_buffers_are_refused(tmp_path, cached_mnist):
    cfg = _cfg(momentum=0.5)
    part = train.run(cfg, root=tmp_path, progress=False, stop_after=2)
    ckpt = part.path / rf.CHECKPOINT
    good = torch.load(ckpt, weights_only=True)
    cases = {
        "not a list of": {**good, "velocity": None},
        "momentum buffer 1": {**good, "velocity": [good["velocity"][0], torch.zeros(3)] + good["velocity"][2:]},
    }
    for words, planted in cases.items():
        torch.save(planted, ckpt)
        with pytest.raises(rf.RunFolderError, match=words):
            train.run(cfg, root=tmp_path, progress=False)
    torch.save(good, ckpt)
    _assert_same_run(
        train.run(cfg, root=tmp_path / "ref", progress=False), train.run(cfg, root=tmp_path, progress=False)
    )


def test_torn_derived_files_are_rebuilt_from_the_checkpoint(tmp_path, cached_mnist):
    cfg, ref = _finished(tmp_path / "ref")
    for name in (rf.STATUS, rf.MEASUREMENTS, rf.STEPS, rf.PROVENANCE):
        _, res = _finished(tmp_path / name)
        f = res.path / name
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        if name != rf.PROVENANCE:
            with pytest.raises(rf.RunFolderError, match="torn"):
                rf.load_run(res.path)
        # a stale temp file of a killed writer is swept away too
        (res.path / f".{name}.abc123.tmp").write_text("half")
        _assert_same_run(ref, train.run(cfg, root=tmp_path / name, progress=False))
        assert not list(res.path.glob(".*.tmp"))


def test_reader_sees_only_committed_rows(tmp_path, cached_mnist):
    """A table one commit ahead of status.json (a kill between two renames) is cut to the committed rows."""
    cfg, res = _finished(tmp_path)
    status = json.loads((res.path / rf.STATUS).read_text())
    status.update(steps_done=3, measurement_rows=2, state="running")
    (res.path / rf.STATUS).write_text(json.dumps(status))
    seen = rf.load_run(res.path)
    assert len(seen.steps) == 3 and list(seen.measurements["step"]) == [0, 2]


def test_planted_config_of_another_run_is_refused(tmp_path, cached_mnist, capsys):
    cfg, res = _finished(tmp_path)
    (res.path / rf.CONFIG).write_text(json.dumps(cfg.replace(seed=7).to_dict()))
    (res.path / rf.STATUS).unlink()
    code, _, err = _cli(_cli_args(tmp_path), capsys)
    assert code == cli.EXIT_FOLDER and "different configuration" in _one_line(err)
    (res.path / rf.CONFIG).write_text("{not json")
    code, _, err = _cli(_cli_args(tmp_path), capsys)
    assert code == cli.EXIT_FOLDER and "not valid JSON" in _one_line(err)


# -- concurrency -----------------------------------------------------------------------------------------


def test_locked_folder_refuses_or_waits(tmp_path, cached_mnist, capsys):
    cfg = _cfg()
    folder = rf.run_path(cfg, tmp_path)
    with rf.locked(folder):
        with pytest.raises(rf.RunLockedError, match=f"process {os.getpid()}"):
            train.run(cfg, root=tmp_path, progress=False)
        code, _, err = _cli(_cli_args(tmp_path), capsys)
        line = _one_line(err)
        assert code == cli.EXIT_LOCKED and "--wait" in line
    assert not (folder / rf.STATUS).exists(), "a refused command computed something"


def _cli_process(root: Path, *extra: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "samedge_lib.run", *_cli_args(root, "--set", "checkpoint_every=1", *extra, **kw)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_identical_commands_at_once_compute_once(tmp_path, data_dir):
    """Three identical commands start together, one of them with --wait: one computes, none crashes."""
    cfg = _cfg()
    procs = [_cli_process(tmp_path), _cli_process(tmp_path), _cli_process(tmp_path, "--wait")]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    errs = [err.decode() for _, err in outs]
    assert codes[2] == 0 and set(codes[:2]) <= {0, cli.EXIT_LOCKED}, (codes, errs)
    for err, code in zip(errs, codes, strict=True):
        assert "Traceback" not in err and "FileNotFoundError" not in err
        if code == cli.EXIT_LOCKED:
            assert "--wait" in _one_line(err)
    res = rf.load_run(tmp_path / cfg.run_name())
    # one process computed every step, in one session; the others refused, waited and loaded, or loaded
    sessions = res.provenance["sessions"]
    assert len(sessions) == 1 and sessions[0]["from_step"] == 0 and sessions[0]["to_step"] == cfg.steps
    assert sessions[0]["pid"] in {p.pid for p in procs}
    print(f"\nthree identical commands at once: exit codes {codes}, computing sessions {len(sessions)}")
    ref = train.run(cfg, root=tmp_path / "ref", progress=False)
    _assert_same_run(ref, res)


def test_sigterm_inside_torch_save_is_delivered_after_the_commit(tmp_path, cached_mnist, monkeypatch):
    """SIGTERM arriving while ``torch.save`` writes the checkpoint waits for the commit to end: the run stops as
    "interrupted" with every committed step, not "failed" with the zip writer's ``RuntimeError`` (seen in CI)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only, and this test runs in another (pytest-xdist?)")
    cfg = _cfg()
    ref = train.run(cfg, root=tmp_path / "ref", progress=False)
    real_save = torch.save
    sent = []

    class SignalOnWrite:
        """A file whose third ``write`` sends SIGTERM to this process: the signal lands inside ``torch.save``."""

        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3 and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    saves = itertools.count(1)

    def save(obj, f, *args, **kw):  # the third checkpoint of the run is written through SignalOnWrite
        return real_save(obj, SignalOnWrite(f) if next(saves) == 3 else f, *args, **kw)

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    monkeypatch.setattr(torch, "save", save)
    try:
        with pytest.raises(train.RunInterruptedError):
            train.run(cfg, root=tmp_path, progress=False)
    finally:
        signal.signal(signal.SIGTERM, old)
        monkeypatch.setattr(torch, "save", real_save)
    assert sent, "the signal was never sent: the test did not reach torch.save"
    status = json.loads((tmp_path / cfg.run_name() / rf.STATUS).read_text())
    assert status["state"] == "interrupted", status
    _assert_consistent_prefix(ref, tmp_path / cfg.run_name())
    _assert_same_run(ref, train.run(cfg, root=tmp_path, progress=False))


def test_sigterm_commits_and_exits_130(tmp_path, data_dir):
    cfg = _cfg(steps=400, measure_every=50)
    proc = _cli_process(tmp_path, steps=400, measure_every=50)
    status_file = tmp_path / cfg.run_name() / rf.STATUS
    deadline = time.time() + 120
    while time.time() < deadline:
        if status_file.exists() and json.loads(status_file.read_text()).get("steps_done", 0) >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err.decode()
    assert "interrupted at step" in _one_line(err.decode())
    status = json.loads(status_file.read_text())
    assert status["state"] == "interrupted" and status["steps_done"] >= 10
    seen = rf.load_run(tmp_path / cfg.run_name())
    assert len(seen.steps) == status["steps_done"] and len(seen.measurements) == status["measurement_rows"]
    assert seen.provenance["sessions"][-1]["to_step"] == status["steps_done"]


# -- non-finite input and the CLI's error cases ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--eta", "inf"], "eta=inf must be a finite number"),
        (["--eta", "nan"], "eta=nan must be a finite number"),
        (["--rho", "inf"], "rho=inf must be a finite number"),
        (["--set", "max_loss=Infinity"], "max_loss=inf must be a finite number"),
        (["--set", "lanczos_tol=NaN"], "lanczos_tol=nan must be a finite number"),
        (["--set", "k"], "--set expects NAME=VALUE"),
        (["--set", "kk=3"], "did you mean 'k'"),
        (["--set", "colour=3"], "the fields are: eta, optimizer, model"),
        (["--set", "task=cifar10"], "use --task"),
        (["--set", "hvp=magic"], "'exact'"),
        (["--max-seconds", "0"], "--max-seconds 0 must be"),
        (["--max-seconds", "-1"], "--max-seconds -1 must be"),
        (["--steps", "1.5"], "invalid int value"),
        (["--steps", "0"], "steps=0 must be > 0"),
        (["--set", "n_train=70000"], "n_train=70000 must lie in [1, 60000]"),
        # issue 19, item 2: these ended in a traceback (exit 1) at the first check and left a "failed" folder
        (["--set", "k=100000", "--set", "lanczos_max_iter=100000"], "k=100000 exceeds the 26506 parameters"),
        (["--set", "k=100000"], "k=100000 is more than lanczos_max_iter=80"),
        (["--set", "lanczos_max_iter=1"], "k=2 is more than lanczos_max_iter=1"),
        # issue 19, item 7: --eta silently beat --set eta=...
        (["--eta", "0.05", "--set", "eta=0.02"], "--eta 0.05 and --set eta=0.02 disagree; give eta once"),
        (["--tf32", "--set", "tf32=false"], "--tf32 and --set tf32=False disagree; give tf32 once"),
    ],
)
def test_invalid_input_is_one_line_exit_2(tmp_path, data_dir, capsys, args, words):
    code, _, err = _cli(_cli_args(tmp_path / "runs", *args), capsys)
    assert code == cli.EXIT_INVALID
    assert words in _one_line(err)
    assert not (tmp_path / "runs").exists(), "invalid input created a run folder"


def test_non_finite_hessian_products_end_as_divergence_with_rows_kept(tmp_path, cached_mnist, capsys):
    """A huge max_loss lets the loss blow up past float32; the Hessian products overflow first."""
    args = _cli_args(tmp_path, "--rho", "0", "--eta", "30", "--set", "max_loss=1e300", "--steps", "40")
    code, _, err = _cli(args, capsys)
    line = _one_line(err)
    assert code == cli.EXIT_DIVERGED and "smaller eta" in line and "Hessian-vector products" in line
    folder = next(tmp_path.iterdir())
    res = rf.load_run(folder)
    assert res.state == "diverged" and "Hessian-vector products became non-finite" in res.status["reason"]
    assert len(res.measurements) >= 1 and len(res.steps) == res.status["step"]  # rows before it are kept
    code, _, err = _cli(args, capsys)  # a rerun loads it and says the same
    assert code == cli.EXIT_DIVERGED and _one_line(err) == line


def test_max_seconds_stops_with_75_and_resumes(tmp_path, cached_mnist, capsys):
    cfg = _cfg()
    code, _, err = _cli(_cli_args(tmp_path, "--max-seconds", "1e-9"), capsys)
    assert code == cli.EXIT_STOPPED and "run the same command again" in _one_line(err)
    assert rf.load_run(tmp_path / cfg.run_name()).state == "interrupted"
    code, out, err = _cli(_cli_args(tmp_path), capsys)
    assert code == 0 and '"state": "finished"' in out


def test_data_errors_are_one_line_exit_5(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMEDGE_DATA_MIRROR", (tmp_path / "no-mirror").as_uri())
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _cli(_cli_args(tmp_path / "runs", "--data-dir", str(empty)), capsys)
    line = _one_line(err)
    assert code == cli.EXIT_DATA_DEVICE and "not available" in line and "Expected checksum" in line
    # issue 19, item 7: the short fix first (the command that fetches it), the details after
    assert line.index("Fix: run `python tools/fetch_data.py mnist --data-dir") < min(300, line.index("Details:"))
    assert "(the folder given with --data-dir)" in line and "(now " not in line
    monkeypatch.delenv("SAMEDGE_DATA", raising=False)
    # the default folder, not cached_mnist's copy (its cache would answer a call without --data-dir)
    monkeypatch.setattr(data_mod, "load_mnist", getattr(data_mod.load_mnist, "__wrapped__", data_mod.load_mnist))
    code, _, err = _cli(_cli_args(tmp_path / "runs"), capsys)
    line = _one_line(err)
    assert code == cli.EXIT_DATA_DEVICE
    assert "(the per-user cache; $SAMEDGE_DATA is not set). Fix: run `python tools/fetch_data.py mnist` where" in line
    bad = tmp_path / "bad" / "MNIST" / "raw"
    bad.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (bad / name).write_bytes(b"not mnist")
    code, _, err = _cli(_cli_args(tmp_path / "runs", "--data-dir", str(tmp_path / "bad")), capsys)
    assert code == cli.EXIT_DATA_DEVICE and "checksum" in _one_line(err).lower()
    assert not (tmp_path / "runs").exists(), "a data error created a run folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_missing_gpu_is_one_line_exit_5(tmp_path, capsys):
    code, _, err = _cli(_cli_args(tmp_path, "--device", "cuda"), capsys)
    assert code == cli.EXIT_DATA_DEVICE and "no CUDA GPU" in _one_line(err)


def test_unusable_root_is_one_line_exit_6(tmp_path, cached_mnist, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = _cli(_cli_args(blocker), capsys)
    assert code == cli.EXIT_FOLDER and "a-file" in _one_line(err)


def test_config_errors_raise_before_anything_exists(tmp_path):
    for field in ("eta", "rho", "max_loss", "lanczos_tol", "checkpoint_seconds"):
        bad = RunConfig(**{**_cfg().to_dict(), field: float("inf")})
        with pytest.raises(ConfigError, match=f"{field}=inf must be a finite number"):
            train.run(bad, root=tmp_path)
    with pytest.raises(ConfigError, match="max_seconds"):
        train.run(_cfg(), root=tmp_path, max_seconds=0)
    assert not any(tmp_path.iterdir())


# -- issue 19: a full disk, file modes ------------------------------------------------------------------------------


class _NoSpaceFile:
    """A temporary file on a full disk: every write fails with ENOSPC (what the kernel answers a full file system)."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def _fill_disk_after(monkeypatch, root: Path, commits: int):
    """From the ``commits + 1``-th commit on, checkpoints written under ``root`` find the disk full."""
    done: list[int] = []
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kw):
        f = real_fdopen(fd, *args, **kw)
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        full = len(done) >= commits and name.startswith(str(root)) and Path(name).name.startswith(".checkpoint.pt.")
        return _NoSpaceFile(f) if full else f

    old = rf.set_fault_hook(lambda name: done.append(1) if name == "checkpoint:done" else None)
    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 50_000, 50_000))
    return done, old


def test_full_disk_is_one_line_exit_6_keeps_the_last_commit_and_resumes(tmp_path, cached_mnist, capsys, monkeypatch):
    """issue 19, item 1: a traceback, exit 1 and a status stuck at "running" became one line, exit 6, a kept commit."""
    cfg = _cfg()
    ref = train.run(cfg, root=tmp_path / "ref", progress=False)
    root = tmp_path / "full"
    done, old_hook = _fill_disk_after(monkeypatch, root, commits=3)
    try:
        code, _, err = _cli(_cli_args(root, "--set", "checkpoint_every=1"), capsys)
    finally:
        rf.set_fault_hook(old_hook)
    line = _one_line(err)
    folder = root / cfg.run_name()
    assert code == cli.EXIT_FOLDER, err
    assert line.startswith(f"samedge-run: run folder error: no space left on the file system of {folder}: writing ")
    assert "checkpoint.pt needs about" in line and "0.05 MB is" in line and "continues from that commit" in line
    status = json.loads((folder / rf.STATUS).read_text())
    assert status["state"] == "interrupted" and status["reason"].startswith("no space left")
    assert status["stopped_at"] == status["steps_done"] > 0  # the last commit that was written whole
    assert not list(folder.glob(".*.tmp")), "a temporary file of the failed write was left behind"
    _assert_consistent_prefix(ref, folder)
    assert rf.load_run(folder).state == "interrupted"
    monkeypatch.undo()  # space again: the same command continues from that commit
    code, out, err = _cli(_cli_args(root), capsys)
    assert code == 0 and '"state": "finished"' in out, err
    res = rf.load_run(folder)
    assert res.provenance["sessions"][-1]["from_step"] == status["steps_done"]
    _assert_same_run(ref, res)


def test_full_tmpfs_is_one_line_exit_6_and_resumes_with_space(tmp_path, cached_mnist):
    """The issue's own drill on a real file system: a small tmpfs fills up mid-run, then is given space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the patched writer above tests the same without one)")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this machine does not let root mount a tmpfs")
    try:
        cfg = _cfg()
        ref = train.run(cfg, root=tmp_path / "ref", progress=False)
        proc = _cli_process(mnt)
        _, err = proc.communicate(timeout=300)
        line = _one_line(err.decode())
        assert proc.returncode == cli.EXIT_FOLDER, err.decode()
        assert f"no space left on the file system of {mnt / cfg.run_name()}" in line and "needs about" in line
        status = json.loads((mnt / cfg.run_name() / rf.STATUS).read_text())
        assert status["state"] == "interrupted" and status["steps_done"] < cfg.steps
        _assert_consistent_prefix(ref, mnt / cfg.run_name())
        subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)
        proc = _cli_process(mnt)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        _assert_same_run(ref, rf.load_run(mnt / cfg.run_name()))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_run_folder_files_get_the_umask_not_0600(tmp_path, cached_mnist, umask, mode):
    """issue 19, item 6: every file of a run folder was 0600 (the temporary file's mode) whatever the umask."""
    cfg = _cfg()
    old = os.umask(umask)
    try:
        part = train.run(cfg, root=tmp_path, progress=False, stop_after=3)
        res = train.run(cfg, root=tmp_path, progress=False)
    finally:
        os.umask(old)
    files = sorted(p for p in part.path.iterdir() if p.is_file())
    assert {p.name for p in files} >= {rf.CONFIG, rf.CHECKPOINT, rf.STATUS, rf.STEPS, rf.MEASUREMENTS, rf.LOCK}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(mode) for p in files}
    _assert_same_run(train.run(cfg, root=tmp_path / "ref", progress=False), res)


# -- issue 19: the Python API says what the command line says -----------------------------------------------------


def _diverging_cfg():
    """GD at a step far beyond 2/eta: the loss passes max_loss within a few steps, after the check at step 0."""
    return preset_config(
        "mnist", "smoke", eta=30.0, steps=20, measure_every=10, k=1, n_train=64, n_test=32, max_loss=1e3
    )


def test_api_warns_on_a_diverged_run_and_raises_when_asked(tmp_path, cached_mnist):
    """issue 19, item 5: train.run() returned a diverged run without a word (the CLI exits 3 with a line)."""
    cfg = _diverging_cfg()
    with pytest.warns(train.RunDivergedWarning, match=r"diverged: training loss .* exceeds max_loss=1000") as seen:
        res = train.run(cfg, root=tmp_path, progress=False)
    assert res.state == "diverged" and "\n" not in str(seen[0].message)
    assert seen[0].filename == __file__  # pointed at the caller, not at the library
    with pytest.warns(train.RunDivergedWarning):  # loaded again: said again
        train.run(cfg, root=tmp_path, progress=False)
    with pytest.raises(train.RunDivergedError, match="smaller eta"):
        train.run(cfg, root=tmp_path, progress=False, raise_on_divergence=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rf.RunWarning)  # the documented switch: every API warning an error
        with pytest.raises(train.RunDivergedWarning):
            train.run(cfg, root=tmp_path, progress=False)


def test_summary_of_a_diverged_run_has_the_loss_where_it_diverged(tmp_path, cached_mnist):
    """issue 19, item 5: final_loss was the last check's loss, before the divergence."""
    from samedge_lib.record.results import summarize

    cfg = _diverging_cfg()
    with pytest.warns(train.RunDivergedWarning):
        res = train.run(cfg, root=tmp_path, progress=False)
    with pytest.warns(rf.RunWarning, match=r"its final_loss is the training loss at step \d+") as seen:
        s = summarize(res)
    assert "\n" not in str(seen[0].message)
    assert s["state"] == "diverged" and s["diverged_at_step"] == res.status["step"]
    assert s["final_loss"] == res.steps["loss"].iloc[-1] > cfg.max_loss
    assert s["last_check_step"] == 0 < s["final_loss_step"] == int(res.steps["step"].iloc[-1])
    assert s["final_loss"] != res.measurements["loss"].iloc[-1]
    assert s["note"].startswith(f"diverged at step {res.status['step']} of {cfg.steps}")


def test_preset_config_typos_name_the_field_they_meant():
    """issue 19, item 5: preset_config(..., stepz=3) raised a bare TypeError; now the CLI's "did you mean"."""
    from samedge_lib.record.config import UnknownFieldError

    with pytest.raises(UnknownFieldError) as info:
        preset_config("mnist", "smoke", stepz=3)
    message = str(info.value)
    assert message.startswith("preset_config: unknown field 'stepz' (did you mean 'steps'?); the fields are: task, eta")
    assert "\n" not in message and isinstance(info.value, TypeError) and isinstance(info.value, ConfigError)
    with pytest.raises(UnknownFieldError, match=r"RunConfig.replace: unknown field 'etta' \(did you mean 'eta'\?\)"):
        _cfg().replace(etta=0.1)


# -- issue 19: stored runs that stopped early say so --------------------------------------------------------------


def test_stored_runs_that_stopped_early_say_where(tmp_path, cached_mnist):
    """issue 19, item 8: results.stored_runs() returned interrupted runs with no sign."""
    from samedge_lib.record import results

    cfg = _cfg()
    train.run(cfg.replace(seed=1), root=tmp_path, progress=False)  # a finished one beside it
    train.run(cfg, root=tmp_path, progress=False, stop_after=3)
    with pytest.warns(rf.RunWarning) as seen:
        runs = results.stored_runs(tmp_path)
    message = str(seen[0].message)
    assert "\n" not in message
    assert message == (
        f"1 of 2 stored runs stopped early, and their numbers describe only the steps they reached: "
        f"{cfg.run_name()}: interrupted at step 3 of {cfg.steps}"
    )
    early = next(r for r in runs if r.config == cfg)
    assert early.stopped_early and early.state_note == f"interrupted at step 3 of {cfg.steps}"
    assert not next(r for r in runs if r.config != cfg).stopped_early
    summary = results.summarize(early)
    assert summary["note"] == early.state_note and summary["steps_total"] == cfg.steps
    assert results.stopped_early_note(runs) == message.replace(cfg.run_name(), f"`{cfg.run_name()}`")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(results.stored_runs(tmp_path, warn=False)) == 2  # the book's call: it shows the note instead
    # and the folder still resumes to the uninterrupted run, after which nothing is said
    _assert_same_run(
        train.run(cfg, root=tmp_path / "ref", progress=False), train.run(cfg, root=tmp_path, progress=False)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not any(r.stopped_early for r in results.stored_runs(tmp_path))


def test_the_book_shows_which_stored_runs_stopped_early(monkeypatch):
    """The experiment chapters' stored-run section states it above the runs' numbers (no warning: stderr fails the
    book), and the appendix's tracking-cost table has their state as its first column."""
    import matplotlib

    matplotlib.use("Agg")
    from samedge_lib.chapters import benchmark_report as br
    from samedge_lib.chapters import chapter
    from samedge_lib.record import results

    runs = results.stored_runs(warn=False)
    if not any(r.stopped_early for r in runs if r.config.task == "mnist"):
        pytest.skip("no stored MNIST run stopped early")
    shown = []
    monkeypatch.setattr(chapter, "display", lambda obj, *a, **kw: shown.append(getattr(obj, "data", obj)))
    monkeypatch.setattr(chapter, "show_table", lambda *a, **kw: None)
    monkeypatch.setattr(chapter.plt, "show", lambda: None)
    stored = {r.config.rho: r for r in runs if r.config.task == "mnist"}
    ch = chapter.ExperimentChapter(3, "mnist", (), stored, 0.1, "paper")
    with warnings.catch_warnings():
        warnings.simplefilter("error", rf.RunWarning)
        ch.show_stored()
    notes = [s for s in shown if isinstance(s, str) and "stopped early" in s]
    assert len(notes) == 1 and all(r.state_note in notes[0] for r in stored.values() if r.stopped_early)
    table = br.tracking_cost_table(runs)
    assert list(table.columns)[0] == "state" and "interrupted at step" in " ".join(table["state"])


# -- issue 19, item 7: the smaller ones ------------------------------------------------------------------------


def test_summary_json_has_null_not_nan(tmp_path, cached_mnist, capsys):
    """The summary the command line prints is JSON: a statistic that does not exist is null, not NaN."""
    code, out, _ = _cli(_cli_args(tmp_path), capsys)
    assert code == 0
    text = out.split("\n", 1)[1]  # after "run folder: ..."
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the summary JSON"))
    assert "NaN" not in text and summary["tracking_ratio"]["median"] is None  # a smoke run reaches no edge


def test_minus_zero_rho_is_the_run_of_zero(tmp_path, cached_mnist, capsys):
    """--rho -0.0 and --rho 0 were two runs (two hashes); now one folder, the second command loads it."""
    args = [a for a in _cli_args(tmp_path) if a != "--rho" and a != "0.1"]
    code, out0, _ = _cli([*args, "--rho", "0"], capsys)
    code2, out1, _ = _cli([*args, "--rho", "-0.0"], capsys)
    assert code == code2 == 0 and out0.splitlines()[0] == out1.splitlines()[0]
    assert len(list(tmp_path.iterdir())) == 1
    res = rf.load_run(tmp_path / out0.splitlines()[0].split("/")[-1])
    assert len(res.provenance["sessions"]) == 1  # computed once, then loaded
    assert preset_config("mnist", "smoke", rho=-0.0).rho == 0.0
    cfg = preset_config("mnist", "smoke")
    assert RunConfig(**{**cfg.to_dict(), "momentum": -0.0}).identity() == cfg.identity()


def test_stored_run_folders_keep_their_hashes():
    """Normalising -0.0 changed no existing identity: every stored run's folder still ends with its hash."""
    from samedge_lib.record.results import stored_runs

    runs = stored_runs(warn=False)
    if not runs:
        pytest.skip("no stored runs")
    for res in runs:
        assert res.path.name == res.config.run_name() and res.path.name.endswith(res.config.identity())
