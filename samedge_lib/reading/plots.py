"""The book's figures for training runs, drawn from the tidy tables on disk (nothing here trains).

The four kinds of figure the paper's code makes, per run, against *steps* (the paper plots
against wall-clock seconds, which depend on the GPU; wall time is in the tables):

* **E** :func:`plot_eigenvalues` -- top eigenvalues with the run's edge and ``2/eta``;
* **S** :func:`plot_edge_zoom` -- the same without ``2/eta`` (a zoom on the SAM-edge);
* **A** :func:`plot_alignment` -- ``|cos|`` of ``g`` and of the SAM gradient with ``v1``;
* **L** :func:`plot_losses` -- training loss of several runs.

plus :func:`plot_tracking_ratio` (``lambda_1 / edge`` for a sweep) and :func:`plot_estimators`
(the exact solver against the paper's estimator at the same weights).

Every one of them whose y-axis is a measured quantity chooses it by one rule, :func:`fit_regime` (what and why
in its docstring): the axis is drawn for the regime the figure is about, the run after its transient, and what
is left off it (a step-0 sharpness fifty times the edge, a ``2/eta`` far above a GD run that never reached it) is
said in the legend, with a marker at the top edge where a measurement is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from samedge_lib.reading.style import BOOK_WIDTH_IN, COLORS, PANEL_HEIGHT_IN, RHO_PALETTE


def _eig_columns(df: pd.DataFrame) -> list[str]:
    return sorted((c for c in df.columns if c.startswith("lambda_")), key=lambda c: int(c.split("_")[1]))


# -- the axis rule ------------------------------------------------------------------------------------------------

#: Nothing may take more than this share of a figure's height from the regime the figure is about: a transient
#: point or a reference line that would leave the rest less than half of the axis is left off it (and said).
REGIME_SHARE = 0.5
#: The transient is looked for among the first half of the checks at most (the second half is the regime; the same
#: split as the tracking statistics of :mod:`samedge_lib.record.results`).
TRANSIENT_SHARE = 0.5
#: The axis extends this fraction of the data's span beyond it on each side (matplotlib's default margin).
MARGIN = 0.05
#: A span narrower than this fraction of the values counts as this wide (a flat tail is not a zero-height regime).
MIN_RELATIVE_SPAN = 0.02
#: The marker drawn at the top edge where a measurement is off the axis, and its size.
OFF_AXIS_MARKER, OFF_AXIS_MS = "^", 7.0
#: The ``gid`` of the legend entries :func:`fit_regime` adds (so a figure-level legend can tell them apart).
NOTE_GID = "samedge-regime-note"


@dataclass(frozen=True)
class Series:
    r"""One drawn quantity as the axis rule sees it.

    Attributes:
        name: what a note calls it (``"$\lambda_1$"``, mathtext; series of one name are one quantity in a note).
        step: the training step of each value (the transient is the first steps).
        y: the values drawn.
        color: the colour the series is drawn in (its off-axis markers take it).
        x: where the values are drawn along x, when not at their steps (the ``alpha`` of the collapse plot).

    """

    name: str
    step: np.ndarray
    y: np.ndarray
    color: str
    x: np.ndarray | None = None

    @classmethod
    def of(cls, name: str, df: pd.DataFrame, y: pd.Series | np.ndarray, color: str, x=None) -> Series:
        """The series ``y`` of the table ``df`` (one value per row, drawn at ``df.step`` unless ``x``)."""
        xs = None if x is None else np.asarray(x, dtype=float)
        return cls(name, df["step"].to_numpy(dtype=float), np.asarray(y, dtype=float), color, xs)


@dataclass(frozen=True)
class Reference:
    """A horizontal line to compare the data with (``2/eta``, "on the edge").

    ``required``: the figure is about the data's distance to it (SAM's eigenvalues against ``2/eta``, a ratio
    against 1), so the axis always reaches it; otherwise it is drawn only where it does not take the figure's
    height from the data, and its value is said in the legend instead.
    """

    value: float
    label: str
    color: str
    ls: str = ":"
    lw: float = 1.8
    required: bool = False


@dataclass(frozen=True)
class Regime:
    """What :func:`regime_limits` chose: the data limits (before margins) and what was left off."""

    lo: float
    hi: float
    transient: tuple[float, ...]  # the steps whose highest values were left off the axis
    references: tuple[float, ...]  # the reference values the axis reaches
    zero: bool  # whether the axis reaches 0


@dataclass(frozen=True)
class RegimeAxis:
    """What :func:`fit_regime` did to one axes (for the tests and for callers that add to the figure)."""

    ylim: tuple[float, float]
    regime: Regime
    off_axis: list[tuple[str, float, float]] = field(default_factory=list)  # (name, step, value) above the top
    notes: list[str] = field(default_factory=list)  # the legend entries added


def _bounds(values: np.ndarray) -> tuple[float, float]:
    return float(np.min(values)), float(np.max(values))


def _span(lo: float, hi: float) -> float:
    return max(hi - lo, MIN_RELATIVE_SPAN * max(abs(lo), abs(hi)), 1e-12)


def _reach(lo: float, hi: float) -> float:
    """How far beyond ``[lo, hi]`` the axis may go and still leave it :data:`REGIME_SHARE` of its height."""
    return _span(lo, hi) * (1 - REGIME_SHARE) / REGIME_SHARE


def regime_limits(series: Sequence[Series], references: Sequence[Reference] = (), *, zero: bool = False) -> Regime:
    """The y-range of the regime a figure is about (the rule of :func:`fit_regime`; no drawing).

    1. **The transient.** Going through the first :data:`TRANSIENT_SHARE` of the checks in order, the values of a
       check that lie so far above everything after it (required references included) that drawing them would
       leave the rest less than :data:`REGIME_SHARE` of the height are the transient; the first check with none
       ends it. Only values above are cut: a sharpness rising from below is the progressive sharpening a figure
       shows, a value falling from far above is the initialisation's sharp point, left within a few steps.
    2. **The range** is that of every other value, and of the required references.
    3. **Optional lines** (``0`` if ``zero``, the references not required) widen it, each as long as it leaves the
       range at least :data:`REGIME_SHARE` of the height; the others are not drawn.
    """
    parts = [(np.asarray(s.step, dtype=float), np.asarray(s.y, dtype=float)) for s in series]
    step = np.concatenate([p[0] for p in parts]) if parts else np.array([])
    y = np.concatenate([p[1] for p in parts]) if parts else np.array([])
    ok = np.isfinite(y) & np.isfinite(step)
    step, y = step[ok], y[ok]
    required = np.array([r.value for r in references if r.required], dtype=float)
    if y.size == 0:
        lo, hi = _bounds(required) if required.size else (0.0, 1.0)
        return Regime(lo, hi, (), tuple(required.tolist()), False)
    checks = np.unique(step)
    cut = np.zeros(y.shape, dtype=bool)
    transient: list[float] = []
    for s in checks[: int(len(checks) * TRANSIENT_SHARE)]:
        lo, hi = _bounds(np.concatenate([y[step > s], required]))
        high = (step == s) & (y > hi + _reach(lo, hi))
        if not high.any():
            break
        cut |= high
        transient.append(float(s))
    lo, hi = _bounds(np.concatenate([y[~cut], required]))
    pending = ([0.0] if zero else []) + [float(r.value) for r in references if not r.required]
    grown = True
    while grown:  # each line reached may bring another within reach
        grown = False
        for c in list(pending):
            if lo - _reach(lo, hi) <= c <= hi + _reach(lo, hi):
                lo, hi = min(lo, c), max(hi, c)
                pending.remove(c)
                grown = True
    refs = tuple(float(r.value) for r in references if lo <= r.value <= hi)
    return Regime(lo, hi, tuple(transient), refs, bool(zero and lo <= 0.0 <= hi))


def _num(value: float) -> str:
    """A value as a note says it: whole numbers from 100 up (``2000``, not ``2e+03``), else three digits."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _where(steps: Sequence[float]) -> str:
    steps = sorted(set(steps))
    if len(steps) == 1:
        return f"step {steps[0]:g}"
    if len(steps) <= 3:
        return "steps " + ", ".join(f"{s:g}" for s in steps)
    return f"steps {steps[0]:g}–{steps[-1]:g}"


