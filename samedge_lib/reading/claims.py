"""Claims as data: the machinery that turns a chapter's statements into verdicts computed on the runs it shows.

A :class:`Claim` names a statement (from the paper, or one the book adds), the quantity it rests on and the
criterion that quantity must meet. :func:`evaluate` applies every claim to a :class:`RunSet` -- the runs a
chapter shows in one setting, for example the live ``cpu`` runs or the stored paper-scale runs -- and returns
one :class:`Evaluation` per claim: the measured value, a verdict and a sentence with the numbers.

The verdicts (:class:`Verdict`):

* ``holds`` -- the quantity meets the criterion;
* ``does not hold`` -- it was measured where the claim applies and misses the criterion;
* ``not reached yet`` -- the run stopped before the regime the claim is about (for example SAM never came
  within :data:`~samedge_lib.record.results.REACH` of its edge): the claim can be neither confirmed nor refuted;
* ``not measured`` -- the runs needed are absent (no GD run stored, ``k = 1`` so no ``lambda_2``, ...).

Chapters state each claim with its verdict and number (never a typed "holds" or "above"), and
:func:`assert_claims` makes a chapter fail where a claim it makes does not hold. Each chapter family keeps its
catalogue of claims beside its runs (:mod:`samedge_lib.chapters.paper_claims` for the paper's experiments,
:mod:`~samedge_lib.chapters.variants_claims`, :mod:`~samedge_lib.chapters.stochastic_claims`); every function here
takes the catalogue it works on.

The tolerances are the book's, not the paper's (the paper states its findings in words and figures):
:data:`ON_EDGE_BAND` for "sits on its edge", :data:`GD_EOS_BAND` for GD at ``2/eta``. Reading results only:
this module never imports the training engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from samedge_lib.record.results import RunResult, measurements_on, tracking_ratio

#: "Sits on its edge": the median of ``lambda_1 / edge`` after the transient lies in this band. At the edge the
#: sharpness oscillates around the edge (chapter 2's 2-cycle) and the edge itself moves with ``||g||``;
#: a band of -20 %/+25 % (symmetric in log scale) separates that from a run that sharpens past the edge or
#: stays well below it. The sign and size of each run's offset inside the band are reported with it.
ON_EDGE_BAND = (0.8, 1.25)

#: GD "at the edge of stability": the median of ``eta * lambda_1 / 2`` over the last third in this band.
GD_EOS_BAND = (0.85, 1.15)


class Verdict(StrEnum):
    """The outcome of a claim on a set of runs."""

    HOLDS = "holds"
    FAILS = "does not hold"
    NOT_REACHED = "not reached yet"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class RunSet:
    """The runs a chapter shows in one setting: ``{rho: run}`` (``rho = 0`` is GD or SGD).

    Attributes:
        name: short name of the setting, used in glue keys and column headers (``"cpu"``, ``"paper"``).
        description: what the setting is, for tables (``"cpu preset, live"``).
        runs: the runs by radius.
        main_rho: the radius the chapter's main statements are about (the paper's 0.1).
        data: which measurements to use (``"full"``, ``"minibatch"``, ``"fixed"``); ``None`` = each run's first.

    """

    name: str
    description: str
    runs: Mapping[float, RunResult]
    main_rho: float
    data: str | None = None

    def table(self, rho: float) -> pd.DataFrame:
        """The measurement table of the run at ``rho`` (empty if there is no such run)."""
        run = self.runs.get(rho)
        return measurements_on(run, self.data) if run is not None else pd.DataFrame()

    @property
    def sam_rhos(self) -> list[float]:
        """The SAM radii present, ascending."""
        return sorted(r for r in self.runs if r > 0)


@dataclass(frozen=True)
class Evaluation:
    """One claim on one :class:`RunSet`: the measured value, the verdict and a sentence with the numbers."""

    claim: str
    runset: str
    verdict: Verdict
    value: float
    detail: str

    @property
    def markdown(self) -> str:
        """``**verdict**: detail`` -- how a chapter's prose states it."""
        return f"**{self.verdict.value}**: {self.detail}"


@dataclass(frozen=True)
class Claim:
    """A statement, the quantity it rests on, the criterion, where it comes from, and how to evaluate it."""

    key: str
    statement: str
    quantity: str
    criterion: str
    source: str
    evaluate: Callable[[RunSet], tuple[Verdict, float, str]]


