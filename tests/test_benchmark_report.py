"""The appendix's data layer: reading stored benchmarks, their tables, and the tracking cost of stored runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from samedge_lib.chapters import benchmark_report as br
from samedge_lib.chapters import benchmark_summary as bs
from samedge_lib.engine.train import RunResult
from samedge_lib.record.config import RunConfig
from samedge_lib.record.results import stored_runs

REPO = Path(__file__).resolve().parent.parent
STORED = REPO / "results" / "benchmark"


@pytest.fixture(scope="module")
def stored() -> list[dict]:
    return br.load_benchmarks(STORED)


def test_stored_benchmarks_load_paper_scale_first(stored):
    assert stored, "results/benchmark/ should hold the stored benchmarks"
    presets = [r["preset"] for r in stored]
    assert presets == sorted(presets, key=lambda p: br.PRESET_ORDER[p])
    for r in stored:
        assert Path(r["_file"]).exists()
        # every warm-start section is in the current layout after loading, whatever the file's schema
        cases = r["mnist"].get("warm_start", {}).get("cases", {})
        assert all("eta" in ws and "top1" in ws for ws in cases.values())


def test_schema_1_warm_start_is_rewritten(tmp_path):
    old = {
        "schema": br.SCHEMAS[0],
        "preset": "cpu",
        "machine_tag": "old",
        "mnist": {"point": {"eta": 0.5}, "warm_start": {"steps_between": 100, "top1": {"warm_over_cold_matvec": 0.5}}},
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    (r,) = br.load_benchmarks(tmp_path)
    case = r["mnist"]["warm_start"]["cases"]["pretrain_eta"]
    assert case["eta"] == 0.5 and case["top1"]["warm_over_cold_matvec"] == 0.5


def test_bad_files_are_reported_with_a_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="sharpness_benchmark.py"):
        br.load_benchmarks(tmp_path / "missing")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(br.BenchmarkFileError, match="not valid JSON"):
        br.load_benchmarks(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"schema": "something-else/9"}))
    with pytest.raises(br.BenchmarkFileError, match="Rerun the benchmark"):
        br.load_benchmarks(tmp_path)


def test_tables_cover_every_stored_machine(stored):
    machines = {r["machine_tag"] for r in stored}
    assert set(br.machines_table(stored).columns) == machines
    assert set(br.hvp_table(stored).index.get_level_values("machine")) == machines
    assert set(br.solver_table(stored).index.get_level_values("machine")) == machines
    assert not br.overhead_table(stored).empty and not br.memory_table(stored).empty


def test_headline_of_the_newest_benchmark_matches_its_sections(stored):
    latest = bs.primary_result(stored, schema=br.SCHEMAS[-1])
    h = bs.headline(latest)
    mn = latest["mnist"]
    assert h["default_rel_err"] == mn["solvers"]["top1"]["lanczos"]["summary"]["max_rel_err"]["max"]
    eq = mn["equal_accuracy"]
    assert h["equal_accuracy_grad_eval_ratio"] == eq["official_grad_evals_to_target"] / eq["default_grad_evals"]
    frame = br.trace_frame(latest)
    assert set(frame["solver"]) == set(mn["traces"]["solvers"])
    lz = frame[(frame.solver == "lanczos") & (frame.seed == 0)]
    assert lz["residual"].notna().all() and (frame[frame.solver == "official"]["residual"].isna()).all()
    with pytest.raises(LookupError):
        bs.primary_result([], schema=br.SCHEMAS[-1])


def test_points_and_solver_tables_have_one_row_per_model(stored):
    pts = br.points_table(stored)
    n_sections = sum(len(br.model_sections(r)) for r in stored)
    assert len(pts) == n_sections
    solvers = br.solver_table(stored)
    models = {m.split(",")[0] for m in solvers.index.get_level_values("measurement")}
    assert models == set(pts.index.get_level_values("model"))
    for r in stored:
        assert br.model_sections(r)[0][0] == "mnist"  # MNIST first, the headline model


def test_signed_errors():
    runs = [{"eigenvalues": [0.9]}, {"eigenvalues": [1.1, 0.5]}]
    assert br.signed_errors(runs, [1.0]) == pytest.approx([-0.1, 0.1])


def _run(rows: list[dict], k: int = 2) -> RunResult:
    cfg = RunConfig(task="mnist", eta=0.01, k=k, measure_every=100)
    return RunResult(cfg, Path("runs/synthetic"), pd.DataFrame(rows), pd.DataFrame(), {}, {"device_name": "TestGPU"})


def test_tracking_cost_of_a_synthetic_run():
    # intervals of 10 s; checks of 1 s (products 5), one check with the official estimator (3 s)
    rows = [{"step": 0, "lanczos_matvecs": 20, "official_matvecs": 12, "measure_seconds": 4.0, "wall_time": 4.0}]
    seconds = [1.0, 1.0, 3.0, 1.0]
    for i, sec in enumerate(seconds, start=1):
        rows.append(
            {
                "step": 100 * i,
                "lanczos_matvecs": 5 if sec == 1.0 else 7,
                "official_matvecs": 0 if sec == 1.0 else 30,
                "measure_seconds": sec,
                "wall_time": 4.0 + 10.0 * i,
            }
        )
    c = br.tracking_cost(_run(rows))
    assert c["checks"] == 5 and c["check_every"] == 100 and c["cold_products"] == 20
    assert c["warm_products_median"] == 5 and c["check_seconds_median"] == 1.0
    assert c["share_default"] == pytest.approx(0.1)
    assert c["share_with_official"] == pytest.approx(6.0 / 40.0)
    assert c["device"] == "TestGPU"


def test_tracking_cost_sums_the_two_measurement_sets_of_a_step():
    # minibatch runs measure on the batch and on a fixed batch at the same step: one check, summed
    rows = []
    for step, wall in ((0, 2.0), (100, 12.0), (200, 22.0)):
        for _ in range(2):
            rows.append(
                {"step": step, "lanczos_matvecs": 4, "official_matvecs": 0, "measure_seconds": 0.5, "wall_time": wall}
            )
    c = br.tracking_cost(_run(rows))
    assert c["checks"] == 3 and c["warm_products_median"] == 8
    assert c["share_default"] == pytest.approx(1.0 / 10.0)
    with pytest.raises(ValueError, match="at least two"):
        br.tracking_cost(_run(rows[:2]))


def test_tracking_cost_table_of_the_stored_paper_runs():
    runs = stored_runs(warn=False)
    if not runs:
        pytest.skip("no stored paper-scale runs")
    table = br.tracking_cost_table(runs)
    assert list(table.index) == [r.path.name for r in runs]
    assert list(table["state"]) == [r.state_note or "finished" for r in runs]  # stopped early: shown, issue 19
    for run in runs:
        c = br.tracking_cost(run)
        assert 0 < c["share_default"] < 1 and c["warm_products_median"] >= 1


def test_warm_table_reads_every_case(stored):
    table = br.warm_table(copy.deepcopy(stored))
    n_cases = sum(len(r["mnist"].get("warm_start", {}).get("cases", {})) for r in stored)
    assert len(table.reset_index()["steps at eta"].unique()) <= n_cases and len(table) >= n_cases


# ------------------------------------------------------------------------------------------ headline numbers
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


def test_headline_is_computed_from_the_measurements():
    result = _synthetic_result()
    h = bs.headline(result)
    assert h["own_rule_grad_eval_ratio"] == pytest.approx(8.0) and h["default_reaches_target"] is True
    assert h["warm_percent_top1_track_eta"] == pytest.approx(25.0) and h["warm_eta_track_eta"] == 0.01
    t = bs.stored_targets(result)
    assert t["grad_eval_ratio_official_over_default"] == pytest.approx(8.0)
    assert t["warm_percent_of_cold_top1_track_eta"] == pytest.approx(25.0)
    lines = "\n".join(bs.summary_lines(result))
    assert "default reaches rel. error <= 0.001" in lines and "8.0 times fewer" in lines
    assert "warm start after 100 steps at eta 0.01: 25% of a cold start's HVPs (top1)" in lines


def test_target_line_says_when_the_default_misses():
    result = _synthetic_result()
    result["mnist"]["solvers"]["top1"]["lanczos"]["summary"]["max_rel_err"]["max"] = 5e-3
    assert bs.headline(result)["default_reaches_target"] is False
    assert "does NOT reach" in "\n".join(bs.summary_lines(result))


def test_stored_files_targets_and_summary_are_what_headline_computes(stored):
    """Every current-schema file's ``targets`` block and summary were written by the benchmark of the day:
    recomputing them from the file's sections with the one headline function gives the same, key for key.
    """
    current = [r for r in stored if r["schema"] == br.SCHEMAS[-1]]
    assert current
    for r in current:
        assert bs.stored_targets(r) == r["targets"], r["machine_tag"]
        assert bs.summary_lines(r) == r["summary_lines"], r["machine_tag"]


def _scaling(tag: str, device: str, rates: list[float]) -> dict:
    modes = []
    for i, rate in enumerate(rates):
        launcher, processes = ("plain", 1) if i == 0 else ("torchrun", i)
        modes.append(
            {
                "launcher": launcher,
                "processes": processes,
                "threads": 1,
                "name": f"mode {i}",
                "steps_per_s": rate,
                "check_seconds": 1.0 / rate,
                "matvecs_per_check": 12.0,
                "command_seconds": 9.0,
                "speedup_steps": rate / rates[0],
                "speedup_checks": rate / rates[0],
                "versus_first_mode": {
                    "bitwise": i < 2,
                    "first_check": 0.0 if i < 2 else 2e-7,
                    "whole_run": 0.0 if i < 2 else 3e-3,
                },
            }
        )
    return {
        "schema": br.SCALING_SCHEMA,
        "machine_tag": tag,
        "device": device,
        "tasks": [{"task": "mnist", "modes": modes}],
    }


def test_scaling_files_are_read_apart_from_the_sharpness_benchmarks(tmp_path):
    (tmp_path / "distributed-gpu.json").write_text(json.dumps(_scaling("gpu", "cuda", [10.0, 9.8])))
    (tmp_path / "distributed-cpu.json").write_text(json.dumps(_scaling("cpu", "cpu", [4.0, 3.9, 6.0])))
    assert br.load_benchmarks(tmp_path) == []  # not sharpness benchmarks
    found = br.load_scaling(tmp_path)
    assert [r["machine_tag"] for r in found] == ["cpu", "gpu"]  # CPUs first
    table = br.scaling_table(found)
    assert len(table) == 5 and table.loc[("cpu", "mnist", "mode 2"), "speed-up"] == "1.50x"
    assert table.loc[("cpu", "mnist", "mode 1"), "difference at step 0"] == "bitwise"
    assert table.loc[("cpu", "mnist", "mode 2"), "difference at step 0"] == "2.0e-07"
    assert table.loc[("cpu", "mnist", "mode 2"), "over the run"] == "3.0e-03"
    assert br.scaling_mode(found[0], "mnist", "torchrun", 2, 1)["steps_per_s"] == 6.0
    assert br.scaling_mode(found[0], "mnist", "torchrun", 3, 1) is None
    (tmp_path / "distributed-bad.json").write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(br.BenchmarkFileError, match="distributed-bad.json"):
        br.load_scaling(tmp_path)


def test_the_stored_scaling_measurement_is_consistent():
    """The stored CPU file: best rounds are the best of its rounds, speed-ups their ratios, 1 process bitwise."""
    (stored,) = [r for r in br.load_scaling(STORED) if r["device"] == "cpu"]
    for t in stored["tasks"]:
        first = t["modes"][0]
        assert (first["launcher"], first["processes"], first["threads"]) == ("plain", 1, 1)
        for m in t["modes"]:
            assert m["steps_per_s"] == max(m["steps_per_s_rounds"]) and m["check_seconds"] == min(
                m["check_seconds_rounds"]
            )
            assert m["speedup_steps"] == pytest.approx(m["steps_per_s"] / first["steps_per_s"])
            assert m["speedup_checks"] == pytest.approx(first["check_seconds"] / m["check_seconds"])
            assert (
                m["rounds_bitwise"] and len(m["versus_first_mode"]["loss_rel_diff_by_step"]) == t["overrides"]["steps"]
            )
        assert br.scaling_mode(stored, t["task"], "torchrun", 1, 1)["versus_first_mode"]["bitwise"]
        assert br.scaling_mode(stored, t["task"], "torchrun", 2, 1)["world_size"] == 2
    assert len(br.scaling_table([stored])) == sum(len(t["modes"]) for t in stored["tasks"])


# ------------------------------------------------------------------------------- what the appendix shows
def test_summary_table_holds_each_headline_number_once_per_machine(stored):
    table = bs.summary_table(stored)
    assert list(table.columns) == ["quantity", *(r["machine_tag"] for r in stored)]
    assert table["quantity"].is_unique
    for r in stored:
        h = bs.headline(r)
        row = table.set_index("quantity")[r["machine_tag"]]
        assert row["official estimator: median error, with its own stopping rule"] == f"{h['official_rel_err']:.1e}"
        ratio = row["gradient evaluations to stay within 0.001, official / default"]
        if "equal_accuracy_grad_eval_ratio" in h:
            bound = "≥ " if h["equal_accuracy_lower_bound"] else ""
            assert ratio == f"{bound}{h['equal_accuracy_grad_eval_ratio']:.1f}x"
        else:  # recorded before the cost-to-accuracy section existed: no number, not a made-up one
            assert pd.isna(ratio)


def test_summary_table_leaves_out_what_no_benchmark_measured():
    result = _synthetic_result() | {"machine_tag": "synthetic"}
    table = bs.summary_table([result]).set_index("quantity")["synthetic"]
    assert table["gradient evaluations, official / default, each with its own stopping rule"] == "8.0x"
    assert (
        table["warm start at the tracked runs' step size: products, share of a cold start's (top eigenvalue)"] == "25%"
    )
    assert not any("finite-difference" in q for q in table.index)  # no product-bias or HVP-timing section


def test_stored_notes_and_schemas_are_worded_for_the_reader(stored):
    assert br.notes_text(["machine shared with other agents' jobs (see the load averages)", "done."]) == (
        "Other jobs were running on the machine (see the load averages). Done."
    )
    table = br.machines_table(stored)
    assert set(table.loc["recorded"]) <= set(br.SCHEMA_RECORDED.values())
    scaling = br.load_scaling(STORED)
    for text in [*table.loc["conditions"], *(br.notes_text(r["notes"]) for r in scaling)]:
        assert "agents" not in text


def test_prose_numbers_are_formatted_as_the_text_states_them():
    assert bs.sci_md(1e-3) == "$10^{-3}$" and bs.sci_md(8.6e-4) == r"$8.6\cdot10^{-4}$"
    assert bs.sci_md(0.0221) == r"$2.2\cdot10^{-2}$" and bs.sci_md(3.6e4) == r"$3.6\cdot10^{4}$"
    assert bs.span_md([1.37, 2.1], ".1f", "x") == "1.4–2.1x" and bs.span_md([5, 5], "d") == "5"
    # the word comes from the numbers, the factor is the larger over the smaller
    words = {"more": "later", "less": "sooner", "same": "as soon"}
    assert bs.times_words(12, 140, **words, spec=".0f") == "12 times sooner"
    assert bs.times_words(140, 12, **words, spec=".0f") == "12 times later"
    assert bs.times_words(7, 7, **words) == "as soon"


def _traced(errors_by_start: list[list[float]]) -> dict:
    runs = [{"seed": s, "rel_err": e} for s, e in enumerate(errors_by_start)]
    return {"mnist": {"traces": {"solvers": {"official": {"runs": runs}}}}}


def test_second_half_errors_read_where_the_iteration_settles():
    result = _traced([[0.9, 0.5, 2e-3, 4e-3], [0.8, 0.1, 1e-3, 3e-3]])
    s = bs.second_half_errors(result)["mnist"]
    assert s == {"median": pytest.approx(2.5e-3), "min": 1e-3, "max": 4e-3, "starts": 2}
    assert bs.second_half_errors(result, solver="lanczos") == {}


def _warm_case(cold_histories: list[list[float]], warm_history: list[float]) -> dict:
    cold = [{"residual_history": [[i + 1, r] for i, r in enumerate(h)]} for h in cold_histories]
    return {
        "eta": 0.01,
        "steps_between": 100,
        "lambda1_change": -0.02,
        "top1": {
            "cold": {"runs": cold},
            "warm": {"residual_history": [[i + 1, r] for i, r in enumerate(warm_history)]},
            "warm_over_cold_matvec": 0.4,
            "start_rayleigh_rel_err": 1e-3,
        },
    }


def test_warm_case_numbers_place_the_warm_start_against_the_cold_plateau():
    # two cold runs of 8 products: the middle half (products 3-6) holds 0.01 ... 0.04
    cold = [[20, 0.5, 0.04, 0.03, 0.02, 0.01, 1e-3, 1e-4], [20, 0.5, 0.04, 0.03, 0.02, 0.01, 1e-3, 1e-4]]
    lo, hi = bs.residual_plateau(_warm_case(cold, [0.02]))
    assert lo == pytest.approx(0.0175) and hi == pytest.approx(0.0325)
    n = bs.warm_case_numbers(_warm_case(cold, [0.02, 1e-3]))
    assert n["start_residual"] == 0.02 and n["start_error"] == 1e-3 and n["warm_percent"] == pytest.approx(40)
    assert bs.position_words(n["start_residual"], n["plateau_lo"], n["plateau_hi"]) == "inside"
    assert bs.position_words(0.1, lo, hi) == "above" and bs.position_words(1e-3, lo, hi) == "below"


def test_official_signs_count_the_starts_below_the_reference():
    section = {
        "reference": {"eigenvalues": [2.0, 1.0]},
        "solvers": {
            "top1": {"official": {"runs": [{"eigenvalues": [1.9]}, {"eigenvalues": [2.1]}, {"eigenvalues": [1.8]}]}},
            "top5": {"lanczos": {"runs": [{"eigenvalues": [1.0]}]}},
        },
    }
    assert bs.official_signs([{"mnist": section}]) == (2, 3)
    assert bs.top_spread({"mnist": section}) == pytest.approx(0.5)


def test_check_share_converts_to_steps_and_to_another_interval():
    # a check of 10 step-times every 90 steps takes 10 % of the time; every 180 steps, 10 / 190
    assert bs.check_cost_in_steps(0.1, 90) == pytest.approx(10)
    assert bs.share_at(0.1, 2) == pytest.approx(10 / 190)
    assert bs.share_at(0.1, 1) == pytest.approx(0.1)
