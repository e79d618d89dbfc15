from __future__ import annotations

import functools
import logging
from typing import Any

import celpy
from tideflow import errors
from tideflow._types import is_name

logger = logging.getLogger(__name__)
_ENV = celpy.Environment()


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
