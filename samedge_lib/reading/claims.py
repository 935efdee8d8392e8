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
:data:`EDGE_BAND` for "sits on its edge", one band for every edge. Reading results only:
this module never imports the training engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from samedge_lib.record.results import REACH, RunResult, measurements_on, tracking_ratio

#: "On its edge": the one tolerance of the book, for every edge it tests (GD's ``2/eta``, the SAM-edge, the edges
#: of SAM's variants and of minibatch SAM, Adam's). A run sits on its edge when its statistic of
#: ``lambda_1 / edge`` (the median after the transient; for GD the median over the last third) lies in this band.
#:
#: Why 15 %: at the edge the sharpness does not sit still -- it oscillates about the edge (chapter 2's 2-cycle),
#: and the edge itself moves with ``||g||``. The yardstick is GD, which sits at ``2/eta`` by the definition of the
#: edge of stability (Cohen et al. 2021, https://arxiv.org/abs/2103.00065): the band must hold GD's own spread
#: about ``2/eta``, or it would call GD off its edge. Each experiment chapter measures that spread (the claim
#: ``gd_within_band`` of :mod:`samedge_lib.chapters.paper_claims`: the 10th-90th percentiles of ``eta lambda_1 / 2``
#: over GD's last third) and the spread over seeds, and asserts that GD's fits. 15 % is the smallest band in steps
#: of 5 % that holds GD's spread in all three experiment chapters on the measurements their claims use (chapter 5:
#: the minibatch, as the paper measures); on chapter 5's fixed evaluation batch SGD's spread is wider, which that
#: chapter reports. A run outside the band is reported as a finding, with its number. The sign and size of each
#: run's offset inside the band are reported with it.
EDGE_BAND = (0.85, 1.15)


def in_band(ratio: float) -> bool:
    """Whether ``ratio`` (a statistic of ``lambda_1 / edge``) lies in :data:`EDGE_BAND`."""
    return EDGE_BAND[0] <= ratio <= EDGE_BAND[1]


def band_interval() -> str:
    """The band as an interval, as criteria, glue and legends write it: ``"[0.85, 1.15]"``."""
    lo, hi = EDGE_BAND
    return f"[{lo:g}, {hi:g}]"


def band_words() -> str:
    """The band as the prose states it: ``"within 15 % of its edge (λ₁/edge in [0.85, 1.15])"``."""
    return f"within {100 * (EDGE_BAND[1] - 1):.0f} % of its edge (λ₁/edge in {band_interval()})"


class Verdict(StrEnum):
    """The outcome of a claim on a set of runs."""

    HOLDS = "holds"
    FAILS = "does not hold"
    NOT_REACHED = "not reached yet"
    NOT_MEASURED = "not measured"


#: Each verdict as the predicate of a sentence whose subject is the claim (:meth:`Evaluation.sentence`).
VERDICT_PHRASES = {
    Verdict.HOLDS: "holds",
    Verdict.FAILS: "does not hold",
    Verdict.NOT_REACHED: "is not reached yet",
    Verdict.NOT_MEASURED: "is not measured",
}


@dataclass(frozen=True)
class RunSet:
    """The runs a chapter shows in one setting: ``{rho: run}`` (``rho = 0`` is GD or SGD).

    Attributes:
        name: short name of the setting, used in glue keys and column headers (``"cpu"``, ``"paper"``).
        description: what the setting is, for tables (``"cpu preset, live"``).
        runs: the runs by radius.
        main_rho: the radius the chapter's main statements are about (the paper's 0.1).
        data: which measurements to use (``"full"``, ``"minibatch"``, ``"fixed"``); ``None`` = each run's first.
        scope: where the verdict was found, as prose says it (``"on this page's runs"``); default from
            ``description``.

    """

    name: str
    description: str
    runs: Mapping[float, RunResult]
    main_rho: float
    data: str | None = None
    scope: str = ""

    @property
    def where(self) -> str:
        """:attr:`scope`, or ``"on the <description> runs"``."""
        return self.scope or f"on the {self.description} runs"

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
        """``**verdict**: detail`` -- the verdict with its numbers, for a table cell or after a colon."""
        return f"**{self.verdict.value}**: {self.detail}"

    def sentence(self, subject: str, where: str) -> str:
        """A sentence with the verdict and its numbers inside: ``"SAM on its SAM-edge **holds** on this page's
        runs: median λ₁/edge = 1.05 ..."``. ``subject`` names what is claimed (:attr:`Claim.subject`), ``where``
        the runs (:attr:`RunSet.where`).
        """
        return f"{subject} **{VERDICT_PHRASES[self.verdict]}** {where}: {self.detail}."


