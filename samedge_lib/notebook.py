"""Helpers that every chapter notebook uses for its parameters and presets.

A notebook's ``parameters`` cell holds plain assignments (papermill overrides them with
``-p name value``). The next cell calls :func:`check_choice` / :func:`check_number` so that a
wrong value fails at once with a message listing what is allowed, before anything is computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import PRESETS  # smoke: tests, seconds; cpu: the book on two CPU cores; paper: official, on a GPU


class NotebookParameterError(ValueError):
    """A notebook parameter has a value the notebook cannot use."""


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; else raise naming the parameter and the choices."""
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise NotebookParameterError(
            f"parameter {name}={value!r} is not allowed; choose one of: {choices} "
            f"(e.g. papermill ... -p {name} {allowed[0]})"
        )
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
) -> Any:
    """Return ``value`` if it is a number within ``[minimum, maximum]``; else raise with the allowed range."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise NotebookParameterError(f"parameter {name}={value!r} must be {kind}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise NotebookParameterError(f"parameter {name}={value!r} must lie in [{lo}, {hi}]")
    return value


def check_preset(value: Any) -> str:
    """Validate the ``preset`` parameter against :data:`PRESETS`."""
    return check_choice("preset", value, PRESETS)
