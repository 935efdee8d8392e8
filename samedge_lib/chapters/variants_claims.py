"""The claims of the chapters beyond the paper: SAM's variants and the phase diagram in alpha.

Each prediction of those chapters is a :class:`~samedge_lib.reading.claims.Claim` here: the statement, the statistic
it rests on, the criterion, where it comes from and a function that computes the verdict on a
:class:`~samedge_lib.chapters.variants_stats.VariantRuns` (the runs a chapter shows, by key). They are evaluated,
tabulated and asserted with the machinery of :mod:`samedge_lib.reading.claims` (``evaluate``, ``claims_table``,
``assert_claims`` with ``claims=VARIANT_CLAIMS``), so a chapter never types a verdict or a number.

The statistics the verdicts rest on (the window after the crossing, the tracking statistics, the slope, the
escape, the phase-diagram quantities) and the run-set container live in
:mod:`samedge_lib.chapters.variants_stats`; they are re-exported here, so ``variants_claims.edge_stats`` etc. keep
working. The tolerances are the book's (constants below, each with its reason); this module only reads run folders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from samedge_lib.chapters.variants_stats import (
    ESCAPE_STEPS,
    VariantRuns,
    after_crossing,
    collapse_of,
    edge_stats,
    escape,
    gd_last_third,
    log_slope,
    phase_stats,
    pooled_phase,
    sam_phase_keys,
    variant_label,
)
from samedge_lib.reading import claims as cl
from samedge_lib.reading.claims import EDGE_BAND, Claim, Verdict, band_interval, fmt
from samedge_lib.theory.edges import regime_bounds
from samedge_lib.theory.rules import UpdateRule

__all__ = [
    "ESCAPE_STEPS",
    "VARIANT_CLAIMS",
    "VARIANT_CLAIM_KEYS",
    "VariantRuns",
    "after_crossing",
    "check",
    "claims_table",
    "collapse_of",
    "edge_stats",
    "escape",
    "evaluate",
    "gd_last_third",
    "largest_rho",
    "log_slope",
    "phase_stats",
    "pooled_phase",
    "sam_phase_keys",
    "variant_label",
]


#: "Does not follow ``||g||``" / "follows it with the predicted slope": ``|b| < FLAT_SLOPE`` for a flat edge,
#: ``|b - mean elasticity| < FLAT_SLOPE`` for SAM, with ``b`` the least-squares slope of ``ln lambda_1`` on
#: ``ln ||g||``. The edge's elasticity lies in (0, 1/2], so 0.1 is a fifth of its whole range.
FLAT_SLOPE = 0.1

#: "The slopes differ": SAM's slope exceeds its matched USAM run's by more than this, tested only where SAM's
#: edge is elastic enough to be told from a flat one (mean elasticity above the same number).
SLOPES_DIFFER = 0.15

#: "The momentum-free edge is rejected" (``beta = 0.8``): heavy ball sits at least this factor above
#: ``S(eta, rho, ||g||)``; Nesterov at most :data:`NAIVE_BELOW` of it. The momentum edges predict 1.34-1.8 and
#: 0.69-0.83 over the ``alpha`` these runs cover.
NAIVE_ABOVE = 1.25
NAIVE_BELOW = 0.85

#: The escape after the switch: the measured log-growth of ``|<v1, g>|`` per step within this relative distance
#: of ``ln(1 + 2/alpha)``, over :data:`~samedge_lib.chapters.variants_stats.ESCAPE_STEPS` steps (and over the first
#: step alone).
ESCAPE_TOL = 0.25

#: "Settles on the SAM-edge after the switch": the median ``lambda_1 / SAM-edge`` over the last third of the checks
#: after the switch within this of 1.
SETTLE_TOL = 0.10

#: "Collapses onto ``R(alpha)``": median ``|ln(y / R(alpha_t))|`` after the crossing at most ``ln 1.15``, with
#: ``y = eta lambda_1 / 2`` (the upper side of :data:`~samedge_lib.reading.claims.EDGE_BAND`, symmetric in log scale).
COLLAPSE_TOL = math.log(EDGE_BAND[1])

#: :data:`COLLAPSE_TOL` as the criteria and the prose state it.
COLLAPSE_WORDS = f"ln {math.exp(COLLAPSE_TOL):.3g}"

#: The regimes of ``R(alpha)``: square-root-like within this of ``sqrt(alpha)``, GD-like within this of 1
#: (:func:`~samedge_lib.theory.edges.regime_bounds`).
REGIME_TOL = 0.1

#: The phase diagram spans at least this many decades of ``alpha`` (pooled over runs, after the crossing).
ALPHA_DECADES = 2.0

#: Spearman rank correlation of ``y`` with ``alpha``, pooled over runs: at least this.
SPEARMAN_MIN = 0.9

#: GD "at ``2/eta``" in the phase diagram: median ``eta lambda_1 / 2`` over the last third in this band.
GD_BAND = (0.9, 1.1)

#: The quadratic picture breaks where the sharpness at the ascent point ``w + eps`` differs from the sharpness at
#: ``w`` by more than this (relative); runs that deviate from ``R(alpha)`` are predicted to be those.
ASCENT_TOL = 0.15

#: What a claim's evaluation returns: the verdict, the value and the sentence with the numbers.
Result = tuple[Verdict, float, str]


# ------------------------------------------------------------------------------------------------
# Combining per-run verdicts
# ------------------------------------------------------------------------------------------------
def _combine(per: Mapping[str, Result], empty: str, name: Callable[[str], str]) -> Result:
    """Every run must hold: the worst verdict, the largest value, and each run's number in the sentence."""
    if not per:
        return Verdict.NOT_MEASURED, math.nan, empty
    verdicts = [v for v, _, _ in per.values()]
    if Verdict.FAILS in verdicts:
        verdict = Verdict.FAILS
    elif Verdict.NOT_REACHED in verdicts:
        verdict = Verdict.NOT_REACHED
    elif Verdict.NOT_MEASURED in verdicts:
        verdict = Verdict.NOT_MEASURED
    else:
        verdict = Verdict.HOLDS
    values = [x for _, x, _ in per.values() if math.isfinite(x)]
    detail = "; ".join(f"{name(k)}: {d}" for k, (_, _, d) in per.items())
    return verdict, max(values, default=math.nan), detail


