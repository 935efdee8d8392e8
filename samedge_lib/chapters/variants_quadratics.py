"""The quadratic checks of the chapters beyond the paper: where the truth is known, every formula is run.

Each function runs the update rules that train the networks (:mod:`samedge_lib.core.quadratic`) on quadratics in
float64, asserts what the chapter states and returns a :class:`QuadraticCheck`: the
table or traces its figure reads (:mod:`samedge_lib.chapters.variants_figures`) and the numbers the prose glues.

Chapter 7 ("SAM's variants"): :func:`usam_step`, :func:`momentum_thresholds`, :func:`usam_tuning`,
:func:`momentum_cycles`, :func:`quadratic_switch`. Chapter 8 ("The phase diagram"): :func:`phase_cycles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from samedge_lib.core import quadratic
from samedge_lib.theory import edges

#: The step size and USAM radius of chapter 7's quadratics.
ETA_Q, R_Q = 0.1, 0.05

#: The momenta of chapter 7's threshold scan.
BETAS = np.array([0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])


@dataclass(frozen=True)
class QuadraticCheck:
    """What a quadratic check leaves: the data its figure reads and the numbers its prose glues (by glue key)."""

    data: dict[str, Any]
    glued: dict[str, Any] = field(default_factory=dict)


#: The quadratic checks' column names as the tables show them.
READABLE = {
    "|lambda1/edge - 1|": "|λ₁/edge − 1|",
    "||c1|/amplitude - 1|": "||c₁|/amplitude − 1|",
    "lambda1 / S(eta, rho, ||g||)": "λ₁/S(η, ρ, ‖g‖)",
    "beta": "β",
    "eta": "η",
    "y = eta lambda1/2": "y = ηλ₁/2",
    "rho": "ρ",
    "alpha at the cycle": "α at the cycle",
    "y^2/(1 - y)": "y²/(1 − y)",
}


def one_words(gap: float) -> str:
    """How close a ratio is to 1, in words, from ``gap = |ratio - 1|``: ``"exactly 1 in float64"`` where the
    difference is zero (a formatted ``0e+00`` says nothing), else ``"within 3.2e-12 of 1"``.
    """
    return "exactly 1 in float64" if gap == 0 else f"within {gap:.1e} of 1"


def to_words(err: float) -> str:
    """An agreement as prose states it: ``"to 3e-15"``, or ``"exactly (a difference of 0 in float64)"``."""
    return "exactly (a difference of 0 in float64)" if err == 0 else f"to {err:.0e}"


def _edge_at(eta: float, r: float, beta: float, nesterov: bool) -> float:
    """USAM's edge with momentum ``beta`` (the momentum-free one at ``beta = 0``)."""
    return (
        float(edges.momentum_usam_edge(eta=eta, r=r, beta=beta, nesterov=nesterov))
        if beta > 0
        else float(edges.usam_edge(eta=eta, r=r))
    )


def usam_step(seed: int) -> QuadraticCheck:
    """One USAM step on a 200-dimensional quadratic with eigenvalues of both signs: the multipliers and stable set."""
    E_UQ = float(edges.usam_edge(eta=ETA_Q, r=R_Q))
    LO_Q, HI_Q = edges.usam_negative_window(eta=ETA_Q, r=R_Q)
    rng_q = np.random.default_rng(seed + 7)
    lam_q = np.concatenate([rng_q.uniform(1.3 * LO_Q, 0.0, 100), rng_q.uniform(0.0, 1.3 * E_UQ, 100)])
    quad = quadratic.Quadratic(lam_q, seed=seed + 7, w_star=rng_q.normal(size=lam_q.size))
    w0 = quad.w_star + torch.as_tensor(rng_q.normal(scale=1e-3, size=lam_q.size))
    one = quadratic.variant_run(quad, w0, ETA_Q, R_Q, 1, normalized=False)
    obs = one.multipliers()[0]
    pred_err = float(np.max(np.abs(obs - edges.usam_multiplier(lam=lam_q, eta=ETA_Q, r=R_Q))))
    stable_pred = ((lam_q > 0) & (lam_q < E_UQ)) | ((lam_q > LO_Q) & (lam_q < HI_Q))
    n_agree = int(np.sum((np.abs(obs) < 1) == stable_pred))
    assert pred_err < 1e-9 and n_agree == lam_q.size
    glued = {
        "ch7_usam_mult_err": float(pred_err),
        "ch7_usam_agree": f"{n_agree} of {lam_q.size}",
        "ch7_usam_neg_shrunk": int(np.sum((np.abs(obs) < 1) & (lam_q < 0))),
    }
    return QuadraticCheck({"lam": lam_q, "obs": obs, "edge": E_UQ, "window": (LO_Q, HI_Q)}, glued)


