"""The run loop: measurements against the library's own definitions, resume, reuse, divergence, chunking."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from samedge_lib.engine import train as train_mod
from samedge_lib.engine.tasks import build_task
from samedge_lib.engine.train import RunDivergedError, load_run, run
from samedge_lib.record.config import ConfigError, preset_config
from samedge_lib.theory.edges import gd_edge, sam_edge

REPO = Path(__file__).resolve().parent.parent
WALL_COLUMNS = {"wall_time", "measure_seconds"}


def _small(rho: float = 0.1, **kw):
    base = dict(steps=12, measure_every=4, k=2, n_train=128, n_test=64)
    base.update(kw)
    return preset_config("mnist", "smoke", rho=rho, **base)


def test_sam_run_writes_tidy_tables_consistent_with_the_edges(tmp_path, data_dir):
    cfg = _small(official_every=1)
    res = run(cfg, root=tmp_path, progress=False)
    assert res.finished and res.status["steps_done"] == cfg.steps
    m = res.measurements
    assert list(m["step"]) == [0, 4, 8, 12]
    assert (m["data"] == "full").all() and m["data_label"].str.contains("train\\[0:128\\]").all()
    np.testing.assert_allclose(
        m["sam_edge"], sam_edge(eta=cfg.eta, rho=cfg.rho, grad_norm=m["grad_norm"].to_numpy()), rtol=1e-12
    )
    np.testing.assert_allclose(m["edge"], m["sam_edge"])
    assert (m["gd_edge"] == gd_edge(cfg.eta)).all()
    assert (m["lambda_1"] >= m["lambda_2"]).all() and m["lanczos_converged"].all()
    assert (m["residual_1"] <= cfg.lanczos_tol).all()
    assert m["official_lambda"].notna().all() and (m["official_matvecs"] >= 1).all()
    assert ((m["align_g"] >= 0) & (m["align_g"] <= 1)).all()
    s = res.steps
    assert list(s["step"]) == list(range(cfg.steps))
    # the step log's loss at a measured step equals the measured loss (same weights, same batch)
    np.testing.assert_allclose(s.set_index("step").loc[[0, 4, 8], "loss"], m["loss"].iloc[:3], rtol=1e-6)
    for name in ("config.json", "provenance.json", "status.json", "checkpoint.pt"):
        assert (res.path / name).exists()
    prov = json.loads((res.path / "provenance.json").read_text())
    assert prov["dtype"] == "float32" and "torch" in prov["versions"] and "numeric_mode" in prov


def test_measured_lambda1_matches_a_dense_hessian(tmp_path, data_dir):
    cfg = _small(
        rho=0.0,
        dtype="float64",
        steps=2,
        measure_every=2,
        k=1,
        model={"depth": 2, "width": 8},
        n_train=32,
        lanczos_tol=1e-10,
    )
    res = run(cfg, root=tmp_path, progress=False)
    # rebuild the task and take the weights at step 2 from the checkpoint: compare with eigvalsh of the dense Hessian
    task = build_task(cfg, torch.device("cpu"), torch.float64)
    params = torch.load(res.path / "checkpoint.pt", weights_only=True)["params"]
    batch = task.batch_at(0)
    flat = torch.cat([p.reshape(-1) for p in params])
    sizes = [p.numel() for p in params]

    def f(v):
        ps = [t.reshape(p.shape) for t, p in zip(torch.split(v, sizes), params, strict=True)]
        return task.loss(ps, batch)

    H = torch.autograd.functional.hessian(f, flat)
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert res.measurements["lambda_1"].iloc[-1] == pytest.approx(top, rel=1e-8)


def test_finished_run_is_loaded_not_recomputed(tmp_path, data_dir, monkeypatch):
    cfg = _small(steps=4, measure_every=2)
    first = run(cfg, root=tmp_path, progress=False)

    def boom(*a, **k):
        raise AssertionError("recomputed a finished run")

    monkeypatch.setattr(train_mod, "_Runner", boom)
    again = run(cfg, root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(first.measurements, again.measurements)
    with pytest.raises(AssertionError, match="recomputed"):
        run(cfg, root=tmp_path, progress=False, force=True)


def test_stop_and_resume_equals_uninterrupted(tmp_path, data_dir):
    cfg = _small(steps=10, measure_every=3, checkpoint_every=2)
    full = run(cfg, root=tmp_path / "a", progress=False)
    part = run(cfg, root=tmp_path / "b", progress=False, stop_after=5)
    assert part.status["state"] == "interrupted"
    resumed = run(cfg, root=tmp_path / "b", progress=False)
    assert resumed.finished
    cols = [c for c in full.measurements.columns if c not in WALL_COLUMNS]
    pd.testing.assert_frame_equal(full.measurements[cols], resumed.measurements[cols], check_exact=True)
    scols = [c for c in full.steps.columns if c not in WALL_COLUMNS]
    pd.testing.assert_frame_equal(full.steps[scols], resumed.steps[scols], check_exact=True)


_KILL_SCRIPT = """
import sys, time
from samedge_lib.engine import train
from samedge_lib.record.config import preset_config
orig = train._Runner.update
def slow(self, step):
    time.sleep(0.15)
    return orig(self, step)
