from __future__ import annotations

import datetime

import pytest
import tideflow
from tideflow import errors
from tideflow._core.durations import to_ms


def handler(ctx: tideflow.Context) -> None:
    return None


@pytest.fixture
def client() -> tideflow.Client:
    return tideflow.Client(app_id="defs")


def test_a_bad_trigger_expression_is_refused_with_its_text_and_the_parse_error(
    client: tideflow.Client,
) -> None:
    with pytest.raises(
        errors.ExpressionError, match=r"invalid expression 'event.data.total >': "
    ) as raised:
        tideflow.TriggerEvent(event="t/x", expression="event.data.total >")
    assert raised.value.expression == "event.data.total >"
    assert raised.value.reason


def test_a_bad_wait_expression_fails_the_step_call() -> None:
    from tideflow._steps import wait_for_event_ask

    with pytest.raises(errors.ExpressionError, match=r"async\.data\.id =="):
        wait_for_event_ask(event="t/x", timeout="1s", if_exp="async.data.id ==")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fn_id": "", "trigger": tideflow.TriggerEvent(event="t/x")}, "fn_id"),
        ({"fn_id": "has space", "trigger": tideflow.TriggerEvent(event="t/x")}, "fn_id"),
        ({"fn_id": "f", "trigger": []}, "at least one trigger"),
        (
            {"fn_id": "f", "trigger": [tideflow.TriggerEvent(event=f"t/{n}") for n in range(11)]},
            "the limit is 10",
        ),
        ({"fn_id": "f", "trigger": "t/x"}, "a trigger must be TriggerEvent or TriggerCron"),
        (
            {"fn_id": "f", "trigger": tideflow.TriggerEvent(event="t/x"), "retries": 21},
            r"retries must be an int in 0\.\.20",
        ),
        ({"fn_id": "f", "trigger": tideflow.TriggerEvent(event="t/x"), "retries": -1}, "retries"),
        (
            {"fn_id": "f", "trigger": tideflow.TriggerEvent(event="t/x"), "on_failure": 3},
            "on_failure must be callable",
        ),
    ],
)
def test_invalid_function_definitions_are_refused_when_created(
    client: tideflow.Client, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        client.create_function(**kwargs)(handler)  # type: ignore[arg-type]


def test_a_function_id_is_app_qualified_and_unique(client: tideflow.Client) -> None:
    function = client.create_function(fn_id="f", trigger=tideflow.TriggerEvent(event="t/x"))(
        handler
    )
    assert function.id == "defs-f"
    with pytest.raises(errors.ConfigError, match="defined twice"):
        client.create_function(fn_id="f", trigger=tideflow.TriggerEvent(event="t/y"))(handler)


@pytest.mark.parametrize(
    "cron", ["* * * *", "61 * * * *", "TZ=Mars/Olympus 0 9 * * *", "every day"]
)
def test_invalid_cron_triggers_are_refused(cron: str) -> None:
    with pytest.raises(errors.ConfigError, match=r"TriggerCron\.cron"):
        tideflow.TriggerCron(cron=cron)


def test_cron_triggers_accept_five_fields_and_a_time_zone() -> None:
    assert tideflow.TriggerCron(cron="TZ=Europe/Paris 0 9 * * 1-5").cron.startswith("TZ=")


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (datetime.timedelta(seconds=1.5), 1500),
        (250, 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1h30m", 5_400_000),
        ("100ms", 100),
    ],
)
def test_durations_are_timedeltas_milliseconds_or_strings(
    value: datetime.timedelta | int | str, ms: int
) -> None:
    assert to_ms(value) == ms


@pytest.mark.parametrize("value", ["", "5 minutes", "-1s", "1y", -5, True])
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(errors.ConfigError, match="duration"):
        to_ms(value)  # type: ignore[arg-type]


def test_settings_are_read_from_a_mapping_and_checked() -> None:
    settings = tideflow.Settings.from_env(
        {
            "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "50",
            "TIDEFLOW_LEASE_S": "2.5",
            "TIDEFLOW_ENV": "staging",
        }
    )
    assert (settings.retry_backoff_base_ms, settings.lease_s, settings.env) == (50, 2.5, "staging")
    assert settings.database_url == "sqlite:///.tideflow/dev.db"
    assert settings.broker_url == "memory://"
    assert tideflow.Settings.from_env({}).retry_backoff_base_ms == 15_000
    with pytest.raises(errors.ConfigError, match="TIDEFLOW_LEASE_S"):
        tideflow.Settings.from_env({"TIDEFLOW_LEASE_S": "soon"})
    with pytest.raises(errors.ConfigError, match="TIDEFLOW_LOG_LEVEL"):
        tideflow.Settings.from_env({"TIDEFLOW_LOG_LEVEL": "LOUD"})


def test_step_ids_hash_with_occurrence_counters() -> None:
    import hashlib

    from tideflow._core.ids import step_hash

    assert step_hash("load", 0) == hashlib.sha1(b"load").hexdigest()
    assert step_hash("load", 2) == hashlib.sha1(b"load:2").hexdigest()


def test_checkpointing_options_are_checked() -> None:
    tideflow.Checkpointing(max_runtime="5s", buffered_steps=3, max_interval="200ms")
    with pytest.raises(errors.ConfigError, match="buffered_steps: must be at least 1"):
        tideflow.Checkpointing(buffered_steps=0)
    with pytest.raises(errors.ConfigError, match="max_runtime: must be positive"):
        tideflow.Checkpointing(max_runtime=0)
    with pytest.raises(errors.ConfigError, match="is not a duration"):
        tideflow.Checkpointing(max_interval="soon")
    client = tideflow.Client(app_id="t")
    with pytest.raises(errors.ConfigError, match="checkpointing must be"):
        client.create_function(
            fn_id="f",
            trigger=tideflow.TriggerEvent(event="t/x"),
            checkpointing="yes",  # type: ignore[arg-type]
        )(lambda ctx: None)
