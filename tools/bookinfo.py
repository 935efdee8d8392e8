"""The repository's public addresses, all derived from ``_config.yml`` (``repository.url``, ``.branch``).

One place names the GitHub repository; the Colab set-up cell, the browser check of the built book, the
publishing workflow and the tests that keep the README and ``CITATION.cff`` in agreement all read it here.

Usage: python tools/bookinfo.py [--expect https://github.com/OWNER/NAME]   (prints the addresses; with
``--expect``, as in the publishing workflow, warns when the book's links name a different repository)
The launch URLs follow sphinx-book-theme's formats (``header_buttons/launch.py``) with
``notebook_interface: jupyterlab``, so a test can compare them with the hrefs in the built HTML.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "_config.yml"


@dataclass(frozen=True)
class Repository:
    """A GitHub repository and the branch the book is published from."""

    owner: str
    name: str
    branch: str

    @property
    def url(self) -> str:
        """``https://github.com/OWNER/NAME``."""
        return f"https://github.com/{self.owner}/{self.name}"

    @property
    def pages_url(self) -> str:
        """Where GitHub Pages serves the book (a project site)."""
        return f"https://{self.owner.lower()}.github.io/{self.name}/"

    def colab_url(self, path: str) -> str:
        """Colab's URL for a notebook of the repository (``path`` relative to its root)."""
        return f"https://colab.research.google.com/github/{self.owner}/{self.name}/blob/{self.branch}/{path}"

    def binder_url(self, path: str | None = None) -> str:
        """mybinder.org's URL for the repository, opening ``path`` in JupyterLab when given."""
        base = f"https://mybinder.org/v2/gh/{self.owner}/{self.name}/{self.branch}"
        return f"{base}?urlpath=lab/tree/{path}" if path else base


def repository(config: Path = CONFIG) -> Repository:
    """Read ``repository.url`` and ``repository.branch`` from the book's configuration."""
    data = yaml.safe_load(config.read_text())
    repo = data.get("repository") or {}
    url = str(repo.get("url", ""))
    match = re.fullmatch(r"https://github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9._-]+?)/?", url)
    if match is None:
        raise ValueError(f"{config}: repository.url must be https://github.com/OWNER/NAME, got {url!r}")
    return Repository(match.group(1), match.group(2), str(repo.get("branch") or "main"))


def parse_launch_url(url: str) -> tuple[str, str, str, str] | None:
    """``(service, owner/name, branch, path)`` of a Colab or Binder notebook URL, else ``None``."""
    m = re.fullmatch(r"https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/(.+)", url)
    if m:
        return "colab", m.group(1), m.group(2), m.group(3)
    m = re.fullmatch(r"https://mybinder\.org/v2/gh/([^/]+/[^/]+)/([^?]+)\?urlpath=(?:lab/tree|tree)/(.+)", url)
    if m:
        return "binder", m.group(1), m.group(2), m.group(3)
    return None


def main(argv: list[str] | None = None) -> int:
    """Print the book's addresses; warn (GitHub Actions annotation) if ``--expect`` names another repository."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expect", help="URL of the repository being built, e.g. $GITHUB_SERVER_URL/$GITHUB_REPOSITORY")
    args = ap.parse_args(argv)
    try:
        repo = repository()
    except ValueError as err:
        print(f"bookinfo: {err}", file=sys.stderr)
        return 1
    print(f"repository: {repo.url} (branch {repo.branch})")
    print(f"book: {repo.pages_url}")
    print(f"binder: {repo.binder_url()}")
    if args.expect and args.expect.rstrip("/").lower() != repo.url.lower():
        print(
            f"::warning file=_config.yml::repository.url is {repo.url} but this build is of {args.expect}; "
            f"the book's launch buttons and Colab set-up cell will point at {repo.url}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
