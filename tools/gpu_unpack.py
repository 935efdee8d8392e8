"""Put what one GPU session of ``tools/gpu_paper_runs.py`` returned into ``results/`` and ``runs/gpu``.

The session's output folder holds ``session.json``, one archive per stage and, when a run was left unfinished,
that run's folder with its checkpoint in parts (``resume.tar.00`` ...). This script

* copies every run folder into ``results/paper/<run>/`` (checkpoints stay out of the repository). A stored
  folder of the same configuration with fewer steps -- the same run, cut shorter -- is removed, since the
  chapters read one stored run per task and radius; a stored folder with more steps than the returned one is
  kept instead;
* copies the benchmark files into ``results/benchmark/`` and the benchmarks' logs beside them;
* makes sure every result says where it comes from: each run folder's ``provenance.json`` and each benchmark
  file's ``"provenance"`` (added from the session's record when a file has none; where the GPU machine had no
  git checkout, the commit given to the session with ``--source-commit`` is filled in and marked as such);
* appends the session's log (the plan, expected and measured finish steps) to ``results/paper/gpu_session.log``
  under a header naming the session, once;
* joins the checkpoint parts, checks them against the session's sha256, and puts that run folder into
  ``runs/gpu/``, from where the next session resumes it (carry ``runs/gpu`` to the GPU machine).

Usage::

    python tools/gpu_unpack.py FOLDER                  # FOLDER: the files the GPU session returned
    python tools/gpu_unpack.py FOLDER --results R --runs RUNS --any-preset   # elsewhere, any preset (tests)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from samedge_lib.record import runfolder as rf  # noqa: E402
from samedge_lib.record.config import RunConfig  # noqa: E402

SCHEMA = "samedge-gpu-session/1"
RUN_FILES = (rf.CONFIG, rf.PROVENANCE, rf.STATUS, rf.MEASUREMENTS, rf.STEPS)
#: The only member names an archive may hold (nothing is written outside the folders they name).
MEMBER = re.compile(
    r"^(runs/(?P<run>[A-Za-z0-9._-]+)/(?P<file>[A-Za-z0-9._-]+)|(?P<kind>benchmark|logs)/(?P<name>[A-Za-z0-9._-]+))$"
)
SOURCE_NOTE = "the session's --source-commit (the GPU machine had no git checkout)"


class UnpackError(RuntimeError):
    """The returned folder is not a session's output, or is damaged."""


def _steps_done(folder: Path) -> int:
    try:
        return int(rf.read_status(folder).get("steps_done") or 0)
    except rf.RunFolderError:
        return -1


