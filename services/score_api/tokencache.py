"""A bounded cache of verified tokens, so a client's repeated requests skip the signature check.

Keyed by the whole token string (header, claims and signature), so only a byte-identical
token can hit. An entry is served only while the token itself is still acceptable: until
``exp`` plus the verifier's leeway, the same rule ``services.score_api.tokens.check_claims`` applies
(``nbf`` was already satisfied when the token was verified, and time only moves forward).
Scopes are still checked on every request by the caller. Whoever changes the keys or the
rules must ``clear()`` the cache.
"""

from __future__ import annotations

from collections import OrderedDict

from services.score_api.tokens import Claims

DEFAULT_MAX_ENTRIES = 4096
# Larger tokens are verified every time: this bounds the cache's memory to about 16 MiB.
MAX_CACHED_TOKEN_CHARS = 4096


class TokenCache:
    """Least-recently-used map of token -> verified claims, honouring each token's expiry."""

    def __init__(self, leeway: int, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.leeway = leeway
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Claims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> Claims | None:
        """The claims of a token verified earlier and not expired at ``now``; else None."""
        claims = self._entries.get(token)
        if claims is None:
            return None
        if now > claims.exp + self.leeway:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return claims

    def put(self, token: str, claims: Claims) -> None:
        """Remember claims that ``TokenVerifier.verify`` just accepted for ``token``."""
        if len(token) > MAX_CACHED_TOKEN_CHARS:
            return
        self._entries[token] = claims
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
