"""The sharpness benchmark: its measurement helpers, its command line, and one end-to-end run at `smoke`."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from samedge_lib.chapters import benchmark_measure as bm
from samedge_lib.core.eigen import lanczos
from samedge_lib.core.hessian import dense_hessian
from samedge_lib.engine.device import machine_tag
from samedge_lib.engine.tasks import Batch, Task

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "sharpness_benchmark.py"


# ---------------------------------------------------------------------------------------------- helpers
def test_rel_errors_sorts_both_sides_and_truncates_reference():
    errs = bm.rel_errors([1.0, 2.2], [2.0, 1.0, 0.5])
    assert errs == pytest.approx([0.1, 0.0])


def test_spread_is_median_and_range():
    assert bm.spread([3, 1, 2, 10]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_clock_records_skips_with_reason():
    clock = bm.Clock(max_seconds=1.0)
    assert clock.fits("cheap", 0.0)
    assert not clock.fits("expensive", 1e6)
    assert "expensive" in clock.skipped and "--max-seconds" in clock.skipped["expensive"]
    assert "cheap" not in clock.skipped


def test_machine_tag_on_cpu_counts_cores():
    assert re.fullmatch(r"cpu-\d+core", machine_tag(torch.device("cpu")))


def test_products_to_reach_needs_the_error_to_stay_below():
    assert bm.products_to_reach([0.1, 1e-4, 0.2, 5e-4, 1e-5], 1e-3) == 4
    assert bm.products_to_reach([0.1, 0.01], 1e-3) is None
    assert bm.products_to_reach([1e-4], 1e-3) == 1


def test_equal_accuracy_ratio_and_lower_bound():
    traces = {
        "solvers": {
            "lanczos": {"runs": [{"certified_stop": {"grad_evals": 11, "products": 10, "rel_err": 1e-6}}]},
            "official": {
                "cap_products": 200,
                "runs": [
                    {"products_to_target": 55, "default_stop": {"rel_err": 0.02, "grad_evals": 40}},
                    {"products_to_target": 65, "default_stop": {"rel_err": 0.03, "grad_evals": 30}},
                ],
            },
        }
    }
    eq = bm.equal_accuracy(traces, hvp_s=2.0, fd_s=2.0, grad_s=1.0)
    assert eq["official_grad_evals_to_target"] == 120 and eq["grad_eval_ratio"] == pytest.approx(120 / 11)
    assert eq["time_ratio"] == pytest.approx(60 * 2.0 / (10 * 2.0 + 1.0)) and not eq["lower_bound"]
    traces["solvers"]["official"]["runs"][1]["products_to_target"] = None  # never reached within the cap
    eq = bm.equal_accuracy(traces, hvp_s=2.0, fd_s=2.0, grad_s=1.0)
    assert eq["lower_bound"] and eq["official_products_to_target"] == pytest.approx((55 + 200) / 2)


def test_saved_tensor_count_of_a_known_graph():
    # y = (a * b).sum() saves a and b (4 KiB each); a gradient of a linear map of x saves nothing of size.
    a = torch.ones(1024, requires_grad=True)
    b = torch.full((1024,), 2.0, requires_grad=True)
    mib = bm.saved_tensor_mib(lambda: (a * b).sum())
    assert mib == pytest.approx(2 * 1024 * 4 / 2**20)


def _tiny_point() -> bm.Point:
    """A tanh MLP on 40 random examples, in float32 with a float64 twin, as the benchmark builds a point."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)

    def task(dtype: torch.dtype) -> tuple[Task, Batch]:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype)
        names = [n for n, _ in model.named_parameters()]
        params = [p.detach().clone() for p in model.parameters()]
        batch = Batch(x.to(dtype), y.to(dtype), "40 random examples", "full")
        return Task(model, names, params, "mse_mean", lambda step: batch, None, None, False, {}), batch

    t32, b32 = task(torch.float32)
    t64, b64 = task(torch.float64)
    return bm.Point(t32, b32, t32.params, t64, b64)


