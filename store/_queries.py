"""Loads a backend's named queries from `sql/<backend>.sql` (blocks headed `-- name: x`)."""

from __future__ import annotations

import functools
import importlib.resources
import re

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@functools.cache
def load_queries(backend: str) -> dict[str, str]:
    text = importlib.resources.files("tideflow.store").joinpath(f"sql/{backend}.sql").read_text()
    parts = _HEADER.split(text)
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    return queries