def momentum_thresholds() -> QuadraticCheck:
    """Observed stability thresholds of GD/USAM with heavy-ball and Nesterov momentum against the derived edges."""
    curv = np.geomspace(0.8 / ETA_Q, 4.2 / ETA_Q, 801)
    rows = []
    for nesterov in (False, True):
        betas = BETAS[1:] if nesterov else BETAS
        for r_val in (0.0, R_Q):
            found = quadratic.linear_thresholds(curv, ETA_Q, r_val, betas, nesterov, steps=2500)
            for _, row in found.iterrows():
                b = row["beta"]
                pred = _edge_at(ETA_Q, r_val, b, nesterov)
                rows.append(
                    {
                        "rule": ("Nesterov" if nesterov else "heavy ball") + (", USAM" if r_val else ", GD"),
                        "beta": b,
                        "observed from": row["lower"],
                        "observed to": row["upper"],
                        "predicted edge": pred,
                        "inside": bool(row["lower"] < pred <= row["upper"]),
                    }
                )
    thr = pd.DataFrame(rows)
    glued = {
        "ch7_thr_n": len(thr),
        "ch7_thr_inside": int(thr["inside"].sum()),
        "ch7_thr_spacing": float(np.max(curv[1:] / curv[:-1]) - 1),
    }
    assert thr["inside"].all(), thr[~thr["inside"]]
    return QuadraticCheck({"table": thr}, glued)