def _band(x: float, band: tuple[float, float]) -> Verdict:
    return Verdict.HOLDS if band[0] <= x <= band[1] else Verdict.FAILS


def _on_edge(df: pd.DataFrame, edge: str = "edge") -> Result:
    st = edge_stats(df, edge)
    if not st["reached"]:
        return Verdict.NOT_REACHED, math.nan, f"never at 0.9 × its edge (last check {fmt(st['last_ratio'])})"
    if st["n"] < 3:
        return Verdict.NOT_REACHED, math.nan, f"only {st['n']} checks after the crossing"
    detail = (
        f"median λ₁/edge {st['median']:.3f} (p10–p90 {st['p10']:.3f}–{st['p90']:.3f}) from step {st['from_step']:.0f}"
    )
    return _band(st["median"], EDGE_BAND), abs(math.log(st["median"])), detail


def _named(rs: VariantRuns) -> Callable[[str], str]:
    return lambda k: variant_label(k, rs.runs[k])


def _all_on_edge(rs: VariantRuns, keys: Iterable[str], none: str) -> Result:
    """Every run of ``keys`` on its own edge (``none``: the detail where there is no such run); the value is the
    worst run's median ratio.
    """
    per = {k: _on_edge(rs.table(k)) for k in keys}
    v, worst, d = _combine(per, none, _named(rs))
    return v, math.exp(worst) if math.isfinite(worst) else worst, d


