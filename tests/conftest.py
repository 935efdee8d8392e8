"""Shared test fixtures: the datasets where the library finds them, and runs in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The Makefile's convention, for pytest run directly: a sibling ../shared/data copy stands in for an unset
# SAMEDGE_DATA. From here on the tests use the library's own rule (samedge_lib.engine.data.search_dirs).
_SIBLING = REPO.parent / "shared" / "data"
if not os.environ.get("SAMEDGE_DATA") and (_SIBLING / "PROVENANCE.md").exists():
    os.environ["SAMEDGE_DATA"] = str(_SIBLING)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data folder the library resolves (``$SAMEDGE_DATA``, else the per-user cache); tests that need
    real data skip with a reason when it does not hold them (nothing is downloaded for a test).
    """
    from samedge_lib.engine.data import MNIST_FILES, resolve_data_dir

    folder = resolve_data_dir()
    if not all((folder / f.relpath).is_file() for f in MNIST_FILES.values()):
        pytest.skip(f"no datasets in {folder}: set SAMEDGE_DATA to a data folder (see the README)")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _isolated_runs_root(tmp_path_factory: pytest.TempPathFactory):
    """Runs made by tests (and by notebooks executed in tests) go to a temporary folder."""
    old = os.environ.get("SAMEDGE_RUNS")
    os.environ["SAMEDGE_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    yield
    if old is None:
        os.environ.pop("SAMEDGE_RUNS", None)
    else:
        os.environ["SAMEDGE_RUNS"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for tests that compare a resumed run with an uninterrupted one bitwise: the forked
    children of the fault drill pin one (OpenMP pools do not survive a fork) and its CLI subprocesses get
    ``OMP_NUM_THREADS=1``, so the in-process reference must compute with one too.

    Bitwise equality of a resumed run holds at a fixed thread count: a reduction split over two threads adds in
    another order than over one (the last bits of ``grad_norm`` differ from step 0 on).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
