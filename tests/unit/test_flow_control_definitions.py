"""Flow-control options are checked when the function is defined: each bad one gets an error
naming the function and the option, and an option the engine does not apply yet is refused."""

from __future__ import annotations

from typing import Any

import pytest
import tideflow
from tideflow import errors


def handler(ctx: tideflow.Context) -> None:
    return None


def define(**options: Any) -> tideflow.Function:
    client = tideflow.Client(app_id="flow-defs")
    return client.create_function(
        fn_id="guarded", trigger=tideflow.TriggerEvent(event="t/x"), **options
    )(handler)


NOT_APPLIED_YET = {
    "concurrency": 2,
    "throttle": tideflow.Throttle(limit=1, period="1s"),
    "debounce": tideflow.Debounce(period="1s"),
    "priority": tideflow.Priority(run="1"),
    "batch_events": tideflow.Batch(max_size=2, timeout="1s"),
    "cancel": tideflow.Cancel(event="t/stop"),
    "timeouts": tideflow.Timeouts(start="1m"),
}


@pytest.mark.parametrize("option", sorted(NOT_APPLIED_YET))
def test_an_option_not_applied_yet_is_refused_not_ignored(option: str) -> None:
    with pytest.raises(errors.ConfigError, match=rf"^guarded: {option} is not supported"):
        define(**{option: NOT_APPLIED_YET[option]})
