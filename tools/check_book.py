r"""Open every page of the built book in headless Chromium and fail on what a reader would see as broken.

Checks, per page of ``_build/html`` (``_static/``, ``_sources/`` and Sphinx's search/index pages aside):

* **raw TeX**: after MathJax has typeset the page, the visible text outside code blocks must contain no
  TeX commands (``\frac``, ``\lambda``...), no ``$$`` and no ``$...$`` pair, and no unrendered MyST role
  (``{glue:text}``, ``{cite:p}``...);
* **internal links**: every ``href``/``src`` into the book resolves to a file of the build, and its
  ``#fragment`` to an element with that id;
* **launch links**: every Colab or Binder link names the repository and branch of ``_config.yml`` and a
  notebook that git tracks in this repository; every chapter page has both, for its own source
  ``notebooks/NN_name.ipynb``;
* **console errors**: no ``console.error`` message, uncaught exception or failed load of a local file;
* **the paper's figures, mapped**: the introduction holds the table ``#paper-figure-map``, every row of it links to
  a book figure, and every such link lands on an element of the target page that holds an image (a figure or the
  cell that draws it), not just on any anchor;
* **legible figures**: in every figure the book drew (a PNG whose text chunks carry ``samedge:min_font_pt`` and
  ``samedge:dpi``, written by ``samedge_lib.reading.style.book_png``), the smallest text as shown on the page,
  ``min_font_pt * dpi/72 * (displayed width / natural width)`` CSS pixels, is at least 70 % of the page's body text
  (measured on its paragraphs); a matplotlib PNG without those chunks did not go through the book's style and
  fails too. The smallest figure text of each page is printed.

Requests to other hosts are blocked (the check runs offline and must not depend on them) and are not
errors. The browser is Debian's ``chromium`` (or Google Chrome), driven by Playwright with
``executable_path``; ``--install-browser`` installs ``chromium`` with apt-get when none is found and this
runs as root (as on CI), else it says how.

Usage: python tools/check_book.py [_build/html] [--install-browser] [--screenshots DIR] [--ensure-browser]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bookinfo import REPO, Repository, parse_launch_url, repository  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SKIP_DIRS = {"_static", "_sources", "_images", "_panels_static"}
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
#: Visible-text patterns that mean TeX or a MyST role was not rendered.
RAW_PATTERNS = {
    "TeX command": re.compile(r"\\(?:[A-Za-z]{2,}|[{}(\[\]),;!])"),
    "$$ display math": re.compile(r"\$\$"),
    "$...$ inline math": re.compile(r"(?<![\w$])\$[^$\s](?:[^$\n]{0,200}?[^$\s])?\$(?![\w$])"),
    "MyST role": re.compile(r"\{(?:glue|glue:text|glue:any|cite|cite:p|cite:t|doc|ref|eq|numref|math)\}`"),
}
#: Text of the page with code, math and scripts removed: what must be free of raw markup.
VISIBLE_TEXT_JS = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml, .MathJax, textarea, '
    + 'kbd, samp, .highlight, .cell_input, .output.text_plain, .output.stream').forEach(e => e.remove());
  return body.innerText;
}"""
REDIRECT = re.compile(r"""<meta\s+http-equiv=["']refresh["']\s+content=["']\d+;\s*url=([^"']+)["']""", re.I)
MATHJAX_DONE_JS = """async () => {
  const start = Date.now();
  while (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) {
    if (Date.now() - start > 15000) return 'MathJax did not start within 15 s';
    await new Promise(r => setTimeout(r, 50));
  }
  await window.MathJax.startup.promise;
  return 'ok';
}"""


@dataclass
class PageReport:
    """What was found wrong on one page."""

    page: str
    problems: list[str] = field(default_factory=list)
    #: The smallest text of the page's figures as shown, CSS pixels, and the body text's (None: no book figure).
    figure_text_px: float | None = None
    body_px: float | None = None


