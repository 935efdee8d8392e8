"""MNIST, CIFAR-10 and tiny_shakespeare: find the files, download them with checksums, preprocess them
exactly as the official code does (``image_classification.py``, ``dataset.py`` and ``transformer.py`` of
https://github.com/google-deepmind/sam_edge).

**Where files are looked for** (the ``data_dir`` argument, ``SAMEDGE_DATA``, the per-user cache, in
torchvision's folder layout), **checksums and downloads** are :mod:`samedge_lib.engine.download`'s (re-exported
here): every file is verified before use against the digests of :data:`MNIST_FILES`, :data:`CIFAR10_FILES`,
:data:`CIFAR10_ARCHIVE` and :data:`SHAKESPEARE_FILE` (plain data, so tests can substitute them), and a download is
checked before it is moved into place. The CIFAR-10 tarball is unpacked with pooch's ``Untar`` (only the known
members) into a scratch folder, and each member is verified before it is moved into place.

**Preprocessing** (official ``image_classification.py``): images as float32 ``x / 256.0`` (not 255),
one-hot targets over 10 classes, minus the per-pixel mean of the training images actually used (the
first ``n_train``), the same mean subtracted from the test images; no standardisation, no augmentation.
Images are returned NCHW; models that mimic the official NHWC flattening permute themselves.
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
import struct
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():
    # pooch imports tqdm.auto, which warns (on stderr) inside a Jupyter kernel without ipywidgets; pooch's
    # progress bars are not used here, so there is nothing to act on, and a book build fails on stderr.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import pooch

from samedge_lib.engine.download import (
    ENV_DATA,
    ENV_MIRROR,
    ENV_TIMEOUT,
    DataError,
    RemoteFile,
    default_cache_dir,
    fetch,
    fetch_with_source,
    find_local,
    local_or_download,
    missing_error,
    note,
    pooch_quiet,
    resolve_data_dir,
    search_dirs,
    try_download,
    verify_file,
    writable_root,
)

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_FILES",
    "ENV_DATA",
    "ENV_MIRROR",
    "ENV_TIMEOUT",
    "MNIST_FILES",
    "SHAKESPEARE_FILE",
    "ChunkBatcher",
    "DataError",
    "ImageData",
    "RemoteFile",
    "TextData",
    "chunk_rows",
    "decode",
    "default_cache_dir",
    "fetch",
    "load_cifar10",
    "load_mnist",
    "load_tiny_shakespeare",
    "resolve_data_dir",
    "search_dirs",
    "verify_file",
]

#: The image tasks' number of classes (MNIST's digits, CIFAR-10's classes).
NUM_CLASSES = 10

# ----------------------------------------------------------------------------------------------------
# The file tables: sha256 of the canonical files; CIFAR-10 md5 from torchvision's list
# (https://github.com/pytorch/vision/blob/main/torchvision/datasets/cifar.py)
# ----------------------------------------------------------------------------------------------------

_MNIST_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist(name: str, sha256: str) -> RemoteFile:
    return RemoteFile(
        f"MNIST/raw/{name}", tuple(b + name for b in _MNIST_BASES), (f"sha256:{sha256}",), "MNIST", fetch_name="mnist"
    )


#: MNIST's four files, keyed by role.
MNIST_FILES: dict[str, RemoteFile] = {
    "train_images": _mnist(
        "train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train_labels": _mnist(
        "train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "test_images": _mnist(
        "t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "test_labels": _mnist(
        "t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}

#: The CIFAR-10 python tarball (163 MB); it holds ``cifar-10-batches-py/``.
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    ("md5:c58f30108f718f92721af3b95e74349a",),
    "CIFAR-10",
    fetch_name="cifar10",
)


def _cifar(name: str, *digests: str) -> RemoteFile:
    return RemoteFile(
        f"cifar-10-batches-py/{name}", (), digests, "CIFAR-10", archive_urls=CIFAR10_ARCHIVE.urls, fetch_name="cifar10"
    )


#: CIFAR-10's batch files, keyed by file name. The originals are accepted by md5 (torchvision's list); the
#: sha256 digests are those of rebuilt copies (re-pickled batches, a test batch cut to its first 1,000
#: images whose ``batch_label`` says so), which some shared data folders hold.
CIFAR10_FILES: dict[str, RemoteFile] = {
    "data_batch_1": _cifar(
        "data_batch_1",
        "md5:c99cafc152244af753f735de768cd75f",
        "sha256:db8ddd0f335e7c3c0b4965cbc724a514cb6d7d425daf544b02f8ae4b8f531bd8",
    ),
    "data_batch_2": _cifar("data_batch_2", "md5:d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3": _cifar("data_batch_3", "md5:54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4": _cifar("data_batch_4", "md5:634d18415352ddfa80567beed471001a"),
    "data_batch_5": _cifar("data_batch_5", "md5:482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch": _cifar(
        "test_batch",
        "md5:40351d587109b95175f43aff81a1287e",
        "sha256:44acc7690c3500e4446602dbde0a48fb153549d3dfa26a74f03fb097e2de795a",
    ),
    "batches.meta": _cifar(
        "batches.meta",
        "md5:5ff9c542aee3614f3951f8cda6e48888",
        "sha256:f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb",
    ),
}
_CIFAR_TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")

#: Karpathy's char-rnn tiny_shakespeare corpus.
SHAKESPEARE_FILE = RemoteFile(
    "tinyshakespeare/input.txt",
    ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
    ("sha256:86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",),
    "tiny_shakespeare",
    fetch_name="shakespeare",
)


# ----------------------------------------------------------------------------------------------------
# Image data
# ----------------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """An image classification task, preprocessed as the official code does.

    Attributes:
        x_train: ``[N, C, H, W]`` float32, ``pixels / 256 - train_mean``.
        y_train: ``[N]`` int64 labels in ``0..9``.
        t_train: ``[N, 10]`` float32 one-hot targets (what the squared loss compares against).
        x_test, y_test, t_test: the same for the test images (centred with the *training* mean).
        train_mean: ``[1, C, H, W]`` float32 per-pixel mean of the training images after ``/256``.
        name: ``"mnist"`` or ``"cifar10"``.
        info: provenance: files and matched checksums, sizes, class counts, notes on ordering.

    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    t_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    t_test: torch.Tensor
    train_mean: torch.Tensor
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return int(self.x_test.shape[0])

    def class_counts(self, split: str = "train") -> list[int]:
        """Examples per class (index = label) in ``split`` (``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise ValueError(f"split={split!r} must be 'train' or 'test'")
        labels = self.y_train if split == "train" else self.y_test
        return torch.bincount(labels, minlength=NUM_CLASSES).tolist()


def _check_count_type(name: str, value: object) -> None:
    """Reject a count that is not ``None`` or a positive integer, before any file is read."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}={value!r} must be a positive integer or None (None: all available)")
    if value < 1:
        raise ValueError(f"{name}={value} must be at least 1 (or None: all available)")


