"""The README and docs/ stay accurate: every setting documented, every relative link resolving, a short README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.config import SETTINGS

from ..conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
TOP_FOLDERS = ("engine", "server", "tests", "scripts", "bench", "processes", "forms", "docs", "migrations")


def prose(page: Path) -> str:
    """The page's text without its fenced code blocks (their brackets are code, not links)."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def anchors(page: Path) -> set[str]:
    """The fragment ids GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    slugs = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page), re.M):
        slugs.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return slugs


def relative_links(page: Path) -> list[tuple[str, Path, str]]:
    """(link as written, file it points to, fragment) for every link of the page that is not a URL."""
    found = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        found.append((target, (page.parent / path).resolve() if path else page, fragment))
    return found


def test_every_setting_is_documented_in_operations():
    operations = (DOCS / "operations.md").read_text(encoding="utf-8")
    missing = [f"TETHER_{s.name}" for s in SETTINGS if f"`TETHER_{s.name}`" not in operations]
    assert not missing, f"settings missing from docs/operations.md: {missing}"
    unknown = sorted(set(re.findall(r"`(TETHER_[A-Z0-9_]+)`", operations)) - {f"TETHER_{s.name}" for s in SETTINGS})
    assert not unknown, f"docs/operations.md names settings that server/config.py does not have: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_a_file_that_exists(page):
    links = relative_links(page)
    broken = [target for target, path, _fragment in links if not path.exists()]
    assert not broken, f"{page.name} links to missing files: {broken}"
    unknown = [
        target
        for target, path, fragment in links
        if fragment and path.suffix == ".md" and fragment not in anchors(path)
    ]
    assert not unknown, f"{page.name} links to headings that do not exist: {unknown}"


def named_paths(page: Path) -> list[str]:
    """The repository paths the page names in backticks (`server/config.py`, `tests/e2e/`), code blocks included."""
    return re.findall(rf"`((?:{'|'.join(TOP_FOLDERS)})/[\w./-]*)`", page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_file_and_folder_a_page_names_exists(page):
    missing = sorted({path for path in named_paths(page) if not (ROOT / path).exists()})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_readme_is_short_and_links_every_page_of_the_docs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move detail into docs/"
    linked = {path for _target, path, _fragment in relative_links(README)}
    unlinked = [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_link_checks_catch_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Timers, escalations and incidents\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](other.md#timers-escalations-and-incidents) [b](gone.md) [c](other.md#nowhere)\n"
        "```sh\n[not](a-link.md)\n```\n[d](https://example.org/x.md)\n",
        encoding="utf-8",
    )
    links = relative_links(page)
    assert [target for target, _path, _fragment in links] == [
        "other.md#timers-escalations-and-incidents",
        "gone.md",
        "other.md#nowhere",
    ]
    assert [target for target, path, _f in links if not path.exists()] == ["gone.md"]
    assert anchors(tmp_path / "other.md") == {"other", "timers-escalations-and-incidents"}
    page.write_text("One module in `server/no_such_module.py`, tests in `tests/unit/`, `SETTINGS`.\n", encoding="utf-8")
    assert named_paths(page) == ["server/no_such_module.py", "tests/unit/"]
