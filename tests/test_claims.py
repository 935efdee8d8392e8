"""Claims evaluated on synthetic run tables whose outcome is known: holds, does not hold, not reached, not measured."""

from __future__ import annotations

import math

import pytest
from synthetic_runs import measurements, result

from samedge_lib.chapters import paper_claims as pc
from samedge_lib.reading import claims as cl
from samedge_lib.reading.claims import RunSet, Verdict
from samedge_lib.record.config import preset_config

GD = preset_config("mnist", "smoke", rho=0.0, steps=300, measure_every=10)


def sam_cfg(rho: float):
    return preset_config("mnist", "smoke", rho=rho, steps=300, measure_every=10)


def runset(runs: dict, main: float = 0.1) -> RunSet:
    return RunSet("test", "synthetic", runs, main)


def verdict(key: str, rs: RunSet) -> tuple[Verdict, float, str]:
    return cl.claim(key, pc.CLAIMS).evaluate(rs)


def sam_run(rho: float = 0.1, **kw):
    cfg = sam_cfg(rho)
    return result(cfg, measurements(cfg, **kw))


def gd_run(**kw):
    return result(GD, measurements(GD, **kw))


# -- SAM on its edge -------------------------------------------------------------------------------
def test_sam_on_edge_holds_with_the_plateau_as_its_value():
    v, value, detail = verdict("sam_on_edge", runset({0.1: sam_run(plateau=1.04)}))
    assert v is Verdict.HOLDS
    assert value == pytest.approx(1.04)
    assert "4.0 % above the edge" in detail


def test_sam_on_edge_fails_above_the_band():
    v, value, _ = verdict("sam_on_edge", runset({0.1: sam_run(plateau=1.5)}))
    assert v is Verdict.FAILS and value == pytest.approx(1.5)


def test_sam_below_the_edge_is_not_reached_and_gets_no_statistic():
    v, value, detail = verdict("sam_on_edge", runset({0.1: sam_run(plateau=0.7)}))
    assert v is Verdict.NOT_REACHED
    assert math.isnan(value)
    assert "did not reach its edge by step 300" in detail and "0.700" in detail


def test_reaching_the_edge_at_the_last_check_is_not_enough():
    v, _, detail = verdict("sam_on_edge", runset({0.1: sam_run(plateau=0.91, start=0.3, reach_frac=1.0)}))
    assert v is Verdict.NOT_REACHED
    assert "only" in detail


def test_missing_main_radius_is_not_measured():
    v, _, _ = verdict("sam_on_edge", runset({0.3: sam_run(0.3, plateau=1.0)}))
    assert v is Verdict.NOT_MEASURED


# -- all radii ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plateaus", "expected"),
    [
        ((1.0, 1.05, 0.95), Verdict.HOLDS),
        ((1.0, 1.05, 1.6), Verdict.FAILS),
        ((1.0, 1.05, 0.5), Verdict.NOT_REACHED),
    ],
)
def test_all_radii(plateaus, expected):
    runs = {rho: sam_run(rho, plateau=p) for rho, p in zip((0.03, 0.1, 0.3), plateaus, strict=True)}
    v, value, detail = verdict("all_radii_on_edge", runset(runs))
    assert v is expected
    assert "ρ = 0.03" in detail and "ρ = 0.3" in detail
    if expected is Verdict.HOLDS:
        assert value == pytest.approx(1 / 0.95)  # the largest offset as a factor: 0.95 is further from 1 than 1.05


def test_all_radii_needs_several():
    assert verdict("all_radii_on_edge", runset({0.1: sam_run(plateau=1.0)}))[0] is Verdict.NOT_MEASURED


# -- GD ---------------------------------------------------------------------------------------------
def test_gd_at_edge_holds_fails_and_not_reached():
    assert verdict("gd_at_edge", runset({0.0: gd_run(plateau=0.98)}))[0] is Verdict.HOLDS
    v, value, detail = verdict("gd_at_edge", runset({0.0: gd_run(plateau=0.5)}))
    assert v is Verdict.NOT_REACHED and "did not reach 2/η" in detail and "0.500" in detail
    # reached 2/eta early, then fell far below it: measured where the claim applies, and it misses
    cfg = GD
    meas = measurements(cfg, plateau=1.0, reach_frac=0.2)
    meas.loc[meas["step"] > 100, "lambda_1"] *= 0.5
    assert verdict("gd_at_edge", runset({0.0: result(cfg, meas)}))[0] is Verdict.FAILS


def test_gd_sharpening_direction_is_computed():
    assert verdict("gd_sharpening", runset({0.0: gd_run(plateau=1.0, start=0.3)}))[0] is Verdict.HOLDS
    v, value, _ = verdict("gd_sharpening", runset({0.0: gd_run(plateau=0.3, start=1.0)}))
    assert v is Verdict.FAILS and value < 1


def test_no_gd_run_is_not_measured():
    rs = runset({0.1: sam_run(plateau=1.0)})
    for key in ("gd_sharpening", "gd_at_edge", "sam_flatter", "loss_comparable"):
        assert verdict(key, rs)[0] is Verdict.NOT_MEASURED, key


