from __future__ import annotations

import pytest
from tideflow._core import realtime as rt
from tideflow.broker import topology


def test_a_token_carries_its_grant_and_only_its_signer_can_make_one() -> None:
    grant = rt.Grant("order:7", ("progress", "done"), expires_at=2_000.0)
    token = rt.make_token(grant, "key")

    assert rt.read_token(token, "key", now=1_999.0) == grant
    with pytest.raises(rt.TokenError, match="signature"):
        rt.read_token(token, "another key", now=1_999.0)
    with pytest.raises(rt.TokenError, match="signature"):
        rt.read_token(token, None, now=1_999.0)  # the development key
    with pytest.raises(rt.TokenError, match="expired"):
        rt.read_token(token, "key", now=2_000.0)


def test_a_token_whose_grant_was_edited_is_refused() -> None:
    token = rt.make_token(rt.Grant("order:7", ("done",), 2_000.0), "key")
    wider = rt.make_token(rt.Grant("order:*", ("done",), 2_000.0), "other")
    forged = f"{wider.partition('.')[0]}.{token.partition('.')[2]}"

    with pytest.raises(rt.TokenError, match="signature"):
        rt.read_token(forged, "key", now=0)
    with pytest.raises(rt.TokenError, match="signature"):
        rt.read_token("not a token", "key", now=0)


@pytest.mark.parametrize(
    ("channel", "other"),
    [("a.b", "a"), ("a", "a.b"), ("user:1", "user:1.x"), ("#", "anything"), ("*", "x")],
)
def test_routing_keys_match_exactly_their_channel_whatever_its_characters(
    channel: str, other: str
) -> None:
    key = rt.routing_key(channel, "t")

    assert topology.topic_matches(key, key)
    assert not topology.topic_matches(key, rt.routing_key(other, "t"))
    assert key.count(".") == 2
