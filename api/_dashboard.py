"""The dashboard: server-rendered pages (Jinja2) whose data comes from the HTTP API itself,
called in-process with the signing key like any other client, plus a little vanilla JS for
live updates (SSE from `/v1/stream`) and the actions (which call `/v1` from the browser)."""

from __future__ import annotations

import datetime
import json
import urllib.parse
from typing import Any

import httpx
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import _openapi as oa
from ._auth import SESSION_COOKIE, Auth
from ._rest import STATUSES

FRAGMENT_HEADER = "x-tideflow-fragment"
_REASONS = {
    "rate_limited": "its rate limit was reached",
    "idempotent": "a run with its idempotency key started in the last 24 h",
    "singleton": "a run with its singleton key was running",
    "debounced": "held by its debounce",
    "batched": "held in a batch",
    "duplicate": "an event with its id was seen in the last 24 h",
    "filtered": "its trigger's expression did not match",
}
"""What the event page says after each reason the API gives in `not_started`."""
_STATIC = ("tideflow.api", "static")


def _moment(value: str | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromisoformat(value)


def _duration(start: str | None, end: str | None) -> str:
    begun = _moment(start)
    if begun is None:
        return ""
    until = _moment(end) or datetime.datetime.now(datetime.UTC)
    seconds = max(0.0, (until - begun).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _when(value: str | None) -> str:
    moment = _moment(value)
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def _timeline(run: dict[str, Any], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each step with where its bar starts and how wide it is, in % of the run's span."""
    begun = _moment(run["run_started_at"])
    moments = [m for s in steps for m in (_moment(s["started_at"]), _moment(s["ended_at"])) if m]
    if begun is None and moments:
        begun = min(moments)
    end = _moment(run["ended_at"]) or datetime.datetime.now(datetime.UTC)
    span = max((end - begun).total_seconds(), 0.001) if begun else 1.0
    rows = []
    for step in steps:
        start, stop = _moment(step["started_at"]), _moment(step["ended_at"]) or end
        left = ((start - begun).total_seconds() / span * 100) if start and begun else 0.0
        width = ((stop - start).total_seconds() / span * 100) if start else 0.0
        rows.append(
            {**step, "left": min(max(left, 0.0), 99.0), "width": min(max(width, 1.0), 100.0)}
        )
    return rows


def _quoted(ident: str) -> str:
    """An id as one path segment of an API call: whatever the browser sent, control
    characters and slashes included."""
    return urllib.parse.quote(ident, safe="")


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never an absolute or scheme-relative URL.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _as_utc(value: str) -> str:
    """A `datetime-local` field's value, which the page labels as UTC, for the API."""
    if not value or value.isdigit() or value.endswith("Z") or "+" in value[10:]:
        return value
    return value + "Z"


class Dashboard:
    def __init__(self, auth: Auth) -> None:
        self._auth = auth
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("tideflow.api", "templates"),
            autoescape=True,
        )
        self._templates.filters.update(duration=_duration, when=_when, pretty=_pretty)
        self._http: httpx.AsyncClient | None = None

    def bind(self, app: Starlette) -> None:
        """Reads the API through `app`, in-process, with the signing key."""
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://tideflow.dashboard",
            headers=self._auth.bearer(),
        )

    async def _get(self, path: str, **params: str) -> httpx.Response:
        assert self._http is not None, "Dashboard.bind was not called"
        return await self._http.get(path, params={k: v for k, v in params.items() if v})

    async def _data(self, path: str, **params: str) -> Any:
        answer = await self._get(path, **params)
        answer.raise_for_status()
        return answer.json()["data"]

    def _render(
        self, request: Request, template_name: str, status: int = 200, **context: Any
    ) -> Response:
        template = self._templates.get_template(template_name)
        context = {
            "request": request,
            "path": request.url.path,
            "has_auth": not self._auth.is_open,
            **context,
        }
        if request.headers.get(FRAGMENT_HEADER) and "live" in template.blocks:
            # The live region only: what the page's script swaps in on an SSE change.
            html = "".join(template.blocks["live"](template.new_context(context)))
        else:
            html = template.render(context)
        return HTMLResponse(html, status_code=status)

    def _login_needed(self, request: Request) -> Response | None:
        if self._auth.allows(request):
            return None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={urllib.parse.quote(target)}", status_code=303)

    # Pages

    async def runs(self, request: Request) -> Response:
        if (refused := self._login_needed(request)) is not None:
            return refused
        query = request.query_params
        search = query.get("q", "").strip()
        if search:
            if (await self._get(f"/v1/runs/{_quoted(search)}")).status_code == 200:
                return RedirectResponse(f"/runs/{urllib.parse.quote(search)}", status_code=303)
            if (await self._get(f"/v1/events/{_quoted(search)}")).status_code == 200:
                return RedirectResponse(f"/events/{urllib.parse.quote(search)}", status_code=303)
        filters = {
            "function_id": query.get("function_id", ""),
            "status": query.get("status", ""),
            "from": query.get("from", ""),
            "to": query.get("to", ""),
        }
        params = {**filters, "from": _as_utc(filters["from"]), "to": _as_utc(filters["to"])}
        answer = await self._get("/v1/runs", **params, cursor=query.get("cursor", ""))
        body = answer.json()
        error = body.get("error") if answer.status_code != 200 else None
        next_query = {k: v for k, v in filters.items() if v}
        if body.get("cursor"):
            next_query["cursor"] = body["cursor"]
        return self._render(
            request,
            "runs.html",
            status=answer.status_code if error else 200,
            runs=body.get("data", []),
            error=error,
            not_found=search if search else None,
            filters=filters,
            statuses=STATUSES,
            functions=await self._data("/v1/functions"),
            older=urllib.parse.urlencode(next_query) if body.get("cursor") else None,
            newest=urllib.parse.urlencode({k: v for k, v in filters.items() if v}),
            is_first_page=not query.get("cursor"),
            stream="/v1/stream" if not query.get("cursor") else None,
        )

    async def run(self, request: Request) -> Response:
        if (refused := self._login_needed(request)) is not None:
            return refused
        run_id = request.path_params["run_id"]
        answer = await self._get(f"/v1/runs/{_quoted(run_id)}")
        if answer.status_code == 404:
            return self._render(
                request,
                "missing.html",
                status=404,
                what="run",
                ident=run_id,
                stream=f"/v1/stream?run_id={urllib.parse.quote(run_id)}",
            )
        run = answer.json()["data"]
        steps = await self._data(f"/v1/runs/{_quoted(run_id)}/steps")
        event = await self._get(f"/v1/events/{_quoted(run['event_id'])}")
        return self._render(
            request,
            "run.html",
            run=run,
            steps=_timeline(run, steps),
            event=event.json()["data"] if event.status_code == 200 else None,
            stream=f"/v1/stream?run_id={urllib.parse.quote(run_id)}",
        )

    async def functions(self, request: Request) -> Response:
        if (refused := self._login_needed(request)) is not None:
            return refused
        functions = await self._data("/v1/functions")
        for function in functions:
            counts = function["runs_24h"]
            ended = counts.get("Completed", 0) + counts.get("Failed", 0)
            function["total_24h"] = sum(counts.values())
            function["failure_rate"] = f"{counts.get('Failed', 0) / ended:.0%}" if ended else "n/a"
        return self._render(request, "functions.html", functions=functions)

    async def events(self, request: Request) -> Response:
        if (refused := self._login_needed(request)) is not None:
            return refused
        name = request.query_params.get("name", "")
        events = await self._data("/v1/events", name=name, limit="100")
        return self._render(request, "events.html", events=events, name=name, stream="/v1/stream")

    async def event(self, request: Request) -> Response:
        if (refused := self._login_needed(request)) is not None:
            return refused
        event_id = request.path_params["event_id"]
        answer = await self._get(f"/v1/events/{_quoted(event_id)}")
        if answer.status_code == 404:
            return self._render(
                request, "missing.html", status=404, what="event", ident=event_id, stream=None
            )
        runs = await self._data(f"/v1/events/{_quoted(event_id)}/runs")
        return self._render(
            request,
            "event.html",
            event=answer.json()["data"],
            runs=runs,
            reasons=_REASONS,
            stream="/v1/stream",
        )

    async def status(self, request: Request) -> Response:
        if (refused := self._login_needed(request)) is not None:
            return refused
        health = await self._get("/health")
        return self._render(
            request,
            "status.html",
            health=health.json(),
            healthy=health.status_code == 200,
            processes=await self._data("/v1/processes"),
            queues=await self._data("/v1/queues"),
        )

    # Login

    async def login_page(self, request: Request) -> Response:
        if self._auth.is_open:
            return RedirectResponse("/", status_code=303)
        next_path = _safe_next(request.query_params.get("next"))
        return self._render(request, "login.html", next_path=next_path, failed=False)

    async def login(self, request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
        key = form.get("key", [""])[0]
        next_path = _safe_next(form.get("next", ["/"])[0])
        if self._auth.is_open:
            return RedirectResponse(next_path, status_code=303)
        if not self._auth.is_signing_key(key):
            return self._render(request, "login.html", status=401, next_path=next_path, failed=True)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self._auth.new_session(),
            max_age=self._auth.session_ttl_s,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.runs, methods=["GET"]),
            Route("/runs", self.runs, methods=["GET"]),
            Route("/runs/{run_id}", self.run, methods=["GET"]),
            Route("/functions", self.functions, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/events/{event_id}", self.event, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            # An editable install links the package's files: follow those links.
            Mount("/static", StaticFiles(packages=[_STATIC], follow_symlink=True), name="static"),
        ]


_TO_LOGIN = oa.redirect("To `/login` when a signing key is set and the request carries none.")


def _page(
    path: str, summary: str, *params: oa.Param, missing: bool = False, filters: bool = False
) -> oa.Operation:
    answers = {200: oa.html("The page."), 303: _TO_LOGIN}
    if filters:
        answers[400] = oa.html("The page, saying which filter is wrong.")
        answers[303] = oa.redirect("To `/login`, or to the run or event `q` names.")
    if missing:
        answers[404] = oa.html("The page saying there is no such thing.")
    return oa.Operation("GET", path, summary, "dashboard", answers, params=params, auth="session")


_RUN_FILTERS = (
    oa.Param("q", "query", "A run or event id to go to."),
    oa.Param("function_id", "query", "Only this function's runs."),
    oa.Param("status", "query", "Only runs in this status."),
    oa.Param("from", "query", "Runs queued from this time."),
    oa.Param("to", "query", "Runs queued before this time."),
    oa.Param("cursor", "query", "A page's cursor."),
)

OPERATIONS = (
    _page("/", "The dashboard: runs", *_RUN_FILTERS, filters=True),
    _page("/runs", "Runs", *_RUN_FILTERS, filters=True),
    _page("/runs/{run_id}", "A run", oa.path_param("run_id", "A run's id."), missing=True),
    _page("/functions", "Functions"),
    _page("/events", "Events", oa.Param("name", "query", "Only events of this name.")),
    _page(
        "/events/{event_id}", "An event", oa.path_param("event_id", "An event's id."), missing=True
    ),
    _page("/status", "Processes, queues and health"),
    oa.Operation(
        "GET",
        "/login",
        "The login page",
        "dashboard",
        {200: oa.html("The login form."), 303: oa.redirect("To `/` when no signing key is set.")},
        params=(oa.Param("next", "query", "Where to go after logging in."),),
        auth="none",
    ),
    oa.Operation(
        "POST",
        "/login",
        "Logs in with the signing key; sets an HttpOnly session cookie",
        "dashboard",
        {
            303: oa.redirect("Logged in (or no signing key is set): to `next`."),
            401: oa.html("The login form again: wrong key."),
        },
        body={
            "type": "object",
            "properties": {"key": {"type": "string"}, "next": {"type": "string"}},
        },
        body_media_type="application/x-www-form-urlencoded",
        auth="none",
    ),
    oa.Operation(
        "POST",
        "/logout",
        "Logs out (clears the session cookie)",
        "dashboard",
        {303: oa.redirect("To `/login`.")},
        auth="none",
    ),
    oa.Operation(
        "GET",
        "/static/{path}",
        "The dashboard's stylesheet and script",
        "dashboard",
        {
            200: oa.Answer("The file.", {"type": "string"}, media_type="*/*"),
            404: oa.Answer("No such file.", {"type": "string"}, media_type="text/plain"),
        },
        params=(oa.path_param("path", "A file name, e.g. `dashboard.css`."),),
        auth="none",
    ),
)
