"""Running `tideflow` commands as real processes."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")
FAILED = pytest.StashKey[bool]()
"""Set on a test item whose call failed (see conftest.py)."""
TIDEFLOW = str(pathlib.Path(sys.executable).with_name("tideflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(
    check: Callable[[], T | None],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    what: str = "",
) -> T:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what or check}; last error: {last_error}")


class Process:
    """A `tideflow` subcommand running in `cwd`, its output in a log file (in `log_dir`, by
    default `cwd`)."""

    def __init__(
        self,
        args: list[str],
        *,
        cwd: pathlib.Path,
        env: dict[str, str],
        name: str,
        log_dir: pathlib.Path | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.log_path = (log_dir or cwd) / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [*prefix, TIDEFLOW, *args],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running(
    args: list[str],
    *,
    cwd: pathlib.Path,
    env: dict[str, str],
    name: str,
    log_dir: pathlib.Path | None = None,
) -> Iterator[Process]:
    process = Process(args, cwd=cwd, env=env, name=name, log_dir=log_dir)
    try:
        yield process
    finally:
        process.stop()


class Api:
    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def healthy(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def send(self, *events: dict[str, Any]) -> list[str]:
        answer = self.http.post("/e/test", json=list(events))
        answer.raise_for_status()
        ids: list[str] = answer.json()["ids"]
        return ids

    def runs(self, event_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get(f"/v1/events/{event_id}/runs").json()["data"]
        return data

    def run(self, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(f"/v1/runs/{run_id}").json()["data"]
        return data

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get(f"/v1/runs/{run_id}/steps").json()["data"]
        return data