class _Anchors(HTMLParser):
    """Collect the ids (and legacy ``<a name>``) of an HTML file."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value and (key == "id" or (tag == "a" and key == "name")):
                self.ids.add(value)


#: The introduction's table from the paper's figures to the book's (book/intro.md) and the page that must hold it.
FIGURE_MAP_ID = "paper-figure-map"
FIGURE_MAP_PAGE = "book/intro.html"
#: Each row of the figure map: its first cell's text and the hrefs of its links.
FIGURE_MAP_JS = f"""() => {{
  const table = document.getElementById('{FIGURE_MAP_ID}');
  if (!table) return null;
  return [...table.querySelectorAll('tbody tr')].map(tr => ({{
    paper: tr.cells[0].innerText.trim(),
    hrefs: [...tr.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  }}));
}}"""
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _FigureAt(HTMLParser):
    """Whether the element with a given id holds an ``<img>`` (or is one)."""

    def __init__(self, anchor: str) -> None:
        super().__init__()
        self.anchor, self.depth, self.found, self.has_image = anchor, 0, False, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        inside = self.depth > 0
        if not inside and dict(attrs).get("id") == self.anchor:
            self.found, inside = True, True
            if tag in _VOID:
                self.has_image |= tag == "img"
                return
            self.depth = 1
            return
        if inside:
            self.has_image |= tag == "img"
            if tag not in _VOID:
                self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth > 0 and tag not in _VOID:
            self.depth -= 1


def anchor_holds_figure(html: str, anchor: str) -> bool | None:
    """True if the element with id ``anchor`` holds an image, False if it holds none, None if there is no such id."""
    parser = _FigureAt(anchor)
    parser.feed(html)
    return parser.has_image if parser.found else None


def check_figure_map(page: Path, root: Path, rows: list[dict] | None, anchors: dict[Path, set[str]]) -> list[str]:
    """Problems with the figure map on ``page``: missing rows or links, links that do not land on a figure."""
    if rows is None:
        return [f"no table #{FIGURE_MAP_ID} (the paper's figures, mapped)"]
    if not rows:
        return [f"the table #{FIGURE_MAP_ID} has no rows"]
    problems = []
    for row in rows:
        if not row["hrefs"]:
            problems.append(f"figure map: the row for {row['paper']!r} links to no book figure")
        for href in row["hrefs"]:
            parts = urlsplit(href)
            broken = check_internal_link(page, root, href, anchors)
            if broken or parts.scheme or parts.netloc or not parts.fragment:
                problems.append(
                    f"figure map: {row['paper']!r} links to {href!r}, not to a figure of the book"
                    + (f" ({broken})" if broken else "")
                )
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            html = target.read_text(encoding="utf-8", errors="replace")
            if not anchor_holds_figure(html, unquote(parts.fragment)):
                problems.append(f"figure map: {row['paper']!r} links to {href!r}, an anchor that holds no figure")
    return problems


#: No text in a figure smaller than this fraction of the body text as shown (issue 22).
MIN_FIGURE_TEXT = 0.7
FONT_KEY, DPI_KEY = "samedge:min_font_pt", "samedge:dpi"
#: Every image of the page that is shown (width > 0), with its natural and displayed width, and the body text size.
IMAGES_JS = """() => {
  const p = document.querySelector('main article p, article p, main p') || document.body;
  return {
    body_px: parseFloat(getComputedStyle(p).fontSize),
    images: [...document.images].filter(i => i.getBoundingClientRect().width > 0 && i.naturalWidth > 0).map(i => ({
      src: i.getAttribute('src'), natural: i.naturalWidth, shown: i.getBoundingClientRect().width })),
  };
}"""


def png_text(path: Path) -> dict[str, str] | None:
    """The ``tEXt`` chunks of a PNG file (None if it is not a PNG)."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + length].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


def figure_text_px(meta: dict[str, str], natural_width: float, shown_width: float) -> float | None:
    """The smallest text of a book figure as shown, in CSS pixels (None if the PNG does not say its fonts)."""
    if FONT_KEY not in meta or DPI_KEY not in meta:
        return None
    return float(meta[FONT_KEY]) * float(meta[DPI_KEY]) / 72.0 * shown_width / natural_width


def check_figure_fonts(page: Path, root: Path, shown: dict) -> tuple[list[str], float | None]:
    """Problems with the size of figure text on ``page`` and its smallest figure text in CSS pixels."""
    problems, smallest, body = [], None, shown["body_px"]
    for img in shown["images"]:
        parts = urlsplit(img["src"])
        if parts.scheme or parts.netloc or not parts.path.lower().endswith(".png"):
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        meta = png_text(target) if target.is_file() else None
        if meta is None:
            continue
        px = figure_text_px(meta, img["natural"], img["shown"])
        if px is None:
            if "matplotlib" in meta.get("Software", "").lower():
                problems.append(f"figure {img['src']} was not drawn through the book's style (no {FONT_KEY})")
            continue
        smallest = px if smallest is None else min(smallest, px)
        if px < MIN_FIGURE_TEXT * body:
            problems.append(
                f"figure {img['src']}: its smallest text is {px:.1f} px as shown "
                f"({meta[FONT_KEY]} pt at {img['shown']:.0f}/{img['natural']} of its width), under "
                f"{MIN_FIGURE_TEXT:.0%} of the body text ({body:g} px)"
            )
    return problems, smallest


def find_browser() -> str | None:
    """Path of a Chromium-family browser: ``$SAMEDGE_BROWSER``, else the first of :data:`BROWSERS` on PATH."""
    env = os.environ.get("SAMEDGE_BROWSER")
    if env:
        return env if Path(env).is_file() else None
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_browser() -> str | None:
    """Install Debian's chromium with apt-get when running as root; return its path (None when impossible)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    print("check_book: no Chromium found; installing Debian's chromium (apt-get, about a minute) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            return None
    return find_browser()


def pages(root: Path) -> list[Path]:
    """Every HTML page of the build that a reader navigates to."""
    out = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIP_DIRS or rel.name in SKIP_PAGES:
            continue
        out.append(path)
    return out


def tracked_files(repo: Path = REPO) -> set[str] | None:
    """Paths git tracks in the repository (None outside a git checkout)."""
    proc = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True)
    return set(proc.stdout.splitlines()) if proc.returncode == 0 else None


def raw_markup(text: str) -> list[str]:
    """Descriptions of raw TeX / MyST fragments in visible text."""
    found = []
    for what, pattern in RAW_PATTERNS.items():
        for m in pattern.finditer(text):
            start = max(0, m.start() - 30)
            found.append(f"raw {what}: ...{text[start : m.end() + 30]!r}...")
    return found


def check_internal_link(page: Path, root: Path, href: str, anchors: dict[Path, set[str]]) -> str | None:
    """None if ``href`` (relative to ``page``) resolves inside the build, else the problem."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:", "data:")):
        return None
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if parts.path.endswith("/"):
        target = target / "index.html"
    if not target.is_relative_to(root.resolve()):
        return f"link {href!r} leaves the book"
    if not target.exists():
        return f"broken link {href!r}: {target.relative_to(root.resolve())} does not exist"
    if parts.fragment and target.suffix == ".html":
        if target not in anchors:
            parser = _Anchors()
            parser.feed(target.read_text(encoding="utf-8", errors="replace"))
            anchors[target] = parser.ids
        if unquote(parts.fragment) not in anchors[target]:
            return f"broken link {href!r}: no element with id {parts.fragment!r}"
    return None


