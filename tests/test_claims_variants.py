"""The claims of the chapters beyond the paper, on synthetic runs whose outcome is known by construction.

Each synthetic run sets ``lambda_1`` from a known rule -- on its edge, on a flat line, a fixed factor above the
curve -- so every verdict below is decided by the construction, and the statistics are checked against
independent computations (least squares done here with numpy, the momentum-free edge recomputed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samedge_lib.chapters import variants_claims as cv
from samedge_lib.reading import claims as cl
from samedge_lib.record.config import preset_config
from samedge_lib.record.results import RunResult
from samedge_lib.theory.edges import alpha, edge_ratio, gd_edge, momentum_sam_edge, sam_edge, switch_growth, usam_edge

STEPS = np.arange(0, 601, 20)
G = 0.35 * np.exp(-np.log(20.0) * STEPS / 600)  # ||g|| falls 20x over the run


def table(
    cfg, lam1: np.ndarray, edge: np.ndarray, g: np.ndarray = G, steps: np.ndarray = STEPS, **cols
) -> pd.DataFrame:
    """A measurement table as the engine writes it (the columns the claims read)."""
    rho = cfg.rho if cfg.optimizer == "sam" else 0.0
    df = pd.DataFrame(
        {
            "step": steps,
            "data": "full",
            "loss": 0.01,
            "grad_norm": g,
            "lambda_1": lam1,
            "edge": edge,
            "sam_edge": sam_edge(eta=cfg.eta, rho=rho, grad_norm=g) if cfg.optimizer != "usam" else np.nan,
            "gd_edge": gd_edge(cfg.eta),
            "alpha": alpha(eta=cfg.eta, rho=cfg.rho, grad_norm=g) if cfg.rho > 0 else np.inf,
            "align_g": 0.9,
        }
    )
    for k, v in cols.items():
        df[k] = v
    return df


def result(cfg, df: pd.DataFrame) -> RunResult:
    status = {"state": "finished", "steps_done": cfg.steps}
    return RunResult(cfg, Path("/nonexistent"), df, pd.DataFrame(), status, {"timings": {}})


def with_init(lam1: np.ndarray, above: float = 1.3) -> np.ndarray:
    """The run's sharpness with an initial check above the edge (as at the cpu preset), then ``lam1``."""
    out = lam1.copy()
    out[0] = above * lam1[0]
    return out


def sam(rho: float, factor: float = 1.0, eta: float = 1.25) -> RunResult:
    cfg = preset_config("mnist", "cpu", rho=rho, eta=eta, k=1, official_every=0)
    edge = sam_edge(eta=eta, rho=rho, grad_norm=G)
    return result(cfg, table(cfg, with_init(factor * edge), edge))


