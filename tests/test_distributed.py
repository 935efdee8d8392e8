"""Data-parallel runs under ``torchrun`` (gloo, 2 and 3 processes on this CPU) against the one-process run.

The truth is the plain one-process run of the same configuration. A run on N processes must give the same
numbers to float32 round-off at every step and every check (not bitwise: the all-reduce adds the shards'
partial sums in another order than one process sums the rows), exactly the same integers (steps, Lanczos
products, convergence flags, batch sizes and labels), and bitwise the same numbers when it is resumed with
the same number of processes. Ranks > 0 must never touch the run folder (an audit hook watches them), and an
error on one rank must end every rank with one message.

Each launch of ``torchrun`` runs several jobs in one process group (``tests/distributed_worker.py``), so that
the start-up of the workers is paid once per world size.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from samedge_lib.engine import cli as run_cli
from samedge_lib.engine import distributed
from samedge_lib.engine.tasks import build_task
from samedge_lib.engine.train import run
from samedge_lib.record.config import ConfigError, preset_config
from samedge_lib.record.runfolder import load_run

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "distributed_worker.py"
TIMING = {"wall_time", "measure_seconds"}

#: Largest relative difference allowed between an N-process and the one-process run, per logged quantity.
#: Float32's unit round-off is 6e-8; ten steps and a Lanczos solve carry the all-reduce's other summation order
#: to at most 2.6e-6 here (the Transformer's lambda_1; most quantities stay below 2e-7). A shard counted twice or
#: lost moves every quantity by percents, so 1e-5 separates the two by three orders of magnitude.
RTOL = 1e-5
#: Alignments (cosines in [0, 1], often near 0) and Lanczos residuals (round-off sized themselves) are compared by
#: their absolute difference: measured at most 9.3e-7 and 1.2e-8.
ABSOLUTE = ("residual_", "align_")
ATOL = 1e-5
#: The official estimator differentiates gradients by finite differences with a step of 1e-3, which multiplies
#: the gradients' round-off by about 1e3 (``samedge_lib.core.hessian``'s docstring); measured 5.9e-6.
RTOL_FINITE_DIFFERENCE = 1e-3


def _configs() -> dict:
    mnist = dict(n_train=128, n_test=64, rho=0.1)
    return {
        # full batch, SAM, the Lanczos tracker (k = 2) and the official estimator at every check
        "mnist": preset_config("mnist", "smoke", steps=10, measure_every=5, official_every=1, **mnist),
        # minibatches split across ranks, measured on the step's batch and on the fixed batch
        "shakespeare": preset_config("shakespeare", "smoke", rho=0.1, steps=6, measure_every=3),
        # the cheaper run of the resume tests and of three processes (uneven shards: 43, 43, 42 rows)
        "lite": preset_config("mnist", "smoke", steps=8, measure_every=4, k=1, **mnist),
    }


CONFIGS = _configs()


def differences(ref: pd.DataFrame, other: pd.DataFrame) -> dict[str, float]:
    """Largest relative difference per numeric column (absolute for residuals); other columns must be equal."""
    assert list(ref.columns) == list(other.columns) and len(ref) == len(other)
    out = {}
    for col in ref.columns:
        if col in TIMING:
            continue
        a, b = ref[col], other[col]
        if a.dtype.kind != "f":
            assert a.tolist() == b.tolist(), f"{col} differs: {a.tolist()} != {b.tolist()}"
            continue
        a, b = a.to_numpy(), b.to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all(), f"{col}: NaN in one run only"
        ok = ~np.isnan(a)
        if not ok.any():
            continue
        diff = np.abs(a[ok] - b[ok])
        absolute = col.startswith(ABSOLUTE)
        out[col] = float(diff.max() if absolute else (diff / np.abs(a[ok]).clip(1e-30)).max())
    return out


def assert_same_to_roundoff(ref, other, label: str) -> dict[str, float]:
    """Every step and every check of ``other`` equals ``ref`` within the tolerances above; returns the differences."""
    found = {}
    for table in ("steps", "measurements"):
        for col, d in differences(getattr(ref, table), getattr(other, table)).items():
            found[f"{table}.{col}"] = d
            if col.startswith(ABSOLUTE):
                limit = ATOL
            else:
                limit = RTOL_FINITE_DIFFERENCE if col == "official_lambda" else RTOL
            assert d <= limit, f"{label}: {table}.{col} differs by {d:.3g} > {limit:g}"
    return found


def assert_bitwise(a, b) -> None:
    for table in ("steps", "measurements"):
        x, y = getattr(a, table), getattr(b, table)
        cols = [c for c in x.columns if c not in TIMING]
        pd.testing.assert_frame_equal(x[cols], y[cols], check_exact=True)


def torchrun(nproc: int, spec: dict, tmp: Path) -> dict[int, dict]:
    """Launch ``tests/distributed_worker.py`` on ``nproc`` gloo processes; every rank's report."""
    out = tmp / f"out{nproc}"
    out.mkdir()
    spec = {**spec, "out": str(out)}
    (tmp / f"spec{nproc}.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    proc = subprocess.run(
        [*cmd, str(WORKER), str(tmp / f"spec{nproc}.json")], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)}