@dataclass(frozen=True)
class Claim:
    """A statement, the quantity it rests on, the criterion, where it comes from, and how to evaluate it."""

    key: str
    statement: str
    quantity: str
    criterion: str
    source: str
    evaluate: Callable[[RunSet], tuple[Verdict, float, str]]
    #: What is claimed, as the subject of a sentence ("SAM on its SAM-edge"); default: the statement.
    subject: str = ""

    @property
    def noun(self) -> str:
        """:attr:`subject`, or the statement without its full stop."""
        return self.subject or self.statement.rstrip(".")


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


def compare_words(a: float, b: float, *, more: str = "higher", less: str = "lower", same: str = "equal") -> str:
    """``"higher"``/``"lower"``/``"equal"`` for ``a`` against ``b``."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return "—"
    return more if a > b else less if a < b else same


def approach_words(df: pd.DataFrame, column: str = "lambda_1", label: str = "λ₁/edge") -> str:
    """How a run came to its edge, in computed words: whether ``column / edge`` rose to
    :data:`~samedge_lib.record.results.REACH` or started there, and whether the sharpness and the edge then rose
    or fell (a sharpness that falls onto a falling edge is not one that "rises to" it).
    """
    df = df.dropna(subset=[column])
    first, last = df.iloc[0], df.iloc[-1]
    start = float(first[column] / first["edge"])
    tr = tracking_ratio(df, column)
    name = label.split("/")[0]
    if tr["reached"] and tr["reached_step"] > first["step"]:
        came = (
            f"{label} rose from {start:.2f} at step {int(first['step'])} to {REACH:g} by step {int(tr['reached_step'])}"
        )
    else:
        came = f"{label} was already {start:.2f} at step {int(first['step'])}"
    moved = {"more": "rose", "less": "fell", "same": "stayed"}
    lam = compare_words(last[column], first[column], **moved)
    edge = compare_words(last["edge"], first["edge"], **moved)
    return (
        f"{came}; over the run {name} {lam} from {fmt(first[column])} to {fmt(last[column])} as the edge {edge} "
        f"from {fmt(first['edge'])} to {fmt(last['edge'])}"
    )


def on_edge(df: pd.DataFrame, column: str = "lambda_1", label: str = "λ₁/edge") -> tuple[Verdict, float, str]:
    """Whether one run "sits on its edge", from its table: the median of ``column / edge`` after the transient in
    :data:`EDGE_BAND` (:func:`~samedge_lib.record.results.tracking_ratio`); not reached yet where the run never
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
    detail = (
        f"{approach_words(df, column, label)}; median {label} = {tr['median']:.3f} "
        f"(p10–p90 {tr['p10']:.3f}–{tr['p90']:.3f}) from step {int(tr['from_step'])} to {int(tr['last_step'])}, "
        f"{offset_words(tr['median'])}"
    )
    return (Verdict.HOLDS if in_band(tr["median"]) else Verdict.FAILS), tr["median"], detail


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


def _verdicts_by_claim(
    evaluations: pd.DataFrame, descriptions: Mapping[str, str], made: Iterable[str], claims: Sequence[Claim]
) -> Iterator[tuple[Claim, str, dict[str, Evaluation]]]:
    """Each evaluated claim of ``claims`` with its status (``claimed`` if in ``made``, else ``reported``) and its
    evaluation on every run set of ``descriptions`` that has one, keyed by the run set's description.
    """
    made = set(made)
    for c in claims:
        sub = evaluations[evaluations["claim"] == c.key]
        if sub.empty:
            continue
        found = {desc: lookup(sub, c.key, name) for name, desc in descriptions.items() if (sub["runset"] == name).any()}
        yield c, "claimed" if c.key in made else "reported", found


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
    rows = []
    for c, status, found in _verdicts_by_claim(evaluations, descriptions, made, claims):
        row = {"claim": c.statement, "criterion": f"{c.quantity}: {c.criterion}", "status": status}
        for desc in descriptions.values():
            row[desc] = f"{found[desc].verdict.value}: {found[desc].detail}" if desc in found else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def claims_markdown(
    evaluations: pd.DataFrame,
    descriptions: Mapping[str, str],
    made: Iterable[str],
    claims: Sequence[Claim],
) -> str:
    """The chapter's claims as a numbered list: each statement with its status (claimed or reported), its source,
    its criterion in full, and one line per run set with the verdict and every number it rests on. A list reads
    at the book's column width where a five-column table of sentences would need a scroll bar.
    """
    items = []
    for c, status, found in _verdicts_by_claim(evaluations, descriptions, made, claims):
        lines = [f"1. **{c.statement}** *{status}* ({c.source}).  \n   Criterion: {c.quantity}: {c.criterion}."]
        lines += [f"   - {desc}: {e.markdown}" for desc, e in found.items()]
        items.append("\n".join(lines))
    return "\n".join(items)


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
