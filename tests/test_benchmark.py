"""The sharpness benchmark script: its helpers, and one end-to-end run at the `smoke` preset."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from scripts import load_script

bench = load_script("benchmarks/sharpness_benchmark.py")


# ---------------------------------------------------------------------------------------------- helpers
def test_rel_errors_sorts_both_sides_and_truncates_reference():
    errs = bench.rel_errors([1.0, 2.2], [2.0, 1.0, 0.5])
    assert errs == pytest.approx([0.1, 0.0])


def test_spread_is_median_and_range():
    assert bench.spread([3, 1, 2, 10]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_clock_records_skips_with_reason():
    clock = bench.Clock(max_seconds=1.0)
    assert clock.fits("cheap", 0.0)
    assert not clock.fits("expensive", 1e6)
    assert "expensive" in clock.skipped and "--max-seconds" in clock.skipped["expensive"]
    assert "cheap" not in clock.skipped


def test_machine_tag_on_cpu_counts_cores():
    assert re.fullmatch(r"cpu-\d+core", bench.machine_tag(torch.device("cpu")))


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", "huge"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--max-seconds", "-3"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--threads", "0"])
    with pytest.raises(ValueError, match="cpu or cuda"):
        bench.pick_device("tpu")


def _synthetic_result() -> dict:
    def summary(evals, err):
        return {
            "n_matvec": {"median": evals, "min": evals, "max": evals, "n": 1},
            "n_grad_evals": {"median": evals, "min": evals, "max": evals, "n": 1},
            "wall_s": {"median": evals / 100, "min": 0, "max": 0, "n": 1},
            "max_rel_err": {"median": err, "min": err, "max": err, "n": 1},
            "all_converged": True,
        }

    return {
        "mnist": {
            "solvers": {
                "top1": {
                    "lanczos": {"summary": summary(12, 5e-4), "runs": [{"true_residuals": [4e-4]}]},
                    "official": {"summary": summary(96, 0.08), "runs": []},
                }
            },
            "warm_start": {
                "cases": {"track_eta": {"eta": 0.01, "steps_between": 100, "top1": {"warm_over_cold_matvec": 0.25}}}
            },
        }
    }


def test_targets_are_computed_from_the_measurements():
    result = _synthetic_result()
    t = bench.targets(result)
    assert t["grad_eval_ratio_official_over_default"] == pytest.approx(8.0)
    assert t["default_reaches_target"] is True
    assert t["warm_percent_of_cold_top1_track_eta"] == pytest.approx(25.0)
    result["targets"] = t
    lines = "\n".join(bench.summary_lines(result))
    assert "default reaches rel. error <= 0.001" in lines and "8.0 times fewer" in lines
    assert "warm start after 100 steps at eta 0.01: 25% of a cold start's HVPs (top1)" in lines


def test_official_default_stop_replays_the_rule():
    # dummy n_0 = 1: 2.0 changes by 1.0 (> 1e-3 * 2), 2.5 by 0.5, 2.5005 by 5e-4 <= 2.5e-3: stop after 3
    assert bench.official_default_stop([2.0, 2.5, 2.5005, 2.6]) == 3
    # a first norm within 1e-3 of the dummy 1.0 stops at once; a tiny norm (<= abs_tol) too
    assert bench.official_default_stop([1.0005, 3.0]) == 1
    assert bench.official_default_stop([0.5, 0.0009]) == 2
    # never met: the whole trace
    assert bench.official_default_stop([3.0, 6.0, 12.0]) == 3


def test_products_to_reach_needs_the_error_to_stay_below():
    assert bench.products_to_reach([0.1, 1e-4, 0.2, 5e-4, 1e-5], 1e-3) == 4
    assert bench.products_to_reach([0.1, 0.01], 1e-3) is None
    assert bench.products_to_reach([1e-4], 1e-3) == 1


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
    eq = bench.equal_accuracy(traces, hvp_s=2.0, fd_s=2.0, grad_s=1.0)
    assert eq["official_grad_evals_to_target"] == 120 and eq["grad_eval_ratio"] == pytest.approx(120 / 11)
    assert eq["time_ratio"] == pytest.approx(60 * 2.0 / (10 * 2.0 + 1.0)) and not eq["lower_bound"]
    traces["solvers"]["official"]["runs"][1]["products_to_target"] = None  # never reached within the cap
    eq = bench.equal_accuracy(traces, hvp_s=2.0, fd_s=2.0, grad_s=1.0)
    assert eq["lower_bound"] and eq["official_products_to_target"] == pytest.approx((55 + 200) / 2)


def test_target_line_says_when_the_default_misses():
    result = _synthetic_result()
    result["mnist"]["solvers"]["top1"]["lanczos"]["summary"]["max_rel_err"]["max"] = 5e-3
    result["targets"] = bench.targets(result)
    assert "does NOT reach" in "\n".join(bench.summary_lines(result))


def test_saved_tensor_count_of_a_known_graph():
    # y = (a * b).sum() saves a and b (4 KiB each); a gradient of a linear map of x saves nothing of size.
    a = torch.ones(1024, requires_grad=True)
    b = torch.full((1024,), 2.0, requires_grad=True)
    mib = bench.saved_tensor_mib(lambda: (a * b).sum())
    assert mib == pytest.approx(2 * 1024 * 4 / 2**20)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    threads = torch.get_num_threads()
    try:
        returned = bench.main(["--preset", "smoke", "--threads", "1", "--out", str(out), "--data-dir", str(data_dir)])
    finally:
        torch.set_num_threads(threads)
    return returned, json.loads(out.read_text())


@pytest.mark.slow
def test_smoke_json_has_the_expected_sections(smoke_result):
    returned, res = smoke_result
    assert res["schema"] == bench.SCHEMA and res["preset"] == "smoke"
    assert returned["targets"] == res["targets"]
    for key in (
        "provenance",
        "settings",
        "notes",
        "skipped",
        "elapsed_s",
        "summary_lines",
        "torch",
        "device",
    ):
        assert key in res, key
    mn = res["mnist"]
    for key in (
        "setting",
        "point",
        "hvp_timing",
        "reference",
        "product_bias",
        "solvers",
        "overhead",
        "warm_start",
        "memory",
    ):
        assert key in mn, key
    assert set(mn["hvp_timing"]["methods"]) == {
        "exact",
        "exact_fresh",
        "forward_over_reverse",
        "finite_difference",
    }
    assert {"lanczos", "pyhessian", "official", "official_exact_hvp"} <= set(mn["solvers"]["top1"])
    assert "tf32" in res["skipped"]  # CUDA only
    for name in ("cnn", "transformer"):  # the smaller models: a pre-trained point, solvers and traces
        sub = res[name]
        assert sub["point"]["loss"] < sub["point"]["loss_init"], name
        assert {"lanczos", "official", "pyhessian", "official_exact_hvp"} <= set(sub["solvers"]["top1"]), name
        assert set(sub["traces"]["solvers"]) == {"lanczos", "official"}, name
        assert sub["equal_accuracy"]["default_rel_err_at_stop"] <= 1e-3, name
        lz = sub["solvers"]["top1"]["lanczos"]["runs"][0]
        assert lz["max_rel_err"] <= lz["certified_rel_err_bound"] + 1e-6, name


@pytest.mark.slow
def test_smoke_values_are_sane(smoke_result):
    _, res = smoke_result
    mn = res["mnist"]
    # the point is part-way through training: the loss has fallen, the spectrum is positive at the top
    assert mn["point"]["loss"] < mn["point"]["loss_init"]
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
    for run in top1["lanczos"]["runs"]:
        assert run["n_grad_evals"] == run["n_matvec"] + 1
        # the default meets its tolerance, and its residual certificate bounds the true error
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
    _, res = smoke_result
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
