"""Tables and headline numbers from the stored sharpness benchmarks and the stored paper-scale runs.

The benchmark (``benchmarks/sharpness_benchmark.py``) writes one JSON file per machine under
``results/benchmark/``; the appendix chapter reads them through this module and never recomputes them.
Everything here is pure data handling: files in, :class:`pandas.DataFrame` tables and plain numbers out
(the figures are in :mod:`samedge_lib.reading.plots`).

Two schema versions exist. Version 1 (written before the convergence traces were added) has one
warm-start case (100 steps at the pre-training step size) and no traces; :func:`load_benchmarks`
rewrites its warm-start section into version 2's layout so that the tables need not care.

:func:`tracking_cost` reads the *real* cost of sharpness tracking from a stored run's measurement table
(products per check, seconds per check, the share of wall time), which is the tracking-overhead number
the benchmark can only estimate from one point.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from samedge_lib.chapters.benchmark_measure import TARGET_REL_ERR
from samedge_lib.engine.train import RunResult

#: Schemas this module reads (the benchmark's ``SCHEMA``, old and current).
SCHEMAS: tuple[str, ...] = ("samedge-sharpness-benchmark/1", "samedge-sharpness-benchmark/2")
#: Schema of ``benchmarks/sam_speed.py`` (PyTorch against the JAX reference loop), stored alongside.
SPEED_SCHEMA = "samedge-sam-speed/1"
#: Schema of ``benchmarks/distributed_scaling.py`` (steps/s against the number of processes), stored alongside.
SCALING_SCHEMA = "samedge-distributed-scaling/1"
#: Paper-scale files first, then CPU, then smoke.
PRESET_ORDER = {"paper": 0, "cpu": 1, "smoke": 2}
#: Readable names of the solvers the benchmark compares.
SOLVER_LABELS = {
    "lanczos": "default (Lanczos, exact HVP, tol 1e-3)",
    "eigsh": "scipy eigsh (ARPACK, exact HVP, tol 1e-3)",
    "pyhessian": "PyHessian-style power iteration",
    "official": "official (finite-difference power iteration)",
    "official_exact_hvp": "official power iteration on exact HVPs",
}
#: Short solver names for wide tables (the chapter's text introduces them).
SOLVER_SHORT = {
    "lanczos": "default",
    "eigsh": "eigsh",
    "pyhessian": "PyHessian",
    "official": "official",
    "official_exact_hvp": "official, exact HVPs",
}
#: Readable names of the benchmark's models.
MODELS = {"mnist": "MNIST MLP", "cnn": "CIFAR-10 CNN", "transformer": "Transformer"}
#: Readable names of the warm-start cases.
WARM_CASES = {
    "track_eta": "the tracked runs' step size",
    "pretrain_eta": "the pre-training step size",
}


class BenchmarkFileError(ValueError):
    """A file in the benchmark folder is not a benchmark result this module can read."""


def fmt(x: float | None, spec: str = ".3g") -> str:
    """A number for a table cell ('-' when missing)."""
    return "-" if x is None else format(x, spec)


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a version-1 warm-start section into version 2's ``{"cases": {...}}`` layout."""
    mn = data.get("mnist", {})
    ws = mn.get("warm_start")
    if ws and "cases" not in ws:
        case = dict(ws)
        case.setdefault("eta", mn.get("point", {}).get("eta"))
        mn["warm_start"] = {"cases": {"pretrain_eta": case}}
    return data