def _fill_commit(prov: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    """``prov`` with the session's source commit where it names none."""
    git = prov.get("git") or {}
    if git.get("commit") is None and session.get("source_commit"):
        prov["git"] = {"commit": session["source_commit"], "dirty": None, "from": SOURCE_NOTE}
    return prov


def read_members(archive: Path) -> dict[str, bytes]:
    """Every file of ``archive`` by name, after checking each name against :data:`MEMBER`."""
    out = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.isdir():
                continue
            if not m.isfile() or not MEMBER.match(m.name):
                raise UnpackError(f"{archive.name}: unexpected member {m.name!r}")
            out[m.name] = tar.extractfile(m).read()
    return out


def import_run(name: str, files: dict[str, bytes], paper: Path, session: dict, say: Any) -> None:
    """One returned run folder into ``paper``: replaces its shorter stored versions, never a longer one."""
    missing = [f for f in (rf.CONFIG, rf.STATUS, rf.PROVENANCE) if f not in files]
    if missing:
        raise UnpackError(f"run {name}: {', '.join(missing)} missing")
    cfg = RunConfig.from_dict(json.loads(files[rf.CONFIG]))
    if cfg.run_name() != name:
        raise UnpackError(f"run {name}: its config.json names {cfg.run_name()}")
    steps = int(json.loads(files[rf.STATUS]).get("steps_done") or 0)
    dest = paper / name
    if dest.exists() and _steps_done(dest) > steps:
        say(f"kept {dest}: it holds {_steps_done(dest)} steps, the returned folder {steps}")
        return
    prov = _fill_commit(json.loads(files[rf.PROVENANCE]), session)
    files = dict(files, **{rf.PROVENANCE: (json.dumps(prov, indent=2) + "\n").encode()})
    tmp = paper / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f, data in files.items():
        (tmp / f).write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    say(f"run {name}: {json.loads(files[rf.STATUS]).get('state')} at step {steps} -> {dest}")
    for other in sorted(paper.iterdir()):
        if other == dest or not (other / rf.CONFIG).exists():
            continue
        try:
            ocfg = rf.read_config(other)
        except rf.RunFolderError:
            continue
        same = ocfg.replace(steps=cfg.steps).identity() == cfg.identity()
        done = _steps_done(other)
        if same and ocfg.identity() != cfg.identity() and done <= steps:
            shutil.rmtree(other)
            say(f"  removed {other.name} ({done} of {ocfg.steps} steps): the same run, shorter")


def import_benchmark(name: str, data: bytes, bench: Path, session: dict, say: Any) -> None:
    """One benchmark file into ``bench``, with a provenance record."""
    if name.endswith(".json"):
        obj = json.loads(data)
        if "provenance" not in obj:
            obj["provenance"] = dict(session.get("provenance") or {}, added_from="the session's record")
        obj["provenance"] = _fill_commit(obj["provenance"], session)
        data = json.dumps(obj, indent=1).encode()
    bench.mkdir(parents=True, exist_ok=True)
    (bench / name).write_bytes(data)
    say(f"benchmark {name} -> {bench / name}")


def append_log(session: dict, log: Path, say: Any) -> None:
    """The session's log under a header naming it, unless that header is there already."""
    head = (
        f"# GPU session {session.get('started_utc')} on {session.get('device')}, preset {session.get('preset')}, "
        f"commit {session.get('source_commit')}, code sha256 {str(session.get('code_sha256'))[:16]}"
    )
    old = log.read_text() if log.exists() else ""
    if head in old:
        say(f"{log}: this session's log is there already")
        return
    text = "\n".join([head, *session.get("log", [])]) + "\n"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(old + ("" if not old or old.endswith("\n") else "\n") + text)
    say(f"log -> {log} ({len(session.get('log', []))} lines)")


def import_resume(folder: Path, session: dict, runs: Path, say: Any) -> None:
    """Join the checkpoint parts, check them, and put the run folder into ``runs``."""
    info = session.get("resume")
    if not info:
        return
    parts = [folder / f"resume.tar.{i:02d}" for i in range(int(info["parts"]))]
    absent = [p.name for p in parts if not p.exists()]
    if absent:
        raise UnpackError(f"checkpoint parts missing: {', '.join(absent)}")
    data = b"".join(p.read_bytes() for p in parts)
    if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise UnpackError("the joined checkpoint parts do not match the session's sha256: damaged")
    name = info["run"]
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            match = MEMBER.match(m.name)
            if not m.isfile() or not match or match.group("run") != name:
                raise UnpackError(f"resume archive: unexpected member {m.name!r}")
            files[match.group("file")] = tar.extractfile(m).read()
    dest = runs / name
    steps = int(json.loads(files[rf.STATUS]).get("steps_done") or 0)
    if dest.exists() and _steps_done(dest) > steps:
        say(f"kept {dest}: it holds {_steps_done(dest)} steps, the returned checkpoint {steps}")
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f, blob in files.items():
        (dest / f).write_bytes(blob)
    say(f"resume: {name} at step {steps} with its checkpoint -> {dest} (carry it to continue there)")


def main(argv: list[str] | None = None) -> int:
    """Unpack one session's output folder; exit 0, or 2 with one line when it cannot be used."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="the files the GPU session returned")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "gpu", help="where unfinished runs go on")
    ap.add_argument("--any-preset", action="store_true", help="accept a session of another preset than paper")
    args = ap.parse_args(argv)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        session = json.loads((args.folder / "session.json").read_text())
        if session.get("schema") != SCHEMA:
            raise UnpackError(f"session.json has schema {session.get('schema')!r}, this script reads {SCHEMA!r}")
        if session.get("preset") != "paper" and not args.any_preset:
            raise UnpackError(f"the session ran preset {session.get('preset')!r}: not for results/ (--any-preset)")
        paper, bench = args.results / "paper", args.results / "benchmark"
        for stage in session.get("stages", {}).values():
            archive = stage.get("archive")
            if not archive:
                continue
            if not (args.folder / archive).exists():
                raise UnpackError(f"{archive} is named in session.json but missing")
            members = read_members(args.folder / archive)
            runs: dict[str, dict[str, bytes]] = {}
            for member, data in members.items():
                m = MEMBER.match(member)
                if m.group("run"):
                    runs.setdefault(m.group("run"), {})[m.group("file")] = data
                else:
                    import_benchmark(m.group("name"), data, bench, session, say)
            for name, files in runs.items():
                import_run(name, files, paper, session, say)
        append_log(session, paper / "gpu_session.log", say)
        import_resume(args.folder, session, args.runs, say)
    except (OSError, ValueError, UnpackError, tarfile.TarError, rf.RunFolderError) as err:
        print(f"gpu_unpack: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
