"""What a user sees when a process cannot start: one line saying why, never a traceback, and
never a password."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
from helpers import TIDEFLOW, free_port
from tideflow import Settings, errors
from tideflow.broker import create_broker
from tideflow.store import create_store

ROOT = pathlib.Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-never-shown"
HINT = 'pip install "tideflow[cluster]"'


def tideflow(
    *args: str, env: dict[str, str], cwd: pathlib.Path, program: str = TIDEFLOW
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEFLOW_")}
    return subprocess.run(
        [program, *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def powers_of_two_below(n: int) -> int:
    return sum(1 for k in range(1, n) if k & (k - 1) == 0)


UNREACHABLE = {
    "database": lambda port, tmp: {
        "TIDEFLOW_DATABASE_URL": f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/tideflow"
    },
    "broker": lambda port, tmp: {
        "TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp}/dev.db",
        "TIDEFLOW_BROKER_URL": f"amqp://app:{PASSWORD}@127.0.0.1:{port}/tideflow",
    },
}
MASKED = {
    "database": "postgresql://app:***@127.0.0.1:{port}/tideflow",
    "broker": "amqp://app:***@127.0.0.1:{port}/tideflow",
}
REASON = {"database": "Connection refused", "broker": "Connect call failed"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["migrate", "scheduler"])
@pytest.mark.parametrize("server", ["database", "broker"])
def test_an_unreachable_server_ends_the_process_with_one_line_naming_the_masked_url(
    tmp_path: pathlib.Path, command: str, server: str
) -> None:
    # Given a URL with a password, on a local port where nothing listens
    port = free_port()
    env = {**UNREACHABLE[server](port, tmp_path), "TIDEFLOW_CONNECT_TIMEOUT_S": "2"}

    # When the process starts
    result = tideflow(command, env=env, cwd=tmp_path)

    # Then it gives up after the timeout, with one line naming the masked URL and the attempts
    where = MASKED[server].format(port=port)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    last = result.stderr.strip().splitlines()[-1]
    final = re.fullmatch(
        rf"tideflow: cannot reach the {server} at {re.escape(where)}: (\d+) attempts over "
        r"[\d.]+s \(TIDEFLOW_CONNECT_TIMEOUT_S=2\) failed, the last with: "
        rf".*{REASON[server]}.*",
        last,
    )
    assert final is not None, output
    assert PASSWORD not in output
    assert "Traceback" not in output
    # And it warned of the 1st, 2nd, 4th, ... failed attempt only, each with the masked URL
    attempts = int(final[1])
    warnings = [
        line
        for line in result.stderr.splitlines()
        if " WARNING " in line and f"cannot reach the {server}" in line
    ]
    assert attempts >= 4, output
    assert len(warnings) == powers_of_two_below(attempts) < attempts - 1, output
    assert all(where in line for line in warnings), output
    assert not [line for line in result.stderr.splitlines() if " ERROR " in line], output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TIDEFLOW_DATABASE_URL": "postgresql://app:hunter%2-never-shown@127.0.0.1:5432/db"},
            "tideflow: invalid PostgreSQL URL postgresql://app:***@127.0.0.1:5432/db: "
            'invalid percent-encoded token: "***"',
        ),
        (
            {"TIDEFLOW_BROKER_URL": f"amqp://app:{PASSWORD}@127.0.0.1:notaport/"},
            "tideflow: invalid AMQP URL amqp://app:***@127.0.0.1:notaport/: "
            "Port could not be cast to integer value as 'notaport'",
        ),
    ],
    ids=["postgresql", "amqp"],
)
def test_a_malformed_url_is_refused_at_once_without_its_password(
    tmp_path: pathlib.Path, env: dict[str, str], message: str
) -> None:
    env = {"TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db", **env}

    result = tideflow("migrate", env=env, cwd=tmp_path)

    # Not retried: the one line comes without any warning of a failed attempt before it.
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"{message}\n")


@pytest.fixture(scope="session")
def venv_without_cluster(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A virtualenv with tideflow installed as `pip install tideflow` would: no cluster extra."""
    venv = tmp_path_factory.mktemp("no-cluster") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import psycopg"], capture_output=True, timeout=60
    )
    assert probe.returncode != 0, "the venv must lack the cluster extra"
    return venv / "bin" / "tideflow"


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TIDEFLOW_DATABASE_URL": f"postgresql://app:{PASSWORD}@127.0.0.1:5432/tideflow"},
            "TIDEFLOW_DATABASE_URL: PostgreSQL needs the cluster extra: "
            f"{HINT} (No module named 'psycopg')",
        ),
        (
            {"TIDEFLOW_BROKER_URL": f"amqp://app:{PASSWORD}@127.0.0.1:5672/"},
            f"TIDEFLOW_BROKER_URL: RabbitMQ needs the cluster extra: {HINT} "
            "(No module named 'aio_pika')",
        ),
    ],
    ids=["postgresql", "amqp"],
)
def test_a_cluster_url_without_the_cluster_extra_names_what_to_install(
    venv_without_cluster: pathlib.Path, tmp_path: pathlib.Path, env: dict[str, str], message: str
) -> None:
    env = {"TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db", **env}

    result = tideflow("migrate", env=env, cwd=tmp_path, program=str(venv_without_cluster))

    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"tideflow: {message}\n")
    # Nothing was done before the refusal: not even the SQLite file was created.
    assert not (tmp_path / "dev.db").exists()


def test_create_store_names_the_cluster_extra_when_psycopg_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "tideflow.store._postgres", raising=False)

    with pytest.raises(errors.ConfigError, match=re.escape(HINT)) as caught:
        create_store(f"postgresql://app:{PASSWORD}@db/tideflow")

    assert str(caught.value).startswith("TIDEFLOW_DATABASE_URL: PostgreSQL needs")
    assert isinstance(caught.value.__cause__, ImportError)


def test_create_broker_names_the_cluster_extra_when_aio_pika_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aio_pika", None)
    monkeypatch.delitem(sys.modules, "tideflow.broker._amqp", raising=False)

    with pytest.raises(errors.ConfigError, match=re.escape(HINT)) as caught:
        create_broker(f"amqp://app:{PASSWORD}@rabbit/")

    assert str(caught.value).startswith("TIDEFLOW_BROKER_URL: RabbitMQ needs")
    assert isinstance(caught.value.__cause__, ImportError)


@pytest.mark.parametrize(
    ("factory", "url"),
    [
        (create_store, f"mysql://app:{PASSWORD}@db/tideflow"),
        (create_broker, f"redis://app:{PASSWORD}@cache/0"),
    ],
)
def test_an_unknown_url_is_refused_without_showing_its_password(
    factory: Callable[[str], object], url: str
) -> None:
    with pytest.raises(errors.ConfigError, match=r"app:\*\*\*@") as caught:
        factory(url)

    assert PASSWORD not in str(caught.value)


def test_the_connect_timeout_defaults_to_two_minutes_and_must_be_positive() -> None:
    assert Settings.from_env({}).connect_timeout_s == 120.0
    assert Settings.from_env({"TIDEFLOW_CONNECT_TIMEOUT_S": "7.5"}).connect_timeout_s == 7.5
    with pytest.raises(errors.ConfigError, match="TIDEFLOW_CONNECT_TIMEOUT_S: must be positive"):
        Settings.from_env({"TIDEFLOW_CONNECT_TIMEOUT_S": "0"})