def momentum_edge_curve(rule: str, betas: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The derived edge of a threshold-scan ``rule`` (``"Nesterov, USAM"``, ...) over ``betas`` (Nesterov: > 0)."""
    nes, r_val = rule.startswith("Nesterov"), (R_Q if "USAM" in rule else 0.0)
    fb = betas[betas > 0] if nes else betas
    return fb, [_edge_at(ETA_Q, r_val, b, nes) for b in fb]


def usam_tuning() -> QuadraticCheck:
    """Long USAM and SAM runs with ``lambda_1`` 1 % below and above ``E_U``: USAM has a hard threshold, SAM tunes."""
    E_UQ = float(edges.usam_edge(eta=ETA_Q, r=R_Q))
    runs_q = {}
    for factor in (0.99, 1.01):
        lam1 = factor * E_UQ
        qd = quadratic.Quadratic([lam1, 0.4 * lam1])
        runs_q[("USAM", factor)] = quadratic.variant_run(qd, [1e-3, 1e-3], ETA_Q, R_Q, 1500, normalized=False)
        runs_q[("SAM", factor)] = quadratic.variant_run(qd, [1e-3, 1e-3], ETA_Q, R_Q, 1500)
    usam_up = abs(runs_q[("USAM", 1.01)].components[-1, 0]) / 1e-3
    usam_down = abs(runs_q[("USAM", 0.99)].components[-1, 0]) / 1e-3
    sam_gap = max(abs(runs_q[("SAM", f)].frame()["lambda1_over_edge"].iloc[-1] - 1) for f in (0.99, 1.01))
    traces = {key: np.abs(run.components[:, 0]) for key, run in runs_q.items()}
    glued = {
        "ch7_usam_up": float(usam_up),
        "ch7_usam_down": float(usam_down),
        "ch7_sam_gap": float(sam_gap),
        "ch7_sam_gap_words": one_words(float(sam_gap)),
    }
    assert usam_up > 1e3 and usam_down < 1e-3 and sam_gap < 1e-8
    return QuadraticCheck({"traces": traces}, glued)


def momentum_cycles(seed: int) -> QuadraticCheck:
    """SAM with heavy-ball and Nesterov momentum on random quadratics: the final orbit against the momentum edge."""
    rows = []
    for k, (b, nes) in enumerate([(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]):
        rng_k = np.random.default_rng(seed + 200 + k)
        eta_k = (
            0.1 if b == 0 else float(0.1 / edges.effective_eta(eta=1.0, beta=b, nesterov=nes))
        )  # eta_eff = 0.1 in every run
        lam_k = np.append(rng_k.uniform(0.05, 0.5, 49), 0.6) * 2 / 0.1  # eta_eff lambda1 = 1.2
        qk = quadratic.Quadratic(lam_k, seed=seed + 200 + k, w_star=rng_k.normal(size=50))
        run = quadratic.variant_run(
            qk, qk.w_star + torch.as_tensor(rng_k.normal(size=50)), eta_k, 0.05, 1000, beta=b, nesterov=nes
        )
        top = int(np.argmax(lam_k))
        lam1 = float(lam_k[top])
        amp = (
            float(edges.momentum_two_cycle_amplitude(lam1=lam1, eta=eta_k, rho=0.05, beta=b, nesterov=nes))
            if b > 0
            else float(edges.two_cycle_amplitude(lam1=lam1, eta=eta_k, rho=0.05))
        )
        rows.append(
            {
                "rule": "SAM" if b == 0 else ("SAM + Nesterov" if nes else "SAM + heavy ball"),
                "beta": b,
                "eta": eta_k,
                "|lambda1/edge - 1|": abs(lam1 / run.sam_edge[-1] - 1),
                "||c1|/amplitude - 1|": abs(abs(run.components[-1, top]) / amp - 1),
                "lambda1 / S(eta, rho, ||g||)": lam1
                / float(edges.sam_edge(grad_norm=run.grad_norm[-1], eta=eta_k, rho=0.05)),
            }
        )
    cyc = pd.DataFrame(rows)
    mom = cyc[cyc["beta"] > 0]
    naive = "lambda1 / S(eta, rho, ||g||)"
    glued = {
        "ch7_cycle_err": float(max(cyc["|lambda1/edge - 1|"].max(), cyc["||c1|/amplitude - 1|"].max())),
        "ch7_cycle_err_words": to_words(float(max(cyc["|lambda1/edge - 1|"].max(), cyc["||c1|/amplitude - 1|"].max()))),
        "ch7_naive_hb": float(mom[mom["rule"] == "SAM + heavy ball"][naive].min()),
        "ch7_naive_n": float(mom[mom["rule"] == "SAM + Nesterov"][naive].max()),
    }
    assert (cyc["|lambda1/edge - 1|"] < 1e-8).all() and (cyc["||c1|/amplitude - 1|"] < 1e-8).all()
    return QuadraticCheck({"table": cyc}, glued)


def quadratic_switch() -> QuadraticCheck:
    """GD for 300 steps at ``eta lambda_1 = 2``, then SAM: the first SAM step multiplies by ``-(1 + 2/alpha)``."""
    ETA_S, RHO_S = 0.2, 0.01
    qs = quadratic.Quadratic([2 / ETA_S, 1.0, 0.3])
    sw = quadratic.variant_run(qs, [0.05, 0.3, -0.2], ETA_S, RHO_S, 400, sam_start=300)
    mult = sw.multipliers()[:, 0]
    g_switch = sw.grad_norm[300]
    alpha_switch = float(edges.alpha(grad_norm=g_switch, eta=ETA_S, rho=RHO_S))
    first_err = abs(-mult[300] / float(edges.switch_growth(alpha_switch)) - 1)
    frame = sw.frame()
    glued = {
        "ch7_switch_alpha_q": float(alpha_switch),
        "ch7_switch_growth_q": float(edges.switch_growth(alpha_switch)),
        "ch7_switch_err_q": float(first_err),
        "ch7_switch_err_q_words": to_words(float(first_err)),
        "ch7_switch_end_q": float(abs(frame["lambda1_over_edge"].iloc[-1] - 1)),
        "ch7_switch_end_q_words": one_words(float(abs(frame["lambda1_over_edge"].iloc[-1] - 1))),
    }
    assert abs(mult[299] + 1) < 1e-12 and first_err < 1e-9
    return QuadraticCheck({"top": np.abs(sw.components[:, 0]), "frame": frame, "start": 300}, glued)


def phase_cycles() -> QuadraticCheck:
    """SAM's 2-cycles on two-dimensional quadratics with ``eta lambda_1/2 = y``: their ``alpha`` is ``y^2/(1-y)``."""
    rows = []
    for k, y_target in enumerate((0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)):
        eta_q, rho_q = 0.1, 0.02 * (k + 1)
        lam1_q = 2 * y_target / eta_q
        qd = quadratic.Quadratic([lam1_q, lam1_q / 3])
        run = quadratic.sam_run(qd, [0.7, -0.4], eta_q, rho_q, 1000)
        alpha_end = float(edges.alpha(grad_norm=run.grad_norm[-1], eta=eta_q, rho=rho_q))
        rows.append(
            {
                "y = eta lambda1/2": y_target,
                "rho": rho_q,
                "alpha at the cycle": alpha_end,
                "y^2/(1 - y)": float(edges.alpha_of_ratio(y_target)),
                "relative difference": abs(alpha_end / float(edges.alpha_of_ratio(y_target)) - 1),
            }
        )
    cyc = pd.DataFrame(rows)
    assert (cyc["relative difference"] < 1e-8).all()
    err = float(cyc["relative difference"].max())
    return QuadraticCheck({"table": cyc}, {"ch8_cycle_err": err, "ch8_cycle_err_words": to_words(err)})
