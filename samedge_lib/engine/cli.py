"""Command line: run one experiment (or load it if it already finished, or resume it).

Examples::

    python -m samedge_lib.run --task mnist --preset cpu --rho 0.1
    python -m samedge_lib.run --task mnist --preset paper --rho 0.1 --steps 3000 --tf32
    python -m samedge_lib.run --task shakespeare --preset cpu --rho 0.1 --set k=3 --set measure_every=10
    torchrun --nproc-per-node 2 -m samedge_lib.run --task mnist --preset cpu --rho 0.1   # data-parallel

Every field of :class:`~samedge_lib.record.config.RunConfig` can be set with ``--set name=value``
(values parsed as JSON when possible). A killed run resumes from its last commit when the same
command is run again; a finished one is loaded (``--force`` recomputes). Only one process computes
in a run folder at a time: a second one exits (code 4) or, with ``--wait``, waits and then loads.

Every error a user can cause ends with one line on stderr and one of these exit codes:

====  ===========================================================================================
0     finished (computed now, or loaded)
2     invalid input: arguments, configuration values, data ranges (nothing is computed)
3     diverged (also when a diverged run is loaded again); the rows up to the divergence are kept
4     the run folder is in use by another process (wait for it, or use ``--wait``)
5     data or device error: dataset missing or corrupt, no GPU, out of memory
6     the run folder cannot be used: a damaged or foreign file, another configuration, no write access, a full
      file system (the line says how much space a commit needs; the last commit is kept: rerun with space)
7     torchrun: a process could not join the others, or ended while they computed (its own line says why)
75    stopped by ``--max-seconds`` before the end; run the same command again to continue
130   interrupted (Ctrl-C or SIGTERM) after saving the last completed step; run again to continue
====  ===========================================================================================

Exit code 1 with a traceback means a bug in this library (the run's status then says ``failed``).

Under ``torchrun`` (:mod:`samedge_lib.engine.distributed`) rank 0 prints the results and every error the ranks share;
another rank prints only an error that happened on it alone. Every rank exits with the code above; ``torchrun``
itself then exits with 1 and a report whose "Root Cause" names the first rank's exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
from typing import NoReturn

from samedge_lib.engine import distributed
from samedge_lib.engine.data import DataError
from samedge_lib.engine.distributed import DistributedError
from samedge_lib.engine.train import DeviceError, RunDivergedError, RunInterruptedError, run
from samedge_lib.record.config import DEVICES, OPTIMIZERS, PRESETS, TASKS, ConfigError, RunConfig, preset_config
from samedge_lib.record.results import summarize
from samedge_lib.record.runfolder import RunFolderError, RunLockedError

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_DIVERGED = 3
EXIT_LOCKED = 4
EXIT_DATA_DEVICE = 5
EXIT_FOLDER = 6
EXIT_DISTRIBUTED = 7
EXIT_STOPPED = 75
EXIT_INTERRUPTED = 130

PROG = "samedge-run"

#: ``--set`` names that have their own option.
_OWN_OPTION = {"task": "--task", "rho": "--rho"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"{PROG}: invalid arguments: {message} (see --help)\n" if _is_rank0() else None)


def one_line(text: object) -> str:
    """A (possibly multi-line) message as one line: sentences joined by a space, list items by ``; ``."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    out = ""
    for ln in lines:
        out += ("" if not out else " " if out.endswith((":", ".")) else "; ") + ln
    return out


