"""The experiment chapters' runs: notebook parameters -> validated configurations -> runs (reusing finished ones).

A chapter turns its papermill parameters into a :class:`Sweep` with :meth:`Sweep.from_parameters` (every
value checked before anything is computed, preset defaults filled in), then calls :meth:`Sweep.run`. What the
chapter shows of the runs -- tables, claims, figures -- is read from the run folders by
:mod:`samedge_lib.chapters.chapter`, which does not import the training engine; this module is the only part of the
chapter machinery that trains.

A chapter's sweep is expanded into configurations by :mod:`samedge_lib.engine.sweeps`, the code that expands sweep files
for the command line and cluster schedulers; :meth:`Sweep.specs` gives it as a sweep file, so its runs can be
computed elsewhere (a Slurm job array, ``xargs -P``) and then only loaded here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samedge_lib.engine.sweeps import SweepSpec, is_done
from samedge_lib.engine.train import RunDivergedWarning, RunResult, run
from samedge_lib.reading.notebook import NotebookParameterError, check_list, check_number, check_preset
from samedge_lib.record.config import PAPER_RHO, SWEEP_RHOS, RunConfig

#: Extra seeds of the seed band per preset and task: GD and SAM at the main radius are rerun at these seeds, so a
#: reader sees how much of a headline number is seed noise. At ``cpu``, two extra seeds for the MNIST MLP (its runs
#: take seconds) and none for the CIFAR-10 CNN and the Transformer: their band runs took 17 of the book build's
#: minutes on 2 cores and put CI past its 40-minute limit (a reader adds them with ``band_seeds``, e.g. [1, 2]).
#: None at ``smoke``, whose runs reach no edge, nor at ``paper``, where one run is already hours.
BAND_SEEDS: dict[str, dict[str, tuple[int, ...]]] = {
    "smoke": {"mnist": (), "cifar10": (), "shakespeare": ()},
    "cpu": {"mnist": (1, 2), "cifar10": (), "shakespeare": ()},
    "paper": {"mnist": (), "cifar10": (), "shakespeare": ()},
}


def band_config(cfg: RunConfig, seed: int) -> RunConfig:
    """``cfg`` at another seed, for the seed band: only what the band's statistics need (``lambda_1``, no estimator).

    The paper's estimator (``official_every = 0``) and ``lambda_2, ...`` (``k = 1``) are dropped: they do not
    change ``lambda_1`` (certified by Lanczos to the same tolerance) and cost most of a check.
    """
    return cfg.replace(seed=seed, **_BAND)


#: What the seed band changes besides the seed (see :func:`band_config`).
_BAND = {"official_every": 0, "k": 1}


def sweep_spec(task: str, preset: str, rhos: Sequence[float], **overrides: object) -> SweepSpec:
    """GD (rho = 0) and SAM at each rho in ``rhos``, all at ``preset`` with the same overrides, as a sweep."""
    return SweepSpec(task, preset, {"rho": (0.0, *[float(r) for r in rhos if r != 0])}, dict(overrides))


def sweep_configs(task: str, preset: str, rhos: Sequence[float], **overrides: object) -> list[RunConfig]:
    """GD (rho = 0) and SAM at each rho in ``rhos``, all at ``preset`` with the same overrides.

    Expanded by :meth:`samedge_lib.engine.sweeps.SweepSpec.configs`, as a sweep file's runs are.
    """
    return sweep_spec(task, preset, rhos, **overrides).configs()


def band_spec(spec: SweepSpec, main_rho: float, seeds: Sequence[int]) -> SweepSpec:
    """The seed band of ``spec`` as a sweep: GD and SAM at ``main_rho`` at each seed, as :func:`band_config` does."""
    fixed = {k: v for k, v in spec.fixed.items() if k != "seed"}
    return SweepSpec(spec.task, spec.preset, {"seed": tuple(seeds), "rho": (0.0, main_rho)}, {**fixed, **_BAND})


def workers_default() -> int:
    """Parallel run processes: ``$SAMEDGE_WORKERS`` (the book build sets it to the number of cores), else 1."""
    raw = os.environ.get("SAMEDGE_WORKERS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise NotebookParameterError(f"SAMEDGE_WORKERS={raw!r} must be a positive integer") from None
    if n < 1:
        raise NotebookParameterError(f"SAMEDGE_WORKERS={raw!r} must be a positive integer")
    return n


def _run_in_worker(cfg: RunConfig, root: str | Path | None, threads: int) -> Path:
    """One run in a worker process, with ``threads`` torch threads; returns its folder (the parent reads it)."""
    torch.set_num_threads(threads)
    with _divergence_reported_by_the_chapter():
        return run(cfg, root=root, progress=False).path


@contextlib.contextmanager
def _divergence_reported_by_the_chapter() -> Iterator[None]:
    """No :class:`RunDivergedWarning` from the chapters' runs: their claims report a diverged run ("diverged at step
    t"), and a warning is a stderr line, which fails the book's build.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunDivergedWarning)
        yield


