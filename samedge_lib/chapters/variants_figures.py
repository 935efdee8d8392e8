"""The figures of the chapters beyond the paper (SAM's variants, the phase diagram).

Each function draws one figure from what was already computed: the data of a
:class:`~samedge_lib.chapters.variants_quadratics.QuadraticCheck`, or a chapter's run set and tables. None of them
trains or runs anything; they only read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from samedge_lib.chapters import variants_claims as cv
from samedge_lib.chapters.variants_quadratics import ETA_Q, R_Q, QuadraticCheck, momentum_edge_curve
from samedge_lib.reading.claims import EDGE_BAND
from samedge_lib.reading.style import COLORS, RHO_PALETTE
from samedge_lib.record.results import RunResult
from samedge_lib.theory import edges


# ------------------------------------------------------------------------------------------------
# Chapter 7, part II: quadratics
# ------------------------------------------------------------------------------------------------
def plot_usam_step(check: QuadraticCheck) -> None:
    """Figure 7.1: one USAM step's observed multipliers on ``1 - eta lambda - eta r lambda^2``."""
    lam_q, obs, E_UQ = check.data["lam"], check.data["obs"], check.data["edge"]
    LO_Q, HI_Q = check.data["window"]
    grid_l = np.linspace(1.3 * LO_Q, 1.3 * E_UQ, 500)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.plot(
        grid_l,
        edges.usam_multiplier(lam=grid_l, eta=ETA_Q, r=R_Q),
        color=COLORS["theory"],
        lw=1.2,
        label=r"$1-\eta\lambda-\eta r\lambda^2$",
    )
    shrank = np.abs(obs) < 1
    ax.scatter(lam_q[shrank], obs[shrank], s=12, color=COLORS["sam"], label="observed, shrank", zorder=3)
    ax.scatter(lam_q[~shrank], obs[~shrank], s=12, color=COLORS["gd"], label="observed, grew", zorder=3)
    ax.axhspan(-1, 1, color=COLORS["sam_edge"], alpha=0.08, lw=0)
    ax.axvspan(LO_Q, HI_Q, color=COLORS["grad_align"], alpha=0.15, lw=0, label="negative window")
    ax.axvline(E_UQ, color=COLORS["sam_edge"], lw=2, label=f"$E_U$ = {E_UQ:.3g}")
    ax.set(xlabel=r"eigenvalue $\lambda$", ylabel=r"multiplier $c_{t+1}/c_t$", ylim=(-3, 2))
    ax.legend(loc="lower center", ncol=3)
    plt.show()


