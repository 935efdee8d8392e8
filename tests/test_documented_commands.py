"""Every command printed in the README and the book's pages is run, at the smoke preset.

The commands are parsed out of the fenced ``bash`` blocks of ``README.md`` and ``book/*.md`` when the tests
are collected, so a command added to the documentation is covered without touching this file; one that no
rule below knows how to run fails ``test_every_documented_command_has_a_rule``.

How each kind of command is run (``.venv/bin/...`` becomes this interpreter's environment):

* ``papermill``, ``python -m samedge_lib.run``, the benchmark scripts, ``tools/fetch_data.py``: run for real
  in a scratch folder that links to the repository's sources, with ``--preset``/``-p preset`` replaced by
  ``smoke``, ``--steps`` dropped (the smoke preset's own), benchmark output redirected into the scratch
  folder and runs into ``$SAMEDGE_RUNS`` (a temporary folder, see ``conftest.py``). Commands meant for a GPU
  (``--preset paper``) are run the same way: their arguments are checked, not their scale.
* ``jupyter lab DIR``: started on a free local port; the test waits until its contents API lists the
  notebooks of ``DIR``, then stops it.
* ``make TARGET``: ``make -n`` (the targets exist and the Makefile parses; running ``make test`` inside
  the tests would recurse, and ``make book`` is what CI runs next).
* ``pip install``: each pinned requirement is looked up in the package index (``pip index versions``)
  without installing; ``conda``/``mamba env create -f FILE``: FILE is read as conda would (its pip section
  is checked in ``test_environments.py``); ``bash tools/gpu_benchmarks.sh`` needs ``nvidia-smi``: syntax only.
* ``torchrun``: run for real at the smoke preset with 2 gloo processes of one thread; a multi-node command
  becomes its one-node form (``--nnodes 1``, the rendezvous endpoint on a free local port).
* ``python -m samedge_lib.sweeps``: run for real (pipelines such as ``| xargs -P 2`` included) with
  ``--preset smoke`` given to every ``expand``/``count``/``run``, which replaces the sweep file's preset.
* ``sbatch``: run the way Slurm would on this one machine: ``sbatch`` starts the script with ``bash``, an array
  job for its first index (and the index after its last must be refused, so that an array from 0 covers the
  sweep exactly), a multi-node job as one node whose ``srun`` runs its command once and whose ``scontrol show
  hostnames`` is this machine; arguments at the smoke preset (``--preset smoke`` added to a sweep's).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "book").glob("*.md"))]
BIN = Path(sys.executable).parent
LINKED = [
    "notebooks",
    "tools",
    "benchmarks",
    "samedge_lib",
    "results",
    "binder",
    "sweeps",
    "requirements.txt",
    "pyproject.toml",
]


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` outside quotes that starts a word)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def documented_commands() -> list[tuple[str, str]]:
    """``(document, command)`` for every command line of the fenced bash blocks, continuations joined."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
            block = block.replace("\\\n", " ")
            for line in block.splitlines():
                command = strip_comment(line).strip()
                if command:
                    out.append((doc.relative_to(REPO).as_posix(), command))
    return out


def localise(command: str) -> str:
    """Point ``.venv/bin/...`` and a bare leading ``python`` at the interpreter running the tests."""
    command = re.sub(r"(?<![\w/.])\.venv/bin/python\b", shlex.quote(sys.executable), command)
    command = re.sub(r"(?<![\w/.])\.venv/bin/(\w[\w-]*)", lambda m: shlex.quote(str(BIN / m.group(1))), command)
    command = re.sub(r"^python\b", shlex.quote(sys.executable), command)
    return command


def at_smoke(command: str) -> str:
    """The same command at the smoke preset with the smoke preset's step count."""
    command = re.sub(r"(-p\s+preset\s+)\w+", r"\1smoke", command)
    command = re.sub(r"(--preset\s+)\w+", r"\1smoke", command)
    return re.sub(r"\s--steps\s+\d+", "", command)