def run_all(
    configs: Sequence[RunConfig],
    *,
    root: str | Path | None = None,
    progress: bool | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> list[RunResult]:
    """Run (or load) every configuration, ``workers`` at a time; results in the order of ``configs``.

    Small models on a few CPU cores use the cores better as independent runs with one thread each than as one
    run with several threads (the per-operation work is too small to split). Each run is seeded by its
    configuration alone and computes in its own process with ``threads`` torch threads (default: the cores
    divided among the workers); only the thread count can change its numbers, at float round-off (it changes
    the order of summation inside matrix products).
    Finished runs are loaded, not recomputed, and the run folder's lock keeps two processes from computing
    the same configuration. With one worker, runs go one after another in this process (with progress bars
    unless ``SAMEDGE_PROGRESS=0``).
    """
    n = workers_default() if workers is None else workers
    todo = [c for c in configs if not is_done(c, root)]
    if n <= 1 or len(todo) <= 1:
        show = progress_default() if progress is None else progress
        with _divergence_reported_by_the_chapter():
            return [run(cfg, root=root, progress=show) for cfg in configs]
    threads = max(1, (os.cpu_count() or 1) // n) if threads is None else threads
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: safe under Jupyter and with torch threads
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        for fut in [pool.submit(_run_in_worker, cfg, root, threads) for cfg in todo]:
            fut.result()  # re-raises a worker's error here
    with _divergence_reported_by_the_chapter():
        return [run(cfg, root=root, progress=False) for cfg in configs]  # all finished now: loaded


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
        band: the seed band's configurations (:func:`band_config` of GD and of SAM at ``main_rho``), by seed.
        sweeps: the sweeps these configurations are expanded from (:meth:`specs`).

    """

    task: str
    preset: str
    configs: tuple[RunConfig, ...]
    main_rho: float
    parameters: dict[str, Any]
    band: dict[int, tuple[RunConfig, ...]]
    sweeps: tuple[SweepSpec, ...] = ()

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
        band_seeds: Any = None,
        **overrides: Any,
    ) -> Sweep:
        """Validate a chapter's parameters and build its sweep; ``None`` means "the preset's value".

        Raises :class:`~samedge_lib.reading.notebook.NotebookParameterError` naming the first bad parameter and what
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
        spec = sweep_spec(task, preset, sweep, **over)
        configs = tuple(spec.configs())
        main = PAPER_RHO if PAPER_RHO in sweep else min(r for r in sweep if r > 0)
        extra = BAND_SEEDS[preset][task]
        if band_seeds is not None:
            extra = check_list("band_seeds", band_seeds, item=lambda n, v: check_number(n, v, minimum=0, integer=True))
        extra = tuple(s for s in dict.fromkeys(extra) if s != seed)
        sweeps = (spec, band_spec(spec, main, extra)) if extra else (spec,)
        band_configs = sweeps[1].configs() if extra else []
        band = {s: tuple(band_configs[2 * i : 2 * i + 2]) for i, s in enumerate(extra)}
        first = configs[1]
        params = {
            "preset": preset,
            "rhos": [c.rho for c in configs if c.rho > 0],
            "steps": first.steps,
            "seed": first.seed,
            "official_every": first.official_every,
            "band_seeds": list(extra),
            **{k: v for k, v in overrides.items()},
        }
        return cls(task, preset, configs, main, params, band, sweeps)

    def specs(self) -> tuple[SweepSpec, ...]:
        """The chapter's runs as sweeps (the main one, then the seed band): ``python -m samedge_lib.sweeps book``."""
        return self.sweeps

    def run(self, *, root: str | Path | None = None, progress: bool | None = None) -> dict[float, RunResult]:
        """Run (or load) every configuration, the seed band's too; return the sweep's ``{rho: result}``.

        Diverged runs are returned, not raised. The band's runs go into the same pool of workers, so the cores
        stay busy; :meth:`band_results` then only loads them.
        """
        band = [c for cfgs in self.band.values() for c in cfgs]
        results = run_all([*self.configs, *band], root=root, progress=progress)
        return {cfg.rho: res for cfg, res in zip(self.configs, results, strict=False)}

    def band_results(self, *, root: str | Path | None = None) -> dict[int, dict[float, RunResult]]:
        """The seed band's runs, ``{seed: {rho: result}}`` (run or loaded)."""
        out: dict[int, dict[float, RunResult]] = {}
        for seed, cfgs in self.band.items():
            out[seed] = {c.rho: r for c, r in zip(cfgs, run_all(cfgs, root=root, progress=False), strict=True)}
        return out
