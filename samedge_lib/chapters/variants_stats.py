"""The runs of the chapters beyond the paper and their per-run statistics (torch-free: it only reads run folders).

:class:`VariantRuns` holds the runs a chapter shows, by key; the functions below compute what the claims of
:mod:`samedge_lib.chapters.variants_claims` and the figures of :mod:`samedge_lib.chapters.variants_figures` read
from one run's measurement table: the window after the crossing, the tracking statistics against an edge, the
slope of ``ln lambda_1`` on ``ln ||g||``, the escape after a late switch, and the phase-diagram quantities.

**After the crossing.** The statistics are taken over the checks after a run has reached its edge: from the
first check *after initialisation* at which ``lambda_1 >= REACH * edge``. The initial check is excluded on
purpose: at the ``cpu`` preset the initial sharpness (about 1.44) lies above every edge of these chapters, so
every run would "reach" its edge before taking a step; training first throws the sharpness below the edge (a
catapult) and the crossing that counts is the one training makes. Unlike the experiment chapters' tracking
window (:func:`samedge_lib.record.results.tracking_window`) the window is not cut at the middle of the run: the slope
of ``ln lambda_1`` against ``ln ||g||`` needs the whole range that ``||g||`` covers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from samedge_lib.record.results import REACH, RunResult, measurements_on
from samedge_lib.theory.edges import edge_elasticity, edge_ratio, switch_growth
from samedge_lib.theory.rules import SAM, UpdateRule

#: The escape after the switch is measured over this many steps (and over the first step alone); the switch
#: runs are checked at every one of them.
ESCAPE_STEPS = 5


# ------------------------------------------------------------------------------------------------
# The runs a chapter shows
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantRuns:
    """The runs of one chapter in one setting, by key (``"sam/0.1"``, ``"usam/0.1"``, ``"sam+hb/0.8"``, ...).

    Attributes:
        name: short name of the setting, used in glue keys and table headers (``"live"``).
        description: what the setting is (``"cpu preset, book grid"``).
        runs: the runs by key. Key prefixes (the part before ``/``): ``gd``, ``sam``, ``usam`` (the number is the
            SAM radius it is matched to), ``gd+hb``, ``sam+hb``, ``sam+nesterov`` (the number is beta),
            ``switch`` (the radius); phase-diagram keys are ``"<eta>/<rho>"``.
        extras: per key, numbers computed beside the runs (``gamma_ref`` of a USAM run, the ascent-point
            diagnostics of :func:`samedge_lib.chapters.variants.ascent_check`).
        where: where the verdicts were found, as a sentence of prose says it (``"on this page's runs"``), as
            :attr:`samedge_lib.reading.claims.RunSet.where`; it ends each claim's whole-sentence glue.

    """

    name: str
    description: str
    runs: Mapping[str, RunResult]
    extras: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    where: str = "on this page's runs"

    def table(self, key: str) -> pd.DataFrame:
        """The measurement table of the run ``key`` (empty if there is no such run)."""
        run = self.runs.get(key)
        return measurements_on(run) if run is not None else pd.DataFrame()

    def keys(self, prefix: str) -> list[str]:
        """The keys with this prefix (before the ``/``), in the order of the runs."""
        return [k for k in self.runs if k.split("/")[0] == prefix]


def variant_label(key: str, result: RunResult) -> str:
    """A legend label for the run ``key``: ``SAM ρ=0.1``, ``USAM r=0.29``, ``SAM+HB β=0.8``, ``GD→SAM ρ=0.1``..."""
    cfg = result.config
    kind = key.split("/")[0]
    if kind == "usam":
        return f"USAM r={cfg.rho:.3g}"
    if kind == "switch":
        return f"GD→SAM ρ={cfg.rho:g} at step {cfg.sam_start}"
    mom = ""
    if cfg.momentum > 0:
        mom = f"+{'Nesterov' if cfg.nesterov else 'HB'} β={cfg.momentum:g}"
    if UpdateRule.of(cfg).is_gd:
        return f"GD{mom} η={cfg.eta:.4g}"
    return f"SAM{mom} ρ={cfg.rho:g} η={cfg.eta:.4g}"


# ------------------------------------------------------------------------------------------------
# Per-run statistics
# ------------------------------------------------------------------------------------------------
def after_crossing(df: pd.DataFrame, edge: str = "edge") -> pd.DataFrame:
    """The checks from the first one after initialisation with ``lambda_1 >= REACH * edge`` (empty if none)."""
    if len(df) < 2:
        return df.iloc[0:0]
    ratio = (df["lambda_1"] / df[edge]).to_numpy()
    hit = np.flatnonzero(ratio[1:] >= REACH)
    return df.iloc[0:0] if not len(hit) else df.iloc[1 + int(hit[0]) :]


def log_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of ``y`` on ``x`` and its standard error (NaN with fewer than 3 points)."""
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan
    coef, cov = np.polyfit(x, y, 1, cov="unscaled")
    resid = y - np.polyval(coef, x)
    sigma2 = float(resid @ resid) / (len(x) - 2)
    return float(coef[0]), float(math.sqrt(sigma2 * cov[0, 0]))


