"""The stochastic-SAM chapter's machinery: its sweep (parameters -> configurations -> runs), tables and figures.

The chapter ("Beyond the paper": batch size, the SAM batch sharpness, m-sharpness and the drift) runs

* SAM at the radius of :data:`~samedge_lib.record.config.STOCHASTIC_PRESETS` at several batch sizes ``B`` (the full
  batch always among them: it is the reference edge, m-SAM's ``m = N`` and the drift's run),
* SGD at a few batch sizes (baselines), and
* m-SAM on the full batch at several micro-batch sizes ``m < N``,

each configured by :func:`samedge_lib.record.config.stochastic_config`, all through
:func:`samedge_lib.chapters.experiments.run_all` (parallel workers, finished runs reused). Its predictions are the
claims of :mod:`samedge_lib.chapters.stochastic_claims`. :class:`StochasticChapter` is the chapter over those runs,
in the pattern of :mod:`samedge_lib.chapters.pattern`: run, setup table, claims, figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.axes import Axes

from samedge_lib.chapters import stochastic_claims as cs
from samedge_lib.chapters.pattern import Chapter, glue_values, show_table
from samedge_lib.reading import claims as cl
from samedge_lib.reading.notebook import (
    NotebookParameterError,
    check_list,
    check_number,
    check_preset,
    show_parameters,
)
from samedge_lib.reading.style import COLORS, OKABE_ITO, RHO_PALETTE, use_book_style
from samedge_lib.record.config import STOCHASTIC_PRESETS, RunConfig, preset_config, stochastic_config
from samedge_lib.record.results import REACH, RunResult, tracking_window
from samedge_lib.theory.edges import collapse_variable

#: The chapter's number: its glue keys are ``ch9_<claim>`` (Markdown), ``..._value`` and ``..._verdict``.
NUMBER = 9


def _sizes(name: str, value: Any, n: int, *, below_n: bool = False) -> list[int]:
    top = n - 1 if below_n else n

    def item(k: str, v: Any) -> int:
        return int(check_number(k, v, minimum=1, maximum=top, integer=True))

    sizes = check_list(name, value, item=item)
    return sorted(dict.fromkeys(sizes), reverse=True)


@dataclass(frozen=True)
class StochasticSweep:
    """The chapter's runs: SAM by batch size, SGD by batch size, m-SAM by micro-batch size (full batch).

    Attributes:
        preset: the preset the configurations come from.
        n_train: the training set (the full batch).
        sam, sgd, msam: the configurations, by batch size (SAM, SGD) or micro-batch size (m-SAM).
        parameters: the values the chapter runs with, defaults resolved (for its parameter box).

    """

    preset: str
    n_train: int
    sam: dict[int, RunConfig]
    sgd: dict[int, RunConfig]
    msam: dict[int, RunConfig]
    parameters: dict[str, Any]

    @classmethod
    def from_parameters(
        cls,
        preset: Any,
        *,
        batch_sizes: Any = None,
        sgd_batch_sizes: Any = None,
        micro_batches: Any = None,
        steps: Any = None,
        seed: Any = 0,
        rho: Any = None,
    ) -> StochasticSweep:
        """Validate the chapter's parameters (``None``: the preset's value) and build its configurations.

        Raises :class:`~samedge_lib.reading.notebook.NotebookParameterError` naming the first bad parameter and what is
        allowed, before anything is computed.
        """
        check_preset(preset)
        spec = STOCHASTIC_PRESETS[preset]
        n = int(preset_config("mnist", spec["base"]).n_train)
        sam = _sizes("batch_sizes", spec["batch_sizes"] if batch_sizes is None else batch_sizes, n)
        sam = sorted({n, *sam}, reverse=True)  # the full batch: the reference edge, m = N and the drift
        sgd = _sizes("sgd_batch_sizes", spec["sgd_batch_sizes"] if sgd_batch_sizes is None else sgd_batch_sizes, n)
        micro = _sizes(
            "micro_batches", spec["micro_batches"] if micro_batches is None else micro_batches, n, below_n=True
        )
        for m in micro:
            if n % m:
                raise NotebookParameterError(
                    f"parameter micro_batches holds {m}, which does not divide the {n} training examples; "
                    f"use divisors of {n}, e.g. [100, 25]"
                )
        check_number("seed", seed, minimum=0, integer=True)
        over: dict[str, Any] = {"seed": seed}
        if steps is not None:
            over["steps"] = check_number("steps", steps, minimum=1, integer=True)
        rho = spec["rho"] if rho is None else float(check_number("rho", rho, minimum=0, integer=False))
        if rho == 0:
            raise NotebookParameterError("parameter rho=0 is SGD, which runs as the baselines; give a radius > 0")
        configs = cls(
            preset,
            n,
            {b: stochastic_config(preset, batch_size=b, rho=rho, **over) for b in sam},
            {b: stochastic_config(preset, batch_size=b, rho=0.0, **over) for b in sgd},
            {m: stochastic_config(preset, batch_size=n, rho=rho, micro_batch=m, **over) for m in micro},
            {},
        )
        first = configs.sam[n]
        params = {
            "preset": preset,
            "batch_sizes": sam,
            "sgd_batch_sizes": sgd,
            "micro_batches": micro,
            "steps": first.steps,
            "seed": first.seed,
            "rho": rho,
            "eta": first.eta,
            "n_train": n,
            "measure_every": first.measure_every,
            "noise_every": first.noise_every,
        }
        return cls(preset, n, configs.sam, configs.sgd, configs.msam, params)

    def configs(self) -> list[RunConfig]:
        """Every configuration, the costliest first (m-SAM by falling m, then SAM and SGD by falling B), so that
        parallel workers finish together.
        """
        return [
            *(self.msam[m] for m in sorted(self.msam)),
            *(self.sam[b] for b in sorted(self.sam, reverse=True)),
            *(self.sgd[b] for b in sorted(self.sgd, reverse=True)),
        ]

    def run(self, *, root: str | Path | None = None, progress: bool | None = None) -> cs.StochasticRunSet:
        """Run (or load) every configuration and return them as the live run set of the claims."""
        from samedge_lib.chapters.experiments import run_all  # the one part of the chapter machinery that trains

        configs = self.configs()
        results = dict(
            zip([c.identity() for c in configs], run_all(configs, root=root, progress=progress), strict=True)
        )

        def pick(group: dict[int, RunConfig]) -> dict[int, RunResult]:
            return {k: results[c.identity()] for k, c in group.items()}

        sam, sgd, msam = pick(self.sam), pick(self.sgd), pick(self.msam)
        rho = self.sam[self.n_train].rho
        runs = {rho: sam[self.n_train], **({0.0: sgd[self.n_train]} if self.n_train in sgd else {})}
        return cs.StochasticRunSet(
            "live",
            f"{self.preset} preset (this page)",
            runs,
            rho,
            None,
            "on this page's runs",
            sam=sam,
            sgd=sgd,
            msam=msam,
            n_train=self.n_train,
        )


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def run_label(res: RunResult, n_train: int) -> str:
    """``SAM B=25``, ``SGD B=1000``, ``m-SAM m=100``."""
    cfg = res.config
    if cfg.micro_batch is not None:
        return f"m-SAM m={cfg.micro_batch}"
    b = cfg.batch_size or n_train
    return f"{'SGD' if cfg.rho == 0 else 'SAM'} B={b}"


def all_runs(rs: cs.StochasticRunSet) -> list[RunResult]:
    """The run set's runs in the chapter's order: SAM by falling B, SGD, m-SAM by falling m."""
    return [
        *(rs.sam[b] for b in sorted(rs.sam, reverse=True)),
        *(rs.sgd[b] for b in sorted(rs.sgd, reverse=True)),
        *(rs.msam[m] for m in sorted(rs.msam, reverse=True)),
    ]


def setup_table(rs: cs.StochasticRunSet) -> pd.DataFrame:
    """One row per run: what defines it and what it cost, read from its configuration and provenance."""
    rows = []
    for res in all_runs(rs):
        cfg, timings = res.config, res.provenance.get("timings", {})
        rows.append(
            {
                "run": run_label(res, rs.n_train),
                "state": res.status.get("state"),
                "batch": cfg.batch_size or rs.n_train,
                "micro-batch m": cfg.micro_batch,
                "eta": cfg.eta,
                "rho": cfg.rho,
                "steps": cfg.steps,
                "check every (steps)": cfg.measure_every,
                "measured on": "minibatch and full batch" if cfg.measure_data == "both" else "full batch",
                "noise every (checks)": cfg.noise_every,
                "drift every (checks)": cfg.drift_every or None,
                "seed": cfg.seed,
                "wall time (s)": timings.get("wall_seconds"),
                "share of time in checks": timings.get("measure_share"),
            }
        )
    return pd.DataFrame(rows)


def results_table(rs: cs.StochasticRunSet) -> pd.DataFrame:
    """One row per run: the statistics the claims read (medians after the transient; "—" where they do not apply)."""
    rows = []
    for res in all_runs(rs):
        s = cs.batch_statistics(res)
        m = cs.m_edge_statistics(res) if res.config.batch_size is None and res.config.rho > 0 else None
        d = cs.drift_statistics(res) if res.config.drift_every else None
        rows.append(
            {
                "run": run_label(res, rs.n_train),
                "checks after the transient": s["n_window"],
                "‖H_B‖/S_B (stepped data)": s["hb_over_sb"],
                "λ₁/S(‖g‖) (full batch)": s["lam_over_s"],
                "Q_B (stepped data)": s["q"],
                "Q (full batch)": s["q_full"],
                "share of oscillating checks": s["oscillating"],
                "S_B": s["edge_b"],
                "S(‖g‖)": s["edge_full"],
                "S_B/S measured": s["inflation"],
                "S_B/S predicted": s["inflation_predicted"],
                "α_B": s["alpha_b"],
                "‖g‖²/noise": s["grad_sq_over_noise"],
                "identity: largest |MC/identity − 1|": s["identity_dev"],
                "tr H (last noise check)": s["trace_h"],
                "λ₁ (same check)": s["lambda_1_at_trace"],
                "(η/2)λ_max(A_m), oscillating checks": m["median"] if m else None,
                "drift: share cos > 0": d["share"] if d else None,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Claims: the findings
# ------------------------------------------------------------------------------------------------
def findings(evaluations: pd.DataFrame, made: Sequence[str], runset: str = "live") -> pd.DataFrame:
    """The reported claims whose verdict is not "holds": the findings, each with the evidence it was given."""
    rows = []
    for c in cs.CLAIMS:
        e = cl.lookup(evaluations, c.key, runset)
        if c.key not in made and e.verdict is not cl.Verdict.HOLDS:
            rows.append(
                {"prediction": c.statement, "source": c.source, "verdict": e.verdict.value, "evidence": e.detail}
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def _percentiles(values: pd.Series) -> tuple[float, float, float]:
    v = values.dropna().to_numpy()
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    return float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90))


def _errorbar(ax: Axes, xs: list[int], stats: list[tuple[float, float, float]], **kw: Any) -> None:
    med = np.array([s[0] for s in stats])
    lo = med - np.array([s[1] for s in stats])
    hi = np.array([s[2] for s in stats]) - med
    ax.errorbar(xs, med, yerr=[lo, hi], capsize=3, marker="o", **kw)


def plot_batch_size(axes: Sequence[Axes], rs: cs.StochasticRunSet) -> None:
    """Left: which edge the sharpness follows at each B (medians after the transient, p10-p90 bars). Right: the
    edges themselves against B, with the edge the sampling identity predicts and the ``B^(-1/4)`` slope.
    """
    ax, ax2 = axes
    sizes = sorted(rs.sam)
    hb, full, q, q_sgd, sgd_sizes = [], [], [], [], sorted(rs.sgd)
    for b in sizes:
        res = rs.sam[b]
        st_all, fu_all = cs.stepped(res), cs.full_batch(res)
        win_steps = set(tracking_window(st_all)["step"].astype(int))
        st_w = st_all[st_all["step"].astype(int).isin(win_steps)]
        fu_w = fu_all[fu_all["step"].astype(int).isin(win_steps)]
        hb.append(_percentiles(st_w["lambda_1"] / st_w["edge"]))
        full.append(_percentiles(fu_w["lambda_1"] / fu_w["edge"]))
        q.append(_percentiles(st_w["q_sam"]))
    for b in sgd_sizes:
        st_w = tracking_window(cs.stepped(rs.sgd[b]))
        q_sgd.append(_percentiles(st_w["q_sam"]) if len(st_w) else (math.nan,) * 3)
    lo, hi = cl.EDGE_BAND
    ax.axhspan(lo, hi, color=COLORS["sam_edge"], alpha=0.08, label=f"band {cl.band_interval()}")
    ax.axhline(1.0, color=COLORS["theory"], lw=0.8)
    _errorbar(ax, sizes, hb, color=COLORS["lambda1"], label="‖H_B‖ / S_B (stepped minibatch)")
    _errorbar(ax, sizes, full, color=COLORS["sam_edge"], ls="--", label="λ₁ / S(‖g‖) (full batch)")
    _errorbar(ax, sizes, q, color=COLORS["gd"], ls="-.", label="Q_B, SAM")
    if sgd_sizes:
        _errorbar(ax, sgd_sizes, q_sgd, color=COLORS["gd_edge"], ls=":", label="Q_B, SGD (η gᵀHg / 2‖g‖²)")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size B")
    ax.set_ylabel("ratio (1 = at the edge)")
    ax.set_title("which edge, at each batch size")
    ax.legend(loc="best")

    meas_b, meas_f, pred = [], [], []
    for b in sizes:
        s = cs.batch_statistics(rs.sam[b])
        meas_b.append(s["edge_b"])
        meas_f.append(s["edge_full"])
        pred.append(s["edge_full"] * s["inflation_predicted"] if b < rs.n_train else s["edge_full"])
    ax2.plot(sizes, meas_b, marker="o", color=COLORS["lambda1"], label="S_B (stepped minibatch), measured")
    ax2.plot(sizes, meas_f, marker="s", color=COLORS["sam_edge"], ls="--", label="S(‖g‖) (full batch)")
    ax2.plot(
        sizes, pred, marker="x", color=COLORS["theory"], ls=":", label="S(‖g‖) × S(√E‖g_B‖²)/S(‖g‖), from the identity"
    )
    minis = [b for b in sizes if b < rs.n_train]
    if len(minis) >= 2 and math.isfinite(meas_b[0]):  # the slope, drawn through the smallest batch's measured edge
        ref = np.array([minis[0], minis[-1]], dtype=float)
        ax2.plot(ref, meas_b[0] * (ref / minis[0]) ** -0.25, color=OKABE_ITO["orange"], lw=1, label="slope B^(−1/4)")
    ax2.set_xscale("log")
    finite = [v for v in (*meas_b, *meas_f, *pred) if math.isfinite(v) and v > 0]
    if finite:  # runs too short for a transient have no medians
        ax2.set_yscale("log")
        ticks = np.geomspace(min(finite), max(finite), 5)
        ax2.set_yticks(ticks, [f"{t:.3g}" for t in ticks])
    ax2.set_xticks(sizes, [str(b) for b in sizes])
    ax2.minorticks_off()
    ax2.set_xlabel("batch size B")
    ax2.set_ylabel("SAM-edge (median after the transient)")
    ax2.set_title("the minibatch edge, inflated by gradient noise")
    ax2.legend(loc="best")


def plot_batch_traces(axes: Sequence[Axes], rs: cs.StochasticRunSet) -> None:
    """``||H_B||/S_B`` and ``Q_B`` on the stepped data over steps, one line per batch size."""
    ax, ax2 = axes
    for i, b in enumerate(sorted(rs.sam, reverse=True)):
        df = cs.stepped(rs.sam[b])
        color = RHO_PALETTE[i % len(RHO_PALETTE)]
        ax.plot(df["step"], df["lambda_1"] / df["edge"], color=color, label=f"B={b}")
        ax2.plot(df["step"], df["q_sam"], color=color, label=f"B={b}")
    for a, what in ((ax, "‖H_B‖ / S_B"), (ax2, "Q_B")):
        a.axhline(1.0, color=COLORS["theory"], lw=0.8)
        a.set_xlabel("step")
        a.set_ylabel(what)
        a.set_title(f"SAM: {what} on the stepped batch")
        a.legend(loc="best", ncol=2)


def plot_m_sharpness(ax: Axes, rs: cs.StochasticRunSet) -> None:
    """``(eta/2) lambda_max(A_m)`` over steps for each m (filled: oscillating checks), and ``Lambda`` for ``m = N``."""
    runs: dict[int, RunResult] = dict(rs.msam)
    if rs.n_train in rs.sam:
        runs[rs.n_train] = rs.sam[rs.n_train]
    for i, (m, res) in enumerate(sorted(runs.items(), reverse=True)):
        cfg = res.config
        df = cs.stepped(res)
        if cfg.micro_batch is not None:
            y = cfg.eta / 2 * df["msam_lambda"]
        else:
            y = pd.Series(collapse_variable(eta=cfg.eta, rho=cfg.rho, grad_norm=df["grad_norm"], lam1=df["lambda_1"]))
        osc = (df["osc_cos"] < cs.OSCILLATING).to_numpy()
        color = RHO_PALETTE[i % len(RHO_PALETTE)]
        what = "Λ (SAM)" if cfg.micro_batch is None else "(η/2)λ_max(A_m)"
        ax.plot(df["step"], y, color=color, lw=1.0, alpha=0.7)
        ax.scatter(df["step"][osc], y[osc], color=color, s=18, label=f"m={m}: {what}")
        ax.scatter(df["step"][~osc], y[~osc], facecolors="none", edgecolors=color, s=18)
    lo, hi = cl.EDGE_BAND
    ax.axhspan(lo, hi, color=COLORS["sam_edge"], alpha=0.08)
    ax.axhline(1.0, color=COLORS["theory"], lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("(η/2) λ_max(A_m)")
    ax.set_title("m-SAM's edge (filled: oscillating checks; hollow: not oscillating)")
    ax.legend(loc="best")


def plot_drift(ax: Axes, rs: cs.StochasticRunSet) -> None:
    """``cos(d + eta g, -grad lambda_1)`` over steps: full-batch SAM, and the full-batch rows of minibatch SAM."""
    for i, b in enumerate(sorted(rs.sam, reverse=True)):
        df = cs.full_batch(rs.sam[b])
        if "drift_cos" not in df:
            continue
        full = b == rs.n_train
        ax.plot(
            df["step"],
            df["drift_cos"],
            marker="o" if full else None,
            color=RHO_PALETTE[i % len(RHO_PALETTE)],
            lw=1.8 if full else 0.9,
            alpha=1.0 if full else 0.6,
            label=f"B={b}" + (" (full batch)" if full else ""),
        )
    ax.axhline(0.0, color=COLORS["theory"], lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cos(d̄ + ηḡ, −∇λ₁)")
    ax.set_title("two-step drift against the gradient of λ₁")
    ax.legend(loc="best", ncol=2)


def plot_identity(ax: Axes, rs: cs.StochasticRunSet) -> None:
    """The Monte Carlo mean of ``||g_B||^2`` (with two standard errors) against the identity, every noise check of
    every minibatch run: on the diagonal where the identity holds.
    """
    runs = [r for r in all_runs(rs) if r.config.batch_size is not None and r.config.noise_every]
    lo, hi = math.inf, 0.0
    for i, res in enumerate(runs):
        df = cs.full_batch(res).dropna(subset=["mc_sq_grad_norm"])
        if df.empty:
            continue
        x, y, se = df["expected_sq_grad_norm"], df["mc_sq_grad_norm"], df["mc_sq_grad_norm_se"]
        ax.errorbar(
            x,
            y,
            yerr=2 * se,
            fmt="o",
            ms=4,
            capsize=2,
            color=RHO_PALETTE[i % len(RHO_PALETTE)],
            label=run_label(res, rs.n_train),
        )
        lo, hi = min(lo, float(x.min()), float(y.min())), max(hi, float(x.max()), float(y.max()))
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], color=COLORS["theory"], lw=0.8, label="identity")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("‖g‖² + (N − B)/(B(N − 1)) tr Σ  (per-example gradients)")
    ax.set_ylabel("mean ‖g_B‖² over random batches")
    ax.set_title("the sampling identity at every noise check")
    ax.legend(loc="best")


def parameter_count(rs: cs.StochasticRunSet) -> int:
    """The number of parameters ``d`` of the runs' network (a random direction has ``|cos| ~ 1/sqrt(d)`` with any)."""
    from samedge_lib.engine.models import make_model

    cfg = rs.sam[rs.n_train].config
    return sum(p.numel() for p in make_model(cfg.task, seed=0, **cfg.model).parameters())


