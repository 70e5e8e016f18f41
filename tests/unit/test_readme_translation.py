"""README.ja.md stays a translation of README.md: the same fenced code blocks (commands, config,
examples) in the same order, and the same sections. When README.md changes, the failure names
the block or section to carry over."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from tests.support import ROOT

FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    info: str  # the language after the fence
    text: str


def parse(path: Path) -> tuple[list[Block], list[tuple[int, int, str]]]:
    """Fenced code blocks, and headings (line, level, title) outside them."""
    blocks: list[Block] = []
    headings: list[tuple[int, int, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            start, marker, body = i, fence.group(1), []
            i += 1
            while i < len(lines) and not lines[i].startswith(marker):
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"{path.name}:{start + 1}: code block never closed"
            blocks.append(Block(start + 1, fence.group(2).strip(), "\n".join(body)))
        else:
            heading = HEADING.match(lines[i])
            if heading:
                headings.append((i + 1, len(heading.group(1)), heading.group(2)))
        i += 1
    return blocks, headings


def describe(block: Block | None, name: str) -> str:
    if block is None:
        return f"{name}: (no such block)"
    first = block.text.splitlines()[0] if block.text else ""
    return f"{name}:{block.line} ```{block.info} starting {first!r}"


def first_block_difference(en_path: Path, ja_path: Path) -> str | None:
    """None when both files have the same code blocks in order; else which one differs, how."""
    en, _ = parse(en_path)
    ja, _ = parse(ja_path)
    for n, (a, b) in enumerate(zip_longest(en, ja)):
        if a is not None and b is not None and (a.info, a.text) == (b.info, b.text):
            continue
        diff = ""
        if a is not None and b is not None:
            lines = difflib.unified_diff(
                b.text.splitlines(), a.text.splitlines(), ja_path.name, en_path.name, lineterm=""
            )
            diff = "\n".join(lines)
        return (
            f"code block #{n + 1} differs ({en_path.name} has {len(en)} blocks, {ja_path.name} "
            f"{len(ja)}); copy {en_path.name}'s block into {ja_path.name}:\n"
            f"  {describe(a, en_path.name)}\n  {describe(b, ja_path.name)}\n{diff}"
        )
    return None


def first_section_difference(en_path: Path, ja_path: Path) -> str | None:
    """None when both files have as many headings, level for level; else the first that differs."""
    _, en = parse(en_path)
    _, ja = parse(ja_path)
    for n, (a, b) in enumerate(zip_longest(en, ja)):
        if a is not None and b is not None and a[1] == b[1]:
            continue
        where_en = f"{en_path.name}:{a[0]} {'#' * a[1]} {a[2]}" if a else f"{en_path.name}: (none)"
        where_ja = f"{ja_path.name}:{b[0]} {'#' * b[1]} {b[2]}" if b else f"{ja_path.name}: (none)"
        return (
            f"section #{n + 1} differs ({en_path.name} has {len(en)} headings, {ja_path.name} "
            f"{len(ja)}); translate {en_path.name}'s section into {ja_path.name}:\n"
            f"  {where_en}\n  {where_ja}"
        )
    return None


def test_code_blocks_are_the_same_in_the_same_order() -> None:
    problem = first_block_difference(ROOT / "README.md", ROOT / "README.ja.md")
    assert problem is None, problem


def test_sections_match_in_number_and_level() -> None:
    problem = first_section_difference(ROOT / "README.md", ROOT / "README.ja.md")
    assert problem is None, problem


def test_each_readme_links_the_other_on_its_first_line() -> None:
    en = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[0]
    ja = (ROOT / "README.ja.md").read_text(encoding="utf-8").splitlines()[0]
    assert "(README.ja.md)" in en
    assert "(README.md)" in ja


def test_a_changed_block_or_a_new_section_is_named(tmp_path: Path) -> None:
    # the checks above must be able to fail, and say where (on copies, so this test does not
    # depend on the translation being in step right now)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    same, changed = tmp_path / "README.ja.md", tmp_path / "README.md"
    same.write_text(text, encoding="utf-8")
    assert first_block_difference(same, same) is None
    assert first_section_difference(same, same) is None
    changed.write_text(text.replace("--port 11500", "--port 11501", 1), encoding="utf-8")
    problem = first_block_difference(changed, same)
    assert problem is not None
    assert "code block #2 differs" in problem
    assert "+.venv/bin/llm-router-fakenode --port 11501" in problem
    changed.write_text(text + "\n## A new section\n\nText.\n", encoding="utf-8")
    problem = first_section_difference(changed, same)
    assert problem is not None and "## A new section" in problem
