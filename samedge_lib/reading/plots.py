"""The book's figures for training runs, drawn from the tidy tables on disk (nothing here trains).

The four kinds of figure the paper's code makes, per run, against *steps* (the paper plots
against wall-clock seconds, which depend on the GPU; wall time is in the tables):

* **E** :func:`plot_eigenvalues` -- top eigenvalues with the run's edge and ``2/eta``;
* **S** :func:`plot_edge_zoom` -- the same without ``2/eta`` (a zoom on the SAM-edge);
* **A** :func:`plot_alignment` -- ``|cos|`` of ``g`` and of the SAM gradient with ``v1``;
* **L** :func:`plot_losses` -- training loss of several runs.

plus :func:`plot_tracking_ratio` (``lambda_1 / edge`` for a sweep) and :func:`plot_estimators`
(the exact solver against the paper's estimator at the same weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from samedge_lib.reading.style import BOOK_WIDTH_IN, COLORS, PANEL_HEIGHT_IN, RHO_PALETTE


def _eig_columns(df: pd.DataFrame) -> list[str]:
    return sorted((c for c in df.columns if c.startswith("lambda_")), key=lambda c: int(c.split("_")[1]))


def plot_eigenvalues(ax: Axes, df: pd.DataFrame, *, title: str = "", show_gd_edge: bool = True) -> Axes:
    """E-plot: ``lambda_1..lambda_k`` over steps, the run's edge, and ``2/eta``."""
    cols = _eig_columns(df)
    for i, c in enumerate(cols):
        ax.plot(
            df["step"],
            df[c],
            color=COLORS["lambda1"] if i == 0 else COLORS["lambda_k"],
            lw=1.8 if i == 0 else 1.0,
            alpha=1.0 if i == 0 else 0.8,
            label=r"$\lambda_1$ (exact, Lanczos)" if i == 0 else (r"$\lambda_2..\lambda_k$" if i == 1 else None),
        )
    is_gd = bool(np.allclose(df["edge"], df["gd_edge"]))
    if not is_gd:
        ax.plot(df["step"], df["edge"], color=COLORS["sam_edge"], ls="--", lw=1.8, label="SAM-edge")
    if show_gd_edge or is_gd:
        ax.axhline(df["gd_edge"].iloc[0], color=COLORS["gd_edge"], ls=":", lw=1.8, label=r"$2/\eta$")
    ax.set_xlabel("step")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="best")
    return ax


def plot_edge_zoom(ax: Axes, df: pd.DataFrame, *, title: str = "") -> Axes:
    """S-plot: the E-plot without the ``2/eta`` line (a zoom when the SAM-edge is far below it)."""
    return plot_eigenvalues(ax, df, title=title, show_gd_edge=False)


def plot_alignment(ax: Axes, df: pd.DataFrame, *, title: str = "") -> Axes:
    """A-plot: ``|cos(g, v1)|`` and ``|cos(SAM gradient, v1)|`` over steps."""
    ax.plot(df["step"], df["align_g"], color=COLORS["grad_align"], label=r"$|\cos(g, v_1)|$")
    ax.plot(
        df["step"],
        df["align_sam_g"],
        color=COLORS["sam_grad_align"],
        ls="--",
        label=r"$|\cos(g_{SAM}, v_1)|$",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("alignment with top eigenvector")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="best")
    return ax