def load_benchmarks(folder: str | Path) -> list[dict[str, Any]]:
    """Every stored benchmark in ``folder`` (paper-scale first), each with ``_file`` set to its path.

    Raises:
        FileNotFoundError: the folder does not exist.
        BenchmarkFileError: a ``*.json`` file there is not valid JSON or has an unknown schema.

    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no benchmark folder {folder}; run: python benchmarks/sharpness_benchmark.py --preset cpu"
        )
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BenchmarkFileError(f"{path} is not valid JSON ({exc}); delete it or rerun the benchmark") from exc
        if data.get("schema") in (SPEED_SCHEMA, SCALING_SCHEMA):
            continue  # read by load_speed_comparisons and load_scaling
        if data.get("schema") not in SCHEMAS:
            raise BenchmarkFileError(
                f"{path} has schema {data.get('schema')!r}; this book reads {', '.join(SCHEMAS)}. "
                "Rerun the benchmark to refresh it."
            )
        data["_file"] = str(path)
        found.append(_normalise(data))
    return sorted(found, key=lambda r: (PRESET_ORDER.get(r["preset"], 9), r["machine_tag"]))


def load_speed_comparisons(folder: str | Path) -> list[dict[str, Any]]:
    """The stored ``benchmarks/sam_speed.py`` results in ``folder`` (``sam-speed-*.json``)."""
    found = []
    for path in sorted(Path(folder).glob("sam-speed-*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") != SPEED_SCHEMA:
            raise BenchmarkFileError(f"{path} has schema {data.get('schema')!r}, expected {SPEED_SCHEMA!r}")
        data["_file"] = str(path)
        found.append(data)
    return found


def speed_table(comparisons: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """SAM steps per second with checks, per machine, precision mode and framework."""
    rows = []
    for c in comparisons:
        for mode, entry in c["modes"].items():
            for fw in ("torch", "jax"):
                side = entry.get(fw)
                if side is None:
                    continue
                if "not_run" in side:
                    rows.append({"machine": c["machine_tag"], "precision": mode, "side": fw, "note": side["not_run"]})
                    continue
                rows.append(
                    {
                        "machine": c["machine_tag"],
                        "precision": mode,
                        "side": "this library (PyTorch)" if fw == "torch" else "JAX reference loop",
                        "SAM steps/s with checks": f"{side['steps_per_s_with_checks']:.2f}",
                        "ms per step without checks": f"{side['step_ms_without_checks']:.2f}",
                        "share of time in checks": f"{100 * side['check_share_of_wall']:.1f}%",
                        "PyTorch / JAX": fmt(entry.get("torch_over_jax_steps_per_s"), ".2f") if fw == "torch" else "",
                        "same-start check": fmt(entry.get("verify_max_rel_param_diff"), ".1e") if fw == "torch" else "",
                    }
                )
    return pd.DataFrame(rows).set_index(["machine", "precision", "side"]) if rows else pd.DataFrame()


def load_scaling(folder: str | Path) -> list[dict[str, Any]]:
    """The stored ``benchmarks/distributed_scaling.py`` results in ``folder`` (``distributed-*.json``), CPUs first."""
    found = []
    for path in sorted(Path(folder).glob("distributed-*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") != SCALING_SCHEMA:
            raise BenchmarkFileError(f"{path} has schema {data.get('schema')!r}, expected {SCALING_SCHEMA!r}")
        data["_file"] = str(path)
        found.append(data)
    return sorted(found, key=lambda d: (d["device"] != "cpu", d["machine_tag"]))


def scaling_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Steps per second and seconds per check of each mode (best round), relative to the file's first mode.

    The last two columns compare the mode's numbers with the first mode's (the plain run with one thread):
    "bitwise", or the largest relative difference at the first check (step 0: the round-off of one computation,
    summed in another order by threads or by the all-reduce) and over the whole run (that round-off amplified by
    the training dynamics).
    """
    rows = []
    for r in results:
        for t in r["tasks"]:
            for m in t["modes"]:
                versus = m["versus_first_mode"]
                rows.append(
                    {
                        "machine": r["machine_tag"],
                        "task": t["task"],
                        "mode": m["name"],
                        "steps/s": f"{m['steps_per_s']:.2f}",
                        "speed-up": f"{m['speedup_steps']:.2f}x",
                        "s per check": f"{m['check_seconds']:.3f}",
                        "check speed-up": f"{m['speedup_checks']:.2f}x",
                        "products per check": f"{m['matvecs_per_check']:.0f}",
                        "command s": f"{m['command_seconds']:.1f}",
                        "difference at step 0": "bitwise" if versus["bitwise"] else f"{versus['first_check']:.1e}",
                        "over the run": "bitwise" if versus["bitwise"] else f"{versus['whole_run']:.1e}",
                    }
                )
    return pd.DataFrame(rows).set_index(["machine", "task", "mode"]) if rows else pd.DataFrame()


def scaling_mode(result: dict[str, Any], task: str, launcher: str, processes: int, threads: int | None) -> dict | None:
    """One mode's entry of a stored scaling result (``None`` when it was not measured)."""
    for t in result["tasks"]:
        if t["task"] != task:
            continue
        for m in t["modes"]:
            if (m["launcher"], m["processes"], m["threads"]) == (launcher, processes, threads):
                return m
    return None


