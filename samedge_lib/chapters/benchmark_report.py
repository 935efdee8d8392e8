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

from samedge_lib.record.runfolder import RunResult

#: The relative error of ``lambda_1`` a tracker must reach: the accuracy at which the solvers' costs are compared
#: (:mod:`samedge_lib.chapters.benchmark_measure` measures to it, the appendix reports against it).
TARGET_REL_ERR = 1e-3

#: Schemas this module reads (the benchmark's ``SCHEMA``, old and current).
SCHEMAS: tuple[str, ...] = ("samedge-sharpness-benchmark/1", "samedge-sharpness-benchmark/2")
#: What a benchmark of each schema recorded, in the reader's words (the appendix's tables say it instead of the
#: file-format version, which means nothing to a reader).
SCHEMA_RECORDED = {
    SCHEMAS[0]: "before the convergence traces, the second warm-start case and the solver comparisons on "
    "the CIFAR-10 CNN and the Transformer were added",
    SCHEMAS[1]: "every section of this appendix",
}
#: A stored file's note (free text written when it was measured) -> how the appendix words it. The stored files
#: are measurements and are never edited; a note worded for the people running the benchmark is translated here.
NOTE_WORDING = {
    "machine shared with other agents' jobs (see the load averages)": "other jobs were running on the machine "
    "(see the load averages)",
}
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
#: Readable names of the eigenvalue blocks the solvers compute (a file's ``top1`` / ``top5``).
TOPS = {"top1": "top eigenvalue", "top5": "top five"}
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


def notes_text(notes: Sequence[str]) -> str:
    """A stored file's notes as sentences for the page, each worded through :data:`NOTE_WORDING`."""
    sentences = [NOTE_WORDING.get(n, n) for n in notes]
    return " ".join(f"{n[:1].upper()}{n[1:]}{'' if n.endswith('.') else '.'}" for n in sentences if n)


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
    """Per machine: device, settings, what was recorded, the benchmark point (is it part-way through training?)
    and the conditions noted when it was measured.
    """
    rows = {}
    for r in results:
        mn, s = r["mnist"], r["settings"]
        pt = mn["point"]
        rows[r["machine_tag"]] = {
            "device": r["device"],
            "preset": r["preset"],
            "recorded": SCHEMA_RECORDED.get(r["schema"], r["schema"]),
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
            "conditions": notes_text(r["notes"]) or "-",
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
                            "measurement": f"{MODELS[model]}, {TOPS.get(key, key)}",
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
    """The convergence traces of one model of one benchmark as a long table (empty for a benchmark without traces).

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
                        "eigenvalues": TOPS.get(key, key),
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
