"""Chapters 7 (SAM's variants) and 8 (the phase diagram) as objects: what their notebooks call, one idea a cell.

The pattern is every experiment chapter's (:class:`~samedge_lib.chapters.pattern.Chapter`): a design lays
out the runs and runs them through :func:`samedge_lib.chapters.experiments.run_all`; the results become a run set
(:class:`~samedge_lib.chapters.variants_stats.VariantRuns`); tables are read from it; the claims of
:mod:`samedge_lib.chapters.variants_claims` are evaluated on it, glued into the prose and asserted; the figures
(:mod:`samedge_lib.chapters.variants_figures`) only read. Before the runs come the chapter's derivations
(:mod:`samedge_lib.theory.derivations`, asserted as they are derived) and its quadratic checks
(:mod:`samedge_lib.chapters.variants_quadratics`, asserted too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
from IPython.display import Markdown, display

from samedge_lib.chapters import chapter
from samedge_lib.chapters import variants_claims as cv
from samedge_lib.chapters import variants_figures as vf
from samedge_lib.chapters import variants_quadratics as vq
from samedge_lib.chapters.pattern import Chapter, show_table
from samedge_lib.chapters.pattern import glue_values as glue_all
from samedge_lib.chapters.variants import MOMENTUM_BETA, Design, PhaseDesign, VariantsDesign, ascent_check
from samedge_lib.reading import claims as cl
from samedge_lib.reading.claims import EDGE_BAND
from samedge_lib.reading.notebook import check_number
from samedge_lib.reading.style import use_book_style
from samedge_lib.record.results import REACH, RunResult
from samedge_lib.theory import derivations as dv
from samedge_lib.theory.edges import regime_bounds
from samedge_lib.theory.rules import SAM, UpdateRule

#: Random points of the library-against-derivation check, per preset (``n_check = 0``).
N_CHECK = {"smoke": 500, "cpu": 5_000, "paper": 50_000}


def residual(value: float) -> str:
    """A tiny difference as a table shows it: ``"0"`` where it is exactly zero, else two significant digits in
    scientific notation (``"3.6e-16"``); a fixed-point format would show every one of them as ``0.000000``.
    """
    return "0" if value == 0 else f"{value:.1e}"


def show_residual_table(df: pd.DataFrame, residuals: Sequence[str]) -> None:
    """``df`` as a table with one row per row of ``df`` (no row numbers), the ``residuals`` columns through
    :func:`residual`, every other number through :func:`~samedge_lib.chapters.pattern.cell`.
    """
    out = df.copy()
    for c in residuals:
        out[c] = out[c].map(residual)
    show_table(out, index=None, transpose=False)


@dataclass
class DesignChapter(Chapter):
    """A chapter whose runs a :class:`~samedge_lib.chapters.variants.Design` lays out (chapters 7 and 8).

    The pattern of :class:`~samedge_lib.chapters.pattern.Chapter`: :meth:`run` runs the design and builds
    :attr:`runs`; :meth:`show_setup` shows its table; :meth:`claims` evaluates and glues the claims :attr:`CLAIMS`
    (of :data:`~samedge_lib.chapters.variants_claims.VARIANT_CLAIMS`); :meth:`show_claims` and :meth:`check` show
    and assert those the chapter makes (:attr:`MADE`; "not reached yet" passes for
    :data:`~samedge_lib.chapters.variants_claims.MAY_BE_PRE_EOS`).
    """

    NUMBER: ClassVar[int] = 0
    CLAIMS: ClassVar[tuple[str, ...]] = ()
    MADE: ClassVar[tuple[str, ...]] = ()

    design: Design
    derivation: Any
    n_check: int
    seed: int
    results: dict[str, RunResult] = field(default_factory=dict)
    runs: cv.VariantRuns | None = None
    evaluations: pd.DataFrame | None = None

    catalogue = cv.VARIANT_CLAIMS

    @classmethod
    def _setup(cls, design: Design, derivation: Any, seed: int, n_check: Any) -> DesignChapter:
        check_number("n_check", n_check, minimum=0, integer=True)
        ch = cls(design, derivation, n_check or N_CHECK[design.preset], seed)
        chapter.show_parameters({**design.parameters, "n_check": ch.n_check})
        use_book_style()
        return ch

    @property
    def preset(self) -> str:
        """The preset the chapter runs at."""
        return self.design.preset

    @property
    def number(self) -> int:
        """The chapter's number (glue keys are ``ch<number>_...``)."""
        return self.NUMBER

    @property
    def made(self) -> tuple[str, ...]:
        """The claims the chapter makes (asserted by :meth:`check`)."""
        return self.MADE

    @property
    def runsets(self) -> list[cv.VariantRuns]:
        """The one run set the claims are evaluated on: this page's runs."""
        return [self.runs]

    def evaluated(self) -> list[cl.Claim]:
        """The claims :attr:`CLAIMS` of the catalogue."""
        return [cl.claim(k, self.catalogue) for k in self.CLAIMS]

    def allow_not_reached(self) -> tuple[str, ...]:
        """The claims whose prediction allows a GD run that has not sharpened to its edge."""
        return cv.MAY_BE_PRE_EOS

    def _glue(self, name: str, value: Any) -> None:
        glue_all({f"ch{self.NUMBER}_{name}": value})

    def claims(self) -> pd.DataFrame:
        """The claims, glued, with the tolerances the prose states: the on-edge band (``ch<n>_edge_band``, as
        ``[0.85, 1.15]``, and ``..._pct``, its half-width in per cent) and the fraction of its edge at which a run's
        crossing is counted (``ch<n>_reach``).
        """
        out = super().claims()
        self._glue("edge_band", cl.band_interval())
        self._glue("edge_band_pct", round(100 * (EDGE_BAND[1] - 1)))
        self._glue("reach", REACH)
        return out

    # ---- the derivations
    def show_proofs(self) -> None:
        """Glue how many identities were proved and list them."""
        names = self.derivation.proofs.names
        self._glue("n_proved", len(names))
        show_table(pd.DataFrame({"identity proved": names}), index=None, transpose=False)

    def show_library_check(self) -> None:
        """The library against the derived expressions at :attr:`n_check` points; fails above ``1e-12``."""
        errors = self.derivation.library_errors(self.n_check, self.seed)
        table = pd.DataFrame({"library function": list(errors), "max relative error": list(errors.values())})
        show_residual_table(table, ["max relative error"])
        self._glue("n_check", self.n_check)
        self._glue("lib_tol", dv.LIBRARY_TOL)
        self._glue("lib_max_err", float(max(errors.values())))
        if self.NUMBER == 7:
            self._glue("lib_n_functions", len(errors))
        dv.assert_library(errors, "derived expression" if self.NUMBER == 7 else "derivation")

    # ---- runs -> run set -> tables -> claims
    def run(self) -> dict[str, RunResult]:
        """Run (or load) the design's runs and build the run set the claims and figures read."""
        self.results = self.design.run()
        self.runs = self._runset(self.results)
        return self.results

    def _runset(self, results: dict[str, RunResult]) -> cv.VariantRuns:
        raise NotImplementedError

    def setup_table(self) -> pd.DataFrame:
        """One row per run (each chapter says which columns)."""
        raise NotImplementedError