def plot_momentum_thresholds(check: QuadraticCheck) -> None:
    """Figure 7.2: observed stability thresholds (brackets) against the derived momentum edges (lines)."""
    thr = check.data["table"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    fine = np.linspace(0, 0.995, 200)
    colors = [COLORS["gd"], COLORS["sam"], COLORS["grad_align"], COLORS["sam_edge"]]
    for (rule, sub), color in zip(thr.groupby("rule", sort=False), colors, strict=True):
        ax.plot(*momentum_edge_curve(rule, fine), color=color, lw=1.2)
        ax.errorbar(
            sub["beta"],
            0.5 * (sub["observed from"] + sub["observed to"]),
            yerr=0.5 * (sub["observed to"] - sub["observed from"]),
            fmt="o",
            ms=4,
            color=color,
            label=rule,
        )
    ax.set(xlabel=r"momentum $\beta$", ylabel="largest stable curvature")
    ax.legend(loc="upper left", ncol=2)
    plt.show()


def plot_usam_tuning(check: QuadraticCheck) -> None:
    """Figure 7.3: ``|c_1|`` of USAM and SAM 1 % below and above ``E_U``."""
    styles = {
        ("USAM", 0.99): (COLORS["grad_align"], "-"),
        ("USAM", 1.01): (COLORS["gd"], "-"),
        ("SAM", 0.99): (COLORS["sam"], "--"),
        ("SAM", 1.01): (COLORS["sam_edge"], "--"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for (rule, factor), trace in check.data["traces"].items():
        color, ls = styles[(rule, factor)]
        ax.semilogy(trace, color=color, ls=ls, label=f"{rule}, $\\lambda_1$ = {factor:g} $E_U$")
    ax.set(xlabel="step", ylabel=r"$|c_1|$")
    ax.legend(loc="lower left", ncol=2)
    plt.show()


def plot_quadratic_switch(check: QuadraticCheck) -> None:
    """Figure 7.4: the top component and ``lambda_1 / edge`` around the switch on a quadratic."""
    start, frame = check.data["start"], check.data["frame"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].semilogy(check.data["top"], color=COLORS["sam"])
    axes[0].axvline(start, color=COLORS["theory"], ls=":", lw=1)
    axes[0].set(xlabel="step", ylabel=r"$|c_1|$", xlim=(280, 400))
    axes[1].plot(frame["step"], frame["lambda1_over_edge"], color=COLORS["lambda1"])
    axes[1].axhline(1, color=COLORS["sam_edge"], ls="--")
    axes[1].set(xlabel="step", ylabel=r"$\lambda_1$ / edge of the step", xlim=(280, 400))
    plt.show()


# ------------------------------------------------------------------------------------------------
# Chapter 7, part III: the network
# ------------------------------------------------------------------------------------------------
def plot_usam_vs_sam(runs: cv.VariantRuns, refs: tuple[float, ...]) -> None:
    """Figure 7.5: sharpness against ``||g||`` after the crossing (SAM and matched USAM), and each run's ratio."""
    results = runs.runs
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for color, rho in zip(RHO_PALETTE, refs, strict=False):
        sam, usam = runs.table(f"sam/{rho:g}"), runs.table(f"usam/{rho:g}")
        for df, marker, fill in ((sam, "o", color), (usam, "s", "none")):
            win = cv.after_crossing(df)
            axes[0].scatter(win["grad_norm"], win["lambda_1"], s=16, marker=marker, facecolors=fill, edgecolors=color)
        gg = np.geomspace(sam["grad_norm"].min(), sam["grad_norm"].max(), 100)
        eta0 = results[f"sam/{rho:g}"].config.eta
        axes[0].plot(
            gg, edges.sam_edge(grad_norm=gg, eta=eta0, rho=rho), color=color, lw=1.2, label=f"SAM-edge, ρ = {rho:g}"
        )
        axes[0].axhline(
            float(usam["edge"].iloc[0]),
            color=color,
            ls="--",
            lw=1.2,
            label=f"USAM edge, r = {results[f'usam/{rho:g}'].config.rho:.3g}",
        )
        axes[1].plot(sam["step"], sam["lambda_1"] / sam["edge"], color=color, label=f"SAM ρ = {rho:g}")
        axes[1].plot(usam["step"], usam["lambda_1"] / usam["edge"], color=color, ls="--", label="USAM, matched")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel=r"$\|g\|$",
        ylabel=r"$\lambda_1$",
        title="after the crossing: SAM (dots) and USAM (squares)",
    )
    axes[0].legend(fontsize=8, ncol=2, loc="lower right")
    axes[1].axhspan(*EDGE_BAND, color=COLORS["sam_edge"], alpha=0.1, lw=0)
    axes[1].axhline(1, color=COLORS["theory"], lw=0.8)
    axes[1].set(xlabel="step", ylabel=r"$\lambda_1$ / own edge", ylim=(0.5, 1.7), title="each run against its own edge")
    axes[1].legend(fontsize=8, ncol=2)
    plt.show()


def plot_momentum_runs(runs: cv.VariantRuns) -> None:
    """Figure 7.6: SAM with momentum against its momentum edge and the naive one; GD with heavy ball."""
    results = runs.runs
    keys = [k for k in results if k.startswith(("sam+hb", "sam+nesterov"))]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        df = runs.table(key)
        ax.plot(df["step"], df["lambda_1"], color=COLORS["lambda1"], label=r"$\lambda_1$")
        ax.plot(df["step"], df["edge"], color=COLORS["sam_edge"], ls="--", label="momentum edge")
        ax.plot(df["step"], df["sam_edge"], color=COLORS["gd_edge"], ls=":", label=r"naive $S(\eta,\rho,\|g\|)$")
        ax.set(xlabel="step", ylabel="eigenvalue", title=cv.variant_label(key, results[key]), ylim=(0, None))
        ax.legend(fontsize=8)
    plt.show()
    gd_keys = [k for k in results if k.startswith("gd+hb")]
    if gd_keys:
        fig, ax = plt.subplots(figsize=(6.5, 3.5))
        for color, key in zip(RHO_PALETTE, gd_keys, strict=False):
            df = runs.table(key)
            ax.plot(df["step"], df["lambda_1"], color=color, label=cv.variant_label(key, results[key]))
            ax.axhline(float(df["edge"].iloc[0]), color=color, ls="--", lw=1)
        ax.set(xlabel="step", ylabel=r"$\lambda_1$ (dashed: $2(1+\beta)/\eta$)", ylim=(0, None))
        ax.legend(fontsize=8)
        plt.show()


def plot_switch(swdf: pd.DataFrame, result: RunResult, esc: Mapping[str, float]) -> None:
    """Figure 7.7: ``|<v1, g>|`` around the switch with the predicted growth, and the sharpness against its edge."""
    cfg = result.config
    s0 = cfg.sam_start
    near = swdf[(swdf["step"] >= s0 - 3 * cfg.measure_every) & (swdf["step"] <= s0 + 3 * cfg.measure_every)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    proj = near["align_g"] * near["grad_norm"]
    axes[0].semilogy(near["step"], proj, "o-", color=COLORS["sam"], label=r"$|\langle v_1, g\rangle|$ measured")
    if np.isfinite(esc["predicted"]):
        p0 = float(proj[near["step"] == s0].iloc[0])
        ts = np.arange(s0, s0 + cv.ESCAPE_STEPS + 1)
        axes[0].semilogy(
            ts,
            p0 * np.exp(esc["predicted"] * (ts - s0)),
            color=COLORS["theory"],
            ls="--",
            label=r"growth $(1+2/\alpha)^t$",
        )
    axes[0].axvline(s0, color=COLORS["theory"], ls=":", lw=1)
    axes[0].set(xlabel="step", ylabel=r"$|\langle v_1, g\rangle|$", title="around the switch")
    axes[0].legend(fontsize=8)
    axes[1].plot(swdf["step"], swdf["lambda_1"], color=COLORS["lambda1"], label=r"$\lambda_1$")
    axes[1].plot(
        swdf["step"], swdf["edge"], color=COLORS["sam_edge"], ls="--", label="edge of the step (2/η, then SAM-edge)"
    )
    axes[1].plot(
        swdf["step"],
        swdf["loss"] / swdf["loss"].max() * swdf["lambda_1"].max(),
        color=COLORS["gd"],
        lw=0.8,
        alpha=0.6,
        label="training loss (rescaled)",
    )
    axes[1].axvline(s0, color=COLORS["theory"], ls=":", lw=1)
    axes[1].set(xlabel="step", ylabel="eigenvalue", ylim=(0, None))
    axes[1].legend(fontsize=8)
    plt.show()


# ------------------------------------------------------------------------------------------------
# Chapter 8: the phase diagram
# ------------------------------------------------------------------------------------------------
def draw_curve(ax: Axes, lo: float = 1e-3, hi: float = 1e3) -> None:
    """``R(alpha)``, its asymptotes and the regime bands (shared by the figures of chapter 8)."""
    low, high = edges.regime_bounds(cv.REGIME_TOL)
    grid_a = np.geomspace(lo, hi, 800)
    ax.axvspan(lo, low, color=COLORS["sam"], alpha=0.07, lw=0)
    ax.axvspan(high, hi, color=COLORS["gd_edge"], alpha=0.07, lw=0)
    ax.plot(grid_a, edges.edge_ratio(grid_a), color=COLORS["sam_edge"], lw=2.2, label=r"$R(\alpha)$")
    ax.plot(grid_a, np.sqrt(grid_a), color=COLORS["theory"], ls="--", lw=1, label=r"$\sqrt{\alpha}$")
    big = grid_a > 1.5
    ax.plot(grid_a[big], 1 - 1 / grid_a[big], color=COLORS["theory"], ls=":", lw=1, label=r"$1-1/\alpha$")
    ax.axhline(1, color=COLORS["gd_edge"], ls="--", lw=1)
    ax.text(lo * 1.5, 1.04, "square-root", fontsize=9)
    ax.text(high * 1.3, 1.04, "GD-like", fontsize=9)
    ax.text(0.15, 1.04, "crossover", fontsize=9)
    ax.set(
        xscale="log", xlim=(lo, hi), ylim=(0, 1.12), xlabel=r"$\alpha=\eta\|g\|/(2\rho)$", ylabel=r"$y=\eta\lambda_1/2$"
    )


def plot_phase_cycles(check: QuadraticCheck) -> None:
    """Figure 8.1: ``R(alpha)`` with the quadratics' 2-cycles."""
    cyc = check.data["table"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    draw_curve(ax)
    ax.scatter(
        cyc["alpha at the cycle"], cyc["y = eta lambda1/2"], color=COLORS["sam"], zorder=4, label="quadratic 2-cycles"
    )
    ax.legend(loc="lower right")
    plt.show()


def phase_styles(runs: cv.VariantRuns) -> tuple[dict[float, Any], dict[float, str], list[float]]:
    """Colour by radius, marker by step size (and the step sizes, largest first) of the phase-diagram SAM runs."""
    keys = cv.sam_phase_keys(runs)
    rhos = sorted({runs.runs[k].config.rho for k in keys})
    etas = sorted({runs.runs[k].config.eta for k in keys}, reverse=True)
    color_of = {r_: RHO_PALETTE[i % len(RHO_PALETTE)] for i, r_ in enumerate(rhos)}
    marker_of = {e_: m for e_, m in zip(etas, ["o", "^", "s", "D"], strict=False)}
    return color_of, marker_of, etas


def plot_phase(runs: cv.VariantRuns) -> None:
    """Figure 8.2: every SAM check after its crossing on ``R(alpha)``, and the collapse variable over training."""
    results = runs.runs
    pool = cv.pooled_phase(runs)
    keys = cv.sam_phase_keys(runs)
    color_of, marker_of, etas = phase_styles(runs)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    lo = min(1e-3, pool["alpha"].min() / 2) if len(pool) else 1e-3
    hi = max(1e2, pool["alpha"].max() * 2) if len(pool) else 1e2
    draw_curve(axes[0], lo, hi)
    for key in keys:
        sub = pool[pool["key"] == key]
        cfg = results[key].config
        axes[0].scatter(
            sub["alpha"],
            sub["y"],
            s=14,
            color=color_of[cfg.rho],
            marker=marker_of[cfg.eta],
            label=f"η={cfg.eta:g}, ρ={cfg.rho:g}",
            zorder=3,
        )
    for res in results.values():
        if res.config.rho == 0:
            gdd = cv.after_crossing(res.measurements)
            axes[0].axhline(
                float((gdd["lambda_1"] / gdd["gd_edge"]).median()) if len(gdd) else np.nan,
                color=COLORS["gd"],
                lw=1,
                ls="-.",
                label=f"GD η={res.config.eta:g} (median y)",
            )
    axes[0].legend(fontsize=7, ncol=2, loc="lower right")
    axes[0].set_title("every SAM check after its crossing")
    for key in keys:
        df = results[key].measurements
        cfg = results[key].config
        axes[1].plot(
            df["step"],
            cv.collapse_of(df, results[key]),
            color=color_of[cfg.rho],
            ls="-" if cfg.eta == etas[0] else "--",
            lw=1.2,
            label=f"η={cfg.eta:g}, ρ={cfg.rho:g}",
        )
    axes[1].axhspan(1 / 1.15, 1.15, color=COLORS["sam_edge"], alpha=0.1, lw=0)
    axes[1].axhline(1, color=COLORS["theory"], lw=0.8)
    axes[1].set(
        yscale="log",
        xlabel="step",
        ylabel=r"$\Lambda=\frac{\eta}{2}\lambda_1(1+\rho\lambda_1/\|g\|)$",
        title="the collapse variable",
    )
    axes[1].legend(fontsize=7, ncol=2)
    plt.show()


def plot_ascent(sam_rows: pd.DataFrame, runs: cv.VariantRuns) -> None:
    """Figure 8.3: each SAM run's deviation from the curve against its radius and against the ascent marker."""
    color_of, marker_of, _ = phase_styles(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for _, row in sam_rows.iterrows():
        colour = color_of[row["rho"]]
        marker = marker_of[row["eta"]]
        axes[0].scatter(row["ρ/‖w‖ (end)"], row["median y/R(α)"], color=colour, marker=marker, s=50, label=row["run"])
        axes[1].scatter(abs(row["λ₁(w+ε)/λ₁(w) (end)"] - 1), row["median |ln(y/R)|"], color=colour, marker=marker, s=50)
    axes[0].axhspan(1 / 1.15, 1.15, color=COLORS["sam_edge"], alpha=0.1, lw=0)
    axes[0].set(
        xscale="log" if len(sam_rows) else "linear",
        xlabel=r"$\rho/\|w\|$ at the end",
        ylabel=r"median $y/R(\alpha)$",
        title="deviation from the curve against the radius",
    )
    if len(sam_rows):
        axes[0].legend(fontsize=7)
    axes[1].axhline(cv.COLLAPSE_TOL, color=COLORS["theory"], ls="--", lw=1)
    axes[1].axvline(cv.ASCENT_TOL, color=COLORS["theory"], ls=":", lw=1)
    axes[1].set(
        xlabel=r"$|\lambda_1(w+\varepsilon)/\lambda_1(w)-1|$ at the end",
        ylabel=r"median $|\ln(y/R)|$",
        title="predicted marker: ascent-point sharpness",
    )
    plt.show()