# ------------------------------------------------------------------------------------------------
# Words computed from numbers (so no direction is ever typed into prose)
# ------------------------------------------------------------------------------------------------
def fmt(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, or an em dash when it is not a finite number."""
    return f"{x:.{digits}g}" if x is not None and math.isfinite(x) else "—"


def offset_words(ratio: float, what: str = "the edge") -> str:
    """``1.045 -> "4.5 % above the edge"``; ``0.97 -> "3.0 % below the edge"``."""
    if not math.isfinite(ratio):
        return "—"
    pct = 100 * (ratio - 1)
    if abs(pct) < 0.05:
        return f"on {what}"
    return f"{abs(pct):.1f} % {'above' if pct > 0 else 'below'} {what}"


def reads_words(rel: float) -> str:
    """A relative difference as ``"reads 1.4 % low"`` / ``"reads 0.035 % high"`` (two significant digits)."""
    if not math.isfinite(rel):
        return "—"
    return f"reads {abs(100 * rel):.2g} % {'high' if rel > 0 else 'low'}"


def compare_words(a: float, b: float, *, more: str = "higher", less: str = "lower") -> str:
    """``"higher"``/``"lower"``/``"equal"`` for ``a`` against ``b``."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return "—"
    return more if a > b else less if a < b else "equal"


def on_edge(df: pd.DataFrame, column: str = "lambda_1", label: str = "λ₁/edge") -> tuple[Verdict, float, str]:
    """Whether one run "sits on its edge", from its table: the median of ``column / edge`` after the transient in
    :data:`ON_EDGE_BAND` (:func:`~samedge_lib.record.results.tracking_ratio`); not reached yet where the run never
    came within reach of its edge or has too few checks after it. The one rule of every chapter's on-edge claims.
    """
    if df.empty or df[column].notna().sum() == 0:
        return Verdict.NOT_MEASURED, math.nan, "no measurements"
    tr = tracking_ratio(df, column)
    if not tr["reached"]:
        return (
            Verdict.NOT_REACHED,
            math.nan,
            f"did not reach its edge by step {int(tr['last_step'])} "
            f"({label} = {tr['final_ratio']:.3f} at the last check)",
        )
    if not math.isfinite(tr["median"]):
        return (
            Verdict.NOT_REACHED,
            math.nan,
            f"reached its edge at step {int(tr['reached_step'])}; only {tr['n']} checks after it",
        )
    lo, hi = ON_EDGE_BAND
    detail = (
        f"median {label} = {tr['median']:.3f} (p10–p90 {tr['p10']:.3f}–{tr['p90']:.3f}) from step "
        f"{int(tr['from_step'])} to {int(tr['last_step'])}, {offset_words(tr['median'])}"
    )
    return (Verdict.HOLDS if lo <= tr["median"] <= hi else Verdict.FAILS), tr["median"], detail


def claim(key: str, claims: Sequence[Claim]) -> Claim:
    """The claim named ``key`` among ``claims``."""
    for c in claims:
        if c.key == key:
            return c
    raise KeyError(f"unknown claim {key!r}; known: {', '.join(c.key for c in claims)}")


def evaluate(runsets: Iterable[RunSet], claims: Sequence[Claim]) -> pd.DataFrame:
    """Every claim of ``claims`` on every run set: one row per (claim, run set) with verdict, value and detail."""
    rows = []
    for rs in runsets:
        for c in claims:
            verdict, value, detail = c.evaluate(rs)
            rows.append(Evaluation(c.key, rs.name, verdict, float(value), detail))
    return pd.DataFrame(
        [
            {"claim": e.claim, "runset": e.runset, "verdict": e.verdict, "value": e.value, "detail": e.detail}
            for e in rows
        ]
    )


def lookup(evaluations: pd.DataFrame, key: str, runset: str) -> Evaluation:
    """The evaluation of claim ``key`` on run set ``runset``."""
    row = evaluations[(evaluations["claim"] == key) & (evaluations["runset"] == runset)]
    if row.empty:
        raise KeyError(f"claim {key!r} was not evaluated on run set {runset!r}")
    r = row.iloc[0]
    return Evaluation(r["claim"], r["runset"], Verdict(r["verdict"]), float(r["value"]), r["detail"])


def claims_table(
    evaluations: pd.DataFrame,
    descriptions: Mapping[str, str],
    made: Iterable[str],
    claims: Sequence[Claim],
) -> pd.DataFrame:
    """The chapter's claims, one row each: statement, criterion, and per run set the verdict with its number.

    ``made`` are the claims the chapter makes (asserted where it runs); the others are reported. ``claims`` is
    the catalogue the evaluations come from.
    """
    made = set(made)
    rows = []
    for c in claims:
        sub = evaluations[evaluations["claim"] == c.key]
        if sub.empty:
            continue
        row = {
            "claim": c.statement,
            "criterion": f"{c.quantity}: {c.criterion}",
            "status": "claimed" if c.key in made else "reported",
        }
        for name, desc in descriptions.items():
            e = sub[sub["runset"] == name]
            row[desc] = f"{Verdict(e['verdict'].iloc[0]).value}: {e['detail'].iloc[0]}" if len(e) else "—"
        rows.append(row)
    return pd.DataFrame(rows)


class ClaimError(AssertionError):
    """A claim the chapter makes does not hold on the runs it shows."""


def assert_claims(
    evaluations: pd.DataFrame,
    made: Iterable[str],
    runset: str,
    *,
    allow_not_reached: bool | Iterable[str],
    claims: Sequence[Claim],
) -> None:
    """Raise :class:`ClaimError` listing every claim in ``made`` whose verdict on ``runset`` is not acceptable.

    ``does not hold`` and ``not measured`` always fail. ``not reached yet`` fails unless ``allow_not_reached``
    (a paper-scale run stopped early can neither confirm nor refute a claim; the ``cpu`` preset is chosen so
    that every regime is reached, so there it fails); given as keys, it is allowed for those claims only.
    ``claims`` is the catalogue ``made`` refers to.
    """
    bad = []
    for key in made:
        e = lookup(evaluations, key, runset)
        may_wait = allow_not_reached if isinstance(allow_not_reached, bool) else key in set(allow_not_reached)
        ok = e.verdict is Verdict.HOLDS or (may_wait and e.verdict is Verdict.NOT_REACHED)
        if not ok:
            bad.append(f"{claim(key, claims).statement} -- {e.verdict.value}: {e.detail}")
    if bad:
        raise ClaimError(f"{len(bad)} claim(s) of this chapter fail on the {runset} runs: " + " | ".join(bad))