train._Runner.update = slow
cfg = preset_config(
    "mnist", "smoke", rho=0.1, steps=30, measure_every=7, k=2, n_train=128, n_test=64, checkpoint_every=3
)
train.run(cfg, root=sys.argv[1], progress=False)
"""


def test_killed_subprocess_resumes_bitwise(tmp_path, data_dir):
    cfg = preset_config(
        "mnist", "smoke", rho=0.1, steps=30, measure_every=7, k=2, n_train=128, n_test=64, checkpoint_every=3
    )
    root = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(root)], env=env, start_new_session=True)
    ckpt = root / cfg.run_name() / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["next_step"] >= 9:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((root / cfg.run_name() / "status.json").read_text())["state"]
    assert state == "running", "the subprocess finished before it was killed; the test proves nothing"
    resumed = run(cfg, root=root, progress=False)
    assert resumed.status.get("resumed_from") is None or resumed.finished
    reference = run(cfg, root=tmp_path / "ref", progress=False)
    cols = [c for c in reference.measurements.columns if c not in WALL_COLUMNS]
    pd.testing.assert_frame_equal(reference.measurements[cols], resumed.measurements[cols], check_exact=True)
    scols = [c for c in reference.steps.columns if c not in WALL_COLUMNS]
    pd.testing.assert_frame_equal(reference.steps[scols], resumed.steps[scols], check_exact=True)


def test_divergence_stops_keeps_results_and_explains(tmp_path, data_dir):
    cfg = _small(rho=0.0, eta=200.0, steps=40, measure_every=2)
    res = run(cfg, root=tmp_path, progress=False)
    assert res.status["state"] == "diverged"
    assert "step" in res.status and "loss" in res.status["reason"]
    assert len(res.measurements) >= 1 and len(res.steps) >= 1
    with pytest.raises(RunDivergedError, match="smaller eta"):
        run(cfg, root=tmp_path / "again", progress=False, raise_on_divergence=True)
    assert load_run(tmp_path / "again" / cfg.run_name()).status["state"] == "diverged"


def test_chunked_full_batch_gradient_equals_unchunked(tmp_path, data_dir):
    cfg = _small(n_train=100)
    runner = train_mod._Runner(cfg.replace(grad_chunk=None), tmp_path, None, False)
    batch = runner.task.batch_at(0)
    loss, g = runner.grad_fn_for(batch)(runner.params)
    chunked = train_mod._Runner(cfg.replace(grad_chunk=33), tmp_path, None, False)
    loss_c, g_c = chunked.grad_fn_for(batch)(chunked.params)
    assert float(loss_c) == pytest.approx(float(loss), rel=1e-6)
    for a, b in zip(g, g_c, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_minibatch_task_measures_on_batch_and_fixed_data(tmp_path, data_dir):
    cfg = preset_config("shakespeare", "smoke", rho=0.1, steps=4, measure_every=2)
    res = run(cfg, root=tmp_path, progress=False)
    m = res.measurements
    assert set(m["data"]) == {"minibatch", "fixed"}
    assert len(m) == 2 * 3
    assert m["data_label"].str.contains("minibatch of step").any()
    assert "test_loss" in m and m["test_loss"].notna().all()
    # the minibatch measured at step t is the batch of the update at step t: their losses agree
    mb = m[m["data"] == "minibatch"].set_index("step")
    np.testing.assert_allclose(res.steps.set_index("step").loc[[0, 2], "loss"], mb.loc[[0, 2], "loss"], rtol=1e-5)


def test_invalid_config_rejected_before_any_compute(tmp_path):
    with pytest.raises(ConfigError, match="eta"):
        run(preset_config("mnist", "smoke", rho=0.1).replace(eta=-1.0), root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_runs_and_reports(tmp_path, data_dir):
    cmd = [
        sys.executable,
        "-m",
        "samedge_lib.engine.cli",
        "--task",
        "mnist",
        "--preset",
        "smoke",
        "--rho",
        "0.1",
        "--steps",
        "3",
        "--set",
        "measure_every=3",
        "--set",
        "n_train=64",
        "--root",
        str(tmp_path),
        "--no-progress",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "tracking_ratio" in out.stdout and "run folder" in out.stdout
    bad = subprocess.run(cmd[:-1] + ["--set", "hvp=magic"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "'exact'" in bad.stderr


def test_commit_cadence_waits_fifty_times_the_commit_cost(tmp_path, data_dir, monkeypatch):
    """A commit is due after checkpoint_seconds, or after 50x its own cost when that is longer (< 2 % overhead)."""
    runner = train_mod._Runner(_small(checkpoint_seconds=1.0), tmp_path, None, False)
    now = [100.0]
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: now[0])
    runner.last_commit_end, runner.last_commit_at = 100.0, (-1, False)
    for cost, interval in ((0.01, 1.0), (0.1, 5.0), (2.0, 100.0)):
        runner.last_commit_cost = cost
        now[0] = 100.0 + interval * 0.999
        assert not runner.commit_due()
        now[0] = 100.0 + interval
        assert runner.commit_due()
    runner.last_commit_at = (runner.next_step, runner.measured)
    assert not runner.commit_due(), "committed twice at the same boundary"


def test_every_preset_commits_by_default():
    for task in ("mnist", "cifar10", "shakespeare"):
        for preset in ("smoke", "cpu", "paper"):
            cfg = preset_config(task, preset, rho=0.1)
            assert cfg.checkpoint_seconds > 0 or cfg.checkpoint_every > 0


def test_steps_csv_is_formatted_as_pandas_writes_it():
    """The step table is formatted row by row (cheap commits); the bytes must equal DataFrame.to_csv's."""
    from samedge_lib.record import runfolder as rf

    rng = np.random.default_rng(0)
    values = list(rng.standard_normal(500) * 10.0 ** rng.integers(-30, 30, 500))
    values += [0.0, -0.0, 1e-5, 1e16, 1e17, math.inf, -math.inf, math.nan, 0.1, 1 / 3, 5e-324, 1.7976931348623157e308]
    rows = [
        {"step": i, "loss": float(v), "grad_norm": 2 * float(v), "edge": 1.0, "wall_time": 0.5}
        for i, v in enumerate(values)
    ]
    expected = pd.DataFrame(rows, columns=list(rf.STEP_COLUMNS)).to_csv(index=False)
    got = rf.STEPS_HEADER + "".join(rf.csv_line(r[c] for c in rf.STEP_COLUMNS) for r in rows)
    assert got == expected


def test_reading_results_does_not_import_the_engine():
    code = "import sys, samedge_lib.record.results; sys.exit('samedge_lib.engine.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr or "samedge_lib.record.results imported samedge_lib.engine.train"


def test_train_still_exports_the_reader_api():
    from samedge_lib.record import runfolder

    assert train_mod.RunResult is runfolder.RunResult and train_mod.load_run is runfolder.load_run