#: (name, pattern on the command) in order; the first that matches decides how a command is run.
RULES = [
    ("make", re.compile(r"^(\w+=\S+\s+)*make\b")),
    ("conda", re.compile(r"^(\w+=\S+\s+)*(conda|mamba)\s+env\s+create\b")),
    ("pip", re.compile(r"^(\w+=\S+\s+)*(\S*/)?(pip|python\S* -m pip)\s+install\b")),
    ("gpu-script", re.compile(r"^(\w+=\S+\s+)*bash\s+tools/gpu_benchmarks\.sh\b")),
    ("jupyter-lab", re.compile(r"^(\S*/)?jupyter\s+lab\b")),
    ("papermill", re.compile(r"-m papermill\b")),
    ("sbatch", re.compile(r"^sbatch\b")),
    ("torchrun", re.compile(r"^(\S*/)?torchrun\b")),
    ("sweeps", re.compile(r"^(\S*/)?python\S*\s+-m\s+samedge_lib\.sweeps\b")),
    ("run", re.compile(r"^(\S*/)?python\S*\s+-m\s+samedge_lib\.run\b")),
    (
        "benchmark",
        re.compile(r"^(\S*/)?python\S*\s+benchmarks/(sharpness_benchmark|sam_speed|distributed_scaling)\.py\b"),
    ),
    ("fetch-data", re.compile(r"^(\S*/)?python\S*\s+tools/fetch_data\.py\b")),
]


def rule_of(command: str) -> str | None:
    return next((name for name, pattern in RULES if pattern.search(command)), None)


def run_key(command: str) -> str:
    """Commands that run identically once moved to the smoke preset are run once."""
    return at_smoke(localise(command)) if rule_of(command) in ("papermill", "run", "benchmark") else command


COMMANDS = documented_commands()
UNIQUE = list({run_key(cmd): cmd for _, cmd in reversed(COMMANDS)}.values())[::-1]


def test_the_documentation_has_commands_to_check():
    assert any(rule_of(c) == "papermill" for c in UNIQUE) and any(rule_of(c) == "make" for c in UNIQUE)


