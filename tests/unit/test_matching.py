"""Indexing of match expressions: which expressions are found by an index lookup (an equality
between an `event` path and an `async` path), which fall back to evaluation, and keys that
agree with CEL's typed equality."""

from __future__ import annotations

import pytest
from tideflow._core import matching
from tideflow._core.expressions import compile_expression
from tideflow._core.matching import Index


@pytest.mark.parametrize(
    ("text", "index"),
    [
        (
            "event.data.user_id == async.data.user_id",
            Index(("data", "user_id"), ("data", "user_id")),
        ),
        ("async.data.user_id == event.data.id", Index(("data", "id"), ("data", "user_id"))),
        ('async.data["user-id"] == event.data["id"]', Index(("data", "id"), ("data", "user-id"))),
        ("event.id == async.data.ref", Index(("id",), ("data", "ref"))),
        # A conjunction is found by its equality; the rest is evaluated on the candidates.
        (
            "async.data.total > 10 && event.data.order == async.data.order",
            Index(("data", "order"), ("data", "order")),
        ),
        (
            "event.data.a == async.data.a && event.data.b == async.data.b",
            Index(("data", "a"), ("data", "a")),
        ),
    ],
)
def test_an_equality_between_event_and_async_paths_is_indexed(text: str, index: Index) -> None:
    assert matching.index_of(text) == index


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "async.data.level > event.data.level",
        "event.data.a != async.data.a",
        "event.data.a == async.data.a || async.data.force",
        "event.data.a == async.data.a ? true : false",
        "!(event.data.a == async.data.a)",
        "event.data.a == event.data.b",
        "async.data.a == async.data.b",
        "event.data.a == 5",
        "event == async",
        "other.a == async.a",
        "event.data[async.data.key] == async.data.a",
        "event.data.a == async.data.a +",
    ],
)
def test_other_expressions_fall_back_to_evaluation(text: str | None) -> None:
    assert matching.index_of(text) is None


def test_a_wait_is_keyed_by_its_triggers_value_and_an_event_by_its_own() -> None:
    text = "event.data.user == async.data.user"
    path, key = matching.wait_index(text, {"data": {"user": "ann"}}) or ("", "")
    assert matching.event_key({"data": {"user": "ann"}}, path) == key
    assert matching.event_key({"data": {"user": "bob"}}, path) != key
    assert matching.event_key({"data": {}}, path) is None
    assert matching.event_key({"data": "not a map"}, path) is None
    # No value (or one that is not a scalar) at the path: evaluated, not indexed.
    assert matching.wait_index(text, {"data": {}}) is None
    assert matching.wait_index(text, {"data": {"user": {"id": 1}}}) is None
    assert matching.wait_index(text, {"data": {"user": None}}) is None


@pytest.mark.parametrize(
    ("left", "right", "same_key"),
    [
        ("7", 7, False),
        (7, 7.0, False),
        (True, 1, True),
        (False, 0, True),
        (True, 1.0, False),
        ("a", "b", False),
        (1, 2, False),
        (0.0, -0.0, True),
        ("é", "é", True),
        (3, 3, True),
    ],
)
def test_values_cel_finds_equal_have_one_key(left: object, right: object, same_key: bool) -> None:
    for a, b in ((left, right), (right, left)):
        if compile_expression("event.v == async.v").matches({"event": {"v": a}, "async": {"v": b}}):
            assert matching.key_of(a) == matching.key_of(b)
    assert (matching.key_of(left) == matching.key_of(right)) == same_key