def edge_stats(df: pd.DataFrame, edge: str = "edge") -> dict[str, float]:
    """A run against one of its edges after the crossing: median/p10/p90 of ``lambda_1/edge`` and the slope.

    The window is always the run's own crossing (of its ``edge`` column); ``edge`` only names the column the
    sharpness is divided by, so the momentum-free edge ``sam_edge`` is compared over the same checks.

    Keys: ``reached`` (bool), ``from_step``, ``n``, ``median``, ``p10``, ``p90``, ``slope`` and ``slope_se``
    (of ``ln lambda_1`` on ``ln ||g||``), ``mean_elasticity`` (mean of the SAM-edge's elasticity at the checks'
    ``alpha``; 0 for USAM), ``g_fall`` (largest over smallest ``||g||``), ``last_ratio`` and ``last_step``.
    """
    nan = math.nan
    out: dict[str, float] = dict(
        reached=False, from_step=nan, n=0, median=nan, p10=nan, p90=nan, slope=nan, slope_se=nan,
        mean_elasticity=nan, g_fall=nan, last_ratio=nan, last_step=nan,
    )  # fmt: skip
    if df.empty or df["lambda_1"].notna().sum() == 0:
        return out
    out.update(last_ratio=float(df["lambda_1"].iloc[-1] / df[edge].iloc[-1]), last_step=float(df["step"].iloc[-1]))
    win = after_crossing(df)
    if win.empty:
        return out
    r = (win["lambda_1"] / win[edge]).to_numpy()
    slope, se = log_slope(np.log(win["grad_norm"].to_numpy()), np.log(win["lambda_1"].to_numpy()))
    alphas = win["alpha"].to_numpy()
    out.update(
        reached=True,
        from_step=float(win["step"].iloc[0]),
        n=int(len(r)),
        median=float(np.median(r)),
        p10=float(np.percentile(r, 10)),
        p90=float(np.percentile(r, 90)),
        slope=slope,
        slope_se=se,
        mean_elasticity=float(np.mean(edge_elasticity(alphas))) if np.isfinite(alphas).all() else 0.0,
        g_fall=float(win["grad_norm"].max() / win["grad_norm"].min()),
    )
    return out


