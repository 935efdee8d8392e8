"""The claims of the paper's three experiment chapters (MNIST, CIFAR-10, the Transformer), as data.

Each :class:`~samedge_lib.reading.claims.Claim` states one finding of Long & Bartlett (2024, Section 5) -- or one the
book adds -- with the quantity it rests on and its criterion; :data:`CLAIMS` is the catalogue that
:class:`samedge_lib.chapters.chapter.ExperimentChapter` evaluates on the live and the stored runs
(:func:`samedge_lib.reading.claims.evaluate`). The one tolerance shared by every chapter ("on the edge", for GD at
``2/eta`` as for SAM at its SAM-edge) is :data:`samedge_lib.reading.claims.EDGE_BAND`; ``gd_within_band`` checks,
on each chapter's own GD run, the evidence it rests on. Those below are particular to these claims.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from samedge_lib.reading.claims import (
    Claim,
    RunSet,
    Verdict,
    band_interval,
    compare_words,
    fmt,
    in_band,
    on_edge,
    reads_words,
)
from samedge_lib.record.results import REACH, label, tracking_ratio, tracking_window

#: "Far below ``2/eta``": the SAM-edge at the last check is less than this fraction of ``2/eta``.
FAR_BELOW = 0.5

#: "Much flatter than GD": SAM's ``lambda_1`` at the last common check is less than this fraction of GD's.
FLATTER = 0.7

#: "A second eigenvalue at the edge too": the median ``lambda_2 / lambda_1`` after the transient is at least this.
SECOND_AT_EDGE = 0.95

#: "The paper's estimator agrees with the exact sharpness": median relative difference within this.
ESTIMATOR_AGREES = 0.02

#: "SAM's training loss is comparable to or lower than GD's": SAM's loss at most this multiple of GD's.
LOSS_COMPARABLE = 1.1


def _last_step(df: pd.DataFrame) -> int:
    return int(df["step"].iloc[-1])


def _gd(rs: RunSet) -> str:
    """The name of the run set's ``rho = 0`` run as a reader knows it: ``GD``, or ``SGD`` on minibatches."""
    run = rs.runs.get(0.0)
    return label(run.config) if run is not None else "GD"