def job(name: str, cfg, root: Path, **extra) -> dict:
    return {"name": name, "cfg": cfg.to_dict(), "root": str(root), **extra}


@pytest.fixture(scope="module")
def launches(tmp_path_factory, data_dir):
    """The one-process references and the 2- and 3-process launches, with every folder they wrote."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the thread count changes matmul sums too, this test is about ranks
    try:
        return _launch(tmp_path_factory.mktemp("distributed"))
    finally:
        torch.set_num_threads(threads)


def _launch(tmp: Path) -> dict:
    roots = {name: tmp / name for name in ("ref", "w2", "w3", "r12", "r21", "r22", "r23", "bad", "lost")}
    ref = {name: run(cfg, root=roots["ref"], progress=False) for name, cfg in CONFIGS.items()}
    lite = CONFIGS["lite"]
    run(lite, root=roots["r12"], progress=False, stop_after=3)  # one process, then two
    watch = [str(p) for p in roots.values()]
    bad_argv = ["--task", "mnist", "--preset", "smoke", "--set", "n_train=100000000", "--root", str(roots["bad"])]
    jobs2 = [
        *(job(f"{name}", cfg, roots["w2"]) for name, cfg in CONFIGS.items()),
        job("r12", lite, roots["r12"]),
        job("r21", lite, roots["r21"], stop_after=4),  # two processes, then one
        job("r22-part", lite, roots["r22"], stop_after=3),  # two, then two again
        job("r22", lite, roots["r22"]),
        job("r23", lite, roots["r23"], stop_after=6),  # two, then three
        {"name": "cli-ok", "argv": ["--root", str(roots["w2"]), *_argv(lite)]},
        {"name": "cli-loads-solo", "argv": ["--root", str(roots["ref"]), "--no-progress", *_argv(lite)]},
        {"name": "cli-bad", "argv": bad_argv},
        job("data-fails", lite, roots["bad"], fault={"kind": "data_fails", "rank": 1}),
        {
            "name": "peer-lost",
            "argv": ["--root", str(roots["lost"]), "--seed", "7", "--no-progress", *_argv(lite)],
            "fault": {"kind": "peer_lost", "rank": 1, "after_gradients": 4},
        },
    ]
    two = torchrun(2, {"watch": watch, "jobs": jobs2}, tmp)
    jobs3 = [job("lite", lite, roots["w3"]), job("r23", lite, roots["r23"])]
    three = torchrun(3, {"watch": watch, "jobs": jobs3}, tmp)
    run(lite, root=roots["r21"], progress=False)
    return {"ref": ref, "roots": roots, 2: two, 3: three}


def _argv(cfg) -> list[str]:
    """The command line that builds ``cfg`` from the smoke preset."""
    keys = ("n_train", "n_test", "official_every", "steps", "measure_every", "k")
    return [
        "--task",
        cfg.task,
        "--preset",
        "smoke",
        "--rho",
        str(cfg.rho),
        *[f"--set={k}={getattr(cfg, k)}" for k in keys],
    ]


def _result(launches, world: int, name: str):
    report = launches[world][0]["jobs"][name]
    assert report.get("state") == "finished", report
    return load_run(Path(report["path"]))


@pytest.mark.parametrize("world", [2, 3])
def test_n_processes_equal_one_process_at_every_step_and_check(launches, world):
    names = list(CONFIGS) if world == 2 else ["lite"]
    for name in names:
        got = _result(launches, world, name)
        assert got.path.parent == launches["roots"][f"w{world}"]
        found = assert_same_to_roundoff(launches["ref"][name], got, f"{name} on {world} processes")
        print(f"\n{name}, {world} processes, largest difference per quantity:")
        for key, d in sorted(found.items()):
            print(f"  {key:32s} {d:.3g}")
        assert got.provenance["distributed"] == {
            "backend": "gloo",
            "world_size": world,
            "hosts": [os.uname().nodename] * world,
        }
        # every rank returned the same result (rank 0 read it and sent it)
        paths = {launches[world][r]["jobs"][name]["path"] for r in range(world)}
        assert paths == {str(got.path)}


def test_shards_cover_each_batch_once(launches):
    """The measured batches are the whole batches: labels and sizes are the one-process run's."""
    got = _result(launches, 3, "lite")
    assert (got.measurements["n_examples"] == 128).all()
    assert got.measurements["data_label"].str.contains(r"train\[0:128\]").all()
    shakespeare = _result(launches, 2, "shakespeare")
    assert set(shakespeare.measurements["n_examples"]) == {CONFIGS["shakespeare"].batch_size}
    assert set(shakespeare.measurements["data"]) == {"minibatch", "fixed"}


