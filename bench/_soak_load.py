"""The soak's load (bench/soak.py): what each tick sends, the answers and cancels it owes the
runs it started, and the end state each run's script expects."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import psycopg

ENDED = ("Completed", "Failed", "Cancelled")
ANY_OUTPUT = object()
PATIENCE_S = 60.0
T = TypeVar("T")
RETRIES: collections.Counter[str] = collections.Counter()
"""Calls retried after a transient failure (the API's 503 while its database is away, a
dropped connection), by what was called: reported with the figures."""


def patiently(call: Callable[[], T], what: str) -> T:
    """`call()`, retried for up to PATIENCE_S while the servers fail transiently, as a patient
    producer does (the servers are shared: another suite may hold every connection a moment)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return call()
        except (httpx.TransportError, psycopg.OperationalError) as exc:
            failure: Exception = exc
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
            failure = exc
        if time.monotonic() > deadline:
            raise failure
        RETRIES[what] += 1
        time.sleep(0.5)


@dataclasses.dataclass
class Case:
    """One run the load started (a debounced burst: several events, one run) and how its
    script says it ends."""

    kind: str
    n: int
    status: str
    output: Any = ANY_OUTPUT
    action: str | None = None
    """What the driver owes the run once it waits: "reply", "cancel_event" or "cancel_api"."""
    event_ids: list[str] = dataclasses.field(default_factory=list)
    sent_at: float = 0.0


@dataclasses.dataclass
class Verdict:
    events: int
    runs: int
    cases: dict[str, int]
    lost: list[str]
    wrong: list[str]
    duplicates: int


def _events_of_tick(
    numbers: itertools.count[int], rng: random.Random
) -> list[tuple[Case, list[dict[str, Any]]]]:
    def n() -> int:
        return next(numbers)

    made: list[tuple[Case, list[dict[str, Any]]]] = []

    def add(case: Case, name: str, **data: Any) -> None:
        made.append((case, [{"name": name, "data": {"n": case.n, **data}}]))

    for _ in range(2):
        case = Case("steps", n(), "Completed")
        case.output = 6 * case.n
        add(case, "soak/steps")
    case = Case("sleep", n(), "Completed")
    case.output = 2 * case.n
    add(case, "soak/sleep", nap=f"{rng.randint(1, 3)}s")
    add(Case("wait answered", n(), "Completed", True, "reply"), "soak/wait", timeout="2m")
    add(Case("wait timed out", n(), "Completed", False), "soak/wait", timeout="2s")
    add(Case("retry recovers", n(), "Completed", 2), "soak/flaky", fail_always=False)
    add(Case("retry fails", n(), "Failed"), "soak/flaky", fail_always=True)
    add(Case("cancel by event", n(), "Cancelled", action="cancel_event"), "soak/cancellable")
    add(Case("cancel by api", n(), "Cancelled", action="cancel_api"), "soak/cancellable")
    for _ in range(2):
        case = Case("concurrency+throttle", n(), "Completed")
        case.output = 2 * case.n
        add(case, "soak/limited", k=f"k{case.n % 3}")
    burst = [n() for _ in range(3)]
    case = Case("debounce burst", burst[-1], "Completed", 2 * burst[-1])
    made.append(
        (case, [{"name": "soak/debounce", "data": {"n": m, "k": f"b{burst[0]}"}} for m in burst])
    )
    return made


