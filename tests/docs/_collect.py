"""Finds the fenced Python blocks of the docs' Markdown pages.

A block opened with ```` ```python ```` (or ```` ```py ````) is run; one opened with
```` ```{ .python .no-run } ```` is shown but not run (it needs a real cluster or a secret), and
is compiled with its imports executed instead; one opened with ```` ```{ .python .compile-only } ````
is another library's code shown for comparison (Celery's, in the migration guide), which is only
compiled. Any other spelling of a Python fence fails the collection, so a block cannot drop out
of the tests by a typo.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import textwrap
from typing import Literal

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
OPTIONAL_MODULES = ["tideflow.ai"]
"""Public modules another branch adds: documented and checked once they exist."""
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_RUN = {"python", "py"}
_NO_RUN = re.compile(r"^\{\s*\.(python|py)\s+\.no-run\s*\}$")
_COMPILE_ONLY = re.compile(r"^\{\s*\.(python|py)\s+\.compile-only\s*\}$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its code, and how it is tested."""

    path: pathlib.Path
    line: int
    code: str
    mode: Literal["run", "imports", "compile"]

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
            blocks.append(Block(path, start, code, "run"))
        elif _NO_RUN.match(info):
            blocks.append(Block(path, start, code, "imports"))
        elif _COMPILE_ONLY.match(info):
            blocks.append(Block(path, start, code, "compile"))
        elif "python" in info or language == "py" or ".py " in info:
            raise ValueError(f"{path}:{start}: unknown Python fence {info!r}")
    return blocks


def pages() -> list[pathlib.Path]:
    """Every Markdown page of the site."""
    return sorted(DOCS.rglob("*.md"))