# -- SAM against GD ----------------------------------------------------------------------------------
def test_sam_flatter_at_the_last_common_step_of_runs_of_different_length():
    gd = gd_run(plateau=1.0)
    cfg = sam_cfg(0.1)
    short = measurements(cfg, plateau=1.0)
    short = short[short["step"] <= 200]
    v, value, detail = verdict("sam_flatter", runset({0.0: gd, 0.1: result(cfg, short)}))
    assert "at step 200" in detail
    s = short[short["step"] == 200]["lambda_1"].iloc[0]
    g = gd.measurements.query("step == 200")["lambda_1"].iloc[0]
    assert value == pytest.approx(s / g)
    assert v is (Verdict.HOLDS if s / g < pc.FLATTER else Verdict.FAILS)


def test_sam_flatter_is_not_reached_while_sam_is_still_below_its_edge():
    # SAM still sharpening (never at its edge) and not flatter than GD yet: neither confirmed nor refuted
    gd = gd_run(plateau=0.02, start=0.01)
    sam = sam_run(plateau=0.6)
    v, _, detail = verdict("sam_flatter", runset({0.0: gd, 0.1: sam}))
    assert v is Verdict.NOT_REACHED and "has not reached its edge" in detail


def test_edge_far_below():
    v, value, _ = verdict("edge_far_below", runset({0.1: sam_run(plateau=1.0)}))
    last = sam_run(plateau=1.0).measurements.iloc[-1]
    assert value == pytest.approx(last["edge"] / last["gd_edge"])
    assert v is (Verdict.HOLDS if value < pc.FAR_BELOW else Verdict.FAILS)


# -- alignment, second eigenvalue, estimator, loss ---------------------------------------------------
def test_alignment_both_ways():
    assert verdict("sam_grad_aligned", runset({0.1: sam_run(plateau=1, align_sam=0.3)}))[0] is Verdict.HOLDS
    v, value, _ = verdict("sam_grad_aligned", runset({0.1: sam_run(plateau=1, align_sam=0.05)}))
    assert v is Verdict.FAILS and value == pytest.approx(0.5)


def test_second_eigenvalue():
    assert verdict("second_at_edge", runset({0.1: sam_run(plateau=1, lambda2_frac=0.99)}))[0] is Verdict.HOLDS
    assert verdict("second_at_edge", runset({0.1: sam_run(plateau=1, lambda2_frac=0.5)}))[0] is Verdict.FAILS
    v, _, detail = verdict("second_at_edge", runset({0.1: sam_run(plateau=1, lambda2_frac=None)}))
    assert v is Verdict.NOT_MEASURED and "k = 1" in detail


@pytest.mark.parametrize(
    ("bias", "expected", "words"), [(-0.01, Verdict.HOLDS, "reads 1 % low"), (0.05, Verdict.FAILS, "reads 5 % high")]
)
def test_estimator_bias_sign_and_size(bias, expected, words):
    v, value, detail = verdict("official_agrees", runset({0.1: sam_run(plateau=1, official_bias=bias)}))
    assert v is expected and value == pytest.approx(bias) and words in detail


def test_estimator_not_run_is_not_measured():
    cfg = sam_cfg(0.1)
    meas = measurements(cfg, plateau=1)
    meas["official_lambda"] = float("nan")
    assert verdict("official_agrees", runset({0.1: result(cfg, meas)}))[0] is Verdict.NOT_MEASURED


def test_loss_comparison():
    gd = gd_run(plateau=1, loss_end=0.05)
    assert verdict("loss_comparable", runset({0.0: gd, 0.1: sam_run(plateau=1, loss_end=0.04)}))[0] is Verdict.HOLDS
    v, value, _ = verdict("loss_comparable", runset({0.0: gd, 0.1: sam_run(plateau=1, loss_end=0.1)}))
    assert v is Verdict.FAILS and value == pytest.approx(2.0)


# -- tables and assertions ---------------------------------------------------------------------------
def test_evaluate_gives_one_row_per_claim_and_runset():
    a = runset({0.0: gd_run(plateau=1.0), 0.1: sam_run(plateau=1.0)})
    b = RunSet("other", "other", {0.1: sam_run(plateau=0.5)}, 0.1)
    ev = cl.evaluate([a, b], pc.CLAIMS)
    assert len(ev) == 2 * len(pc.CLAIMS)
    assert cl.lookup(ev, "sam_on_edge", "test").verdict is Verdict.HOLDS
    assert cl.lookup(ev, "sam_on_edge", "other").verdict is Verdict.NOT_REACHED
    table = cl.claims_table(ev, {"test": "A", "other": "B"}, made=("sam_on_edge",), claims=pc.CLAIMS)
    row = table.set_index("claim").loc[cl.claim("sam_on_edge", pc.CLAIMS).statement]
    assert row["status"] == "claimed" and row["A"].startswith("holds") and row["B"].startswith("not reached yet")