def gd_last_third(df: pd.DataFrame) -> tuple[float, float]:
    """GD's ``lambda_1 / edge``: the median over the last third of the checks, and the largest after initialisation.

    The initial check is left out of the largest value for the reason of :func:`after_crossing`: whether GD
    *reached* its edge is a question about training, and at the ``cpu`` preset the initial sharpness already
    sits at 0.9 of ``2/eta``.
    """
    r = (df["lambda_1"] / df["edge"]).to_numpy()
    return float(np.median(r[-max(1, len(r) // 3) :])), float(np.max(r[1:] if len(r) > 1 else r))


def escape(df: pd.DataFrame, sam_start: int, steps: int = ESCAPE_STEPS) -> dict[str, float]:
    """How fast SAM leaves GD's edge: log-growth of ``|<v1, g>|`` per step from the switch on.

    ``|<v1, g>| = |cos(g, v1)| ||g||`` with ``v1`` the top eigenvector measured at that step. Returns the
    predicted rate ``ln(1 + 2/alpha)`` at the switch, the measured rate over the first step and the mean over the
    first ``steps`` steps (NaN where the checks are missing), and ``alpha`` at the switch.
    """
    rows = df.set_index("step")
    want = list(range(sam_start, sam_start + steps + 1))
    nan = math.nan
    if sam_start not in rows.index:
        return {"alpha": nan, "predicted": nan, "first": nan, "mean": nan, "n": 0}
    proj = {s: float(rows.loc[s, "align_g"] * rows.loc[s, "grad_norm"]) for s in want if s in rows.index}
    a = float(rows.loc[sam_start, "alpha"])
    pred = math.log(float(switch_growth(a))) if a > 0 else nan
    first = math.log(proj[sam_start + 1] / proj[sam_start]) if sam_start + 1 in proj else nan
    last = max(proj)
    mean = math.log(proj[last] / proj[sam_start]) / (last - sam_start) if last > sam_start else nan
    return {"alpha": a, "predicted": pred, "first": first, "mean": mean, "n": last - sam_start}


def phase_stats(df: pd.DataFrame) -> dict[str, float]:
    """One phase-diagram run after the crossing: median ``|ln(y/R(alpha))|`` and ``y/R``, with ``y = eta lam1/2``."""
    win = after_crossing(df)
    if win.empty:
        return {"reached": False, "dev": math.nan, "ratio": math.nan, "n": 0}
    y = (win["lambda_1"] / win["gd_edge"]).to_numpy()
    ratio = y / edge_ratio(win["alpha"].to_numpy())
    return {
        "reached": True,
        "dev": float(np.median(np.abs(np.log(ratio)))),
        "ratio": float(np.median(ratio)),
        "n": int(len(y)),
    }


def collapse_of(df: pd.DataFrame, result: RunResult) -> pd.Series:
    """The collapse variable ``Lambda`` of each check: the run's ``collapse`` column, or computed from its columns.

    Run folders written before the engine recorded ``Lambda`` lack the column; for them it is
    ``(eta_eff/2) lambda_1 (1 + rho lambda_1/||g||)`` (``r`` for ``rho/||g||`` with USAM) from the same rows.
    """
    if "collapse" in df and df["collapse"].notna().all():
        return df["collapse"]
    rule = UpdateRule.of(result.config)
    value = rule.collapse_columns(df["lambda_1"].to_numpy(), df["grad_norm"].to_numpy(), df["step"].to_numpy())
    return pd.Series(value, index=df.index)


def pooled_phase(rs: VariantRuns) -> pd.DataFrame:
    """Every SAM check of the phase diagram after its run's crossing: ``key``, ``eta``, ``rho``, ``alpha``, ``y``."""
    parts = []
    for key in sam_phase_keys(rs):
        win = after_crossing(rs.table(key))
        if win.empty:
            continue
        cfg = rs.runs[key].config
        parts.append(
            pd.DataFrame(
                {
                    "key": key,
                    "eta": cfg.eta,
                    "rho": cfg.rho,
                    "step": win["step"].to_numpy(),
                    "alpha": win["alpha"].to_numpy(),
                    "y": (win["lambda_1"] / win["gd_edge"]).to_numpy(),
                    "collapse": collapse_of(win, rs.runs[key]).to_numpy(),
                }
            )
        )
    columns = ["key", "eta", "rho", "step", "alpha", "y", "collapse"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def sam_phase_keys(rs: VariantRuns) -> list[str]:
    """The phase-diagram keys of SAM runs (``"<eta>/<rho>"`` with ``rho > 0``)."""
    return [k for k, r in rs.runs.items() if UpdateRule.of(r.config).ascent is SAM and r.config.rho > 0 and "/" in k]
