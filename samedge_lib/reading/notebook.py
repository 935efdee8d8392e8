"""Helpers that every chapter notebook uses for its parameters and presets.

A notebook's ``parameters`` cell holds typed assignments (``rhos: list[float] = []  # what it is``), so
that ``papermill --help-notebook`` lists each parameter with its type, default and meaning; papermill
overrides them with ``-p name value`` or ``-y "name: value"``. The next cell calls :func:`check_choice`,
:func:`check_number`, :func:`check_list` or :func:`check_dict` so that a wrong value fails at once with a
message saying what is allowed, before anything is computed.

**Lists and dicts from the command line.** papermill's ``-y`` parses YAML, so ``-y "rhos: [0.05, 0.1]"``
arrives as a Python list. Its ``-p`` does not: it only turns ``True``/``False``/``None`` and numbers into
Python values and passes everything else as a *string* (see ``papermill/cli.py``, ``_resolve_type``), so
``-p rhos "[0.05, 0.1]"`` arrives as the text ``"[0.05, 0.1]"``. :func:`check_list` and :func:`check_dict`
accept both: a string is parsed as YAML (of which JSON and Python's list/dict literals of numbers and
quoted strings are subsets), and anything that is neither the right container nor a string that parses to
one raises one :class:`NotebookParameterError` that shows both ways of writing the value.

**Unknown parameters and one-line errors.** papermill injects ``-p name value`` as a cell of assignments whether
or not the notebook has a parameter ``name`` (it only logs a warning), so a misspelled ``-p stepz 5`` used to run
the defaults. Every notebook's first checking cell calls :func:`check_parameters` with its ``globals()``: it refuses
a name that the ``parameters`` cell does not declare (with "did you mean"), and makes a bad parameter's error show
as its one line -- the cell's error output, which papermill prints, is the message alone, without the traceback.

**Paths.** Notebooks run with any working directory (a Jupyter server started in ``notebooks/``, Colab,
Binder, papermill's ``--cwd``): :func:`repo_path` resolves the repository's own relative paths
(``results/benchmark``) against the repository root instead of the working directory.
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from samedge_lib.record.config import (
    PRESETS,  # smoke: tests, seconds; cpu: the book on two CPU cores; paper: official, on a GPU
    ConfigError,
)
from samedge_lib.record.provenance import REPO_ROOT


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
    if isinstance(value, float) and not math.isfinite(value):  # NaN passes every range check (it compares false)
        raise NotebookParameterError(
            f"parameter {name}={value!r} is not finite; it must be a finite {'integer' if integer else 'number'}"
        )
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


def _yaml_example(name: str, example: str) -> str:
    """The two command-line spellings of a structured value, for error messages."""
    return f"""papermill ... -p {name} '{example}'  or  papermill ... -y '{name}: {example}'"""


def _structured(name: str, value: Any, kind: type, what: str, example: str) -> Any:
    """Return ``value`` as a ``kind`` (list or dict), parsing a string as YAML; raise one clear error otherwise."""
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at character {mark.column + 1}" if mark is not None else ""
            raise NotebookParameterError(
                f"parameter {name}={value!r} is not valid YAML{where}; write {what} like: "
                f"{_yaml_example(name, example)}"
            ) from None
        if isinstance(parsed, kind):
            return parsed
        raise NotebookParameterError(
            f"parameter {name}={value!r} must be {what}, but the text parses as "
            f"{type(parsed).__name__} {parsed!r}; write it like: {_yaml_example(name, example)}"
        )
    if isinstance(value, kind):
        return value
    if kind is list and isinstance(value, tuple):
        return list(value)
    raise NotebookParameterError(
        f"parameter {name}={value!r} must be {what}, not {type(value).__name__}; "
        f"write it like: {_yaml_example(name, example)}"
    )


def check_list(
    name: str,
    value: Any,
    *,
    item: Callable[[str, Any], Any] | None = None,
    min_len: int = 0,
    example: str = "[0.05, 0.1]",
) -> list:
    """Return ``value`` as a list, accepting a list (``-y``) or a string that parses as a YAML list (``-p``).

    Args:
        name: the parameter's name, used in messages.
        value: the parameter as the notebook received it.
        item: optional check applied to every element as ``item(f"{name}[i]", element)``; its return
            value replaces the element (e.g. ``lambda n, v: check_number(n, v, minimum=0)``).
        min_len: the fewest elements allowed.
        example: a valid value in YAML, shown in error messages.

    Raises:
        NotebookParameterError: ``value`` is neither a list nor a string that parses as one, or an element
            fails ``item``, or the list is too short.

    """
    out = _structured(name, value, list, "a list", example)
    if len(out) < min_len:
        raise NotebookParameterError(
            f"parameter {name}={out!r} needs at least {min_len} element(s); e.g. {_yaml_example(name, example)}"
        )
    if item is not None:
        out = [item(f"{name}[{i}]", v) for i, v in enumerate(out)]
    return out


def check_dict(
    name: str,
    value: Any,
    *,
    keys: Iterable[str] | None = None,
    item: Callable[[str, Any], Any] | None = None,
    example: str = "{eta: 0.1, rho: 0.05}",
) -> dict:
    """Return ``value`` as a dict, accepting a dict (``-y``) or a string that parses as a YAML mapping (``-p``).

    Args:
        name: the parameter's name, used in messages.
        value: the parameter as the notebook received it.
        keys: if given, the keys allowed (an unknown key is an error naming the allowed ones).
        item: optional check applied to every value as ``item(f"{name}[{key!r}]", value)``.
        example: a valid value in YAML, shown in error messages.

    Raises:
        NotebookParameterError: ``value`` is neither a dict nor a string that parses as one, has a key not
            in ``keys``, or a value fails ``item``.

    """
    out = _structured(name, value, dict, "a mapping (dict)", example)
    if keys is not None:
        allowed = tuple(keys)
        unknown = [k for k in out if k not in allowed]
        if unknown:
            raise NotebookParameterError(
                f"parameter {name} has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(map(repr, allowed))}"
            )
    if item is not None:
        out = {k: item(f"{name}[{k!r}]", v) for k, v in out.items()}
    return out


def repo_path(path: str | Path) -> Path:
    """Resolve a path given relative to the repository root, whatever the working directory is.

    Absolute paths are returned unchanged. A relative path is taken relative to the root of this
    repository (the folder that holds ``samedge_lib/``), which is where the notebooks' defaults such as
    ``results/benchmark`` live; a Jupyter server started in ``notebooks/`` would otherwise look for
    ``notebooks/results/benchmark``.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


