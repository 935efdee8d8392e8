"""The sharpness benchmark's headline numbers and its text summary, computed from one stored result file.

:func:`headline` is the one function the appendix and the benchmark script take their headline numbers from;
:func:`summary_lines` is the summary the script prints and the file stores; :func:`summary_table` holds the same
headline numbers as the appendix shows them, one column per stored benchmark. The other tables are
:mod:`samedge_lib.chapters.benchmark_report`'s.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import pandas as pd

from samedge_lib.chapters.benchmark_report import MODELS, TARGET_REL_ERR, WARM_CASES, fmt, model_sections, signed_errors
from samedge_lib.reading.claims import compare_words

nan = math.nan


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
            "default_products_certified": eq["default_products"],
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


#: The rows of :func:`summary_table`: (what the row says, the :func:`headline` key, format spec, unit after it).
SUMMARY_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("default (Lanczos): largest error over the random starts", "default_rel_err", ".1e", ""),
    ("official estimator: median error, with its own stopping rule", "official_rel_err", ".1e", ""),
    (
        "gradient evaluations, official / default, each with its own stopping rule",
        "own_rule_grad_eval_ratio",
        ".1f",
        "x",
    ),
    (
        f"gradient evaluations to stay within {TARGET_REL_ERR:g}, official / default",
        "equal_accuracy_grad_eval_ratio",
        ".1f",
        "x",
    ),
    (f"measured time to stay within {TARGET_REL_ERR:g}, official / default", "equal_accuracy_time_ratio", ".1f", "x"),
    ("one exact product, in gradients' time", "exact_ratio", ".2f", "x"),
    ("one finite-difference product, in gradients' time", "fd_ratio", ".2f", "x"),
    ("one finite-difference product at a reference eigenvector: largest error", "fd_product_bias_max", ".1e", ""),
    ("one exact float32 product there: largest error", "exact_product_bias_max", ".1e", ""),
    *(
        (
            f"warm start at {label}: products, share of a cold start's (top eigenvalue)",
            f"warm_percent_top1_{case}",
            ".0f",
            "%",
        )
        for case, label in WARM_CASES.items()
    ),
    ("estimated share of wall time in checks: default, cold start", "overhead_pct_lanczos", ".1f", "%"),
    ("estimated share of wall time in checks: default, warm start", "overhead_pct_lanczos_warm", ".1f", "%"),
    ("estimated share of wall time in checks: official estimator", "overhead_pct_official", ".1f", "%"),
    ("bytes saved for backward, check / gradient", "saved_mem_ratio", ".2f", "x"),
)
#: Headline keys that are lower bounds when ``equal_accuracy_lower_bound`` is set (the official never got there).
LOWER_BOUNDED = ("equal_accuracy_grad_eval_ratio", "equal_accuracy_time_ratio")


def summary_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The headline numbers of every benchmark: a ``quantity`` column, then one column per machine.

    Each cell is :func:`headline`'s number, formatted, with "≥" in front where it is a lower bound; it is missing
    (``NaN``, shown as "—" by :func:`samedge_lib.chapters.pattern.cell`) where that benchmark did not measure it,
    and a row no benchmark measured is left out. The appendix shows this instead of the printed
    :func:`summary_lines`.
    """
    headlines = {r["machine_tag"]: headline(r) for r in results}
    rows = []
    for label, key, spec, unit in SUMMARY_ROWS:
        row: dict[str, str | None] = {"quantity": label}
        for machine, h in headlines.items():
            if key not in h:
                row[machine] = None
                continue
            bound = "≥ " if key in LOWER_BOUNDED and h.get("equal_accuracy_lower_bound") else ""
            row[machine] = f"{bound}{format(h[key], spec)}{unit}"
        if any(row[m] is not None for m in headlines):
            rows.append(row)
    return pd.DataFrame(rows, columns=["quantity", *headlines])


# ------------------------------------------------------------------------------------------------
# Numbers and words for the appendix's prose (so that no rough order is typed where it can be computed)
# ------------------------------------------------------------------------------------------------
def sci_md(x: float, digits: int = 2) -> str:
    r"""``x`` in scientific notation as Markdown math: ``1e-3 -> "$10^{-3}$"``, ``0.00086 -> "$8.6\cdot10^{-4}$"``.

    ``digits`` significant digits; a mantissa that rounds to 1 is left out, as prose writes a power of ten.
    """
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    power = f"10^{{{int(exponent)}}}"
    if float(mantissa) == 1:
        return f"${power}$"
    if float(mantissa) == -1:
        return f"$-{power}$"
    return f"${float(mantissa):g}\\cdot{power}$"


