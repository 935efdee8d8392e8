"""Figures of the sharpness benchmark, drawn from the stored results (nothing here measures).

* :func:`plot_hvp_ratios` -- each HVP method's time as a multiple of a gradient, per model;
* :func:`plot_solver_costs` -- error against gradient evaluations of every solver run (own stopping rules);
* :func:`plot_convergence` -- error after every product with the stopping rules switched off, with the
  points where the official rule and the default's residual certificate stop;
* :func:`plot_warm_residuals` -- the default's residual estimate after every product, warm against cold.

The inputs come from :mod:`samedge_lib.chapters.benchmark_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

from samedge_lib.chapters.benchmark_report import MODELS, SOLVER_LABELS
from samedge_lib.reading.style import COLORS, OKABE_ITO

#: One colour per solver, the same in every benchmark figure.
SOLVER_COLORS = {
    "lanczos": COLORS["lambda1"],
    "eigsh": OKABE_ITO["skyblue"],
    "pyhessian": OKABE_ITO["orange"],
    "official": COLORS["official"],
    "official_exact_hvp": OKABE_ITO["purple"],
}
MODEL_COLORS = {"mnist": OKABE_ITO["blue"], "cnn": OKABE_ITO["orange"], "transformer": OKABE_ITO["green"]}
MARKERS = ("o", "s", "^", "D")


def _log_axes(ax: Axes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(mpl.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())


def plot_hvp_ratios(results: Sequence[dict[str, Any]]) -> plt.Figure:
    """One panel per machine: HVP time / gradient time for each method and model."""
    methods = list(results[0]["mnist"]["hvp_timing"]["methods"])
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results) + 1.5, 3.6), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], results, strict=True):
        present = [key for key in MODELS if (r.get(key) or {}).get("hvp_timing")]
        width = 0.8 / max(len(present), 1)
        for j, key in enumerate(present):
            ratios = [r[key]["hvp_timing"]["methods"][m]["ratio_to_gradient"] for m in methods]
            xs = [i + (j - (len(present) - 1) / 2) * width for i in range(len(methods))]
            ax.bar(xs, ratios, width=width, color=MODEL_COLORS[key], label=MODELS[key])
        ax.axhline(1.0, color=COLORS["theory"], lw=1, ls=":")
        ax.set_xticks(range(len(methods)), [m.replace("_", "\n") for m in methods], fontsize=8)
        ax.set_title(r["machine_tag"])
        ax.set_xlabel("HVP method")
    axes[0][0].set_ylabel("HVP time / gradient time")
    axes[0][-1].legend(loc="upper left")
    return fig


def plot_solver_costs(results: Sequence[dict[str, Any]], target: float = 1e-3) -> plt.Figure:
    """Relative error against gradient evaluations of every solver run, top-1 and top-5 side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True, layout="constrained")
    for ax, key in zip(axes, ("top1", "top5"), strict=True):
        for i, r in enumerate(results):
            for solver, d in r["mnist"].get("solvers", {}).get(key, {}).items():
                ax.scatter(
                    [run["n_grad_evals"] for run in d["runs"]],
                    [max(run["max_rel_err"], 1e-12) for run in d["runs"]],
                    color=SOLVER_COLORS[solver],
                    marker=MARKERS[i % len(MARKERS)],
                    s=36,
                    alpha=0.8,
                    label=SOLVER_LABELS[solver] if i == 0 else None,
                )
        ax.axhline(target, color=COLORS["theory"], lw=1, ls="--", label=f"target {target:g}" if key == "top1" else None)
        _log_axes(ax)
        ax.set_xlabel("gradient evaluations per measurement")
        ax.set_title("top eigenvalue" if key == "top1" else "top five eigenvalues (worst of five)")
    axes[0].set_ylabel("relative error vs float64 reference")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    # two columns: three are wider than the book's column, which then shrinks the figure's text
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=2, fontsize=8)
    if len(results) > 1:
        axes[1].text(
            0.98,
            0.98,
            "markers: " + ", ".join(f"{MARKERS[i % len(MARKERS)]} {r['machine_tag']}" for i, r in enumerate(results)),
            transform=axes[1].transAxes,
            ha="right",
            va="top",
            fontsize=7,
        )
    return fig


