"""Sphinx extension: two fixes to every HTML page of the book, found by the browser check.

* **Duplicate inline scripts.** Under Sphinx 7, sphinx-thebe and sphinx-togglebutton register their inline
  configuration scripts (``const THEBE_JS_URL = ...``, ``var togglebuttonSelector = ...``) so that each
  appears twice in every page; the second ``const`` declaration throws ``SyntaxError: Identifier
  'THEBE_JS_URL' has already been declared`` in the reader's console. A plain Jupyter Book 1 build of a
  one-page book shows the same. Identical script entries are dropped here, keeping the first.
* **Theme mode.** pydata-sphinx-theme starts from ``localStorage`` or the ``default_mode`` template value;
  on a first visit both are empty and the page logs ``Got invalid theme mode: .`` as a console error. The
  book's figures are drawn on white, so the default is ``light`` (readers can still switch).

Loaded by ``_config.yml`` (``sphinx: local_extensions: page_fixes: tools/``).
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx

DEFAULT_MODE = "light"


def script_key(script: Any) -> tuple:
    """What makes two script entries the same tag: file, priority and attributes (inline body included).

    An inline script is registered once with ``filename=None`` and once with ``filename=""``; both render
    as the same ``<script>`` tag, so both count as "no file".
    """
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", script) or "", getattr(script, "priority", 500), sorted(attributes.items()))


def unique_scripts(scripts: list[Any]) -> list[Any]:
    """``scripts`` without repeated tags, in their order, keeping the first of each."""
    seen: list[tuple] = []
    out: list[Any] = []
    for script in scripts:
        key = script_key(script)
        if key not in seen:
            seen.append(key)
            out.append(script)
    return out


def _on_page_context(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: object) -> None:
    if "script_files" in context:
        context["script_files"] = unique_scripts(context["script_files"])
    if not context.get("default_mode"):
        context["default_mode"] = DEFAULT_MODE


def setup(app: Sphinx) -> dict[str, Any]:
    """Run after the themes have filled the page context (600: before any handler that returns a template)."""
    app.connect("html-page-context", _on_page_context, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
