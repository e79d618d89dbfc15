"""The functions the scheduler knows, read from the store and compiled once per version."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tideflow import errors
from tideflow._core.cron import parse_cron
from tideflow._core.expressions import Expression, compile_expression
from tideflow.store import Store

from .flow import batching as batching_rule
from .flow import cancel as cancel_rule
from .flow import concurrency as concurrency_rule
from .flow import debounce as debounce_rule
from .flow import idempotency as idempotency_rule
from .flow import priority as priority_rule
from .flow import rate_limit as rate_limit_rule
from .flow import singleton as singleton_rule
from .flow import throttle as throttle_rule

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EventTrigger:
    event: str
    expression: Expression | None

    def names(self, name: str) -> bool:
        if self.event.endswith("*"):
            return name.startswith(self.event[:-1])
        return name == self.event

    def matches(self, name: str, payload: dict[str, Any]) -> bool:
        if not self.names(name):
            return False
        return self.expression is None or self.expression.matches({"event": payload})


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    function_id: str
    app_id: str
    retries: int
    triggers: tuple[EventTrigger, ...]
    crons: tuple[str, ...]
    concurrency: tuple[concurrency_rule.Constraint, ...] = ()
    priority: priority_rule.Spec | None = None
    throttle: throttle_rule.Spec | None = None
    rate_limit: rate_limit_rule.Spec | None = None
    debounce: debounce_rule.Spec | None = None
    singleton: singleton_rule.Spec | None = None
    idempotency: idempotency_rule.Spec | None = None
    batch_events: batching_rule.Spec | None = None
    start_timeout_ms: int | None = None
    finish_timeout_ms: int | None = None
    cancel: cancel_rule.Spec = ()


class Registry:
    def __init__(self) -> None:
        self._functions: dict[str, FunctionSpec] = {}
        self._configs: list[dict[str, Any]] = []

    async def refresh(self, store: Store) -> None:
        configs = await store.list_functions()
        if configs == self._configs:
            return
        functions = {}
        for config in configs:
            try:
                functions[config["function_id"]] = _spec(config)
            except (errors.ConfigError, KeyError) as exc:
                logger.error("ignoring function %s: %s", config.get("function_id"), exc)
        self._functions, self._configs = functions, configs
        logger.info(
            "the scheduler knows %d functions: %s", len(functions), ", ".join(sorted(functions))
        )

    def get(self, function_id: str) -> FunctionSpec | None:
        return self._functions.get(function_id)

    def knows_event(self, name: str) -> bool:
        """Whether any trigger names events of this name (expressions aside)."""
        return any(
            trigger.names(name) for spec in self._functions.values() for trigger in spec.triggers
        )

    def matching(self, name: str, payload: dict[str, Any]) -> list[FunctionSpec]:
        return [
            spec
            for spec in self._functions.values()
            if any(trigger.matches(name, payload) for trigger in spec.triggers)
        ]

    def crons(self) -> list[tuple[FunctionSpec, str]]:
        return [(spec, cron) for spec in self._functions.values() for cron in spec.crons]

    def limited(self) -> list[str]:
        """The functions with concurrency limits."""
        return [spec.function_id for spec in self._functions.values() if spec.concurrency]

    def app_ids(self) -> set[str]:
        return {spec.app_id for spec in self._functions.values()}


def _spec(config: dict[str, Any]) -> FunctionSpec:
    triggers, crons = [], []
    for trigger in config["triggers"]:
        if "cron" in trigger:
            parse_cron(trigger["cron"])
            crons.append(trigger["cron"])
        else:
            expression = trigger.get("expression")
            triggers.append(
                EventTrigger(
                    trigger["event"], compile_expression(expression) if expression else None
                )
            )
    return FunctionSpec(
        function_id=config["function_id"],
        app_id=config["app_id"],
        retries=int(config.get("retries", 4)),
        triggers=tuple(triggers),
        crons=tuple(crons),
        concurrency=concurrency_rule.parse(config.get("concurrency")),
        priority=priority_rule.parse(config.get("priority")),
        throttle=throttle_rule.parse(config.get("throttle")),
        rate_limit=rate_limit_rule.parse(config.get("rate_limit")),
        debounce=debounce_rule.parse(config.get("debounce")),
        singleton=singleton_rule.parse(config.get("singleton")),
        idempotency=idempotency_rule.parse(config.get("idempotency")),
        batch_events=batching_rule.parse(config.get("batch_events")),
        start_timeout_ms=(config.get("timeouts") or {}).get("start_ms"),
        finish_timeout_ms=(config.get("timeouts") or {}).get("finish_ms"),
        cancel=cancel_rule.parse(config.get("cancel")),
    )
