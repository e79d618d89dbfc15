"""A local HTTP server for offloaded steps' tests: plain endpoints, a slow one, a flaky one, and
a fake OpenAI-compatible chat completions endpoint, on 127.0.0.1 in threads of its own."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


@dataclasses.dataclass
class Seen:
    """What the server has been asked: hits by path, requests' headers and bodies, the peak of
    requests in flight at once."""

    hits: Counter[str] = dataclasses.field(default_factory=Counter)
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class FakeServer:
    def __init__(self, server: http.server.ThreadingHTTPServer, seen: Seen) -> None:
        self._server = server
        self.seen = seen
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.port = int(port)


def _handler(seen: Seen) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            with seen.lock:
                seen.hits[url.path] += 1
                hits = seen.hits[url.path]
                seen.requests.append(
                    {"path": url.path, "headers": dict(self.headers.items()), "body": body}
                )
                seen.in_flight += 1
                seen.peak = max(seen.peak, seen.in_flight)
            try:
                self._answer(url.path, query, body, hits)
            finally:
                with seen.lock:
                    seen.in_flight -= 1

        def _answer(self, path: str, query: dict[str, str], body: str, hits: int) -> None:
            route = _ROUTES.get("/flaky" if path.startswith("/flaky") else path)
            if route is None:
                self._send(404, {"error": path})
                return
            status, answer, content_type = route(query, body, hits, self.headers)
            self._send(status, answer, content_type=content_type)

        def _send(self, status: int, body: Any, *, content_type: str = "application/json") -> None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


Answer = tuple[int, Any, str]
JSON_TYPE = "application/json"


def _echo(query: dict[str, str], body: str, hits: int, headers: Any) -> Answer:
    return 200, {"body": body, "content_type": headers.get("Content-Type")}, JSON_TYPE


def _slow(query: dict[str, str], body: str, hits: int, headers: Any) -> Answer:
    time.sleep(float(query.get("s", "2")))
    return 200, {"slow": True}, JSON_TYPE


def _flaky(query: dict[str, str], body: str, hits: int, headers: Any) -> Answer:
    ok = hits > int(query.get("fail", "1"))
    return 200 if ok else 503, {"hits": hits}, JSON_TYPE


def _chat(query: dict[str, str], body: str, hits: int, headers: Any) -> Answer:
    request = json.loads(body)
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi there"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    return 200, answer, JSON_TYPE


def _messages(query: dict[str, str], body: str, hits: int, headers: Any) -> Answer:
    request = json.loads(body)
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "content": [{"type": "text", "text": "bonjour"}],
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }
    return 200, answer, JSON_TYPE


_ROUTES: dict[str, Callable[[dict[str, str], str, int, Any], Answer]] = {
    "/json": lambda *_: (200, {"hello": "world"}, JSON_TYPE),
    "/echo": _echo,
    "/missing": lambda *_: (404, {"error": "no such thing"}, JSON_TYPE),
    "/text": lambda *_: (200, "plain words", "text/plain"),
    "/slow": _slow,
    "/flaky": _flaky,
    "/big": lambda *_: (200, "x" * (5 * 1024 * 1024), "text/plain"),
    "/v1/chat/completions": _chat,
    "/v1/messages": _messages,
}


@contextmanager
def fake_server() -> Iterator[FakeServer]:
    seen = Seen()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-http", daemon=True)
    thread.start()
    try:
        yield FakeServer(server, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
