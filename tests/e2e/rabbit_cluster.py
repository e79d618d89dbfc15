"""A RabbitMQ cluster of three nodes of our own on this machine (loopback only), for the tests
that lose a node: each node has its own name (tfq1@localhost, ...), ports, data and log
directories, and the cluster its own Erlang cookie. The shared node (rabbit@<host>, 5672) is
never touched; the nodes are killed and their files removed when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO

RABBITMQ_BIN = pathlib.Path("/usr/lib/rabbitmq/bin")
# Ports another RabbitMQ on this machine uses: the shared node's AMQP and distribution ports,
# and the range its CLI tools take for their own distribution.
_TAKEN = {4369, 5672, 25672, *range(35672, 35700)}
_START_S = 90.0


def _free_port() -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _TAKEN and port + 1 not in _TAKEN:
            return port


class Node:
    def __init__(self, name: str, base: pathlib.Path) -> None:
        self.name = f"{name}@localhost"
        self.short = name
        self.port = _free_port()
        self.dist_port = _free_port()
        self.dir = base / name
        self.process: subprocess.Popen[bytes] | None = None
        self.output: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


class RabbitCluster:
    """Three RabbitMQ nodes clustered together. Use as a context manager (`start`/`stop`)."""

    def __init__(self, base: pathlib.Path, names: Sequence[str] = ("tfq1", "tfq2", "tfq3")) -> None:
        self.base = base
        self.home = base / "home"
        # A suffix of its own: two test runs at once on one machine make two clusters.
        suffix = secrets.token_hex(3)
        self.nodes = [Node(f"{name}_{suffix}", base) for name in names]

    def __enter__(self) -> RabbitCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.home),
            # Not /etc/rabbitmq's: that one names the shared node.
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.dir / "log"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        return env

    def ctl(self, node: Node, *args: str, timeout_s: float = 60) -> str:
        """Runs `rabbitmqctl -n <node> args...` and gives its output."""
        return self._tool("rabbitmqctl", node, *args, timeout_s=timeout_s)

    def _tool(self, tool: str, node: Node, *args: str, timeout_s: float = 60) -> str:
        done = subprocess.run(
            [str(RABBITMQ_BIN / tool), "-n", node.name, *args],
            env=self._env(),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} -n {node.name} {' '.join(args)}: {done.stdout.decode()[-800:]}"
                f"{done.stderr.decode()[-800:]}"
            )
        return done.stdout.decode()

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            (node.dir / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
                # Quick to notice a lost peer.
                "net_ticktime = 10\n"
            )
            node.output = (node.dir / "server.out").open("wb")
            node.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self._env(node),
                stdout=node.output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed whole
            )
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._await_startup, self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        status = json.loads(self.ctl(first, "cluster_status", "--formatter", "json"))
        running = set(status["running_nodes"])
        assert running == {node.name for node in self.nodes}, status

    def _await_startup(self, node: Node) -> None:
        deadline = time.monotonic() + _START_S
        while True:
            assert node.process is not None
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self.server_output(node)}")
            try:
                self.ctl(node, "await_startup", "--timeout", "30", timeout_s=40)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def server_output(self, node: Node) -> str:
        with contextlib.suppress(OSError):
            return (node.dir / "server.out").read_text(errors="replace")[-2000:]
        return ""

    def leader(self, queue: str, vhost: str = "/") -> Node:
        """The node that leads a quorum queue now, asked of any node still running."""
        for asked in self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                rows = json.loads(
                    self.ctl(
                        asked,
                        "list_queues",
                        "-p",
                        vhost,
                        "name",
                        "leader",
                        "--formatter",
                        "json",
                        timeout_s=30,
                    )
                )
                for row in rows:
                    if row["name"] == queue:
                        return next(node for node in self.nodes if node.name == row["leader"])
        raise AssertionError(f"no node leads {queue}")

    def queue_types(self, vhost: str = "/") -> dict[str, str]:
        rows = json.loads(
            self.ctl(
                self.running()[0], "list_queues", "-p", vhost, "name", "type", "--formatter", "json"
            )
        )
        return {row["name"]: row["type"] for row in rows}

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def kill(self, node: Node) -> None:
        """Kills a node outright (SIGKILL to its process group), as a machine failing would."""
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)
        if node.output is not None:
            node.output.close()

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def rabbit_cluster(base: pathlib.Path) -> Iterator[RabbitCluster]:
    with RabbitCluster(base) as cluster:
        yield cluster