def usam(r: float, slope: float = 0.0) -> RunResult:
    cfg = preset_config("mnist", "cpu", rho=r, optimizer="usam", k=1, official_every=0)
    e_u = float(usam_edge(eta=cfg.eta, r=r))
    lam = e_u * (G / G[-1]) ** slope / (G[len(G) // 2] / G[-1]) ** slope  # on the edge mid-run
    return result(cfg, table(cfg, with_init(lam), np.full(len(G), e_u)))


def test_after_crossing_skips_initialisation_and_the_catapult():
    cfg = preset_config("mnist", "cpu", rho=0.1)
    ratio = np.array([1.3, 0.6, 0.8, 0.95, 1.0, 1.02])
    df = table(cfg, ratio, np.ones(6), g=np.full(6, 0.1), steps=np.arange(6) * 20)
    assert list(cv.after_crossing(df)["step"]) == [60, 80, 100]
    never = table(cfg, np.array([1.3, 0.5, 0.6]), np.ones(3), g=np.full(3, 0.1), steps=np.arange(3))
    assert cv.after_crossing(never).empty


def test_log_slope_is_least_squares_with_its_standard_error():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 3, 40)
    y = 0.37 * x + 0.2 + rng.normal(scale=0.05, size=x.size)
    b, se = cv.log_slope(x, y)
    design = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(design, y, rcond=None)
    want_se = math.sqrt(res[0] / (x.size - 2) / np.sum((x - x.mean()) ** 2))
    assert b == pytest.approx(coef[0], rel=1e-12) and se == pytest.approx(want_se, rel=1e-9)
    assert math.isnan(cv.log_slope(x[:2], y[:2])[0])


def test_sam_on_its_edge_has_the_slope_of_its_edge_and_usam_is_flat():
    s = sam(0.1)
    st = cv.edge_stats(s.measurements)
    win = s.measurements.iloc[1:]
    want = np.polyfit(np.log(win["grad_norm"]), np.log(win["edge"]), 1)[0]  # the edge's own log-slope
    assert st["median"] == pytest.approx(1.0) and st["slope"] == pytest.approx(want, rel=1e-10)
    assert abs(st["slope"] - st["mean_elasticity"]) < 0.05  # the mean elasticity approximates that slope
    assert cv.edge_stats(usam(0.3).measurements)["slope"] == pytest.approx(0.0, abs=1e-12)


def _runs(**runs: RunResult) -> cv.VariantRuns:
    return cv.VariantRuns("live", "synthetic", {k.replace("_", "/", 1).replace("x", "."): v for k, v in runs.items()})


def _verdicts(rs: cv.VariantRuns, keys) -> dict[str, cl.Verdict]:
    ev = cv.evaluate([rs], keys)
    return {r["claim"]: cl.Verdict(r["verdict"]) for _, r in ev.iterrows()}


def test_e1_claims_follow_the_construction():
    good = cv.VariantRuns("live", "", {"sam/0.1": sam(0.1), "usam/0.1": usam(0.29)})
    v = _verdicts(good, ["usam_on_edge", "usam_flat", "sam_on_edge_tight", "sam_slope", "slopes_differ"])
    assert set(v.values()) == {cl.Verdict.HOLDS}
    bad = cv.VariantRuns("live", "", {"sam/0.1": sam(0.1, factor=1.3), "usam/0.1": usam(0.29, slope=0.3)})
    v = _verdicts(bad, ["usam_on_edge", "usam_flat", "sam_on_edge_tight", "slopes_differ"])
    assert v["usam_flat"] is cl.Verdict.FAILS and v["sam_on_edge_tight"] is cl.Verdict.FAILS
    assert v["usam_on_edge"] is cl.Verdict.HOLDS  # the median of a sloped line through its edge mid-run is on it


def _momentum(beta: float, nesterov: bool, rho: float = 0.1) -> RunResult:
    eta = 1.25 * (1 + beta) / ((1 + 2 * beta) if nesterov else 1.0)
    cfg = preset_config("mnist", "cpu", rho=rho, eta=eta, momentum=beta, nesterov=nesterov, k=1, official_every=0)
    edge = momentum_sam_edge(eta=eta, rho=rho, beta=beta, nesterov=nesterov, grad_norm=G)
    return result(cfg, table(cfg, with_init(edge), edge))


def test_momentum_claims_use_the_momentum_edge_and_reject_the_naive_one():
    rs = cv.VariantRuns("live", "", {"sam+hb/0.8": _momentum(0.8, False), "sam+nesterov/0.8": _momentum(0.8, True)})
    ev = cv.evaluate([rs], ["momentum_on_edge", "naive_rejected", "momentum_beats_naive"])
    v = {r["claim"]: cl.Verdict(r["verdict"]) for _, r in ev.iterrows()}
    assert set(v.values()) == {cl.Verdict.HOLDS}
    hb = rs.runs["sam+hb/0.8"]
    df = hb.measurements.iloc[1:]
    naive = float(
        np.median(df["lambda_1"] / sam_edge(eta=hb.config.eta, rho=0.1, grad_norm=df["grad_norm"].to_numpy()))
    )
    assert cl.lookup(ev, "naive_rejected", "live").value == pytest.approx(
        min(naive, cv.edge_stats(rs.table("sam+nesterov/0.8"), "sam_edge")["median"])
    )


def test_gd_with_momentum_that_never_sharpens_is_pre_eos_and_allowed():
    cfg = preset_config("mnist", "cpu", eta=2.25, momentum=0.8, k=1, official_every=0)
    edge = np.full(len(G), 2 * 1.8 / 2.25)
    lam = np.full(len(G), 0.5 * edge[0])
    lam[0] = 0.9 * edge[0]  # the initial check is high; training never brings it back
    rs = cv.VariantRuns("live", "", {"gd+hb/0.8": result(cfg, table(cfg, lam, edge))})
    ev = cv.evaluate([rs], ["momentum_gd"])
    assert cl.lookup(ev, "momentum_gd", "live").verdict is cl.Verdict.NOT_REACHED
    cv.check(ev, ["momentum_gd"], "live", "cpu")  # allowed: the prediction says "or pre-EoS"


def _switch(growth_per_step: float, settle: float = 1.0) -> RunResult:
    cfg = preset_config("mnist", "cpu", rho=0.1, sam_start=300, measure_after_switch=6, k=1, official_every=0)
    steps = np.array(sorted({*STEPS.tolist(), *range(300, 306)}))
    g = np.full(len(steps), 0.03)
    a = float(alpha(eta=cfg.eta, rho=0.1, grad_norm=0.03))
    i0 = int(np.flatnonzero(steps == 300)[0])
    for j in range(1, 6):
        g[i0 + j] = 0.03 * growth_per_step**j
    edge = np.where(steps < 300, 2 / cfg.eta, sam_edge(eta=cfg.eta, rho=0.1, grad_norm=g))
    lam = np.where(steps >= 300, settle * edge, edge)
    return result(cfg, table(cfg, lam, edge, g=g, steps=steps)), a


def test_switch_claims_measure_the_escape_rate():
    run, a = _switch(float(switch_growth(alpha(eta=1.25, rho=0.1, grad_norm=0.03))))
    e = cv.escape(run.measurements, 300)
    assert e["alpha"] == pytest.approx(a) and e["first"] == pytest.approx(math.log(1 + 2 / a), rel=1e-12)
    rs = cv.VariantRuns("live", "", {"switch/0.1": run})
    v = _verdicts(rs, ["switch_first_step", "switch_five_steps", "switch_settles"])
    assert set(v.values()) == {cl.Verdict.HOLDS}
    slow, _ = _switch(1.0, settle=1.2)
    v = _verdicts(cv.VariantRuns("live", "", {"switch/0.1": slow}), ["switch_first_step", "switch_five_steps"])
    assert set(v.values()) == {cl.Verdict.FAILS}
    ev = cv.evaluate([cv.VariantRuns("live", "", {"switch/0.1": slow})], ["switch_settles"])
    e = cl.lookup(ev, "switch_settles", "live")
    assert e.verdict is cl.Verdict.FAILS and e.value == pytest.approx(1.2)


def _phase(eta: float, rho: float, factor: float = 1.0, g: np.ndarray = G) -> RunResult:
    cfg = preset_config("mnist", "cpu", rho=rho, eta=eta, k=1, official_every=0)
    edge = sam_edge(eta=eta, rho=rho, grad_norm=g)
    return result(cfg, table(cfg, with_init(factor * edge), edge, g=g))


def test_phase_claims_collapse_span_order_and_regimes():
    runs = {f"{e:g}/{r:g}": _phase(e, r) for e in (1.25, 0.5) for r in (0.001, 0.1)}
    runs["1.25/1"] = _phase(1.25, 1.0, factor=1.3)
    rs = cv.VariantRuns("live", "", runs)
    v = _verdicts(rs, ["phase_collapse", "phase_collapse_largest", "alpha_span", "alpha_order", "regimes_covered"])
    assert v["phase_collapse"] is cl.Verdict.HOLDS and v["phase_collapse_largest"] is cl.Verdict.FAILS
    assert v["alpha_span"] is v["alpha_order"] is v["regimes_covered"] is cl.Verdict.HOLDS
    pool = cv.pooled_phase(rs)
    on = pool[pool["key"] != "1.25/1"]
    np.testing.assert_allclose(on["y"].to_numpy(), edge_ratio(on["alpha"].to_numpy()), rtol=1e-12)
    np.testing.assert_allclose(on["collapse"].to_numpy(), 1.0, rtol=1e-12)  # Lambda = 1 on the edge
    narrow = cv.VariantRuns("live", "", {"1.25/0.1": _phase(1.25, 0.1, g=np.full(len(G), 0.05))})
    assert _verdicts(narrow, ["alpha_span"])["alpha_span"] is cl.Verdict.FAILS


def test_ascent_marker_is_scored_against_the_deviations():
    runs = {"1.25/0.1": _phase(1.25, 0.1), "1.25/1": _phase(1.25, 1.0, factor=1.3)}
    right = {"1.25/0.1": {"ascent_ratio": 1.01}, "1.25/1": {"ascent_ratio": 0.7}}
    wrong = {"1.25/0.1": {"ascent_ratio": 1.01}, "1.25/1": {"ascent_ratio": 0.95}}
    for extras, verdict, value in ((right, cl.Verdict.HOLDS, 1.0), (wrong, cl.Verdict.FAILS, 0.5)):
        ev = cv.evaluate([cv.VariantRuns("live", "", runs, extras)], ["ascent_marks_deviation"])
        e = cl.lookup(ev, "ascent_marks_deviation", "live")
        assert e.verdict is verdict and e.value == value


def test_check_fails_naming_the_claim_and_skips_smoke():
    rs = cv.VariantRuns("live", "synthetic", {"usam/0.1": usam(0.29, slope=0.3)})
    ev = cv.evaluate([rs], ["usam_flat"])
    with pytest.raises(cl.ClaimError, match="USAM's edge is a flat line"):
        cv.check(ev, ["usam_flat"], "live", "cpu")
    cv.check(ev, ["usam_flat"], "live", "smoke")
    table_ = cv.claims_table(ev, [rs], ["usam_flat"])
    assert list(table_["status"]) == ["claimed"] and "does not hold" in table_["synthetic"].iloc[0]


def test_collapse_of_fills_in_runs_without_the_column():
    run = _phase(1.25, 0.1, factor=1.1)
    df = run.measurements
    want = 0.5 * 1.25 * df["lambda_1"] * (1 + 0.1 * df["lambda_1"] / df["grad_norm"])
    np.testing.assert_allclose(cv.collapse_of(df, run), want, rtol=1e-12)
    assert "collapse" not in df