def _check_count(name: str, value: int | None, available: int, what: str) -> int:
    """Validate ``n_train`` / ``n_test`` against the ``available`` count: ``None`` means all of them."""
    _check_count_type(name, value)
    if value is None:
        return available
    if not 1 <= value <= available:
        raise ValueError(f"{name}={value} must lie in [1, {available}] ({available} {what} are available)")
    return int(value)


def _centre(
    train_u8: np.ndarray, train_labels: np.ndarray, test_u8: np.ndarray, test_labels: np.ndarray
) -> tuple[torch.Tensor, ...]:
    """``x / 256`` minus the per-pixel training mean; one-hot targets. Inputs are uint8 NCHW arrays.

    The mean is formed exactly (integer sums, then float64) and rounded to float32 once; the official code
    averages float32 values in JAX, which agrees to float32 rounding.
    """
    n = train_u8.shape[0]
    mean64 = train_u8.sum(axis=0, dtype=np.int64, keepdims=True) / (256.0 * n)
    mean = torch.from_numpy(mean64.astype(np.float32))
    # astype copies into fresh writable float32 arrays; x / 256 is exact in float32.
    x_train = torch.from_numpy(train_u8.astype(np.float32)).div_(256.0).sub_(mean)
    x_test = torch.from_numpy(test_u8.astype(np.float32)).div_(256.0).sub_(mean)
    y_train = torch.from_numpy(train_labels.astype(np.int64))
    y_test = torch.from_numpy(test_labels.astype(np.int64))
    t_train = torch.nn.functional.one_hot(y_train, NUM_CLASSES).to(torch.float32)
    t_test = torch.nn.functional.one_hot(y_test, NUM_CLASSES).to(torch.float32)
    return x_train, y_train, t_train, x_test, y_test, t_test, mean


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels outside 0..{NUM_CLASSES - 1} (min {labels.min()}, max {labels.max()})")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Decode an IDX file (MNIST's format; gzip-compressed if the name ends in ``.gz``) of uint8 data."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    if len(raw) < 4 + 4 * ndim or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(f"{path} is not an IDX file of uint8 with {ndim} dimensions (header {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise DataError(f"{path}: header says {dims} = {math.prod(dims)} values, the file holds {body.size}")
    return body.reshape(dims)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    download: bool = True,
) -> ImageData:
    """MNIST as in the official ``image_classification.py``: ``[N, 1, 28, 28]`` float32, ``/256``, centred, one-hot.

    Args:
        data_dir: data folder (default ``$SAMEDGE_DATA``, else the per-user cache); see the module docstring.
        n_train: use the first ``n_train`` training images (file order, which is TFDS's order too);
            ``None`` means all 60,000 (the official full-batch setting). The centring mean is taken over
            exactly these images.
        n_test: use the first ``n_test`` test images; ``None`` means all 10,000.
        download: fetch missing files (else raise :class:`DataError`).

    """
    _check_count_type("n_train", n_train)
    _check_count_type("n_test", n_test)
    files = {role: fetch_with_source(remote, data_dir, download) for role, remote in MNIST_FILES.items()}
    train_images = _read_idx(files["train_images"][0], 3)
    train_labels = _read_idx(files["train_labels"][0], 1)
    test_images = _read_idx(files["test_images"][0], 3)
    test_labels = _read_idx(files["test_labels"][0], 1)
    for images, labels, what in ((train_images, train_labels, "train"), (test_images, test_labels, "test")):
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"MNIST {what}: {images.shape[0]} images but {labels.shape[0]} labels")
        _check_labels(labels, files[f"{what}_labels"][0])
    n_tr = _check_count("n_train", n_train, train_images.shape[0], "MNIST training images")
    n_te = _check_count("n_test", n_test, test_images.shape[0], "MNIST test images")
    x_tr, y_tr, t_tr, x_te, y_te, t_te, mean = _centre(
        train_images[:n_tr, None], train_labels[:n_tr], test_images[:n_te, None], test_labels[:n_te]
    )
    info = {
        "dataset": "MNIST",
        "n_train": n_tr,
        "n_test": n_te,
        "train_order": "file order (the IDX files' order, also TFDS's); the first n_train images",
        "preprocessing": "float32 x/256, minus the per-pixel mean of the n_train training images; one-hot",
        "files": {files[r][0].name: {"path": str(files[r][0]), "checksum": files[r][1]} for r in files},
        "train_class_counts": np.bincount(train_labels[:n_tr], minlength=NUM_CLASSES).tolist(),
        "test_class_counts": np.bincount(test_labels[:n_te], minlength=NUM_CLASSES).tolist(),
    }
    return ImageData(x_tr, y_tr, t_tr, x_te, y_te, t_te, mean, "mnist", info)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches, allowing only the few numpy globals that a batch needs.

    Files are checksum-verified before this runs; the whitelist is defence in depth against code in pickles.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which a batch never needs")
        if module == "_codecs":
            return importlib.import_module("codecs").encode
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                return getattr(importlib.import_module("numpy._core.multiarray"), name)
            except ImportError:  # numpy < 2
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        return getattr(np, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Return ``(images uint8 [n, 3, 32, 32], labels int64 [n], the rest of the batch dict)``."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch: {exc}") from exc
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 python batch (a dict with 'data' and 'labels')")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: expected 'data' uint8 [n, 3072] and n labels, got {data.dtype} {data.shape} "
            f"and {labels.shape[0]} labels"
        )
    _check_labels(labels, path)
    rest = {k: v for k, v in batch.items() if k not in ("data", "labels")}
    # Rows are R, G, B planes of 32x32 in row-major order: exactly NCHW.
    return data.reshape(-1, 3, 32, 32), labels, rest