def test_resume_with_another_number_of_processes(launches):
    ref = launches["ref"]["lite"]
    roots = launches["roots"]
    for name, sizes in (("r12", [1, 2]), ("r21", [2, 1]), ("r23", [2, 3])):
        got = load_run(next(roots[name].iterdir()))
        assert got.finished
        assert [s["world_size"] for s in got.provenance["sessions"]] == sizes
        assert_same_to_roundoff(ref, got, f"resumed {name}")
    # the steps the single process computed before handing over are its own, bitwise
    r12 = load_run(next(roots["r12"].iterdir()))
    pd.testing.assert_frame_equal(
        r12.steps.iloc[:3].drop(columns="wall_time"), ref.steps.iloc[:3].drop(columns="wall_time")
    )


def test_resume_with_the_same_number_of_processes_is_bitwise(launches):
    assert launches[2][0]["jobs"]["r22-part"]["state"] == "interrupted"
    assert_bitwise(_result(launches, 2, "lite"), _result(launches, 2, "r22"))


def test_only_rank_0_touches_the_run_folders(launches):
    for world in (2, 3):
        for rank in range(1, world):
            assert launches[world][rank]["touched"] == [], f"rank {rank} of {world} touched the run folders"
        # ... and rank 0 did write them (the hook watches ranks > 0 only; this shows the folders are the runs')
    assert any(launches["roots"]["w3"].iterdir())


def test_the_command_line_prints_once(launches):
    ok = [launches[2][r]["jobs"]["cli-ok"] for r in (0, 1)]
    assert [o["exit"] for o in ok] == [0, 0]
    assert "run folder:" in ok[0]["stdout"] and ok[1]["stdout"] == "" and ok[1]["stderr"] == ""
    bad = [launches[2][r]["jobs"]["cli-bad"] for r in (0, 1)]
    assert [o["exit"] for o in bad] == [2, 2]
    lines = bad[0]["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("samedge-run: invalid configuration:") and "n_train" in lines[0]
    assert bad[1]["stderr"] == ""


def test_loading_a_one_process_result_says_so(launches):
    """issue 19, item 7: torchrun silently loaded the finished one-process run of the same configuration."""
    got = [launches[2][r]["jobs"]["cli-loads-solo"] for r in (0, 1)]
    assert [g["exit"] for g in got] == [0, 0]
    lines = got[0]["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("samedge_lib.engine.train: loaded the finished run ")
    assert "computed by 1 process(es), not by these 2" in lines[0] and "--force recomputes it with 2" in lines[0]
    assert got[1]["stderr"] == ""  # rank 0 alone says it


def test_an_error_on_one_rank_ends_every_rank_with_its_message(launches):
    fails = [launches[2][r]["jobs"]["data-fails"] for r in (0, 1)]
    assert [f["error"] for f in fails] == ["DataError", "DataError"]
    assert fails[0]["message"].startswith("rank 1 of 2: ") and "missing on this node" in fails[0]["message"]
    bad = launches["roots"]["bad"]
    assert not bad.exists() or not any(bad.iterdir()), "a run that failed to load its data created files"


def test_a_rank_that_dies_mid_run_leaves_a_resumable_folder(launches):
    """Rank 1 runs out of memory mid-run: it says so, rank 0 says it lost a peer and saves the last step."""
    lost = [launches[2][r]["jobs"]["peer-lost"] for r in (0, 1)]
    assert [x["exit"] for x in lost] == [run_cli.EXIT_DISTRIBUTED, run_cli.EXIT_DATA_DEVICE]
    (line0,) = lost[0]["stderr"].splitlines()
    (line1,) = lost[1]["stderr"].splitlines()
    assert line0.startswith("samedge-run: distributed run error: rank 0 of 2: all_reduce failed")
    assert "another process of the run ended" in line0
    assert line1.startswith("samedge-run (rank 1 of 2): device error:") and "out of memory" in line1
    folder = next(launches["roots"]["lost"].iterdir())
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "failed" and "another process of the run ended" in status["reason"]
    cfg = CONFIGS["lite"].replace(seed=7)
    resumed = run(cfg, root=launches["roots"]["lost"], progress=False)  # one process finishes it
    assert resumed.finished and resumed.status["steps_done"] == cfg.steps


# --------------------------------------------------------------------------------------------------------------
# Without processes: the launch environment, the backend, the shards
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "nccl", "backend"),
    [("cuda", True, "nccl"), ("cuda", False, "gloo"), ("cpu", True, "gloo"), ("cpu", False, "gloo")],
)
def test_backend_is_nccl_on_gpus_and_gloo_otherwise(device, nccl, backend):
    assert distributed.choose_backend(device, nccl) == backend


