"""A network partition for one process: a network namespace joined to the test's own by a veth
pair, with the servers relayed to the pair's address on the test's side. `cut()` takes the link
down (the process's packets go nowhere, its connections hang rather than close), `restore()`
brings it back."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator

import pytest


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Relay:
    """Forwards each connection accepted on `host` to `upstream`, a thread per direction."""

    def __init__(self, host: str, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._server = socket.create_server((host, 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class Partition:
    """A namespace `name` whose only way out is a veth pair to `host_address` (the test's side).
    Names and the /30 are random, so parallel runs do not clash."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 1000}{random.randrange(100, 1000)}"
        self.name = f"tf-part-{tag}"
        self.host_link = f"tfh{tag}"
        subnet = random.randrange(1, 64) * 4
        self.host_address = f"10.213.{random.randrange(256)}.{subnet + 1}"
        self.inner_address = self.host_address.rsplit(".", 1)[0] + f".{subnet + 2}"
        self._inner_link = f"tfn{tag}"
        self._relays: list[Relay] = []

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self._inner_link)
        _ip("link", "set", self._inner_link, "netns", self.name)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        inside = ["-n", self.name]
        _ip(*inside, "addr", "add", f"{self.inner_address}/30", "dev", self._inner_link)
        _ip(*inside, "link", "set", self._inner_link, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def relay_url(self, url: str) -> str:
        """`url` with its server relayed to the host address, for use inside the namespace."""
        parts = urllib.parse.urlsplit(url)
        relay = Relay(self.host_address, (parts.hostname or "127.0.0.1", parts.port or 0))
        self._relays.append(relay)
        credentials, _, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}@" if credentials else ""
        return parts._replace(netloc=f"{netloc}{self.host_address}:{relay.port}").geturl()

    def cut(self) -> None:
        _ip("link", "set", self.host_link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_link, "up")

    def destroy(self) -> None:
        for relay in self._relays:
            relay.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.host_link)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.name)


@contextlib.contextmanager
def partition() -> Iterator[Partition]:
    """A partition, deleted afterwards. Fails under CI when namespaces cannot be made (not
    root, no iproute2): the partition test must never pass by skipping."""
    made = Partition()
    try:
        made.create()
    except (OSError, subprocess.CalledProcessError) as exc:
        made.destroy()
        detail = getattr(exc, "stderr", None) or exc
        message = f"cannot make a network namespace: {detail}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI must not skip the partition test)")
        pytest.skip(message)
    try:
        yield made
    finally:
        made.destroy()