def _extract_cifar(archive: Path, dirs: Sequence[Path], remove_archive: bool) -> None:
    """Extract the missing known batch files from the CIFAR-10 tarball (pooch ``Untar`` with a member list)
    into a scratch folder next to their destination, verify each, and only then move it into place.
    """
    root = writable_root(CIFAR10_FILES["data_batch_1"].relpath, dirs)
    if root is None:
        raise DataError(
            f"cannot extract {archive}: every searched folder ({', '.join(map(str, dirs))}) is read-only; "
            f"set {ENV_DATA} or XDG_CACHE_HOME to a writable folder"
        )
    wanted = {remote.relpath: remote for remote in CIFAR10_FILES.values()}
    for relpath, remote in wanted.items():
        if (root / relpath).is_file():
            verify_file(root / relpath, remote.digests, remote.dataset)
    members = [relpath for relpath in wanted if not (root / relpath).is_file()]
    if members:
        note(f"extracting {archive} into {root}")
        with tempfile.TemporaryDirectory(prefix=".cifar-extract-", dir=root) as scratch:
            with pooch_quiet():
                pooch.Untar(members=members, extract_dir=scratch)(str(archive), "download", None)
            for relpath in members:
                tmp = Path(scratch) / relpath
                if tmp.is_file():
                    remote = wanted[relpath]
                    verify_file(tmp, remote.digests, f"{remote.dataset} (extracted from {archive})")
                    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, root / relpath)
    if remove_archive:
        archive.unlink(missing_ok=True)


