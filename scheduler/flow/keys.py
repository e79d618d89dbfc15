from __future__ import annotations

import json
import logging
from typing import Any

from tideflow._core.expressions import Expression, compile_expression

logger = logging.getLogger(__name__)


def compile_key(text: str | None) -> Expression | None:
    return None if text is None else compile_expression(text)


def key_value(expression: Expression | None, event: dict[str, Any]) -> str:
    """The value of a key expression over `event`, as text; "" without one. A key that does not
    evaluate (a missing field) is its own value, "<error>", so those events share one key
    rather than failing."""
    if expression is None:
        return ""
    try:
        value = expression.evaluate({"event": event})
    except Exception as exc:  # noqa: BLE001 - a key must never block its event
        logger.warning("key %r did not evaluate: %s", expression.text, exc)
        return "<error>"
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def _plain(value: Any) -> Any:
    # CEL values subclass Python's (celpy.celtypes.IntType is an int...), bools included.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None:
        return None
    return str(value)
