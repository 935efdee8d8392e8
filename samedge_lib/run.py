"""Command line: run one experiment (or load it if it already finished).

Examples::

    python -m samedge_lib.run --task mnist --preset cpu --rho 0.1
    python -m samedge_lib.run --task mnist --preset paper --rho 0.1 --steps 3000 --tf32
    python -m samedge_lib.run --task shakespeare --preset cpu --rho 0.1 --set k=3 --set measure_every=10

Every field of :class:`~samedge_lib.config.RunConfig` can be set with ``--set name=value``
(values parsed as JSON when possible). A killed run resumes from its checkpoint when the same
command is run again; a finished one is loaded (``--force`` recomputes).
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import PRESETS, TASKS, ConfigError, preset_config
from .results import summarize
from .train import RunDivergedError, run


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects name=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m samedge_lib.run`` / ``samedge-run``."""
    p = argparse.ArgumentParser(prog="samedge-run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--rho", type=float, default=0.0, help="SAM radius; 0 = GD (default)")
    p.add_argument("--optimizer", choices=("gd", "sam", "usam"), help="default: gd if rho == 0 else sam")
    p.add_argument("--eta", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (default: strict float32)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any RunConfig field")
    p.add_argument("--root", help="folder of run folders (default $SAMEDGE_RUNS or <repo>/runs)")
    p.add_argument("--data-dir", help="dataset folder (default $SAMEDGE_DATA or ~/.cache/samedge/data)")
    p.add_argument("--force", action="store_true", help="recompute even if a finished run exists")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-seconds", type=float, help="stop with a checkpoint after this long; rerun to continue")
    args = p.parse_args(argv)
    overrides = _parse_set(args.set)
    for name in ("optimizer", "eta", "steps", "seed", "device"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.tf32:
        overrides["tf32"] = True
    try:
        cfg = preset_config(args.task, args.preset, rho=args.rho, **overrides)
    except (ConfigError, TypeError) as err:
        print(f"samedge-run: invalid configuration: {err}", file=sys.stderr)
        return 2
    try:
        result = run(
            cfg,
            root=args.root,
            data_dir=args.data_dir,
            force=args.force,
            progress=not args.no_progress,
            raise_on_divergence=True,
            max_seconds=args.max_seconds,
        )
    except RunDivergedError as err:
        print(f"samedge-run: {err}", file=sys.stderr)
        return 3
    print(f"run folder: {result.path}")
    print(json.dumps(summarize(result), indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
