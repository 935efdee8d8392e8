"""One figure style for the whole book: seaborn theme, a colour-blind-safe palette, fixed roles.

Every figure in every chapter calls :func:`use_book_style` once and takes its colours from
:data:`COLORS`, so that "SAM-edge" is the same green and ``2/eta`` the same magenta everywhere.
Plotting code lives in :mod:`samedge_lib.reading.plots`; nothing here trains or computes.

**Legible at the book's width.** The book's text column is :data:`BOOK_CONTENT_PX` CSS pixels wide at a 1280 px
window (measured in Chromium) and its body text :data:`BODY_PX`; no text in a figure may be smaller than
:data:`MIN_TEXT_FRACTION` of it there. A figure is drawn :data:`BOOK_WIDTH_IN` wide (wider ones are shown shrunk
to the column, their text with them), so one point of font is ``BOOK_CONTENT_PX / (72 BOOK_WIDTH_IN)`` CSS pixels and
:data:`MIN_FONT_PT` is the smallest size that keeps the 70 %. :func:`use_book_style` makes every figure that a
notebook displays go through :func:`fit_to_book` (a figure wider than the column is resized to it, keeping its
panels where they are, with every text raised to at least :data:`MIN_FONT_PT`) and :func:`book_png`, which writes
the smallest font size and the dpi into the PNG (text chunks ``samedge:min_font_pt`` and ``samedge:dpi``), where
``tools/check_book.py`` reads them and measures the size the text is shown at in the built page.
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib as mpl
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.text import Text

#: Okabe-Ito colours (colour-blind safe), assigned to fixed meanings across the book.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "skyblue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}

COLORS = {
    "lambda1": OKABE_ITO["blue"],  # top Hessian eigenvalue
    "lambda_k": OKABE_ITO["skyblue"],  # further eigenvalues
    "sam_edge": OKABE_ITO["green"],  # the SAM-edge
    "gd_edge": OKABE_ITO["purple"],  # 2/eta
    "gd": OKABE_ITO["vermillion"],  # GD runs
    "sam": OKABE_ITO["blue"],  # SAM runs
    "grad_align": OKABE_ITO["orange"],
    "sam_grad_align": OKABE_ITO["green"],
    "official": OKABE_ITO["black"],  # the paper's own estimator
    "theory": OKABE_ITO["black"],
}

#: Colours for a sweep over rho (ordered small to large rho).
RHO_PALETTE = [OKABE_ITO[c] for c in ("vermillion", "orange", "blue", "green", "purple", "skyblue")]


#: The book's text column in CSS pixels at a 1280 px window, and its body text (sphinx-book-theme, measured).
BOOK_CONTENT_PX = 688
BODY_PX = 16.0
#: No text in a figure smaller than this fraction of the body text, as shown at the book's width (issue 22).
MIN_TEXT_FRACTION = 0.7
#: The width figures are drawn at, and the height of one row of panels when a wide figure is resized to it.
BOOK_WIDTH_IN = 7.0
PANEL_HEIGHT_IN = 2.8
#: CSS pixels per point of font in a figure shown at the column's width.
PX_PER_PT = BOOK_CONTENT_PX / (72.0 * BOOK_WIDTH_IN)
#: The smallest font size in a figure (points): 70 % of the body text at the book's width, rounded up to a half point.
MIN_FONT_PT = math.ceil(2 * MIN_TEXT_FRACTION * BODY_PX / PX_PER_PT) / 2
#: The PNG text chunks that carry a figure's smallest font size and its dpi to the browser check.
FONT_KEY, DPI_KEY = "samedge:min_font_pt", "samedge:dpi"


def _texts(fig: Figure) -> list[Text]:
    """Every text the figure draws (titles, labels, tick labels, legends, annotations), after a layout pass."""
    fig.draw_without_rendering()  # tick labels exist only once the axes have been laid out
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def smallest_font_pt(fig: Figure) -> float:
    """The smallest font size (points) of any text in ``fig`` (mathtext sub/superscripts are set smaller still)."""
    sizes = [t.get_fontsize() for t in _texts(fig)]
    return float(min(sizes)) if sizes else math.inf


def fit_to_book(fig: Figure) -> Figure:
    """``fig`` made legible at the book's width, in place; its panels keep their places (the text says "left").

    A figure wider than :data:`BOOK_WIDTH_IN` is resized to it (each row of panels at least
    :data:`PANEL_HEIGHT_IN` tall), since the page would shrink it, text and all, to the column; then every text
    smaller than :data:`MIN_FONT_PT` is raised to it. Figures that fit are left as they are unless a text is too small.
    """
    width, height = fig.get_size_inches()
    if width > BOOK_WIDTH_IN * 1.001:
        rows = max((ax.get_subplotspec().get_gridspec().nrows for ax in fig.axes if ax.get_subplotspec()), default=1)
        fig.set_size_inches(BOOK_WIDTH_IN, max(height * BOOK_WIDTH_IN / width, rows * PANEL_HEIGHT_IN))
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = axis.get_ticklabels(which="both")
            if labels and min(t.get_fontsize() for t in labels) < MIN_FONT_PT:
                ax.tick_params(axis=name, which="both", labelsize=MIN_FONT_PT)
    for text in _texts(fig):
        if text.get_fontsize() < MIN_FONT_PT:
            text.set_fontsize(MIN_FONT_PT)
    return fig


def fit_tight_width(fig: Figure) -> Figure:
    """Narrow ``fig`` until what its PNG holds (the tight box: legends and titles outside the axes included) is at
    most :data:`BOOK_WIDTH_IN` wide, in place: the page would otherwise shrink the wider image, its text with it.
    The fonts keep their sizes; the axes give up the width.
    """
    target = BOOK_WIDTH_IN - 2 * mpl.rcParams["savefig.pad_inches"]  # the saved PNG adds the pad each side
    for _ in range(8):
        tight = fig.get_tightbbox(fig.canvas.get_renderer()).width
        if tight <= target * 1.002:
            break
        width, height = fig.get_size_inches()
        fig.set_size_inches(max(width - (tight - target), 0.5 * width), height)
    return fig


def book_png(fig: Figure, *, base64_str: bool = False) -> bytes | str:
    """The PNG the book shows for ``fig``: :func:`fit_to_book` and :func:`fit_tight_width`, then saved at the
    figure's dpi with its smallest font size and dpi in the PNG's text chunks (what ``tools/check_book.py``
    measures). ``base64_str``: as IPython's formatters return it.
    """
    fit_tight_width(fit_to_book(fig))
    dpi = float(fig.dpi)
    meta = {FONT_KEY: f"{smallest_font_pt(fig):.3f}", DPI_KEY: f"{dpi:g}"}
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white", metadata=meta)
    data = buf.getvalue()
    return base64.b64encode(data).decode("ascii") if base64_str else data


def _register_png_formatter() -> None:
    """Make IPython show every matplotlib figure (``plt.show()``, ``display(fig)``, myst-nb's ``glue``) through
    :func:`book_png`; nothing outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        return
    shell = get_ipython()
    if shell is None:
        return
    import importlib

    # The inline backend registers its own PNG formatter when its module is first imported, which matplotlib
    # defers to the first figure; resolving the backend and importing the module now makes this one the last word.
    if "inline" in mpl.get_backend():
        importlib.import_module("matplotlib_inline.backend_inline")
    shell.display_formatter.formatters["image/png"].for_type(Figure, lambda fig: book_png(fig, base64_str=True))


def use_book_style() -> None:
    """Apply the book's matplotlib/seaborn style and its legible PNGs (idempotent)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=list(OKABE_ITO.values())[1:])
    _register_png_formatter()
    mpl.rcParams.update(
        {
            "figure.figsize": (BOOK_WIDTH_IN, 4.0),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 9,
            "legend.frameon": True,
            "lines.linewidth": 1.8,
            "figure.constrained_layout.use": True,
        }
    )