def check_launch_links(page_rel: str, hrefs: list[str], repo: Repository, tracked: set[str] | None) -> list[str]:
    """Problems with the Colab/Binder links of a page (wrong repository, untracked notebook, missing button)."""
    problems, targets = [], {}
    for href in hrefs:
        parsed = parse_launch_url(href)
        if parsed is None:
            if "colab.research.google.com" in href or "mybinder.org" in href:
                problems.append(f"launch link in an unknown format: {href}")
            continue
        service, slug, branch, path = parsed
        targets.setdefault(service, set()).add(path)
        if slug.lower() != f"{repo.owner}/{repo.name}".lower() or branch != repo.branch:
            problems.append(f"{service} link names {slug}@{branch}, not {repo.owner}/{repo.name}@{repo.branch}")
        exists = path in tracked if tracked is not None else (REPO / path).is_file()
        if not exists:
            problems.append(f"{service} link opens {path}, which is not a file in the repository: {href}")
    chapter = re.fullmatch(r"book/chapters/([^/]+)\.html", page_rel)
    if chapter:
        wanted = f"notebooks/{chapter.group(1)}.ipynb"
        for service in ("colab", "binder"):
            if targets.get(service) != {wanted}:
                problems.append(f"chapter without a {service} button for {wanted} (found {targets.get(service)})")
    return problems


