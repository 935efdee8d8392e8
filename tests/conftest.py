"""Shared test fixtures: point the data loaders at the read-only shared copy and runs at a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SAMEDGE_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The datasets (read-only); tests needing real data skip with a reason when absent."""
    if not (SHARED_DATA / "PROVENANCE.md").exists() and not os.environ.get("SAMEDGE_DATA"):
        pytest.skip(f"no dataset copy at {SHARED_DATA}; set SAMEDGE_TEST_DATA or SAMEDGE_DATA")
    return Path(os.environ.get("SAMEDGE_DATA") or SHARED_DATA)


if "SAMEDGE_DATA" not in os.environ and (SHARED_DATA / "PROVENANCE.md").exists():
    os.environ["SAMEDGE_DATA"] = str(SHARED_DATA)


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
