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


# -- issue 19, item 4: unknown parameters, non-finite values, one-line errors -----------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_named_as_such(value):
    with pytest.raises(
        NotebookParameterError, match=r"^parameter seed=\S+ is not finite; it must be a finite integer$"
    ):
        check_number("seed", value, minimum=0, integer=True)
    with pytest.raises(NotebookParameterError, match=r"rhos\[0\]=\S+ is not finite; it must be a finite number"):
        check_list("rhos", [value], item=lambda n, v: check_number(n, v, minimum=0))
    # papermill's -y reads YAML's .nan as a float NaN, which compares false against every bound
    with pytest.raises(NotebookParameterError, match=r"rhos\[0\]=nan is not finite"):
        check_list("rhos", as_papermill_y("rhos: [.nan]")["rhos"], item=lambda n, v: check_number(n, v, minimum=0))


def test_injected_names_come_from_papermills_injected_cell():
    from samedge_lib.reading.notebook import injected_names

    history = ["", "import os", 'preset: str = "cpu"\nsteps: int = 0', '# Parameters\npreset = "smoke"\nstepz = 5\n']
    assert injected_names(history) == ["preset", "stepz"]
    assert injected_names(history[:3]) == []  # run by hand: nothing injected, nothing to check


def test_check_parameters_refuses_an_unknown_name_with_did_you_mean():
    from samedge_lib.reading.notebook import check_parameters

    ns = {
        "__annotations__": {"preset": str, "steps": "int or None", "seed": int},
        "In": ["", "# Parameters\npreset = 'smoke'\nstepz = 5\n"],
    }
    with pytest.raises(NotebookParameterError) as info:
        check_parameters(ns)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("parameter 'stepz' is not a parameter of this notebook (did you mean 'steps'?)")
    assert "its parameters are: preset, steps, seed" in message
    ns["In"] = ["", "# Parameters\npreset = 'smoke'\nsteps = 5\n"]
    assert check_parameters(ns) == ["preset", "steps"]


def _papermill(tmp_path, *args: str) -> tuple[int, str, list]:
    """papermill's command line on chapter 3 (it fails in its first checking cell, before anything is computed)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "03_mnist_mlp.ipynb"), str(out), "-k", "python3"]
    env = {**os.environ, "SAMEDGE_PROGRESS": "0", "SAMEDGE_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([*cmd, "-p", "preset", "smoke", *args], capture_output=True, text=True, timeout=300, env=env)
    errors = [
        o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    return proc.returncode, proc.stderr, errors


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["-p", "stepz", "5"],
            "NotebookParameterError: parameter 'stepz' is not a parameter of this notebook (did you mean 'steps'?)",
        ),
        (
            ["-y", "rhos: [.nan]"],
            "NotebookParameterError: parameter rhos[0]=nan is not finite; it must be a finite number",
        ),
        (["-p", "steps", "abc"], "NotebookParameterError: parameter steps='abc' must be an integer"),
    ],
    ids=["misspelled name", "nan", "bad value"],
)
def test_a_bad_parameter_ends_the_notebook_with_its_one_line(tmp_path, args, line):
    code, stderr, errors = _papermill(tmp_path, *args)
    assert code == 1  # papermill's exit code for a failed cell
    # the failing cell's error, as papermill prints it, is the one line: right after papermill's header, first
    after = stderr.split('Exception encountered at "In [')[-1].split("\n", 1)[1]
    assert after.strip().splitlines()[0].startswith(line), stderr[-2000:]
    assert len(after.strip().splitlines()) == 1, after
    assert len(errors) == 1 and len(errors[0]["traceback"]) == 1 and errors[0]["traceback"][0].startswith(line)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a bad parameter computed runs"
