"""Fetch and verify the three datasets the book trains on, so later notebook runs need no network.

Used at image build time by ``binder/postBuild`` and by the Colab set-up cell of every notebook. It only
calls the public loaders of :mod:`samedge_lib.engine.data`, which look in ``$SAMEDGE_DATA`` then the per-user
cache (``~/.cache/samedge/data``), download what is missing from the canonical sources and verify every
file's checksum; loading once is exactly what a notebook will do later, so a dataset that loads here will
load there.

Usage: python tools/fetch_data.py [--data-dir DIR] [--no-download] [mnist] [cifar10] [shakespeare]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # runnable from a plain checkout, without installing the package
    sys.path.insert(0, str(REPO))

from samedge_lib.engine import data  # noqa: E402

#: dataset name -> loader call (CIFAR-10: the paper's 1000-image subset; the archive brings every batch).
LOADERS: dict[str, Callable[[str | None, bool], object]] = {
    "mnist": lambda d, dl: data.load_mnist(d, download=dl),
    "cifar10": lambda d, dl: data.load_cifar10(d, n_train=1000, download=dl),
    "shakespeare": lambda d, dl: data.load_tiny_shakespeare(d, download=dl),
}


def main(argv: list[str] | None = None) -> int:
    """Load each requested dataset once; print where its verified files are; exit 1 on any failure."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", metavar="DATASET", help=f"any of {', '.join(LOADERS)} (default: all)")
    ap.add_argument("--data-dir", help="data folder (default: $SAMEDGE_DATA, else ~/.cache/samedge/data)")
    ap.add_argument("--no-download", action="store_true", help="only verify what is already there")
    args = ap.parse_args(argv)
    unknown = [d for d in args.datasets if d not in LOADERS]
    if unknown:
        ap.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(LOADERS)}")
    failed = []
    for name in args.datasets or list(LOADERS):
        t0 = time.perf_counter()
        try:
            LOADERS[name](args.data_dir, not args.no_download)
        except data.DataError as err:
            print(f"fetch_data: {name}: {err}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"fetch_data: {name}: verified ({time.perf_counter() - t0:.1f} s)")
    print("fetch_data: data folders searched: " + ", ".join(map(str, data.search_dirs(args.data_dir))))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