def _parse_set(items: list[str]) -> dict:
    """``name=value`` pairs (values parsed as JSON when they are JSON) for known config fields."""
    known = [f.name for f in dataclasses.fields(RunConfig) if f.name not in _OWN_OPTION]
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r} (e.g. --set k=3)")
        if key in _OWN_OPTION:
            raise ConfigError(f"--set {key}=... is not allowed; use {_OWN_OPTION[key]} {raw}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--set {key}: unknown field{hint}; the fields are: {', '.join(known)}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _parser() -> _Parser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--rho", type=float, default=0.0, help="SAM radius; 0 = GD (default)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: gd if rho == 0 else sam")
    p.add_argument("--eta", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (default: strict float32)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any RunConfig field")
    p.add_argument("--root", help="folder of run folders (default $SAMEDGE_RUNS or <repo>/runs)")
    p.add_argument("--data-dir", help="dataset folder (default $SAMEDGE_DATA or ~/.cache/samedge/data)")
    p.add_argument("--force", action="store_true", help="recompute even if a finished run exists")
    p.add_argument("--wait", action="store_true", help="if another process computes this run, wait for it")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-seconds", type=float, help="stop with a commit after this long; rerun to continue")
    return p


def _refuse_conflicts(args: argparse.Namespace, overrides: dict) -> None:
    """An option and a ``--set`` of the same field that disagree: which one was meant cannot be guessed."""
    options = {name: getattr(args, name) for name in ("optimizer", "eta", "steps", "seed", "device")}
    if args.tf32:
        options["tf32"] = True
    for name, value in options.items():
        if value is not None and name in overrides and overrides[name] != value:
            flag = "--tf32" if name == "tf32" else f"--{name} {value}"
            raise ConfigError(f"{flag} and --set {name}={overrides[name]!r} disagree; give {name} once")


def _json_safe(obj: object) -> object:
    """``obj`` for ``json.dumps``: NaN and infinities as ``null`` (JSON has no such numbers), numbers as floats."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    try:
        value = float(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(obj)
    return value if math.isfinite(value) else None


def _config(args: argparse.Namespace) -> RunConfig:
    overrides = _parse_set(args.set)
    _refuse_conflicts(args, overrides)
    for name in ("optimizer", "eta", "steps", "seed", "device"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.tf32:
        overrides["tf32"] = True
    if not math.isfinite(args.rho):
        raise ConfigError(f"rho={args.rho!r} must be a finite number >= 0")
    if args.max_seconds is not None and not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise ConfigError(f"--max-seconds {args.max_seconds:g} must be a finite number of seconds > 0")
    return preset_config(args.task, args.preset, rho=args.rho, **overrides)


def _is_rank0() -> bool:
    """Whether this process prints the run's results: always, except on ranks > 0 of a torchrun run."""
    return distributed.env_rank() == 0


def _fail(code: int, kind: str, err: object) -> int:
    """Print the one line of ``err`` (rank 0; a rank > 0 only for an error of its own) and return ``code``.

    Under torchrun every rank meets the same errors (the same arguments, the same shared decisions) and rank 0 prints
    them; a rank > 0 prints only what happened on it alone (marked by ``Communicator.own_error``), e.g. running out of
    memory on its GPU, which rank 0 sees only as a lost peer.
    """
    if _is_rank0():
        print(f"{PROG}: {kind}: {one_line(err)}", file=sys.stderr, flush=True)
    elif getattr(err, "local", False):
        rank = f"rank {distributed.env_rank()} of {os.environ.get('WORLD_SIZE', '?')}"
        print(f"{PROG} ({rank}): {kind}: {one_line(err)}", file=sys.stderr, flush=True)
    return code


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m samedge_lib.run`` / ``samedge-run``; returns the exit code (module docstring)."""
    args = _parser().parse_args(argv)
    try:
        cfg = _config(args)
    except (ConfigError, TypeError) as err:
        return _fail(EXIT_INVALID, "invalid configuration", err)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run(
            cfg,
            root=args.root,
            data_dir=args.data_dir,
            force=args.force,
            progress=not args.no_progress,
            raise_on_divergence=True,
            max_seconds=args.max_seconds,
            wait=args.wait,
        )
    except ConfigError as err:
        return _fail(EXIT_INVALID, "invalid configuration", err)
    except RunDivergedError as err:
        return _fail(EXIT_DIVERGED, "diverged", err)
    except RunLockedError as err:
        return _fail(EXIT_LOCKED, "run folder in use", err)
    except DataError as err:
        return _fail(EXIT_DATA_DEVICE, "data error", err)
    except DeviceError as err:
        return _fail(EXIT_DATA_DEVICE, "device error", err)
    except DistributedError as err:
        return _fail(EXIT_DISTRIBUTED, "distributed run error", err)
    except RunFolderError as err:
        return _fail(EXIT_FOLDER, "run folder error", err)
    except OSError as err:
        return _fail(EXIT_FOLDER, "file system error", f"{err.strerror or err}: {err.filename or ''}")
    except RunInterruptedError as err:
        return _fail(EXIT_INTERRUPTED, "interrupted", err)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted", "stopped before the run began; nothing was computed")
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if _is_rank0():
        print(f"run folder: {result.path}")
        print(json.dumps(_json_safe(summarize(result)), indent=2, allow_nan=False))
    if result.state == "interrupted":
        stopped = result.status.get("stopped_at")
        return _fail(
            EXIT_STOPPED,
            "stopped",
            f"--max-seconds {args.max_seconds:g} reached at step {stopped} of {cfg.steps}; run the same command "
            f"again to continue",
        )
    return EXIT_OK


def entry() -> None:
    """``python -m samedge_lib.run``: :func:`main`, then leave torchrun's process group, then exit with the code."""
    try:
        code = main()
    finally:
        distributed.shutdown()  # leave torchrun's process group (a no-op in a plain process)
    sys.exit(code)


if __name__ == "__main__":
    entry()
