"""Sphinx extension: the Binder and Colab buttons of every chapter open the *committed* notebook.

The book renders executed copies of ``notebooks/NN_name.ipynb`` that ``tools/execute_notebooks.py``
writes to ``book/chapters/`` (git-ignored build output). sphinx-book-theme builds each launch URL from
the page's docname (``header_buttons/launch.py``: ``{path_to_docs}{pagename}{extension}``), so unmodified
it would send readers to ``book/chapters/NN_name.ipynb``, which is not in the repository (a 404 on Colab,
a missing file on Binder). This extension runs after the theme's ``html-page-context`` handler and
replaces that path by the source notebook's path in every launch URL of the page.

Anything unexpected is a Sphinx warning, which fails the book build (``-W``): a chapter whose source
notebook does not exist, or a launch URL that does not contain the path the theme is known to put there
(a changed theme). Loaded by ``_config.yml`` (``sphinx: local_extensions: launch_links: tools/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

#: Docname prefix of the executed chapters, and the folder of their committed sources.
CHAPTERS = "book/chapters/"
SOURCES = "notebooks"


def source_notebook(docname: str) -> str | None:
    """Repository path of the committed notebook behind a chapter page, or ``None`` for other pages."""
    if not docname.startswith(CHAPTERS) or "/" in docname[len(CHAPTERS) :]:
        return None
    return f"{SOURCES}/{docname[len(CHAPTERS) :]}.ipynb"


def theme_notebook_path(docname: str, path_to_docs: str) -> str:
    """The repository path that sphinx-book-theme puts into a notebook page's launch URLs."""
    prefix = path_to_docs.strip("/")
    return f"{prefix}/{docname}.ipynb" if prefix else f"{docname}.ipynb"


def rewrite_launch_buttons(buttons: list[dict[str, Any]], old: str, new: str) -> list[str]:
    """Replace ``old`` by ``new`` in the URL of every launch button; return the URLs that lacked ``old``."""
    missing = []
    for button in buttons:
        url = button.get("url")
        if url is None:
            continue  # Thebe and other javascript buttons carry no URL
        if old not in url:
            missing.append(url)
            continue
        button["url"] = url.replace(old, new)
    return missing


def _launch_group(context: dict[str, Any]) -> dict[str, Any] | None:
    for group in context.get("header_buttons", []):
        if group.get("label") == "launch-buttons":
            return group
    return None


def _on_page_context(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: object) -> None:
    source = source_notebook(pagename)
    if source is None:
        return
    if not (Path(app.srcdir) / source).is_file():
        LOGGER.warning(f"launch_links: chapter {pagename} has no committed source notebook {source}")
        return
    group = _launch_group(context)
    if group is None:
        LOGGER.warning(f"launch_links: chapter {pagename} has no launch buttons (is launch_buttons configured?)")
        return
    old = theme_notebook_path(pagename, app.config.html_theme_options.get("path_to_docs", ""))
    for url in rewrite_launch_buttons(group["buttons"], old, source):
        LOGGER.warning(f"launch_links: launch URL {url} of {pagename} does not contain {old}; theme changed?")


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the handler after sphinx-book-theme's own launch-button handler (priority 501)."""
    app.connect("html-page-context", _on_page_context, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
