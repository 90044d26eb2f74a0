"""The Markdown pages link only to what exists: every relative link and image in
README.md, BENCHMARKS.md and docs/*.md names a file that is there (relative to the
page), every #anchor a heading of the page it points into (GitHub's slugs), and
docs/README.md lists every page of docs/."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from ridematch_nb.config import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
PAGES = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "BENCHMARKS.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+).+?\1")
# the target of an inline link or image: [text](target "title") or ![alt](<target>)
TARGET = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped except
    hyphens and underscores, spaces to hyphens."""
    text = LINK_TEXT.sub(r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link and image of a page."""
    return [
        (number, target)
        for number, line in prose_lines(page.read_text())
        for target in TARGET.findall(INLINE_CODE.sub("", line))
        if target and not target.lower().startswith(EXTERNAL)
    ]


def broken_links(pages: list[Path]) -> list[str]:
    """'page:line: target (why)' for every link that names no file or no heading."""
    problems = []
    for page in pages:
        name = page.relative_to(PROJECT_ROOT) if page.is_relative_to(PROJECT_ROOT) else page.name
        for number, target in links(page):
            path, _, anchor = unquote(target).partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                problems.append(f"{name}:{number}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                problems.append(f"{name}:{number}: {target} (no such heading)")
    return problems


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) > 3  # the README, BENCHMARKS and the docs pages were found
    assert broken_links(PAGES) == []


def test_a_missing_file_or_heading_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The ETL: Kafka to S3 (03)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#the-etl-kafka-to-s3-03) and [here](#page), ![img](other.md)\n"
        "[gone](missing.md) and [wrong](other.md#no-such-part)\n"
        "`[in code](ignored.md)` and [web](https://example.com/x.md)\n"
        "```\n[fenced](ignored.md)\n```\n"
    )
    assert broken_links([page]) == [
        "page.md:4: missing.md (no such file)",
        "page.md:4: other.md#no-such-part (no such heading)",
    ]


def test_slugs_follow_githubs_rules(tmp_path):
    assert slug("Watching it live: `notebooks/watch_live.ipynb`") == (
        "watching-it-live-notebookswatch_liveipynb"
    )
    assert slug("Does the model dispatch better? (07)") == "does-the-model-dispatch-better-07"
    page = tmp_path / "twice.md"
    page.write_text("## Notes\n\n## Notes\n\n```\n# not a heading\n```\n")
    assert anchors(page) == {"notes", "notes-1"}


def test_the_docs_index_lists_every_page():
    listed = {target.partition("#")[0] for _, target in links(DOCS / "README.md")}
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages - listed == set()
