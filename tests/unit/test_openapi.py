"""The OpenAPI document describes every route the application serves, and nothing else."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import httpx
import tideflow.api
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from tideflow import Settings
from tideflow.api import Api, create_app, openapi_spec
from tideflow.broker import create_broker
from tideflow.store import create_store


def _app(tmp_path: pathlib.Path) -> Any:
    store = create_store(f"sqlite:///{tmp_path / 'openapi.db'}")
    api = Api(store=store, broker=create_broker("memory://"), settings=Settings.from_env({}))
    return create_app(api)


def _served(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    served: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            methods = (route.methods or set()) - {"HEAD"}
            served.update((method, route.path) for method in methods)
        elif isinstance(route, WebSocketRoute):
            served.add(("GET", route.path))
        elif isinstance(route, Mount):
            served.add(("GET", f"{route.path}/{{path}}"))
        else:
            raise AssertionError(f"a kind of route the test does not know: {route!r}")
    return served


def _documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def test_every_served_route_is_documented_and_every_documented_route_is_served(
    tmp_path: pathlib.Path, figures: list[str]
) -> None:
    served = _served(_app(tmp_path).routes)
    documented = _documented(openapi_spec())

    assert served - documented == set(), "routes served but missing from the OpenAPI document"
    assert documented - served == set(), "routes in the OpenAPI document that are not served"
    figures.append(f"openapi: {len(served)} routes served, all documented")


def test_every_path_parameter_is_declared() -> None:
    for path, item in openapi_spec()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}"


def test_the_document_is_openapi_3_1_with_resolvable_references() -> None:
    spec = openapi_spec()
    text = str(spec)
    refs = set(re.findall(r"#/components/schemas/(\w+)", text))

    assert spec["openapi"] == "3.1.0"
    assert refs <= set(spec["components"]["schemas"]), "references to undeclared schemas"
    assert all(
        operation["responses"] for item in spec["paths"].values() for operation in item.values()
    )


async def test_the_served_document_is_the_function_s(tmp_path: pathlib.Path) -> None:
    transport = httpx.ASGITransport(app=_app(tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.get("/openapi.json")

    assert answer.status_code == 200
    assert answer.json() == openapi_spec()
    assert "openapi_spec" in tideflow.api.__all__
