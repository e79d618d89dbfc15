"""Finds the fenced Python blocks of the docs' Markdown pages.

A block opened with ```` ```python ```` (or ```` ```py ````) is run; one opened with
```` ```{ .python .no-run } ```` is shown but not run (it needs a real cluster or a secret), and
is compiled with its imports executed instead. Any other spelling of a Python fence fails the
collection, so a block cannot drop out of the tests by a typo.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import textwrap

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_RUN = {"python", "py"}
_NO_RUN = re.compile(r"^\{\s*\.(python|py)\s+\.no-run\s*\}$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its code, and whether it runs."""

    path: pathlib.Path
    line: int
    code: str
    runs: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(DOCS)}:{self.line}"


def python_blocks(path: pathlib.Path) -> list[Block]:
    """The Python blocks of one page, in order; raises ValueError on an unknown Python fence."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opened = _FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        indent, fence, info = opened["indent"], opened["fence"], opened["info"].strip()
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index])
            index += 1
        start = index - len(body)
        index += 1
        language = info.split()[0] if info else ""
        code = textwrap.dedent("\n".join(line.removeprefix(indent) for line in body)) + "\n"
        if language in _RUN and language == info:
            blocks.append(Block(path, start, code, runs=True))
        elif _NO_RUN.match(info):
            blocks.append(Block(path, start, code, runs=False))
        elif "python" in info or language == "py" or ".py " in info:
            raise ValueError(f"{path}:{start}: unknown Python fence {info!r}")
    return blocks


def pages() -> list[pathlib.Path]:
    """Every Markdown page of the site."""
    return sorted(DOCS.rglob("*.md"))
