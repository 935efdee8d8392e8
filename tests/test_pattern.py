"""The one chapter pattern: the base's machinery on a toy chapter, and every chapter family built on it."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from samedge_lib.chapters import pattern
from samedge_lib.chapters.chapter import ExperimentChapter
from samedge_lib.chapters.stochastic import StochasticChapter
from samedge_lib.chapters.variants_chapter import PhaseChapter, VariantsChapter
from samedge_lib.reading import claims as cl

CATALOGUE = (
    cl.Claim("up", "It goes up.", "x", "> 1", "test", lambda rs: (cl.Verdict.HOLDS, 2.0, "x = 2")),
    cl.Claim("down", "It goes down.", "x", "< 1", "test", lambda rs: (cl.Verdict.FAILS, 2.0, "x = 2")),
)


@dataclass
class Toy(pattern.Chapter):
    preset: str
    made: tuple[str, ...]
    evaluations: pd.DataFrame | None = None

    number = 99
    catalogue = CATALOGUE

    @property
    def runsets(self):
        return [cl.RunSet("live", "toy", {}, 0.1, scope="on the toy runs")]

    def setup_table(self) -> pd.DataFrame:
        return pd.DataFrame({"run": ["a", "b"], "eta": [0.05, 0.05], "rho": [0.0, 0.1]})


def test_claims_are_evaluated_glued_and_only_the_made_ones_asserted(monkeypatch):
    glued = {}
    monkeypatch.setattr(pattern, "glue_values", glued.update)
    ch = Toy("cpu", ("up",))
    ev = ch.claims()
    assert list(ev["claim"]) == ["up", "down"]
    assert glued["ch99_up_live_value"] == 2.0 and glued["ch99_down_live_verdict"] == "does not hold"
    assert glued["ch99_down_live_sentence"].data == "It goes down **does not hold** on the toy runs: x = 2."
    ch.check()  # "down" fails but the chapter does not make it
    both = Toy("cpu", ("up", "down"))
    both.claims()
    with pytest.raises(cl.ClaimError, match="It goes down"):
        both.check()
    smoke = Toy("smoke", ("down",))
    smoke.claims()
    smoke.check()  # smoke: shown, not asserted


def test_tables_are_shown_whole_without_row_numbers():
    long = "a criterion " * 20
    html = pattern.table_html(
        pd.DataFrame({"claim": ["c"], "criterion": [long], "x": [0.0100000]}), index="claim", transpose=False
    )
    assert long.strip() in html and "..." not in html and "0.01<" in html and "0.010000" not in html
    assert "<th>0</th>" not in html  # no column of row numbers
    runs = pattern.table_html(pd.DataFrame({"run": ["GD", "SAM"], "eta": [0.01, 0.01]}))
    assert "<th>GD</th>" in runs and "<th>eta</th>" in runs and ">run<" not in runs


def test_setup_table_says_once_what_every_run_shares():
    df = Toy("cpu", ()).setup_table()
    assert pattern.shared_columns(df) == ["eta"]
    assert pattern.shared_columns(df.iloc[:1]) == []


@pytest.mark.parametrize("cls", [ExperimentChapter, VariantsChapter, PhaseChapter, StochasticChapter])
def test_every_chapter_family_is_one_pattern(cls):
    assert issubclass(cls, pattern.Chapter)
    for method in ("show_setup", "setup_table", "claims", "glue", "show_claims", "check"):
        assert callable(getattr(cls, method))
