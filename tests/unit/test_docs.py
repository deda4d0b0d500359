"""The documentation holds together: every relative Markdown link of the
README, of ``docs/`` and of the recipe README reaches an existing file and,
where it names an ``#anchor``, an existing heading of that file (GitHub's
anchor rules); the README stays short enough to read on a page."""

import functools
import pathlib
import re

import pytest

# the repository root, wherever in tests/ this file lives
REPO = next(
    p
    for p in pathlib.Path(__file__).resolve().parents
    if (p / "pyproject.toml").is_file()
)
README = REPO / "README.md"
MAX_README_LINES = 260
DOC_PAGES = sorted((REPO / "docs").glob("*.md"))
DOCS = [README, *DOC_PAGES, REPO / "recipes/VoxCeleb/SpeakerRec/README.md"]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# a scheme: http:, https:, mailto:, ...
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text):
    """The lines of a Markdown text outside fenced code blocks, with their
    numbers (1-based)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def github_anchor(heading):
    """The anchor GitHub gives a heading: its text (code spans and link
    targets reduced to their text), lowercase, punctuation other than ``-``
    and ``_`` dropped, each space a ``-``.

    >>> github_anchor("Export for `EncoderClassifier` / `SpeakerRecognition`")
    'export-for-encoderclassifier--speakerrecognition'
    >>> github_anchor("W2V-BERT 2.0 (Conformer)")
    'w2v-bert-20-conformer'
    >>> github_anchor(
    ...     "VoxCeleb → CN-Celeb adapter transfer (`fromVox_Adapter`)"
    ... )
    'voxceleb--cn-celeb-adapter-transfer-fromvox_adapter'
    """
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = LINK.sub(lambda m: m.group(1), text)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(path):
    """Every anchor of a Markdown file's headings, duplicates numbered as
    GitHub numbers them (``name``, ``name-1``, ...)."""
    seen, found = {}, set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(2))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(path):
    """``file:line: target (why)`` for each relative link of ``path`` that
    does not reach an existing file or heading."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(CODE_SPAN.sub("code", line)):
            target = match.group(2)
            if EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (
                (path.parent / file_part).resolve() if file_part else path
            )
            where = f"{path.relative_to(REPO)}:{number}: {target}"
            if not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif (
                anchor
                and resolved.suffix == ".md"
                and anchor not in anchors(resolved)
            ):
                problems.append(
                    f"{where} (no heading with anchor #{anchor} in {resolved.name})"
                )
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_a_file_and_heading(path):
    assert broken_links(path) == []


def test_docs_folder_is_linked_from_the_readme():
    """Every page of docs/ is reachable from the README."""
    linked = {
        (REPO / m.group(2).partition("#")[0]).resolve()
        for _, line in prose_lines(README.read_text(encoding="utf-8"))
        for m in LINK.finditer(line)
        if not EXTERNAL.match(m.group(2))
    }
    assert DOC_PAGES
    assert [p.name for p in DOC_PAGES if p.resolve() not in linked] == []


def test_readme_fits_on_a_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines: move sections to docs/"
    )


def test_broken_links_are_found(tmp_path, monkeypatch):
    """The checker itself: a missing file, a missing heading and a link
    inside code are told apart."""
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    (tmp_path / "other.md").write_text(
        "# Some Title: here\n```\n# not a heading\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[ok](other.md#some-title-here) [self](#top) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad](other.md#not-a-heading) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md:3: missing.md (no such file)",
        "page.md:3: other.md#not-a-heading (no heading with anchor #not-a-heading in other.md)",
    ]