def fit_regime(
    ax: Axes, series: Sequence[Series], references: Sequence[Reference] = (), *, zero: bool = False
) -> RegimeAxis:
    """Choose the y-axis of a time-series figure for the regime it is about, and say what is left off it.

    **What.** The y-limits are :func:`regime_limits` plus a :data:`MARGIN`: the data after the transient (the
    leading checks whose values would leave the rest of the run less than :data:`REGIME_SHARE` of the height),
    the required references, and the optional lines (``0``, a ``2/eta`` the run does not reach) that fit without
    taking that share. The references within the axis are drawn as horizontal lines; each one that is not gets
    a legend entry with its value instead (``2/eta = 200, not drawn: 48x the highest lambda_1``). Every value
    above the axis gets a marker (:data:`OFF_AXIS_MARKER`, in its series' colour) at the top edge, at its step,
    and the legend an entry saying what they are (``step 0: lambda_1 = 117, off the axis``).

    **Why.** A run's first check is often its sharpest point by far (the character Transformer's ``lambda_1`` is
    117 at step 0 against an edge of 8-20), and ``2/eta`` can be fifty times a GD run that never gets near it; on
    an axis scaled to include them, the oscillation at the edge -- what the figure is for -- is a flat line at the
    bottom. Cutting with a note, rather than an inset, keeps every text of the figure at the book's font size
    (:mod:`samedge_lib.reading.style`); the numbers cut are still in the legend, and in the run's table.

    The legend entries carry the gid :data:`NOTE_GID`; the caller draws the legend (they are the axes' handles).
    """
    reg = regime_limits(series, references, zero=zero)
    pad = MARGIN * _span(reg.lo, reg.hi)
    bottom = 0.0 if reg.zero and reg.lo >= 0.0 else reg.lo - pad
    top = reg.hi + pad
    ax.set_ylim(bottom, top)
    notes: list[str] = []
    for ref in references:
        if reg.lo <= ref.value <= reg.hi:
            ax.axhline(ref.value, color=ref.color, ls=ref.ls, lw=ref.lw, label=ref.label)
    off: list[tuple[str, float, float]] = []
    for s in series:
        y = np.asarray(s.y, dtype=float)
        above = np.isfinite(y) & (y > top)
        if not above.any():
            continue
        x = np.asarray(s.step if s.x is None else s.x, dtype=float)
        ax.plot(
            x[above],
            np.ones(int(above.sum())),
            ls="none",
            marker=OFF_AXIS_MARKER,
            ms=OFF_AXIS_MS,
            color=s.color,
            transform=ax.get_xaxis_transform(),  # y in axes coordinates: the top edge
            clip_on=False,
            zorder=5,
        )
        off += [
            (s.name, float(st), float(v))
            for st, v in zip(np.asarray(s.step, dtype=float)[above], y[above], strict=True)
        ]
    if off:
        by_name: dict[str, list[float]] = {}
        for name, _, value in sorted(off, key=lambda o: -o[2]):  # the highest first
            by_name.setdefault(name, []).append(value)
        said = [f"{n} {'=' if len(v) == 1 else 'up to'} {_num(max(v))}" for n, v in by_name.items()]
        note = f"{_where([o[1] for o in off])}: {', '.join(said[:3])}{' and more' if len(said) > 3 else ''}"
        notes.append(note + ", off the axis")
        ax.plot([], [], ls="none", marker=OFF_AXIS_MARKER, ms=OFF_AXIS_MS, color="0.35", label=notes[-1], gid=NOTE_GID)
    shown = [(s.name, float(v)) for s in series for v in np.asarray(s.y, dtype=float) if np.isfinite(v) and v <= top]
    for ref in references:
        if reg.lo <= ref.value <= reg.hi:
            continue
        note = f"{ref.label} = {_num(ref.value)}, not drawn: "
        if ref.value > reg.hi and shown and max(v for _, v in shown) > 0:
            name, highest = max(shown, key=lambda o: o[1])
            note += f"{ref.value / highest:.2g}× the highest {name}"
        else:
            note += "above the axis" if ref.value > reg.hi else "below the axis"
        notes.append(note)
        arrow = r"$\uparrow$" if ref.value > reg.hi else r"$\downarrow$"
        ax.plot([], [], ls="none", marker=arrow, ms=9, color=ref.color, label=note, gid=NOTE_GID)
    return RegimeAxis((bottom, top), reg, off, notes)


