"""The stochastic-SAM chapter's predictions as claims: statistic, criterion and a verdict computed on its runs.

The chapter runs SAM at several batch sizes ``B`` (with SGD baselines) and m-SAM at several micro-batch sizes
``m`` on the full batch (:mod:`samedge_lib.core.stochastic` defines every quantity). Each prediction below is a
:class:`~samedge_lib.reading.claims.Claim` evaluated on a :class:`StochasticRunSet` with
:func:`samedge_lib.reading.claims.evaluate`; the chapter asserts those it makes with
:func:`samedge_lib.reading.claims.assert_claims` (``claims=CLAIMS`` of this module) and shows the others, with their
evidence, as findings. Verdicts and the words in their sentences are computed from the numbers, never typed.

Every statistic over "the checks after the transient" uses the book's rule (:func:`samedge_lib.record.results.
tracking_window`: from the later of the first check at 90 % of the edge and the middle of the run), applied to the
data the update steps on (the minibatch of a minibatch run, the full batch otherwise) unless a claim says "full
batch". The tolerances are this book's, stated with each constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from samedge_lib.core.stochastic import sampling_factor
from samedge_lib.reading.claims import EDGE_BAND, Claim, RunSet, Verdict, band_interval, fmt, offset_words
from samedge_lib.record.results import MIN_TRACKED, RunResult, measurements_on, tracking_window
from samedge_lib.theory.edges import collapse_variable, sam_edge

#: The sampling identity "holds": every Monte Carlo mean of ``||g_B||^2`` within this relative distance of it.
IDENTITY_TOL = 0.10

#: The ``B^(-1/4)`` law and the inflated edge "agree" with their measurement within these relative distances.
SCALING_TOL = 0.15
INFLATION_TOL = 0.10

#: The noise-dominated regime where the ``B^(-1/4)`` law applies: ``||g||^2`` below this fraction of the noise term
#: ``(N - B)/(B (N - 1)) tr Sigma``, and ``alpha_B = eta ||g_B||/(2 rho)`` below :data:`SMALL_ALPHA`.
NOISE_DOMINATES = 0.25
SMALL_ALPHA = 0.05

#: "Oscillating" checks: the cosine between the update about to be taken and the next one below this.
OSCILLATING = -0.5

#: The paper's minibatch measurement is tested at batch sizes of at least this many examples
#: (``minibatch_edge``), and separately below it, where the gradient noise is large (``minibatch_edge_small``).
LARGE_BATCH = 100

#: The drift descends the sharpness "in most checks": at least this share of checks with a positive cosine.
DRIFT_SHARE = 0.7


@dataclass(frozen=True)
class StochasticRunSet(RunSet):
    """The chapter's runs in one setting (:class:`~samedge_lib.reading.claims.RunSet`'s ``runs`` hold the full-batch GD
    and
    SAM runs, ``{0: GD, rho: SAM}``).

    Attributes:
        sam: SAM at radius ``main_rho`` by batch size (``n_train`` = the full batch).
        sgd: the SGD baselines by batch size.
        msam: m-SAM on the full batch by micro-batch size (``m = n_train`` is ``sam[n_train]``).
        n_train: the number of training examples ``N``.

    """

    sam: Mapping[int, RunResult] = field(default_factory=dict)
    sgd: Mapping[int, RunResult] = field(default_factory=dict)
    msam: Mapping[int, RunResult] = field(default_factory=dict)
    n_train: int = 0


def stepped(res: RunResult) -> pd.DataFrame:
    """A run's checks on the data its updates step on: the minibatch of a minibatch run, else the full batch."""
    return measurements_on(res, "minibatch" if res.config.batch_size is not None else "full")


def full_batch(res: RunResult) -> pd.DataFrame:
    """A run's checks on the full training batch."""
    return measurements_on(res, "full")


def _window_steps(res: RunResult) -> set[int]:
    """The steps after the transient, by the book's rule on the stepped data; none when fewer than
    :data:`~samedge_lib.record.results.MIN_TRACKED` (too few to say where the run sits) or when the run diverged.
    """
    steps = set(tracking_window(stepped(res))["step"].astype(int))
    return steps if len(steps) >= MIN_TRACKED and diverged(res) is None else set()


def diverged(res: RunResult) -> str | None:
    """``"diverged at step t"`` for a diverged run (its statistics say nothing about an edge), else ``None``."""
    if res.status.get("state") != "diverged":
        return None
    return f"diverged at step {res.status.get('step', '?')}"


