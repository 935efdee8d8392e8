"""Run folders on disk: paths, crash-safe writes, the lock, the status record, the tables, reading a run back.

A run folder ``<runs root>/<config.run_name()>/`` holds

* ``config.json`` -- the validated configuration;
* ``checkpoint.pt`` -- the **commit record**: parameters, RNG state, the last eigenvectors, every row
  measured so far and what happened (running / finished / diverged / interrupted / failed);
* ``measurements.csv``, ``steps.csv``, ``provenance.json``, ``status.json`` -- derived from the commit
  record, written in this order after it;
* ``.lock`` -- held (``fcntl.flock``) by the one process computing in the folder (rank 0 of a ``torchrun``
  run, whose other ranks never touch the folder: :func:`writer_locked`).

**Commit protocol.** Every file is replaced atomically: written under a unique temporary name in the same
folder, flushed and ``fsync``'d, renamed over the old file, and the folder entry ``fsync``'d
(https://lwn.net/Articles/457667/). A commit writes the checkpoint first and ``status.json`` last; the
status records how many rows of each table the commit holds. So after a kill at any instant

* the checkpoint is a complete commit (old or new), from which the engine rebuilds every other file before
  it continues (the derived files of an interrupted commit are never trusted);
* a reader (:func:`load_run`) sees the tables cut to the rows ``status.json`` counts, i.e. the files
  describe one and the same step even when a kill fell between two renames.

Reading results needs only this module (pandas, json), not the training engine. Checkpoints are loaded
with ``torch.load(..., weights_only=True)``: they hold only tensors, numbers, strings, lists and dicts, and
a planted file that asks the unpickler to run code is refused
(https://pytorch.org/docs/stable/generated/torch.load.html).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from samedge_lib.record.config import ConfigError, RunConfig
from samedge_lib.record.provenance import REPO_ROOT

DEFAULT_RUNS_ROOT = REPO_ROOT / "runs"

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
MEASUREMENTS = "measurements.csv"
STEPS = "steps.csv"
PROVENANCE = "provenance.json"
STATUS = "status.json"
LOCK = ".lock"

#: The columns of ``steps.csv`` (one row per update).
STEP_COLUMNS = ("step", "loss", "grad_norm", "edge", "wall_time")

#: Terminal states: a folder in one of them is loaded, not recomputed (unless forced).
TERMINAL_STATES = ("finished", "diverged")

#: Hint appended to messages about files that cannot be trusted.
FORCE_HINT = "rerun with --force (force=True) to recompute the run from step 0"


class RunFolderError(RuntimeError):
    """A run folder cannot be used as it is: a torn or foreign file, another configuration, an unusable path.

    The message names the file and says how to fix it.
    """


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock (it is computing this run right now)."""


class RunWarning(UserWarning):
    """A result the Python API returns that the command line would report: a diverged run, a run that stopped early.

    ``warnings.simplefilter("error", RunWarning)`` makes every such warning an error (``run(...,
    raise_on_divergence=True)`` raises for a divergence alone).
    """


class DiskFullError(RunFolderError):
    """A file did not fit on the run folder's file system; the folder's last commit is intact (see the message)."""


# ----------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------


def runs_root(root: str | Path | None = None) -> Path:
    """Where run folders go: the argument, else ``$SAMEDGE_RUNS``, else ``<repo>/runs``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("SAMEDGE_RUNS", DEFAULT_RUNS_ROOT))


def run_path(cfg: RunConfig, root: str | Path | None = None) -> Path:
    """The folder of ``cfg``'s run under ``root`` (see :func:`runs_root`)."""
    return runs_root(root) / cfg.run_name()


def check_writable(folder: Path) -> None:
    """Raise :class:`RunFolderError` unless ``folder`` is (or can be created as) a writable folder.

    Checked before any data is loaded, so a mistyped ``--root`` fails at once.
    """
    probe = Path(os.path.abspath(folder))
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"{probe} is not a folder, so {folder} cannot be created; choose another --root")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"{probe} is not writable, so {folder} cannot be written; choose another --root")


# ----------------------------------------------------------------------------------------------------
# Fault points: the instants at which a crash changes what is on disk
# ----------------------------------------------------------------------------------------------------

_fault_hook: Callable[[str], None] | None = None


