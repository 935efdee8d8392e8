"""The browser check of the built book finds what it claims to find, on small pages made to fail."""

from __future__ import annotations

import textwrap

import pytest
from scripts import load_script

check = load_script("tools/check_book.py")
bookinfo = load_script("tools/bookinfo.py")


def test_raw_markup_is_found_and_rendered_text_passes():
    assert check.raw_markup("the edge $2/\\eta$ of GD") and check.raw_markup("see {glue:text}`ch1_x`")
    assert check.raw_markup("$$ x $$") and check.raw_markup("where \\lambda_1 rises")
    assert check.raw_markup("costs $5 and $6") == []  # prices are not math: no closing pair around math text
    assert check.raw_markup("λ1 rises to 2/η, a 3.5x ratio, 10% of it") == []


def test_internal_links(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><a name="legacy"></a>')
    page = tmp_path / "b.html"
    page.write_text("")
    anchors: dict = {}
    assert check.check_internal_link(page, tmp_path, "a.html#top", anchors) is None
    assert check.check_internal_link(page, tmp_path, "a.html#legacy", anchors) is None
    assert check.check_internal_link(page, tmp_path, "https://example.org/x", anchors) is None
    assert "does not exist" in check.check_internal_link(page, tmp_path, "missing.html", anchors)
    assert "no element with id 'nope'" in check.check_internal_link(page, tmp_path, "a.html#nope", anchors)
    assert "leaves the book" in check.check_internal_link(page, tmp_path, "../../etc/passwd", anchors)


def test_launch_links_must_open_tracked_notebooks_of_this_repository():
    repo = bookinfo.repository()
    good = "notebooks/01_sam_edge_derivation.ipynb"
    ok = [repo.colab_url(good), repo.binder_url(good)]
    assert check.check_launch_links("book/chapters/01_sam_edge_derivation.html", ok, repo, {good}) == []
    built = "book/chapters/01_sam_edge_derivation.ipynb"
    problems = check.check_launch_links(
        "book/chapters/01_sam_edge_derivation.html", [repo.colab_url(built)], repo, {good}
    )
    assert any("not a file in the repository" in p for p in problems)
    assert any("without a binder button" in p for p in problems)
    other = ok[0].replace(repo.owner, "someone-else")
    assert any("names someone-else" in p for p in check.check_launch_links("x.html", [other], repo, {good}))


@pytest.fixture(scope="module")
def browser():
    found = check.find_browser()
    if found is None:
        pytest.skip("no Chromium (make browser installs it)")
    return found


def test_in_the_browser_a_broken_page_fails_and_a_clean_one_passes(tmp_path, browser):
    root = tmp_path / "html"
    root.mkdir()
    (root / "index.html").write_text(
        "<html><body><p>Clean: λ₁ ≤ 2/η. <a href='bad.html#top'>next</a></p></body></html>"
    )
    (root / "bad.html").write_text(
        textwrap.dedent("""\
        <html><body><h1 id="top">Bad</h1>
        <p>The edge $2/\\eta$ and \\frac{a}{b}.</p>
        <a href="missing.html">gone</a>
        <img src="_images/nothing.png">
        <script>console.error("boom"); null.x;</script>
        </body></html>""")
    )
    reports = {r.page: r.problems for r in check.check_book(root, browser)}
    assert reports["index.html"] == []
    bad = "\n".join(reports["bad.html"])
    for expected in ("raw $...$ inline math", "raw TeX command", "missing.html", "nothing.png", "boom", "uncaught"):
        assert expected in bad, f"{expected!r} not reported in:\n{bad}"


def test_a_figure_anchor_must_hold_an_image():
    html = (
        '<div id="cell"><div><p>text</p><img src="a.png"></div></div><div id="empty"><p>x</p></div>'
        '<figure id="fig"><img src="b.png"><figcaption>c</figcaption></figure><span id="lone"></span><img src="c.png">'
    )
    assert check.anchor_holds_figure(html, "cell") is True
    assert check.anchor_holds_figure(html, "fig") is True
    assert check.anchor_holds_figure(html, "empty") is False
    assert check.anchor_holds_figure(html, "lone") is False  # an image after an anchor is not an image in it
    assert check.anchor_holds_figure(html, "missing") is None


def test_in_the_browser_the_figure_map_must_link_to_figures(tmp_path, browser):
    root = tmp_path / "html"
    (root / "book" / "figs").mkdir(parents=True)
    (root / "index.html").write_text("<html><body><p>no map here</p></body></html>")
    (root / "book" / "figs" / "ch.html").write_text(
        '<html><body><div id="fig-ok"><img src="../../ok.png"></div><h2 id="no-fig">Section</h2></body></html>'
    )
    (root / "ok.png").write_bytes(b"")
    rows = [
        ("Figure 1", '<a href="figs/ch.html#fig-ok">ok</a>'),
        ("Figure 2", '<a href="figs/ch.html#no-fig">a heading</a>'),
        ("Figure 5", "no link"),
        ("Figure 6", '<a href="figs/ch.html#gone">gone</a>'),
    ]
    body = "".join(f"<tr><td>{p}</td><td>{cell}</td></tr>" for p, cell in rows)
    (root / "book" / "intro.html").write_text(
        f'<html><body><table id="{check.FIGURE_MAP_ID}"><thead><tr><th>paper</th><th>book</th></tr></thead>'
        f"<tbody>{body}</tbody></table></body></html>"
    )
    reports = {r.page: r.problems for r in check.check_book(root, browser)}
    assert reports["index.html"] == [] and reports["book/figs/ch.html"] == []
    intro = "\n".join(reports["book/intro.html"])
    assert "'Figure 1'" not in intro
    assert "'Figure 2' links to 'figs/ch.html#no-fig', an anchor that holds no figure" in intro
    assert "'Figure 5' links to no book figure" in intro
    assert "'Figure 6' links to 'figs/ch.html#gone'" in intro


def test_in_the_browser_the_introduction_must_hold_the_figure_map(tmp_path, browser):
    root = tmp_path / "html"
    (root / "book").mkdir(parents=True)
    (root / "index.html").write_text("<html><body><p>home</p></body></html>")
    (root / "book" / "intro.html").write_text("<html><body><p>an introduction without the map</p></body></html>")
    reports = {r.page: r.problems for r in check.check_book(root, browser)}
    assert any("no table #paper-figure-map" in p for p in reports["book/intro.html"])
