"""Tests of samedge_lib.engine.data.

Two kinds: (1) the real datasets, found by the library's own rule (``$SAMEDGE_DATA``, else the per-user
cache; read only, nothing is downloaded), checked against published facts of the canonical files and
against bytes decoded independently here; (2) real downloads from an HTTP server on 127.0.0.1 serving
small generated files, with the checksum tables substituted by monkeypatching.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from samedge_lib.engine import data

REPO = Path(__file__).resolve().parents[1]
#: Where the library finds the real files, decided once before any test changes the environment.
REAL_DIRS = data.search_dirs()


def _real_dir(remote: data.RemoteFile) -> Path | None:
    """The first folder of the library's search order that holds ``remote``, or None."""
    return next((d for d in REAL_DIRS if (d / remote.relpath).is_file()), None)


MNIST_DIR = _real_dir(data.MNIST_FILES["train_images"])
CIFAR_DIR = _real_dir(data.CIFAR10_FILES["data_batch_1"])
SHAKESPEARE_DIR = _real_dir(data.SHAKESPEARE_FILE)
_WHERE = f"not in {', '.join(map(str, REAL_DIRS))}; set SAMEDGE_DATA to a data folder"
needs_mnist = pytest.mark.skipif(MNIST_DIR is None, reason=f"MNIST {_WHERE}")
needs_cifar = pytest.mark.skipif(CIFAR_DIR is None, reason=f"CIFAR-10 {_WHERE}")
needs_shakespeare = pytest.mark.skipif(SHAKESPEARE_DIR is None, reason=f"tiny_shakespeare {_WHERE}")

