"""Sweeps: a YAML file (task, preset, a grid of parameters, seeds) -> run configurations -> one command per run.

A sweep file holds one sweep, or several under ``sweeps:``::

    task: mnist            # mnist | cifar10 | shakespeare
    preset: cpu            # smoke | cpu | paper: the values every run starts from
    grid:                  # every combination, the first key outermost
      eta: [1.0, 1.25]
      rho: [0.0, 0.1]      # 0 = GD, > 0 = SAM (unless the grid or `set` names an optimizer)
    seeds: [0, 1, 2]       # the outermost loop; a shorthand for `seed` in the grid
    set:                   # fixed overrides of any RunConfig field
      k: 2

Each combination is :func:`samedge_lib.record.config.preset_config` of the task and preset with the combination and
``set`` as overrides, exactly what ``python -m samedge_lib.run --task T --preset P --rho R --set name=value``
builds, so :func:`command` writes the command of each run and that command computes the same configuration.
A run is identified by its configuration's hash (:meth:`~samedge_lib.record.config.RunConfig.identity`, in its folder's
name): the same configuration listed twice is one run, and a scheduler may run the items in any order, retry them
(a killed run resumes from its checkpoint) and skip finished ones (``expand --pending``; a finished run's command
only loads it).

The book's chapters sweep through the same expansion (:func:`samedge_lib.chapters.experiments.sweep_configs`), and
``python -m samedge_lib.sweeps book TASK --preset cpu`` writes a chapter's sweep as a file, so its runs can be
computed on a cluster and the book build loads them.

Command line (every mistake is one line on stderr and exit code 2)::

    python -m samedge_lib.sweeps expand FILE [--pending] [--format command|index|json] [RUN OPTIONS]
    python -m samedge_lib.sweeps count FILE
    python -m samedge_lib.sweeps run FILE --index I [RUN OPTIONS]      # item I, e.g. $SLURM_ARRAY_TASK_ID
    python -m samedge_lib.sweeps book TASK [--preset P]

``--preset`` replaces the file's preset (try a sweep at ``smoke`` before submitting it at ``paper``); ``--root``
says where the run folders are; other options (``--max-seconds``, ``--data-dir``, ``--no-progress``...) are
passed to ``samedge_lib.engine.cli``. ``run`` may be started under ``torchrun``: the run is then data-parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from samedge_lib.record.config import PRESETS, TASKS, ConfigError, RunConfig, preset_config
from samedge_lib.record.runfolder import TERMINAL_STATES, RunFolderError, read_status, run_path

PROG = "samedge-sweeps"

#: The keys of one sweep in a sweep file.
SWEEP_KEYS = ("task", "preset", "grid", "seeds", "set")

#: The fields a grid or ``set`` may not name: the task and the preset are the sweep's own keys.
_NOT_OVERRIDABLE = ("task",)

#: The interpreter the commands start (the reader's ``python``; the documentation uses ``.venv/bin/python``).
PYTHON = "python"


class SweepError(ConfigError):
    """A sweep file or sweep value cannot be used; the message names the key and what is allowed."""


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: a task and preset, a grid of fields (first key outermost) and fixed overrides.

    Attributes:
        task: the task of every run.
        preset: the preset every run starts from.
        grid: field name -> the values it takes; every combination is a run.
        fixed: overrides shared by every run (the file's ``set``).

    """

    task: str
    preset: str
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    def combinations(self) -> list[dict[str, Any]]:
        """The overrides of each run, in order: the grid's product (first key outermost) on top of ``fixed``."""
        keys = list(self.grid)
        return [
            {**self.fixed, **dict(zip(keys, values, strict=True))} for values in itertools.product(*self.grid.values())
        ]

    def configs(self) -> list[RunConfig]:
        """The validated configuration of each combination (a bad value raises :class:`SweepError`)."""
        out = []
        for over in self.combinations():
            over = dict(over)
            rho = over.pop("rho", 0.0)
            try:
                out.append(preset_config(self.task, self.preset, rho=rho, **over))
            except (ConfigError, TypeError, ValueError) as err:
                raise SweepError(f"sweep {self.task}/{self.preset} at {_show(over, rho)}: {err}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """The sweep as a sweep file writes it (seeds in the grid)."""
        out: dict[str, Any] = {"task": self.task, "preset": self.preset}
        if self.grid:
            out["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.fixed:
            out["set"] = dict(self.fixed)
        return out


def _show(over: dict[str, Any], rho: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in {"rho": rho, **over}.items())


def _fields() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig) if f.name not in _NOT_OVERRIDABLE]


def parse(data: Any, source: str = "the sweep") -> list[SweepSpec]:
    """The sweeps of a parsed sweep file (one mapping, or ``{"sweeps": [mapping, ...]}``)."""
    if isinstance(data, dict) and set(data) == {"sweeps"}:
        items = data["sweeps"]
        if not isinstance(items, list) or not items:
            raise SweepError(f"{source}: 'sweeps' must be a non-empty list of sweeps")
        return [_parse_one(item, f"{source}, sweep {i}") for i, item in enumerate(items)]
    return [_parse_one(data, source)]


def _parse_one(data: Any, where: str) -> SweepSpec:
    if not isinstance(data, dict):
        raise SweepError(f"{where}: a sweep is a mapping with the keys {', '.join(SWEEP_KEYS)}, got {data!r:.80}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"{where}: unknown keys {unknown}; a sweep has the keys {', '.join(SWEEP_KEYS)}")
    task, preset = data.get("task"), data.get("preset")
    if task not in TASKS:
        raise SweepError(f"{where}: task={task!r} is not allowed; choose one of: {', '.join(TASKS)}")
    if preset not in PRESETS:
        raise SweepError(f"{where}: preset={preset!r} is not allowed; choose one of: {', '.join(PRESETS)}")
    grid_in = data.get("grid") or {}
    fixed = data.get("set") or {}
    if not isinstance(grid_in, dict):
        raise SweepError(f"{where}: grid must map field names to lists of values, got {grid_in!r:.80}")
    if not isinstance(fixed, dict):
        raise SweepError(f"{where}: set must map field names to values, got {fixed!r:.80}")
    grid: dict[str, tuple[Any, ...]] = {}
    if "seeds" in data:
        if "seed" in grid_in or "seed" in fixed:
            raise SweepError(f"{where}: give the seeds once, in 'seeds' or as 'seed' in the grid or in 'set'")
        grid["seed"] = _values(where, "seeds", data["seeds"])
    for key, values in grid_in.items():
        grid[key] = _values(where, f"grid.{key}", values)
    known = _fields()
    for key in [*grid, *fixed]:
        if key not in known:
            raise SweepError(f"{where}: {key!r} is not a run configuration field; the fields are: {', '.join(known)}")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise SweepError(f"{where}: {both} are both in the grid and in 'set'; keep each field in one of them")
    return SweepSpec(str(task), str(preset), grid, dict(fixed))


def _values(where: str, key: str, values: Any) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise SweepError(f"{where}: {key} must be a non-empty list of values, e.g. [0.05, 0.1], got {values!r:.80}")
    return tuple(values)


def load(path: str | Path) -> list[SweepSpec]:
    """The sweeps of the sweep file at ``path`` (validated: every configuration is built once here)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SweepError(f"cannot read the sweep file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    specs = parse(data, str(path))
    expand(specs)
    return specs


def with_preset(specs: Sequence[SweepSpec], preset: str | None) -> list[SweepSpec]:
    """``specs`` with their preset replaced by ``preset`` (unchanged for ``None``)."""
    if preset is None:
        return list(specs)
    if preset not in PRESETS:
        raise SweepError(f"--preset {preset!r} is not allowed; choose one of: {', '.join(PRESETS)}")
    return [dataclasses.replace(s, preset=preset) for s in specs]


@dataclass(frozen=True)
class Item:
    """One run of a sweep: its configuration and the overrides of the preset that build it."""

    spec: SweepSpec
    overrides: dict[str, Any]
    config: RunConfig


def items(specs: Sequence[SweepSpec]) -> list[Item]:
    """Every run of ``specs`` in order, each configuration once (the first occurrence of its identity)."""
    seen: set[str] = set()
    out = []
    for spec in specs:
        for over, cfg in zip(spec.combinations(), spec.configs(), strict=True):
            if cfg.identity() not in seen:
                seen.add(cfg.identity())
                out.append(Item(spec, over, cfg))
    return out


def expand(specs: Sequence[SweepSpec]) -> list[RunConfig]:
    """The configurations of ``specs``, in order, each identity once."""
    return [item.config for item in items(specs)]


def run_argv(item: Item) -> list[str]:
    """The arguments of ``python -m samedge_lib.run`` that build ``item.config``."""
    over = dict(item.overrides)
    rho = over.pop("rho", 0.0)
    argv = ["--task", item.spec.task, "--preset", item.spec.preset, "--rho", repr(float(rho))]
    for key, value in over.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return argv


def command(item: Item, extra: Sequence[str] = (), python: str = PYTHON) -> str:
    """The shell command that computes (or loads) ``item``'s run, with ``extra`` options of ``samedge_lib.run``."""
    return shlex.join([python, "-m", "samedge_lib.run", *run_argv(item), *extra])


def is_done(cfg: RunConfig, root: str | Path | None = None) -> bool:
    """Whether ``cfg``'s run folder says finished or diverged (its command would only load it)."""
    try:
        return read_status(run_path(cfg, root)).get("state") in TERMINAL_STATES
    except (OSError, RunFolderError):
        return False


def state_of(cfg: RunConfig, root: str | Path | None = None) -> str:
    """The state in ``cfg``'s ``status.json``: ``finished``, ``running``, ``failed``... or ``pending`` (none)."""
    try:
        return str(read_status(run_path(cfg, root)).get("state") or "pending")
    except (OSError, RunFolderError):
        return "unreadable"


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        from samedge_lib.engine.distributed import env_rank

        self.exit(2, f"{PROG}: invalid arguments: {message} (see --help)\n" if env_rank() == 0 else None)


def _parser() -> _Parser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True, parser_class=_Parser)
    for name, text in (
        ("expand", "print one command (or index) per run"),
        ("count", "print the number of runs"),
        ("run", "compute (or load) one run of the sweep"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("file", help="the sweep file (YAML)")
        s.add_argument("--preset", choices=PRESETS, help="replace the file's preset (e.g. smoke, to try the sweep)")
        if name != "count":
            s.add_argument("--root", help="folder of run folders (default $SAMEDGE_RUNS or <repo>/runs)")
        if name == "expand":
            s.add_argument("--pending", action="store_true", help="leave out finished and diverged runs")
            s.add_argument("--format", choices=("command", "index", "json"), default="command")
            s.add_argument("--python", default=PYTHON, help=f"interpreter in the commands (default {PYTHON})")
        if name == "run":
            s.add_argument("--index", type=int, required=True, help="which run, from 0 (e.g. $SLURM_ARRAY_TASK_ID)")
    b = sub.add_parser("book", help="write a chapter's sweep (GD, SAM radii, seed band) as a sweep file")
    b.add_argument("task", choices=TASKS)
    b.add_argument("--preset", choices=PRESETS, default="cpu")
    return p


def _root_args(args: argparse.Namespace) -> list[str]:
    return ["--root", args.root] if getattr(args, "root", None) else []


#: ``chapter_sweeps(task, preset)``: a book chapter's sweep, for the ``book`` subcommand. The chapters sit above the
#: engine, so the engine does not import them: the command's entry module (``samedge_lib.sweeps``) passes this in.
ChapterSweeps = Callable[[str, str], Sequence[SweepSpec]]


def main(argv: list[str] | None = None, chapter_sweeps: ChapterSweeps | None = None) -> int:
    """Entry point of ``python -m samedge_lib.sweeps``; returns the exit code (the run's, for ``run``).

    ``chapter_sweeps`` answers ``book TASK --preset P`` (see :data:`ChapterSweeps`); without it ``book`` is refused.
    """
    from samedge_lib.engine import cli as run_cli

    args, extra = _parser().parse_known_args(argv)
    if args.what != "run" and args.what != "expand" and extra:
        return _fail(f"unknown arguments {extra} for {args.what}")
    try:
        if args.what == "book":
            if chapter_sweeps is None:
                return _fail("the book subcommand writes a chapter's sweep: run it as python -m samedge_lib.sweeps")
            specs = chapter_sweeps(args.task, args.preset)
            text = yaml.safe_dump({"sweeps": [s.to_dict() for s in specs]}, sort_keys=False, default_flow_style=None)
            print(
                f"# The sweeps of the {args.task} chapter at the {args.preset} preset "
                "(samedge_lib.chapters.experiments.Sweep)"
            )
            print(text, end="")
            return 0
        specs = with_preset(load(args.file), args.preset)
        todo = items(specs)
    except SweepError as err:
        return _fail(str(err))
    if args.what == "count":
        print(len(todo))
        return 0
    if args.what == "run":
        if not 0 <= args.index < len(todo):
            return _fail(
                f"--index {args.index} is not a run of {args.file}, which has {len(todo)} (0..{len(todo) - 1})"
            )
        return run_cli.main([*run_argv(todo[args.index]), *_root_args(args), *extra])
    root = getattr(args, "root", None)
    for index, item in enumerate(todo):
        if args.pending and is_done(item.config, root):
            continue
        if args.format == "index":
            print(index)
        elif args.format == "json":
            cfg = item.config
            line = {
                "index": index,
                "identity": cfg.identity(),
                "run_name": cfg.run_name(),
                "state": state_of(cfg, root),
            }
            print(json.dumps({**line, "command": command(item, [*_root_args(args), *extra], args.python)}))
        else:
            print(command(item, [*_root_args(args), *extra], args.python))
    return 0


def _fail(message: str) -> int:
    from samedge_lib.engine.cli import one_line
    from samedge_lib.engine.distributed import env_rank

    if env_rank() == 0:
        print(f"{PROG}: invalid sweep: {one_line(message)}", file=sys.stderr, flush=True)
    return 2


def entry(chapter_sweeps: ChapterSweeps | None = None) -> None:
    """``python -m samedge_lib.sweeps``: :func:`main`, a closed pipe as success, then leave the process group."""
    from samedge_lib.engine import distributed

    try:
        code = main(chapter_sweeps=chapter_sweeps)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped reading (`| head`): not an error of the sweep
        # Python's recipe: https://docs.python.org/3/library/signal.html#note-on-sigpipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    finally:
        distributed.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    entry()
