"""The verified downloader behind the data loaders: where data files are looked for, checksums, downloads.

**Where files are looked for.** The *data folder* is, in order of precedence, the ``data_dir`` argument,
the environment variable ``SAMEDGE_DATA``, or the per-user cache (:func:`default_cache_dir`, pooch's
per-OS cache folder: ``$XDG_CACHE_HOME/samedge/data`` or ``~/.cache/samedge/data`` on Linux). The cache is
always searched second, so a read-only data folder (a shared copy) can be completed by downloads into the
cache. Inside a folder the layout is torchvision's (plus char-rnn's)::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}   (or cifar-10-python.tar.gz next to it)
    tinyshakespeare/input.txt

so existing torchvision downloads are reused (torchvision itself is not needed).

**Checksums.** Every file is verified before use against the digests in :data:`MNIST_FILES`,
:data:`CIFAR10_FILES`, :data:`CIFAR10_ARCHIVE` and :data:`SHAKESPEARE_FILE` (plain data, so tests can
substitute them). A file may have several accepted digests (the original CIFAR-10 batches and rebuilt
copies of them); any one matching is enough. A local file whose digest matches none raises
:class:`DataError`; it is never silently replaced.

**Downloads** (``download=True``) go through pooch (https://www.fatiando.org/pooch): the canonical sources,
or ``$SAMEDGE_DATA_MIRROR`` (a base URL laid out like a data folder), into the first searched folder whose
permission bits allow writing (a folder marked read-only is never written to, even by root). pooch streams
each file into a temporary file in the destination folder, which is checked here (length, then any
accepted digest) and only then moved into place: a failed, corrupt or killed download never leaves a file
under the data file's name. ``$SAMEDGE_DATA_TIMEOUT`` sets the network timeout in seconds (default 60).
The CIFAR-10 tarball is unpacked with pooch's ``Untar`` (only the known members) into a scratch folder,
and each member is verified before it is moved into place.

The file tables and the loaders are :mod:`samedge_lib.engine.data`'s; this module knows no dataset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import urllib.parse
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

with warnings.catch_warnings():
    # pooch imports tqdm.auto, which warns (on stderr) inside a Jupyter kernel without ipywidgets; pooch's
    # progress bars are not used here, so there is nothing to act on, and a book build fails on stderr.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import pooch

#: Environment variable naming the data folder (overridden by an explicit ``data_dir``).
ENV_DATA = "SAMEDGE_DATA"
#: Environment variable with a base URL that replaces every canonical download URL.
ENV_MIRROR = "SAMEDGE_DATA_MIRROR"
#: Environment variable with the network timeout in seconds.
ENV_TIMEOUT = "SAMEDGE_DATA_TIMEOUT"
_DEFAULT_TIMEOUT_S = 60.0


class DataError(RuntimeError):
    """A data file is missing, corrupt, cannot be downloaded or has unexpected content.

    The message names the file, where it was looked for, the expected checksum and how to provide it.
    """


@dataclass(frozen=True)
class RemoteFile:
    """One data file: where it lives inside a data folder, where to download it, which digests are valid.

    Attributes:
        relpath: path inside a data folder, with ``/`` separators (also the path under a mirror URL).
        urls: canonical download URLs, tried in order (empty: the file only comes out of an archive).
        digests: accepted checksums as ``"sha256:<hex>"`` or ``"md5:<hex>"``; any one matching is enough.
        dataset: a human name used in messages.
        archive_urls: for a file that only comes out of an archive, where the archive is downloaded from (named
            in the message that says how to provide the file).
        fetch_name: the dataset's name for ``python tools/fetch_data.py NAME`` (the fix the message gives first).

    """

    relpath: str
    urls: tuple[str, ...]
    digests: tuple[str, ...]
    dataset: str
    archive_urls: tuple[str, ...] = ()
    fetch_name: str = ""

    def __post_init__(self) -> None:
        if not self.digests:
            raise ValueError(f"RemoteFile {self.relpath!r} needs at least one digest")
        for d in self.digests:
            algo, _, hexdigest = d.partition(":")
            if algo not in ("sha256", "md5") or not hexdigest:
                raise ValueError(f"digest {d!r} of {self.relpath!r} must look like 'sha256:<hex>' or 'md5:<hex>'")


# ----------------------------------------------------------------------------------------------------
# Locating folders
# ----------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The per-user cache folder: ``data`` inside pooch's per-OS cache for ``samedge``.

    On Linux ``$XDG_CACHE_HOME/samedge/data``, else ``~/.cache/samedge/data``; on macOS
    ``~/Library/Caches/samedge/data``; on Windows the local application-data folder.
    """
    return Path(pooch.os_cache("samedge")).expanduser() / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$SAMEDGE_DATA`` if set and non-empty, else the cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA, "")
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def search_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched, in order: :func:`resolve_data_dir`, then the per-user cache (if different)."""
    first = resolve_data_dir(data_dir)
    cache = default_cache_dir()
    return [first] if os.path.abspath(first) == os.path.abspath(cache) else [first, cache]


def writable_root(relpath: str, dirs: Sequence[Path]) -> Path | None:
    """The first of ``dirs`` where ``relpath`` may be written: the nearest existing folder on its path grants
    write access both by :func:`os.access` and by its permission bits (root passes ``os.access``
    everywhere, and a folder marked read-only must stay untouched).
    """
    for d in dirs:
        probe = Path(os.path.abspath(d / relpath)).parent
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        mode = probe.stat().st_mode if probe.is_dir() else 0
        if mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) and os.access(probe, os.W_OK | os.X_OK):
            return d
    return None


# ----------------------------------------------------------------------------------------------------
# Checksums
# ----------------------------------------------------------------------------------------------------


def verify_file(path: str | os.PathLike[str], digests: Sequence[str], dataset: str = "data") -> str:
    """Check ``path`` against the accepted ``digests`` (any one is enough); return the one that matched.

    Raises:
        DataError: the file's digest matches none of them (message: path, expected and actual digests).

    """
    actual: dict[str, str] = {}
    for d in digests:
        algo, _, hexdigest = d.partition(":")
        if algo not in actual:
            actual[algo] = pooch.file_hash(str(path), alg=algo)
        if actual[algo] == hexdigest.lower():
            return d
    raise DataError(
        f"{dataset} file {path} is corrupt or not the expected version.\n"
        f"  its checksum:  {_fmt_actual(actual)}\n"
        f"  expected:      {' or '.join(digests)}\n"
        f"Delete or replace it (a fresh copy is downloaded when it is absent), or point {ENV_DATA} / "
        f"data_dir= at a folder with a good copy."
    )


def _fmt_actual(actual: dict[str, str]) -> str:
    return ", ".join(f"{a}:{h}" for a, h in sorted(actual.items()))


# ----------------------------------------------------------------------------------------------------
# Fetching
# ----------------------------------------------------------------------------------------------------


def note(message: str) -> None:
    """Progress lines for slow operations (downloads, extraction) go to stderr."""
    print(f"samedge_lib.engine.data: {message}", file=sys.stderr, flush=True)


def _timeout() -> float:
    raw = os.environ.get(ENV_TIMEOUT, "")
    if not raw:
        return _DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT}={raw!r} must be a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{ENV_TIMEOUT}={raw!r} must be positive")
    return value


def _download_urls(remote: RemoteFile) -> list[str]:
    """The URLs to try: the mirror's if ``$SAMEDGE_DATA_MIRROR`` is set (it replaces the canonical ones)."""
    mirror = os.environ.get(ENV_MIRROR, "")
    if mirror:
        return [mirror.rstrip("/") + "/" + urllib.parse.quote(remote.relpath)]
    return list(remote.urls)


