"""Server URLs as they may be shown: in messages and logs, never with their password."""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
# libpq and AMQP accept a password in the query string too (`?password=...`).
_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "secret"})
# A last resort for what `urlsplit` refuses (an invalid port, an unclosed IPv6 bracket):
# whatever sits between `scheme://user:` and the last `@` before the path.
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)[^/?#]*@")
# Not a URL at all, such as a libpq `key=value` string: `password=...` anywhere.
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|pass|passwd|secret)\s*=\s*)(?:'[^']*'|[^\s&]+)", re.I
)


def mask_url(url: str) -> str:
    """`url` with its password replaced by `***`: `postgresql://user:***@host:5432/db`.

    A URL without a password comes back unchanged; one that cannot be parsed still loses
    whatever could be a password.
    """
    if _is_list(url):  # the nodes of a RabbitMQ cluster
        return ",".join(mask_url(part) for part in url.split(","))
    if "://" not in url:
        return _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", url)
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = _masked_netloc(parts.netloc)
        query = _masked_query(parts.query)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", url)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _masked_netloc(netloc: str) -> str:
    userinfo, at, host = netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return netloc
    return f"{user}:{MASK}@{host}"


def _masked_query(query: str) -> str:
    if not query:
        return query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if not any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
        return query
    masked = [(key, MASK if key.lower() in _SECRET_PARAMS else value) for key, value in pairs]
    return urllib.parse.urlencode(masked, safe="*")


def redact(text: str, url: str) -> str:
    """`text` (a driver's error message, say) without the password of `url`, as written in the
    URL or percent-decoded, and with `url` itself masked wherever it appears."""
    text = text.replace(url, mask_url(url))
    for password in _passwords(url):
        text = text.replace(password, MASK)
    return text


def _is_list(url: str) -> bool:
    return "," in url and url.count("://") > 1


def _passwords(url: str) -> list[str]:
    if _is_list(url):
        found = {password for part in url.split(",") for password in _passwords(part)}
        return sorted(found, key=len, reverse=True)
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return []
    userinfo, at, _host = parts.netloc.rpartition("@")
    raw = [userinfo.partition(":")[2]] if at else []
    raw += [value for key, value in query if key.lower() in _SECRET_PARAMS]
    found = {form for secret in raw for form in (secret, urllib.parse.unquote(secret))}
    # Longest first, so that a password containing another is replaced whole.
    return sorted((p for p in found if p), key=len, reverse=True)
