"""Model provider adapters for `ctx.step.ai.infer`: where the engine sends an inference request,
for which model, with which key.

The API key never enters a step's recorded input nor a log line. Give it explicitly
(`api_key=...`: it travels with the request to the engine component that makes it) or leave it
unset: then the component reads it from its own environment (`OPENAI_API_KEY`,
`ANTHROPIC_API_KEY`, or the variable named by `api_key_env`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from . import errors
from ._core import protocol

__all__ = ["Adapter", "Anthropic", "OpenAI"]


@dataclasses.dataclass(frozen=True)
class Adapter:
    """What every adapter has: a model, an optional key, an optional base URL.

    Args:
        model: the provider's model name (added to the request body as `model` unless the body
            names one).
        api_key: the key; None reads it from `api_key_env` where the request is made.
        base_url: the provider's API root, e.g. a local OpenAI-compatible server.
        api_key_env: the variable the key is read from when `api_key` is None.

    Raises:
        ConfigError: `model` is empty or `base_url` is not an http(s) URL.
    """

    provider: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    default_key_env: ClassVar[str] = ""
    path: ClassVar[str] = ""

    model: str
    api_key: str | None = dataclasses.field(default=None, repr=False)
    base_url: str | None = None
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise errors.ConfigError(f"model: must be a non-empty string, got {self.model!r}")
        base = self.base_url or self.default_base_url
        if not base.startswith(("http://", "https://")):
            raise errors.ConfigError(f"base_url: must be an http(s) URL, got {base!r}")

    @property
    def url(self) -> str:
        """Where the request goes."""
        return (self.base_url or self.default_base_url).rstrip("/") + self.path

    def headers(self) -> dict[str, str]:
        """Headers the provider wants besides the key."""
        return {}

    def ask(self, body: dict[str, Any], timeout_ms: int) -> protocol.AiInfer:
        """The request for `body`, as a step asks the engine for it."""
        return protocol.AiInfer(
            provider=self.provider,
            url=self.url,
            model=self.model,
            body={"model": self.model, **body},
            headers=self.headers(),
            api_key=self.api_key,
            api_key_env=self.api_key_env or self.default_key_env,
            timeout_ms=timeout_ms,
        )


@dataclasses.dataclass(frozen=True)
class OpenAI(Adapter):
    """An OpenAI-compatible chat completions endpoint (`{base_url}/chat/completions`, bearer key
    from `OPENAI_API_KEY` by default). The body is the endpoint's: `messages`, and so on."""

    provider: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    default_key_env: ClassVar[str] = "OPENAI_API_KEY"
    path: ClassVar[str] = "/chat/completions"


@dataclasses.dataclass(frozen=True)
class Anthropic(Adapter):
    """Anthropic's messages endpoint (`{base_url}/messages`, `x-api-key` from
    `ANTHROPIC_API_KEY` by default). The body is the endpoint's: `max_tokens`, `messages`, ..."""

    provider: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com/v1"
    default_key_env: ClassVar[str] = "ANTHROPIC_API_KEY"
    path: ClassVar[str] = "/messages"
    version: str = "2023-06-01"

    def headers(self) -> dict[str, str]:
        """The API version header Anthropic requires."""
        return {"anthropic-version": self.version}
