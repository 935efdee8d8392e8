"""The install paths other than `make setup`: conda/mamba's environment.yml, Binder's binder/, the data fetcher."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def requirement_lines(path: Path) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines() if ln.split("#", 1)[0].strip()]


def pins(lines: list[str]) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line (names normalised as pip does)."""
    out = {}
    for line in lines:
        if line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{line}: not pinned"
        out[req.name.lower().replace("_", "-")] = spec.version
    return out


REQUIREMENTS = pins(requirement_lines(REPO / "requirements.txt"))


def test_environment_yml_lists_the_pinned_packages_itself_and_installs_the_project_editable():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    (pip_section,) = [d for d in deps if isinstance(d, dict)]
    lines = pip_section["pip"]
    assert not any(line.startswith(("-r", "--requirement")) for line in lines), "mamba does not follow -r"
    assert "-e ." in lines, "the project itself, editable, relative to environment.yml"
    listed = pins(lines)
    assert {k: v for k, v in listed.items() if k in REQUIREMENTS} == REQUIREMENTS, "pins differ from requirements.txt"
    assert "jupyterlab" in listed


def test_binder_takes_the_cpu_build_of_the_same_torch_and_the_same_pins():
    lines = requirement_lines(REPO / "binder" / "requirements.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch = [Requirement(ln) for ln in lines if ln.startswith("torch")]
    assert len(torch) == 1
    (spec,) = torch[0].specifier
    version = Version(spec.version)
    assert version.local == "cpu" and version.public == REQUIREMENTS["torch"]
    # the local label must satisfy the project's own pin, or pip would refuse the combination
    assert Requirement(f"torch=={REQUIREMENTS['torch']}").specifier.contains(version)
    nested = [ln.split(None, 1)[1] for ln in lines if ln.startswith("-r ")]
    assert [(REPO / "binder" / n).resolve() for n in nested] == [REPO / "requirements.txt"]
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_binder_postbuild_is_executable_valid_bash_and_calls_existing_tools():
    post = REPO / "binder" / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR, "repo2docker runs postBuild only when it is executable"
    assert subprocess.run(["bash", "-n", str(post)]).returncode == 0
    text = post.read_text()
    assert "pip install --no-cache-dir --no-deps -e ." in text
    assert "python tools/fetch_data.py" in text and (REPO / "tools" / "fetch_data.py").is_file()


def run_fetch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "fetch_data.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )


def test_fetch_data_verifies_the_real_datasets(data_dir):
    proc = run_fetch("--no-download", env={**os.environ, "SAMEDGE_DATA": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    for name in ("mnist", "cifar10", "shakespeare"):
        assert f"fetch_data: {name}: verified" in proc.stdout


def test_fetch_data_reports_a_missing_dataset_in_one_line_per_dataset(tmp_path):
    env = {**os.environ, "SAMEDGE_DATA": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_fetch("--no-download", "shakespeare", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("fetch_data: shakespeare: ") and "Traceback" not in proc.stderr
    bad = run_fetch("nonsense", env=env)
    assert bad.returncode == 2 and "unknown dataset(s) nonsense" in bad.stderr
