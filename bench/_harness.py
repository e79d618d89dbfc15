"""What every system's benchmark needs: child processes that are always stopped, a fresh
PostgreSQL database and RabbitMQ vhost, Prometheus scraping, percentiles."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import amqp
import psycopg

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_BIN = pathlib.Path(sys.executable).parent
LOG_DIR = BENCH_DIR / "results" / "logs"

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672


class BenchError(Exception):
    """A system could not be started or measured; the message says what failed."""


def now_ms() -> float:
    return time.time() * 1000.0


def pg_url(database: str, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{vhost}"


# --- child processes ---------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Proc:
    """A child process in its own process group, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: pathlib.Path,
        log_dir: pathlib.Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole group, SIGKILL after `grace` seconds."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Children that outlived their leader (a pool's processes) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


class Processes:
    """Every process one system started; `stop_all` stops them in reverse order."""

    def __init__(self, log_dir: pathlib.Path, env: dict[str, str], cwd: pathlib.Path) -> None:
        self.log_dir = log_dir
        self.env = env
        self.cwd = cwd
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: Sequence[str], extra_env: dict[str, str] | None = None
    ) -> Proc:
        env = {**self.env, **(extra_env or {})}
        proc = Proc(name, argv, env=env, cwd=self.cwd, log_dir=self.log_dir)
        self.procs.append(proc)
        return proc

    def run(self, name: str, argv: Sequence[str], timeout: float = 60.0) -> None:
        """Runs a command to its end; raises with its output if it fails."""
        proc = self.start(name, argv)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`{' '.join(argv)}` did not finish in {timeout:.0f}s") from exc
        if code != 0:
            raise BenchError(f"`{' '.join(argv)}` exited with {code}:\n{proc.tail()}")

    def check_alive(self) -> None:
        for proc in self.procs:
            code = proc.popen.poll()
            if code is not None and proc.name not in ("migrate",):
                raise BenchError(
                    f"{proc.name} (`{' '.join(proc.argv)}`) exited with {code}:\n{proc.tail()}"
                )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(BENCH_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(what: str, check: Callable[[], bool], timeout: float, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while True:
        procs.check_alive()
        try:
            if check():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.2)


# --- PostgreSQL and RabbitMQ ---------------------------------------------------------------


def recreate_database(name: str) -> None:
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        message = done.stderr.strip().splitlines()[0] if done.stderr.strip() else done.returncode
        raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {message}")


def recreate_vhost(name: str) -> None:
    _rabbitmqctl("await_startup", "--timeout", "60", check=False)
    _rabbitmqctl("delete_vhost", name, check=False)
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name, check=False)


def amqp_consumers(vhost: str, queue: str) -> int:
    """How many consumers a queue has; 0 if it does not exist (yet)."""
    conn = amqp.Connection(
        f"{AMQP_HOST}:{AMQP_PORT}", userid="guest", password="guest", virtual_host=vhost
    )
    conn.connect()
    try:
        channel = conn.channel()
        try:
            declared = channel.queue_declare(queue, passive=True)
        except amqp.exceptions.NotFound:
            return 0
        return int(declared.consumer_count)
    finally:
        with contextlib.suppress(OSError, amqp.exceptions.AMQPError):
            conn.close()


