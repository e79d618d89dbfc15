from __future__ import annotations

import pathlib
import sys
from collections.abc import Generator, Iterator

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from cluster import Cluster, ClusterOf
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


@pytest.fixture
def cluster_of(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, postgres_url: str, rabbitmq_url: str
) -> Iterator[ClusterOf]:
    """Makes a cluster of real processes for an app (`Cluster`'s keyword arguments) on the
    test's own database and vhost; stops it after the test, printing its logs if it failed."""
    made: list[Cluster] = []

    def make(**options: object) -> Cluster:
        running = Cluster(tmp_path, database_url=postgres_url, broker_url=rabbitmq_url, **options)  # type: ignore[arg-type]
        made.append(running)
        return running

    yield make
    for running in made:
        running.stop()
        if request.node.stash.get(FAILED, False):
            sys.stderr.write(running.logs())