class Load:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.cases: list[Case] = []
        self.owed: list[Case] = []
        self.sent = 0
        self._numbers = itertools.count(1)
        self._rng = random.Random(7)

    def _send(self, events: list[dict[str, Any]]) -> list[str]:
        def post() -> list[str]:
            answer = self.http.post("/e/soak", json=events)
            answer.raise_for_status()
            ids: list[str] = answer.json()["ids"]
            return ids

        ids = patiently(post, "POST /e")
        self.sent += len(events)
        return ids

    def _get(self, path: str) -> Any:
        def get() -> Any:
            answer = self.http.get(path)
            answer.raise_for_status()
            return answer.json()["data"]

        return patiently(get, "GET /v1")

    def until_ready(self, dead: Callable[[], list[str]], timeout_s: float = 90) -> None:
        """Until the API answers and a scheduler knows the functions (a probe run starts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if dead():
                raise SystemExit(f"processes died: {dead()}")
            try:
                if self.http.get("/health").status_code == 200:
                    case = Case("steps", next(self._numbers), "Completed")
                    case.output = 6 * case.n
                    case.event_ids = self._send([{"name": "soak/steps", "data": {"n": case.n}}])
                    self.cases.append(case)
                    time.sleep(1.0)
                    if self.http.get(f"/v1/events/{case.event_ids[0]}/runs").json()["data"]:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit("the cluster did not start a run in time")

    def tick(self) -> None:
        made = _events_of_tick(self._numbers, self._rng)
        ids = self._send([event for _, events in made for event in events])
        now = time.monotonic()
        position = 0
        for case, events in made:
            case.event_ids = ids[position : position + len(events)]
            case.sent_at = now
            position += len(events)
            self.cases.append(case)
            if case.action:
                self.owed.append(case)
        self._pay()

    def _pay(self) -> None:
        """Answers or cancels each run that now waits for it."""
        still = []
        for case in self.owed:
            runs = self._get(f"/v1/events/{case.event_ids[0]}/runs")
            run_id = runs[0]["run_id"] if runs else None
            if run_id is None or not self._waiting(
                run_id, "reply" if case.action == "reply" else "long"
            ):
                still.append(case)
            elif case.action == "reply":
                self._send([{"name": "soak/reply", "data": {"n": case.n}}])
            elif case.action == "cancel_event":
                self._send([{"name": "soak/cancel", "data": {"n": case.n}}])
            else:
                self._cancel(run_id)
        self.owed = still

    def _cancel(self, run_id: str) -> None:
        def delete() -> None:
            answer = self.http.delete(f"/v1/runs/{run_id}")
            # 409: it has ended, cancelled by an earlier try whose answer was lost.
            if answer.status_code != 409:
                answer.raise_for_status()

        patiently(delete, "DELETE /v1/runs")

    def _waiting(self, run_id: str, step: str) -> bool:
        steps = self._get(f"/v1/runs/{run_id}/steps")
        return any(s["name"] == step and s["status"] == "Waiting" for s in steps)

    def drain(self, database_url: str, timeout_s: float) -> Verdict:
        """Pays what is owed and waits for every run to end (or the timeout); then judges."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._pay()
            runs = patiently(lambda: _runs_by_event(database_url), "SELECT runs")
            if not self.owed and all(self._ended(case, runs) for case in self.cases):
                break
            time.sleep(1.0)
        return self._judge(database_url)

    @staticmethod
    def _ended(case: Case, runs: dict[str, list[tuple[str, Any]]]) -> bool:
        found = [run for event_id in case.event_ids for run in runs.get(event_id, [])]
        return bool(found) and all(status in ENDED for status, _ in found)

    def _judge(self, database_url: str) -> Verdict:
        runs = patiently(lambda: _runs_by_event(database_url), "SELECT runs")
        lost: list[str] = []
        wrong: list[str] = []
        duplicates = patiently(lambda: _steps_recorded_twice(database_url), "SELECT steps")
        for case in self.cases:
            found = [run for event_id in case.event_ids for run in runs.get(event_id, [])]
            duplicates += max(0, len(found) - 1)
            if not found or found[0][0] not in ENDED:
                lost.append(f"{case.kind} n={case.n}: {found}")
                continue
            status, output = found[0]
            if status != case.status or (case.output is not ANY_OUTPUT and output != case.output):
                wrong.append(f"{case.kind} n={case.n}: {status} {output!r}")
        return Verdict(
            events=self.sent,
            runs=sum(len(found) for found in runs.values()),
            cases=dict(collections.Counter(case.kind for case in self.cases)),
            lost=lost,
            wrong=wrong,
            duplicates=duplicates,
        )


def _runs_by_event(database_url: str) -> dict[str, list[tuple[str, Any]]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT event_id, status, output FROM runs").fetchall()
    found: dict[str, list[tuple[str, Any]]] = {}
    for event_id, status, output in rows:
        found.setdefault(event_id, []).append(
            (status, None if output is None else json.loads(output))
        )
    return found


def _steps_recorded_twice(database_url: str) -> int:
    # Every step name in soak_app is used once per run.
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT run_id, name FROM steps GROUP BY run_id, name "
            "HAVING count(*) > 1) AS twice"
        ).fetchone()
    return int(row[0]) if row else 0