# ------------------------------------------------------------------------------------------------
# The chapter
# ------------------------------------------------------------------------------------------------
@dataclass
class StochasticChapter(Chapter):
    """Chapter 9 over its sweep: :meth:`run`, then the tables, the claims of :data:`cs.CLAIMS` and the figures.

    Glue keys: ``ch9_<claim>`` (a Markdown sentence), ``..._value`` and ``..._verdict``; ``ch9_dim`` (the network's
    parameter count) and ``ch9_random_cos`` (``1/sqrt(dim)``).
    """

    #: The predictions this chapter makes (asserted at the cpu preset); the others are reported with their verdicts.
    MADE: ClassVar[tuple[str, ...]] = (
        "identity",
        "minibatch_edge",
        "minibatch_edge_small",
        "edge_inflation",
        "msam_full_is_sam",
        "m_edge",
        "drift",
    )

    sweep: StochasticSweep
    runs: cs.StochasticRunSet | None = None
    evaluations: pd.DataFrame | None = field(default=None, repr=False)

    number = NUMBER
    made = MADE
    catalogue = cs.CLAIMS

    @classmethod
    def from_parameters(cls, preset: Any, **parameters: Any) -> StochasticChapter:
        """Validate the parameters (:meth:`StochasticSweep.from_parameters`), show the parameter box."""
        sweep = StochasticSweep.from_parameters(preset, **parameters)
        show_parameters(sweep.parameters)
        use_book_style()
        return cls(sweep)

    @property
    def preset(self) -> str:
        """The preset the chapter runs at."""
        return self.sweep.preset

    @property
    def runsets(self) -> list[cs.StochasticRunSet]:
        """The one run set the claims are evaluated on: this page's runs."""
        return [self.runs]

    def run(self, *, root: str | Path | None = None) -> cs.StochasticRunSet:
        """Run (or load) the sweep and keep its run set."""
        self.runs = self.sweep.run(root=root)
        return self.runs

    # -- tables and claims
    def setup_table(self) -> pd.DataFrame:
        """One row per run: what defines it and what it cost."""
        return setup_table(self.runs)

    def show_numbers(self) -> None:
        """The statistics the claims read, one column per run."""
        show_table(results_table(self.runs))

    def glue_key(self, claim: str, runset: str) -> str:
        """``ch9_<claim>``: the chapter has one run set."""
        return f"ch{self.number}_{claim}"

    def claims(self) -> pd.DataFrame:
        """The claims, glued, the network's parameter count (against which a random cosine is judged) and the
        thresholds the prose states (``ch9_large_batch``, ``ch9_oscillating``, ``ch9_noise_dominates``,
        ``ch9_small_alpha``, ``ch9_reach_pct``, ``ch9_edge_band``).
        """
        out = super().claims()
        dim = parameter_count(self.runs)
        glue_values({f"ch{self.number}_dim": dim, f"ch{self.number}_random_cos": dim**-0.5})
        glue_values(
            {
                f"ch{self.number}_{name}": value
                for name, value in {
                    "edge_band": cl.band_interval(),
                    "large_batch": cs.LARGE_BATCH,
                    "oscillating": cs.OSCILLATING,
                    "noise_dominates": cs.NOISE_DOMINATES,
                    "small_alpha": cs.SMALL_ALPHA,
                    "reach_pct": round(100 * REACH),
                }.items()
            }
        )
        return out

    def show_claims(self) -> None:
        """The claims table (untruncated) and the findings as a list, each with its source, verdict and evidence."""
        with pd.option_context("display.max_colwidth", None):
            super().show_claims()
        found = findings(self.evaluations, self.made)
        if found.empty:
            display(Markdown("*Every reported prediction holds on these runs.*"))
            return
        items = [
            f"* **{r['prediction']}** ({r['source']}) — *{r['verdict']}*: {r['evidence']}." for _, r in found.iterrows()
        ]
        display(Markdown("**Findings**\n\n" + "\n".join(items)))

    # -- figures
    def show_identity(self) -> None:
        """The sampling identity at every noise check."""
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        plot_identity(ax, self.runs)
        plt.show()

    def show_batch_size(self) -> None:
        """Which edge at each batch size and the edges against B; then the traces over steps."""
        fig, axes = plt.subplots(1, 2, figsize=(15, 5))
        plot_batch_size(axes, self.runs)
        plt.show()
        fig, axes = plt.subplots(1, 2, figsize=(15, 4))
        plot_batch_traces(axes, self.runs)
        plt.show()

    def show_m_sharpness(self) -> None:
        """m-SAM's edge over steps."""
        fig, ax = plt.subplots(figsize=(9, 4.5))
        plot_m_sharpness(ax, self.runs)
        plt.show()

    def show_drift(self) -> None:
        """The two-step drift against the gradient of the sharpness."""
        fig, ax = plt.subplots(figsize=(9, 4.5))
        plot_drift(ax, self.runs)
        plt.show()
