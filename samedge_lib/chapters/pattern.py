"""The one pattern of the experiment and beyond-paper chapters: runs -> run set -> tables -> claims -> figures.

A chapter has

* a **design** (:class:`Design`): its parameters, validated into configurations before anything is computed, run
  (or loaded) through :func:`samedge_lib.chapters.experiments.run_all`: :class:`~samedge_lib.chapters.experiments.Sweep`
  (chapters 3-5), :class:`~samedge_lib.chapters.variants.Design` (7-8),
  :class:`~samedge_lib.chapters.stochastic.StochasticSweep` (9);
* a **chapter** object (:class:`Chapter`) over the design's runs, with one set of methods: :meth:`Chapter.show_setup`
  (the runs' table, what every run shares said once), :meth:`Chapter.claims` (evaluate the chapter's claims catalogue
  on its run sets and glue each verdict with its number), :meth:`Chapter.show_claims`, :meth:`Chapter.check` (fail
  where a claim the chapter makes does not hold), and its figure methods (``show_*``).

The subclasses (:class:`~samedge_lib.chapters.chapter.ExperimentChapter`,
:class:`~samedge_lib.chapters.variants_chapter.DesignChapter`,
:class:`~samedge_lib.chapters.stochastic.StochasticChapter`) say which runs, tables, claims and figures; the
machinery is here, once. This module reads and draws; it never trains (no torch, no engine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from IPython.display import HTML, Markdown, display

from samedge_lib.reading import claims as cl

#: The run set of a chapter's own runs (the one its claims are asserted on).
LIVE = "live"


class Design(Protocol):
    """A chapter's runs: parameters -> validated configurations -> runs (through ``experiments.run_all``)."""

    preset: str
    parameters: dict[str, Any]

    def run(self, *, root: str | Path | None = None) -> Any:
        """Run (or load) every configuration."""
        ...