def span_md(values: Sequence[float], spec: str, unit: str = "") -> str:
    """The range of ``values`` as prose writes it: ``"1.4–2.1x"``, or one number when they format alike."""
    lo, hi = format(min(values), spec), format(max(values), spec)
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def times_words(a: float, b: float, *, more: str, less: str, same: str, spec: str = ".2g") -> str:
    """``a`` against ``b`` as a ratio with its direction: ``times_words(12, 140, more="later", less="sooner",
    same="as soon") -> "12 times sooner"``. The word comes from the numbers
    (:func:`samedge_lib.reading.claims.compare_words`), the factor is the larger over the smaller.
    """
    word = compare_words(a, b, more=more, less=less, same=same)
    if word == same or word == "—":
        return word
    return f"{format(max(a, b) / min(a, b), spec)} times {word}"


def second_half_errors(result: dict[str, Any], solver: str = "official") -> dict[str, dict[str, float]]:
    """Where a solver's estimate settles: the relative error over the second half of its convergence traces
    (stopping rule off), per model that has them: median, smallest, largest, and the number of starts.

    The finite-difference power iteration never settles on ``lambda_1``: its products are biased, so this is
    the distance of the value it drifts around.
    """
    out = {}
    for model in MODELS:
        runs = (result.get(model) or {}).get("traces", {}).get("solvers", {}).get(solver, {}).get("runs", [])
        tails = [e for run in runs for e in run["rel_err"][len(run["rel_err"]) // 2 :]]
        if tails:
            out[model] = {
                "median": statistics.median(tails),
                "min": min(tails),
                "max": max(tails),
                "starts": len(runs),
            }
    return out


def residual_plateau(case: dict[str, Any], key: str = "top1") -> tuple[float, float]:
    """The plateau of a warm-start case's cold Lanczos runs: the interquartile range of their residual
    estimates over the middle half of each run's products (after the first fast drop, before the last).
    """
    values = []
    for run in case[key]["cold"]["runs"]:
        history = [residual for _, residual in run["residual_history"]]
        quarter = len(history) // 4
        values += history[quarter : len(history) - quarter]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def position_words(x: float, lo: float, hi: float) -> str:
    """``"below"``, ``"inside"`` or ``"above"`` the band ``[lo, hi]``."""
    return "below" if x < lo else "above" if x > hi else "inside"


def warm_case_numbers(case: dict[str, Any]) -> dict[str, float]:
    """One warm-start case in numbers: the step size and steps between the checks, the change of ``lambda_1``,
    the old eigenvector's Rayleigh-quotient error and its residual (the warm start's first residual estimate),
    the cold runs' plateau (:func:`residual_plateau`) and the warm start's products as a share of a cold start's.
    """
    top1 = case["top1"]
    history = top1["warm"].get("residual_history") or []
    lo, hi = residual_plateau(case) if all(r.get("residual_history") for r in top1["cold"]["runs"]) else (nan, nan)
    return {
        "eta": case["eta"],
        "steps": case["steps_between"],
        "lambda1_change": case.get("lambda1_change", nan),
        "start_error": top1.get("start_rayleigh_rel_err") or nan,
        "start_residual": history[0][1] if history else nan,
        "plateau_lo": lo,
        "plateau_hi": hi,
        "warm_percent": 100 * top1["warm_over_cold_matvec"],
    }


def official_signs(results: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Over every stored official-estimator start (every benchmark, model and block): how many returned a top
    eigenvalue below the reference, and how many there are. Exact products can only underestimate; the
    finite-difference kinks push the other way; this counts which won.
    """
    signed = [
        e
        for r in results
        for _, sec in model_sections(r)
        for blk in sec["solvers"].values()
        if "official" in blk
        for e in signed_errors(blk["official"]["runs"], sec["reference"]["eigenvalues"])
    ]
    return sum(e < 0 for e in signed), len(signed)


def top_spread(result: dict[str, Any], model: str = "mnist") -> float:
    """How crowded the top of the reference spectrum is: ``1 - lambda_k / lambda_1`` for the smallest of the
    ``k`` reference eigenvalues (the top five on the MNIST MLP).
    """
    ref = result[model]["reference"]["eigenvalues"]
    return 1 - ref[-1] / ref[0]


def check_cost_in_steps(share: float, check_every: int) -> float:
    """A check's time in SAM steps, from its share of the wall time at one check every ``check_every`` steps:
    ``share = c / (n s + c)`` gives ``c / s = n share / (1 - share)``.
    """
    return check_every * share / (1 - share)


def share_at(share: float, factor: float) -> float:
    """The share of wall time in checks when they run ``factor`` times less often (same cost per check):
    ``c / (factor n s + c)`` from ``share = c / (n s + c)``.
    """
    return share / (factor * (1 - share) + share)
