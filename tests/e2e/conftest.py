from __future__ import annotations

import pathlib
import sys
from collections.abc import Generator

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import FAILED


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets fixtures see whether their test failed, to print the processes' logs then.
    report = yield
    item.stash.setdefault(FAILED, False)
    if report.failed:
        item.stash[FAILED] = True
    return report