class Db:
    """An autocommit connection to a bench database that counts its own transactions, so that
    they can be taken out of pg_stat_database's count."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.conn = psycopg.connect(pg_url(database), autocommit=True)
        self.own_xacts = 0

    def _execute(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        self.own_xacts += 1
        try:
            return self.conn.execute(sql, params)
        except psycopg.OperationalError:
            # The server restarted or dropped the connection: once more on a new one.
            self.conn.close()
            self.conn = psycopg.connect(pg_url(self.database), autocommit=True)
            return self.conn.execute(sql, params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._execute(sql, params).fetchone()
        return None if row is None else row[0]

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._execute(sql, params).rowcount

    def table_exists(self, name: str) -> bool:
        return bool(self.one("SELECT to_regclass(%s) IS NOT NULL", (name,)))

    def close(self) -> None:
        self.conn.close()


class Canary:
    """Connections to PostgreSQL and RabbitMQ held while a system is measured: if either
    server restarts or drops its clients meanwhile (other people's fault tests do, on a
    shared machine), the canary's connection is gone and the measurement is not valid."""

    def __init__(self, wait: float = 90.0) -> None:
        """Connects to both servers, waiting up to `wait` seconds for them to be up."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.pg = psycopg.connect(pg_url("postgres"), autocommit=True)
                self.pg_started = self._pg_started()
                self.amqp = amqp.Connection(
                    f"{AMQP_HOST}:{AMQP_PORT}", userid="guest", password="guest"
                )
                self.amqp.connect()
                return
            except (OSError, psycopg.Error, amqp.exceptions.AMQPError) as exc:
                self.close()
                if time.monotonic() > deadline:
                    raise BenchError(f"PostgreSQL or RabbitMQ is not up: {exc}") from exc
                time.sleep(1.0)

    def _pg_started(self) -> str:
        row = self.pg.execute("SELECT pg_postmaster_start_time()::text").fetchone()
        return str(row[0]) if row else "?"

    def disturbed(self) -> list[str]:
        found = []
        try:
            if self._pg_started() != self.pg_started:
                found.append("PostgreSQL restarted")
        except psycopg.Error:
            found.append("PostgreSQL dropped its connections")
        try:
            channel = self.amqp.channel()
            channel.close()
        except (OSError, amqp.exceptions.AMQPError):
            found.append("RabbitMQ dropped its connections")
        return found

    def close(self) -> None:
        if hasattr(self, "pg"):
            self.pg.close()
        if hasattr(self, "amqp"):
            with contextlib.suppress(OSError, amqp.exceptions.AMQPError):
                self.amqp.collect()


def load_average() -> float:
    return os.getloadavg()[0]


def xact_commits(database: str) -> int:
    """pg_stat_database's committed transactions of a database (this query's own connection
    is to `postgres`, so it does not count)."""
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


# --- Prometheus ----------------------------------------------------------------------------


def scrape(url: str, names: Sequence[str]) -> dict[str, float] | None:
    """Each named counter that the endpoint has, summed over its labels; None if the endpoint
    cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        for name in names:
            if line.startswith((name + "{", name + " ")):
                with contextlib.suppress(ValueError, IndexError):
                    totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


# --- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
    return float(ordered[rank])


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the bench the way Ctrl-C does, so that `finally` blocks clean up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    # Also when started in the background by a shell, which makes it ignore SIGINT.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (stopping what was started)."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def paced(count: int, rate: float | None, batch: int) -> Iterator[range]:
    """Index ranges to send: all at once in batches of `batch` (rate None), or at `rate` a
    second, a slice every 10 ms with whatever has come due."""
    if rate is None:
        for start in range(0, count, batch):
            yield range(start, min(start + batch, count))
        return
    started = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            for start in range(sent, due, batch):
                yield range(start, min(start + batch, due))
            sent = due
        time.sleep(0.01)


# --- CPU accounting ------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(session id, CPU seconds used) of a process, from /proc."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[3]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _cmdline(pid: str) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_snapshot(sessions: dict[str, int], database: str) -> dict[str, float]:
    """CPU seconds used so far: by each named process session (a child and everything it
    forked), by PostgreSQL's backends connected to `database`, by the RabbitMQ server (all of
    it, whoever its clients) and by this bench process."""
    by_session = {sid: name for name, sid in sessions.items()}
    totals = dict.fromkeys([*sessions, "postgres", "rabbitmq", "bench"], 0.0)
    own = str(os.getpid())
    for entry in pathlib.Path("/proc").iterdir():
        pid = entry.name
        if not pid.isdigit():
            continue
        stat = _proc_stat(pid)
        if stat is None:
            continue
        sid, seconds = stat
        if sid in by_session:
            totals[by_session[sid]] += seconds
        elif pid == own:
            totals["bench"] += seconds
        else:
            cmd = _cmdline(pid)
            if cmd.startswith("postgres: ") and f" {database} " in cmd:
                totals["postgres"] += seconds
            elif "beam.smp" in cmd and "rabbit" in cmd:
                totals["rabbitmq"] += seconds
    return totals
