"""The OpenAPI 3.1 description of the HTTP API, built from typed declarations that each route
module keeps next to its routes (an `OPERATIONS` tuple), so the document and the code change in
the same place. A test enumerates the application's routes and fails on any it does not find
here.

The models of bodies and answers are in _schemas.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pydantic
from pydantic.json_schema import models_json_schema
from tideflow import _event as ev

from ._schemas import Problem

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"

Auth = Literal["none", "signing_key", "event_key", "token", "session"]
Where = Literal["path", "query", "header"]
Schema = type[pydantic.BaseModel] | Mapping[str, Any]
"""A model (a component) or a JSON schema written out."""

# Declarations


@dataclasses.dataclass(frozen=True)
class Answer:
    description: str
    schema: Schema | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Header name to its description."""


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    where: Where
    description: str
    schema: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclasses.dataclass(frozen=True)
class Operation:
    """One method on one route, as the OpenAPI document shows it."""

    method: str
    path: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    body_media_type: str = "application/json"
    auth: Auth = "signing_key"
    extensions: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """`x-` keys, e.g. `x-websocket` for a route OpenAPI cannot describe."""


def path_param(name: str, description: str) -> Param:
    # One path segment: a slash, even escaped, would reach another route.
    return Param(name, "path", description, {"type": "string", "pattern": "^[^/]+$"}, True)


def json_answer(description: str, schema: Schema) -> Answer:
    return Answer(description, schema)


def problem(description: str) -> Answer:
    return Answer(description, Problem)


def html(description: str) -> Answer:
    return Answer(description, {"type": "string"}, media_type="text/html")


def redirect(description: str) -> Answer:
    return Answer(description, None, media_type="", headers={"location": "Where to go."})


# Every route may answer these: the body limit is checked before routing, and the store's
# outage is answered by the application's exception handler.
_COMMON: dict[int, Answer] = {
    307: Answer(
        "The path with a trailing slash (an empty last segment): to the path without it.",
        None,
        media_type="",
        headers={"location": "The path without its trailing slash."},
    ),
    400: problem("A URL with a NUL character (no id or name holds one)."),
    413: problem("The request body is larger than `TIDEFLOW_MAX_BODY_BYTES`."),
    503: problem("The database is unavailable."),
}
_UNAUTHORIZED = Answer(
    "Missing or wrong signing key (`Authorization: Bearer <key>`), when one is set.",
    Problem,
    headers={"www-authenticate": "`Bearer`"},
)
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "signing_key": [{"signingKey": []}, {}],
    "session": [{"signingKey": []}, {"session": []}, {}],
    "event_key": [],
    "token": [],
}
_SECURITY_SCHEMES = {
    "signingKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "`TIDEFLOW_SIGNING_KEY`. Not needed when no signing key is set (dev).",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "tideflow_session",
        "description": "The dashboard's session, set by `POST /login`.",
    },
}


def _schema_of(schema: Schema) -> dict[str, Any]:
    if isinstance(schema, type):
        return {"$ref": REF.format(model=schema.__name__)}
    return dict(schema)


def _content(media_type: str, schema: Schema | None) -> dict[str, Any]:
    return {media_type: {"schema": _schema_of(schema)} if schema is not None else {}}


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.media_type:
        out["content"] = _content(answer.media_type, answer.schema)
    if answer.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in answer.headers.items()
        }
    return out


def _responses(op: Operation) -> dict[str, Any]:
    answers = dict(op.answers)
    if op.auth == "signing_key":
        answers.setdefault(401, _UNAUTHORIZED)
    responses = {status: _answer(answer) for status, answer in answers.items()}
    for status, answer in _COMMON.items():
        if status not in responses:
            responses[status] = _answer(answer)
        elif "content" in responses[status]:
            # The operation's own answer with this status may be another kind (a page).
            for media_type, body in _answer(answer)["content"].items():
                responses[status]["content"].setdefault(media_type, body)
    return {str(status): responses[status] for status in sorted(responses)}


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(op),
        "tags": [op.tag],
        "responses": _responses(op),
        "security": _SECURITY[op.auth],
        **op.extensions,
    }
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "description": p.description,
                "required": p.required,
                "schema": dict(p.schema),
            }
            for p in op.params
        ]
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": _content(op.body_media_type, op.body)}
    return out


def _operation_id(op: Operation) -> str:
    words = [part.strip("{}") for part in op.path.split("/") if part]
    return "_".join([op.method.lower(), *words]) if words else f"{op.method.lower()}_root"


Mode = Literal["validation", "serialization"]


def _models(operations: Iterable[Operation]) -> dict[type[pydantic.BaseModel], Mode]:
    """Each model used, described as the API reads it (bodies) or as it writes it (answers)."""
    found: dict[type[pydantic.BaseModel], Mode] = {Problem: "serialization"}
    for op in operations:
        if isinstance(op.body, type):
            found[op.body] = "validation"
        for answer in op.answers.values():
            if isinstance(answer.schema, type):
                found.setdefault(answer.schema, "serialization")
    return found


def build_document(
    operations: Iterable[Operation],
    *,
    version: str,
    bodies: Iterable[type[pydantic.BaseModel]] = (),
    answers: Iterable[type[pydantic.BaseModel]] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these operations; `bodies` and `answers` are models that
    schemas written out refer to (`{"$ref": REF.format(model=...)}`)."""
    operations = list(operations)
    modes = _models(operations)
    modes.update(dict.fromkeys(bodies, "validation"))
    modes.update(dict.fromkeys(answers, "serialization"))
    ordered = sorted(modes.items(), key=lambda item: item[0].__name__)
    _, definitions = models_json_schema(ordered, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tideflow HTTP API",
            "version": version,
            "description": (
                "Event ingest, runs, steps, signals, cancellations, realtime, health, metrics "
                "and the dashboard of a tideflow engine (`tideflow api` / `tideflow dev`). "
                f"At most {ev.MAX_EVENTS_PER_SEND} events a send, "
                f"{ev.MAX_EVENT_BYTES // 1024} KiB an event."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
