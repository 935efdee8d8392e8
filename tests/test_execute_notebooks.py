"""The book build's post-processing: parameter boxes show the values a chapter ran with, stderr fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

from samedge_lib.reading.notebook import PARAMETERS_METADATA_KEY

REPO = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("execute_notebooks", REPO / "tools" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, *, resolved: dict | None, stderr: str | None = None) -> None:
    params = nbformat.v4.new_code_cell('preset = "cpu"\nrhos = None')
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('preset = "smoke"')
    injected.metadata["tags"] = ["injected-parameters"]
    check = nbformat.v4.new_code_cell("show_parameters(...)")
    if resolved is not None:
        check.outputs = [
            nbformat.v4.new_output(
                "display_data", data={"text/markdown": "| table |"}, metadata={PARAMETERS_METADATA_KEY: resolved}
            )
        ]
    if stderr:
        check.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=stderr))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), params, injected, check])
    nbformat.write(nb, path)


def _box(nb: nbformat.NotebookNode) -> str:
    (cell,) = [c for c in nb.cells if "parameter-summary" in c.metadata.get("tags", [])]
    return cell.source


def test_box_lists_resolved_values_and_the_raw_output_is_removed(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    _notebook(path, resolved={"preset": "'smoke'", "rhos": "[0.03, 0.1, 0.3]", "steps": "30"})
    assert _tool().postprocess(path) == []
    nb = nbformat.read(path, as_version=4)
    box = _box(nb)
    assert "| `rhos` | `[0.03, 0.1, 0.3]` |" in box and "| `steps` | `30` |" in box
    assert "None" not in box  # the sentinel of the raw parameter cell is not shown
    assert not any(PARAMETERS_METADATA_KEY in o.get("metadata", {}) for c in nb.cells for o in c.get("outputs", []))
    assert all("remove-cell" in c.metadata["tags"] for c in nb.cells[1:3])
    assert "hide-input" in nb.cells[4].metadata["tags"]  # the checking cell, after the inserted box


def test_without_resolved_values_the_box_lists_the_assignments(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    _notebook(path, resolved=None)
    _tool().postprocess(path)
    box = _box(nbformat.read(path, as_version=4))
    assert '| `preset` | `"smoke"` |' in box and "| `rhos` | `None` |" in box


def test_stderr_is_a_problem(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    _notebook(path, resolved=None, stderr="Warning: something")
    problems = _tool().postprocess(path)
    assert len(problems) == 1 and "wrote to stderr" in problems[0]
