from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
# Processes are started as the e2e tests start them (tests/e2e/helpers.py).
sys.path.insert(0, str(HERE.parent / "e2e"))