class _DownloadError(Exception):
    """A download that failed or arrived damaged; the message says how (it is discarded)."""


class _Size:
    """pooch's progress-bar protocol (``total``, ``update``, ``reset``, ``close``), used only to learn the
    size the server announced.
    """

    total = 0
    update = reset = close = staticmethod(lambda *args: None)


class _VerifyingDownloader:
    """A pooch downloader: pooch's HTTP downloader, then the checks pooch cannot make here.

    pooch verifies one known hash; a file here may have several accepted digests, so pooch is given none
    and this downloader checks the temporary file (length against the announced size, then the digests)
    before pooch moves it into place. On any failure it raises :class:`_DownloadError` and pooch removes
    the temporary file.
    """

    def __init__(self, remote: RemoteFile) -> None:
        self.remote = remote
        self.matched = ""

    def __call__(self, url: str, output_file: str, pooch_obj: Any, check_only: bool = False) -> None:
        size = _Size()
        http = pooch.HTTPDownloader(progressbar=size, timeout=_timeout(), headers={"User-Agent": "samedge_lib"})
        try:
            http(url, output_file, pooch_obj)
        except requests.exceptions.HTTPError as exc:
            raise _DownloadError(f"HTTP {exc.response.status_code} {exc.response.reason}") from exc
        except requests.exceptions.Timeout as exc:
            raise _DownloadError(f"timed out after {_timeout():g} s (set {ENV_TIMEOUT} to wait longer)") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _DownloadError(f"cannot connect ({exc})") from exc
        except requests.exceptions.RequestException as exc:  # e.g. the connection dropped mid-transfer
            received = _bytes_read(exc, os.path.getsize(output_file))
            raise _DownloadError(f"transfer broke off after {received} of {size.total} bytes (discarded)") from exc
        received = os.path.getsize(output_file)
        if size.total and received != size.total:
            raise _DownloadError(f"transfer broke off after {received} of {size.total} bytes (discarded)")
        try:
            self.matched = verify_file(output_file, self.remote.digests, self.remote.dataset)
        except DataError:
            algorithms = {d.partition(":")[0] for d in self.remote.digests}
            actual = {a: pooch.file_hash(output_file, alg=a) for a in algorithms}
            raise _DownloadError(
                f"downloaded, but its checksum is {_fmt_actual(actual)}, expected "
                f"{' or '.join(self.remote.digests)}: the server sent a different or damaged file (discarded)"
            ) from None


