"""Reading an edge monitor's log: the table, its figure, and whether the run sits on its edge (claims).

:class:`samedge_lib.api.EdgeMonitor` writes ``edge_monitor.csv`` (one row per check: ``step``, ``lambda_i`` with
their ``residual_i``, ``grad_norm``, ``edge``, ``sharpness`` -- the quantity compared with the edge, ``lambda_1`` or
Adam's preconditioned sharpness -- ``ratio``, the check's cost). This module reads it without torch, draws
``lambda_1`` against the edge (:func:`plot_edge_log`) and states the book's verdicts on it as claims
(:data:`EDGE_CLAIMS`, evaluated with :func:`samedge_lib.reading.claims.evaluate` on an :class:`EdgeLog`):

* ``on_edge`` -- after the transient (the rule of :func:`samedge_lib.record.results.tracking_ratio`: from the later
  of the first check at 0.9 x edge and the middle of the log) the median of ``sharpness / edge`` lies in the book's
  band :data:`~samedge_lib.reading.claims.EDGE_BAND`, the band every chapter uses;
* ``certified`` -- every ``lambda_1`` of the log has a relative residual below :data:`CERTIFIED_RESIDUAL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samedge_lib.reading.claims import Claim, Verdict, band_interval, on_edge
from samedge_lib.record.results import REACH
from samedge_lib.record.runfolder import read_table

__all__ = ["CERTIFIED_RESIDUAL", "EDGE_CLAIMS", "EdgeLog", "plot_edge_log", "read_edge_log"]

#: ``lambda_1`` is certified when its relative residual ``||H u - theta u|| / |theta||`` is below this: the Ritz value
#: then lies within that fraction of an eigenvalue (and, for the top one, the gap to the next says which).
CERTIFIED_RESIDUAL = 1e-2

CSV_NAME = "edge_monitor.csv"


def read_edge_log(path: str | Path) -> pd.DataFrame:
    """The monitor's table from ``edge_monitor.csv`` or the folder holding it, sorted by step."""
    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    if not path.exists():
        raise FileNotFoundError(f"no edge monitor log at {path}")
    return read_table(path).sort_values("step").reset_index(drop=True)


def _table(log: pd.DataFrame | str | Path) -> pd.DataFrame:
    return log if isinstance(log, pd.DataFrame) else read_edge_log(log)


def plot_edge_log(
    log: pd.DataFrame | str | Path, ax: Any = None, *, label: str | None = None, eigenvalues: bool = True
):
    """Draw the sharpness against the edge over the steps, from the monitor's table or its CSV.

    The compared sharpness (``lambda_1``; Adam: ``lambda_max(P^-1 H)``) and the edge of every check, the further
    eigenvalues ``lambda_2..k`` faintly when ``eigenvalues``, and ``2/eta`` where it differs from the edge. Returns
    the axes.
    """
    import matplotlib.pyplot as plt

    from samedge_lib.reading.style import COLORS

    df = _table(log)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    prefix = f"{label}: " if label else ""
    adaptive = "preconditioned_lambda_1" in df and df["preconditioned_lambda_1"].notna().any()
    what = r"$\lambda_{\max}(P^{-1}H)$" if adaptive else r"$\lambda_1$"
    ax.plot(df["step"], df["sharpness"], "o-", color=COLORS["lambda1"], ms=3, label=prefix + what)
    if eigenvalues and not adaptive:
        for i in range(2, 100):
            if f"lambda_{i}" not in df:
                break
            ax.plot(df["step"], df[f"lambda_{i}"], "-", color=COLORS["lambda_k"], lw=0.8, alpha=0.7,
                    label=prefix + r"$\lambda_2, \ldots$" if i == 2 else None)  # fmt: skip
    ax.plot(df["step"], df["edge"], "--", color=COLORS["sam_edge"], label=prefix + "edge")
    if "gd_edge" in df and not np.allclose(df["gd_edge"], df["edge"], equal_nan=True) and not adaptive:
        ax.plot(df["step"], df["gd_edge"], ":", color=COLORS["gd_edge"], label=prefix + r"$2/\eta$")
    ax.set_xlabel("step")
    ax.set_ylabel("sharpness")
    ax.legend(fontsize="small")
    return ax


@dataclass(frozen=True)
class EdgeLog:
    """One monitored run, as the claims of :data:`EDGE_CLAIMS` read it (the :class:`~samedge_lib.reading.claims.RunSet`
    of a user's own run).

    Attributes:
        name: short name (glue keys, column headers).
        description: what the run is.
        table: the monitor's table (:func:`read_edge_log`).

    """

    name: str
    description: str
    table: pd.DataFrame

    @classmethod
    def read(cls, path: str | Path, name: str = "run", description: str = "") -> EdgeLog:
        """The log in ``path`` (a folder or the CSV)."""
        return cls(name, description or str(path), read_edge_log(path))


def _on_edge(log: EdgeLog) -> tuple[Verdict, float, str]:
    df = log.table
    if df.empty or "sharpness" not in df or df["sharpness"].notna().sum() == 0 or df["edge"].notna().sum() == 0:
        return Verdict.NOT_MEASURED, math.nan, "no check measured a sharpness against an edge"
    return on_edge(df, "sharpness", "sharpness/edge")


def _certified(log: EdgeLog) -> tuple[Verdict, float, str]:
    df = log.table
    if df.empty or "residual_1" not in df:
        return Verdict.NOT_MEASURED, math.nan, "no residuals in the log"
    worst = float(df["residual_1"].max())
    detail = f"largest relative residual of λ₁ over {len(df)} checks: {worst:.1e}"
    return (Verdict.HOLDS if worst <= CERTIFIED_RESIDUAL else Verdict.FAILS), worst, detail


#: The verdicts a monitored run gets (evaluate them with :func:`samedge_lib.reading.claims.evaluate`).
EDGE_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "on_edge",
        "The run sits on its edge",
        "median of sharpness/edge after the transient",
        f"in {band_interval()}; not reached if the sharpness never gets to {REACH:g} × edge",
        "Long & Bartlett (2024), Section 4 (SAM); Cohen et al. (2021, 2022) for GD and Adam",
        _on_edge,
        subject="The claim that the run sits on its edge",
    ),
    Claim(
        "certified",
        "Every λ₁ is certified by its residual",
        "largest relative residual ‖Hu − θu‖/|θ| of λ₁",
        f"≤ {CERTIFIED_RESIDUAL:g}",
        "the monitor's Lanczos (true residuals)",
        _certified,
        subject="The claim that every λ₁ is certified by its residual",
    ),
)