def cell(value: object, digits: int = 4) -> str:
    """One table cell: numbers with ``digits`` significant digits, "—" for missing or non-finite values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.{digits}g}"
    return str(value) if str(value) not in ("", "nan", "None") else "—"


def table_html(df: pd.DataFrame, *, index: str | None = "run", transpose: bool = True) -> str:
    """``df`` as the book shows a table: the ``index`` column as row labels (one column per row of ``df`` when
    ``transpose``), every cell through :func:`cell`, no column of row numbers, no index names, and no cell cut
    short (pandas' notebook display truncates at 50 characters; the browser wraps instead).
    """
    out = df.set_index(index) if index is not None and index in df else df
    out = out.map(cell)
    if transpose:
        out = out.T
    out = out.rename_axis(index=None, columns=None)
    labelled = transpose or (index is not None and index in df)
    with pd.option_context("display.max_colwidth", None):
        return out.to_html(index=labelled, escape=True, border=0, classes="dataframe", justify="left")


def show_table(df: pd.DataFrame, *, index: str | None = "run", transpose: bool = True) -> None:
    """Display ``df`` with one column per run (``transpose``), numbers rounded and "—" for what does not apply
    (:func:`table_html`).
    """
    if df.empty:
        display(Markdown("*(no runs)*"))
        return
    display(HTML(table_html(df, index=index, transpose=transpose)))


def shared_columns(df: pd.DataFrame, *, index: str = "run") -> list[str]:
    """The columns (other than ``index``) with one and the same shown value in every row of two or more."""
    if len(df) < 2:
        return []
    return [c for c in df.columns if c != index and df[c].map(cell).nunique() == 1]


def show_setup_table(df: pd.DataFrame, *, index: str = "run") -> None:
    """The runs' table: what every run shares in one line, then one column per run with what differs."""
    shared = shared_columns(df, index=index)
    if shared:
        first = df.iloc[0]
        display(Markdown("**Every run:** " + "; ".join(f"{c} {cell(first[c])}" for c in shared) + "."))
    show_table(df.drop(columns=shared), index=index)


def glue_values(values: Mapping[str, Any]) -> None:
    """Glue every ``key: value`` (not displayed); strings meant as Markdown are passed as ``Markdown``."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, value, display=False)


def glue_claims(
    evaluations: pd.DataFrame,
    key: Callable[[str, str], str],
    *,
    subjects: Mapping[str, str] | None = None,
    wheres: Mapping[str, str] | None = None,
) -> None:
    """Glue each evaluated claim: ``key(claim, runset)`` (Markdown, ``**verdict**: numbers``), with ``_value`` (the
    measured number), ``_verdict`` (the verdict's words) and, where ``subjects`` names the claim and ``wheres`` the
    run set, ``_sentence`` (:meth:`~samedge_lib.reading.claims.Evaluation.sentence`: a whole sentence of prose with
    the verdict and its numbers inside).
    """
    subjects, wheres = subjects or {}, wheres or {}
    for _, r in evaluations.iterrows():
        e = cl.lookup(evaluations, r["claim"], r["runset"])
        k = key(r["claim"], r["runset"])
        glue_values({k: Markdown(e.markdown), f"{k}_value": float(e.value), f"{k}_verdict": e.verdict.value})
        if r["claim"] in subjects and r["runset"] in wheres:
            glue_values({f"{k}_sentence": Markdown(e.sentence(subjects[r["claim"]], wheres[r["runset"]]))})


class Chapter:
    """The shared machinery of a chapter over its runs (subclasses are dataclasses and provide the attributes).

    A subclass provides ``number`` (glue keys are ``ch<number>_...``), ``preset``, ``made`` (the keys of the claims
    the chapter makes: asserted by :meth:`check`; the others are reported with their verdicts), ``catalogue`` (its
    claims), ``runsets`` (the run sets the claims are evaluated on, :data:`LIVE` among them) and
    :meth:`setup_table`; it may narrow :meth:`evaluated`, :meth:`glue_key` and :meth:`allow_not_reached`.
    """

    # annotations only (no class attributes): a dataclass subclass may make any of them a field
    number: int
    preset: str
    made: Sequence[str]
    runsets: Sequence[cl.RunSet]
    evaluations: pd.DataFrame | None
    catalogue: Sequence[cl.Claim] = ()

    # -- what a subclass says ---------------------------------------------------------------------------------
    def setup_table(self) -> pd.DataFrame:
        """One row per run: the settings that define it."""
        raise NotImplementedError

    def evaluated(self) -> Sequence[cl.Claim]:
        """The claims evaluated on the run sets (default: the whole catalogue)."""
        return self.catalogue

    def glue_key(self, claim: str, runset: str) -> str:
        """The glue key of ``claim``'s verdict on ``runset``."""
        return f"ch{self.number}_{claim}_{runset}"

    def allow_not_reached(self) -> bool | Iterable[str]:
        """Whether (or for which claims) "not reached yet" passes :meth:`check` (default: at ``paper`` only)."""
        return self.preset == "paper"

    # -- the machinery ----------------------------------------------------------------------------------------
    def show_setup(self) -> None:
        """The configurations actually run: what every run shares once, then one column per run."""
        show_setup_table(self.setup_table())

    def claims(self) -> pd.DataFrame:
        """Evaluate the chapter's claims on every run set and glue each verdict (:meth:`glue`)."""
        self.evaluations = cl.evaluate(self.runsets, self.evaluated())
        self.glue()
        return self.evaluations

    def glue(self) -> None:
        """Glue each verdict with its number under :meth:`glue_key` (``_value``, ``_verdict``, ``_sentence``)."""
        glue_claims(
            self.evaluations,
            self.glue_key,
            subjects={c.key: c.noun for c in self.catalogue},
            wheres={rs.name: rs.where for rs in self.runsets},
        )

    def claims_table(self) -> pd.DataFrame:
        """Statement, criterion, claimed/reported, verdict and number per run set."""
        descriptions = {rs.name: rs.description for rs in self.runsets}
        return cl.claims_table(self.evaluations, descriptions, self.made, self.catalogue)

    def show_claims(self) -> None:
        """The chapter's claims, each with its criterion, verdicts and numbers in full
        (:func:`~samedge_lib.reading.claims.claims_markdown`).
        """
        descriptions = {rs.name: rs.description for rs in self.runsets}
        display(Markdown(cl.claims_markdown(self.evaluations, descriptions, self.made, self.catalogue)))

    def check(self) -> None:
        """Fail where a claim the chapter makes does not hold on its own runs.

        At ``smoke`` (seconds-long runs for the tests, which reach no edge) the claims are evaluated and shown, not
        asserted; elsewhere "not reached yet" passes only where :meth:`allow_not_reached` says.
        """
        if self.preset == "smoke":
            return
        cl.assert_claims(
            self.evaluations,
            self.made,
            LIVE,
            allow_not_reached=self.allow_not_reached(),
            claims=self.catalogue,
        )
