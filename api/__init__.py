"""The HTTP API: event ingest and the REST surface over runs, steps and events."""

from __future__ import annotations

from ._app import Api, create_app, openapi_spec
from ._realtime import Realtime

__all__ = ["Api", "Realtime", "create_app", "openapi_spec"]
