"""The experiment chapters' figures are drawn for the regime they are about (issue 22).

On synthetic tables shaped like the runs the readers complained about: a character Transformer whose ``lambda_1`` is
117 at step 0 against an edge of 8-20, and a paper-scale GD run that sharpens from 2.9 to 4.2 with ``2/eta = 200``.
The y-limits must cover the data after the transient, with a margin, and leave the outlier off; what is left off
must be said (a marker at the top edge, a legend entry with its value), and the figure stay legible at the book's
width.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from samedge_lib.reading import plots, style  # noqa: E402


@pytest.fixture(autouse=True)
def book_style():
    style.use_book_style()
    yield
    plt.close("all")


def sam_with_a_sharp_start(n: int = 11) -> pd.DataFrame:
    """Minibatch SAM on the Transformer: 117 at step 0, then a flat tail oscillating around an edge near 9."""
    step = np.arange(n) * 25
    rng = np.random.default_rng(0)
    edge = 9.0 + 0.3 * rng.standard_normal(n)
    edge[0] = 17.0
    lam = edge * (1.1 + 0.1 * rng.standard_normal(n))
    lam[0] = 117.0
    return pd.DataFrame(
        {
            "step": step,
            "lambda_1": lam,
            "lambda_2": 0.9 * lam,
            "edge": edge,
            "gd_edge": np.full(n, 20.0),
            "official_lambda": np.where(np.arange(n) % 5 == 0, lam * 1.2, np.nan),
            "alpha": np.logspace(1, -1, n),
            "align_g": np.linspace(0.1, 0.6, n),
            "align_sam_g": np.linspace(0.2, 0.9, n),
        }
    )


def gd_far_below_its_edge(n: int = 29) -> pd.DataFrame:
    """Paper-scale GD on MNIST: sharpening from 2.9 to 4.2, never near ``2/eta = 200``."""
    step = np.arange(n) * 100.0
    lam = 2.9 + 1.3 * (step / step[-1]) ** 1.2
    return pd.DataFrame(
        {"step": step, "lambda_1": lam, "lambda_2": 0.96 * lam, "edge": np.full(n, 200.0), "gd_edge": np.full(n, 200.0)}
    )


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def markers_at_top(ax) -> list[float]:
    """The x of every off-axis marker drawn on ``ax`` (at the top edge, in axes coordinates)."""
    xs = []
    for line in ax.lines:
        if line.get_marker() == plots.OFF_AXIS_MARKER and len(line.get_xdata()) and not line.get_clip_on():
            assert np.allclose(line.get_ydata(), 1.0)  # at the top edge
            xs += list(line.get_xdata())
    return xs


def hlines(ax) -> list[float]:
    """The values of the horizontal reference lines drawn on ``ax`` (``axhline``: x from 0 to 1 in axes units)."""
    return [
        float(ln.get_ydata()[0]) for ln in ax.lines if list(ln.get_xdata()) == [0, 1] and len(set(ln.get_ydata())) == 1
    ]


def assert_covers_with_margin(ax, values: np.ndarray) -> None:
    lo, hi = ax.get_ylim()
    span = values.max() - values.min()
    assert lo < values.min() and hi > values.max(), (ax.get_ylim(), values.min(), values.max())
    assert hi - values.max() >= 0.5 * plots.MARGIN * span and values.min() - lo >= 0.5 * plots.MARGIN * span
    assert values.max() - values.min() >= plots.REGIME_SHARE * (hi - lo)  # the tail has at least half the height


def test_the_zoom_is_on_the_tail_and_the_step_0_outlier_is_said():
    df = sam_with_a_sharp_start()
    fig, ax = plt.subplots()
    plots.plot_edge_zoom(ax, df)
    tail = df.iloc[1:][["lambda_1", "lambda_2", "edge"]].to_numpy()
    assert_covers_with_margin(ax, tail)
    assert ax.get_ylim()[1] < 117 / 2  # the outlier does not set the scale
    assert ax.get_ylim()[1] < df["edge"].iloc[0]  # the edge's step 0 (17) is far above a tail near 9-11: off too
    assert markers_at_top(ax) and set(markers_at_top(ax)) == {0.0}
    notes = [t for t in legend_texts(ax) if "off the axis" in t]
    assert len(notes) == 1 and notes[0].startswith("step 0:") and r"$\lambda_1$ = 117" in notes[0], notes


def test_the_e_plot_reaches_2_over_eta_and_cuts_the_outlier():
    """SAM's E-plot is about its eigenvalues against 2/eta: the axis reaches 20 (and 0), not 117."""
    fig, ax = plt.subplots()
    plots.plot_eigenvalues(ax, sam_with_a_sharp_start())
    lo, hi = ax.get_ylim()
    assert lo == 0.0 and 20.0 < hi < 25.0
    assert 20.0 in hlines(ax)
    assert any("117" in t and "off the axis" in t for t in legend_texts(ax))