def test_a_plain_process_joins_no_group(monkeypatch):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and distributed.setup(torch.device("cpu")) is None
    monkeypatch.setenv("RANK", "1")  # a partial environment is not a launch
    assert not distributed.launched() and distributed.env_rank() == 0


@pytest.mark.parametrize("n", [1, 7, 8, 128, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_split_rows_like_tensor_split(n, world):
    if n < world:
        return
    rows = torch.arange(n)
    expected = torch.tensor_split(rows, world)
    for rank in range(world):
        start, stop = distributed.shard_bounds(n, rank, world)
        assert torch.equal(rows[start:stop], expected[rank])
    assert math.isclose(sum(len(e) for e in expected), n)


class _UnpicklableError(RuntimeError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.hook = lambda: None  # a lambda cannot be pickled


def test_errors_travel_between_ranks_with_the_rank_that_raised_them():
    copy = distributed._from_rank(ConfigError("eta=-1 must be > 0"), 1, 3)
    assert type(copy) is ConfigError and str(copy) == "rank 1 of 3: eta=-1 must be > 0" and copy.shared
    same = distributed._from_rank(ConfigError("eta=-1 must be > 0"), 0, 3)
    assert str(same) == "eta=-1 must be > 0" and same.shared
    sent = distributed._shareable(_UnpicklableError("the GPU fell off the bus"))
    assert type(sent) is RuntimeError and str(sent) == "_UnpicklableError: the GPU fell off the bus"


@pytest.mark.parametrize(
    ("task", "overrides"),
    [
        ("mnist", {"n_train": 61}),  # the official squared error, 61 rows over 3 shards: 21, 20, 20
        ("mnist", {"n_train": 61, "loss": "mse_half_sum"}),
        ("shakespeare", {"batch_size": 7}),  # token cross-entropy on a minibatch of 7 sequences
    ],
)
def test_shard_gradients_and_products_weighted_by_their_share_sum_to_the_whole_batch(task, overrides, data_dir):
    """What each rank contributes to the all-reduce, summed here in float64, is the whole batch's gradient and H v."""
    cfg = preset_config(task, "smoke", rho=0.1, n_test=16, **overrides)
    cpu, f64 = torch.device("cpu"), torch.float64
    whole = build_task(cfg, cpu, f64)
    batch = whole.batch_at(3)
    params = whole.params
    loss, grads = whole.grad_fn(batch)(params)
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0), dtype=f64)
    hv = whole.operator(params, batch).matvec(v)
    world = 3
    parts = []
    for rank in range(world):
        comm = distributed.Communicator(rank, world, rank, "gloo", cpu)  # no group: the sums are taken below
        shard = build_task(cfg, cpu, f64, comm=comm)
        piece = shard.batch_at(3)
        assert piece.global_size == batch.size and piece.label == batch.label
        for chunk in (None, 2):
            parts.append((chunk, *shard._shard_grad_fn(piece, chunk)(params)))
        parts.append(("hv", shard.operator(params, piece).local.matvec(v), None))
    for chunk in (None, 2):
        mine = [(loss_r, g_r) for c, loss_r, g_r in parts if c == chunk]
        assert float(sum(x for x, _ in mine)) == pytest.approx(float(loss), rel=1e-12)
        for i, g in enumerate(grads):
            torch.testing.assert_close(sum(g_r[i] for _, g_r in mine), g, rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(sum(h for c, h, _ in parts if c == "hv"), hv, rtol=1e-10, atol=1e-13)
