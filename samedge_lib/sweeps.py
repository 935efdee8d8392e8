"""The command line of sweep files: ``python -m samedge_lib.sweeps expand|count|run|book ...``.

The command is :mod:`samedge_lib.engine.sweeps`; this entry module wires in what the engine may not import, the
book chapters' own sweeps (``book TASK --preset P``, from :class:`samedge_lib.chapters.experiments.Sweep`).
"""

from __future__ import annotations

from collections.abc import Sequence

from samedge_lib.engine import sweeps as _sweeps
from samedge_lib.engine.sweeps import SweepSpec

__all__ = ["chapter_sweeps", "entry", "main"]


def chapter_sweeps(task: str, preset: str) -> Sequence[SweepSpec]:
    """The sweep a book chapter runs on ``task`` at ``preset`` (GD, the radii, the seed band)."""
    from samedge_lib.chapters.experiments import Sweep

    return Sweep.from_parameters(task, preset).specs()


def main(argv: list[str] | None = None) -> int:
    """``python -m samedge_lib.sweeps``'s exit code for ``argv`` (:func:`samedge_lib.engine.sweeps.main`)."""
    return _sweeps.main(argv, chapter_sweeps=chapter_sweeps)


def entry() -> None:
    """Run the command and exit with its code."""
    _sweeps.entry(chapter_sweeps=chapter_sweeps)


if __name__ == "__main__":
    entry()