def _fetch_cifar(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> tuple[Path, str]:
    """A verified CIFAR-10 batch file: a local copy, else a mirror's copy, else out of the tarball."""
    remote = CIFAR10_FILES[name]
    dirs = search_dirs(data_dir)
    failures: list[str] = []
    got = local_or_download(remote, dirs, download, failures)  # downloads only from a mirror: no canonical URL
    if got is not None:
        return got
    archive = find_local(CIFAR10_ARCHIVE, dirs)
    downloaded = False
    if archive is None and download:
        archive = try_download(CIFAR10_ARCHIVE, dirs, failures)
        downloaded = archive is not None
    if archive is not None:
        _extract_cifar(archive[0], dirs, remove_archive=downloaded)
        found = find_local(remote, dirs)
        if found is not None:
            return found
        failures.append(f"{archive[0]} does not contain {remote.relpath}")
    raise missing_error(remote, dirs, failures, download, [d / CIFAR10_ARCHIVE.relpath for d in dirs])


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    n_train: int | None = 1000,
    n_test: int | None = None,
    download: bool = True,
) -> ImageData:
    """CIFAR-10 as in the official ``image_classification.py``: ``[N, 3, 32, 32]`` float32, ``/256``, centred, one-hot.

    The training set is the **first** ``n_train`` images in the pickle order of ``data_batch_1``,
    ``data_batch_2``, ... (only the batches needed are read). The official code took the first 1000 in
    **TFDS order**, which is a different set of images; the class counts of the subset used are in
    ``info["train_class_counts"]`` and :meth:`ImageData.class_counts`, so a reader can see what was used.
    The centring mean is over exactly these ``n_train`` images.

    Args:
        data_dir: data folder (default ``$SAMEDGE_DATA``, else the per-user cache).
        n_train: number of training images, default 1000 (the paper's task); ``None`` means all 50,000.
        n_test: the first ``n_test`` images of ``test_batch``; ``None`` means all it holds. The original
            holds 10,000; a rebuilt copy (accepted by its own digest) holds only the first 1,000 (its
            ``batch_label`` says so, recorded in ``info["test_batch_label"]``), so test accuracies on it
            are not comparable with published ones.
        download: fetch missing files (else raise :class:`DataError`).

    """
    _check_count_type("n_test", n_test)
    if n_train is not None:
        _check_count("n_train", n_train, 50_000, "CIFAR-10 training images (5 batches)")
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    files: dict[str, dict[str, str]] = {}
    have = 0
    for name in _CIFAR_TRAIN_BATCHES:
        if n_train is not None and have >= n_train:
            break
        path, checksum = _fetch_cifar(name, data_dir, download)
        files[name] = {"path": str(path), "checksum": checksum}
        x, y, _ = _read_cifar_batch(path)
        images.append(x)
        labels.append(y)
        have += x.shape[0]
    train_x = np.concatenate(images)
    train_y = np.concatenate(labels)
    n_tr = _check_count("n_train", n_train, train_x.shape[0], "CIFAR-10 training images")
    test_path, test_checksum = _fetch_cifar("test_batch", data_dir, download)
    files["test_batch"] = {"path": str(test_path), "checksum": test_checksum}
    test_x, test_y, test_rest = _read_cifar_batch(test_path)
    n_te = _check_count("n_test", n_test, test_x.shape[0], f"CIFAR-10 test images in {test_path}")
    meta_path, meta_checksum = _fetch_cifar("batches.meta", data_dir, download)
    files["batches.meta"] = {"path": str(meta_path), "checksum": meta_checksum}
    with open(meta_path, "rb") as f:
        meta = _BatchUnpickler(f, encoding="latin1").load()
    x_tr, y_tr, t_tr, x_te, y_te, t_te, mean = _centre(train_x[:n_tr], train_y[:n_tr], test_x[:n_te], test_y[:n_te])
    info = {
        "dataset": "CIFAR-10",
        "n_train": n_tr,
        "n_test": n_te,
        "train_order": (
            "the first n_train images in the pickle order of data_batch_1..5; the official code took the "
            "first 1000 in TFDS order, which is a different set"
        ),
        "preprocessing": "float32 x/256, minus the per-pixel mean of the n_train training images; one-hot",
        "label_names": list(meta.get("label_names", [])) if isinstance(meta, dict) else [],
        "test_batch_label": str(test_rest.get("batch_label", "")),
        "test_batch_size": int(test_x.shape[0]),
        "files": files,
        "train_class_counts": np.bincount(train_y[:n_tr], minlength=NUM_CLASSES).tolist(),
        "test_class_counts": np.bincount(test_y[:n_te], minlength=NUM_CLASSES).tolist(),
    }
    return ImageData(x_tr, y_tr, t_tr, x_te, y_te, t_te, mean, "cifar10", info)


