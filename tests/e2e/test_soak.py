"""The soak (bench/soak.py) for 3 minutes: a mixed load on a real cluster, after which every run
has ended as its script expects, memory and file descriptors stayed flat after warm-up, and
queues and pending work are back to zero."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MINUTES = 3


@pytest.mark.slow
@pytest.mark.timeout(MINUTES * 60 + 360)
def test_a_three_minute_mixed_load_leaks_nothing_and_loses_nothing(
    postgres_url: str, rabbitmq_url: str, tmp_path: pathlib.Path, figures: list[str]
) -> None:
    result_path = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--minutes",
            str(MINUTES),
            "--database-url",
            postgres_url,
            "--broker-url",
            rabbitmq_url,
            "--json",
            str(result_path),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=MINUTES * 60 + 300,
        check=False,
    )
    assert result_path.exists(), f"the soak wrote no result:\n{done.stdout}\n{done.stderr}"
    result = json.loads(result_path.read_text())
    figures.append(
        f"soak {MINUTES} min: {result['events_sent']} events, {result['runs']} runs "
        f"{result['cases_by_kind']}; runs lost {result['runs_lost']}; duplicates "
        f"{result['duplicates']}; calls retried while a server was away "
        f"{result['transient_retries']}; RSS KiB / fds first and last after warm-up "
        + "; ".join(f"{name} {p['rss_kib']} {p['fds']}" for name, p in result["processes"].items())
    )
    failed = [check for check, ok in result["checks"].items() if not ok]
    assert not failed, f"{failed}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["runs_lost"] == 0
    assert result["duplicates"] == 0
    assert sum(result["cases_by_kind"].values()) >= MINUTES * 60