def test_assert_claims_policy():
    good = cl.evaluate([runset({0.0: gd_run(plateau=1.0), 0.1: sam_run(plateau=1.0)})], pc.CLAIMS)
    cl.assert_claims(good, ("sam_on_edge", "gd_at_edge"), "test", allow_not_reached=False, claims=pc.CLAIMS)
    bad = cl.evaluate([runset({0.0: gd_run(plateau=1.0), 0.1: sam_run(plateau=1.6)})], pc.CLAIMS)
    with pytest.raises(cl.ClaimError, match="SAM.s sharpness reaches its SAM-edge.*does not hold"):
        cl.assert_claims(bad, ("sam_on_edge",), "test", allow_not_reached=True, claims=pc.CLAIMS)
    early = cl.evaluate([runset({0.1: sam_run(plateau=0.6)})], pc.CLAIMS)
    cl.assert_claims(early, ("sam_on_edge",), "test", allow_not_reached=True, claims=pc.CLAIMS)
    with pytest.raises(cl.ClaimError, match="not reached yet"):
        cl.assert_claims(early, ("sam_on_edge",), "test", allow_not_reached=False, claims=pc.CLAIMS)


def test_words():
    assert cl.offset_words(1.045) == "4.5 % above the edge"
    assert cl.offset_words(0.97) == "3.0 % below the edge"
    assert cl.reads_words(-0.014) == "reads 1.4 % low" and cl.reads_words(0.00035) == "reads 0.035 % high"
    assert cl.compare_words(2, 1) == "higher" and cl.compare_words(1, 2) == "lower"
    assert cl.fmt(float("nan")) == "—"


def test_unknown_claim_is_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="sam_on_edge"):
        cl.claim("nonsense", pc.CLAIMS)


# -- the band's evidence: GD's own spread about 2/eta ------------------------------------------------
def test_gd_within_band_holds_for_a_flat_gd_and_fails_for_one_that_overshoots():
    v, value, detail = verdict("gd_within_band", runset({0.0: gd_run(plateau=1.0)}))
    assert v is Verdict.HOLDS and value == pytest.approx(1.0) and "spans 1.000–1.000" in detail
    v, value, _ = verdict("gd_within_band", runset({0.0: gd_run(plateau=1.2)}))
    assert v is Verdict.FAILS and value == pytest.approx(1.2)


def test_gd_within_band_is_not_reached_below_reach_and_not_measured_without_gd():
    v, _, detail = verdict("gd_within_band", runset({0.0: gd_run(plateau=0.5)}))
    assert v is Verdict.NOT_REACHED and "did not reach 2/η" in detail
    v, _, _ = verdict("gd_within_band", runset({0.1: sam_run(plateau=1.0)}))
    assert v is Verdict.NOT_MEASURED


def test_the_band_holds_its_ends_and_nothing_beyond():
    lo, hi = cl.EDGE_BAND
    assert cl.in_band(lo) and cl.in_band(hi) and cl.in_band(1.0)
    assert not cl.in_band(lo - 1e-9) and not cl.in_band(hi + 1e-9)
    assert f"[{lo}, {hi}]" in cl.band_words()


# -- the verbs come from the numbers ---------------------------------------------------------------
def test_approach_words_say_rose_or_fell_as_the_numbers_do():
    rising = cl.approach_words(cl.RunSet("t", "t", {0.1: sam_run(plateau=1.0, start=0.3)}, 0.1).table(0.1))
    assert rising.startswith("λ₁/edge rose from 0.30 at step 0 to 0.9 by step")
    above = cl.approach_words(cl.RunSet("t", "t", {0.1: sam_run(plateau=1.0, start=1.5)}, 0.1).table(0.1))
    assert above.startswith("λ₁/edge was already 1.50 at step 0")
    # the synthetic edge falls with ||g||, and a plateau at the edge follows it down
    assert "as the edge fell" in above and "λ₁ fell" in above


def test_a_sentence_puts_the_verdict_inside_the_prose():
    e = cl.Evaluation("sam_on_edge", "test", Verdict.NOT_REACHED, math.nan, "did not reach its edge by step 9")
    assert e.sentence("SAM on its SAM-edge", "on the stored runs") == (
        "SAM on its SAM-edge **is not reached yet** on the stored runs: did not reach its edge by step 9."
    )


def test_the_claims_list_states_every_criterion_and_number_in_full():
    runs = runset({0.0: gd_run(plateau=1.0), 0.1: sam_run(plateau=1.04)})
    ev = cl.evaluate([runs], pc.CLAIMS)
    text = cl.claims_markdown(ev, {"test": "synthetic runs"}, ("sam_on_edge",), pc.CLAIMS)
    sam = cl.claim("sam_on_edge", pc.CLAIMS)
    detail = cl.lookup(ev, "sam_on_edge", "test").detail
    assert f"1. **{sam.statement}** *claimed*" in text and sam.criterion in text
    assert f"   - synthetic runs: **holds**: {detail}" in text and "..." not in text
    assert "*reported*" in text  # the claims the chapter does not make are listed too