def test_a_gd_run_far_below_2_over_eta_keeps_its_scale_and_the_legend_says_the_value():
    df = gd_far_below_its_edge()
    fig, ax = plt.subplots()
    plots.plot_eigenvalues(ax, df, title="paper scale: GD")
    assert_covers_with_margin(ax, df[["lambda_1", "lambda_2"]].to_numpy())
    assert ax.get_ylim()[1] < 5.0  # not 0-200
    assert 200.0 not in hlines(ax)  # 2/eta is not drawn ...
    (note,) = [t for t in legend_texts(ax) if "not drawn" in t]  # ... it is said, with its value and its distance
    assert note.startswith(r"$2/\eta$ = 200") and "48×" in note, note
    assert not markers_at_top(ax)  # nothing of the run itself is off the axis


def test_a_gd_run_at_its_edge_has_its_2_over_eta_drawn():
    df = gd_far_below_its_edge()
    df["lambda_1"] = 200 * (0.7 + 0.3 * df["step"] / df["step"].iloc[-1])
    df["lambda_2"] = 0.9 * df["lambda_1"]
    fig, ax = plt.subplots()
    plots.plot_eigenvalues(ax, df)
    assert 200.0 in hlines(ax) and ax.get_ylim()[1] > 200.0
    assert not [t for t in legend_texts(ax) if "not drawn" in t or "off the axis" in t]


def test_a_figure_without_a_transient_shows_all_its_data():
    df = gd_far_below_its_edge()
    reg = plots.regime_limits([plots.Series.of("x", df, df["lambda_1"], "k")])
    assert reg.transient == () and (reg.lo, reg.hi) == (df["lambda_1"].min(), df["lambda_1"].max())


def test_ratio_plots_keep_the_line_1_and_cut_step_0_for_every_run():
    df = sam_with_a_sharp_start()
    runs = {"SAM rho=0.1": df, "SAM rho=0.3": df.assign(lambda_1=df["lambda_1"] * 1.05)}
    fig, ax = plt.subplots()
    plots.plot_tracking_ratio(ax, runs)
    ratios = np.concatenate([(r["lambda_1"] / r["edge"]).to_numpy()[1:] for r in runs.values()])
    assert_covers_with_margin(ax, np.append(ratios, 1.0))
    assert 1.0 in hlines(ax) and ax.get_ylim()[1] < (117 / 17) / 2
    assert markers_at_top(ax) == [0.0, 0.0]  # one per run
    (note,) = [t for t in legend_texts(ax) if "off the axis" in t]
    assert "up to" in note  # two runs off the axis: the note gives the highest


def test_the_collapse_plot_cuts_the_transient_by_its_steps():
    df = sam_with_a_sharp_start()
    fig, ax = plt.subplots()
    plots.plot_alpha_collapse(ax, {"SAM rho=0.1": df})
    assert ax.get_ylim()[1] < 117 / 20 / 2
    assert markers_at_top(ax) == [df["alpha"].iloc[0]]  # at its alpha, where the point would be


def test_the_estimator_plot_says_both_values_left_off():
    fig, ax = plt.subplots()
    plots.plot_estimators(ax, sam_with_a_sharp_start())
    (note,) = [t for t in legend_texts(ax) if "off the axis" in t]
    assert "official = 140" in note and r"$\lambda_1$ = 117" in note, note


@pytest.mark.parametrize("make", [sam_with_a_sharp_start, gd_far_below_its_edge])
def test_the_notes_keep_the_figure_legible_at_the_books_width(make):
    """The notes are legend text: no smaller than 70 % of the body text, and the PNG no wider than the column."""
    from test_figure_fonts import shown_text_px

    fig = plots.run_panel(make(), title="run") if make is sam_with_a_sharp_start else plt.subplots()[0]
    if make is gd_far_below_its_edge:
        plots.plot_eigenvalues(fig.axes[0], make(), title="paper scale: GD")
    png = style.book_png(fig)
    assert shown_text_px(png) >= style.MIN_TEXT_FRACTION * style.BODY_PX


def test_a_row_of_panels_shares_one_legend_with_the_notes_named_by_panel():
    df = sam_with_a_sharp_start()
    runs = {"SAM rho=0.1": df, "SAM rho=0.3": df}
    fig, axes = plt.subplots(1, 2, figsize=(style.BOOK_WIDTH_IN, style.PANEL_HEIGHT_IN))
    plots.plot_tracking_ratio(axes[0], runs, legend=False)
    plots.plot_alpha_collapse(axes[1], runs, legend=False)
    plots.figure_legend(fig, axes, ("left", "right"), first=list(runs))
    (leg,) = fig.legends
    texts = [t.get_text() for t in leg.get_texts()]
    assert texts[:2] == list(runs)  # each run once, first
    assert [t for t in texts if t.startswith("left panel, step 0")] and [
        t for t in texts if t.startswith("right panel")
    ]
    assert leg.get_window_extent().width <= fig.get_window_extent().width
