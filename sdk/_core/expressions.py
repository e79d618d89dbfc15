from __future__ import annotations

import functools
import logging
from typing import Any

import celpy
from tideflow import errors
from tideflow._types import is_name

logger = logging.getLogger(__name__)
_ENV = celpy.Environment()

MAX_MATCH_CHARS = 1_000
MAX_MATCH_DEPTH = 8
EXPENSIVE_CALLS = frozenset({"all", "exists", "exists_one", "map", "filter", "matches"})
"""Calls a matching expression may not make: comprehension macros loop over lists of any
length (nested, their cost multiplies), and `matches` runs a backtracking regular expression."""


class Expression:
    """A compiled CEL expression; evaluation errors count as "no match"."""

    def __init__(self, text: str) -> None:
        if not is_name(text):
            raise errors.ExpressionError(str(text), "an expression must be a non-empty string")
        try:
            ast = _ENV.compile(text)
            self._program = _ENV.program(ast)
        except Exception as exc:
            raise errors.ExpressionError(text, str(exc).strip()) from exc
        self.text = text

    def evaluate(self, variables: dict[str, Any]) -> Any:
        activation = {name: celpy.json_to_cel(value) for name, value in variables.items()}  # type: ignore[attr-defined]
        result = self._program.evaluate(activation)
        if isinstance(result, Exception):
            raise result
        return result

    def matches(self, variables: dict[str, Any]) -> bool:
        try:
            return bool(self.evaluate(variables))
        except Exception as exc:  # noqa: BLE001 - a failing filter must not block its event
            logger.debug("expression %r did not evaluate: %s", self.text, exc)
            return False


@functools.lru_cache(maxsize=4096)
def compile_expression(text: str) -> Expression:
    """Compiles once per distinct text; raises `ExpressionError` with the parse error."""
    return Expression(text)


def check_match_cost(text: str) -> None:
    """Refuses a matching expression (a wait's or a cancel's `if_exp`) that may be expensive to
    evaluate. Such an expression runs for each incoming event of its name against each run
    waiting on it, so its cost must be bounded by its text alone: at most 1,000 characters,
    at most 8 levels of nested sub-expressions (parentheses, lists, maps, call arguments), and
    none of the calls in `EXPENSIVE_CALLS`.

    Raises:
        ExpressionError: naming the rule broken.
    """
    if len(text) > MAX_MATCH_CHARS:
        raise errors.ExpressionError(
            text[:80] + "...",
            f"a matching expression is {len(text)} characters; the limit is {MAX_MATCH_CHARS}",
        )
    tree = _ENV.compile(text)
    depth = _depth(tree)
    if depth > MAX_MATCH_DEPTH:
        raise errors.ExpressionError(
            text,
            f"a matching expression nests {depth} levels deep; the limit is {MAX_MATCH_DEPTH}",
        )
    calls = sorted(_calls(tree) & EXPENSIVE_CALLS)
    if calls:
        raise errors.ExpressionError(
            text,
            f"a matching expression may not call {', '.join(calls)} (comprehensions loop over "
            "data of any size and `matches` runs a backtracking regular expression, for every "
            "event matched against every waiting run)",
        )


def _depth(tree: Any) -> int:
    """Nested sub-expressions: `expr` nodes inside one another (the root counts as 1)."""
    deepest = 0
    stack = [(tree, 0)]
    while stack:
        node, level = stack.pop()
        if not hasattr(node, "children"):
            continue
        level += node.data == "expr"
        deepest = max(deepest, level)
        stack.extend((child, level) for child in node.children)
    return deepest


def _calls(tree: Any) -> set[str]:
    """The names of the functions and methods an expression calls."""
    names: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data in ("member_dot_arg", "ident_arg"):
            names.update(
                str(child) for child in node.children if getattr(child, "type", "") == "IDENT"
            )
    return names
