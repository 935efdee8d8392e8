"""One figure style for the whole book: seaborn theme, a colour-blind-safe palette, fixed roles.

Every figure in every chapter calls :func:`use_book_style` once and takes its colours from
:data:`COLORS`, so that "SAM-edge" is the same green and ``2/eta`` the same magenta everywhere.
Plotting code lives in :mod:`samedge_lib.reading.plots`; nothing here trains or computes.
"""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

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


def use_book_style() -> None:
    """Apply the book's matplotlib/seaborn style (idempotent)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=list(OKABE_ITO.values())[1:])
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 4.0),
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
