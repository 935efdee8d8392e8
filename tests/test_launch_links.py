"""The launch-button rewrite: chapters open notebooks/NN_name.ipynb, built with the theme's own URL format."""

from __future__ import annotations

from pathlib import Path

from scripts import load_script

REPO = Path(__file__).resolve().parent.parent
launch = load_script("tools/launch_links.py")
bookinfo = load_script("tools/bookinfo.py")


def test_source_notebook_of_chapters_only():
    assert launch.source_notebook("book/chapters/01_sam_edge_derivation") == "notebooks/01_sam_edge_derivation.ipynb"
    assert launch.source_notebook("book/intro") is None
    assert launch.source_notebook("book/chapters/sub/x") is None


def test_rewrite_of_the_urls_the_theme_builds():
    """The URLs sphinx-book-theme 1.3 builds for a chapter (header_buttons/launch.py), rewritten."""
    repo = bookinfo.repository()
    doc = "book/chapters/02_quadratic_ground_truth"
    theme_path = launch.theme_notebook_path(doc, "")
    assert theme_path == f"{doc}.ipynb"
    buttons = [
        {
            "text": "Binder",
            "url": f"https://mybinder.org/v2/gh/{repo.owner}/{repo.name}/{repo.branch}?urlpath=lab/tree/{theme_path}",
        },
        {
            "text": "Colab",
            "url": f"https://colab.research.google.com/github/{repo.owner}/{repo.name}/blob/{repo.branch}/{theme_path}",
        },
        {"text": "Live Code", "javascript": "initThebeSBT()"},
    ]
    assert launch.rewrite_launch_buttons(buttons, theme_path, launch.source_notebook(doc)) == []
    src = "notebooks/02_quadratic_ground_truth.ipynb"
    assert buttons[0]["url"] == repo.binder_url(src) and buttons[1]["url"] == repo.colab_url(src)
    assert (REPO / src).is_file()


def test_a_url_without_the_expected_path_is_reported_not_guessed():
    buttons = [{"url": "https://example.org/elsewhere"}]
    assert launch.rewrite_launch_buttons(buttons, "book/chapters/x.ipynb", "notebooks/x.ipynb") == [
        "https://example.org/elsewhere"
    ]
    assert buttons[0]["url"] == "https://example.org/elsewhere"
    assert launch.theme_notebook_path("book/chapters/x", "/docs/") == "docs/book/chapters/x.ipynb"


def test_page_fixes_drop_repeated_script_tags_and_set_a_theme_mode():
    from sphinx.builders.html._assets import _JavaScript

    fixes = load_script("tools/page_fixes.py")
    body = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript(None, body=body), _JavaScript("a.js"), _JavaScript("", body=body), _JavaScript("a.js")]
    kept = fixes.unique_scripts(scripts)
    assert kept == [scripts[0], scripts[1]]
    assert len(fixes.unique_scripts([_JavaScript(None, body="a"), _JavaScript(None, body="b")])) == 2
    context = {"script_files": scripts, "default_mode": ""}
    fixes._on_page_context(None, "p", "page.html", context, None)
    assert len(context["script_files"]) == 2 and context["default_mode"] == "light"
