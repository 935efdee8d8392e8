"""Citation metadata and licences agree with the project files they describe."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path

import yaml
from pybtex.database import parse_file
from scripts import load_script

REPO = Path(__file__).resolve().parent.parent
bookinfo = load_script("tools/bookinfo.py")
CFF = yaml.safe_load((REPO / "CITATION.cff").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BIB = parse_file(str(REPO / "references.bib"))


def test_cff_has_the_fields_cff_1_2_requires_with_the_right_types():
    assert CFF["cff-version"] == "1.2.0"
    assert isinstance(CFF["message"], str) and CFF["message"].strip()
    assert isinstance(CFF["title"], str) and CFF["title"].strip()
    assert CFF["authors"] and all(("name" in a) ^ ("family-names" in a) for a in CFF["authors"])
    assert CFF["type"] in ("software", "dataset")
    for ref in CFF.get("references", []):
        assert {"type", "title", "authors"} <= set(ref), ref
        assert all("family-names" in a or "name" in a for a in ref["authors"])
    if "date-released" in CFF:
        assert isinstance(CFF["date-released"], dt.date)


def test_cff_agrees_with_config_and_pyproject():
    repo = bookinfo.repository()
    assert CFF["repository-code"] == repo.url
    assert CFF["url"] == repo.pages_url
    assert CFF["version"] == PYPROJECT["project"]["version"]
    assert CFF["license"] == PYPROJECT["project"]["license"]["text"] == "MIT"
    assert "MIT License" in (REPO / "LICENSE").read_text()


def test_cff_cites_the_same_paper_and_code_as_the_bibliography():
    paper = BIB.entries["long2024sam"]
    (article,) = [r for r in CFF["references"] if r["type"] == "article"]
    assert article["title"] == paper.fields["title"]
    assert [a["family-names"] for a in article["authors"]] == [p.last_names[0] for p in paper.persons["author"]]
    assert (article["volume"], article["issue"], article["year"]) == tuple(
        int(paper.fields[k]) for k in ("volume", "number", "year")
    )
    assert article["url"] == paper.fields["url"]
    (code,) = [r for r in CFF["references"] if r["type"] == "software"]
    assert code["repository-code"] == BIB.entries["long2024code"].fields["url"]


def test_bibliography_entries_link_to_a_public_copy():
    for key, entry in BIB.entries.items():
        assert "url" in entry.fields or "doi" in entry.fields, f"{key}: no url or doi"
        assert re.fullmatch(r"[a-z]+\d{4}[a-z]*", key), f"{key}: keys are author+year+word"


def test_text_licence_is_stated_in_a_file_and_in_the_book_footer():
    text = (REPO / "LICENSE-TEXT.md").read_text()
    assert "CC BY 4.0" in text and "https://creativecommons.org/licenses/by/4.0/" in text
    footer = yaml.safe_load((REPO / "_config.yml").read_text())["html"]["extra_footer"]
    assert "CC BY 4.0" in footer and "https://creativecommons.org/licenses/by/4.0/" in footer and "MIT" in footer


def test_every_cited_key_exists_and_every_entry_is_cited():
    sources = [*(REPO / "book").glob("*.md"), *(REPO / "notebooks").glob("*.ipynb"), REPO / "README.md"]
    cited = set()
    for path in sources:
        for keys in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", path.read_text()):
            cited.update(k.strip() for k in keys.split(","))
    assert cited - set(BIB.entries) == set(), "cited but not in references.bib"
    assert set(BIB.entries) - cited == set(), "in references.bib but never cited"
