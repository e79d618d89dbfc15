from __future__ import annotations

import datetime
from typing import Any, TypeAlias

JSON: TypeAlias = Any
Duration: TypeAlias = "datetime.timedelta | int | str"


def is_name(value: object) -> bool:
    """Whether a user-given identifier is a non-empty string (checked at run time: user code
    is not always type-checked)."""
    return isinstance(value, str) and bool(value.strip())
