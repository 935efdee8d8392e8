"""What the three experiment chapters share on the reading side: tables, claims, glue and the stored runs.

A chapter (03 MNIST, 04 CIFAR-10, 05 tiny_shakespeare) runs its sweep with :mod:`samedge_lib.chapters.experiments`, then
hands the results to an :class:`ExperimentChapter`, which

* shows the parameters the chapter actually ran with (:func:`show_parameters`) and the tables of the runs
  (:func:`setup_table`, :func:`results_table`, :func:`coverage_table`), with "—" where a number does not apply;
* evaluates every claim of :mod:`samedge_lib.reading.claims` on the live runs and on the stored paper-scale runs,
  glues each verdict with its number into the prose (``{glue:md}`chN_<claim>_<runs>:myst```), and fails the
  chapter where a claim it makes does not hold (:meth:`ExperimentChapter.check`).

Each chapter keeps its story, its figures and what is particular to its task. This module reads run folders
and draws; it never trains (it does not import :mod:`samedge_lib.engine.train`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from samedge_lib.chapters import paper_claims as pc
from samedge_lib.chapters.pattern import LIVE, Chapter, glue_values, show_table
from samedge_lib.chapters.pattern import cell as _cell
from samedge_lib.reading import claims as cl
from samedge_lib.reading import plots
from samedge_lib.reading.notebook import PARAMETERS_METADATA_KEY, show_parameters
from samedge_lib.reading.style import BOOK_WIDTH_IN, PANEL_HEIGHT_IN
from samedge_lib.record.config import preset_config
from samedge_lib.record.results import (
    REACH,
    RunResult,
    gd_edge_ratio,
    label,
    measurements_on,
    stopped_early_note,
    stored_runs,
    tracking_ratio,
)
from samedge_lib.theory.rules import UpdateRule

LOSS_DESCRIPTION = {
    "mse_mean": "squared error, mean over N x 10 (official)",
    "mse_half_sum": "squared error, 1/2 sum over classes",
    "cross_entropy": "cross-entropy per token",
}

__all__ = [
    "PARAMETERS_METADATA_KEY",
    "ExperimentChapter",
    "label",
    "results_table",
    "setup_table",
    "show_parameters",
    "show_table",
]

#: The headline claims of the verdict box atop each experiment chapter (:meth:`ExperimentChapter.glue_verdict`).
VERDICT_CLAIMS = ("sam_on_edge", "gd_at_edge")

#: The run set of the stored paper-scale runs (the live runs are :data:`~samedge_lib.chapters.pattern.LIVE`).
STORED = "stored"


def setup_table(results: Mapping[float, RunResult]) -> pd.DataFrame:
    """One row per run: the settings that define it, read from the configs and provenance actually used."""
    rows = []
    for res in results.values():
        cfg, prov = res.config, res.provenance
        meas = measurements_on(res)
        rows.append(
            {
                "run": label(cfg),
                "model": ", ".join(f"{k}={v}" for k, v in cfg.model.items()) or "paper size",
                "train data": meas["data_label"].iloc[0] if len(meas) else None,
                "loss": LOSS_DESCRIPTION[cfg.loss],
                "eta": cfg.eta,
                "2/eta": 2 / cfg.eta,
                "rho": cfg.rho,
                "batch": "full" if cfg.batch_size is None else cfg.batch_size,
                "steps": cfg.steps,
                "check every (steps)": cfg.measure_every,
                "top-k": cfg.k,
                "HVP": cfg.hvp,
                "dtype": cfg.dtype,
                "TF32": cfg.tf32,
                "device": prov.get("device_name"),
                "seed": cfg.seed,
                "wall time (s)": prov.get("timings", {}).get("wall_seconds"),
            }
        )
    return pd.DataFrame(rows)


def results_table(results: Mapping[float, RunResult], data: str | None = None) -> pd.DataFrame:
    """The quantitative section: one row per run. Tracking statistics only for runs that reached their edge."""
    rows = []
    for res in results.values():
        cfg = res.config
        df = measurements_on(res, data)
        if df.empty:
            continue
        last = df.iloc[-1]
        sam = not UpdateRule.of(cfg).is_gd
        tr = tracking_ratio(df) if sam else None
        off = tracking_ratio(df, "official_lambda") if sam and df["official_lambda"].notna().any() else None
        bias = pc.official_bias(df)
        row = {
            "run": label(cfg),
            "state": res.status.get("state"),
            "measured on": df["data"].iloc[0],
            "last check (step)": int(last["step"]),
            f"first check with λ₁ ≥ {REACH:g} edge (step)": tr["reached_step"] if tr else None,
            "λ₁/edge median after it": tr["median"] if tr else None,
            "p10": tr["p10"] if tr else None,
            "p90": tr["p90"] if tr else None,
            "λ₁/edge at the last check": float(last["lambda_1"] / last["edge"]),
            "official/edge median after it": off["median"] if off else None,
            "official/exact − 1 (median)": bias["median"],
            "ηλ₁/2 (median, last third)": gd_edge_ratio(df)["median_last_third"],
            "edge/(2/η) at the last check": float(last["edge"] / last["gd_edge"]),
            "λ₁ at the last check": float(last["lambda_1"]),
            "λ₂/λ₁ at the last check": float(last["lambda_2"] / last["lambda_1"]) if "lambda_2" in df else None,
            "mean |cos(g, v₁)|": float(df["align_g"].mean()),
            "mean |cos(g_SAM, v₁)|": float(df["align_sam_g"].mean()) if sam else None,
            "training loss at the last check": float(last["loss"]),
            "Lanczos converged (share of checks)": float(df["lanczos_converged"].mean()),
        }
        for key in ("test_accuracy", "test_loss"):
            if key in df:
                row[f"{key.replace('_', ' ')} at the last check"] = float(last[key])
        rows.append(row)
    return pd.DataFrame(rows)


def coverage_table(results: Mapping[float, RunResult]) -> pd.DataFrame:
    """For stored runs: how far each got, on which device and numeric mode, and how fast."""
    rows = []
    for res in results.values():
        timings = res.provenance.get("timings", {})
        rows.append(
            {
                "run": label(res.config),
                "state": res.status.get("state"),
                "steps done": res.status.get("steps_done"),
                "steps planned": res.config.steps,
                "device": res.provenance.get("device_name"),
                "dtype": res.config.dtype,
                "TF32": res.config.tf32,
                "ms per step (without checks)": 1000 * timings.get("seconds_per_step_excluding_measurements", math.nan),
                "share of time in checks": timings.get("measure_share"),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class ExperimentChapter(Chapter):
    """One experiment chapter's shared machinery, around its live runs.

    Construct it with the sweep's results; :meth:`claims` then evaluates every claim on the live runs, on each
    extra view of them (``views``, e.g. the same runs measured on a fixed batch) and on the stored paper-scale
    runs, and glues the verdicts. The ``show_*`` methods draw the figures and tables every experiment chapter
    has, so a chapter's cells are its story and one call each.

    Attributes:
        number: the chapter number (glue keys are ``ch<number>_...``).
        task: the task whose stored paper-scale runs the chapter shows.
        made: the claims (keys of :data:`samedge_lib.reading.claims.CLAIMS`) the chapter makes; the others are
            evaluated and reported with their verdicts, not asserted.
        results: the live runs, ``{rho: run}`` (``rho = 0`` is GD or SGD).
        main_rho: the radius the chapter's main statements are about.
        preset: the preset the live runs were made at.
        data: which measurements the chapter's statements use (``None``: each run's first kind, the full batch
            for image tasks; ``"minibatch"``).
        views: extra run sets over the same runs, ``{data kind: description}`` (their glue keys use the kind).

    """

    number: int
    task: str
    made: tuple[str, ...]
    results: Mapping[float, RunResult]
    main_rho: float
    preset: str
    data: str | None = None
    views: Mapping[str, str] = field(default_factory=dict)
    evaluations: pd.DataFrame = field(init=False, repr=False)

    catalogue = pc.CLAIMS

    def __post_init__(self) -> None:
        for key in self.made:
            cl.claim(key, pc.CLAIMS)  # raises on an unknown key

    # -- claims -------------------------------------------------------------------------------------------
    def stored(self) -> dict[float, RunResult]:
        """The task's stored paper-scale runs, ``{rho: run}`` (empty if none)."""
        return {r.config.rho: r for r in stored_runs(warn=False) if r.config.task == self.task}  # noted in show_stored

    @property
    def runsets(self) -> list[cl.RunSet]:
        """The run sets the claims are evaluated on: live, each view of the live runs, stored."""
        return [
            cl.RunSet(
                LIVE, f"{self.preset} preset (this page)", self.results, self.main_rho, self.data, "on this page's runs"
            ),
            *(
                cl.RunSet(kind, desc, self.results, self.main_rho, kind, f"on this page's runs, measured on the {desc}")
                for kind, desc in self.views.items()
            ),
            cl.RunSet(
                STORED,
                "paper scale (stored)",
                self.stored(),
                self.main_rho,
                self.data,
                "on the stored paper-scale runs",
            ),
        ]

    def glue(self) -> None:
        """Glue every verdict (:meth:`Chapter.glue`), then the verdict box (:meth:`glue_verdict`)."""
        super().glue()
        self.glue_verdict()
        glue_values(
            {
                f"ch{self.number}_reach": Markdown(f"{100 * REACH:g} %"),
                f"ch{self.number}_band": Markdown(cl.band_words()),
            }
        )

    def glue_verdict(self, keys: tuple[str, ...] = VERDICT_CLAIMS) -> None:
        """The chapter's verdict box, glued as ``ch<n>_verdict_live`` and ``ch<n>_verdict_stored``: each the
        sentences of the headline claims ``keys`` on those runs, with how far the stored runs got against the
        paper's training length and how many of the chapter's claims hold.
        """
        from myst_nb import glue

        wheres = {rs.name: rs.where for rs in self.runsets}
        for runset in (LIVE, STORED):
            parts = []
            if runset == STORED:
                parts.append(self.stored_coverage())
            for key in keys:
                e = cl.lookup(self.evaluations, key, runset)
                parts.append(e.sentence(cl.claim(key, self.catalogue).noun, wheres[runset]))
            ev = self.evaluations[self.evaluations["runset"] == runset]
            counted = ev[ev["verdict"] != cl.Verdict.NOT_MEASURED]
            held = int((counted["verdict"] == cl.Verdict.HOLDS).sum())
            parts.append(f"Of the {len(counted)} claims measured there, {held} hold (the table at the end lists all).")
            glue(f"ch{self.number}_verdict_{runset}", Markdown(" ".join(parts)), display=False)
        glue(f"ch{self.number}_verdict_agreement", Markdown(self.agreement(keys[0])), display=False)

    def agreement(self, key: str) -> str:
        """Whether the stored paper-scale runs and the live runs give claim ``key`` the same verdict, in words:
        where both were measured and they differ, the difference is a finding (reported, not averaged away).
        """
        live, stored = (cl.lookup(self.evaluations, key, rs) for rs in (LIVE, STORED))
        said = f"“{cl.claim(key, self.catalogue).statement}”"
        if cl.Verdict.NOT_MEASURED in (live.verdict, stored.verdict) or stored.verdict is cl.Verdict.NOT_REACHED:
            return f"The stored paper-scale runs cannot be set against this page's runs on {said} yet."
        if live.verdict is stored.verdict:
            return f"The stored paper-scale runs and this page's runs agree on {said}: both *{live.verdict.value}*."
        return (
            f"The stored paper-scale runs and this page's runs disagree on {said}: *{stored.verdict.value}* at "
            f"paper scale, *{live.verdict.value}* here — a finding, shown with its numbers rather than passed."
        )

    def stored_coverage(self) -> str:
        """How far the stored paper-scale runs got, against the paper's training length (the ``paper`` preset)."""
        stored = self.stored()
        if not stored:
            return "No paper-scale run of this task is stored yet."
        paper = preset_config(self.task, "paper", rho=self.main_rho).steps
        done = "; ".join(
            f"{label(r.config)} {r.status.get('steps_done', 0):,} of {r.config.steps:,} planned steps "
            f"({r.status.get('state')})"
            for r in stored.values()
        )
        return f"The stored paper-scale runs cover the start of the paper's {paper:,} steps: {done}."

    # -- tables and figures ------------------------------------------------------------------------------------
    def table(self, rho: float, data: str | None = None) -> pd.DataFrame:
        """The measurements of the live run at ``rho`` on ``data`` (default: the chapter's)."""
        return measurements_on(self.results[rho], data or self.data)

    def _title(self, cfg_label: str) -> str:
        return cfg_label + ("" if self.data is None else f" ({self.data} measurements)")

    def setup_table(self) -> pd.DataFrame:
        """The configurations actually run (and the device that ran them), one row per run."""
        return setup_table(self.results)

    def show_numbers(self, data: str | None = None) -> None:
        """The quantitative table of the live runs on ``data`` (default: the chapter's)."""
        show_table(results_table(self.results, data or self.data))

    def show_gd(self) -> None:
        """GD's (SGD's) top eigenvalues against ``2/eta``."""
        fig, ax = plt.subplots()
        plots.plot_eigenvalues(ax, self.table(0.0), title=self._title(label(self.results[0.0].config)))
        plt.show()

    def show_sam(self) -> None:
        """The main SAM run: eigenvalues with its SAM-edge and ``2/eta``, a zoom on the edge, the alignments."""
        plots.run_panel(self.table(self.main_rho), title=self._title(label(self.results[self.main_rho].config)))
        plt.show()

    def show_radii(self, *, collapse: bool = True) -> None:
        """Every radius: ``lambda_1/edge`` over time, all checks against ``R(alpha)`` (if ``collapse``), the losses.

        The panels stay side by side (the text says left, middle, right) at the book's width, with one legend
        under them: each run is one colour in every panel.
        """
        sam_runs = {label(r.config): measurements_on(r, self.data) for rho, r in self.results.items() if rho > 0}
        n = 3 if collapse else 2
        fig, axes = plt.subplots(1, n, figsize=(BOOK_WIDTH_IN, PANEL_HEIGHT_IN + 0.6))
        plots.plot_tracking_ratio(axes[0], sam_runs, title=r"$\lambda_1$ / SAM-edge", legend=False)
        if collapse:
            plots.plot_alpha_collapse(axes[1], sam_runs, title=r"against $R(\alpha)$", legend=False)
        losses = {label(r.config): r.steps for r in self.results.values()}
        plots.plot_losses(axes[-1], losses, title="training loss", legend=False)
        if self.data is not None:
            fig.suptitle(f"{self.data} measurements", fontsize="medium")
        panels = ("left", "middle", "right") if collapse else ("left", "right")
        plots.figure_legend(fig, axes, panels, first=list(losses))
        plt.show()

    def show_topk(self) -> None:
        """Each tracked eigenvalue of the main SAM run divided by its edge."""
        fig, ax = plt.subplots()
        plots.plot_topk_over_edge(
            ax, self.table(self.main_rho), title=f"top-k eigenvalues / SAM-edge, rho={self.main_rho:g}"
        )
        plt.show()

    def show_estimator(self) -> None:
        """The exact ``lambda_1`` against the paper's estimator at the same weights, main SAM run."""
        fig, ax = plt.subplots()
        title = f"SAM rho={self.main_rho:g}: exact vs official estimator"
        plots.plot_estimators(ax, self.table(self.main_rho), title=title)
        plt.show()

    def show_stored(self) -> None:
        """The stored paper-scale runs: how far each got, their numbers, and their sharpness against their edge."""
        stored = self.stored()
        if not stored:
            display(Markdown(f"*No paper-scale {self.task} run is stored in `results/paper/`.*"))
            return
        note = stopped_early_note(stored.values())
        if note:  # their state is shown wherever they are used: here, above their numbers
            display(Markdown(f"*{note}.*"))
        show_table(coverage_table(stored))
        show_table(results_table(stored, self.data))
        # one above the other at the book's width: side by side, each legend would cover its panel's data
        fig, axes = plt.subplots(len(stored), 1, figsize=(BOOK_WIDTH_IN, 3.4 * len(stored)), squeeze=False)
        for ax, res in zip(axes[:, 0], stored.values(), strict=True):
            draw = plots.plot_edge_zoom if res.config.rho > 0 else plots.plot_eigenvalues
            draw(ax, measurements_on(res, self.data), title=f"paper scale: {label(res.config)}")
        plt.show()

    # -- the seed band -----------------------------------------------------------------------------------------
    def show_band(self, band: Mapping[int, Mapping[float, RunResult]]) -> None:
        """The seed band: its table (:meth:`seed_band`) and every seed's ``lambda_1/edge`` at the main radius."""
        show_table(self.seed_band(band), index="number", transpose=False)
        seeds = {self.results[self.main_rho].config.seed: self.results, **band}
        ratios = {f"seed {s}": measurements_on(r[self.main_rho], self.data) for s, r in seeds.items()}
        fig, ax = plt.subplots()
        plots.plot_tracking_ratio(ax, ratios, title=self._title(rf"$\lambda_1$ / SAM-edge, $\rho$={self.main_rho:g}"))
        plt.show()

    def seed_band(self, band: Mapping[int, Mapping[float, RunResult]]) -> pd.DataFrame:
        """The headline numbers at every seed: one row per number, one column per seed, then median and spread.

        The rows: SAM's median ``lambda_1/edge`` after the transient at the main radius (NaN where the edge was
        not reached) and GD's median ``eta lambda_1/2`` over the last third. Glued as ``ch<n>_band_sam`` /
        ``ch<n>_band_gd`` (Markdown sentences) and ``..._spread`` (numbers).
        """
        from myst_nb import glue

        runs = {self.results[self.main_rho].config.seed: self.results, **band}
        rows = {}
        for key, what, rho in (
            ("sam", f"SAM ρ={self.main_rho:g}: median λ₁/edge after the transient", self.main_rho),
            ("gd", f"{label(self.results[0.0].config)}: median ηλ₁/2 over the last third", 0.0),
        ):
            values = {}
            for seed, res in sorted(runs.items()):
                df = measurements_on(res[rho], self.data)
                stat = tracking_ratio(df)["median"] if rho > 0 else gd_edge_ratio(df)["median_last_third"]
                values[f"seed {seed}"] = stat
            finite = [v for v in values.values() if math.isfinite(v)]
            med = float(pd.Series(finite).median()) if finite else math.nan
            spread = float(max(finite) - min(finite)) if len(finite) == len(values) and finite else math.nan
            rows[what] = {**values, "median over seeds": med, "spread (max − min)": spread}
            listed = ", ".join(f"{_cell(v, 3)}" for v in values.values())
            seeds = ", ".join(str(s) for s in sorted(runs))
            if len(runs) > 1:
                sentence = f"{listed} at seeds {seeds} (median {_cell(med, 3)}, spread {_cell(spread, 2)})"
            else:
                sentence = f"{listed} at seed {seeds} (no other seed was run)"
            glue(f"ch{self.number}_band_{key}", Markdown(sentence), display=False)
            glue(f"ch{self.number}_band_{key}_spread", spread, display=False)
        spreads = [r["spread (max − min)"] for r in rows.values() if math.isfinite(r["spread (max − min)"])]
        spreads = spreads if len(runs) > 1 else []
        lo, hi = cl.EDGE_BAND
        half = (hi - lo) / 2
        if spreads:
            worst = max(spreads)
            noise = (
                f"The larger of these spreads, {_cell(worst, 2)}, is "
                f"{cl.compare_words(worst, half, more='larger', less='smaller', same='as large')} than the band's "
                f"half-width {half:g} (×{worst / half:.2f} of it)"
            )
        else:
            noise = f"With one seed there is no spread to set against the band's half-width {half:g}"
        glue(f"ch{self.number}_band_noise", Markdown(noise), display=False)
        return pd.DataFrame(rows).T.rename_axis("number").reset_index()
