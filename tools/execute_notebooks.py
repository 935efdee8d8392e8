"""Execute the book's notebooks with papermill and prepare them for Jupyter Book.

For each source notebook in ``notebooks/`` (or those named on the command line) this runs
papermill with the venv's own kernel, from the repository root, with ``-p preset <preset>`` plus
any ``-p name value`` given, and writes the executed copy to ``book/chapters/``. It then

* hides the ``parameters`` and ``injected-parameters`` cells and puts a small table of the values
  actually used in their place, so the book shows which preset produced each page, and collapses the
  cell that validates them. A chapter that resolves its defaults (``None`` = "the preset's value") shows
  the resolved values with :func:`samedge_lib.chapters.chapter.show_parameters`; the table then lists those, not
  the raw assignments;
* fails if any cell wrote to stderr (warnings are noise to a reader: fix them at the source).

A failing notebook makes the command exit non-zero, and its executed copy (with the traceback)
is kept next to the others for inspection.

Usage: python tools/execute_notebooks.py [--preset cpu] [--out book/chapters] [-p name value] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from samedge_lib.reading.notebook import PARAMETERS_METADATA_KEY  # noqa: E402

#: Environment of the notebook kernels: no progress bars (they write to stderr, which fails the build), and the
#: chapters' runs computed as one process per core with one torch thread each
#: (:func:`samedge_lib.chapters.experiments.run_all`; the small models of the cpu preset gain little from a second
#: thread).
KERNEL_ENV = {"SAMEDGE_PROGRESS": "0", "SAMEDGE_WORKERS": str(os.cpu_count() or 1)}


def _assignments(source: str) -> dict[str, str]:
    """Map ``name -> value source`` for the simple assignments of a parameters cell."""
    out: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.get_source_segment(source, node.value) or ""
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = ast.get_source_segment(source, node.value) or ""
    return out


def _resolved_parameters(nb: nbformat.NotebookNode) -> dict[str, str] | None:
    """The values a chapter reported with ``show_parameters`` (and removes that output), or ``None``."""
    for cell in nb.cells:
        for i, out in enumerate(cell.get("outputs", [])):
            values = out.get("metadata", {}).get(PARAMETERS_METADATA_KEY)
            if values is not None:
                del cell.outputs[i]
                return dict(values)
    return None


def postprocess(path: Path) -> list[str]:
    """Hide parameter cells behind a summary table; return a list of problems (stderr output)."""
    nb = nbformat.read(path, as_version=4)
    resolved = _resolved_parameters(nb)
    values: dict[str, str] = {}
    insert_at = None
    problems = []
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type != "code":
            continue
        if "parameters" in tags or "injected-parameters" in tags:
            values.update(_assignments(cell.source))
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            insert_at = i + 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr" and "allow-stderr" not in tags:
                problems.append(f"{path.name}: cell {i} wrote to stderr: {out.get('text', '')[:300]!r}")
    # the cell right after the parameters validates them: machinery, not story -> collapsed in the book
    if insert_at is not None and insert_at < len(nb.cells) and nb.cells[insert_at].cell_type == "code":
        tags = nb.cells[insert_at].metadata.setdefault("tags", [])
        if "hide-input" not in tags:
            tags.append("hide-input")
    if resolved is not None:
        values = resolved
    if insert_at is not None and values:
        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in values.items())
        table = nbformat.v4.new_markdown_cell(
            "```{admonition} Parameters of this execution\n:class: note\n"
            "| parameter | value |\n|---|---|\n" + rows + "\n\n"
            "Rerun with other values: `python -m papermill " + f"notebooks/{path.name}" + " out.ipynb -p preset smoke`"
            " (see the introduction).\n```"
        )
        table.metadata["tags"] = ["parameter-summary"]
        nb.cells.insert(insert_at, table)
    nbformat.write(nb, path)
    return problems


def main(argv: list[str] | None = None) -> int:
    """Execute notebooks; return 0 when all succeeded without stderr output."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--out", type=Path, default=REPO / "book" / "chapters")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = ap.parse_args(argv)
    sources = args.notebooks or sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    params = {"preset": args.preset}
    for name, value in args.p:
        params[name] = yaml.safe_load(value)  # as papermill's own -p does
    failures: list[str] = []
    os.environ.update(KERNEL_ENV)  # the kernels papermill starts inherit this process's environment
    for src in sources:
        dest = args.out / src.name
        t0 = time.perf_counter()
        print(f"[execute] {src.name} (preset={args.preset}) ...", flush=True)
        try:
            papermill.execute_notebook(
                str(src),
                str(dest),
                parameters=params,
                kernel_name="python3",
                cwd=str(REPO),
                progress_bar=False,
            )
        except papermill.PapermillExecutionError as err:
            failures.append(f"{src.name}: {err.ename}: {err.evalue} (executed copy with the traceback: {dest})")
            print(f"[execute] {src.name} FAILED after {time.perf_counter() - t0:.1f} s", flush=True)
            continue
        failures.extend(postprocess(dest))
        print(f"[execute] {src.name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    if failures:
        print("\n".join(["", "Notebook execution problems:", *failures]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