# ------------------------------------------------------------------------------------------------
# E1: unnormalised against normalised SAM
# ------------------------------------------------------------------------------------------------
def _usam_on_edge(rs: VariantRuns) -> Result:
    return _all_on_edge(rs, rs.keys("usam"), "no USAM run")


def _usam_flat(rs: VariantRuns) -> Result:
    per = {}
    for k in rs.keys("usam"):
        st = edge_stats(rs.table(k))
        if not st["reached"] or not math.isfinite(st["slope"]):
            per[k] = (Verdict.NOT_REACHED, math.nan, "no slope (edge not reached)")
            continue
        detail = f"b = {st['slope']:+.3f} ± {st['slope_se']:.3f} while ‖g‖ varies ×{st['g_fall']:.1f}"
        per[k] = (Verdict.HOLDS if abs(st["slope"]) < FLAT_SLOPE else Verdict.FAILS, abs(st["slope"]), detail)
    return _combine(per, "no USAM run", _named(rs))


def _sam_on_edge(rs: VariantRuns) -> Result:
    return _all_on_edge(rs, rs.keys("sam"), "no SAM run")


def _sam_slope(rs: VariantRuns) -> Result:
    per = {}
    for k in rs.keys("sam"):
        st = edge_stats(rs.table(k))
        if not st["reached"] or not math.isfinite(st["slope"]):
            per[k] = (Verdict.NOT_REACHED, math.nan, "no slope (edge not reached)")
            continue
        gap = st["slope"] - st["mean_elasticity"]
        detail = (
            f"b = {st['slope']:.3f} ± {st['slope_se']:.3f} against mean ε = {st['mean_elasticity']:.3f} ({gap:+.3f})"
        )
        per[k] = (Verdict.HOLDS if abs(gap) < FLAT_SLOPE else Verdict.FAILS, abs(gap), detail)
    return _combine(per, "no SAM run", _named(rs))


def _slopes_differ(rs: VariantRuns) -> Result:
    applicable, skipped = {}, []
    for k in rs.keys("usam"):
        sam_key = "sam/" + k.split("/", 1)[1]
        if sam_key not in rs.runs:
            continue
        s, u = edge_stats(rs.table(sam_key)), edge_stats(rs.table(k))
        name = f"ρ = {rs.runs[sam_key].config.rho:g}"
        if not (math.isfinite(s["slope"]) and math.isfinite(u["slope"])):
            applicable[name] = (Verdict.NOT_REACHED, math.nan, "a slope is missing")
        elif s["mean_elasticity"] <= SLOPES_DIFFER:  # SAM's edge is nearly flat there: nothing to tell apart
            skipped.append(f"{name}: mean ε = {s['mean_elasticity']:.3f}, does not apply")
        else:
            gap = s["slope"] - u["slope"]
            verdict = Verdict.HOLDS if gap > SLOPES_DIFFER else Verdict.FAILS
            applicable[name] = (verdict, gap, f"SAM − USAM = {gap:+.3f}")
    if not applicable:
        return Verdict.NOT_MEASURED, math.nan, "; ".join(skipped) or "no matched SAM and USAM runs"
    verdict, _, detail = _combine(applicable, "", lambda n: n)
    gaps = [x for _, x, _ in applicable.values() if math.isfinite(x)]
    return verdict, min(gaps, default=math.nan), "; ".join([detail, *skipped])


# ------------------------------------------------------------------------------------------------
# E2: momentum
# ------------------------------------------------------------------------------------------------
def _momentum_sam_keys(rs: VariantRuns) -> list[str]:
    return rs.keys("sam+hb") + rs.keys("sam+nesterov")


def _momentum_on_edge(rs: VariantRuns) -> Result:
    return _all_on_edge(rs, _momentum_sam_keys(rs), "no SAM run with momentum")