def _bytes_read(exc: BaseException, fallback: int) -> int:
    """The bytes a broken transfer delivered: urllib3's ``IncompleteRead`` (somewhere in the exception chain
    requests raises) counts them, including those still buffered when the connection dropped.
    """
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if isinstance(e, urllib3.exceptions.IncompleteRead):
            return int(e.partial)
        if isinstance(e, BaseException) and id(e) not in seen:
            seen.add(id(e))
            stack += [*e.args, e.__cause__, e.__context__]
    return fallback


@contextlib.contextmanager
def pooch_quiet() -> Iterator[None]:
    """Silence pooch's informational log lines (this module prints its own) for one call."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def find_local(remote: RemoteFile, dirs: Sequence[Path]) -> tuple[Path, str] | None:
    """The first existing copy of ``remote`` in ``dirs``, verified (a corrupt copy raises)."""
    for d in dirs:
        path = d / remote.relpath
        if path.is_file():
            return path, verify_file(path, remote.digests, remote.dataset)
    return None


def try_download(remote: RemoteFile, dirs: Sequence[Path], failures: list[str]) -> tuple[Path, str] | None:
    """Download ``remote`` into the first writable folder; record each failed attempt in ``failures``."""
    urls = _download_urls(remote)
    if not urls:
        return None
    root = writable_root(remote.relpath, dirs)
    if root is None:
        failures.append(
            f"no folder to download into: {', '.join(str(d) for d in dirs)} are read-only; "
            f"set {ENV_DATA} or XDG_CACHE_HOME to a writable folder"
        )
        return None
    for url in urls:
        note(f"downloading {url} -> {root / remote.relpath}")
        downloader = _VerifyingDownloader(remote)
        try:
            with pooch_quiet():
                path = pooch.retrieve(url, None, fname=remote.relpath, path=root, downloader=downloader)
            return Path(path), downloader.matched
        except (OSError, _DownloadError) as exc:
            failures.append(f"{url}: {exc}")
    return None


def _data_folder_words(folder: Path) -> str:
    """Where ``folder`` came from, in the words of the command line: ``--data-dir``, ``$SAMEDGE_DATA`` or the cache."""
    env = os.environ.get(ENV_DATA, "")
    if env and os.path.abspath(Path(env).expanduser()) == os.path.abspath(folder):
        return f"${ENV_DATA}"
    if os.path.abspath(folder) == os.path.abspath(default_cache_dir()):
        return f"the per-user cache; ${ENV_DATA} is not set"
    return "the folder given with --data-dir"


def missing_error(
    remote: RemoteFile,
    dirs: Sequence[Path],
    failures: Sequence[str],
    download: bool,
    extra_places: Sequence[Path] = (),
) -> DataError:
    """The error for a file found nowhere: the short fix first (the command that fetches it, or where to put it),
    the details after (every place looked at, every download tried, the checksum, the sources).
    """
    folder = dirs[0]
    words = _data_folder_words(folder)
    fetch_cmd = "python tools/fetch_data.py" + (f" {remote.fetch_name}" if remote.fetch_name else "")
    if words.startswith("the folder given"):
        fetch_cmd += f" --data-dir {folder}"
    what = f"{remote.relpath.split('/')[0]}/" if not remote.urls else remote.relpath
    lines = [
        f"{remote.dataset} file {remote.relpath!r} is not available in {folder} ({words}).",
        f"Fix: run `{fetch_cmd}` where there is network access, or put {what} into {folder}, or point --data-dir "
        f"(or ${ENV_DATA}) at a data folder that has it.",
        "Details: looked for it at:",
    ]
    lines += [f"  {p}" for p in [d / remote.relpath for d in dirs] + list(extra_places)]
    if failures:
        lines.append("Download attempts:")
        lines += [f"  {f}" for f in failures]
    elif not download:
        lines.append("Downloading was disabled (download=False).")
    lines.append(f"Expected checksum: {' or '.join(remote.digests)}")
    sources = list(remote.urls) or list(remote.archive_urls)
    hint = "download " + " or ".join(sources)
    if not remote.urls:
        hint += f" and extract it into the data folder (it contains {what})"
    else:
        hint += f" and save it as <data folder>/{remote.relpath}"
    lines.append(
        f"By hand: {hint}. From Python: data_dir=... (download=True fetches it); ${ENV_MIRROR}=<base URL> uses a "
        f"mirror laid out like a data folder."
    )
    return DataError("\n".join(lines))


def fetch(remote: RemoteFile, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """Return the path of a verified local copy of ``remote``, downloading it if needed and allowed.

    Looks in :func:`search_dirs` order; a found copy is checksum-verified (a corrupt one raises rather
    than being replaced). A missing one is downloaded into the first writable searched folder.

    Raises:
        DataError: corrupt copy, or not found and not downloadable (the message lists every place
            looked at, every URL tried and why it failed, the expected checksum and how to provide it).

    """
    return fetch_with_source(remote, data_dir, download)[0]


def local_or_download(
    remote: RemoteFile, dirs: Sequence[Path], download: bool, failures: list[str]
) -> tuple[Path, str] | None:
    """A verified local copy, else (if allowed) a verified download; ``None`` with ``failures`` filled in."""
    found = find_local(remote, dirs)
    if found is not None or not download:
        return found
    return try_download(remote, dirs, failures)


def fetch_with_source(remote: RemoteFile, data_dir: str | os.PathLike[str] | None, download: bool) -> tuple[Path, str]:
    """:func:`fetch`, also returning the digest the file matched (recorded in a run's data provenance)."""
    dirs = search_dirs(data_dir)
    failures: list[str] = []
    got = local_or_download(remote, dirs, download, failures)
    if got is not None:
        return got
    raise missing_error(remote, dirs, failures, download)