def test_solver_rows_against_the_dense_hessian():
    point = _tiny_point()
    lam = torch.linalg.eigvalsh(
        dense_hessian(lambda ps: point.task64.loss(ps, point.batch64), point.operator64().params)
    )
    ref, _ = bm.reference_spectrum(point, 2, torch.device("cpu"))
    assert ref["eigenvalues"] == pytest.approx(sorted(lam.tolist(), reverse=True)[:2], rel=1e-9)
    for solver in ("lanczos", "eigsh"):
        row, res = bm.solve(point, solver, 1, 0, ref["eigenvalues"], torch.device("cpu"))
        # the true residual certifies the error (Weyl), and the cost counts the graph build once
        assert row["max_rel_err"] <= row["certified_rel_err_bound"] + 1e-6 and row["max_rel_err"] < 1e-3
        assert row["n_grad_evals"] == row["n_matvec"] + 1 and row["n_matvec"] == res.n_iter
    row, _ = bm.solve(point, "official", 1, 0, ref["eigenvalues"], torch.device("cpu"))
    assert row["n_grad_evals"] == 2 * row["n_matvec"]  # a finite-difference product is two gradients


def test_traces_replay_the_solver_runs_on_a_tiny_point():
    point = _tiny_point()
    ref, _ = bm.reference_spectrum(point, 1, torch.device("cpu"))
    spec = {"trace_caps": {"lanczos": 30, "power": 60}, "trace_seeds": 1}
    tr = bm.convergence_traces(point, ref["eigenvalues"], spec, bm.Clock(1e6), hvp_s=1.0, fd_s=1.0)
    lz_run, _ = bm.solve(point, "lanczos", 1, 0, ref["eigenvalues"], torch.device("cpu"))
    stop = tr["solvers"]["lanczos"]["runs"][0]["certified_stop"]
    assert stop["products"] == lz_run["n_matvec"]  # same start, same products: the stop is where tol 1e-3 stops
    off_run, _ = bm.solve(point, "official", 1, 0, ref["eigenvalues"], torch.device("cpu"))
    assert tr["solvers"]["official"]["runs"][0]["default_stop"]["products"] == off_run["n_matvec"]
    op = point.operator()
    direct = lanczos(op, k=1, tol=0.0, max_iter=30, generator=torch.Generator().manual_seed(0))
    assert tr["solvers"]["lanczos"]["runs"][0]["values"] == [h[1][0] for h in direct.history]