#: Output metadata key by which the book build (``tools/execute_notebooks.py``) finds a chapter's resolved
#: parameters and shows them in the "Parameters of this execution" box instead of the raw parameter cell.
PARAMETERS_METADATA_KEY = "samedge_parameters"


def show_parameters(values: Mapping[str, object]) -> None:
    """Show the values a chapter runs with (defaults resolved), tagged so the book's parameter box uses them."""
    from IPython.display import Markdown, display

    rows = "\n".join(f"| `{k}` | `{v!r}` |" for k, v in values.items())
    display(
        Markdown("| parameter | value |\n|---|---|\n" + rows),
        metadata={PARAMETERS_METADATA_KEY: {k: repr(v) for k, v in values.items()}},
    )


#: The first line of the cell papermill injects with the ``-p``/``-y`` values (``papermill.translators``).
INJECTED_HEADER = "# Parameters"

#: The errors a notebook shows as their one line: wrong parameters and configurations, which the user fixes.
ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (NotebookParameterError, ConfigError)


def _one_line_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
    """IPython's custom-exception handler: show the error as ``Name: message``, one line, without the traceback.

    ``_showtraceback`` is the hook through which IPython (and ipykernel, which sends it as the cell's error output)
    shows every structured traceback; this one has the error's line alone.
    """
    shell._showtraceback(etype, value, [f"{etype.__name__}: {' '.join(str(value).split())}"])


def show_errors_as_one_line(shell: Any = None) -> bool:
    """Make this kernel show :data:`ONE_LINE_ERRORS` as their one line (what papermill then prints); return whether.

    Uses IPython's ``set_custom_exc``; outside IPython (a plain interpreter) it does nothing and returns False.
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with every kernel
            return False
        shell = get_ipython()
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    shell.set_custom_exc(ONE_LINE_ERRORS, _one_line_error)
    return True


def injected_names(history: Iterable[str]) -> list[str]:
    """The names assigned by the last cell papermill injected (its source starts with :data:`INJECTED_HEADER`)."""
    cells = [c for c in history if isinstance(c, str) and c.lstrip().startswith(INJECTED_HEADER)]
    if not cells:
        return []
    try:
        tree = ast.parse(cells[-1])
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameters(namespace: Mapping[str, Any], declared: Iterable[str] | None = None) -> list[str]:
    """A notebook's first check: one-line errors from here on, and no parameter the notebook does not have.

    Args:
        namespace: the notebook's ``globals()``. The declared parameters are the typed assignments of its
            ``parameters`` cell (``namespace["__annotations__"]``), the injected ones those of papermill's injected
            cell in the kernel's input history (``namespace["In"]``).
        declared: the parameter names, if not those annotations.

    Returns:
        The injected names (all declared).

    Raises:
        NotebookParameterError: an injected name is not a parameter of the notebook (with "did you mean").

    """
    show_errors_as_one_line()
    known = list(declared) if declared is not None else list(namespace.get("__annotations__", {}))
    given = injected_names(namespace.get("In", []))
    unknown = [n for n in given if n not in known]
    if unknown and known:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotebookParameterError(
            f"parameter {unknown[0]!r} is not a parameter of this notebook{hint}; its parameters are: "
            f"{', '.join(known)} (papermill --help-notebook NOTEBOOK describes them); nothing was computed"
        )
    return given
