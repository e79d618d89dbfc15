from __future__ import annotations

import pytest
from tideflow._core.urls import mask_url, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:s3cret@host:5432/db", "postgresql://user:***@host:5432/db"),
        (
            "postgres://user:s3cret@host/db?sslmode=require",
            "postgres://user:***@host/db?sslmode=require",
        ),
        ("amqp://guest:guest@127.0.0.1:5672/vhost", "amqp://guest:***@127.0.0.1:5672/vhost"),
        ("amqps://app:p%40ss@rabbit.example:5671/", "amqps://app:***@rabbit.example:5671/"),
        # An unencoded `@` or `:` in the password: everything up to the last `@` is hidden.
        ("postgresql://user:pa:ss@w@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://:s3cret@host/db", "postgresql://:***@host/db"),
        (
            "postgresql://host/db?user=app&password=s3cret&sslmode=require",
            "postgresql://host/db?user=app&password=***&sslmode=require",
        ),
        ("host=db user=app password=s3cret port=5432", "host=db user=app password=*** port=5432"),
        # Not parseable as a URL (an unclosed IPv6 bracket): the password still goes.
        ("postgresql://user:s3cret@[::1/db", "postgresql://user:***@[::1/db"),
    ],
)
def test_the_password_is_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "s3cret" not in mask_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user@host:5432/db",
        "postgresql://host/db?sslmode=require",
        "amqp://rabbit/",
        "memory://",
        "sqlite:///.tideflow/dev.db",
        "sqlite://:memory:",
    ],
)
def test_a_url_without_a_password_is_unchanged(url: str) -> None:
    assert mask_url(url) == url


@pytest.mark.parametrize(
    ("text", "url", "shown"),
    [
        (
            'invalid percent-encoded token: "s3c%ret"',
            "postgresql://app:s3c%ret@db/tideflow",
            'invalid percent-encoded token: "***"',
        ),
        (
            "login as app with p@ss refused (amqp://app:p%40ss@rabbit/)",
            "amqp://app:p%40ss@rabbit/",
            "login as app with *** refused (amqp://app:***@rabbit/)",
        ),
        (
            "password=s3cret was refused",
            "postgresql://db/tideflow?user=app&password=s3cret",
            "password=*** was refused",
        ),
        ("connection refused", "postgresql://app@db/tideflow", "connection refused"),
    ],
)
def test_redact_removes_the_urls_password_from_a_message(text: str, url: str, shown: str) -> None:
    assert redact(text, url) == shown