def run_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per run of a sweep, the same in every panel: GD/SGD its own, the others the radius palette in
    order (without GD's colour), so that "SAM rho=0.1" is the same line in the ratio, collapse and loss panels.
    """
    palette = [c for c in RHO_PALETTE if c != COLORS["gd"]]
    out, i = {}, 0
    for lab in labels:
        if lab.lower().startswith(("gd", "sgd")):
            out[lab] = COLORS["gd"]
        else:
            out[lab] = palette[i % len(palette)]
            i += 1
    return out


def plot_eigenvalues(
    ax: Axes, df: pd.DataFrame, *, title: str = "", show_gd_edge: bool = True, legend: bool = True
) -> Axes:
    """E-plot: ``lambda_1..lambda_k`` over steps, the run's edge, and ``2/eta``.

    For a SAM run the figure is about its eigenvalues against both edges, so the axis reaches ``2/eta``
    (and 0, where that leaves the data half the height); for GD it is about ``lambda_1``, and ``2/eta`` is drawn
    where the run comes near it, said in the legend where not (:func:`fit_regime`).
    """
    cols = _eig_columns(df)
    series = []
    for i, c in enumerate(cols):
        color = COLORS["lambda1"] if i == 0 else COLORS["lambda_k"]
        ax.plot(
            df["step"],
            df[c],
            color=color,
            lw=1.8 if i == 0 else 1.0,
            alpha=1.0 if i == 0 else 0.8,
            label=r"$\lambda_1$ (exact, Lanczos)" if i == 0 else (r"$\lambda_2..\lambda_k$" if i == 1 else None),
        )
        series.append(Series.of(r"$\lambda_1$" if i == 0 else r"$\lambda_2..\lambda_k$", df, df[c], color))
    is_gd = bool(np.allclose(df["edge"], df["gd_edge"]))
    if not is_gd:
        ax.plot(df["step"], df["edge"], color=COLORS["sam_edge"], ls="--", lw=1.8, label="SAM-edge")
        series.append(Series.of("SAM-edge", df, df["edge"], COLORS["sam_edge"]))
    refs = []
    if show_gd_edge or is_gd:
        refs.append(
            Reference(float(df["gd_edge"].iloc[0]), r"$2/\eta$", COLORS["gd_edge"], required=show_gd_edge and not is_gd)
        )
    fit_regime(ax, series, refs, zero=show_gd_edge)
    ax.set_xlabel("step")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title(title)
    if legend:
        ax.legend(loc="best")
    return ax


def plot_edge_zoom(ax: Axes, df: pd.DataFrame, *, title: str = "", legend: bool = True) -> Axes:
    """S-plot: the E-plot without the ``2/eta`` line and without 0: a zoom on the SAM-edge."""
    return plot_eigenvalues(ax, df, title=title, show_gd_edge=False, legend=legend)


def plot_alignment(ax: Axes, df: pd.DataFrame, *, title: str = "", legend: bool = True) -> Axes:
    """A-plot: ``|cos(g, v1)|`` and ``|cos(SAM gradient, v1)|`` over steps (on their whole range, 0 to 1)."""
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
    if legend:
        ax.legend(loc="best")
    return ax


def plot_losses(
    ax: Axes, runs: Mapping[str, pd.DataFrame], *, title: str = "", log: bool = True, legend: bool = True
) -> Axes:
    """L-plot: per-step training loss (``steps.csv``) of several runs, labelled by the mapping's keys.

    On a log axis over the whole run: the loss's fall from its start is what the panel shows.
    """
    colors = run_colors(list(runs))
    for label, steps in runs.items():
        ax.plot(steps["step"], steps["loss"], label=label, color=colors[label], lw=1.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    if legend:
        ax.legend(loc="best")
    return ax


#: The line every ratio to the edge is compared with.
ON_THE_EDGE = Reference(1.0, "on the edge", COLORS["theory"], lw=1.0, required=True)


def plot_tracking_ratio(ax: Axes, runs: Mapping[str, pd.DataFrame], *, title: str = "", legend: bool = True) -> Axes:
    """``lambda_1 / edge`` over steps for several runs, with the line 1 (on the edge)."""
    colors = run_colors(list(runs))
    series = []
    for label, df in runs.items():
        ratio = df["lambda_1"] / df["edge"]
        ax.plot(df["step"], ratio, label=label, color=colors[label])
        series.append(Series.of(r"$\lambda_1$/edge", df, ratio, colors[label]))
    fit_regime(ax, series, [ON_THE_EDGE])
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\lambda_1$ / edge")
    ax.set_title(title)
    if legend:
        ax.legend(loc="best")
    return ax


def plot_estimators(ax: Axes, df: pd.DataFrame, *, title: str = "", legend: bool = True) -> Axes:
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
    series = [
        Series.of(r"$\lambda_1$", df, df["lambda_1"], COLORS["lambda1"]),
        Series.of("official", sub, sub["official_lambda"], COLORS["official"]),
    ]
    if not np.allclose(df["edge"], df["gd_edge"]):
        ax.plot(df["step"], df["edge"], color=COLORS["sam_edge"], ls="--", label="SAM-edge")
        series.append(Series.of("SAM-edge", df, df["edge"], COLORS["sam_edge"]))
    fit_regime(ax, series, zero=True)
    ax.set_xlabel("step")
    ax.set_ylabel("sharpness")
    ax.set_title(title)
    if legend:
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


def plot_alpha_collapse(ax: Axes, runs: Mapping[str, pd.DataFrame], *, title: str = "", legend: bool = True) -> Axes:
    """``lambda_1 / (2/eta)`` against ``alpha = eta ||g|| / (2 rho)`` for SAM runs, over the curve ``R(alpha)``.

    If SAM sits on its edge, every measurement of every rho falls on the single curve ``R`` (chapter 1).
    """
    from samedge_lib.theory.edges import (
        edge_ratio,  # the one formula; imported here to keep plots' dependencies visible
    )

    colors = run_colors(list(runs))
    lo, hi = math.inf, 0.0
    series = []
    for label, df in runs.items():
        a = df["alpha"].to_numpy()
        ratio = df["lambda_1"] / df["gd_edge"]
        ax.scatter(a, ratio, s=14, color=colors[label], label=label, zorder=3)
        series.append(Series.of(r"$\lambda_1/(2/\eta)$", df, ratio, colors[label], x=a))
        lo, hi = min(lo, a.min()), max(hi, a.max())
    grid = np.logspace(np.log10(lo / 2), np.log10(hi * 2), 200)
    ax.plot(grid, edge_ratio(grid), color=COLORS["sam_edge"], ls="--", label=r"$R(\alpha)$ = SAM-edge/(2/$\eta$)")
    ax.set_xscale("log")
    fit_regime(ax, series, zero=True)  # the checks of the transient, by their steps, as in the time series
    ax.set_xlabel(r"$\alpha = \eta\|g\|/(2\rho)$")
    ax.set_ylabel(r"$\lambda_1 / (2/\eta)$")
    ax.set_title(title)
    if legend:
        ax.legend(loc="best")
    return ax


def plot_topk_over_edge(ax: Axes, df: pd.DataFrame, *, title: str = "", legend: bool = True) -> Axes:
    """Each tracked eigenvalue divided by the run's edge: do several pile up at the edge?"""
    series = []
    for i, c in enumerate(_eig_columns(df)):
        color = RHO_PALETTE[i % len(RHO_PALETTE)]
        ratio = df[c] / df["edge"]
        ax.plot(df["step"], ratio, color=color, label=rf"$\lambda_{i + 1}$ / edge")
        series.append(Series.of(r"$\lambda_i$/edge", df, ratio, color))
    fit_regime(ax, series, [ON_THE_EDGE])
    ax.set_xlabel("step")
    ax.set_ylabel("eigenvalue / edge")
    ax.set_title(title)
    if legend:
        ax.legend(loc="best")
    return ax


def figure_legend(fig: plt.Figure, axes: Sequence[Axes], panels: Sequence[str], first: Sequence[str] = ()) -> None:
    """One legend under a row of panels, for panels too narrow to hold their own: each label once (a run is one
    colour in every panel, :func:`run_colors`), the notes of :func:`fit_regime` prefixed with their panel's name
    (``panels``, e.g. "left"); the labels ``first`` (the runs, in the sweep's order) first, the notes last. As many
    columns as fit in the figure's width, so the page does not shrink it.
    """
    entries: dict[str, tuple[bool, object]] = {}
    for ax, panel in zip(axes, panels, strict=True):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            note = h.get_gid() == NOTE_GID
            entries.setdefault(f"{panel} panel, {lab}" if note else lab, (note, h))
    rest = sorted((lab for lab in entries if lab not in first), key=lambda lab: entries[lab][0])  # notes last
    ranked = [*(lab for lab in first if lab in entries), *rest]
    handles, labels = [entries[lab][1] for lab in ranked], ranked
    width = fig.get_window_extent().width
    for ncol in range(min(4, len(labels)), 0, -1):
        leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol)
        fig.draw_without_rendering()
        if ncol == 1 or leg.get_window_extent().width <= width:
            return
        leg.remove()
