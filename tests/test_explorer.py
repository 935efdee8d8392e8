"""The SAM-edge explorer of the introduction, in Chromium: the sliders move it, and what it shows is the library's.

The page is built from the introduction's own raw-HTML block (``book/intro.md``) with ``book/_static`` beside it,
laid out as in ``_build/html`` (``book/intro.html`` loading ``../_static/...``), so the test exercises the paths of
the built book. Skips, saying why, only where no Chromium can be had (as the other browser tests do).
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from scripts import REPO, load_script

from samedge_lib.theory import edges

check = load_script("tools/check_book.py")
INTRO = REPO / "book" / "intro.md"
RAW_BLOCK = re.compile(r"```\{raw\} html\n(.*?sam_edge_explorer.*?)```", re.S)

#: The two settings: slider positions (log10 of eta, rho, ||g||) and the preset button for lambda.
SETTINGS = {
    "stable": {"eta": "-1", "rho": "-1.3", "grad-norm": "0", "preset": "stable"},
    "2-cycle": {"eta": "-2", "rho": "-1", "grad-norm": "-0.5", "preset": "cycle"},
}


def explorer_block() -> str:
    """The introduction's raw-HTML block that holds the explorer."""
    found = RAW_BLOCK.search(INTRO.read_text(encoding="utf-8"))
    assert found, "book/intro.md has no raw-HTML block loading the explorer"
    return found.group(1)


def test_the_introduction_loads_the_explorer_relative_to_its_page():
    block = explorer_block()
    assert 'class="sam-edge-explorer"' in block
    for asset in ("sam_edge_explorer.js", "sam_edge_explorer.css"):
        assert f"../_static/{asset}" in block  # book/intro.html -> _build/html/_static/
        assert (REPO / "book" / "_static" / asset).is_file()
    assert "http" not in block, "the explorer must load nothing from the network"
    js = (REPO / "book" / "_static" / "sam_edge_explorer.js").read_text(encoding="utf-8")
    assert "http" not in js.replace("http://www.w3.org/2000/svg", ""), "the explorer must load nothing from the network"


@pytest.fixture(scope="module")
def browser():
    found = check.find_browser()
    if found is None:
        pytest.skip("no Chromium (make browser installs it)")
    return found


@pytest.fixture(scope="module")
def explorer_page(tmp_path_factory, browser):
    root = tmp_path_factory.mktemp("html")
    shutil.copytree(REPO / "book" / "_static", root / "_static")
    (root / "book").mkdir()
    page_file = root / "book" / "intro.html"
    page_file.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'></head><body>{explorer_block()}</body></html>"
    )
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-gpu"])
        context = chromium.new_context(viewport={"width": 1280, "height": 1600})
        context.route(re.compile(r"^(https?|wss?)://"), lambda route: (errors.append(route.request.url), route.abort()))
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(page_file.as_uri(), wait_until="load")
        yield page, errors
        chromium.close()


def read_explorer(page) -> dict:
    """The numbers the explorer exposes on its container, and the read-out it shows."""
    data = page.evaluate("() => ({...document.querySelector('.sam-edge-explorer').dataset})")
    shown = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.sam-edge-explorer [data-show]')]"
        ".map(e => [e.dataset.show, e.textContent]))"
    )
    return {"data": data, "shown": shown}


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_explorer_matches_the_library(explorer_page, name):
    from samedge_lib.core.quadratic import Quadratic, sam_run

    page, errors = explorer_page
    setting = SETTINGS[name]
    for key in ("eta", "rho", "grad-norm"):
        page.locator(f'.sam-edge-explorer input[data-key="{key}"]').fill(setting[key])
    page.locator(f'.sam-edge-explorer button[data-preset="{setting["preset"]}"]').click()
    got = read_explorer(page)
    d = {k: v for k, v in got["data"].items() if k not in ("regime", "iterates")}
    d = {k: float(v) for k, v in d.items()}
    eta, rho, g, lam, mu = d["eta"], d["rho"], d["gradNorm"], d["lam"], d["mu"]
    for key, log10 in (("eta", "eta"), ("rho", "rho"), ("gradNorm", "grad-norm")):  # the sliders did move
        assert rel(d[key], 10 ** float(setting[log10])) < 1e-12

    edge = edges.sam_edge(grad_norm=g, eta=eta, rho=rho)
    expected = {
        "edge": edge,
        "gd-edge": edges.gd_edge(eta),
        "alpha": edges.alpha(grad_norm=g, eta=eta, rho=rho),
        "ratio": edges.edge_ratio(edges.alpha(grad_norm=g, eta=eta, rho=rho)),
        "multiplier": edges.sam_multiplier(lam=lam, grad_norm=g, eta=eta, rho=rho),
    }
    data_keys = {"edge": "edge", "gd-edge": "gdEdge", "alpha": "alpha", "ratio": "ratio", "multiplier": "multiplier"}
    for key, value in expected.items():
        assert rel(d[data_keys[key]], value) < 1e-9, (key, d[data_keys[key]], value)
        assert rel(float(got["shown"][key]), value) < 1e-9, (key, got["shown"][key], value)  # the text shown

    iterates = np.array(json.loads(got["data"]["iterates"]))
    run = sam_run(Quadratic([lam, mu]), iterates[0], eta, rho, int(d["steps"]))
    err = float(np.max(np.abs(iterates - run.components) / np.abs(run.components)))
    assert err < 1e-9, err
    assert rel(float(np.hypot(lam * iterates[0, 0], mu * iterates[0, 1])), g) < 1e-12  # the run starts at ||g||
    c1 = iterates[:, 0]
    assert np.all(np.sign(c1[1:]) == -np.sign(c1[:-1])), "near the edge the component alternates in sign"
    if name == "stable":
        assert got["data"]["regime"] == "stable" and lam < edge and abs(c1[-1]) < abs(c1[0])
    else:
        assert got["data"]["regime"] == "2-cycle" and lam > edge and abs(c1[-1]) > 10 * abs(c1[0])
    assert errors == []
    print(
        f"\n{name}: eta={eta:.6g} rho={rho:.6g} ||g||={g:.6g} lambda={lam:.10g}: edge shown {got['shown']['edge']},"
        f" library {edge!r} (rel {rel(d['edge'], edge):.1e}); alpha {d['alpha']:.6g}, R {d['ratio']:.6g},"
        f" multiplier {d['multiplier']:.6g}; {len(c1) - 1} iterates, largest relative gap to sam_run {err:.1e};"
        f" |c1| from {abs(c1[0]):.3e} to {abs(c1[-1]):.3e}"
    )