# Facts of the canonical files (first labels, class counts, a row of pixels), checked independently below.
MNIST_FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
CIFAR_FIRST_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
CIFAR_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
CIFAR_IMAGE0_RED = [59, 43, 50, 68, 98, 119, 139, 145, 149, 149]
CIFAR_BATCH1_COUNTS = [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the user's data folders, mirror or cache; downloads time out quickly."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.delenv(data.ENV_MIRROR, raising=False)
    monkeypatch.setenv(data.ENV_TIMEOUT, "5")


@pytest.fixture(scope="module")
def mnist() -> data.ImageData:
    return data.load_mnist(MNIST_DIR, download=False)


@pytest.fixture(scope="module")
def cifar() -> data.ImageData:
    return data.load_cifar10(CIFAR_DIR, download=False)


@pytest.fixture(scope="module")
def shakespeare() -> data.TextData:
    return data.load_tiny_shakespeare(SHAKESPEARE_DIR, download=False)


def _undo(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Pixels back in 0..255 units: ``(x + mean) * 256`` (float32; rounding error ~1e-4 at most)."""
    return x.add(mean).mul_(256.0)


def _off_grid(x: torch.Tensor, mean: torch.Tensor) -> float:
    """Largest distance of ``(x + mean) * 256`` from a whole number (in chunks, to keep memory small)."""
    worst = 0.0
    for chunk in x.split(4096):
        pixels = _undo(chunk, mean)
        worst = max(worst, pixels.sub_(pixels.round()).abs_().max().item())
    return worst


# ----------------------------------------------------------------------------------------------------
# Locating folders
# ----------------------------------------------------------------------------------------------------


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data.default_cache_dir() == tmp_path / "xdg-cache" / "samedge" / "data"
    assert data.resolve_data_dir() == data.default_cache_dir()
    monkeypatch.setenv(data.ENV_DATA, str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.search_dirs(tmp_path / "arg") == [tmp_path / "arg", data.default_cache_dir()]
    monkeypatch.delenv(data.ENV_DATA)
    assert data.search_dirs() == [data.default_cache_dir()]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "samedge" / "data"


def test_remote_file_rejects_malformed_digest() -> None:
    with pytest.raises(ValueError, match="sha256:<hex>"):
        data.RemoteFile("x/y", (), ("sha1:abc",), "test")
    with pytest.raises(ValueError, match="at least one digest"):
        data.RemoteFile("x/y", (), (), "test")


# ----------------------------------------------------------------------------------------------------
# MNIST, real files
# ----------------------------------------------------------------------------------------------------


@needs_mnist
def test_mnist_shapes_labels_and_counts(mnist: data.ImageData) -> None:
    assert mnist.name == "mnist"
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_train.dtype == torch.float32
    assert mnist.x_test.shape == (10000, 1, 28, 28) and mnist.x_test.dtype == torch.float32
    assert mnist.y_train.dtype == torch.int64 and mnist.y_train[:10].tolist() == MNIST_FIRST_LABELS
    assert mnist.class_counts() == MNIST_TRAIN_COUNTS == mnist.info["train_class_counts"]
    assert sum(mnist.class_counts("test")) == 10000
    for t, y in ((mnist.t_train, mnist.y_train), (mnist.t_test, mnist.y_test)):
        assert t.dtype == torch.float32 and t.shape == (y.shape[0], 10)
        assert torch.equal(t.argmax(1), y) and torch.equal(t.sum(1), torch.ones(y.shape[0]))
        assert set(t.unique().tolist()) == {0.0, 1.0}
    assert mnist.info["files"]["train-images-idx3-ubyte.gz"]["checksum"] == (
        "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )


@needs_mnist
def test_mnist_is_pixels_over_256_minus_training_mean(mnist: data.ImageData) -> None:
    # Independent decoding of the first two training images: IDX header is 16 bytes.
    raw = gzip.decompress((MNIST_DIR / "MNIST/raw/train-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, np.uint8, count=2 * 784, offset=16).reshape(2, 1, 28, 28)
    np.testing.assert_allclose(_undo(mnist.x_train[:2], mnist.train_mean).numpy(), first, atol=1e-3)
    assert _off_grid(mnist.x_train[::6], mnist.train_mean) < 1e-3  # scaled by exactly 1/256 (10,000 checked)
    lo = (mnist.x_train.amin(0, keepdim=True) + mnist.train_mean) * 256
    hi = (mnist.x_train.amax(0, keepdim=True) + mnist.train_mean) * 256
    assert lo.min().item() > -1e-3 and hi.max().item() == pytest.approx(255, abs=1e-3)
    # The test images are centred with the *training* mean: adding it back gives whole pixel values.
    assert _off_grid(mnist.x_test, mnist.train_mean) < 1e-3
    # Per-pixel centring over the training set, and the known mean intensity 0.1307 (after /255).
    assert mnist.train_mean.shape == (1, 1, 28, 28)
    assert mnist.x_train.mean(0).abs().max().item() < 1e-5
    assert mnist.train_mean.double().mean().item() * 256 / 255 == pytest.approx(0.1307, abs=5e-4)
    assert mnist.x_train[:5000].std().item() * 256 / 255 < 0.35  # no std normalisation (that gives 1)


@needs_mnist
def test_mnist_subset_uses_the_first_n_and_their_mean(mnist: data.ImageData) -> None:
    small = data.load_mnist(MNIST_DIR, n_train=100, n_test=50, download=False)
    assert small.x_train.shape == (100, 1, 28, 28) and small.x_test.shape == (50, 1, 28, 28)
    assert torch.equal(small.y_train, mnist.y_train[:100]) and torch.equal(small.y_test, mnist.y_test[:50])
    raw = gzip.decompress((MNIST_DIR / "MNIST/raw/train-images-idx3-ubyte.gz").read_bytes())
    first100 = np.frombuffer(raw, np.uint8, count=100 * 784, offset=16).reshape(100, 1, 28, 28)
    np.testing.assert_allclose(small.train_mean.numpy(), first100.mean(0, keepdims=True) / 256.0, atol=1e-7)
    assert small.x_train.double().mean(0).abs().max().item() < 1e-6
    assert small.info["n_train"] == 100 and sum(small.class_counts()) == 100


@needs_mnist
@pytest.mark.parametrize("bad", [0, 60001, 1.5, True, "10"])
def test_mnist_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="n_train"):
        data.load_mnist(MNIST_DIR, n_train=bad, download=False)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# CIFAR-10, real files
# ----------------------------------------------------------------------------------------------------


def _pickle_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


@needs_cifar
def test_cifar_first_1000(cifar: data.ImageData) -> None:
    assert cifar.name == "cifar10"
    assert cifar.x_train.shape == (1000, 3, 32, 32) and cifar.x_train.dtype == torch.float32
    # The original test_batch holds 10,000 images; a rebuilt copy (accepted by its own digest) the first
    # 1,000, and its batch_label says so.
    n_test = cifar.info["test_batch_size"]
    assert cifar.x_test.shape == (n_test, 3, 32, 32) and n_test in (1000, 10000)
    assert n_test == 10000 or "SUBSET" in cifar.info["test_batch_label"]
    assert cifar.y_train[:10].tolist() == CIFAR_FIRST_TRAIN_LABELS
    assert cifar.y_test[:10].tolist() == CIFAR_FIRST_TEST_LABELS
    assert cifar.info["label_names"][:2] == ["airplane", "automobile"]
    # Class counts of the first 1000, computed here from the pickle with the standard library.
    batch = _pickle_batch(CIFAR_DIR / "cifar-10-batches-py/data_batch_1")
    expected = np.bincount(np.asarray(batch["labels"][:1000]), minlength=10).tolist()
    assert cifar.class_counts() == expected == cifar.info["train_class_counts"]
    assert sum(expected) == 1000 and cifar.info["n_train"] == 1000
    # NCHW: channel 0 row 0 of image 0 are its first red values; all channels match the pickle's planes.
    pixels = _undo(cifar.x_train, cifar.train_mean)
    np.testing.assert_allclose(pixels[0, 0, 0, :10].numpy(), CIFAR_IMAGE0_RED, atol=1e-3)
    np.testing.assert_allclose(pixels[:5].reshape(5, 3072).numpy(), batch["data"][:5], atol=1e-3)
    # Centred over the 1000 training images; the test images carry the same mean.
    assert cifar.train_mean.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(cifar.train_mean.numpy().reshape(3072), batch["data"][:1000].mean(0) / 256.0, atol=1e-7)
    assert cifar.x_train.double().mean(0).abs().max().item() < 1e-6
    assert _off_grid(cifar.x_test, cifar.train_mean) < 1e-3
    assert torch.equal(cifar.t_train.argmax(1), cifar.y_train)


@needs_cifar
def test_cifar_whole_first_batch_counts() -> None:
    full = data.load_cifar10(CIFAR_DIR, n_train=10000, n_test=10, download=False)
    assert full.class_counts() == CIFAR_BATCH1_COUNTS and full.n_test == 10


@needs_cifar
def test_cifar_missing_batch_error_names_places_and_hash(tmp_path: Path) -> None:
    only_first = tmp_path / "only-first"  # a data folder with data_batch_1 alone (a link to the real one)
    (only_first / "cifar-10-batches-py").mkdir(parents=True)
    (only_first / "cifar-10-batches-py" / "data_batch_1").symlink_to(CIFAR_DIR / "cifar-10-batches-py/data_batch_1")
    with pytest.raises(data.DataError) as err:
        data.load_cifar10(only_first, n_train=10001, download=False)
    msg = str(err.value)
    assert "cifar-10-batches-py/data_batch_2" in msg
    assert str(only_first / "cifar-10-batches-py" / "data_batch_2") in msg
    assert str(data.default_cache_dir() / "cifar-10-batches-py" / "data_batch_2") in msg
    assert "cifar-10-python.tar.gz" in msg and "md5:d4bba439e000b95fd0a9bffe97cbabec" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg and "SAMEDGE_DATA" in msg
    assert "download=False" in msg


@needs_cifar
def test_cifar_rejects_too_many_test_images(cifar: data.ImageData) -> None:
    n = cifar.info["test_batch_size"]
    with pytest.raises(ValueError, match=rf"n_test={n + 1} must lie in \[1, {n}\]"):
        data.load_cifar10(CIFAR_DIR, n_test=n + 1, download=False)


# ----------------------------------------------------------------------------------------------------
# tiny_shakespeare and batching
# ----------------------------------------------------------------------------------------------------


@needs_shakespeare
def test_shakespeare_split_is_the_last_10000_lines(shakespeare: data.TextData) -> None:
    text = (SHAKESPEARE_DIR / "tinyshakespeare/input.txt").read_text(encoding="ascii")
    lines = text.splitlines(keepends=True)
    assert len(lines) == 40000 and len(text) == 1115394
    assert data.decode(shakespeare.test_tokens) == "".join(lines[-10000:])
    assert data.decode(shakespeare.train_tokens) == "".join(lines[:30000])
    assert data.decode(shakespeare.train_tokens).startswith("First Citizen:")
    assert shakespeare.info["n_lines"] == 40000 and shakespeare.info["test_lines"] == 10000
    for tokens in (shakespeare.train_tokens, shakespeare.test_tokens):
        assert tokens.dtype == torch.int64 and tokens.ndim == 1
        assert 1 <= tokens.min().item() and tokens.max().item() < shakespeare.vocab_size == 128
    assert shakespeare.pad == 0
    assert torch.cat([shakespeare.train_tokens, shakespeare.test_tokens]).unique().numel() == 65


@needs_shakespeare
def test_chunk_rows_on_the_test_split(shakespeare: data.TextData) -> None:
    tokens = shakespeare.test_tokens
    rows = data.chunk_rows(tokens, batch_size=128, seq_len=64)
    n_rows = tokens.numel() // (128 * 65) * 128
    assert rows.shape == (n_rows, 65) and n_rows % 128 == 0 and n_rows >= 10 * 128
    assert torch.equal(rows.reshape(-1), tokens[: n_rows * 65])


def test_chunk_rows_truncates_to_whole_batches() -> None:
    tokens = torch.arange(1, 1040)  # 1039 tokens; a batch is 4 rows of 10
    rows = data.chunk_rows(tokens, batch_size=4, seq_len=9)
    assert rows.shape == (100, 10)
    assert torch.equal(rows[7], torch.arange(71, 81))
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.chunk_rows(torch.arange(1, 40), batch_size=4, seq_len=9)
    with pytest.raises(ValueError, match="seq_len"):
        data.chunk_rows(tokens, batch_size=4, seq_len=0)


def _batcher(seed: int = 0) -> data.ChunkBatcher:
    rows = data.chunk_rows(torch.arange(1, 40 * 7 + 1), batch_size=8, seq_len=6)  # 40 rows of 7
    return data.ChunkBatcher(rows, batch_size=8, seed=seed)


def test_chunk_batcher_covers_each_row_once_per_epoch() -> None:
    b = _batcher()
    assert b.num_rows == 40 and b.steps_per_epoch == 5
    orders = []
    for epoch in range(3):
        idx = torch.cat([b.indices(epoch * 5 + t) for t in range(5)])
        assert torch.equal(idx.sort().values, torch.arange(40))
        orders.append(idx)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    inputs, targets = b.batch(3)
    assert inputs.shape == targets.shape == (8, 6) and inputs.dtype == torch.int64
    assert torch.equal(targets, inputs + 1)  # rows of consecutive integers: targets are inputs shifted
    assert torch.equal(inputs[:, 0], b.rows[b.indices(3), 0])


def test_chunk_batcher_is_a_pure_function_of_seed_and_step() -> None:
    first = _batcher(seed=3)
    forward = [first.batch(t) for t in range(12)]
    torch.manual_seed(123)  # the global RNG must not matter
    resumed = _batcher(seed=3)
    for t in reversed(range(12)):  # any call order, e.g. a run resumed at step t
        assert torch.equal(resumed.batch(t)[0], forward[t][0]) and torch.equal(resumed.batch(t)[1], forward[t][1])
    other = _batcher(seed=4)
    assert not all(torch.equal(other.indices(t), first.indices(t)) for t in range(5))


def test_chunk_batcher_fixed_batch() -> None:
    a, b = _batcher(seed=1), _batcher(seed=1)
    x0, y0 = a.fixed_batch(0)
    assert torch.equal(x0, b.fixed_batch(0)[0]) and torch.equal(y0, b.fixed_batch(0)[1])
    assert x0.shape == (8, 6) and torch.equal(y0, x0 + 1)
    assert x0[:, 0].unique().numel() == 8  # distinct rows
    assert not torch.equal(x0, a.fixed_batch(1)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 41}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 8, "seed": -1}, "seed"),
    ],
)
def test_chunk_batcher_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    rows = torch.zeros(40, 7, dtype=torch.int64)
    with pytest.raises(ValueError, match=match):
        data.ChunkBatcher(rows, **kwargs)


def test_chunk_batcher_rejects_bad_steps() -> None:
    b = _batcher()
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="step"):
            b.batch(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        b.fixed_batch(-2)
    with pytest.raises(ValueError, match="rows must be"):
        data.ChunkBatcher(torch.zeros(40, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------------
# Checksums of local files
# ----------------------------------------------------------------------------------------------------


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def test_verify_file_accepts_any_listed_digest(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello world")
    sha = f"sha256:{_sha256(b'hello world')}"
    md5 = f"md5:{hashlib.md5(b'hello world').hexdigest()}"
    assert data.verify_file(path, [sha]) == sha
    assert data.verify_file(path, ["md5:" + "0" * 32, sha]) == sha  # several accepted digests: any one
    assert data.verify_file(path, [md5, sha]) == md5
    path.write_bytes(b"hello_world")  # same size, new content
    with pytest.raises(data.DataError) as err:
        data.verify_file(path, [md5, sha], "test set")
    msg = str(err.value)
    assert str(path) in msg and sha in msg and md5 in msg and "corrupt" in msg
    assert _sha256(b"hello_world") in msg and hashlib.md5(b"hello_world").hexdigest() in msg


def test_text_with_nul_or_non_ascii_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "d" / data.SHAKESPEARE_FILE.relpath
    target.parent.mkdir(parents=True)
    for payload, what in ((b"ab\ncd\x00e\nf\n", "NUL"), ("ab\ncé\nf\n".encode(), "not ASCII")):
        target.write_bytes(payload)
        remote = dataclasses.replace(data.SHAKESPEARE_FILE, digests=(f"sha256:{_sha256(payload)}",))
        monkeypatch.setattr(data, "SHAKESPEARE_FILE", remote)
        with pytest.raises(data.DataError, match=what):
            data.load_tiny_shakespeare(tmp_path / "d", download=False)


# ----------------------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# ----------------------------------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``/truncated/<path>`` announces more bytes than it sends, then hangs up;
    ``/slow/<path>`` sends half and then stalls."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        if self.path.startswith("/slow/"):  # half the file, then nothing for 30 s (a download to kill)
            body = Path(self.translate_path(self.path.removeprefix("/slow"))).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(30)
            self.close_connection = True
            return
        if self.path.startswith("/truncated/"):
            body = Path(self.translate_path(self.path.removeprefix("/truncated"))).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder served, base URL) of a real HTTP server on an ephemeral port of 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _idx_gz(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format) of uint8 data, gzip-compressed."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _fake_mnist(served: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """Write a tiny MNIST (12 train, 5 test) under ``served`` and make the loader expect its sha256."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 12).astype(np.uint8),
        "test_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 5).astype(np.uint8),
    }
    table = {}
    for role, remote in data.MNIST_FILES.items():
        payload = _idx_gz(arrays[role])
        (served / remote.relpath).parent.mkdir(parents=True, exist_ok=True)
        (served / remote.relpath).write_bytes(payload)
        table[role] = dataclasses.replace(remote, digests=(f"sha256:{_sha256(payload)}",))
    monkeypatch.setattr(data, "MNIST_FILES", table)
    return arrays


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_mnist_from_mirror(server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, url = server
    arrays = _fake_mnist(served, monkeypatch)
    monkeypatch.setenv(data.ENV_MIRROR, url)
    target = tmp_path / "data"
    got = data.load_mnist(target)
    mean = arrays["train_images"].astype(np.float64).mean(0) / 256.0
    np.testing.assert_allclose(got.x_train[:, 0].numpy(), arrays["train_images"] / 256.0 - mean, atol=1e-6)
    np.testing.assert_allclose(got.x_test[:, 0].numpy(), arrays["test_images"] / 256.0 - mean, atol=1e-6)
    assert got.y_train.tolist() == arrays["train_labels"].tolist()
    # Every file arrived complete, nothing else (no temporary files) is left.
    expected = sorted(target / r.relpath for r in data.MNIST_FILES.values())
    assert _all_files(target) == expected
    for remote in data.MNIST_FILES.values():
        assert (target / remote.relpath).read_bytes() == (served / remote.relpath).read_bytes()
    # A second load needs no server: the verified files are found.
    monkeypatch.setenv(data.ENV_MIRROR, "http://127.0.0.1:9/")
    assert torch.equal(data.load_mnist(target, download=False).x_train, got.x_train)


def test_read_only_data_folder_downloads_into_the_cache(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = server
    _fake_mnist(served, monkeypatch)
    monkeypatch.setenv(data.ENV_MIRROR, url)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)  # even root must not write here
    monkeypatch.setenv(data.ENV_DATA, str(read_only))
    got = data.load_mnist()
    assert got.n_train == 12 and _all_files(read_only) == []
    cache = data.default_cache_dir()
    assert all((cache / r.relpath).is_file() for r in data.MNIST_FILES.values())
    # And with the cache read-only too, the error says so.
    remote = dataclasses.replace(data.SHAKESPEARE_FILE, digests=("sha256:" + "0" * 64,))
    cache.chmod(0o555)
    with pytest.raises(data.DataError, match="read-only"):
        data.fetch(remote)
    cache.chmod(0o755)


def test_corrupt_download_is_discarded(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = server
    payload = b"First line\nSecond line\n"
    (served / "tinyshakespeare").mkdir()
    (served / "tinyshakespeare/input.txt").write_bytes(payload)
    expected = "sha256:" + _sha256(b"what the table expects")
    monkeypatch.setattr(data, "SHAKESPEARE_FILE", dataclasses.replace(data.SHAKESPEARE_FILE, digests=(expected,)))
    monkeypatch.setenv(data.ENV_MIRROR, url)
    with pytest.raises(data.DataError) as err:
        data.load_tiny_shakespeare(tmp_path / "data")
    msg = str(err.value)
    assert "tinyshakespeare/input.txt" in msg and expected in msg and _sha256(payload) in msg
    assert f"{url}tinyshakespeare/input.txt" in msg and "discarded" in msg
    assert _all_files(tmp_path / "data") == []


def test_truncated_download_is_discarded(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = server
    payload = b"0123456789" * 50
    (served / "tinyshakespeare").mkdir()
    (served / "tinyshakespeare/input.txt").write_bytes(payload)
    remote = dataclasses.replace(data.SHAKESPEARE_FILE, digests=(f"sha256:{_sha256(payload)}",))
    monkeypatch.setenv(data.ENV_MIRROR, url + "truncated/")
    with pytest.raises(data.DataError, match="broke off after 250 of 500 bytes"):
        data.fetch(remote, tmp_path / "data")
    assert _all_files(tmp_path / "data") == []


def test_killed_download_leaves_nothing_that_breaks_the_next_call(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = server
    payload = bytes(range(256)) * 800  # 200 KiB: the first half arrives in many chunks
    (served / "tinyshakespeare").mkdir()
    (served / "tinyshakespeare/input.txt").write_bytes(payload)
    digest = f"sha256:{_sha256(payload)}"
    target = tmp_path / "data"
    code = (
        "from samedge_lib.engine import data\n"
        f"data.fetch(data.RemoteFile('tinyshakespeare/input.txt', (), ({digest!r},), 'test'), {str(target)!r})\n"
    )
    env = os.environ | {data.ENV_MIRROR: url + "slow/", "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    folder = target / "tinyshakespeare"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.stat().st_size > 0 for p in _all_files(folder)):
        assert proc.poll() is None, "the download ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-transfer: no cleanup code runs
    proc.wait(timeout=30)
    partial = _all_files(folder)
    assert partial and all(p.name != "input.txt" for p in partial)  # only a temporary file, never the data name
    remote = data.RemoteFile("tinyshakespeare/input.txt", (), (digest,), "test")
    monkeypatch.setenv(data.ENV_MIRROR, url)
    got = data.fetch(remote, target)  # the next call downloads and verifies afresh
    assert got == target / "tinyshakespeare/input.txt" and got.read_bytes() == payload


def test_missing_file_on_server(server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = server
    monkeypatch.setenv(data.ENV_MIRROR, url)
    with pytest.raises(data.DataError) as err:
        data.load_tiny_shakespeare(tmp_path / "data")
    msg = str(err.value)
    assert "HTTP 404" in msg and f"{url}tinyshakespeare/input.txt" in msg
    assert str(tmp_path / "data" / "tinyshakespeare" / "input.txt") in msg
    assert str(data.default_cache_dir() / "tinyshakespeare" / "input.txt") in msg
    assert data.SHAKESPEARE_FILE.digests[0] in msg and data.SHAKESPEARE_FILE.urls[0] in msg
    assert "SAMEDGE_DATA" in msg and "data_dir" in msg
    assert _all_files(tmp_path / "data") == []


def test_unreachable_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(data.ENV_MIRROR, f"http://127.0.0.1:{port}")
    with pytest.raises(data.DataError) as err:
        data.load_mnist(tmp_path / "data")
    msg = str(err.value)
    assert f"http://127.0.0.1:{port}/MNIST/raw/train-images-idx3-ubyte.gz: cannot connect" in msg
    assert "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in msg
    assert _all_files(tmp_path / "data") == []


def test_download_disabled(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="download=False") as err:
        data.load_tiny_shakespeare(tmp_path / "nothing", download=False)
    assert str(tmp_path / "nothing" / "tinyshakespeare" / "input.txt") in str(err.value)
    assert not (tmp_path / "nothing").exists()


def test_corrupt_local_file_is_detected_not_replaced(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = server
    _fake_mnist(served, monkeypatch)
    monkeypatch.setenv(data.ENV_MIRROR, url)
    target = tmp_path / "data"
    data.load_mnist(target)
    broken = target / data.MNIST_FILES["test_images"].relpath
    payload = bytearray(broken.read_bytes())
    payload[100] ^= 0xFF
    broken.write_bytes(bytes(payload))
    with pytest.raises(data.DataError) as err:
        data.load_mnist(target)  # download=True: still refuses to overwrite a corrupt file silently
    msg = str(err.value)
    assert str(broken) in msg and "corrupt" in msg
    assert data.MNIST_FILES["test_images"].digests[0] in msg and _sha256(bytes(payload)) in msg
    assert broken.read_bytes() == bytes(payload)


# ----------------------------------------------------------------------------------------------------
# CIFAR-10 from a (generated) tarball
# ----------------------------------------------------------------------------------------------------


def _fake_cifar(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, dict[str, dict]]:
    """A tarball with 5 training batches of 4 images, a test batch of 3 and the meta file."""
    rng = np.random.default_rng(1)
    batches: dict[str, dict] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = 3 if name == "test_batch" else 4
        batches[name] = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
    batches["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 4}
    buffer = io.BytesIO()
    table = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in batches.items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            table[name] = dataclasses.replace(
                data.CIFAR10_FILES[name], digests=(f"md5:{hashlib.md5(payload).hexdigest()}",)
            )
    archive = buffer.getvalue()
    monkeypatch.setattr(data, "CIFAR10_FILES", table)
    monkeypatch.setattr(
        data,
        "CIFAR10_ARCHIVE",
        dataclasses.replace(data.CIFAR10_ARCHIVE, digests=(f"md5:{hashlib.md5(archive).hexdigest()}",)),
    )
    return archive, batches


def test_cifar_download_and_extract(server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, url = server
    archive, batches = _fake_cifar(monkeypatch)
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    monkeypatch.setenv(data.ENV_MIRROR, url)
    target = tmp_path / "data"
    got = data.load_cifar10(target, n_train=6)  # crosses from data_batch_1 into data_batch_2
    labels = batches["data_batch_1"]["labels"] + batches["data_batch_2"]["labels"][:2]
    assert got.y_train.tolist() == labels and got.n_test == 3 and got.info["label_names"][3] == "class3"
    pixels = np.concatenate([batches["data_batch_1"]["data"], batches["data_batch_2"]["data"][:2]])
    np.testing.assert_allclose(_undo(got.x_train, got.train_mean).reshape(6, 3072).numpy(), pixels, atol=1e-3)
    # All batches extracted and verified; the archive it downloaded itself is gone; no temporaries.
    expected = sorted(target / r.relpath for r in data.CIFAR10_FILES.values())
    assert _all_files(target) == expected
    everything = data.load_cifar10(target, n_train=None, download=False)
    assert (
        everything.n_train == 20
        and everything.class_counts()
        == np.bincount(sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), []), minlength=10).tolist()
    )


def test_cifar_existing_archive_is_used_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, batches = _fake_cifar(monkeypatch)
    target = tmp_path / "data"
    target.mkdir()
    (target / "cifar-10-python.tar.gz").write_bytes(archive)  # e.g. left by torchvision
    got = data.load_cifar10(target, n_train=4, download=False)
    assert got.y_train.tolist() == batches["data_batch_1"]["labels"]
    assert (target / "cifar-10-python.tar.gz").read_bytes() == archive  # the user's archive is kept


def test_cifar_batch_with_foreign_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = pickle.dumps({"data": print, "labels": []}, protocol=2)  # refers to builtins.print
    path = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    remote = dataclasses.replace(data.CIFAR10_FILES["data_batch_1"], digests=(f"sha256:{_sha256(payload)}",))
    monkeypatch.setitem(data.CIFAR10_FILES, "data_batch_1", remote)
    with pytest.raises(data.DataError, match=r"builtin\w*\.print, which a batch never needs"):
        data.load_cifar10(tmp_path / "data", download=False)
