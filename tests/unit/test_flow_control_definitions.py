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


def test_every_option_of_the_contract_is_applied_none_refused() -> None:
    define(cancel=tideflow.Cancel(event="t/stop"), timeouts=tideflow.Timeouts(start="1m"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, r"^guarded: concurrency\.limit must be an int in 1\.\.100000, got 0"),
        (
            {"concurrency": [tideflow.Concurrency(limit=1)] * 3},
            r"^guarded: concurrency takes 1 to 2 constraints, got 3",
        ),
        (
            {"concurrency": tideflow.Concurrency(limit=1, scope="planet")},  # type: ignore[arg-type]
            r"^guarded: concurrency\.scope must be one of",
        ),
        ({"concurrency": "2"}, r"^guarded: concurrency must be a tideflow\.Concurrency"),
        (
            {"concurrency": tideflow.Concurrency(limit=1, key="event.data.user ==")},
            r"guarded: concurrency\.key: ",
        ),
        ({"priority": tideflow.Priority(run="event.data.(")}, r"guarded: priority\.run: "),
        ({"priority": "event.data.p"}, r"^guarded: priority must be a tideflow\.Priority"),
        ({"timeouts": tideflow.Timeouts()}, r"^guarded: timeouts needs start, finish or both"),
        (
            {"timeouts": tideflow.Timeouts(start="500ms")},
            r"^guarded: timeouts\.start must be between 1s and 365d, got '500ms'",
        ),
        (
            {"timeouts": tideflow.Timeouts(finish="nope")},
            r"guarded: timeouts\.finish: 'nope' is not a duration",
        ),
        (
            {"throttle": tideflow.Throttle(limit=1, period="500ms")},
            r"^guarded: throttle\.period must be between 1s and 7d, got '500ms'",
        ),
        (
            {"throttle": tideflow.Throttle(limit=1, period="8d")},
            r"^guarded: throttle\.period must be between 1s and 7d",
        ),
        (
            {"throttle": tideflow.Throttle(limit=0, period="1s")},
            r"^guarded: throttle\.limit must be an int",
        ),
        (
            {"throttle": tideflow.Throttle(limit=1, period="1s", burst=0)},
            r"^guarded: throttle\.burst must be an int",
        ),
        (
            {"throttle": tideflow.Throttle(limit=1, period="1s", key="event.data.(")},
            r"guarded: throttle\.key: ",
        ),
    ],
)
def test_a_bad_option_is_refused_naming_the_function_and_the_option(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        define(**options)