def plot_losses(ax: Axes, runs: Mapping[str, pd.DataFrame], *, title: str = "", log: bool = True) -> Axes:
    """L-plot: per-step training loss (``steps.csv``) of several runs, labelled by the mapping's keys."""
    for i, (label, steps) in enumerate(runs.items()):
        color = COLORS["gd"] if label.lower().startswith("gd") else RHO_PALETTE[(i + 1) % len(RHO_PALETTE)]
        ax.plot(steps["step"], steps["loss"], label=label, color=color, lw=1.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend(loc="best")
    return ax


def plot_tracking_ratio(ax: Axes, runs: Mapping[str, pd.DataFrame], *, title: str = "") -> Axes:
    """``lambda_1 / edge`` over steps for several runs, with the line 1 (on the edge)."""
    for i, (label, df) in enumerate(runs.items()):
        ax.plot(df["step"], df["lambda_1"] / df["edge"], label=label, color=RHO_PALETTE[i % len(RHO_PALETTE)])
    ax.axhline(1.0, color=COLORS["theory"], lw=1.0, ls=":", label="on the edge")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\lambda_1$ / edge")
    ax.set_title(title)
    ax.legend(loc="best")
    return ax


def plot_estimators(ax: Axes, df: pd.DataFrame, *, title: str = "") -> Axes:
    """Exact Lanczos ``lambda_1`` vs the paper's finite-difference power iteration at the same weights."""
    sub = df.dropna(subset=["official_lambda"])
    ax.plot(df["step"], df["lambda_1"], color=COLORS["lambda1"], label=r"$\lambda_1$ exact (Lanczos)")
    ax.plot(
        sub["step"],
        sub["official_lambda"],
        "o",
        ms=4,
        color=COLORS["official"],
        label="official estimator (FD power it.)",
    )
    if not np.allclose(df["edge"], df["gd_edge"]):
        ax.plot(df["step"], df["edge"], color=COLORS["sam_edge"], ls="--", label="SAM-edge")
    ax.set_xlabel("step")
    ax.set_ylabel("sharpness")
    ax.set_title(title)
    ax.legend(loc="best")
    return ax


def run_panel(df: pd.DataFrame, *, title: str) -> plt.Figure:
    """E, S and A plots of one run, stacked at the book's width (side by side, each would be a third of the column
    and its tick labels unreadably small; see :mod:`samedge_lib.reading.style`).
    """
    fig, axes = plt.subplots(3, 1, figsize=(BOOK_WIDTH_IN, 3 * PANEL_HEIGHT_IN), sharex=True)
    plot_eigenvalues(axes[0], df, title=f"{title}: eigenvalues")
    plot_edge_zoom(axes[1], df, title="zoom on the edge")
    plot_alignment(axes[2], df, title="alignments")
    for ax in axes[:-1]:
        ax.set_xlabel("")  # the shared step axis is labelled once, under the last panel
    return fig


def plot_alpha_collapse(ax: Axes, runs: Mapping[str, pd.DataFrame], *, title: str = "") -> Axes:
    """``lambda_1 / (2/eta)`` against ``alpha = eta ||g|| / (2 rho)`` for SAM runs, over the curve ``R(alpha)``.

    If SAM sits on its edge, every measurement of every rho falls on the single curve ``R`` (chapter 1).
    """
    from samedge_lib.theory.edges import (
        edge_ratio,  # the one formula; imported here to keep plots' dependencies visible
    )

    lo, hi = math.inf, 0.0
    for i, (label, df) in enumerate(runs.items()):
        a = df["alpha"].to_numpy()
        ax.scatter(
            a,
            df["lambda_1"] / df["gd_edge"],
            s=14,
            color=RHO_PALETTE[i % len(RHO_PALETTE)],
            label=label,
            zorder=3,
        )
        lo, hi = min(lo, a.min()), max(hi, a.max())
    grid = np.logspace(np.log10(lo / 2), np.log10(hi * 2), 200)
    ax.plot(grid, edge_ratio(grid), color=COLORS["sam_edge"], ls="--", label=r"$R(\alpha)$ = SAM-edge/(2/$\eta$)")
    ax.set_xscale("log")
    ax.set_xlabel(r"$\alpha = \eta\|g\|/(2\rho)$")
    ax.set_ylabel(r"$\lambda_1 / (2/\eta)$")
    ax.set_title(title)
    ax.legend(loc="best")
    return ax


def plot_topk_over_edge(ax: Axes, df: pd.DataFrame, *, title: str = "") -> Axes:
    """Each tracked eigenvalue divided by the run's edge: do several pile up at the edge?"""
    for i, c in enumerate(_eig_columns(df)):
        ax.plot(
            df["step"],
            df[c] / df["edge"],
            color=RHO_PALETTE[i % len(RHO_PALETTE)],
            label=rf"$\lambda_{i + 1}$ / edge",
        )
    ax.axhline(1.0, color=COLORS["theory"], lw=1.0, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("eigenvalue / edge")
    ax.set_title(title)
    ax.legend(loc="best")
    return ax
