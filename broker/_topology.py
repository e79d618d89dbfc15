"""Names of exchanges, queues and routing keys, shared by every broker implementation."""

from __future__ import annotations

EVENTS_EXCHANGE = "tideflow.events"
INTERNAL_EXCHANGE = "tideflow.internal"
BROADCAST_EXCHANGE = "tideflow.broadcast"
"""Notices for whoever listens now (cancelled runs); nothing is kept for absent listeners."""
REALTIME_EXCHANGE = "tideflow.realtime"
"""Realtime messages (`ctx.publish`), routed by channel and topic to the subscribers listening
now; nothing is kept for absent ones."""
SCHEDULER_EVENTS_QUEUE = "tideflow.scheduler.events"
SCHEDULER_OUTCOMES_QUEUE = "tideflow.scheduler.outcomes"
SCHEDULER_OFFLOADED_QUEUE = "tideflow.scheduler.offloaded"
"""What offloaded requests (`step.fetch`, `step.ai.infer`) came to."""
DEAD_LETTER_QUEUE = "tideflow.dead"
OUTCOMES_KEY = "outcomes"
OFFLOADED_KEY = "offloaded"


def jobs_queue(app_id: str) -> str:
    return f"tideflow.jobs.{app_id}"


def jobs_key(app_id: str) -> str:
    return f"jobs.{app_id}"


def offload_queue(app_id: str) -> str:
    return f"tideflow.offload.{app_id}"


def offload_key(app_id: str) -> str:
    return f"offload.{app_id}"


def cancel_key(app_id: str) -> str:
    return f"cancel.{app_id}"


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: words split on '.', `*` is one word, `#` is zero or more."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[index:]) for index in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])