def _momentum_gd(rs: VariantRuns) -> Result:
    per = {}
    for k in rs.keys("gd+hb"):
        df = rs.table(k)
        if df.empty:
            continue
        late, top = gd_last_third(df)
        lo = EDGE_BAND[0]
        if top < lo:
            per[k] = (
                Verdict.NOT_REACHED,
                late,
                f"pre-EoS: largest λ₁/(2(1+β)/η) after initialisation {top:.3f} (loss {df['loss'].iloc[-1]:.2g})",
            )
        else:
            per[k] = (_band(late, EDGE_BAND), late, f"median λ₁/(2(1+β)/η) = {late:.3f} over the last third")
    return _combine(per, "no GD run with momentum", _named(rs))


def _naive_rejected(rs: VariantRuns) -> Result:
    per = {}
    for k in _momentum_sam_keys(rs):
        cfg = rs.runs[k].config
        if not math.isclose(cfg.momentum, 0.8):
            continue
        st = edge_stats(rs.table(k), "sam_edge")
        if not st["reached"] or st["n"] < 3:
            per[k] = (Verdict.NOT_REACHED, math.nan, "never at 0.9 × its own edge")
            continue
        m = st["median"]
        ok = m <= NAIVE_BELOW if cfg.nesterov else m >= NAIVE_ABOVE
        want = f"≤ {NAIVE_BELOW}" if cfg.nesterov else f"≥ {NAIVE_ABOVE}"
        per[k] = (Verdict.HOLDS if ok else Verdict.FAILS, m, f"median λ₁/S(η, ρ, ‖g‖) = {m:.3f} (needs {want})")
    v, _, d = _combine(per, "no SAM run with momentum 0.8", _named(rs))
    values = [x for _, x, _ in per.values()]
    return v, (min(values) if values else math.nan), d


def _momentum_beats_naive(rs: VariantRuns) -> Result:
    per = {}
    for k in _momentum_sam_keys(rs):
        own, naive = edge_stats(rs.table(k)), edge_stats(rs.table(k), "sam_edge")
        if not (own["reached"] and naive["reached"]):
            per[k] = (Verdict.NOT_REACHED, math.nan, "an edge was not reached")
            continue
        a, b = abs(math.log(own["median"])), abs(math.log(naive["median"]))
        detail = f"|ln| of the median ratio {a:.3f} (momentum edge) against {b:.3f} (momentum-free)"
        per[k] = (Verdict.HOLDS if a < b else Verdict.FAILS, b - a, detail)
    return _combine(per, "no SAM run with momentum", _named(rs))


# ------------------------------------------------------------------------------------------------
# E5b: SAM switched on at GD's edge
# ------------------------------------------------------------------------------------------------
def _switch_escape(rs: VariantRuns, which: str) -> Result:
    per = {}
    for k in rs.keys("switch"):
        cfg = rs.runs[k].config
        e = escape(rs.table(k), cfg.sam_start)
        got = e[which]
        if not (math.isfinite(got) and math.isfinite(e["predicted"])):
            per[k] = (Verdict.NOT_MEASURED, math.nan, "the checks right after the switch are missing")
            continue
        rel = got / e["predicted"] - 1
        span = "the first step" if which == "first" else f"the first {e['n']} steps (mean)"
        detail = (
            f"α = {e['alpha']:.3g} at the switch: ln(1 + 2/α) = {e['predicted']:.3f}; measured over {span} "
            f"{got:+.3f} per step ({100 * rel:+.0f} %)"
        )
        per[k] = (Verdict.HOLDS if abs(rel) <= ESCAPE_TOL else Verdict.FAILS, rel, detail)
    return _combine(per, "no switch run", _named(rs))


