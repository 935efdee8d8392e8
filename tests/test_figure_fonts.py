"""Figures are legible at the book's width: no text smaller than 70 % of the body text as the page shows it.

Each plotting function of :mod:`samedge_lib.reading.plots` is drawn as a chapter draws it and saved with
:func:`samedge_lib.reading.style.book_png`; the size its smallest text is shown at is then computed as the browser
check computes it on a built page (``tools/check_book.py``: font size and dpi from the PNG's text chunks, shown width
over natural width), with the shown width the book's column (or the natural width, if smaller).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scripts import load_script  # noqa: E402

from samedge_lib.reading import plots, style  # noqa: E402

check = load_script("tools/check_book.py")


def run_table(n: int = 30) -> pd.DataFrame:
    step = np.arange(n) * 20
    edge = 8.0 + 4.0 * np.exp(-step / 200.0)
    return pd.DataFrame(
        {
            "step": step,
            "lambda_1": edge * (1 - 0.5 * np.exp(-step / 50.0)),
            "lambda_2": 0.8 * edge,
            "edge": edge,
            "gd_edge": np.full(n, 20.0),
            "align_g": np.linspace(0.1, 0.6, n),
            "align_sam_g": np.linspace(0.2, 0.9, n),
            "official_lambda": np.where(np.arange(n) % 5 == 0, edge * 0.95, np.nan),
            "alpha": np.logspace(-1, 0.5, n),
            "loss": np.exp(-step / 300.0),
        }
    )


def one(draw):
    def make():
        fig, ax = plt.subplots()
        draw(ax)
        return fig

    return make


DF = run_table()
FIGURES = {
    "plot_eigenvalues": one(lambda ax: plots.plot_eigenvalues(ax, DF, title="MNIST cpu: SAM rho=0.1")),
    "plot_edge_zoom": one(lambda ax: plots.plot_edge_zoom(ax, DF, title="zoom")),
    "plot_alignment": one(lambda ax: plots.plot_alignment(ax, DF, title="alignments")),
    "plot_losses": one(lambda ax: plots.plot_losses(ax, {"GD": DF, "SAM rho=0.1": DF}, title="training loss")),
    "plot_tracking_ratio": one(lambda ax: plots.plot_tracking_ratio(ax, {"SAM rho=0.1": DF}, title="ratio")),
    "plot_estimators": one(lambda ax: plots.plot_estimators(ax, DF, title="estimators")),
    "plot_alpha_collapse": one(lambda ax: plots.plot_alpha_collapse(ax, {"SAM rho=0.1": DF}, title="collapse")),
    "plot_topk_over_edge": one(lambda ax: plots.plot_topk_over_edge(ax, DF, title="top-k")),
    "run_panel": lambda: plots.run_panel(DF, title="MNIST cpu: SAM rho=0.1"),
}


def wide_three_panels():
    """A chapter's 17 x 4 inch row of three panels (chapter 3's 'every radius' figure before issue 22)."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 4))
    plots.plot_tracking_ratio(axes[0], {"SAM rho=0.1": DF}, title="lambda_1 / SAM-edge")
    plots.plot_alpha_collapse(axes[1], {"SAM rho=0.1": DF}, title="all radii against R(alpha)")
    plots.plot_losses(axes[2], {"GD": DF, "SAM rho=0.1": DF}, title="training loss")
    return fig


def shown_text_px(png: bytes) -> float:
    """The smallest text of the figure in CSS pixels when the book's column shows it (as check_book measures)."""
    import struct

    path_meta = png_meta(png)
    natural = struct.unpack(">I", png[16:20])[0]  # IHDR width
    shown = min(natural, style.BOOK_CONTENT_PX)  # img { max-width: 100% }
    return check.figure_text_px(path_meta, natural, shown)


def png_meta(png: bytes) -> dict[str, str]:
    import tempfile
    from pathlib import Path

    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(png)
        f.flush()
        return check.png_text(Path(f.name))


@pytest.fixture(autouse=True)
def book_style():
    style.use_book_style()
    yield
    plt.close("all")


def test_the_minimum_is_seventy_percent_of_the_body_text_at_the_books_width():
    assert style.MIN_FONT_PT * style.PX_PER_PT >= style.MIN_TEXT_FRACTION * style.BODY_PX
    assert style.MIN_FONT_PT - 0.5 < style.MIN_TEXT_FRACTION * style.BODY_PX / style.PX_PER_PT


@pytest.mark.parametrize("name", [*FIGURES, "wide three panels"])
def test_every_figure_is_legible_at_the_books_width(name):
    fig = wide_three_panels() if name == "wide three panels" else FIGURES[name]()
    png = style.book_png(fig)
    meta = png_meta(png)
    assert float(meta[style.FONT_KEY]) >= style.MIN_FONT_PT and float(meta[style.DPI_KEY]) == fig.dpi
    px = shown_text_px(png)
    assert px >= style.MIN_TEXT_FRACTION * style.BODY_PX, (name, px)
    print(f"\n{name}: smallest font {meta[style.FONT_KEY]} pt, shown at {px:.1f} px ({px / style.BODY_PX:.0%} of body)")


def test_the_measure_finds_a_figure_drawn_too_wide():
    """Without fit_to_book, the 17-inch row of panels shows its smallest text at about 6 px: the check fails it."""
    fig = wide_three_panels()
    meta = {style.FONT_KEY: f"{style.smallest_font_pt(fig):.3f}", style.DPI_KEY: f"{fig.dpi:g}"}
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight", metadata=meta)
    px = shown_text_px(buf.getvalue())
    assert px < style.MIN_TEXT_FRACTION * style.BODY_PX
    print(f"\nbefore: 17 x 4 in, smallest font {meta[style.FONT_KEY]} pt, shown at {px:.1f} px")


def test_panels_keep_their_places_when_a_wide_figure_is_fitted():
    fig = wide_three_panels()
    before = [ax.get_subplotspec().colspan.start for ax in fig.axes]
    style.fit_to_book(fig)
    assert [ax.get_subplotspec().colspan.start for ax in fig.axes] == before  # the prose's "left" stays left
    assert tuple(fig.get_size_inches()) == (style.BOOK_WIDTH_IN, style.PANEL_HEIGHT_IN)
