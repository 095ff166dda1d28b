"""The documentation's links lead somewhere: every relative link of the README and docs/
names a file of the checkout, and every `#anchor` one of its headings.

Users read these pages without the team's design notes, so a page that points at them
(or at a file that moved) is a dead end for its reader.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "client" / "README.md", *ROOT.glob("docs/**/*.md")])
#: `[text](target)`, not images' `![...]`, outside code spans (stripped first).
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)
#: The team's own notes, which users do not have.
PRIVATE = re.compile(r"\.\./shared|\b(?:DOMAIN|ARCHITECTURE|API)\.md\b")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    text = CODE.sub("", page.read_text())
    return {slug(h) for h in HEADING.findall(text)}


def links(page: pathlib.Path) -> list[str]:
    return LINK.findall(CODE.sub("", page.read_text()))


def test_slug_matches_github() -> None:
    assert slug("Groups: the gate") == "groups-the-gate"
    assert slug("Artifacts, receivers, events") == "artifacts-receivers-events"
    assert slug("Running it") == "running-it"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: pathlib.Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{target}: no such file")
        elif anchor and found.suffix == ".md" and anchor not in anchors(found):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_at_the_teams_notes(page: pathlib.Path) -> None:
    assert not PRIVATE.findall(page.read_text())
