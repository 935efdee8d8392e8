"""Insert or refresh the Colab set-up cell in every chapter notebook (idempotent).

A notebook opened on Colab from its GitHub URL runs alone, without this repository: no library, no
stored results, no data. The set-up cell fixes that on Colab only (it tests ``"google.colab" in
sys.modules``, so it does nothing under papermill, Binder, JupyterLab or the book build): it clones the
repository named in ``_config.yml`` at the published branch, installs ``samedge_lib`` from the clone
without touching Colab's own torch/numpy/pandas (``--no-deps``; Colab ships them), adds ``myst-nb`` at the
pinned version for ``glue``, and fetches the datasets with ``tools/fetch_data.py``. The cell is tagged
``remove-cell``, so the rendered book does not show it, and sits right before the ``parameters`` cell,
so the cell after the parameters is still their validation.

The cell is identical in every notebook and generated from ``_config.yml`` and ``requirements.txt``;
rerun this tool after changing either, or after adding a notebook.

Usage: python tools/notebook_setup_cell.py [--check] [NOTEBOOK ...]   (default: notebooks/[0-9]*.ipynb)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bookinfo import REPO, Repository, repository  # noqa: E402

TAG = "colab-setup"
CELL_ID = "colab-setup"
CLONE_DIR = "/content/samedge"


def pinned(package: str, requirements: Path = REPO / "requirements.txt") -> str:
    """``package==version`` as pinned in ``requirements.txt``."""
    for line in requirements.read_text().splitlines():
        if re.fullmatch(rf"{re.escape(package)}==\S+", line.strip(), flags=re.IGNORECASE):
            return line.strip()
    raise ValueError(f"{requirements} pins no version of {package}")


def setup_source(repo: Repository, myst_nb: str) -> str:
    """The set-up cell's code for ``repo`` (its URL and branch) and the ``myst-nb==X`` requirement."""
    return f'''# Set-up for Google Colab only (it does nothing anywhere else, and the book does not show it).
# On Colab, run it first: it clones this book's repository, installs its library samedge_lib and
# fetches the datasets (checksums verified). Binder and a local checkout are already set up.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    _repo, _branch, _clone = "{repo.url}", "{repo.branch}", "{CLONE_DIR}"
    if not os.path.isdir(_clone):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", _branch, _repo, _clone], check=True)
    _pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*_pip, "-e", _clone, "{myst_nb}"], check=True)
    subprocess.run([sys.executable, os.path.join(_clone, "tools", "fetch_data.py")], check=True)
    sys.path.insert(0, _clone)  # an editable install is only seen by new processes; this kernel needs the path'''


def setup_cell(source: str) -> nbformat.NotebookNode:
    """A code cell with the set-up source, a stable id and the tags that identify and hide it."""
    cell = nbformat.v4.new_code_cell(source, id=CELL_ID)
    cell.metadata["tags"] = [TAG, "remove-cell"]
    return cell


def apply(nb: nbformat.NotebookNode, source: str) -> bool:
    """Put exactly one set-up cell with ``source`` right before the parameters cell; return whether it changed."""
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(params)}")
    wanted = setup_cell(source)
    existing = [i for i, c in enumerate(nb.cells) if TAG in c.get("metadata", {}).get("tags", [])]
    if existing == [params[0] - 1] and nb.cells[existing[0]] == wanted:
        return False
    nb.cells = [c for c in nb.cells if TAG not in c.get("metadata", {}).get("tags", [])]
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    nb.cells.insert(at, wanted)
    return True


def main(argv: list[str] | None = None) -> int:
    """Refresh the cell in the given notebooks (``--check``: only report which are stale, exit 1 if any)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs the tool")
    args = ap.parse_args(argv)
    source = setup_source(repository(), pinned("myst-nb"))
    stale = []
    for path in args.notebooks or sorted((REPO / "notebooks").glob("[0-9]*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        try:
            changed = apply(nb, source)
        except ValueError as err:
            print(f"{path}: {err}", file=sys.stderr)
            return 2
        if changed:
            stale.append(path)
            if not args.check:
                nbformat.write(nb, path)
    verb = "need" if args.check else "updated"
    print(
        f"notebook_setup_cell: {len(stale)} notebook(s) {verb} the Colab set-up cell"
        + "".join(f"\n  {p}" for p in stale)
    )
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