def unavailable(res: RunResult) -> str:
    """Why a run has no statistic after the transient: it diverged, never reached its edge, or has too few checks."""
    why = diverged(res)
    if why:
        return why
    df = stepped(res)
    if len(tracking_window(df)) == 0:
        return "did not reach its edge"
    return f"fewer than {MIN_TRACKED} checks after the transient"


def _at_steps(df: pd.DataFrame, steps: set[int]) -> pd.DataFrame:
    return df[df["step"].astype(int).isin(steps)].reset_index(drop=True)


def _factor(values: list[float]) -> float:
    """The largest departure from 1 among ``values``, as a factor ``exp(max |log v|)``."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    return math.exp(max(abs(math.log(v)) for v in finite)) if finite else math.nan


def _combine(verdicts: list[Verdict]) -> Verdict:
    if not verdicts:
        return Verdict.NOT_MEASURED
    if Verdict.FAILS in verdicts:
        return Verdict.FAILS
    if Verdict.NOT_MEASURED in verdicts:
        return Verdict.NOT_MEASURED
    if Verdict.NOT_REACHED in verdicts:
        return Verdict.NOT_REACHED
    return Verdict.HOLDS


def _in(band: tuple[float, float], v: float) -> bool:
    return band[0] <= v <= band[1]


# ------------------------------------------------------------------------------------------------
# Per-run statistics (one place: the claims and the chapter's table read the same numbers)
# ------------------------------------------------------------------------------------------------
def batch_statistics(res: RunResult) -> dict[str, float]:
    """One run's numbers over the checks after the transient (NaN where they do not apply).

    ``hb_over_sb``: median ``||H_B||/S_B`` on the stepped data; ``lam_over_s``: median full-batch ``lambda_1/S(||g||)``;
    ``q``: median ``Q`` on the stepped data; ``q_full``: on the full batch; ``oscillating``: share of all checks with
    an oscillating update; ``edge_b``/``edge_full``: median minibatch and full-batch edges; ``inflation``: median
    ``S_B/S`` at the same checks; ``inflation_predicted``: median of ``S(sqrt(E||g_B||^2))/S(||g||)`` over the noise
    checks after the transient; ``identity_dev``: largest ``|MC mean/identity - 1|`` over all noise checks;
    ``grad_sq_over_noise``: median ``||g||^2/((N-B)/(B(N-1)) tr Sigma)``; ``alpha_b``: median ``alpha`` on the
    stepped data; ``trace_h``, ``lambda_1``: full batch at the last noise check; ``n_window``: checks after the
    transient.
    """
    cfg = res.config
    st_df, fu = stepped(res), full_batch(res)
    win_steps = _window_steps(res)
    win, wfu = _at_steps(st_df, win_steps), _at_steps(fu, win_steps)
    nan = math.nan
    out: dict[str, float] = {"n_window": float(len(win))}
    out["hb_over_sb"] = float((win["lambda_1"] / win["edge"]).median()) if len(win) else nan
    out["lam_over_s"] = float((wfu["lambda_1"] / wfu["edge"]).median()) if len(wfu) else nan
    out["q"] = float(win["q_sam"].median()) if "q_sam" in win and len(win) else nan
    out["q_full"] = float(wfu["q_sam"].median()) if "q_sam" in wfu and len(wfu) else nan
    out["oscillating"] = float((st_df["osc_cos"] < OSCILLATING).mean()) if "osc_cos" in st_df else nan
    out["edge_b"] = float(win["edge"].median()) if len(win) else nan
    out["edge_full"] = float(wfu["edge"].median()) if len(wfu) else nan
    both = win.merge(wfu, on="step", suffixes=("_b", "_f"))
    out["inflation"] = float((both["edge_b"] / both["edge_f"]).median()) if cfg.batch_size and len(both) else nan
    out["alpha_b"] = float(win["alpha"].median()) if len(win) else nan
    noise = fu.dropna(subset=["trace_sigma"]) if "trace_sigma" in fu and not diverged(res) else fu.iloc[0:0]
    dev = (noise["mc_sq_grad_norm"] / noise["expected_sq_grad_norm"] - 1).abs().dropna()
    out["identity_dev"] = float(dev.max()) if len(dev) else nan
    wnoise = _at_steps(noise, win_steps)
    pos = wnoise[wnoise["noise_sq"] > 0]
    out["grad_sq_over_noise"] = float((pos["grad_norm"] ** 2 / pos["noise_sq"]).median()) if len(pos) else nan
    if cfg.rho > 0 and len(wnoise):
        pred = sam_edge(
            eta=cfg.eta, rho=cfg.rho, grad_norm=np.sqrt(wnoise["expected_sq_grad_norm"].to_numpy())
        ) / sam_edge(eta=cfg.eta, rho=cfg.rho, grad_norm=wnoise["grad_norm"].to_numpy())
        out["inflation_predicted"] = float(np.median(pred)) if cfg.batch_size else nan
    else:
        out["inflation_predicted"] = nan
    out["trace_h"] = float(noise["trace_h"].iloc[-1]) if len(noise) else nan
    out["lambda_1_at_trace"] = float(noise["lambda_1"].iloc[-1]) if len(noise) else nan
    out["trace_step"] = float(noise["step"].iloc[-1]) if len(noise) else nan
    return out


def m_edge_statistics(res: RunResult) -> dict[str, float]:
    """The m-edge of a full-batch run: median ``(eta/2) lambda_max(A_m)`` over the oscillating checks.

    For m-SAM it is measured (Lanczos on :class:`~samedge_lib.core.stochastic.MSamOperator`); for SAM (``m = N``,
    ``A_1 = H + rho H^2/||g||``) it is exactly the collapse variable ``Lambda`` of the measured ``lambda_1, ||g||``.
    Also: the share of oscillating checks, and the median over all checks.
    """
    cfg = res.config
    df = stepped(res)
    if df.empty or "osc_cos" not in df:
        return {"median": math.nan, "median_all": math.nan, "oscillating": math.nan, "n": 0.0}
    if cfg.micro_batch is not None:
        m_edge = cfg.eta / 2 * df["msam_lambda"]
    else:
        m_edge = pd.Series(collapse_variable(eta=cfg.eta, rho=cfg.rho, grad_norm=df["grad_norm"], lam1=df["lambda_1"]))
    osc = (df["osc_cos"] < OSCILLATING).to_numpy()
    return {
        "median": float(np.median(m_edge[osc])) if osc.any() else math.nan,
        "median_all": float(m_edge.median()),
        "oscillating": float(osc.mean()),
        "n": float(osc.sum()),
    }


# ------------------------------------------------------------------------------------------------
# E4a: the batch size
# ------------------------------------------------------------------------------------------------
def _minibatches(rs: StochasticRunSet) -> dict[int, RunResult]:
    return {b: r for b, r in sorted(rs.sam.items()) if b < rs.n_train}


def _identity(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    runs = {**{("SAM", b): r for b, r in _minibatches(rs).items()}}
    runs.update({("SGD", b): r for b, r in rs.sgd.items() if b < rs.n_train})
    devs = {key: batch_statistics(r)["identity_dev"] for key, r in runs.items()}
    devs = {k: v for k, v in devs.items() if math.isfinite(v)}
    if not devs:
        return Verdict.NOT_MEASURED, math.nan, "no minibatch run measured its gradient noise"
    worst = max(devs.values())
    parts = "; ".join(f"{name} B = {b}: {100 * v:.1f} %" for (name, b), v in sorted(devs.items()))
    detail = f"largest |Monte Carlo mean of ‖g_B‖² / identity − 1| per run: {parts}"
    return (Verdict.HOLDS if worst <= IDENTITY_TOL else Verdict.FAILS), worst, detail


def _edge_tracking(rs: StochasticRunSet, keep: Callable[[int], bool]) -> tuple[Verdict, float, str]:
    runs = {b: r for b, r in sorted(rs.sam.items()) if keep(b)}
    if not runs:
        return Verdict.NOT_MEASURED, math.nan, "no SAM run at these batch sizes"
    verdicts, values, parts = [], [], []
    for b, r in runs.items():
        s = batch_statistics(r)
        v = s["hb_over_sb"]
        if not math.isfinite(v):
            verdicts.append(Verdict.NOT_REACHED)
            parts.append(f"B = {b}: {unavailable(r)}")
            continue
        values.append(v)
        verdicts.append(Verdict.HOLDS if _in(EDGE_BAND, v) else Verdict.FAILS)
        parts.append(f"B = {b}: {v:.3f} ({offset_words(v)})")
    return _combine(verdicts), _factor(values), "median ‖H_B‖/S_B after the transient: " + "; ".join(parts)


def _minibatch_edge(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    return _edge_tracking(rs, lambda b: b >= LARGE_BATCH)


def _minibatch_edge_small(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    return _edge_tracking(rs, lambda b: b < LARGE_BATCH)


def _q_at_one(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    if not rs.sam:
        return Verdict.NOT_MEASURED, math.nan, "no SAM runs"
    verdicts, values, parts = [], [], []
    for b, r in sorted(rs.sam.items()):
        q = batch_statistics(r)["q"]
        if not math.isfinite(q):
            missing = "q_sam" not in stepped(r)
            verdicts.append(Verdict.NOT_MEASURED if missing else Verdict.NOT_REACHED)
            parts.append(f"B = {b}: " + ("Q was not measured" if missing else unavailable(r)))
            continue
        values.append(q)
        verdicts.append(Verdict.HOLDS if _in(EDGE_BAND, q) else Verdict.FAILS)
        parts.append(f"B = {b}: {q:.3f}")
    return _combine(verdicts), _factor(values), "median Q_B after the transient: " + "; ".join(parts)


def _full_edge_flat(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    ratios = {b: batch_statistics(r)["lam_over_s"] for b, r in sorted(rs.sam.items(), reverse=True)}
    missing = "; ".join(f"B = {b}: {unavailable(rs.sam[b])}" for b, v in ratios.items() if not math.isfinite(v))
    ratios = {b: v for b, v in ratios.items() if math.isfinite(v)}
    if missing:
        return Verdict.NOT_REACHED, math.nan, missing
    if len(ratios) < 2:
        return Verdict.NOT_MEASURED, math.nan, "needs SAM at two batch sizes or more"
    sizes = list(ratios)
    ups = [ratios[small] / ratios[large] for large, small in zip(sizes[:-1], sizes[1:], strict=True)]
    worst = max(ups)
    parts = "; ".join(f"B = {b}: {v:.3f}" for b, v in ratios.items())
    detail = f"median full-batch λ₁/S(‖g‖) after the transient, from the largest batch down: {parts}"
    return (Verdict.HOLDS if worst <= 1 else Verdict.FAILS), worst, detail


def _noise_scaling(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    mini = _minibatches(rs)
    if len(mini) < 2:
        return Verdict.NOT_MEASURED, math.nan, "needs SAM at two minibatch sizes"
    small, large = sorted(mini)[:2]
    s_small, s_large = batch_statistics(mini[small]), batch_statistics(mini[large])
    for b, s in ((small, s_small), (large, s_large)):
        if not math.isfinite(s["edge_b"]):
            return Verdict.NOT_REACHED, math.nan, f"B = {b}: {unavailable(mini[b])}"
    predicted = (sampling_factor(rs.n_train, small) / sampling_factor(rs.n_train, large)) ** 0.25
    measured = s_small["edge_b"] / s_large["edge_b"]
    detail = (
        f"S_{small}/S_{large} = {fmt(measured)} measured (medians after the transient) against "
        f"{predicted:.3f} predicted"
    )
    regime = [
        f"B = {b}: ‖g‖²/noise = {fmt(s['grad_sq_over_noise'])}, α_B = {fmt(s['alpha_b'])}"
        for b, s in ((small, s_small), (large, s_large))
    ]
    inside = all(s["grad_sq_over_noise"] < NOISE_DOMINATES and s["alpha_b"] < SMALL_ALPHA for s in (s_small, s_large))
    if not inside:
        return (
            Verdict.NOT_REACHED,
            measured / predicted,
            f"outside the noise-dominated regime ({'; '.join(regime)}); {detail}",
        )
    ok = abs(measured / predicted - 1) <= SCALING_TOL
    return (Verdict.HOLDS if ok else Verdict.FAILS), measured / predicted, f"{detail} ({'; '.join(regime)})"


def _edge_inflation(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    mini = _minibatches(rs)
    if not mini:
        return Verdict.NOT_MEASURED, math.nan, "no minibatch SAM run"
    verdicts, values, parts = [], [], []
    for b, r in mini.items():
        s = batch_statistics(r)
        if not (math.isfinite(s["inflation"]) and math.isfinite(s["inflation_predicted"])):
            verdicts.append(Verdict.NOT_REACHED if math.isnan(s["hb_over_sb"]) else Verdict.NOT_MEASURED)
            parts.append(f"B = {b}: " + (unavailable(r) if math.isnan(s["hb_over_sb"]) else "no noise check after it"))
            continue
        rel = s["inflation"] / s["inflation_predicted"]
        values.append(rel)
        verdicts.append(Verdict.HOLDS if abs(rel - 1) <= INFLATION_TOL else Verdict.FAILS)
        parts.append(f"B = {b}: ×{s['inflation']:.3f} measured, ×{s['inflation_predicted']:.3f} predicted")
    return _combine(verdicts), _factor(values), "median S_B/S after the transient: " + "; ".join(parts)


def _q_beats_hb(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    mini = _minibatches(rs)
    if not mini:
        return Verdict.NOT_MEASURED, math.nan, "no minibatch SAM run"
    b = min(mini)
    s = batch_statistics(mini[b])
    q, hb = s["q"], s["hb_over_sb"]
    if not (math.isfinite(q) and math.isfinite(hb)):
        return Verdict.NOT_REACHED, math.nan, f"B = {b}: {unavailable(mini[b])}"
    dq, dh = abs(math.log(q)), abs(math.log(hb))
    detail = (
        f"at B = {b}: median Q_B = {q:.3f} ({offset_words(q, '1')}), "
        f"median ‖H_B‖/S_B = {hb:.3f} ({offset_words(hb, '1')})"
    )
    return (Verdict.HOLDS if dq < dh else Verdict.FAILS), math.exp(dq - dh), detail


def _trace_vs_lambda(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    common = sorted(set(rs.sam) & set(rs.sgd))
    if len(common) < 2 or rs.n_train not in common:
        return Verdict.NOT_MEASURED, math.nan, "needs SAM and SGD at the full batch and at a minibatch size"
    small = common[0]
    for run in (rs.sam[small], rs.sgd[small], rs.sam[rs.n_train], rs.sgd[rs.n_train]):
        if diverged(run):
            return Verdict.NOT_REACHED, math.nan, f"{run.config.run_name()} {diverged(run)}"
    ratio, parts = {}, []
    for b in (small, rs.n_train):
        sam, sgd = batch_statistics(rs.sam[b]), batch_statistics(rs.sgd[b])
        tr = sam["trace_h"] / sgd["trace_h"]
        lam = sam["lambda_1_at_trace"] / sgd["lambda_1_at_trace"]
        ratio[b] = tr / lam
        parts.append(f"B = {b}: tr H ×{fmt(tr)}, λ₁ ×{fmt(lam)} (SAM against SGD, step {int(sam['trace_step'])})")
    if not all(math.isfinite(v) for v in ratio.values()):
        return Verdict.NOT_MEASURED, math.nan, "; ".join(parts)
    ok = ratio[small] < 1 < ratio[rs.n_train]
    return (Verdict.HOLDS if ok else Verdict.FAILS), ratio[small], "; ".join(parts)


def _sgd_batch_sharpness(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    if not rs.sgd:
        return Verdict.NOT_MEASURED, math.nan, "no SGD runs"
    verdicts, values, parts = [], [], []
    for b, r in sorted(rs.sgd.items()):
        df = stepped(r)
        win = _at_steps(df, _window_steps(r))
        if len(win) == 0 or "q_sam" not in win:
            verdicts.append(Verdict.NOT_REACHED)
            parts.append(f"B = {b}: {unavailable(r)}")
            continue
        q = float(win["q_sam"].median())
        values.append(q)
        verdicts.append(Verdict.HOLDS if _in(EDGE_BAND, q) else Verdict.FAILS)
        lam = float((win["lambda_1"] / win["edge"]).median())
        parts.append(f"B = {b}: ηgᵀH_Bg/(2‖g‖²) = {q:.3f}, η‖H_B‖/2 = {lam:.3f}")
    return _combine(verdicts), _factor(values), "medians after the transient: " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# E4b: m-sharpness; E5a: the drift
# ------------------------------------------------------------------------------------------------
def _m_edge_verdict(res: RunResult) -> tuple[Verdict, float, str]:
    if diverged(res):
        return Verdict.NOT_REACHED, math.nan, diverged(res) or ""
    s = m_edge_statistics(res)
    if s["n"] == 0:
        return Verdict.NOT_REACHED, math.nan, f"no oscillating check ({100 * s['oscillating']:.0f} % oscillating)"
    v = s["median"]
    detail = f"{v:.3f} over {int(s['n'])} oscillating checks ({100 * (1 - s['oscillating']):.0f} % not oscillating)"
    return (Verdict.HOLDS if _in(EDGE_BAND, v) else Verdict.FAILS), v, detail


def _msam_full_is_sam(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    if rs.n_train not in rs.sam:
        return Verdict.NOT_MEASURED, math.nan, "no full-batch SAM run"
    verdict, value, detail = _m_edge_verdict(rs.sam[rs.n_train])
    return verdict, value, f"m = {rs.n_train} (SAM): median Λ = (η/2)λ_max(A₁) {detail}"


def _m_edge(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    runs = {m: r for m, r in sorted(rs.msam.items()) if m < rs.n_train}
    if not runs:
        return Verdict.NOT_MEASURED, math.nan, "no m-SAM run"
    per = {m: _m_edge_verdict(r) for m, r in runs.items()}
    values = [v for _, v, _ in per.values() if math.isfinite(v)]
    detail = "median (η/2)λ_max(A_m): " + "; ".join(f"m = {m}: {d}" for m, (_, _, d) in per.items())
    return _combine([v for v, _, _ in per.values()]), _factor(values), detail


def drift_statistics(res: RunResult) -> dict[str, float]:
    """The share of full-batch checks whose two-step drift has a positive cosine with ``-grad lambda_1``; the median."""
    df = full_batch(res)
    cos = df["drift_cos"].dropna() if "drift_cos" in df else pd.Series(dtype=float)
    if cos.empty:
        return {"share": math.nan, "median": math.nan, "n": 0.0}
    return {"share": float((cos > 0).mean()), "median": float(cos.median()), "n": float(len(cos))}


def _drift(rs: RunSet) -> tuple[Verdict, float, str]:
    assert isinstance(rs, StochasticRunSet)
    if rs.n_train not in rs.sam:
        return Verdict.NOT_MEASURED, math.nan, "no full-batch SAM run"
    if diverged(rs.sam[rs.n_train]):
        return Verdict.NOT_REACHED, math.nan, f"full-batch SAM {diverged(rs.sam[rs.n_train])}"
    s = drift_statistics(rs.sam[rs.n_train])
    if s["n"] == 0:
        return Verdict.NOT_MEASURED, math.nan, "the drift was not measured"
    detail = (
        f"cos(d̄ + ηḡ, −∇λ₁) > 0 at {100 * s['share']:.0f} % of {int(s['n'])} checks of full-batch SAM "
        f"(median cosine {s['median']:.3f})"
    )
    return (Verdict.HOLDS if s["share"] >= DRIFT_SHARE else Verdict.FAILS), s["share"], detail


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "identity",
        "The sampling identity E‖g_B‖² = ‖g‖² + (N − B)/(B(N − 1)) tr Σ holds on the network.",
        "largest |Monte Carlo mean of ‖g_B‖² over random batches / identity − 1|, every minibatch run and noise check",
        f"≤ {100 * IDENTITY_TOL:g} %",
        "this book (exact for sampling without replacement)",
        _identity,
        subject="The sampling identity",
    ),
    Claim(
        "minibatch_edge",
        f"At B ≥ {LARGE_BATCH} the stepped minibatch's sharpness sits at the minibatch SAM-edge S_B.",
        f"median ‖H_B‖/S_B after the transient, every SAM run with B ≥ {LARGE_BATCH} "
        "(value: the largest offset, as a factor)",
        f"in {band_interval()} at every such B",
        "the paper's Transformer measurement (Section 6), at several batch sizes",
        _minibatch_edge,
        subject=f"‖H_B‖ at S_B for B ≥ {LARGE_BATCH}",
    ),
    Claim(
        "minibatch_edge_small",
        f"Also at B < {LARGE_BATCH}, where the gradient noise is large, ‖H_B‖ sits at S_B.",
        f"median ‖H_B‖/S_B after the transient, every SAM run with B < {LARGE_BATCH}",
        f"in {band_interval()}; a linear-regression toy fails it with label noise",
        "this book",
        _minibatch_edge_small,
        subject=f"‖H_B‖ at S_B for B < {LARGE_BATCH}",
    ),
    Claim(
        "q_at_one",
        "SAM's batch sharpness Q_B sits at 1 at every batch size.",
        "median Q_B after the transient, every SAM run (value: the largest offset, as a factor)",
        f"in {band_interval()} at every B",
        "this book's conjecture, after Andreyev & Beneventano's batch sharpness",
        _q_at_one,
        subject="Q_B at 1 at every batch size",
    ),
    Claim(
        "full_edge_flat",
        "The full-batch sharpness relative to the full-batch SAM-edge does not rise as the batch shrinks.",
        "largest rise of the median full-batch λ₁/S(‖g‖) from one batch size to the next smaller",
        "≤ 1 (no rise)",
        "this book's conjecture (with the previous claim)",
        _full_edge_flat,
        subject="The full-batch λ₁/S(‖g‖) staying level or falling as the batch shrinks",
    ),
    Claim(
        "noise_scaling",
        "Where gradient noise dominates, the minibatch edge grows like B^(−1/4).",
        "S_B/S_B′ at the two smallest minibatch sizes against ((N − B)B′(N − 1)/((N − B′)B(N − 1)))^(1/4)",
        f"within {100 * SCALING_TOL:g} %; applies where ‖g‖² < {NOISE_DOMINATES} × noise and α_B < {SMALL_ALPHA}",
        "this book (the α → 0 limit of the SAM-edge)",
        _noise_scaling,
        subject="The B^(−1/4) law",
    ),
    Claim(
        "edge_inflation",
        "The minibatch edge is inflated over the full-batch edge as the identity predicts.",
        "median S_B/S after the transient against the median S(√E‖g_B‖²)/S(‖g‖) at the noise checks",
        f"within {100 * INFLATION_TOL:g} % at every minibatch size",
        "this book",
        _edge_inflation,
        subject="The predicted inflation of the minibatch edge",
    ),
    Claim(
        "q_beats_hb",
        "At the smallest batch, Q_B is closer to 1 than ‖H_B‖/S_B.",
        "|log median Q_B| against |log median ‖H_B‖/S_B| at the smallest B (value: their ratio as a factor)",
        "< 1",
        "expected from Agarwala & Pennington (2024)",
        _q_beats_hb,
        subject="Q_B closer to 1 than ‖H_B‖/S_B at the smallest batch",
    ),
    Claim(
        "trace_vs_lambda",
        "Small-batch SAM flattens the trace more than λ₁; full-batch SAM the reverse.",
        "(tr H ratio)/(λ₁ ratio), SAM against SGD at the last noise check, at the smallest B (and the full batch)",
        "< 1 at the smallest B and > 1 at the full batch",
        "Wen, Ma & Li (2022), as this book operationalises it",
        _trace_vs_lambda,
        subject="Flattening of the trace at the smallest batch and of λ₁ at the full batch",
    ),
    Claim(
        "sgd_batch_sharpness",
        "SGD's batch sharpness sits at 2/η at every batch size.",
        "median η gᵀH_Bg/(2‖g‖²) of SGD after the transient",
        f"in {band_interval()} at every B",
        "Andreyev & Beneventano (2024)",
        _sgd_batch_sharpness,
        subject="SGD's batch sharpness at 2/η",
    ),
    Claim(
        "msam_full_is_sam",
        "With one micro-batch (m = N), the m-edge is SAM's edge: Λ = (η/2)λ_max(A₁) sits at 1.",
        "median Λ over the oscillating checks of full-batch SAM",
        f"in {band_interval()}",
        "this book (A₁ = H + ρH²/‖g‖)",
        _msam_full_is_sam,
        subject="Λ at 1 for m-SAM with one micro-batch",
    ),
    Claim(
        "m_edge",
        "m-SAM sits at its m-edge (η/2)λ_max(A_m) = 1 while it oscillates.",
        f"median (η/2)λ_max(A_m) over the checks with cos(Δw_t, Δw_t+1) < {OSCILLATING}, every m < N",
        f"in {band_interval()} at every m",
        "this book (frozen-norm stability of Foret et al.'s m-SAM)",
        _m_edge,
        subject="m-SAM at its m-edge",
    ),
    Claim(
        "drift",
        "Over two steps SAM drifts down the gradient of λ₁.",
        "share of checks of full-batch SAM with cos(d̄ + ηḡ, −∇λ₁) > 0",
        f"≥ {100 * DRIFT_SHARE:g} %",
        "Bartlett, Long & Bousquet (2023)",
        _drift,
        subject="The drift down the gradient of λ₁",
    ),
)

CLAIM_KEYS = tuple(c.key for c in CLAIMS)
