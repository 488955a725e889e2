"""The verified-token cache: hits only for the same token, never past its expiry, bounded."""

from __future__ import annotations

import pytest

from services.score_api.tokencache import MAX_CACHED_TOKEN_CHARS, TokenCache
from services.score_api.tokens import Claims


def claims(sub: str = "alice", exp: int = 1000) -> Claims:
    return Claims(sub=sub, name=sub, scopes=frozenset({"score:write"}), exp=exp)


def test_a_verified_token_is_served_from_the_cache() -> None:
    cache = TokenCache(leeway=30)
    cache.put("t1", claims())
    assert cache.get("t1", now=500) == claims()


def test_an_unknown_token_misses() -> None:
    cache = TokenCache(leeway=30)
    cache.put("t1", claims())
    assert cache.get("t2", now=500) is None


def test_an_entry_is_served_until_expiry_plus_leeway_and_never_after() -> None:
    cache = TokenCache(leeway=30)
    cache.put("t1", claims(exp=1000))
    assert cache.get("t1", now=1030) is not None
    assert cache.get("t1", now=1030.001) is None
    assert len(cache) == 0  # dropped, so a later lookup cannot revive it
    assert cache.get("t1", now=900) is None


def test_zero_leeway_expires_exactly_at_exp() -> None:
    cache = TokenCache(leeway=0)
    cache.put("t1", claims(exp=1000))
    assert cache.get("t1", now=1000) is not None
    assert cache.get("t1", now=1000.5) is None


def test_the_least_recently_used_entry_is_evicted_when_full() -> None:
    cache = TokenCache(leeway=30, max_entries=2)
    cache.put("a", claims("a"))
    cache.put("b", claims("b"))
    assert cache.get("a", now=0) is not None  # "b" is now the least recently used
    cache.put("c", claims("c"))
    assert len(cache) == 2
    assert cache.get("b", now=0) is None
    assert cache.get("a", now=0) is not None
    assert cache.get("c", now=0) is not None


def test_oversized_tokens_are_not_cached() -> None:
    cache = TokenCache(leeway=30)
    token = "x" * (MAX_CACHED_TOKEN_CHARS + 1)
    cache.put(token, claims())
    assert cache.get(token, now=0) is None


def test_clear_forgets_every_token() -> None:
    cache = TokenCache(leeway=30)
    cache.put("t1", claims())
    cache.clear()
    assert cache.get("t1", now=0) is None


def test_a_non_positive_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenCache(leeway=30, max_entries=0)