def test_every_documented_command_has_a_rule():
    unknown = [f"{doc}: {cmd}" for doc, cmd in COMMANDS if rule_of(cmd) is None]
    assert not unknown, "no rule to run these documented commands; add one:\n" + "\n".join(unknown)


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    """A scratch working folder that sees the repository's sources but keeps every output."""
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def shell(command: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or os.environ
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_jupyter_lab(command: str, tmp_path: Path) -> None:
    args = shlex.split(localise(command))
    root = next((a for a in args[2:] if not a.startswith("-")), ".")
    port, token = free_port(), "documented-command-test"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    extra = ["--no-browser", f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:  # CI runs as root, where JupyterLab refuses to start without this (a reader is not root)
        extra.append("--allow-root")
    server = subprocess.Popen(
        [*args, *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, listing = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/contents?token={token}"
                with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (loopback only)
                    listing = json.load(reply)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, f"JupyterLab did not serve: {server.stderr.read() if server.poll() else ''}"
        served = {item["name"] for item in listing["content"]}
        expected = {p.name for p in (REPO / root).glob("*.ipynb")}
        assert expected and expected <= served, f"JupyterLab serves {sorted(served)}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def one_node(command: str) -> str:
    """A ``torchrun`` command at the smoke preset on this machine: 2 processes, one node, a free rendezvous port."""
    command = at_smoke(localise(command))
    command = re.sub(r"^torchrun\b", shlex.quote(str(BIN / "torchrun")), command)
    command = re.sub(r"--nproc-per-node[= ]\S+", "--nproc-per-node 2", command)
    command = re.sub(r"--nnodes[= ]\S+", "--nnodes 1", command)
    return re.sub(r"--rdzv-endpoint[= ]\S+", f"--rdzv-endpoint localhost:{free_port()}", command)


def sweeps_at_smoke(command: str) -> str:
    """A sweeps command (or pipeline) with ``--preset smoke`` for every sweep it expands."""
    command = at_smoke(localise(command))
    return re.sub(r"(-m samedge_lib\.sweeps\s+(expand|count|run))\b", r"\1 --preset smoke", command)


#: ``sbatch``, ``srun`` and ``scontrol`` as Slurm would run a job on this one machine (see the module docstring).
FAKE_SLURM = r"""
sbatch() {
    local array=""
    while [[ $# -gt 0 && $1 == -* ]]; do
        case $1 in --array=*) array=${1#--array=} ;; esac
        shift
    done
    local script=$1
    shift
    if [[ -z $array ]]; then
        SLURM_JOB_ID=4242 SLURM_NNODES=1 SLURM_JOB_NODELIST=localhost NPROC_PER_NODE=2 bash "$script" "$@"
        return
    fi
    local first=${array%-*} last=${array#*-}
    SLURM_ARRAY_TASK_ID=$first bash "$script" "$@" --preset smoke || return
    local code=0
    SLURM_ARRAY_TASK_ID=$((last + 1)) bash "$script" "$@" --preset smoke 2>/dev/null || code=$?
    if [[ $code -ne 2 ]]; then echo "array index $((last + 1)) is not refused (exit $code)" >&2; return 1; fi
}
srun() {
    while [[ $# -gt 0 && $1 == -* ]]; do shift; done
    "$@"
}
scontrol() { echo localhost; }
export -f srun scontrol
"""


def check_pip(command: str) -> None:
    args = shlex.split(command)
    args = args[args.index("install") + 1 :]
    requirements, i = [], 0
    while i < len(args):
        if args[i] in ("-r", "--requirement"):
            path = REPO / args[i + 1]
            assert path.is_file(), f"{args[i + 1]} does not exist"
            requirements += [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
            i += 2
            continue
        requirements.append(args[i])
        i += 1
    pinned = [Requirement(r) for r in requirements if r and not r.startswith("-")]
    assert pinned, f"nothing to install in {command!r}"
    for req in pinned:
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req}: documented installs are pinned"
        found = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", req.name], capture_output=True, text=True, timeout=300
        )
        if found.returncode != 0 and "No matching distribution" not in found.stderr + found.stdout:
            pytest.skip(f"package index not reachable: {found.stderr.strip()[-200:]}")
        assert spec.version in re.split(r"[\s,]+", found.stdout), f"{req}: the index has no such version"


@pytest.mark.notebooks
@pytest.mark.parametrize("command", UNIQUE, ids=[c[:90] for c in UNIQUE])
def test_documented_command_runs(command: str, sandbox: Path):
    rule = rule_of(command)
    if rule is None:
        pytest.fail("no rule (see test_every_documented_command_has_a_rule)")
    if rule == "make":
        env_part, make_part = re.match(r"^((?:\w+=\S+\s+)*)make\b(.*)$", command).groups()
        proc = shell(f"{env_part}make -n {make_part}", REPO)
        assert proc.returncode == 0, proc.stderr
        return
    if rule == "conda":
        path = REPO / shlex.split(command)[shlex.split(command).index("-f") + 1]
        env = yaml.safe_load(path.read_text())
        assert env["name"] and env["dependencies"], f"{path.name} is not a conda environment file"
        return
    if rule == "pip":
        check_pip(re.sub(r"^(\w+=\S+\s+)*", "", command))
        return
    if rule == "gpu-script":
        script = REPO / re.search(r"bash\s+(\S+)", command).group(1)
        assert shell(f"bash -n {shlex.quote(str(script))}", REPO).returncode == 0
        return
    if rule == "jupyter-lab":
        check_jupyter_lab(command, sandbox)
        return
    if rule in ("torchrun", "sweeps", "sbatch"):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port()), "PYTHON": sys.executable}
        if rule == "torchrun":
            run = one_node(command)
        elif rule == "sweeps":
            run = sweeps_at_smoke(command)
        else:
            run = FAKE_SLURM + at_smoke(localise(command))
        proc = shell(run, sandbox, timeout=900, env=env)
        assert proc.returncode == 0, (
            f"{run}\nfailed with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
        return
    run = at_smoke(localise(command))
    if rule == "papermill" and "--help-notebook" not in run and "-p preset" not in run:
        run = run.replace("-m papermill", "-m papermill -p preset smoke", 1)
    if rule == "benchmark" and "--out" not in run:
        run += f" --out-dir {shlex.quote(str(sandbox / 'benchmark-out'))}"
    proc = shell(run, sandbox, timeout=900)
    assert proc.returncode == 0, f"{run}\nfailed with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    if rule == "papermill" and "--help-notebook" not in run:
        outputs = [p for p in sandbox.glob("*.ipynb")]
        assert outputs, "papermill wrote no output notebook"