@dataclass
class VariantsChapter(DesignChapter):
    """Chapter 7: unnormalised SAM, SAM with momentum, SAM switched on late."""

    NUMBER: ClassVar[int] = 7
    CLAIMS: ClassVar[tuple[str, ...]] = (
        "usam_on_edge",
        "usam_flat",
        "sam_on_edge_tight",
        "sam_slope",
        "slopes_differ",
        "momentum_on_edge",
        "momentum_gd",
        "naive_rejected",
        "momentum_beats_naive",
        "switch_first_step",
        "switch_five_steps",
        "switch_settles",
    )
    MADE: ClassVar[tuple[str, ...]] = (
        "usam_on_edge",
        "usam_flat",
        "sam_on_edge_tight",
        "slopes_differ",
        "momentum_on_edge",
        "momentum_gd",
        "momentum_beats_naive",
        "switch_first_step",
        "switch_settles",
    )

    @classmethod
    def from_parameters(cls, preset: Any, grid: Any, seed: Any, n_check: Any) -> VariantsChapter:
        """Validate the parameters, lay out the runs, show the parameter box."""
        design = VariantsDesign.from_parameters(preset, grid, seed)
        return cls._setup(design, dv.SamVariants(), seed, n_check)

    # ---- the derivations
    def show_momentum_polynomials(self) -> None:
        """Derive the characteristic polynomials with momentum and show their thresholds."""
        show_table(pd.DataFrame(self.derivation.momentum()), index="rule", transpose=False)

    def show_proofs(self) -> None:
        """The count of identities proved in part I, then their list."""
        display(Markdown(f"**{len(self.derivation.proofs)} identities proved** in this part."))
        super().show_proofs()

    # ---- part II: quadratics
    def show_usam_step(self) -> None:
        """Figure 7.1."""
        check = vq.usam_step(self.seed)
        glue_all(check.glued)
        vf.plot_usam_step(check)

    def show_momentum_thresholds(self) -> None:
        """Figure 7.2."""
        check = vq.momentum_thresholds()
        glue_all(check.glued)
        vf.plot_momentum_thresholds(check)

    def show_usam_tuning(self) -> None:
        """Figure 7.3."""
        check = vq.usam_tuning()
        vf.plot_usam_tuning(check)
        glue_all(check.glued)

    def show_momentum_cycles(self) -> None:
        """The table of momentum 2-cycles on quadratics."""
        check = vq.momentum_cycles(self.seed)
        cyc = check.data["table"].rename(columns=vq.READABLE)
        show_residual_table(cyc, [vq.READABLE["|lambda1/edge - 1|"], vq.READABLE["||c1|/amplitude - 1|"]])
        glue_all(check.glued)

    def show_quadratic_switch(self) -> None:
        """Figure 7.4."""
        check = vq.quadratic_switch()
        glue_all(check.glued)
        vf.plot_quadratic_switch(check)

    # ---- part III: the network
    def _runset(self, results: dict[str, RunResult]) -> cv.VariantRuns:
        return self.design.runset(results)

    def setup_table(self) -> pd.DataFrame:
        """One row per run: the settings that define it."""
        rows = []
        for key, res in self.results.items():
            cfg = res.config
            rows.append(
                {
                    "run": cv.variant_label(key, res),
                    "optimizer": cfg.optimizer,
                    "eta": cfg.eta,
                    "rho (r for USAM)": cfg.rho,
                    "momentum": cfg.momentum or None,
                    "Nesterov": cfg.nesterov if cfg.momentum else None,
                    "SAM from step": cfg.sam_start or None,
                    "steps": cfg.steps,
                    "check every": cfg.measure_every,
                    "top-k": cfg.k,
                    "state": res.state,
                    "wall time (s)": res.provenance.get("timings", {}).get("wall_seconds"),
                }
            )
        return pd.DataFrame(rows)

    def show_usam_vs_sam(self) -> None:
        """Figure 7.5."""
        vf.plot_usam_vs_sam(self.runs, self.design.refs)

    def show_momentum_runs(self) -> None:
        """Figure 7.6."""
        vf.plot_momentum_runs(self.runs)

    def _median_ratio(self, key: str, column: str) -> float:
        return cv.edge_stats(self.runs.table(key), column)["median"] if key in self.results else math.nan

    def _worst_slope(self) -> tuple[str, float, float] | None:
        worst = None
        for key in self.runs.keys("sam"):
            st = cv.edge_stats(self.runs.table(key))
            gap = abs(st["slope"] - st["mean_elasticity"])
            if math.isfinite(gap) and (worst is None or gap > worst[1]):
                worst = (cv.variant_label(key, self.results[key]), gap, st["slope_se"])
        return worst

    def glue_notes(self) -> None:
        """Glue the sentences on the slope's margin and the momentum runs' offsets from their edges."""
        ws = self._worst_slope()
        if ws:
            margin = ws[1] - cv.FLAT_SLOPE
            slope_note = (
                f"the largest |b − ε̄|, {ws[0]}, is {ws[1]:.3f}: {abs(margin):.3f} "
                f"{'beyond' if margin > 0 else 'inside'} the tolerance {cv.FLAT_SLOPE}, which is "
                f"{abs(margin) / ws[2]:.2f} times the standard error of its fitted slope ({ws[2]:.3f})."
            )
        else:
            slope_note = "no SAM run reached its edge."
        self._glue("slope_note", Markdown(slope_note))
        nag_key, hb_key = f"sam+nesterov/{MOMENTUM_BETA:g}", f"sam+hb/{MOMENTUM_BETA:g}"
        # heavy ball's step on flat directions, eta/(1 - beta), against the eta_eff = eta/(1 + beta) of its edge
        glue_all({"ch7_beta": MOMENTUM_BETA, "ch7_flat_gain": (1 + MOMENTUM_BETA) / (1 - MOMENTUM_BETA)})
        nag_own, nag_naive = self._median_ratio(nag_key, "edge"), self._median_ratio(nag_key, "sam_edge")
        hb_own, hb_naive = self._median_ratio(hb_key, "edge"), self._median_ratio(hb_key, "sam_edge")
        glue_all({"ch7_nag_own": float(nag_own), "ch7_nag_naive": float(nag_naive)})
        glue_all({"ch7_hb_own": float(hb_own), "ch7_hb_naive": float(hb_naive)})
        glue_all({"ch7_naive_below": cv.NAIVE_BELOW, "ch7_naive_above": cv.NAIVE_ABOVE})
        for name, key in (("nag", nag_key), ("hb", hb_key)):
            # what the momentum edge predicts for lambda_1 / naive edge: the two edges' ratio over the checks the
            # run's statistics are taken on (those after its crossing)
            win = cv.after_crossing(self.runs.table(key)) if key in self.results else pd.DataFrame()
            pred = (win["edge"] / win["sam_edge"]).dropna() if len(win) else pd.Series(dtype=float)
            span = f"{pred.min():.2f}–{pred.max():.2f}" if len(pred) else "— (the run did not reach its edge)"
            self._glue(f"{name}_predicted", span)
        spread = (
            cv.edge_stats(self.runs.table(nag_key), "sam_edge")
            if nag_key in self.results
            else {"p10": math.nan, "p90": math.nan}
        )
        naive_note = (
            f"Nesterov's median ratio to the naive edge is {nag_naive:.3f} against the threshold {cv.NAIVE_BELOW} "
            f"(p10–p90 {spread['p10']:.3f}–{spread['p90']:.3f}); it sits {abs(nag_own - 1) * 100:.1f} % "
            f"{'above' if nag_own > 1 else 'below'} its own momentum edge, and an offset of that size moves the "
            "naive ratio by as much."
        )
        self._glue("naive_note", Markdown(naive_note))

    def show_switch(self) -> None:
        """Glue the switch run's numbers; Figure 7.7."""
        sw_key = next(k for k in self.results if k.startswith("switch"))
        res = self.results[sw_key]
        s0 = res.config.sam_start
        swdf = self.runs.table(sw_key)
        esc = cv.escape(swdf, s0)
        self._glue("switch_start", int(s0))
        first_factor = math.exp(esc["first"]) if math.isfinite(esc["first"]) else math.nan
        at = swdf.set_index("step")
        loss_jump = (
            float(at.loc[s0 + 1 : s0 + cv.ESCAPE_STEPS, "loss"].max() / at.loc[s0, "loss"])
            if s0 + 1 in at.index
            else math.nan
        )
        five_note = (
            f"Here α = {esc['alpha']:.3g} at the switch, the predicted factor per step is "
            f"{math.exp(esc['predicted']):.3g}, the first step multiplied |⟨v₁, g⟩| by {first_factor:.3g}, and the "
            f"training loss rose up to {loss_jump:.3g} times its value at the switch within {cv.ESCAPE_STEPS} steps."
        )
        self._glue("five_note", Markdown(five_note))
        vf.plot_switch(swdf, res, esc)

    def numbers_table(self) -> pd.DataFrame:
        """One row per run: the statistics after the crossing, and the momentum-free edge for SAM with momentum."""
        rows = []
        for key, res in self.results.items():
            df = self.runs.table(key)
            st = cv.edge_stats(df)
            is_sam = UpdateRule.of(res.config).ascent is SAM
            naive = cv.edge_stats(df, "sam_edge") if res.config.momentum > 0 and is_sam else None
            rows.append(
                {
                    "run": cv.variant_label(key, res),
                    "first check after the crossing (step)": st["from_step"],
                    "checks after it": st["n"],
                    "λ₁/edge median": st["median"],
                    "p10": st["p10"],
                    "p90": st["p90"],
                    "slope b": st["slope"],
                    "± s.e.": st["slope_se"],
                    "mean ε(α)": st["mean_elasticity"] if is_sam else None,
                    "‖g‖ max/min after it": st["g_fall"],
                    "λ₁/naive edge median": naive["median"] if naive else None,
                    "λ₁/edge at the last check": st["last_ratio"],
                    "training loss at the end": float(df["loss"].iloc[-1]) if len(df) else None,
                }
            )
        return pd.DataFrame(rows)

    def show_numbers(self) -> None:
        """The numbers table (one column per run)."""
        show_table(self.numbers_table())