# ---------------------------------------------------------------------------------------------- command line
def _run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-seconds", "-3"), "--max-seconds must be > 0"),
        (("--device", "tpu"), "invalid choice: 'tpu'"),
        (("--out", "a.json", "--out-dir", "b"), "not both"),
    ],
)
def test_bad_arguments_get_one_line(args, message):
    proc = _run_script(*args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = _run_script("--preset", "smoke", "--threads", "1", "--out", str(out), "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_smoke_json_has_the_expected_sections(smoke_result):
    res, stdout = smoke_result
    assert res["schema"] == "samedge-sharpness-benchmark/2" and res["preset"] == "smoke"
    assert "\n".join(res["summary_lines"]) in stdout
    for key in ("provenance", "settings", "notes", "skipped", "elapsed_s", "summary_lines", "torch", "device"):
        assert key in res, key
    mn = res["mnist"]
    for key in ("setting", "point", "hvp_timing", "reference", "product_bias", "solvers", "overhead", "warm_start"):
        assert key in mn, key
    assert "memory" in mn
    assert set(mn["hvp_timing"]["methods"]) == {"exact", "exact_fresh", "forward_over_reverse", "finite_difference"}
    assert {"lanczos", "eigsh", "pyhessian", "official", "official_exact_hvp"} <= set(mn["solvers"]["top1"])
    assert "tf32" in res["skipped"]  # CUDA only
    for name in ("cnn", "transformer"):  # the smaller models: a pre-trained point, solvers and traces
        sub = res[name]
        assert sub["point"]["loss"] < sub["point"]["loss_init"], name
        assert {"lanczos", "eigsh", "official", "pyhessian", "official_exact_hvp"} <= set(sub["solvers"]["top1"])
        assert set(sub["traces"]["solvers"]) == {"lanczos", "official"}, name
        assert sub["equal_accuracy"]["default_rel_err_at_stop"] <= 1e-3, name
        lz = sub["solvers"]["top1"]["lanczos"]["runs"][0]
        assert lz["max_rel_err"] <= lz["certified_rel_err_bound"] + 1e-6, name


@pytest.mark.slow
def test_smoke_values_are_sane(smoke_result):
    res, _ = smoke_result
    mn = res["mnist"]
    # the point is part-way through training: the loss has fallen, the spectrum is positive at the top
    assert mn["point"]["loss"] < mn["point"]["loss_init"]
    assert mn["point"]["train_accuracy"] > mn["point"]["train_accuracy_init"]
    ref = mn["reference"]
    assert ref["converged"] and max(ref["true_residuals"]) < 1e-8
    assert all(a >= b for a, b in zip(ref["eigenvalues"], ref["eigenvalues"][1:], strict=False))
    assert ref["eigenvalues"][0] > abs(ref["lambda_min_estimate"])
    # an exact float32 product reproduces the float64 eigenvalues at the reference eigenvectors
    assert max(abs(r["rayleigh_rel"]) for r in mn["product_bias"]["exact"]) < 1e-4
    assert len(mn["product_bias"]["finite_difference"]) == 5
    for method, d in mn["hvp_timing"]["methods"].items():
        assert d["median_s"] > 0 and math.isfinite(d["ratio_to_gradient"]), method
    top1 = mn["solvers"]["top1"]
    # cost bookkeeping: a finite-difference product is two gradients; exact products one, plus the build
    for run in top1["official"]["runs"]:
        assert run["n_grad_evals"] == 2 * run["n_matvec"] and 1 <= run["n_matvec"] <= 100
    for solver in ("lanczos", "eigsh"):
        for run in top1[solver]["runs"]:
            assert run["n_grad_evals"] == run["n_matvec"] + 1
            # both stop on a relative residual of 1e-3, which certifies the true error
            assert run["max_rel_err"] <= 1e-3
            assert run["max_rel_err"] <= run["certified_rel_err_bound"] + 1e-6
    # an exact-HVP power iteration agrees with the float64 Lanczos reference (independent algorithm)
    assert top1["official_exact_hvp"]["summary"]["max_rel_err"]["max"] < 1e-2
    over = mn["overhead"]
    for solver in ("lanczos", "official"):
        assert 0 < over[solver]["share_of_wall_time"] < 1
    assert over["lanczos"]["share_in_grad_evals"] < over["official"]["share_in_grad_evals"]
    for case in ("track_eta", "pretrain_eta"):
        warm = mn["warm_start"]["cases"][case]["top1"]
        assert warm["warm"]["warm"] and warm["warm"]["max_rel_err"] <= 1e-3
    t = res["targets"]
    assert t["grad_eval_ratio_official_over_default"] > 1
    assert 0 < t["warm_percent_of_cold_top1_track_eta"] <= 200
    assert 0 < over["lanczos_warm"]["share_of_wall_time"] < 1
    mem = mn["memory"]["saved_tensor_mib"]
    assert mem["check"] > mem["gradient"] > 0  # the check keeps the double-backward graph
    assert any("times fewer gradient evaluations" in line for line in res["summary_lines"])


@pytest.mark.slow
def test_traces_replay_the_solver_runs(smoke_result):
    """The traces (stopping rules off) pass through the solver runs with the same seeds (stopping rules on)."""
    res, _ = smoke_result
    mn = res["mnist"]
    traces, top1 = mn["traces"]["solvers"], mn["solvers"]["top1"]
    # the official rule applied to the trace stops where the official run stopped, at the same value
    off_trace, off_run = traces["official"]["runs"][0], top1["official"]["runs"][0]
    stop = off_trace["default_stop"]["products"]
    assert stop == off_run["n_matvec"]
    assert off_trace["values"][stop - 1] == pytest.approx(off_run["eigenvalues"][0], rel=1e-6)
    # Lanczos from seed 0: its certified stop is where the default (tol 1e-3) run stopped, same value
    lz_trace, lz_run = traces["lanczos"]["runs"][0], top1["lanczos"]["runs"][0]
    assert lz_trace["certified_stop"]["products"] == lz_run["n_matvec"]
    assert lz_trace["values"][lz_run["n_matvec"] - 1] == pytest.approx(lz_run["eigenvalues"][0], rel=1e-9)
    # Ritz values of the top eigenvalue only grow (interlacing) and never exceed the reference
    vals, lam = lz_trace["values"], mn["reference"]["eigenvalues"][0]
    assert all(b >= a - 1e-6 * lam for a, b in zip(vals, vals[1:], strict=False))
    assert max(vals) <= lam * (1 + 1e-5)
    eq = mn["equal_accuracy"]
    assert eq["default_grad_evals"] == lz_run["n_grad_evals"] and eq["grad_eval_ratio"] > 1
