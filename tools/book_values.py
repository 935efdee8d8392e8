"""Sphinx extension: the library's constants as MyST substitutions, so the Markdown pages state them untyped.

The executed chapters glue their numbers; the Markdown pages (``book/intro.md``) are not executed, so a value
they state -- the on-edge band every chapter uses -- is read here from the library when the book is built and
offered as ``{{ edge_band }}`` and friends (MyST's ``substitution`` extension, enabled in ``_config.yml``).
A typed copy could drift from the code; this cannot.

Loaded by ``_config.yml`` (``sphinx: local_extensions: book_values: tools/``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samedge_lib.reading.claims import EDGE_BAND, band_words  # noqa: E402  (torch-free)
from samedge_lib.record.results import REACH  # noqa: E402


def substitutions() -> dict[str, str]:
    """The values the Markdown pages may cite, by name."""
    lo, hi = EDGE_BAND
    return {
        "edge_band": band_words(),
        "edge_band_lo": f"{lo:g}",
        "edge_band_hi": f"{hi:g}",
        "edge_band_pct": f"{100 * (hi - 1):.0f} %",
        "reach_pct": f"{100 * REACH:g} %",
    }


def _add(app: Sphinx, config: Config) -> None:
    config.myst_substitutions = {**(config.myst_substitutions or {}), **substitutions()}


def setup(app: Sphinx) -> dict[str, Any]:
    """Add the substitutions once the configuration is read (before myst-parser builds its own from it)."""
    app.connect("config-inited", _add)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