@dataclass
class PhaseChapter(DesignChapter):
    """Chapter 8: the phase diagram in ``alpha``."""

    NUMBER: ClassVar[int] = 8
    CLAIMS: ClassVar[tuple[str, ...]] = (
        "phase_collapse",
        "phase_collapse_largest",
        "ascent_marks_deviation",
        "alpha_span",
        "alpha_order",
        "regimes_covered",
        "phase_gd",
    )
    MADE: ClassVar[tuple[str, ...]] = ("phase_collapse", "alpha_span", "alpha_order", "regimes_covered", "phase_gd")

    extras: dict[str, dict[str, float]] = field(default_factory=dict)
    table: pd.DataFrame | None = None
    cycles: vq.QuadraticCheck | None = None

    @classmethod
    def from_parameters(cls, preset: Any, grid: Any, seed: Any, n_check: Any) -> PhaseChapter:
        """Validate the parameters, lay out the grid, show the parameter box."""
        design = PhaseDesign.from_parameters(preset, grid, seed)
        return cls._setup(design, dv.PhaseDiagram(), seed, n_check)

    def show_cycles(self) -> None:
        """The quadratics' 2-cycles against ``y^2/(1 - y)`` (asserted to 1e-8)."""
        self.cycles = vq.phase_cycles()
        show_residual_table(self.cycles.data["table"].rename(columns=vq.READABLE), ["relative difference"])
        glue_all(self.cycles.glued)

    def show_curve(self) -> None:
        """Figure 8.1: ``R(alpha)`` with the 2-cycles of :meth:`show_cycles`."""
        vf.plot_phase_cycles(self.cycles)

    def _runset(self, results: dict[str, RunResult]) -> cv.VariantRuns:
        self.extras = {key: ascent_check(res) for key, res in results.items()}
        return self.design.runset(results, self.extras)

    def setup_table(self) -> pd.DataFrame:
        """One row per run: its grid point, the statistics after the crossing and the ascent-point diagnostics."""
        rows = []
        for key, res in self.results.items():
            cfg, df = res.config, res.measurements
            st, ex = cv.phase_stats(df), self.extras[key]
            win = cv.after_crossing(df)
            rows.append(
                {
                    "run": cv.variant_label(key, res),
                    "eta": cfg.eta,
                    "rho": cfg.rho,
                    "steps": cfg.steps,
                    "α after the crossing: min": float(win["alpha"].min()) if cfg.rho > 0 and len(win) else None,
                    "max": float(win["alpha"].max()) if cfg.rho > 0 and len(win) else None,
                    "median y/R(α)": st["ratio"] if cfg.rho > 0 else None,
                    "median |ln(y/R)|": st["dev"] if cfg.rho > 0 else None,
                    "median Λ": float(cv.collapse_of(win, res).median()) if len(win) else None,
                    "ρ/‖w‖ (end)": ex["rho_over_w"],
                    "λ₁(w+ε)/λ₁(w) (end)": ex["ascent_ratio"],
                    "‖∇ℓ(w+ε)‖/‖g+Hε‖ (end)": ex["gradient_ratio"],
                    "wall time (s)": res.provenance.get("timings", {}).get("wall_seconds"),
                }
            )
        self.table = pd.DataFrame(rows)
        return self.table

    def claims(self) -> pd.DataFrame:
        """The claims, glued, the grid's largest radius and the tolerances the prose states (collapse, ascent
        marker, regime bounds).
        """
        out = super().claims()
        self._glue("largest_rho", float(cv.largest_rho(self.runs)))
        low, high = regime_bounds(cv.REGIME_TOL)
        glue_all(
            {
                "ch8_collapse_pct": round(100 * (math.exp(cv.COLLAPSE_TOL) - 1)),
                "ch8_collapse_words": cv.COLLAPSE_WORDS,
                "ch8_ascent_pct": round(100 * cv.ASCENT_TOL),
                "ch8_regime_pct": round(100 * cv.REGIME_TOL),
                "ch8_regime_low": f"{low:.3g}",
                "ch8_regime_high": f"{high:.3g}",
            }
        )
        return out

    def show_phase(self) -> None:
        """Figure 8.2."""
        vf.plot_phase(self.runs)

    def _sam_rows(self) -> pd.DataFrame:
        t = self.table if self.table is not None else self.setup_table()
        return t[t["rho"] > 0].dropna(subset=["ρ/‖w‖ (end)", "median |ln(y/R)|"]).copy()

    def show_ascent(self) -> None:
        """Figure 8.3."""
        vf.plot_ascent(self._sam_rows(), self.runs)

    def glue_why(self) -> None:
        """Glue the sentence on what the largest radius does to the quadratic picture."""
        top = cv.largest_rho(self.runs)
        sam_rows = self._sam_rows()
        big = sam_rows[sam_rows["rho"] == top].dropna(subset=["median |ln(y/R)|"])
        small = sam_rows[sam_rows["rho"] < top]
        worst = big.loc[big["median |ln(y/R)|"].idxmax()] if len(big) and len(small) else None
        if worst is not None:
            why = (
                f"At ρ = {top:g} the radius is {worst['ρ/‖w‖ (end)']:.1%} of ‖w‖ ({worst['run']}); there the gradient "
                f"at the ascent point is {worst['‖∇ℓ(w+ε)‖/‖g+Hε‖ (end)']:.2f} times the length of its quadratic "
                f"model g + Hε and the sharpness at the ascent point {worst['λ₁(w+ε)/λ₁(w) (end)']:.2f} times the "
                f"sharpness at w, while the runs below it keep the gradient within "
                f"{(small['‖∇ℓ(w+ε)‖/‖g+Hε‖ (end)'] - 1).abs().max():.1%} of its model and the sharpness within "
                f"{(small['λ₁(w+ε)/λ₁(w) (end)'] - 1).abs().max():.1%}. A shorter ascent gradient than the quadratic "
                "model means a smaller SAM curvature along v₁ than λ₁(1 + ρλ₁/‖g‖), so the sharpness can sit above "
                f"the quadratic edge: median y/R = {worst['median y/R(α)']:.3f} for that run."
            )
        else:
            why = (
                "No run of this grid reached its edge at the largest radius and below it, so there is nothing to "
                "compare."
            )
        self._glue("why", Markdown(why))
