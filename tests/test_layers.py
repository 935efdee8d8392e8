"""The layers hold at run time: reading results loads no torch, and stored runs keep their identity (hash)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


TORCH_LOADED = "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"


def _torch_modules(stdout: str) -> list[str]:
    return json.loads(stdout.strip().splitlines()[-1])


READ_STORED = """
import json, sys
from samedge_lib.record import results
runs = results.stored_runs()
assert runs, "no stored runs"
for r in runs:  # the identity hash of every stored configuration is the one in its folder's name
    assert r.config.run_name() == r.path.name, (r.config.run_name(), r.path.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "torch")))
"""


def test_reading_the_stored_runs_loads_no_torch_and_keeps_their_hashes():
    assert _torch_modules(_python(READ_STORED)) == []


@pytest.mark.parametrize(
    "module",
    [
        "samedge_lib",
        "samedge_lib.theory.rules",
        "samedge_lib.record.config",
        "samedge_lib.reading.claims",
        "samedge_lib.reading.plots",
        "samedge_lib.chapters.paper_claims",
        "samedge_lib.chapters.chapter",
        "samedge_lib.chapters.benchmark_report",
        "samedge_lib.chapters.benchmark_summary",
    ],
)
def test_the_reading_side_imports_without_torch(module):
    code = (
        f"import json, sys, {module}\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"
    )
    assert _torch_modules(_python(code)) == []


def test_the_engine_does_load_torch():
    """The check above can fail: the engine's modules do pull torch in."""
    code = (
        "import json, sys, samedge_lib.engine.train\nprint(json.dumps(sorted(m for m in sys.modules if m == 'torch')))"
    )
    assert _torch_modules(_python(code)) == ["torch"]
