"""The experiment chapters' runs: notebook parameters -> validated configurations -> runs (reusing finished ones).

A chapter turns its papermill parameters into a :class:`Sweep` with :meth:`Sweep.from_parameters` (every
value checked before anything is computed, preset defaults filled in), then calls :meth:`Sweep.run`. What the
chapter shows of the runs -- tables, claims, figures -- is read from the run folders by
:mod:`samedge_lib.chapter`, which does not import the training engine; this module is the only part of the
chapter machinery that trains.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import SWEEP_RHOS, RunConfig, preset_config
from .notebook import NotebookParameterError, check_list, check_number, check_preset
from .train import RunResult, run

#: The radius the paper's README and main figures use; a chapter's main statements are about it.
PAPER_RHO = 0.1


def sweep_configs(task: str, preset: str, rhos: Sequence[float], **overrides: object) -> list[RunConfig]:
    """GD (rho = 0) and SAM at each rho in ``rhos``, all at ``preset`` with the same overrides."""
    values = [0.0, *[float(r) for r in rhos if r != 0]]
    return [preset_config(task, preset, rho=r, **overrides) for r in values]


def progress_default() -> bool:
    """Show per-run progress bars unless ``SAMEDGE_PROGRESS=0`` (the book build sets it: stderr is an error there)."""
    return os.environ.get("SAMEDGE_PROGRESS", "1") != "0"


@dataclass(frozen=True)
class Sweep:
    """GD and SAM at several radii on one task and preset, as a chapter runs them.

    Attributes:
        task: the task.
        preset: the preset the configurations start from.
        configs: one configuration per radius, GD (``rho = 0``) first.
        main_rho: the radius the chapter's main statements are about (:data:`PAPER_RHO` when swept).
        parameters: the values the chapter runs with, defaults resolved, for the chapter's parameter box.

    """

    task: str
    preset: str
    configs: tuple[RunConfig, ...]
    main_rho: float
    parameters: dict[str, Any]

    @classmethod
    def from_parameters(
        cls,
        task: str,
        preset: Any,
        *,
        rhos: Any = None,
        steps: Any = None,
        seed: Any = 0,
        official_every: Any = None,
        **overrides: Any,
    ) -> Sweep:
        """Validate a chapter's parameters and build its sweep; ``None`` means "the preset's value".

        Raises :class:`~samedge_lib.notebook.NotebookParameterError` naming the first bad parameter and what
        is allowed, before anything is computed.
        """
        check_preset(preset)
        sweep = SWEEP_RHOS[task][preset]
        if rhos is not None:
            sweep = check_list("rhos", rhos, min_len=1, item=lambda n, v: float(check_number(n, v, minimum=0)))
        if not [r for r in sweep if r > 0]:
            raise NotebookParameterError(f"parameter rhos={rhos!r} holds no radius > 0; give at least one, e.g. [0.1]")
        check_number("seed", seed, minimum=0, integer=True)
        over: dict[str, Any] = {"seed": seed, **overrides}
        if steps is not None:
            over["steps"] = check_number("steps", steps, minimum=1, integer=True)
        if official_every is not None:
            over["official_every"] = check_number("official_every", official_every, minimum=0, integer=True)
        configs = tuple(sweep_configs(task, preset, sweep, **over))
        main = PAPER_RHO if PAPER_RHO in sweep else min(r for r in sweep if r > 0)
        first = configs[1]
        params = {
            "preset": preset,
            "rhos": [c.rho for c in configs if c.rho > 0],
            "steps": first.steps,
            "seed": first.seed,
            "official_every": first.official_every,
            **{k: v for k, v in overrides.items()},
        }
        return cls(task, preset, configs, main, params)

    def run(self, *, root: str | Path | None = None, progress: bool | None = None) -> dict[float, RunResult]:
        """Run (or load) every configuration; return ``{rho: result}``. Diverged runs are returned, not raised."""
        show = progress_default() if progress is None else progress
        return {cfg.rho: run(cfg, root=root, progress=show) for cfg in self.configs}