def _gd_ratio(rs: RunSet) -> tuple[np.ndarray, np.ndarray] | str:
    """``eta lambda_1 / 2`` at every check of the ``rho = 0`` run and over its last third, or why there is none."""
    df = rs.table(0.0)
    if df.empty:
        return "no GD run"
    r = (df["lambda_1"] / df["gd_edge"]).to_numpy()
    return r, r[-max(1, len(r) // 3) :]


def _sam_gd_last(rs: RunSet) -> tuple[pd.Series, pd.Series] | str:
    """The main SAM run's and GD's rows at their last common measurement step (runs of different length), or why
    there are none.
    """
    sam, gd = rs.table(rs.main_rho), rs.table(0.0)
    if sam.empty or gd.empty:
        return "needs a GD and a SAM run"
    common = sorted(set(sam["step"]) & set(gd["step"]))
    if not common:
        return "the GD and SAM runs share no check step"
    s = common[-1]
    return sam[sam["step"] == s].iloc[-1], gd[gd["step"] == s].iloc[-1]


# ------------------------------------------------------------------------------------------------
# The claims of the experiment chapters
# ------------------------------------------------------------------------------------------------
def _gd_sharpening(rs: RunSet) -> tuple[Verdict, float, str]:
    df = rs.table(0.0)
    if df.empty:
        return Verdict.NOT_MEASURED, math.nan, "no GD run"
    if len(df) < 3:
        return Verdict.NOT_REACHED, math.nan, f"only {len(df)} checks"
    start = float(df["lambda_1"].iloc[0])
    late = float(df["lambda_1"].iloc[-max(1, len(df) // 3) :].median())
    value = late / start
    detail = (
        f"λ₁ = {fmt(start)} at step {int(df['step'].iloc[0])}, median {fmt(late)} over the last third "
        f"(to step {_last_step(df)}): ×{value:.2f}"
    )
    return (Verdict.HOLDS if value > 1 else Verdict.FAILS), value, detail


def _gd_at_edge(rs: RunSet) -> tuple[Verdict, float, str]:
    ratios = _gd_ratio(rs)
    if isinstance(ratios, str):
        return Verdict.NOT_MEASURED, math.nan, ratios
    r, last = ratios
    late = float(np.median(last))
    end = _last_step(rs.table(0.0))
    if np.max(r) < REACH:
        return Verdict.NOT_REACHED, late, f"{_gd(rs)} did not reach 2/η by step {end} (largest ηλ₁/2 = {np.max(r):.3f})"
    moved = compare_words(late, r[0], more="rose", less="fell", same="stayed")
    detail = (
        f"{_gd(rs)}'s ηλ₁/2 {moved} from {r[0]:.3f} at the first check to a median of {late:.3f} over the last third "
        f"(to step {end})"
    )
    return (Verdict.HOLDS if in_band(late) else Verdict.FAILS), late, detail


def _gd_within_band(rs: RunSet) -> tuple[Verdict, float, str]:
    ratios = _gd_ratio(rs)
    if isinstance(ratios, str):
        return Verdict.NOT_MEASURED, math.nan, ratios
    r, last = ratios
    if np.max(r) < REACH:
        return Verdict.NOT_REACHED, math.nan, f"{_gd(rs)} did not reach 2/η (largest ηλ₁/2 = {np.max(r):.3f})"
    p10, p90 = (float(np.percentile(last, q)) for q in (10, 90))
    value = math.exp(max(abs(math.log(p10)), abs(math.log(p90))))  # the wider side, as a factor
    detail = (
        f"{_gd(rs)}'s ηλ₁/2 over its last third (p10–p90, {len(last)} checks) spans {p10:.3f}–{p90:.3f}, "
        f"against the band {band_interval()}"
    )
    return (Verdict.HOLDS if in_band(p10) and in_band(p90) else Verdict.FAILS), value, detail


def _sam_on_edge(rs: RunSet) -> tuple[Verdict, float, str]:
    if rs.main_rho not in rs.runs:
        return Verdict.NOT_MEASURED, math.nan, f"no SAM run at ρ = {rs.main_rho:g}"
    return on_edge(rs.table(rs.main_rho))


def _all_radii_on_edge(rs: RunSet) -> tuple[Verdict, float, str]:
    rhos = rs.sam_rhos
    if len(rhos) < 2:
        return Verdict.NOT_MEASURED, math.nan, f"{len(rhos)} SAM radius here; the claim needs several"
    per = {rho: on_edge(rs.table(rho)) for rho in rhos}
    verdicts = [v for v, _, _ in per.values()]
    if Verdict.FAILS in verdicts:
        verdict = Verdict.FAILS
    elif Verdict.NOT_REACHED in verdicts or Verdict.NOT_MEASURED in verdicts:
        verdict = Verdict.NOT_REACHED
    else:
        verdict = Verdict.HOLDS
    medians = [m for _, m, _ in per.values() if math.isfinite(m)]
    worst = max((abs(math.log(m)) for m in medians), default=math.nan)
    parts = [f"ρ = {rho:g}: {fmt(m, 3) if math.isfinite(m) else v.value}" for rho, (v, m, _) in per.items()]
    detail = "median λ₁/edge " + "; ".join(parts)
    return verdict, math.exp(worst) if math.isfinite(worst) else math.nan, detail


def _edge_far_below(rs: RunSet) -> tuple[Verdict, float, str]:
    df = rs.table(rs.main_rho)
    if df.empty:
        return Verdict.NOT_MEASURED, math.nan, f"no SAM run at ρ = {rs.main_rho:g}"
    last = df.iloc[-1]
    value = float(last["edge"] / last["gd_edge"])
    detail = f"SAM-edge = {value:.3f} × 2/η at step {int(last['step'])}"
    return (Verdict.HOLDS if value < FAR_BELOW else Verdict.FAILS), value, detail


def _sam_flatter(rs: RunSet) -> tuple[Verdict, float, str]:
    pair = _sam_gd_last(rs)
    if isinstance(pair, str):
        return Verdict.NOT_MEASURED, math.nan, pair
    s, g = pair
    value = float(s["lambda_1"] / g["lambda_1"])
    detail = (
        f"at step {int(s['step'])} λ₁ = {fmt(s['lambda_1'])} (SAM) against {fmt(g['lambda_1'])} ({_gd(rs)}): "
        f"×{value:.2f}"
    )
    if value < FLATTER:
        return Verdict.HOLDS, value, detail
    if not tracking_ratio(rs.table(rs.main_rho))["reached"]:
        return Verdict.NOT_REACHED, value, detail + "; SAM has not reached its edge yet"
    return Verdict.FAILS, value, detail


def _sam_grad_aligned(rs: RunSet) -> tuple[Verdict, float, str]:
    df = rs.table(rs.main_rho)
    if df.empty:
        return Verdict.NOT_MEASURED, math.nan, f"no SAM run at ρ = {rs.main_rho:g}"
    a_sam, a_g = float(df["align_sam_g"].mean()), float(df["align_g"].mean())
    value = a_sam / a_g if a_g > 0 else math.nan
    detail = f"mean |cos(g_SAM, v₁)| = {a_sam:.3f} against mean |cos(g, v₁)| = {a_g:.3f} over {len(df)} checks"
    return (Verdict.HOLDS if value >= 1 else Verdict.FAILS), value, detail


def _second_at_edge(rs: RunSet) -> tuple[Verdict, float, str]:
    df = rs.table(rs.main_rho)
    if df.empty or "lambda_2" not in df:
        return Verdict.NOT_MEASURED, math.nan, "λ₂ was not tracked (k = 1)" if not df.empty else "no SAM run"
    win = tracking_window(df)
    if len(win) == 0:
        return Verdict.NOT_REACHED, math.nan, f"SAM did not reach its edge by step {_last_step(df)}"
    value = float((win["lambda_2"] / win["lambda_1"]).median())
    l2_edge = float((win["lambda_2"] / win["edge"]).median())
    detail = f"median λ₂/λ₁ = {value:.3f} after the transient (λ₂/edge = {l2_edge:.3f})"
    return (Verdict.HOLDS if value >= SECOND_AT_EDGE else Verdict.FAILS), value, detail


def official_bias(df: pd.DataFrame) -> dict[str, float]:
    """Relative difference official/exact - 1 at the checks where both ran: median, at the first such check, count."""
    both = df.dropna(subset=["official_lambda"])
    if both.empty:
        return {"median": math.nan, "first": math.nan, "first_step": math.nan, "n": 0}
    rel = (both["official_lambda"] / both["lambda_1"] - 1).to_numpy()
    return {
        "median": float(np.median(rel)),
        "first": float(rel[0]),
        "first_step": float(both["step"].iloc[0]),
        "n": int(len(rel)),
    }


def _official_agrees(rs: RunSet) -> tuple[Verdict, float, str]:
    df = rs.table(rs.main_rho)
    b = official_bias(df) if not df.empty else {"n": 0}
    if b["n"] == 0:
        return Verdict.NOT_MEASURED, math.nan, "the paper's estimator was not run"
    detail = (
        f"{reads_words(b['median'])} (median over {b['n']} checks); at step {int(b['first_step'])} it "
        f"{reads_words(b['first'])}"
    )
    return (Verdict.HOLDS if abs(b["median"]) <= ESTIMATOR_AGREES else Verdict.FAILS), b["median"], detail


def _loss_comparable(rs: RunSet) -> tuple[Verdict, float, str]:
    pair = _sam_gd_last(rs)
    if isinstance(pair, str):
        return Verdict.NOT_MEASURED, math.nan, pair
    s, g = pair
    value = float(s["loss"] / g["loss"])
    detail = (
        f"training loss at step {int(s['step'])}: {fmt(s['loss'], 4)} (SAM) against {fmt(g['loss'], 4)} ({_gd(rs)})"
    )
    for key, name in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        if key in s and key in g and math.isfinite(s[key]) and math.isfinite(g[key]):
            detail += f"; {name} {fmt(s[key], 4)} against {fmt(g[key], 4)}"
    return (Verdict.HOLDS if value <= LOSS_COMPARABLE else Verdict.FAILS), value, detail


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "gd_sharpening",
        "Under GD the sharpness rises during training (progressive sharpening).",
        "GD's median λ₁ over the last third / λ₁ at the first check",
        "> 1",
        "paper, Section 1; Cohen et al. (2021)",
        _gd_sharpening,
        "Progressive sharpening",
    ),
    Claim(
        "gd_at_edge",
        "GD's sharpness reaches 2/η and hovers there (the edge of stability).",
        "median of ηλ₁/2 over the last third of GD's checks",
        f"in {band_interval()}; not reached if ηλ₁/2 never gets to {REACH:g}",
        "paper, Section 1; Cohen et al. (2021)",
        _gd_at_edge,
        "GD at its edge of stability",
    ),
    Claim(
        "gd_within_band",
        "GD's own fluctuation about 2/η fits inside the book's on-edge band (the band's evidence).",
        "10th and 90th percentiles of ηλ₁/2 over the last third of GD's checks",
        f"both in {band_interval()}; not reached if ηλ₁/2 never gets to {REACH:g}",
        "this book (GD is on its edge by the definition of the edge of stability)",
        _gd_within_band,
        "GD's spread about 2/η fitting the on-edge band",
    ),
    Claim(
        "sam_on_edge",
        "SAM's sharpness reaches its SAM-edge and stays on it.",
        "median of λ₁/SAM-edge after the transient, at the main radius",
        f"in {band_interval()}; not reached if λ₁ never gets to {REACH:g} × SAM-edge",
        "paper, Sections 4-6",
        _sam_on_edge,
        "SAM on its SAM-edge",
    ),
    Claim(
        "all_radii_on_edge",
        "Every radius sits on its own edge, so all checks of all radii fall on the one curve R(α).",
        "median of λ₁/SAM-edge after the transient, for every radius (value: the largest offset, as a factor)",
        f"every radius in {band_interval()}",
        "this book (the paper's claim at every radius, read through R(α) of chapter 1)",
        _all_radii_on_edge,
        "Every radius on its own edge",
    ),
    Claim(
        "edge_far_below",
        "Late in training the SAM-edge lies far below GD's 2/η.",
        "SAM-edge / (2/η) at the last check, main radius",
        f"< {FAR_BELOW}",
        "paper, Section 3 (the SAM-edge shrinks with ‖g‖)",
        _edge_far_below,
        "The SAM-edge far below 2/η",
    ),
    Claim(
        "sam_flatter",
        "SAM ends in a much flatter region than GD.",
        "λ₁ of SAM / λ₁ of GD at their last common check",
        f"< {FLATTER}",
        "paper, Section 1",
        _sam_flatter,
        "SAM ending much flatter than GD",
    ),
    Claim(
        "sam_grad_aligned",
        "The SAM gradient is more aligned with the top eigenvector v₁ than the gradient.",
        "mean |cos(g_SAM, v₁)| / mean |cos(g, v₁)| over all checks, main radius",
        "≥ 1",
        "this book (the quadratic picture: g_SAM ≈ g + ρHg/‖g‖ amplifies v₁)",
        _sam_grad_aligned,
        "The SAM gradient's closer alignment with v₁",
    ),
    Claim(
        "second_at_edge",
        "A second eigenvalue sits on the SAM-edge too.",
        "median λ₂/λ₁ after the transient, main radius",
        f"≥ {SECOND_AT_EDGE}",
        "this book (as several eigenvalues reach 2/η at GD's edge of stability)",
        _second_at_edge,
        "A second eigenvalue on the SAM-edge",
    ),
    Claim(
        "official_agrees",
        "The paper's estimator (finite-difference power iteration) reads the exact sharpness.",
        "median of official/exact − 1 at the checks where both ran, main radius",
        f"within ±{100 * ESTIMATOR_AGREES:g} %",
        "this book (the paper's figures use that estimator)",
        _official_agrees,
        "The paper's estimator reading the exact sharpness",
    ),
    Claim(
        "loss_comparable",
        "SAM's training loss is comparable to or lower than GD's.",
        "training loss of SAM / of GD at their last common check",
        f"≤ {LOSS_COMPARABLE}",
        "reported, not claimed by the paper",
        _loss_comparable,
        "SAM's training loss comparable to GD's",
    ),
)

CLAIM_KEYS = tuple(c.key for c in CLAIMS)
