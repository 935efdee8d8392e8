"""The notebooks' shared cells: the Colab set-up cell and typed parameter cells that papermill can describe."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from scripts import load_script

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
setup_tool = load_script("tools/notebook_setup_cell.py")
bookinfo = load_script("tools/bookinfo.py")

#: Notebooks whose parameter cells are still plain assignments (being rewritten elsewhere); remove a name
#: when its cell is typed. test_untyped_list_is_not_stale keeps this list honest.


def cells_tagged(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def parameters_cell(path: Path):
    return cells_tagged(nbformat.read(path, as_version=4), "parameters")[0]


def expected_source() -> str:
    return setup_tool.setup_source(bookinfo.repository(), setup_tool.pinned("myst-nb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_has_the_current_setup_cell_right_before_its_parameters(path):
    nb = nbformat.read(path, as_version=4)
    setup = cells_tagged(nb, "colab-setup")
    assert len(setup) == 1, f"{path.name}: run python tools/notebook_setup_cell.py"
    assert setup[0].source == expected_source(), f"{path.name}: stale set-up cell; run tools/notebook_setup_cell.py"
    assert "remove-cell" in setup[0].metadata["tags"], "the book must not show the set-up cell"
    i = nb.cells.index(setup[0])
    assert "parameters" in nb.cells[i + 1].metadata.get("tags", [])


def test_tool_is_idempotent_and_repairs_a_moved_or_duplicated_cell():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    source = expected_source()
    assert setup_tool.apply(nb, source) is False  # already current
    before = nbformat.writes(nb)
    setup = cells_tagged(nb, "colab-setup")[0]
    nb.cells.append(nbformat.from_dict(dict(setup)))  # a duplicate at the end
    nb.cells.remove(setup)
    assert setup_tool.apply(nb, source) is True
    assert nbformat.writes(nb) == before
    assert setup_tool.apply(nb, source) is False


def run_setup_cell(monkeypatch, on_colab: bool, clone_exists: bool = False) -> tuple[list[list[str]], list[str]]:
    """Execute the set-up cell's code with subprocess.run recorded; return (commands, sys.path additions)."""
    commands: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(list(cmd)))
    monkeypatch.setattr("os.path.isdir", lambda p: clone_exists)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    path_before = list(sys.path)
    exec(compile(expected_source(), "setup-cell", "exec"), {})
    added = [p for p in sys.path if p not in path_before]
    for p in added:
        sys.path.remove(p)
    return commands, added


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    assert run_setup_cell(monkeypatch, on_colab=False) == ([], [])


def test_setup_cell_on_colab_clones_the_configured_repository_installs_and_fetches(monkeypatch):
    repo = bookinfo.repository()
    commands, added = run_setup_cell(monkeypatch, on_colab=True)
    clone, install, fetch = commands
    assert clone[:2] == ["git", "clone"] and repo.url in clone and repo.branch == clone[clone.index("--branch") + 1]
    target = clone[-1]
    assert install[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--no-deps" in install, "Colab's own torch must stay"
    assert install[install.index("-e") + 1] == target
    assert setup_tool.pinned("myst-nb") in install
    assert fetch[0] == sys.executable and fetch[1].startswith(target)
    assert (REPO / Path(fetch[1]).relative_to(target)).is_file(), "the fetch script must exist in the repository"
    assert added == [target]
    # rerun in the same session: no second clone
    commands, _ = run_setup_cell(monkeypatch, on_colab=True, clone_exists=True)
    assert [c[:2] for c in commands] == [install[:2], fetch[:2]]


def annotation_accepts(annotation: ast.expr, value) -> bool:
    """Whether ``value`` (a literal default) has the type the annotation says (str/int/float/bool/list/dict).

    A string annotation ``"int or None"`` (papermill's parser reads no ``|``) accepts what either side accepts.
    """
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        sides = [ast.parse(side.strip(), mode="eval").body for side in annotation.value.split(" or ")]
        return any(
            value is None if isinstance(side, ast.Constant) and side.value is None else annotation_accepts(side, value)
            for side in sides
        )
    if isinstance(annotation, ast.Name):
        kinds = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict}
        if annotation.id in ("int", "float") and isinstance(value, bool):
            return False
        return isinstance(value, kinds[annotation.id])
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        args = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        if annotation.value.id == "list":
            return isinstance(value, list) and all(annotation_accepts(args[0], v) for v in value)
        if annotation.value.id == "dict":
            return isinstance(value, dict) and all(
                annotation_accepts(args[0], k) and annotation_accepts(args[1], v) for k, v in value.items()
            )
    raise AssertionError(f"unsupported annotation {ast.unparse(annotation)}")


TYPED = NOTEBOOKS


@pytest.mark.parametrize("path", TYPED, ids=[p.stem for p in TYPED])
def test_parameters_are_typed_and_papermill_help_describes_each(path):
    source = parameters_cell(path).source
    tree = ast.parse(source)
    assert all(isinstance(node, ast.AnnAssign) for node in tree.body), "every parameter needs a type annotation"
    declared = {}
    for node in tree.body:
        value = ast.literal_eval(node.value)
        assert annotation_accepts(node.annotation, value), f"{node.target.id}: default {value!r} does not match"
        ann = node.annotation
        declared[node.target.id] = ann.value if isinstance(ann, ast.Constant) else ast.unparse(ann)
    out = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    described = {}
    lines = out.stdout.split("Parameters inferred", 1)[1].splitlines()[1:]
    for i, line in enumerate(lines):
        head = line.strip().split(" (default ", 1)
        if len(head) == 2 and ": " in head[0] and not line.startswith(" " * 5):
            name, kind = head[0].split(": ", 1)
            help_text = head[1].split(")", 1)[1].strip() or (lines[i + 1].strip() if i + 1 < len(lines) else "")
            described[name] = (kind, help_text)
    assert set(described) == set(declared), f"papermill sees {sorted(described)}, the cell has {sorted(declared)}"
    for name, (kind, help_text) in described.items():
        assert kind == declared[name], f"{name}: papermill reports type {kind!r}"
        assert help_text, f"{name}: no help text (put it in a comment on the same line)"