def check_book(root: Path, browser: str, screenshots: Path | None = None) -> list[PageReport]:
    """Open every page of ``root`` in the browser; return one report per page."""
    from playwright.sync_api import sync_playwright

    repo = repository()
    tracked = tracked_files()
    anchors: dict[Path, set[str]] = {}
    reports = []
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=browser, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        context = chromium.new_context(viewport={"width": 1280, "height": 1600})
        context.route(re.compile(r"^(https?|wss?)://"), lambda route: route.abort())
        for path in pages(root):
            rel = path.relative_to(root).as_posix()
            report = PageReport(rel)
            reports.append(report)
            redirect = REDIRECT.search(path.read_text(encoding="utf-8", errors="replace"))
            if redirect:  # a redirect stub (Jupyter Book's index.html): its target is checked as a page itself
                problem = check_internal_link(path, root, redirect.group(1), anchors)
                report.problems += [problem] if problem else []
                continue
            page = context.new_page()
            page.on(
                "console",
                lambda m, r=report: (
                    r.problems.append(f"console error: {m.text}")
                    if m.type == "error" and "net::ERR_FAILED" not in m.text
                    else None
                ),
            )
            page.on("pageerror", lambda e, r=report: r.problems.append(f"uncaught exception: {e}"))
            page.on(
                "requestfailed",
                lambda q, r=report: r.problems.append(f"failed to load {q.url}") if q.url.startswith("file:") else None,
            )
            page.goto(path.as_uri(), wait_until="load")
            if page.evaluate("() => document.querySelector('.math, mjx-container, script[src*=mathjax]') !== null"):
                state = page.evaluate(MATHJAX_DONE_JS)
                if state != "ok":
                    report.problems.append(state)
            report.problems += raw_markup(page.evaluate(VISIBLE_TEXT_JS))
            links = page.evaluate(
                "() => [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
                ".concat([...document.querySelectorAll('img[src], script[src], link[href]')]"
                ".map(e => e.getAttribute('src') || e.getAttribute('href')))"
            )
            for href in dict.fromkeys(links):
                problem = check_internal_link(path, root, href, anchors)
                if problem:
                    report.problems.append(problem)
            report.problems += check_launch_links(rel, [h for h in links if h.startswith("https://")], repo, tracked)
            shown = page.evaluate(IMAGES_JS)
            font_problems, report.figure_text_px = check_figure_fonts(path, root, shown)
            report.body_px = shown["body_px"]
            report.problems += font_problems
            figure_map = page.evaluate(FIGURE_MAP_JS)
            if figure_map is not None or rel == FIGURE_MAP_PAGE:
                report.problems += check_figure_map(path, root, figure_map, anchors)
            if screenshots is not None and (rel == "book/intro.html" or rel.startswith("book/chapters/01")):
                screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshots / (rel.replace("/", "_") + ".png")))
            page.close()
        chromium.close()
    return reports


def main(argv: list[str] | None = None) -> int:
    """Check the built book; print one line per problem; exit 1 if there is any (2: cannot check)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html", nargs="?", type=Path, default=REPO / "_build" / "html")
    ap.add_argument("--install-browser", action="store_true", help="apt-get install chromium if none is found")
    ap.add_argument("--screenshots", type=Path, help="save PNGs of the introduction and chapter 1 here")
    ap.add_argument("--ensure-browser", action="store_true", help="only find (or install) the browser, then exit")
    args = ap.parse_args(argv)
    if args.ensure_browser:
        browser = find_browser() or (install_browser() if args.install_browser else None)
        print(f"check_book: browser: {browser}" if browser else "check_book: no Chromium found", file=sys.stderr)
        return 0 if browser else 2
    root = args.html.resolve()
    if not (root / "index.html").is_file():
        print(f"check_book: no built book at {root} (run: make html)", file=sys.stderr)
        return 2
    browser = find_browser() or (install_browser() if args.install_browser else None)
    if browser is None:
        print(
            "check_book: no Chromium found; install Debian's chromium (as root: apt-get install -y chromium), "
            "or set SAMEDGE_BROWSER to a Chromium or Chrome executable",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    reports = check_book(root, browser, args.screenshots)
    n_problems = sum(len(r.problems) for r in reports)
    for r in reports:
        for problem in r.problems:
            print(f"{r.page}: {problem}")
    for r in reports:
        if r.figure_text_px is not None:
            print(
                f"{r.page}: smallest figure text {r.figure_text_px:.1f} px as shown, "
                f"{r.figure_text_px / r.body_px:.0%} of the body text ({r.body_px:g} px)"
            )
    print(
        f"check_book: {len(reports)} page(s) opened in {Path(browser).name} in {time.perf_counter() - t0:.1f} s, "
        f"{n_problems} problem(s)"
    )
    return 1 if n_problems else 0


if __name__ == "__main__":
    sys.exit(main())
