"""Indexing of match expressions (`wait_for_event`'s and `Cancel`'s `if_exp`).

An expression that is (or is a conjunction containing) an equality between a path of `event`
(the waiting run's trigger) and a path of `async` (the incoming event), e.g.
`event.data.user_id == async.data.user_id`, is found by the value of its `event` side, known
when the wait is created: the store indexes the wait by (event name, async path, that value's
key), and an incoming event is looked up by the key of the value at the same path of its own.
The full expression is still evaluated on the candidates found, so the index only has to never
miss a match: two values CEL finds equal have the same key (CEL's `==` is typed: 1 == 1.0 and
"1" == 1 do not match, so each key carries its type).

Expressions are parsed with cel-python's own parser, never by pattern-matching their text.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any

import celpy
import lark

_ENV = celpy.Environment()
_MISSING = object()
# Nodes that only wrap their single child when no operator is applied at their level.
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary"}
)

Path = tuple[str, ...]
Tree = lark.Tree[Any]


@dataclasses.dataclass(frozen=True)
class Index:
    """The equality an expression is indexed by: `event.<event_path> == async.<async_path>`."""

    event_path: Path
    async_path: Path


@functools.lru_cache(maxsize=4096)
def index_of(text: str | None) -> Index | None:
    """The equality to index `text` by, or None (no expression, no such equality, or not
    parseable): such waits are evaluated one by one over their event name's waits."""
    if not text:
        return None
    try:
        tree = _ENV.compile(text)
    except Exception:  # noqa: BLE001 - the expression's own compile reports it; here: no index
        return None
    for relation in _conjuncts(tree):
        found = _equality(relation)
        if found is not None:
            return found
    return None


def _conjuncts(tree: Any) -> list[Tree]:
    """The terms ANDed at the top of the expression (a ternary or an `||` has none)."""
    node = tree
    for wrapper in ("expr", "conditionalor"):
        if not isinstance(node, lark.Tree) or node.data != wrapper or len(node.children) != 1:
            return []
        node = node.children[0]
    terms: list[Tree] = []
    pending = [node]
    while pending:
        current = pending.pop()
        if not isinstance(current, lark.Tree):
            continue
        if current.data == "conditionaland":
            pending.extend(reversed(current.children))
        else:
            terms.append(current)
    return terms


def _equality(term: Tree) -> Index | None:
    # cel-python parses `a == b` as relation(relation_eq(a), b).
    if term.data != "relation" or len(term.children) != 2:
        return None
    eq, right = term.children
    if not isinstance(eq, lark.Tree) or eq.data != "relation_eq" or len(eq.children) != 1:
        return None
    sides = [_rooted_path(eq.children[0]), _rooted_path(right)]
    roots = {side[0]: side[1] for side in sides if side is not None}
    if len(roots) == 2 and set(roots) == {"event", "async"}:
        return Index(event_path=roots["event"], async_path=roots["async"])
    return None


def _rooted_path(node: Any) -> tuple[str, Path] | None:
    """(root variable, path) for `root.a.b["c"]`, or None for anything else."""
    while isinstance(node, lark.Tree) and node.data in _WRAPPERS and len(node.children) == 1:
        node = node.children[0]
    segments: list[str] = []
    while isinstance(node, lark.Tree):
        if node.data == "member" and len(node.children) == 1:
            node = node.children[0]
        elif node.data == "member_dot" and len(node.children) == 2:
            segments.append(str(node.children[1]))
            node = node.children[0]
        elif node.data == "member_index" and len(node.children) == 2:
            key = _string_literal(node.children[1])
            if key is None:
                return None
            segments.append(key)
            node = node.children[0]
        elif node.data == "primary" and len(node.children) == 1:
            ident = node.children[0]
            if isinstance(ident, lark.Tree) and ident.data == "ident" and segments:
                return str(ident.children[0]), tuple(reversed(segments))
            return None
        else:
            return None
    return None


def _string_literal(node: Any) -> str | None:
    """The value of a plain quoted string literal (no escapes, no raw or bytes prefix)."""
    while isinstance(node, lark.Tree) and node.data in _WRAPPERS | {"member", "primary"}:
        if len(node.children) != 1:
            return None
        node = node.children[0]
    if not (isinstance(node, lark.Tree) and node.data == "literal" and len(node.children) == 1):
        return None
    text = str(node.children[0])
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and "\\" not in text:
        inner = text[1:-1]
        if text[0] not in inner:
            return inner
    return None


def value_at(payload: Any, path: Sequence[str]) -> Any:
    """The value at `path` in an event payload, or a marker that no key can equal."""
    value = payload
    for segment in path:
        if not isinstance(value, dict) or segment not in value:
            return _MISSING
        value = value[segment]
    return value


def key_of(value: Any) -> str | None:
    """The index key of a JSON value: the same key for any two scalars CEL finds equal (and,
    but for bools and ints, only for those); None for values not indexed (null, lists, maps,
    a missing path)."""
    if isinstance(value, bool):
        # cel-python finds `true == 1` (not `1 == true`): keyed as the int, never missed.
        return json.dumps(["i", int(value)])
    if isinstance(value, int):
        return json.dumps(["i", value])
    if isinstance(value, float):
        # -0.0 == 0.0 in CEL; + 0.0 turns the first into the second.
        return json.dumps(["d", value + 0.0])
    if isinstance(value, str):
        return json.dumps(["s", value], ensure_ascii=False)
    return None


def path_text(path: Path) -> str:
    """How a path is stored (one text column, compared for equality)."""
    return json.dumps(list(path), ensure_ascii=False)


def path_of(text: str) -> Path:
    return tuple(json.loads(text))


def wait_index(if_exp: str | None, run_event: Any) -> tuple[str, str] | None:
    """(path text, key) to store a wait or listener under, or None: evaluated as a fallback
    (no indexable equality, or its `event` side has no indexable value)."""
    index = index_of(if_exp)
    if index is None:
        return None
    key = key_of(value_at(run_event, index.event_path))
    return None if key is None else (path_text(index.async_path), key)


def event_key(payload: Any, path: str) -> str | None:
    """The key under which waits indexed by `path` (as stored) match this incoming event."""
    return key_of(value_at(payload, path_of(path)))
