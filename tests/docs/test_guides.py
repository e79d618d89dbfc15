"""Every fenced Python block of the docs runs, so a renamed parameter breaks the build.

The blocks of a page run in order in one namespace, as in a notebook: a later block may use
what an earlier one defined, and `await` works at the top level (as in `python -m asyncio`).
After the last block, every `test_*` function the page defined is called too. A block marked
`.no-run` is compiled and its imports are executed.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import sys
import types
from typing import Any

import pytest
from _collect import DOCS, Block, pages, python_blocks

PAGES = [page for page in pages() if python_blocks(page)]


def test_the_guides_have_python_to_run() -> None:
    ran = {page.relative_to(DOCS).parts[0] for page in PAGES}
    assert {"guides", "migrating"} <= ran


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
async def test_every_python_block_of_the_page_runs(page: pathlib.Path) -> None:
    # A module of its own, importable by name, as dataclasses and pydantic expect of a class's
    # module.
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module
    try:
        for block in python_blocks(page):
            if block.mode == "run":
                await _run(block, vars(module))
            elif block.mode == "imports":
                await _run(_imports_of(block), vars(module))
            else:
                _compile(block)
        for name, value in list(vars(module).items()):
            if name.startswith("test_") and isinstance(value, types.FunctionType):
                outcome = value()
                if inspect.isawaitable(outcome):
                    await outcome
    finally:
        del sys.modules[module.__name__]


def _imports_of(block: Block) -> Block:
    tree = ast.parse(block.code, filename=block.where)
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    code = "\n".join(ast.unparse(node) for node in imports) + "\n"
    return Block(block.path, block.line, code, "run")


def _compile(block: Block) -> types.CodeType:
    # Line numbers of a traceback point into the page.
    source = "\n" * (block.line - 1) + block.code
    # dont_inherit: the page's code does not get this module's `from __future__` imports.
    code: types.CodeType = compile(
        source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    return code


async def _run(block: Block, namespace: dict[str, Any]) -> None:
    code = _compile(block)
    outcome = eval(code, namespace)  # the docs' own code, run as a test
    if inspect.isawaitable(outcome):
        await outcome


def test_a_misspelt_python_fence_fails_the_collection(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python title='x.py'\nx = 1\n```\n")
    with pytest.raises(ValueError, match="unknown Python fence"):
        python_blocks(page)


def test_blocks_are_found_inside_tabs_with_their_mode(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '=== "a"\n\n    ```python\n    x = 1\n    ```\n\n'
        "```{ .python .no-run }\nimport os\n```\n\n```{ .python .compile-only }\ny = 2\n```\n"
        "```sh\nls\n```\n"
    )
    assert [(block.code, block.mode) for block in python_blocks(page)] == [
        ("x = 1\n", "run"),
        ("import os\n", "imports"),
        ("y = 2\n", "compile"),
    ]
