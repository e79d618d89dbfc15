from __future__ import annotations

import datetime
from typing import Any, TypeAlias

JSON: TypeAlias = Any
Duration: TypeAlias = "datetime.timedelta | int | str"