def _switch_settles(rs: VariantRuns) -> Result:
    per = {}
    for k in rs.keys("switch"):
        df = rs.table(k)
        after = df[df["step"] >= rs.runs[k].config.sam_start]
        if after.empty:
            continue
        # where the run ends: the median over the last third of the checks after the switch (one check alone
        # catches one phase of the 2-cycle's oscillation; GD's edge of stability is summarised the same way)
        tail = after.iloc[-max(1, len(after) // 3) :]
        r = float((tail["lambda_1"] / tail["edge"]).median())
        detail = (
            f"median λ₁/SAM-edge = {r:.3f} over the last {len(tail)} checks (steps {int(tail['step'].iloc[0])}–"
            f"{int(tail['step'].iloc[-1])})"
        )
        per[k] = (Verdict.HOLDS if abs(r - 1) <= SETTLE_TOL else Verdict.FAILS, r, detail)
    return _combine(per, "no switch run", _named(rs))


# ------------------------------------------------------------------------------------------------
# E3: the phase diagram
# ------------------------------------------------------------------------------------------------
def largest_rho(rs: VariantRuns) -> float:
    """The grid's largest SAM radius: its large-radius probe."""
    rhos = [rs.runs[k].config.rho for k in sam_phase_keys(rs)]
    return max(rhos) if rhos else math.nan


def _collapse(rs: VariantRuns, large: bool) -> Result:
    top = largest_rho(rs)
    per = {}
    for k in sam_phase_keys(rs):
        if (rs.runs[k].config.rho == top) != large:
            continue
        st = phase_stats(rs.table(k))
        if not st["reached"] or st["n"] < 3:
            per[k] = (Verdict.NOT_REACHED, math.nan, "edge not reached")
            continue
        detail = f"median |ln(y/R)| = {st['dev']:.3f} (median y/R = {st['ratio']:.3f})"
        per[k] = (Verdict.HOLDS if st["dev"] <= COLLAPSE_TOL else Verdict.FAILS, math.exp(st["dev"]), detail)
    return _combine(per, "no SAM run", _named(rs))


def _ascent_marks(rs: VariantRuns) -> Result:
    rows = []
    for k in sam_phase_keys(rs):
        st, ex = phase_stats(rs.table(k)), rs.extras.get(k, {})
        ratio = ex.get("ascent_ratio", math.nan)
        if not (st["reached"] and math.isfinite(ratio)):
            continue
        rows.append((k, st["dev"] > COLLAPSE_TOL, abs(ratio - 1) > ASCENT_TOL, ratio))
    if not rows:
        return Verdict.NOT_MEASURED, math.nan, "no ascent-point measurement"
    agree = sum(dev == marked for _, dev, marked, _ in rows)
    wrong = [f"{variant_label(k, rs.runs[k])} ({'deviates' if d else 'collapses'}, λ₁(w+ε)/λ₁(w) = {r:.3f})"
             for k, d, m, r in rows if d != m]  # fmt: skip
    detail = f"{agree} of {len(rows)} runs classified right" + (": misclassified " + "; ".join(wrong) if wrong else "")
    return (Verdict.HOLDS if agree == len(rows) else Verdict.FAILS), agree / len(rows), detail


def _alpha_span(rs: VariantRuns) -> Result:
    pool = pooled_phase(rs)
    if pool.empty:
        return Verdict.NOT_MEASURED, math.nan, "no SAM check after a crossing"
    a = pool["alpha"].to_numpy()
    dec = float(np.log10(a.max() / a.min()))
    detail = f"α from {a.min():.3g} to {a.max():.3g}: {dec:.2f} decades over {len(a)} checks"
    return (Verdict.HOLDS if dec >= ALPHA_DECADES else Verdict.FAILS), dec, detail


def _alpha_order(rs: VariantRuns) -> Result:
    pool = pooled_phase(rs)
    if len(pool) < 3:
        return Verdict.NOT_MEASURED, math.nan, "fewer than 3 SAM checks after a crossing"
    rho_s = float(pool["y"].rank().corr(pool["alpha"].rank()))
    detail = f"Spearman ρ_s(ηλ₁/2, α) = {rho_s:.3f} over {len(pool)} checks"
    return (Verdict.HOLDS if rho_s >= SPEARMAN_MIN else Verdict.FAILS), rho_s, detail


def _regimes(rs: VariantRuns) -> Result:
    pool = pooled_phase(rs)
    if pool.empty:
        return Verdict.NOT_MEASURED, math.nan, "no SAM check after a crossing"
    low, high = regime_bounds(REGIME_TOL)
    a = pool["alpha"]
    counts = {"square-root": int((a <= low).sum()), "crossover": int(((a > low) & (a < high)).sum())}
    counts["GD-like"] = int((a >= high).sum())
    detail = ", ".join(f"{n}: {c} checks" for n, c in counts.items())
    covered = sum(c > 0 for c in counts.values())
    return (Verdict.HOLDS if covered == 3 else Verdict.FAILS), covered, detail


def _phase_gd(rs: VariantRuns) -> Result:
    per = {}
    for k, r in rs.runs.items():
        if not UpdateRule.of(r.config).is_gd or "/" not in k:
            continue
        df = rs.table(k)
        late, top = gd_last_third(df)
        if top < GD_BAND[0]:
            per[k] = (Verdict.NOT_REACHED, late, f"pre-EoS: largest ηλ₁/2 after initialisation {top:.3f}")
        else:
            per[k] = (_band(late, GD_BAND), late, f"median ηλ₁/2 = {late:.3f} over the last third")
    return _combine(per, "no GD run", _named(rs))


VARIANT_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "usam_on_edge",
        "Unnormalised SAM's sharpness sits on its edge E_U(η, r).",
        "median λ₁/E_U after the crossing, every USAM run (value: the largest offset, as a factor)",
        f"every run in {band_interval()}",
        "this book (linear stability of USAM; Andriushchenko & Flammarion 2022 study USAM)",
        _usam_on_edge,
        subject="USAM on its edge E_U",
    ),
    Claim(
        "usam_flat",
        "USAM's edge is a flat line: its sharpness does not follow ‖g‖.",
        "slope b of ln λ₁ on ln ‖g‖ after the crossing, every USAM run (value: the largest |b|)",
        f"|b| < {FLAT_SLOPE}",
        "this book (E_U does not depend on ‖g‖)",
        _usam_flat,
        subject="USAM's sharpness staying flat while ‖g‖ varies",
    ),
    Claim(
        "sam_on_edge_tight",
        "Normalised SAM's sharpness sits on its SAM-edge at every radius.",
        "median λ₁/SAM-edge after the crossing, every radius (value: the largest offset, as a factor)",
        f"every radius in {band_interval()}",
        "paper, Sections 4-6",
        _sam_on_edge,
        subject="SAM on its SAM-edge at every radius",
    ),
    Claim(
        "sam_slope",
        "Normalised SAM's sharpness follows ‖g‖ with the elasticity of its edge.",
        "slope b of ln λ₁ on ln ‖g‖ minus the mean elasticity ε(α_t) over the same checks, every radius "
        "(value: the largest |b − ε̄|)",
        f"|b − ε̄| < {FLAT_SLOPE}",
        "this book (ε(α) = ∂ ln S/∂ ln ‖g‖)",
        _sam_slope,
        subject="SAM's sharpness following ‖g‖ with the elasticity of its edge",
    ),
    Claim(
        "slopes_differ",
        "SAM's slope exceeds that of USAM started on the same edge.",
        "b(SAM) − b(USAM) per matched radius, where SAM's mean elasticity exceeds "
        f"{SLOPES_DIFFER} (value: the smallest difference)",
        f"> {SLOPES_DIFFER}",
        "this book",
        _slopes_differ,
        subject="SAM's slope exceeding that of the matched USAM run",
    ),
    Claim(
        "momentum_on_edge",
        "SAM with momentum sits on its momentum edge: S at η/(1+β) (heavy ball) or η(1+2β)/(1+β) (Nesterov).",
        "median λ₁/momentum edge after the crossing, every SAM run with momentum (value: the largest offset)",
        f"every run in {band_interval()}",
        "this book (characteristic polynomial of the momentum recursion)",
        _momentum_on_edge,
        subject="SAM with momentum on its momentum edge",
    ),
    Claim(
        "momentum_gd",
        "GD with heavy-ball momentum rises to 2(1+β)/η and hovers there.",
        "median λ₁/(2(1+β)/η) over the last third of the checks, every GD run with momentum",
        f"in {band_interval()}; pre-EoS (never at {EDGE_BAND[0]} of it) is not reached yet",
        "this book (β = 0: Cohen et al. 2021)",
        _momentum_gd,
        subject="GD with heavy-ball momentum at 2(1+β)/η",
    ),
    Claim(
        "naive_rejected",
        "The momentum-free SAM-edge misplaces SAM with momentum (β = 0.8): heavy ball sits well above it, "
        "Nesterov well below it.",
        "median λ₁/S(η, ρ, ‖g‖) after the crossing (value: the smallest)",
        f"heavy ball ≥ {NAIVE_ABOVE}, Nesterov ≤ {NAIVE_BELOW}",
        "this book",
        _naive_rejected,
        subject="The momentum-free edge misplacing SAM with momentum at β = 0.8",
    ),
    Claim(
        "momentum_beats_naive",
        "The momentum edge describes SAM with momentum better than the momentum-free edge does.",
        "|ln median λ₁/edge| for the momentum edge against the momentum-free one, every SAM run with momentum "
        "(value: the smallest difference)",
        "momentum edge closer for every run",
        "this book",
        _momentum_beats_naive,
        subject="The momentum edge fitting better than the momentum-free one",
    ),
    Claim(
        "switch_first_step",
        "Switched on at GD's edge, SAM multiplies the top component of the gradient by 1 + 2/α in one step.",
        "log-growth of |⟨v₁, g⟩| over the first SAM step / ln(1 + 2/α at the switch) − 1",
        f"within ±{100 * ESCAPE_TOL:g} %",
        "this book (the SAM multiplier at λ₁ = 2/η); Zhou et al. 2024 on SAM switched on late",
        lambda rs: _switch_escape(rs, "first"),
        subject="Growth by 1 + 2/α in the first SAM step",
    ),
    Claim(
        "switch_five_steps",
        f"SAM switched on at GD's edge escapes at the rate ln(1 + 2/α) for {ESCAPE_STEPS} steps.",
        f"mean log-growth of |⟨v₁, g⟩| per step over the first {ESCAPE_STEPS} SAM steps / ln(1 + 2/α) − 1",
        f"within ±{100 * ESCAPE_TOL:g} %",
        "this book",
        lambda rs: _switch_escape(rs, "mean"),
        subject=f"Growth at the rate ln(1 + 2/α) for {ESCAPE_STEPS} steps",
    ),
    Claim(
        "switch_settles",
        "After the escape, SAM switched on late settles on its SAM-edge.",
        "median λ₁/SAM-edge over the last third of the checks after the switch",
        f"within ±{100 * SETTLE_TOL:g} %",
        "this book",
        _switch_settles,
        subject="The switched run settling on its SAM-edge",
    ),
    Claim(
        "phase_collapse",
        "Every SAM run of the η × ρ grid below its largest radius collapses onto R(α).",
        "median |ln(ηλ₁/2 / R(α_t))| after the crossing, every such run (value: the largest, as a factor)",
        f"≤ {COLLAPSE_WORDS} for every run",
        "this book (R(α) of chapter 1)",
        lambda rs: _collapse(rs, large=False),
        subject="The collapse onto R(α) below the largest radius",
    ),
    Claim(
        "phase_collapse_largest",
        "The runs at the grid's largest radius collapse onto R(α) too.",
        "median |ln(ηλ₁/2 / R(α_t))| after the crossing, runs at the largest radius (value: the largest, as a factor)",
        f"≤ {COLLAPSE_WORDS} for every run",
        "this book (the large-radius probe: the quadratic picture may break there)",
        lambda rs: _collapse(rs, large=True),
        subject="The collapse onto R(α) at the largest radius",
    ),
    Claim(
        "ascent_marks_deviation",
        "A run deviates from R(α) exactly where the sharpness at the ascent point differs from the sharpness "
        f"at the iterate by more than {100 * ASCENT_TOL:g} %.",
        f"runs whose deviation (median |ln(y/R)| > {COLLAPSE_WORDS}) agrees with |λ₁(w+ε)/λ₁(w) − 1| > "
        f"{ASCENT_TOL} at the final weights (value: the share classified right)",
        "every run",
        "this book",
        _ascent_marks,
        subject="The ascent-point sharpness marking the deviating runs",
    ),
    Claim(
        "alpha_span",
        f"The grid's runs cover at least {ALPHA_DECADES:g} decades of α.",
        "log₁₀(max α / min α) over the SAM checks after the crossings",
        f"≥ {ALPHA_DECADES:g}",
        "this book",
        _alpha_span,
        subject=f"A span of at least {ALPHA_DECADES:g} decades of α",
    ),
    Claim(
        "alpha_order",
        "ηλ₁/2 rises with α across all runs, as R(α) does.",
        "Spearman rank correlation of ηλ₁/2 with α over the SAM checks after the crossings",
        f"≥ {SPEARMAN_MIN}",
        "this book",
        _alpha_order,
        subject="The rise of ηλ₁/2 with α",
    ),
    Claim(
        "regimes_covered",
        "The runs reach the square-root, the crossover and the GD-like regime of R(α).",
        "number of regimes among the SAM checks after the crossings "
        f"(square-root: α ≤ {regime_bounds(REGIME_TOL)[0]:.3g}; GD-like: α ≥ {regime_bounds(REGIME_TOL)[1]:.3g})",
        "3",
        f"this book (the {100 * REGIME_TOL:g} % bounds of chapter 8)",
        _regimes,
        subject="Coverage of all three regimes",
    ),
    Claim(
        "phase_gd",
        "GD sits at 2/η at every step size of the grid.",
        "median ηλ₁/2 over the last third of the checks, every GD run",
        f"in [{GD_BAND[0]}, {GD_BAND[1]}]; pre-EoS (never at {GD_BAND[0]}) is not reached yet",
        "Cohen et al. (2021)",
        _phase_gd,
        subject="GD at 2/η",
    ),
)

