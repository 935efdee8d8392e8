"""Every address of this repository printed in the docs is the one derived from _config.yml."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from scripts import load_script

REPO = Path(__file__).resolve().parent.parent
bookinfo = load_script("tools/bookinfo.py")
DOCS = [REPO / "README.md", REPO / "CITATION.cff", REPO / "CONTRIBUTING.md", *sorted((REPO / "book").glob("*.md"))]
URL = re.compile(r"https://[^\s)\]>\"'`]+")
TRACKED = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.splitlines())


def own_urls() -> list[tuple[str, str]]:
    """(document, URL) for every URL that points at this project (GitHub, Pages, Binder, Colab)."""
    repo = bookinfo.repository()
    out = []
    for doc in DOCS:
        for url in URL.findall(doc.read_text()):
            if repo.name.lower() in url.lower() and "google-deepmind" not in url:
                out.append((doc.name, url.rstrip(".,;")))
    return out


def test_docs_link_the_project():
    urls = [u for _, u in own_urls()]
    repo = bookinfo.repository()
    assert repo.url in urls and repo.pages_url in urls
    assert any(bookinfo.parse_launch_url(u) and "colab" in u for u in urls)
    assert any(bookinfo.parse_launch_url(u) and "mybinder" in u for u in urls)


@pytest.mark.parametrize(("doc", "url"), own_urls())
def test_each_project_url_is_derived_from_the_config(doc, url):
    repo = bookinfo.repository()
    launch = bookinfo.parse_launch_url(url)
    if launch is not None:
        service, slug, branch, path = launch
        assert (slug, branch) == (f"{repo.owner}/{repo.name}", repo.branch), f"{doc}: {url}"
        assert path in TRACKED, f"{doc}: {url} opens {path}, which is not in the repository"
        expected = repo.colab_url(path) if service == "colab" else repo.binder_url(path)
        assert url == expected
    elif url.startswith("https://github.com/"):
        assert url == repo.url or url.startswith(repo.url + "/"), f"{doc}: {url}"
    elif ".github.io" in url:
        assert url.startswith(repo.pages_url.rstrip("/")), f"{doc}: {url}"
    elif url.startswith("https://mybinder.org/"):
        assert url.startswith(repo.binder_url()), f"{doc}: {url}"
    else:
        pytest.fail(f"{doc}: {url} names the project but is not a GitHub, Pages, Binder or Colab address")