def set_fault_hook(hook: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Install ``hook(name)``, called at every :func:`fault_point`; return the previous hook.

    The fault drill of the tests installs a hook that ends the process (``os._exit``) at a chosen
    instant, which is what a ``SIGKILL`` at that instant leaves behind. Without a hook
    a fault point costs one comparison.
    """
    global _fault_hook
    old, _fault_hook = _fault_hook, hook
    return old


def fault_point(name: str) -> None:
    """Mark an instant between two changes of on-disk state (calls the hook of :func:`set_fault_hook`)."""
    if _fault_hook is not None:
        _fault_hook(name)


# ----------------------------------------------------------------------------------------------------
# Atomic, durable writes
# ----------------------------------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The signals whose handlers stop a run (Ctrl-C, and SIGTERM in the command line): held back during a commit.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM while the body runs; a signal that arrived meanwhile is delivered at its end.

    A commit interrupted inside ``torch.save`` leaves the writer's zip container half-written, and its cleanup
    then raises ``RuntimeError`` instead of the interrupt (the run ended "failed" with exit 1 instead of
    "interrupted" with exit 130). For the body's duration the stop signals' Python handlers are replaced by one
    that only notes the signal; afterwards the handlers are restored and a noted signal is raised again
    (https://docs.python.org/3/library/signal.html#signal.raise_signal), so the interrupt arrives between two
    commits, where the runner handles it. Python runs signal handlers in the main thread whichever thread the
    operating system delivered the signal to, which a per-thread mask (``pthread_sigmask``) does not cover once
    torch has started its worker threads. Elsewhere than the main thread the body runs as it is (a kill at any
    instant is still safe: the commit protocol of the module docstring needs no cooperation).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():  # None: a handler not installed from Python, restored as the default
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if noted:
            signal.raise_signal(noted[0])


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Replace ``path`` by what ``write(binary_file)`` writes, atomically and durably.

    The bytes go to a unique temporary file next to ``path`` (so two writers never share one), which is
    flushed, ``fsync``'d and renamed over ``path``; then the folder is ``fsync``'d. On any error the
    temporary file is removed and ``path`` is untouched; a full file system (or quota) raises
    :class:`DiskFullError`, which says how much space the write needs. The file gets the permissions of any new
    file (``0666`` less the umask), not the temporary file's ``0600``.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _disk_full(path, write, err) or err from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide the run from the user's group
        with os.fdopen(fd, "wb") as f:
            write(f)
            fault_point(f"{path.name}:written")
            f.flush()
            os.fsync(f.fileno())
        fault_point(f"{path.name}:synced")
        os.replace(tmp_name, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        full = _disk_full(path, write, err)
        if full is not None:
            raise full from None
        raise
    fault_point(f"{path.name}:renamed")
    fsync_dir(path.parent)


def current_umask() -> int:
    """The process's umask (the permission bits new files must not have), read without changing it where possible."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: set and restore (another thread creating a file meanwhile gets 022)
    os.umask(mask)
    return mask


#: ``errno`` values of a full file system or an exhausted quota.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class _CountingSink:
    """A binary "file" that keeps nothing and counts the bytes written to it (the size a write needs)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _no_space(err: BaseException | None) -> bool:
    """Whether ``err`` or an error it arose from is a full file system (``torch.save`` wraps it in a RuntimeError)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _disk_full(path: Path, write: Callable[[Any], None], err: BaseException) -> DiskFullError | None:
    """The one-line error for a write of ``path`` that found no space (``None`` when ``err`` is something else).

    It names the folder, what the write needs (measured by writing to a counting sink) and what is free. A commit
    writes ``checkpoint.pt`` beside the old one, so a commit needs at least the checkpoint's size free.
    """
    if not _no_space(err):
        return None
    folder = path.parent
    sink = _CountingSink()
    try:
        write(sink)
        need = sink.size
    except Exception:  # noqa: BLE001 -- the size is a courtesy; the error is reported without it
        need = 0
    with contextlib.suppress(OSError):
        need = max(need, (folder / CHECKPOINT).stat().st_size)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    short = max(need - free, 0) + 1_000_000  # and a megabyte for the tables and records around it
    return DiskFullError(
        f"no space left on the file system of {folder}: writing {path.name} needs about {_megabytes(need)} free, "
        f"{_megabytes(free)} is; the folder's last commit is intact. Free at least {_megabytes(short)} there (or "
        f"choose another --root) and run the same command again: it continues from that commit"
    )


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    """:func:`atomic_write` of ``obj`` as indented JSON (Python's ``NaN``/``Infinity`` spelling for non-finite)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder``; call only while holding its lock."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


# ----------------------------------------------------------------------------------------------------
# The lock
# ----------------------------------------------------------------------------------------------------


def _describe_holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    return f"process {info['pid']} on {info.get('host', '?')} (since {info.get('since', '?')})"


@contextlib.contextmanager
def locked(folder: Path, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (created if needed) for the duration of the ``with`` block.

    The lock is ``fcntl.flock`` on ``folder/.lock``; the kernel releases it when the holder exits, however it
    exits, so a killed run never leaves a stale lock. If another process holds it, raise
    :class:`RunLockedError` naming that process, or (``wait=True``) block until it is released, after
    calling ``on_wait(message)`` once.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = folder / LOCK
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, as every file of the folder
    except OSError as err:
        why = err.strerror or err
        raise RunFolderError(f"cannot create the run folder {folder}: {why}; choose another --root") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _describe_holder(lock_file)
            if not wait:
                raise RunLockedError(
                    f"run folder {folder} is being computed by {holder}; wait for it to finish and run the same "
                    f"command again (it will load or resume the run), or add --wait (wait=True) to wait for it"
                ) from None
            if on_wait is not None:
                on_wait(f"waiting for {holder}, which is computing {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        holder_info = {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def writer_locked(
    folder: Path, comm: Any, *, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """:func:`locked` for a run of one or several processes: rank 0 holds the lock, the others wait for it.

    ``comm`` is the run's :class:`~samedge_lib.engine.distributed.Communicator` (or ``distributed.SOLO``). In a
    ``torchrun`` run only rank 0 takes the lock; its outcome (:class:`RunLockedError`, a folder that cannot be
    created) is raised on every rank. With ``wait`` rank 0 retries every
    :data:`~samedge_lib.engine.distributed.LOCK_POLL_SECONDS` and tells the others after each try, so that no rank
    waits in one collective longer than the process group's timeout.
    """
    if not comm.distributed:
        with locked(folder, wait=wait, on_wait=on_wait):
            yield
        return
    with contextlib.ExitStack() as stack:
        told: list[bool] = []

        def attempt() -> bool | None:
            try:
                stack.enter_context(locked(folder))
            except RunLockedError as err:
                if not wait:
                    raise
                if on_wait is not None and not told:
                    on_wait(f"waiting: {str(err).split(';')[0]}")
                    told.append(True)
                return None
            return True

        comm.writer_waits(attempt)
        yield


# ----------------------------------------------------------------------------------------------------
# Status and tables
# ----------------------------------------------------------------------------------------------------


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second (for status records)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; ``{}`` when absent; :class:`RunFolderError` when torn or not an object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RunFolderError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise RunFolderError(
            f"{path} is not valid JSON ({err}); the file is torn or was edited. Run the same command again to "
            f"rebuild it from the checkpoint, or {FORCE_HINT}"
        ) from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path} should hold a JSON object ({what}), found {type(obj).__name__}; {FORCE_HINT}")
    return obj


def read_status(folder: Path) -> dict:
    """The folder's ``status.json`` (``{}`` when there is none yet)."""
    status = read_json(Path(folder) / STATUS, "the run status")
    if status and not isinstance(status.get("state"), str):
        raise RunFolderError(f"{Path(folder) / STATUS} has no 'state'; the file is torn or foreign; {FORCE_HINT}")
    return status


def csv_line(values: Iterable[Any]) -> str:
    """One CSV line of numbers, formatted exactly as ``DataFrame.to_csv`` does (shortest round-trip repr, NaN empty).

    The step table grows by one row per step and is rewritten at every commit; formatting each row once
    and joining the lines keeps a commit's cost from growing with the run (pandas took 0.3 s for 20,000 rows).
    """
    return ",".join("" if isinstance(v, float) and math.isnan(v) else repr(v) for v in values) + "\n"


STEPS_HEADER = ",".join(STEP_COLUMNS) + "\n"


def write_tables(folder: Path, measurements: list[dict], step_lines: Sequence[str]) -> None:
    """Write ``measurements.csv`` and ``steps.csv`` (each atomically) from a commit's rows.

    ``step_lines`` are the step table's rows as :func:`csv_line` formats them (columns :data:`STEP_COLUMNS`).
    """
    meas = pd.DataFrame(measurements).to_csv(index=False).encode() if measurements else b""
    atomic_write(Path(folder) / MEASUREMENTS, lambda f: f.write(meas))
    fault_point("measurements.csv:done")
    steps = (STEPS_HEADER + "".join(step_lines)).encode()
    atomic_write(Path(folder) / STEPS, lambda f: f.write(steps))
    fault_point("steps.csv:done")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV table; empty when the file is absent or has no rows; :class:`RunFolderError` when unreadable."""
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise RunFolderError(
            f"{path} cannot be read as a table ({str(err).splitlines()[0]}); the file is torn or was edited. Run "
            f"the same command again to rebuild it from the checkpoint, or {FORCE_HINT}"
        ) from None


def status_record(
    state: str, *, steps_done: int, steps_total: int, n_measurements: int, **extra: Any
) -> dict[str, Any]:
    """A ``status.json`` record: the state, how many steps and measurement rows are committed, extras."""
    record = {
        "state": state,
        "steps_done": int(steps_done),
        "steps_total": int(steps_total),
        "measurement_rows": int(n_measurements),
        "updated_utc": now_utc(),
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


# ----------------------------------------------------------------------------------------------------
# The checkpoint (the commit record)
# ----------------------------------------------------------------------------------------------------


def checkpoint_refused(path: Path, why: str) -> RunFolderError:
    """The error for a checkpoint that cannot be used: what is wrong and how to go on."""
    return RunFolderError(
        f"{path} cannot be used: {why}. It is torn, from another version or configuration, or was not written by "
        f"samedge_lib; {FORCE_HINT} (or delete the file)"
    )


# ----------------------------------------------------------------------------------------------------
# Reading a run back
# ----------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A run's folder and its tables, as loaded from disk."""

    config: RunConfig
    path: Path
    measurements: pd.DataFrame
    steps: pd.DataFrame
    status: dict
    provenance: dict

    @property
    def state(self) -> str:
        """``finished``, ``diverged``, ``running``, ``interrupted``, ``failed`` (or ``""`` with no status yet)."""
        return str(self.status.get("state", ""))

    @property
    def finished(self) -> bool:
        """True when the run completed all its steps."""
        return self.state == "finished"

    @property
    def stopped_early(self) -> bool:
        """True when the run neither finished nor diverged: interrupted, failed, still running, or never started.

        Its tables describe only the steps it reached (:attr:`state_note` says which); the same command continues it.
        """
        return self.state not in TERMINAL_STATES

    @property
    def state_note(self) -> str:
        """Where the run stands, in words: ``"interrupted at step 120 of 600 (reason)"``; ``""`` for a finished run."""
        if self.finished:
            return ""
        done = self.status.get("step", self.status.get("stopped_at", self.status.get("steps_done", 0)))
        reason = self.status.get("reason")
        note = f"{self.state or 'not started'} at step {done} of {self.config.steps}"
        return f"{note} ({reason})" if reason else note


def read_config(folder: Path) -> RunConfig:
    """The configuration stored in ``folder/config.json`` (validated)."""
    path = Path(folder) / CONFIG
    data = read_json(path, "a run configuration")
    if not data:
        raise RunFolderError(f"{path} is missing: {folder} is not a run folder (or its creation was interrupted)")
    try:
        return RunConfig.from_dict(data)
    except (ConfigError, TypeError) as err:
        raise RunFolderError(f"{path} is not a valid run configuration ({err}); {FORCE_HINT}") from None


def _cut(table: pd.DataFrame, rows: Any, path: Path) -> pd.DataFrame:
    """The first ``rows`` rows of ``table`` (the committed ones); an error when the table has fewer."""
    if not isinstance(rows, int) or isinstance(rows, bool):
        return table
    if len(table) < rows:
        raise RunFolderError(
            f"{path} has {len(table)} rows but status.json commits {rows}; the file is torn. Run the same command "
            f"again to rebuild it from the checkpoint, or {FORCE_HINT}"
        )
    return table.iloc[:rows].reset_index(drop=True) if len(table) > rows else table


def load_run(path: str | Path) -> RunResult:
    """Load a run folder (finished or not), showing exactly the rows its ``status.json`` commits.

    A kill between the renames of one commit can leave a table a commit ahead of ``status.json``; the extra
    rows are not shown (the engine rebuilds both from the checkpoint when the run is resumed).
    """
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a run folder (no such folder)")
    cfg = read_config(path)
    status = read_status(path)
    meas = _cut(read_table(path / MEASUREMENTS), status.get("measurement_rows"), path / MEASUREMENTS)
    steps = _cut(read_table(path / STEPS), status.get("steps_done"), path / STEPS)
    prov = read_json(path / PROVENANCE, "a provenance record")
    return RunResult(cfg, path, meas, steps, status, prov)


def timings(elapsed: float, measure_seconds: float, steps_done: int, commit_seconds: float) -> dict[str, float]:
    """The provenance's timing block: wall time, measurement share, time per step, time spent committing."""
    return {
        "wall_seconds": elapsed,
        "measure_seconds": measure_seconds,
        "measure_share": measure_seconds / elapsed if elapsed > 0 else math.nan,
        "seconds_per_step_excluding_measurements": (elapsed - measure_seconds) / max(1, steps_done),
        "commit_seconds": commit_seconds,
        "commit_share": commit_seconds / elapsed if elapsed > 0 else math.nan,
    }
