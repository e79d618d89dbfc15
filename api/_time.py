"""Times as the API writes them."""

from __future__ import annotations

import datetime


def iso(ms: int | None) -> str | None:
    """RFC 3339 in UTC with milliseconds (`...Z`), from ms since the epoch."""
    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