# ----------------------------------------------------------------------------------------------------
# tiny_shakespeare
# ----------------------------------------------------------------------------------------------------


@dataclass
class TextData:
    """A character corpus split into train and test token streams (ASCII codes, as the official ``dataset.py``).

    Attributes:
        train_tokens, test_tokens: 1-D int64 tensors of ``ord(c)``, newlines kept.
        vocab_size: 128 (ASCII). pad: token 0 (absent from the corpus, so the loss mask is all ones).
        info: path, checksum, line and character counts, the split rule.

    """

    train_tokens: torch.Tensor
    test_tokens: torch.Tensor
    vocab_size: int = 128
    pad: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def decode(tokens: torch.Tensor | Sequence[int]) -> str:
    """Turn ASCII tokens (0..127) back into text."""
    values = tokens.numpy(force=True) if isinstance(tokens, torch.Tensor) else np.asarray(list(tokens))
    values = values.astype(np.int64).reshape(-1)
    if values.size and (values.min() < 0 or values.max() > 127):
        raise ValueError(f"tokens must be ASCII codes 0..127, got values in [{values.min()}, {values.max()}]")
    return values.astype(np.uint8).tobytes().decode("ascii")


def load_tiny_shakespeare(
    data_dir: str | os.PathLike[str] | None = None, download: bool = True, test_lines: int = 10_000
) -> TextData:
    """tiny_shakespeare as ASCII tokens, the last ``test_lines`` lines held out as the test set.

    The split is at the start of line ``L - test_lines + 1`` (``L`` = 40,000 lines), i.e. the test text is
    exactly ``tail -n 10000`` and the training text ``head -n 30000``, newlines kept. Tokens are ``ord(c)``
    with vocabulary 128 and pad 0, as the official ``dataset.py``.

    Raises:
        DataError: the file is missing/corrupt, or holds a non-ASCII byte or a NUL (which would collide
            with the pad token).

    """
    path, checksum = fetch_with_source(SHAKESPEARE_FILE, data_dir, download)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    bad = np.flatnonzero((raw == 0) | (raw >= 128))
    if bad.size:
        pos = int(bad[0])
        raise DataError(
            f"{path}: byte {raw[pos]:#04x} at offset {pos} is {'NUL' if raw[pos] == 0 else 'not ASCII'}; "
            f"tokens are ASCII codes 1..127 (0 is the pad token)"
        )
    newlines = np.flatnonzero(raw == ord("\n"))
    n_lines = int(newlines.size) + int(raw.size > 0 and raw[-1] != ord("\n"))
    if isinstance(test_lines, bool) or not isinstance(test_lines, int) or not 1 <= test_lines < n_lines:
        raise ValueError(f"test_lines={test_lines!r} must be an integer in [1, {n_lines - 1}] (the file has {n_lines})")
    first_test_line = n_lines - test_lines + 1  # 1-based
    cut = 0 if first_test_line == 1 else int(newlines[first_test_line - 2]) + 1
    tokens = torch.from_numpy(raw.astype(np.int64))
    info = {
        "dataset": "tiny_shakespeare",
        "path": str(path),
        "checksum": checksum,
        "n_chars": int(raw.size),
        "n_lines": n_lines,
        "train_lines": n_lines - test_lines,
        "test_lines": test_lines,
        "split": f"test = the last {test_lines} lines (from line {first_test_line} on), newlines kept",
        "distinct_chars": int(np.unique(raw).size),
    }
    return TextData(tokens[:cut].clone(), tokens[cut:].clone(), 128, 0, info)


