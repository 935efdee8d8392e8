"""The stochastic-SAM chapter's claims on synthetic run tables whose every statistic is known by construction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samedge_lib.chapters import stochastic_claims as cs
from samedge_lib.core.stochastic import sampling_factor
from samedge_lib.reading import claims as cl
from samedge_lib.record.config import stochastic_config
from samedge_lib.record.results import RunResult
from samedge_lib.theory.edges import sam_edge

N, ETA, RHO = 1000, 1.25, 0.1
STEPS = np.arange(0, 401, 20)


def table(
    cfg,
    *,
    ratio: float = 1.0,
    q: float = 1.0,
    full_ratio: float = 1.0,
    osc: float | np.ndarray = -0.95,
    drift: float | np.ndarray = 0.3,
    g: float = 0.02,
    trace_sigma: float = 0.03,
    mc_factor: float = 1.0,
    msam: float = 1.0,
    trace_h: float = 40.0,
) -> pd.DataFrame:
    """Checks at ``STEPS``: the sharpness at ``ratio`` x its edge from the first check on (so the window is the second
    half), ``Q = q``, full-batch ``lambda_1 = full_ratio`` x ``S(g)``; noise at every fifth check.
    """
    b = cfg.batch_size or N
    f = sampling_factor(N, b)
    expected = g**2 + f * trace_sigma
    g_b = math.sqrt(expected) if cfg.batch_size else g
    rows = []
    for i, step in enumerate(STEPS):
        noise = i % 5 == 0
        kinds = ["minibatch", "full"] if cfg.batch_size else ["full"]
        for kind in kinds:
            norm = g_b if kind == "minibatch" else g
            edge = 2 / ETA if cfg.rho == 0 else float(sam_edge(eta=ETA, rho=cfg.rho, grad_norm=norm))
            lam = (ratio if kind == kinds[0] else full_ratio) * edge
            row = {
                "step": int(step),
                "data": kind,
                "loss": 0.01,
                "grad_norm": norm,
                "edge": edge,
                "gd_edge": 2 / ETA,
                "alpha": ETA * norm / (2 * cfg.rho) if cfg.rho else math.inf,
                "lambda_1": lam,
                "q_sam": q,
                "osc_cos": float(np.broadcast_to(osc, STEPS.shape)[i]),
            }
            if cfg.drift_every:
                row["drift_cos"] = float(np.broadcast_to(drift, STEPS.shape)[i])
            if cfg.micro_batch:
                row["msam_lambda"] = 2 / ETA * msam
            on_noise_row = kind == "full" and noise
            row.update(
                trace_sigma=trace_sigma if on_noise_row else math.nan,
                noise_sq=f * trace_sigma if on_noise_row else math.nan,
                expected_sq_grad_norm=expected if on_noise_row else math.nan,
                mc_sq_grad_norm=expected * mc_factor if on_noise_row and cfg.batch_size else math.nan,
                mc_sq_grad_norm_se=0.01 * expected if on_noise_row and cfg.batch_size else math.nan,
                trace_h=trace_h if on_noise_row else math.nan,
            )
            rows.append(row)
    return pd.DataFrame(rows)


def result(cfg, df: pd.DataFrame) -> RunResult:
    return RunResult(cfg, Path("/nonexistent"), df, pd.DataFrame(), {"state": "finished"}, {})


def runset(sam=None, sgd=None, msam=None, **common) -> cs.StochasticRunSet:
    """SAM at 1000/100/25, SGD at 1000/25, m-SAM at 100/25, each with ``common`` table settings and overrides."""
    sam = {b: common | (sam or {}).get(b, {}) for b in (1000, 100, 25)}
    sgd = {b: common | (sgd or {}).get(b, {}) for b in (1000, 25)}
    msam = {m: common | (msam or {}).get(m, {}) for m in (100, 25)}
    sam_r = {b: result(c := stochastic_config("cpu", batch_size=b, rho=RHO), table(c, **kw)) for b, kw in sam.items()}
    sgd_r = {b: result(c := stochastic_config("cpu", batch_size=b, rho=0.0), table(c, **kw)) for b, kw in sgd.items()}
    msam_r = {
        m: result(c := stochastic_config("cpu", batch_size=N, rho=RHO, micro_batch=m), table(c, **kw))
        for m, kw in msam.items()
    }
    return cs.StochasticRunSet(
        "live", "synthetic", {0.0: sgd_r[N], RHO: sam_r[N]}, RHO, None, sam=sam_r, sgd=sgd_r, msam=msam_r, n_train=N
    )


def verdict(rs: cs.StochasticRunSet, key: str) -> tuple[cl.Verdict, float, str]:
    (claim,) = [c for c in cs.CLAIMS if c.key == key]
    return claim.evaluate(rs)


def test_every_claim_holds_on_runs_that_sit_where_each_prediction_says():
    # SGD at 2/eta with tr H = 100; SAM on its edge, so lambda_1 falls by S/(2/eta) against SGD at every B, while the
    # trace falls more than that at B = 25 and less at the full batch
    rs = runset(
        sgd={1000: {"trace_h": 100.0}, 25: {"trace_h": 100.0}},
        sam={25: {"trace_h": 20.0, "ratio": 1.05}, 1000: {"trace_h": 80.0}},  # Q_B (1) closer to 1 than H_B/S_B
    )
    ev = cl.evaluate([rs], cs.CLAIMS)
    verdicts = dict(zip(ev["claim"], ev["verdict"], strict=True))
    assert verdicts.pop("noise_scaling") is cl.Verdict.NOT_REACHED  # g^2 = 4e-4 is not below a quarter of the noise
    assert set(verdicts.values()) == {cl.Verdict.HOLDS}, verdicts


def test_identity_fails_beyond_ten_percent_and_names_the_run():
    assert verdict(runset(mc_factor=1.09), "identity")[0] is cl.Verdict.HOLDS
    v, value, detail = verdict(runset(sam={100: {"mc_factor": 1.2}}), "identity")
    assert v is cl.Verdict.FAILS and value == pytest.approx(0.2) and "SAM B = 100: 20.0 %" in detail


@pytest.mark.parametrize(("ratio", "expected"), [(1.1, "holds"), (1.2, "does not hold"), (0.7, "not reached yet")])
def test_minibatch_edge_at_large_batches(ratio, expected):
    v, _, detail = verdict(runset(sam={100: {"ratio": ratio}}), "minibatch_edge")
    assert v.value == expected and "B = 100" in detail and "B = 25" not in detail


def test_q_at_one_and_q_beats_hb():
    assert verdict(runset(q=1.1), "q_at_one")[0] is cl.Verdict.HOLDS
    v, value, _ = verdict(runset(sam={25: {"q": 0.6}}), "q_at_one")
    assert v is cl.Verdict.FAILS and value == pytest.approx(1 / 0.6)
    # at B = 25: |log 0.9| < |log 1.2| -> Q is closer to 1
    assert verdict(runset(sam={25: {"q": 0.9, "ratio": 1.2}}), "q_beats_hb")[0] is cl.Verdict.HOLDS
    assert verdict(runset(sam={25: {"q": 0.6, "ratio": 1.05}}), "q_beats_hb")[0] is cl.Verdict.FAILS


def test_full_edge_flat_fails_on_a_rise_as_the_batch_shrinks():
    flat = runset(sam={1000: {"full_ratio": 1.05}, 100: {"full_ratio": 1.0}, 25: {"full_ratio": 0.9}})
    assert verdict(flat, "full_edge_flat")[0] is cl.Verdict.HOLDS
    v, value, _ = verdict(runset(sam={100: {"full_ratio": 1.1}}), "full_edge_flat")
    assert v is cl.Verdict.FAILS and value == pytest.approx(1.1)


def test_noise_scaling_applies_only_where_noise_dominates_and_then_follows_the_law():
    v, _, detail = verdict(runset(), "noise_scaling")  # ||g|| = 0.02: neither noise-dominated nor alpha_B small
    assert v is cl.Verdict.NOT_REACHED and "outside the noise-dominated regime" in detail
    # ||g|| = 1e-4 puts both minibatch sizes deep in the regime; the synthetic minibatch edges are S(sqrt(E||g_B||^2)),
    # whose ratio is the B^(-1/4) law up to corrections of order sqrt(alpha_B)
    v, value, detail = verdict(runset(g=1e-4, trace_sigma=1e-4), "noise_scaling")
    law = (sampling_factor(N, 25) / sampling_factor(N, 100)) ** 0.25
    assert v is cl.Verdict.HOLDS and value == pytest.approx(1.0, abs=0.05) and f"{law:.3f} predicted" in detail


def test_edge_inflation_compares_measured_with_predicted():
    assert verdict(runset(), "edge_inflation")[0] is cl.Verdict.HOLDS
    # the full-batch gradient norm three times smaller than the one the identity was built with: S(g) falls, so the
    # measured S_B/S no longer matches the prediction made from the noise rows (which carry the true g)
    rs = runset()
    res = rs.sam[25]
    df = res.measurements.copy()
    full = df["data"] == "full"
    df.loc[full, "edge"] = sam_edge(eta=ETA, rho=RHO, grad_norm=df.loc[full, "grad_norm"].to_numpy() / 3)
    bad = cs.StochasticRunSet("live", "x", rs.runs, RHO, None, sam={**rs.sam, 25: result(res.config, df)}, n_train=N)
    assert verdict(bad, "edge_inflation")[0] is cl.Verdict.FAILS


def test_m_edge_uses_only_oscillating_checks():
    osc = np.where(np.arange(len(STEPS)) % 2 == 0, -0.9, 0.2)
    # non-oscillating checks would drag the median far off; only the oscillating ones count
    rs = runset(msam={25: {"osc": osc}})
    res = rs.msam[25]
    df = res.measurements.copy()
    df.loc[df["osc_cos"] > cs.OSCILLATING, "msam_lambda"] = 5.0
    rs = cs.StochasticRunSet(
        "live", "x", rs.runs, RHO, None, sam=rs.sam, msam={**rs.msam, 25: result(res.config, df)}, n_train=N
    )
    v, value, detail = verdict(rs, "m_edge")
    assert v is cl.Verdict.HOLDS and value == pytest.approx(1.0) and "% not oscillating" in detail
    assert verdict(runset(msam={100: {"msam": 1.3}}), "m_edge")[0] is cl.Verdict.FAILS
    assert verdict(runset(msam={100: {"osc": 0.5}}), "m_edge")[0] is cl.Verdict.NOT_REACHED


def test_msam_full_is_sam_reads_the_collapse_variable():
    # lambda_1 on the SAM-edge makes Lambda = 1 exactly
    v, value, _ = verdict(runset(), "msam_full_is_sam")
    assert v is cl.Verdict.HOLDS and value == pytest.approx(1.0)
    assert verdict(runset(sam={1000: {"ratio": 1.3}}), "msam_full_is_sam")[0] is cl.Verdict.FAILS


def test_drift_share():
    share = np.where(np.arange(len(STEPS)) < 15, 0.2, -0.1)  # 15 of 21 positive: 71 %
    v, value, _ = verdict(runset(sam={1000: {"drift": share}}), "drift")
    assert v is cl.Verdict.HOLDS and value == pytest.approx(15 / 21)
    share = np.where(np.arange(len(STEPS)) < 14, 0.2, -0.1)  # 67 %
    assert verdict(runset(sam={1000: {"drift": share}}), "drift")[0] is cl.Verdict.FAILS


def test_trace_versus_lambda_needs_the_reversal_at_the_full_batch():
    sgd = {1000: {"trace_h": 100.0}, 25: {"trace_h": 100.0}}
    lam = float(sam_edge(eta=ETA, rho=RHO, grad_norm=0.02)) / (
        2 / ETA
    )  # SAM's lambda_1 against SGD's, at both batch sizes
    rs = runset(sgd=sgd, sam={25: {"trace_h": 60.0}, 1000: {"trace_h": 80.0}})
    v, value, detail = verdict(rs, "trace_vs_lambda")  # at B = 25 the trace falls less than lambda_1
    assert v is cl.Verdict.FAILS and value == pytest.approx(0.6 / lam) and "tr H ×0.6" in detail
    good = runset(sgd=sgd, sam={25: {"trace_h": 20.0}, 1000: {"trace_h": 80.0}})
    assert verdict(good, "trace_vs_lambda")[0] is cl.Verdict.HOLDS


def test_assert_claims_names_a_failing_claim_of_this_chapter():
    rs = runset(sam={100: {"ratio": 1.5}})
    ev = cl.evaluate([rs], cs.CLAIMS)
    with pytest.raises(cl.ClaimError, match="At B ≥ 100 the stepped minibatch's sharpness sits"):
        cl.assert_claims(ev, ["minibatch_edge"], "live", allow_not_reached=False, claims=cs.CLAIMS)


def test_a_diverged_run_is_not_evidence_for_or_against_a_prediction():
    rs = runset(sam={25: {"ratio": 3.0, "q": 5.0}})  # what a run blowing up looks like in its last checks
    res = rs.sam[25]
    blown = RunResult(res.config, res.path, res.measurements, res.steps, {"state": "diverged", "step": 7}, {})
    rs = cs.StochasticRunSet("live", "x", rs.runs, RHO, None, sam={**rs.sam, 25: blown}, sgd=rs.sgd, n_train=N)
    for key in ("minibatch_edge_small", "q_beats_hb", "noise_scaling", "trace_vs_lambda"):
        v, _, detail = verdict(rs, key)
        assert v is cl.Verdict.NOT_REACHED and "diverged at step 7" in detail, key
    v, _, detail = verdict(rs, "q_at_one")  # the other batch sizes still count
    assert v is cl.Verdict.NOT_REACHED and "B = 25: diverged at step 7" in detail and "B = 100: 1.000" in detail