def model_sections(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(model key, section)`` for every model of a benchmark that has a solver comparison (MNIST first)."""
    return [(key, result[key]) for key in MODELS if (result.get(key) or {}).get("solvers")]


def signed_errors(runs: Sequence[dict[str, Any]], reference: Sequence[float]) -> list[float]:
    """Signed relative error of the largest returned eigenvalue, per solver run."""
    return [(run["eigenvalues"][0] - reference[0]) / reference[0] for run in runs]


# ------------------------------------------------------------------------------------------------ tables
def machines_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per machine: device, settings and the benchmark point (is it part-way through training?)."""
    rows = {}
    for r in results:
        mn, s = r["mnist"], r["settings"]
        pt = mn["point"]
        rows[r["machine_tag"]] = {
            "device": r["device"],
            "preset": r["preset"],
            "schema": r["schema"].rsplit("/", 1)[-1],
            "torch": r["torch"],
            "threads": s.get("torch_threads"),
            "MNIST model": f"{mn['setting']['model']} ({mn['setting']['n_params']:,} params)",
            "examples": f"{mn['setting']['n_train']:,}",
            "pre-training": f"{pt['pretrain_steps']} SAM steps, eta {pt['eta']:g}, rho {pt['rho']:g}",
            "loss init -> point": f"{pt['loss_init']:.4f} -> {pt['loss']:.4f}",
            "train acc. init -> point": f"{pt['train_accuracy_init']:.2f} -> {pt['train_accuracy']:.2f}",
            "lambda_1 at point": fmt(pt.get("lambda1"), ".4g"),
            "run time [s]": f"{r['elapsed_s']:.0f}",
            "skipped": "; ".join(r["skipped"]) or "-",
        }
    return pd.DataFrame(rows)


def hvp_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Gradient time and each HVP method's time as a multiple of it (graph build in brackets)."""
    rows = []
    for r in results:
        for key, label in MODELS.items():
            ht = (r.get(key) or {}).get("hvp_timing")
            if not ht:
                continue
            row = {
                "machine": r["machine_tag"],
                "model": label,
                "gradient [ms]": f"{1e3 * ht['gradient']['median_s']:.1f}",
            }
            for m, d in ht["methods"].items():
                cell = f"{d['ratio_to_gradient']:.2f}x"
                if d.get("graph_build_ratio"):
                    cell += f" (+{d['graph_build_ratio']:.2f}x)"
                row[m] = cell
            rows.append(row)
    return pd.DataFrame(rows).set_index(["machine", "model"])


def solver_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Each solver with its own stopping rule: products, gradient evaluations, time, error, certificate.

    Medians over the random starts (``runs``); ``worst`` is the largest relative error over them,
    ``signed, top`` the median signed error of the largest returned eigenvalue, ``certificate`` the
    largest true relative residual of the solvers that stop on a residual (the default, eigsh).
    """
    rows = []
    for r in results:
        for model, sec in model_sections(r):
            ref = sec["reference"]["eigenvalues"]
            for key, blk in sec["solvers"].items():
                for solver, d in blk.items():
                    s, e = d["summary"], d["summary"]["max_rel_err"]
                    signed = statistics.median(signed_errors(d["runs"], ref))
                    certified = "true_residuals" in d["runs"][0]
                    cert = max(max(x["true_residuals"]) for x in d["runs"]) if certified else None
                    rows.append(
                        {
                            "machine": r["machine_tag"],
                            "measurement": f"{MODELS[model]}, {key}",
                            "solver": SOLVER_SHORT[solver],
                            "runs": s["n_matvec"]["n"],
                            "HVPs": f"{s['n_matvec']['median']:.0f}",
                            "grad evals": f"{s['n_grad_evals']['median']:.0f}",
                            "wall [s]": f"{s['wall_s']['median']:.3g}",
                            "rel. error": f"{e['median']:.1e}",
                            "worst": f"{e['max']:.1e}",
                            "signed, top": f"{signed:+.1e}",
                            "certificate": fmt(cert, ".1e"),
                        }
                    )
    return pd.DataFrame(rows).set_index(["machine", "measurement", "solver"])


def points_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The weight point of every model with a solver comparison: how it was reached, loss, lambda_1, lambda_2."""
    rows = []
    for r in results:
        for model, sec in model_sections(r):
            pt = sec.get("point", {})
            ref = sec["reference"]["eigenvalues"]
            rows.append(
                {
                    "machine": r["machine_tag"],
                    "model": MODELS[model],
                    "parameters": f"{sec['setting']['n_params']:,}",
                    "pre-training": f"{pt.get('pretrain_steps')} SAM steps, eta {pt.get('eta'):g}",
                    "loss init -> point": f"{pt['loss_init']:.4f} -> {pt['loss']:.4f}" if "loss_init" in pt else "-",
                    "lambda_1": f"{ref[0]:.5g}",
                    "lambda_2 / lambda_1": f"{ref[1] / ref[0]:.4f}" if len(ref) > 1 else "-",
                    "lambda_min (rough)": fmt(sec["reference"].get("lambda_min_estimate"), ".3g"),
                }
            )
    return pd.DataFrame(rows).set_index(["machine", "model"])


def product_bias_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One product at each float64 reference eigenvector: finite difference against exact."""
    rows = []
    for r in results:
        for model, sec in model_sections(r):
            pb = sec.get("product_bias")
            if not pb:
                continue
            for fd, ex in zip(pb["finite_difference"], pb["exact"], strict=True):
                rows.append(
                    {
                        "machine": r["machine_tag"],
                        "model": MODELS[model],
                        "eigenpair": f"lambda_{fd['index']}",
                        "finite difference: (u.Hu - lambda) / lambda": f"{fd['rayleigh_rel']:+.1e}",
                        "finite difference: (|Hu| - lambda) / lambda": f"{fd['norm_rel']:+.1e}",
                        "exact HVP (float32): (u.Hu - lambda) / lambda": f"{ex['rayleigh_rel']:+.1e}",
                    }
                )
    return pd.DataFrame(rows).set_index(["machine", "model", "eigenpair"]) if rows else pd.DataFrame()


def trace_frame(result: dict[str, Any], model: str = "mnist") -> pd.DataFrame:
    """The convergence traces of one model of one benchmark as a long table (empty for schema 1).

    Columns: ``solver``, ``seed``, ``products``, ``grad_evals``, ``rel_err`` and, for Lanczos, the
    relative residual estimate ``residual`` (its certificate).
    """
    rows = []
    for solver, d in (result.get(model) or {}).get("traces", {}).get("solvers", {}).items():
        for run in d["runs"]:
            res = run.get("residual_estimates") or [float("nan")] * len(run["products"])
            for n, g, e, q in zip(run["products"], run["grad_evals"], run["rel_err"], res, strict=True):
                rows.append(
                    {"solver": solver, "seed": run["seed"], "products": n, "grad_evals": g, "rel_err": e, "residual": q}
                )
    return pd.DataFrame(rows)


def equal_accuracy_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Cost to reach the target error: official (oracle stop) against the default (certified stop)."""
    rows = {}
    for r in results:
        for model, sec in model_sections(r):
            eq = sec.get("equal_accuracy")
            if eq:
                rows[f"{r['machine_tag']}, {MODELS[model]}"] = _equal_accuracy_row(eq)
    return pd.DataFrame(rows)


def _equal_accuracy_row(eq: dict[str, Any]) -> dict[str, str]:
    bound = ">= " if eq["lower_bound"] else ""
    return {
        "default: gradient evals (certified stop)": f"{eq['default_grad_evals']:.0f}",
        "default: rel. error there": f"{eq['default_rel_err_at_stop']:.1e}",
        "official: gradient evals to stay <= 1e-3 (oracle)": f"{bound}{eq['official_grad_evals_to_target']:.0f}",
        "ratio (gradient evaluations)": f"{bound}{eq['grad_eval_ratio']:.1f}x",
        "ratio (measured time)": f"{bound}{eq['time_ratio']:.1f}x",
        "official rule: gradient evals": f"{eq['official_default_stop_grad_evals']:.0f}",
        "official rule: rel. error": f"{eq['official_default_stop_rel_err']:.1e}",
    }


def warm_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Warm against cold starts 100 steps after the previous check, per step-size case."""
    rows = []
    for r in results:
        for ws in r["mnist"].get("warm_start", {}).get("cases", {}).values():
            for key in ("top1", "top5"):
                if key not in ws:
                    continue
                c, w = ws[key]["cold"]["summary"], ws[key]["warm"]
                start = ws[key].get("start_rayleigh_rel_err")
                rows.append(
                    {
                        "machine": r["machine_tag"],
                        "steps at eta": f"{ws['steps_between']} at {ws['eta']:g}",
                        "eigenvalues": key,
                        "lambda_1 change": fmt(ws.get("lambda1_change"), "+.1%"),
                        "previous vector's Rayleigh quotient, rel. error": fmt(start, ".1e"),
                        "cold HVPs (median)": f"{c['n_matvec']['median']:.0f}",
                        "warm HVPs": w["n_matvec"],
                        "warm / cold": f"{100 * ws[key]['warm_over_cold_matvec']:.0f}%",
                        "warm max rel. error": f"{w['max_rel_err']:.1e}",
                    }
                )
    return pd.DataFrame(rows).set_index(["machine", "steps at eta", "eigenvalues"]) if rows else pd.DataFrame()


def overhead_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Share of wall time spent measuring at a check every 100 steps, estimated at the benchmark point."""
    labels = {
        "lanczos": "default, cold start",
        "lanczos_warm": "default, warm start (tracked step size)",
        "official": "official estimator",
    }
    rows = []
    for r in results:
        ov = r["mnist"].get("overhead", {})
        for name, label in labels.items():
            if name in ov:
                rows.append(
                    {
                        "machine": r["machine_tag"],
                        "check": label,
                        "SAM step [ms]": f"{1e3 * ov['sam_step']['median_s']:.1f}",
                        "check [ms]": f"{1e3 * ov[name]['check_s']:.0f}",
                        "share of wall time": f"{100 * ov[name]['share_of_wall_time']:.1f}%",
                        "share of gradient evaluations": f"{100 * ov[name]['share_in_grad_evals']:.1f}%",
                    }
                )
    return pd.DataFrame(rows).set_index(["machine", "check"])


def memory_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Peak memory of a gradient and of the two checks, and the bytes autograd saves."""
    rows = {}
    for r in results:
        mem = r["mnist"].get("memory")
        if not mem:
            continue
        st = mem.get("saved_tensor_mib", {})
        rows[r["machine_tag"]] = {
            "parameters [MiB]": f"{mem['param_mib']:.1f}",
            "gradient peak [MiB]": fmt(mem.get("gradient_mib"), ".0f"),
            "default check peak [MiB]": fmt(mem.get("check_mib"), ".0f"),
            "official check peak [MiB]": fmt(mem.get("official_check_mib"), ".0f"),
            "saved for backward: gradient [MiB]": fmt(st.get("gradient"), ".1f"),
            "saved for backward: check [MiB]": fmt(st.get("check"), ".1f"),
            "how": "GPU allocator peak" if mem["how"].startswith("torch.cuda") else "CPU peak RSS (lower bound)",
        }
    return pd.DataFrame(rows).T


def tf32_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """SAM speed and lambda_1 in strict float32 and TF32 (GPU benchmarks only)."""
    rows = {}
    for r in results:
        tf = r["mnist"].get("tf32")
        if not tf:
            continue
        rows[r["machine_tag"]] = {
            "SAM steps/s strict fp32": f"{tf['strict_fp32']['sam_steps_per_s']:.1f}",
            "SAM steps/s TF32": f"{tf['tf32']['sam_steps_per_s']:.1f}",
            "speed-up": f"{tf['speedup_tf32']:.2f}x",
            "lambda_1 rel. change (Lanczos)": f"{tf['lambda1_rel_diff_tf32_vs_strict']:.1e}",
            "official rel. error strict": f"{tf['strict_fp32']['official_rel_err_vs_fp64']:.1e}",
            "official rel. error TF32": f"{tf['tf32']['official_rel_err_vs_fp64']:.1e}",
        }
    return pd.DataFrame(rows).T


# ------------------------------------------------------------------------------ real tracking cost
def tracking_cost(run: RunResult) -> dict[str, Any]:
    """What sharpness tracking cost in a stored run, read from its measurement table.

    A check's seconds (``measure_seconds``, all measurements of that step: Lanczos, gradient norms,
    alignments, test loss and, every few checks, the official estimator) against the wall time of the
    interval that ends with it. The first check (at the initialisation, cold start, device warm-up) is
    reported on its own; it is not a controlled warm-against-cold comparison, since later checks measure
    a different (usually more clustered) spectrum;
    ``share_default`` is the median share over intervals whose check did not run the official estimator.
    """
    df = run.measurements
    per_step = df.groupby("step", sort=True).agg(
        products=("lanczos_matvecs", "sum"),
        official=("official_matvecs", "sum"),
        seconds=("measure_seconds", "sum"),
        wall=("wall_time", "max"),
    )
    if len(per_step) < 2:
        raise ValueError(f"run {run.path.name} has {len(per_step)} check(s); the tracking cost needs at least two")
    interval = per_step["wall"].diff().iloc[1:]
    later = per_step.iloc[1:]
    share = later["seconds"] / interval
    default_only = later["official"] == 0
    steps = per_step.index.to_series().diff().iloc[1:]
    return {
        "run": run.path.name,
        "device": run.provenance.get("device_name") or run.provenance.get("device"),
        "checks": int(len(per_step)),
        "check_every": int(steps.median()),
        "k": int(run.config.k),
        "cold_products": int(per_step["products"].iloc[0]),
        "warm_products_median": float(later["products"].median()),
        "check_seconds_median": float(later.loc[default_only, "seconds"].median()),
        "share_default": float(share[default_only].median()),
        "share_with_official": float(later["seconds"].sum() / interval.sum()),
    }


def tracking_cost_table(runs: Sequence[RunResult]) -> pd.DataFrame:
    """:func:`tracking_cost` of several stored runs, as a table."""
    rows = {}
    for run in runs:
        c = tracking_cost(run)
        rows[c["run"]] = {
            "state": run.state_note or "finished",  # a run that stopped early says where (its checks are fewer)
            "device": c["device"],
            "checks (every n steps)": f"{c['checks']} (every {c['check_every']})",
            "k": c["k"],
            "HVPs, first check (initialisation, cold)": c["cold_products"],
            "HVPs, later checks (warm), median": f"{c['warm_products_median']:.0f}",
            "check [s], median": f"{c['check_seconds_median']:.2f}",
            "share of wall time, default checks": f"{100 * c['share_default']:.1f}%",
            "share incl. official estimator": f"{100 * c['share_with_official']:.1f}%",
        }
    return pd.DataFrame(rows).T


# ------------------------------------------------------------------------------------------ headlines
def primary_result(results: Sequence[dict[str, Any]], schema: str | None = None) -> dict[str, Any]:
    """The benchmark the headline numbers come from: the first (paper-scale first) with a solver section,
    restricted to ``schema`` when given; raises ``LookupError`` when none qualifies.
    """
    for r in results:
        if "top1" in r.get("mnist", {}).get("solvers", {}) and (schema is None or r["schema"] == schema):
            return r
    raise LookupError(f"no stored benchmark with a top-1 solver section{f' and schema {schema}' if schema else ''}")


def headline(result: dict[str, Any]) -> dict[str, float | bool]:
    """The headline numbers of one benchmark, computed from its sections (a key is absent when not measured).

    This is the one place they are computed: the appendix glues them, the benchmark prints them
    (:func:`summary_lines`) and stores them under the file's own names (:func:`stored_targets`).
    """
    out: dict[str, float | bool] = {}
    mn = result.get("mnist", {})
    top1 = mn.get("solvers", {}).get("top1", {})
    ref = mn.get("reference", {}).get("eigenvalues")
    if "lanczos" in top1 and "official" in top1:
        lz, off = top1["lanczos"]["summary"], top1["official"]["summary"]
        out |= {
            "default_rel_err": lz["max_rel_err"]["max"],
            "default_reaches_target": lz["max_rel_err"]["max"] <= TARGET_REL_ERR,
            "default_hvps": lz["n_matvec"]["median"],
            "official_rel_err": off["max_rel_err"]["median"],
            "official_rel_err_max": off["max_rel_err"]["max"],
            "official_hvps": off["n_matvec"]["median"],
            "own_rule_grad_eval_ratio": off["n_grad_evals"]["median"] / lz["n_grad_evals"]["median"],
            "own_rule_wall_ratio": off["wall_s"]["median"] / lz["wall_s"]["median"],
        }
        if ref and top1["official"]["runs"]:
            out["official_signed_err"] = statistics.median(signed_errors(top1["official"]["runs"], ref))
    for solver in ("pyhessian", "eigsh"):
        if solver in top1:
            out[f"{solver}_rel_err"] = top1[solver]["summary"]["max_rel_err"]["median"]
            out[f"{solver}_hvps"] = top1[solver]["summary"]["n_matvec"]["median"]
    ht = mn.get("hvp_timing", {}).get("methods", {})
    if ht:
        out["exact_ratio"] = ht["exact"]["ratio_to_gradient"]
        out["fd_ratio"] = ht["finite_difference"]["ratio_to_gradient"]
    pb = mn.get("product_bias")
    if pb:
        out["fd_product_bias_max"] = max(abs(x["rayleigh_rel"]) for x in pb["finite_difference"])
        out["exact_product_bias_max"] = max(abs(x["rayleigh_rel"]) for x in pb["exact"])
    eq = mn.get("equal_accuracy")
    if eq:
        out |= {
            "equal_accuracy_grad_eval_ratio": eq["grad_eval_ratio"],
            "equal_accuracy_time_ratio": eq["time_ratio"],
            "equal_accuracy_lower_bound": eq["lower_bound"],
            "equal_accuracy_meets_3x": eq["grad_eval_ratio"] >= 3,
            "official_grad_evals_to_target": eq["official_grad_evals_to_target"],
            "default_grad_evals_certified": eq["default_grad_evals"],
        }
    for name in ("cnn", "transformer"):
        eq_m = (result.get(name) or {}).get("equal_accuracy")
        if eq_m:
            out[f"{name}_equal_accuracy_grad_eval_ratio"] = eq_m["grad_eval_ratio"]
            out[f"{name}_equal_accuracy_lower_bound"] = eq_m["lower_bound"]
    sv = mn.get("traces", {}).get("solvers", {})
    for name in ("lanczos", "official_exact_hvp", "pyhessian"):
        reached = [r["products_to_target"] for r in sv.get(name, {}).get("runs", [])]
        if reached and all(x is not None for x in reached):
            out[f"{name}_products_to_target"] = statistics.median(reached)
    for case, ws in mn.get("warm_start", {}).get("cases", {}).items():
        for key in ("top1", "top5"):
            if key in ws:
                out[f"warm_percent_{key}_{case}"] = 100 * ws[key]["warm_over_cold_matvec"]
        if "eta" in ws:
            out[f"warm_eta_{case}"] = ws["eta"]
    ov = mn.get("overhead", {})
    for name in ("lanczos", "lanczos_warm", "official"):
        if name in ov:
            out[f"overhead_pct_{name}"] = 100 * ov[name]["share_of_wall_time"]
    st = mn.get("memory", {})
    if st.get("saved_check_over_gradient") is not None:
        out["saved_mem_ratio"] = st["saved_check_over_gradient"]
    return out


#: The ``targets`` block of a stored file: its name of each headline number -> the :func:`headline` key.
#: (``{key}``: top1 or top5; ``{case}``: a warm-start case; ``{name}``: an overhead check or a model.)
STORED_TARGET_NAMES: dict[str, str] = {
    "default_max_rel_err": "default_rel_err",
    "default_reaches_target": "default_reaches_target",
    "official_median_rel_err": "official_rel_err",
    "grad_eval_ratio_official_over_default": "own_rule_grad_eval_ratio",
    "wall_ratio_official_over_default": "own_rule_wall_ratio",
    "equal_accuracy_grad_eval_ratio": "equal_accuracy_grad_eval_ratio",
    "equal_accuracy_time_ratio": "equal_accuracy_time_ratio",
    "equal_accuracy_lower_bound": "equal_accuracy_lower_bound",
    "equal_accuracy_meets_3x": "equal_accuracy_meets_3x",
    "{name}_equal_accuracy_grad_eval_ratio": "{name}_equal_accuracy_grad_eval_ratio",
    "{name}_equal_accuracy_lower_bound": "{name}_equal_accuracy_lower_bound",
    "warm_percent_of_cold_{key}_{case}": "warm_percent_{key}_{case}",
    "overhead_percent_{name}": "overhead_pct_{name}",
}


def stored_targets(result: dict[str, Any]) -> dict[str, float | bool]:
    """:func:`headline` under the names a benchmark file stores in its ``targets`` block (schema 2)."""
    h = headline(result)
    fields = {
        "name": ("cnn", "transformer", "lanczos", "lanczos_warm", "official"),
        "key": ("top1", "top5"),
        "case": tuple(result.get("mnist", {}).get("warm_start", {}).get("cases", {})),
    }
    out: dict[str, float | bool] = {}
    for stored, ours in STORED_TARGET_NAMES.items():
        names = [n for n in fields if "{" + n + "}" in stored]
        combos: list[dict[str, str]] = [{}]
        for n in names:
            combos = [c | {n: v} for c in combos for v in fields[n]]
        for c in combos:
            if ours.format(**c) in h:
                out[stored.format(**c)] = h[ours.format(**c)]
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The human summary of one benchmark (printed by the benchmark and stored in its file)."""
    lines: list[str] = []
    mn = result.get("mnist", {})
    if "hvp_timing" in mn:
        ht = mn["hvp_timing"]
        lines.append(f"gradient: {1e3 * ht['gradient']['median_s']:.1f} ms (median); HVP time / gradient time:")
        for m, d in ht["methods"].items():
            extra = f"  (+ graph build {d['graph_build_ratio']:.2f}x once per point)" if d["graph_build_ratio"] else ""
            lines.append(f"  {m:22s} {d['ratio_to_gradient']:5.2f}x{extra}")
    if "reference" in mn:
        ref = mn["reference"]["eigenvalues"]
        lines.append("float64 reference top-5: " + ", ".join(f"{v:.6g}" for v in ref))
    pb = mn.get("product_bias")
    if pb:
        fd = ", ".join(f"{r['rayleigh_rel']:+.1e}" for r in pb["finite_difference"])
        ex = max(abs(r["rayleigh_rel"]) for r in pb["exact"])
        lines.append(f"one product at reference eigenvectors u_1..u_5, (u.Hu - lambda)/lambda: finite difference {fd};")
        lines.append(f"  exact HVP (float32) at most {ex:.1e}")
    for key in ("top1", "top5"):
        blk = mn.get("solvers", {}).get(key)
        if not blk:
            continue
        lines.append(f"{key}: solver               HVPs      grad-evals  wall [s]  max rel. error (median [min, max])")
        for solver, d in blk.items():
            s, e = d["summary"], d["summary"]["max_rel_err"]
            lines.append(
                f"  {solver:20s} {s['n_matvec']['median']:6.0f} {s['n_grad_evals']['median']:12.0f} "
                f"{s['wall_s']['median']:9.3f}  {e['median']:.2e} [{e['min']:.2e}, {e['max']:.2e}]"
            )
        if blk.get("lanczos"):
            cert = max(max(r["true_residuals"]) for r in blk["lanczos"]["runs"])
            lines.append(f"  default certificate: max true relative residual {cert:.1e} (bounds the rel. error)")
    eq = mn.get("equal_accuracy")
    if eq:
        bound = ">=" if eq["lower_bound"] else "="
        lines.append(
            f"to stay within rel. error {TARGET_REL_ERR:g}: official needs {bound} "
            f"{eq['official_grad_evals_to_target']:.0f} gradient evaluations (oracle stop), the default "
            f"{eq['default_grad_evals']:.0f} (certified stop): ratio {bound} {eq['grad_eval_ratio']:.1f}"
            f" (time ratio {bound} {eq['time_ratio']:.1f})"
        )
        lines.append(
            f"  the official rule itself stops after {eq['official_default_stop_grad_evals']:.0f} gradient"
            f" evaluations at rel. error {eq['official_default_stop_rel_err']:.1e}"
        )
    lines += _mnist_tracking_lines(mn)
    for name in ("cnn", "transformer"):
        sub = result.get(name)
        if not sub:
            continue
        ratios = ", ".join(f"{m} {d['ratio_to_gradient']:.2f}x" for m, d in sub["hvp_timing"]["methods"].items())
        lines.append(f"{name}: gradient {1e3 * sub['hvp_timing']['gradient']['median_s']:.1f} ms; {ratios}")
        top1 = sub.get("solvers", {}).get("top1", {})
        if "reference" in sub and top1:
            cells = ", ".join(
                f"{solver} {d['summary']['n_grad_evals']['median']:.0f} grad-evals "
                f"(rel. err {d['summary']['max_rel_err']['median']:.1e})"
                for solver, d in top1.items()
            )
            lines.append(f"  lambda_1 {sub['reference']['eigenvalues'][0]:.6g}; {cells}")
        eq = sub.get("equal_accuracy")
        if eq:
            bound = ">=" if eq["lower_bound"] else "="
            lines.append(
                f"  to stay within {TARGET_REL_ERR:g}: official {bound} {eq['official_grad_evals_to_target']:.0f}, "
                f"default {eq['default_grad_evals']:.0f} gradient evaluations "
                f"(ratio {bound} {eq['grad_eval_ratio']:.1f})"
            )
    h = headline(result)
    if "own_rule_grad_eval_ratio" in h:
        verb = "reaches" if h["default_reaches_target"] else "does NOT reach"
        lines.append(
            f"default {verb} rel. error <= {TARGET_REL_ERR:g} (worst seed {h['default_rel_err']:.1e}) "
            f"with {h['own_rule_grad_eval_ratio']:.1f} times fewer gradient evaluations than official "
            f"(whose median rel. error is {h['official_rel_err']:.1e})"
        )
    for warm in mn.get("warm_start", {}).get("cases", {}).values():
        for key in ("top1", "top5"):
            if key in warm:
                lines.append(
                    f"warm start after {warm['steps_between']} steps at eta {warm['eta']:g}: "
                    f"{100 * warm[key]['warm_over_cold_matvec']:.0f}% of a cold start's HVPs ({key})"
                )
    return lines


def _mnist_tracking_lines(mn: dict[str, Any]) -> list[str]:
    """Overhead, memory and TF32 lines of the summary."""
    lines = []
    ov = mn.get("overhead", {})
    for name, label in (("lanczos", "default, cold"), ("lanczos_warm", "default, warm"), ("official", "official")):
        if name in ov:
            lines.append(
                f"overhead of a check every {ov['check_every']} SAM steps ({label}): "
                f"{100 * ov[name]['share_of_wall_time']:.2f}% of wall time"
            )
    mem = mn.get("memory")
    if mem:
        lines.append(
            f"peak memory: gradient {fmt(mem['gradient_mib'], '.0f')} MiB, exact-HVP check "
            f"{fmt(mem['check_mib'], '.0f')} MiB, official check {fmt(mem['official_check_mib'], '.0f')} MiB"
        )
    tf = mn.get("tf32")
    if tf:
        lines.append(
            f"SAM steps/s: strict fp32 {tf['strict_fp32']['sam_steps_per_s']:.1f}, "
            f"TF32 {tf['tf32']['sam_steps_per_s']:.1f}; "
            f"lambda_1 TF32 vs strict: rel. diff {tf['lambda1_rel_diff_tf32_vs_strict']:.1e}"
        )
    return lines