def chunk_rows(tokens: torch.Tensor, batch_size: int = 128, seq_len: int = 64) -> torch.Tensor:
    """Cut a token stream into non-overlapping rows of ``seq_len + 1`` tokens, as ``load_ascii_dataset``.

    The stream is truncated to a multiple of ``batch_size * (seq_len + 1)`` (the official code's rule), so
    the number of rows is a multiple of ``batch_size``. Returns int64 ``[rows, seq_len + 1]``; a row gives
    ``inputs = row[:-1]``, ``targets = row[1:]``.
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
    crop = seq_len + 1
    block = batch_size * crop
    usable = tokens.numel() // block * block
    if usable == 0:
        raise ValueError(
            f"{tokens.numel()} tokens are fewer than one batch of {batch_size} x {crop} = {block}; "
            f"use a smaller batch_size or seq_len"
        )
    return tokens[:usable].to(torch.int64).reshape(-1, crop).clone()


class ChunkBatcher:
    """Seeded minibatches of rows whose order is a pure function of ``(seed, step)``.

    Epoch ``e`` visits the rows in the order of ``torch.randperm(R)`` drawn from a generator seeded by
    ``(seed, e)``; step ``t`` takes positions ``[(t mod S) * B, (t mod S + 1) * B)`` of epoch ``t // S``'s
    permutation (``S = R // B`` steps per epoch). A run resumed at step ``t`` therefore sees exactly the
    batches an uninterrupted run would, and each row appears once per epoch when ``R`` is a multiple of
    ``B`` (as :func:`chunk_rows` guarantees). The permutation generator is torch's CPU generator, so the
    order is reproducible for a given torch version.

    The official code instead cycles the rows through an **unseeded** reservoir-style shuffle buffer of
    ``10 * B = 1280`` rows (Python ``random``): its order is not reproducible and rows are only locally
    mixed. Uniform per-epoch permutations are the reproducible stand-in.
    """

    def __init__(self, rows: torch.Tensor, batch_size: int = 128, seed: int = 0) -> None:
        if rows.ndim != 2 or rows.shape[1] < 2:
            raise ValueError(f"rows must be [R, seq_len + 1] with seq_len >= 1, got shape {tuple(rows.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= rows.shape[0]:
            raise ValueError(f"batch_size={batch_size!r} must be an integer in [1, {rows.shape[0]}] (the row count)")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        self.rows = rows.to(torch.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = rows.shape[0] // batch_size
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor, batch_size: int = 128, seq_len: int = 64, seed: int = 0) -> ChunkBatcher:
        """Chunk a token stream with :func:`chunk_rows` and batch its rows."""
        return cls(chunk_rows(tokens, batch_size, seq_len), batch_size, seed)

    @property
    def num_rows(self) -> int:
        """Number of rows ``R``."""
        return int(self.rows.shape[0])

    def _generator(self, stream: int, index: int) -> torch.Generator:
        # SeedSequence mixes (seed, stream, index) into independent, well-spread 64-bit seeds.
        state = np.random.SeedSequence(self.seed, spawn_key=(stream, index)).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def permutation(self, epoch: int) -> torch.Tensor:
        """The row order of ``epoch`` (a permutation of ``range(R)``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative integer")
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, torch.randperm(self.num_rows, generator=self._generator(0, epoch)))
        return self._perm_cache[1]

    def indices(self, step: int) -> torch.Tensor:
        """The row indices of the batch at ``step`` (``[batch_size]``)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r} must be a non-negative integer")
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]

    def _split(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.rows[idx]
        return chosen[:, :-1], chosen[:, 1:]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, each int64 ``[batch_size, seq_len]``, for training step ``step``."""
        return self._split(self.indices(step))

    def fixed_batch(self, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch of distinct random rows, a function of ``(seed, index)`` only (for evaluations).

        It comes from a generator stream separate from the training epochs'.
        """
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"index={index!r} must be a non-negative integer")
        perm = torch.randperm(self.num_rows, generator=self._generator(1, index))
        return self._split(perm[: self.batch_size])
