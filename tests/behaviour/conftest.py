"""The behaviour suite: the engine seen through its public surface (SDK and HTTP API), run
on every backend pair."""

from __future__ import annotations

import pytest
import tideflow
from tideflow.testing import Engine, EngineFactory


@pytest.fixture(params=["embedded", "postgres", "cluster"])
def backend_environ(request: pytest.FixtureRequest) -> dict[str, str]:
    """`TIDEFLOW_*` settings selecting the backends under test: the embedded default (SQLite
    in memory, in-process broker) and the cluster's (PostgreSQL, RabbitMQ)."""
    if request.param == "embedded":
        return {}
    environ = {"TIDEFLOW_DATABASE_URL": request.getfixturevalue("postgres_url")}
    if request.param == "cluster":
        environ["TIDEFLOW_BROKER_URL"] = request.getfixturevalue("rabbitmq_url")
    return environ


@pytest.fixture
def engine_for(backend_environ: dict[str, str]) -> EngineFactory:
    def make(app: tideflow.Client, **environ: str) -> Engine:
        return Engine(app, environ={**backend_environ, **environ})

    return make


@pytest.fixture
def client() -> tideflow.Client:
    return tideflow.Client(app_id="test")