VARIANT_CLAIM_KEYS = tuple(c.key for c in VARIANT_CLAIMS)

#: Claims whose prediction allows "not reached yet" (pre-EoS) as an outcome.
MAY_BE_PRE_EOS = ("momentum_gd", "phase_gd")


def evaluate(runsets: Iterable[VariantRuns], keys: Sequence[str]) -> pd.DataFrame:
    """The claims ``keys`` of :data:`VARIANT_CLAIMS` on every run set (:func:`samedge_lib.reading.claims.evaluate`)."""
    chosen = [cl.claim(k, VARIANT_CLAIMS) for k in keys]
    return cl.evaluate(runsets, chosen)  # a VariantRuns stands in for a RunSet: the claims read only it


def claims_table(evaluations: pd.DataFrame, runsets: Iterable[VariantRuns], made: Iterable[str]) -> pd.DataFrame:
    """The chapter's claims table (statement, criterion, claimed/reported, verdict per run set)."""
    descriptions = {rs.name: rs.description for rs in runsets}
    return cl.claims_table(evaluations, descriptions, made, VARIANT_CLAIMS)


def check(evaluations: pd.DataFrame, made: Iterable[str], runset: str, preset: str) -> None:
    """Fail where a claim the chapter makes does not hold (not at ``smoke``: seconds-long runs reach no edge).

    A claim of :data:`MAY_BE_PRE_EOS` may also be "not reached yet": its prediction allows a GD run that has not
    sharpened to its edge.
    """
    if preset == "smoke":
        return
    cl.assert_claims(evaluations, made, runset, allow_not_reached=MAY_BE_PRE_EOS, claims=VARIANT_CLAIMS)