def plot_convergence(
    ax: Axes, result: dict[str, Any], traces: pd.DataFrame, *, model: str = "mnist", title: str = ""
) -> Axes:
    """Error of the top eigenvalue after every product, stopping rules off (one model of one benchmark).

    Solid lines: relative error against the float64 reference (one line per seed). Dashed blue: the
    default's relative residual estimate, the certificate it stops on (cut at 1e-8: below the float32
    rounding of the products it no longer means anything). Markers: where the official rule
    stops (black crosses) and where the certificate first reaches the tolerance (blue circle).
    """
    tr = result[model]["traces"]
    target = tr["target_rel_err"]
    for solver, grp in traces.groupby("solver", sort=False):
        for j, (_, run) in enumerate(grp.groupby("seed")):
            ax.plot(
                run["grad_evals"],
                run["rel_err"].clip(lower=1e-12),
                color=SOLVER_COLORS[solver],
                lw=1.6 if solver == "lanczos" else 1.1,
                alpha=1.0 if j == 0 else 0.55,
                label=SOLVER_LABELS[solver] if j == 0 else None,
            )
            if solver == "lanczos" and run["residual"].notna().any():
                ax.plot(
                    run["grad_evals"],
                    run["residual"],
                    color=SOLVER_COLORS[solver],
                    lw=1.0,
                    ls="--",
                    label="default: residual estimate (its certificate)" if j == 0 else None,
                )
    for solver, d in tr["solvers"].items():
        for j, run in enumerate(d["runs"]):
            if solver == "official" and "default_stop" in run:
                st = run["default_stop"]
                ax.scatter(
                    st["grad_evals"],
                    max(st["rel_err"], 1e-12),
                    marker="X",
                    s=70,
                    color=SOLVER_COLORS[solver],
                    zorder=5,
                    label="official rule stops here" if j == 0 else None,
                )
            if solver == "lanczos" and run.get("certified_stop"):
                st = run["certified_stop"]
                ax.scatter(
                    st["grad_evals"],
                    max(st["rel_err"], 1e-12),
                    marker="o",
                    s=60,
                    facecolor="white",
                    edgecolor=SOLVER_COLORS[solver],
                    lw=2,
                    zorder=5,
                    label="default stops here (certified)" if j == 0 else None,
                )
    ax.axhline(target, color=COLORS["theory"], lw=1, ls=":", label=f"target {target:g}")
    _log_axes(ax)
    # float32 products floor the true error near 1e-7; the Ritz estimate keeps falling below that
    # without meaning, so the axis stops at 1e-8
    ax.set_ylim(bottom=1e-8)
    ax.set_xlabel("gradient evaluations (nominal)")
    ax.set_ylabel("relative error of the top eigenvalue")
    ax.set_title(title or result["machine_tag"])
    return ax


def plot_warm_residuals(ax: Axes, case: dict[str, Any], *, tol: float = 1e-3, title: str = "") -> Axes:
    """Largest residual estimate after every product of the top-1 Lanczos runs of one warm-start case.

    Cold starts in grey, the warm start (from the previous check's eigenvector) in blue, the tolerance
    dotted. If the warm line runs parallel to the cold ones, the start saved only the products the cold
    runs spent getting down to the warm start's initial residual.
    """
    top1 = case["top1"]
    for j, run in enumerate(top1["cold"]["runs"]):
        hist = run.get("residual_history") or []
        if hist:
            xs, ys = zip(*hist, strict=True)
            ax.plot(xs, ys, color=OKABE_ITO["black"], alpha=0.45, lw=1.1, label="cold starts" if j == 0 else None)
    hist = top1["warm"].get("residual_history") or []
    if hist:
        xs, ys = zip(*hist, strict=True)
        ax.plot(xs, ys, color=SOLVER_COLORS["lanczos"], lw=2.0, marker="o", ms=3, label="warm start")
    ax.axhline(tol, color=COLORS["theory"], lw=1, ls=":", label=f"tolerance {tol:g}")
    ax.set_yscale("log")
    ax.set_xlabel("products (Hessian-vector)")
    ax.set_ylabel("relative residual estimate")
    ax.set_title(title)
    return ax
