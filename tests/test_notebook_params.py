"""Notebook parameter checks: list/dict values given the ways papermill's command line delivers them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from papermill import cli as papermill_cli

from samedge_lib.reading.notebook import NotebookParameterError, check_dict, check_list, check_number, repo_path

REPO = Path(__file__).resolve().parent.parent


def as_papermill_p(text: str):
    """What a notebook receives for ``papermill ... -p name TEXT`` (papermill's own conversion)."""
    return papermill_cli._resolve_type(text)


def as_papermill_y(text: str):
    """What a notebook receives for ``papermill ... -y TEXT``."""
    return yaml.safe_load(text)


def test_papermill_p_really_passes_a_list_as_text():
    # the premise of check_list: without it, iterating over this value yields characters
    assert as_papermill_p("[0.05, 0.1]") == "[0.05, 0.1]"
    assert as_papermill_y("rhos: [0.05, 0.1]") == {"rhos": [0.05, 0.1]}


@pytest.mark.parametrize(
    "received",
    [as_papermill_p("[0.05, 0.1]"), as_papermill_y("rhos: [0.05, 0.1]")["rhos"], (0.05, 0.1), "[0.05,0.1]"],
    ids=["-p text", "-y list", "tuple", "json without spaces"],
)
def test_check_list_accepts_both_spellings(received):
    assert check_list("rhos", received) == [0.05, 0.1]


def test_check_list_validates_every_item_with_its_index():
    def nonneg(n, v):
        return check_number(n, v, minimum=0)

    assert check_list("rhos", "[0, 1.5]", item=nonneg) == [0, 1.5]
    with pytest.raises(NotebookParameterError, match=r"rhos\[1\]=-0.1 must lie in"):
        check_list("rhos", "[0.05, -0.1]", item=nonneg)
    with pytest.raises(NotebookParameterError, match=r"rhos\[0\]='a' must be a number"):
        check_list("rhos", "[a]", item=nonneg)


@pytest.mark.parametrize(
    ("received", "fragment"),
    [
        ("0.05, 0.1", "must be a list, but the text parses as str"),
        ("[0.05, 0.1", "is not valid YAML"),
        (0.1, "must be a list, not float"),
        ({"a": 1}, "must be a list, not dict"),
        (None, "must be a list, not NoneType"),
    ],
)
def test_check_list_rejects_with_one_line_showing_both_spellings(received, fragment):
    with pytest.raises(NotebookParameterError) as info:
        check_list("rhos", received)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert "-p rhos '[0.05, 0.1]'" in message and "-y 'rhos: [0.05, 0.1]'" in message


def test_check_list_min_len():
    with pytest.raises(NotebookParameterError, match="at least 1 element"):
        check_list("runs", "[]", min_len=1)


def test_check_dict_both_spellings_keys_and_items():
    text = "{eta: 0.1, rho: 0.05}"
    assert check_dict("run", as_papermill_p(text)) == {"eta": 0.1, "rho": 0.05}
    assert check_dict("run", as_papermill_y(f"run: {text}")["run"]) == {"eta": 0.1, "rho": 0.05}
    assert check_dict("run", '{"eta": 0.1}', keys=("eta", "rho")) == {"eta": 0.1}
    with pytest.raises(NotebookParameterError, match="unknown key\\(s\\) 'lr'; allowed: 'eta', 'rho'"):
        check_dict("run", "{lr: 0.1}", keys=("eta", "rho"))
    with pytest.raises(NotebookParameterError, match=r"run\['eta'\]=0 must lie in"):
        check_dict("run", "{eta: 0}", item=lambda n, v: check_number(n, v, minimum=1e-9))
    with pytest.raises(NotebookParameterError, match="must be a mapping \\(dict\\), but the text parses as list"):
        check_dict("run", "[1, 2]")


def test_papermill_cli_delivers_p_and_y_to_the_same_checked_value(tmp_path, monkeypatch):
    """Drive papermill's real command line (execution stubbed) and check what each spelling delivers."""
    seen = []
    monkeypatch.setattr(papermill_cli, "execute_notebook", lambda *a, **kw: seen.append(kw["parameters"]))
    nb = REPO / "notebooks" / "02_quadratic_ground_truth.ipynb"
    runner = CliRunner()
    for args in (["-p", "rhos", "[0.05, 0.1]"], ["-y", "rhos: [0.05, 0.1]"]):
        result = runner.invoke(papermill_cli.papermill, [str(nb), str(tmp_path / "o.ipynb"), *args])
        assert result.exit_code == 0, result.output
    assert [check_list("rhos", p["rhos"]) for p in seen] == [[0.05, 0.1], [0.05, 0.1]]


def test_repo_path_is_independent_of_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert repo_path("results/benchmark") == REPO / "results" / "benchmark"
    assert (repo_path("results/benchmark") / ".").exists()
    assert repo_path(tmp_path / "x") == tmp_path / "x"
    assert repo_path("~/x") == Path(os.path.expanduser("~/x"))
