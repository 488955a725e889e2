"""Where the API's public verification keys come from: a PEM file, a JWKS file or URL.

The JWKS is cached; a token naming an unknown ``kid`` may trigger a refresh, at most once
per ``JWT_JWKS_REFRESH_SECONDS``, so forged ``kid`` values cannot make us hammer the issuer.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request

from services.score_api.settings import ApiSettings
from services.score_api.tokens import PublicKey, public_key_from_pem, public_keys_from_jwks
from shared.clock import SYSTEM, Clock

log = logging.getLogger(__name__)
MAX_JWKS_BYTES = 1024 * 1024


class KeySource:
    def __init__(self, settings: ApiSettings, clock: Clock = SYSTEM) -> None:
        self._settings = settings
        self._clock = clock
        self._fixed: tuple[PublicKey, ...] = ()
        if settings.jwt_public_key_file:
            self._fixed = (public_key_from_pem(settings.jwt_public_key_file.read_text()),)
        if settings.jwt_jwks_file:
            self._fixed += public_keys_from_jwks(settings.jwt_jwks_file.read_bytes())
        self._fetched: tuple[PublicKey, ...] = ()
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def keys(self) -> tuple[PublicKey, ...]:
        return self._fixed + self._fetched

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS URL if allowed now; True when the key set may have changed."""
        url = self._settings.jwt_jwks_url
        if url is None:
            return False
        async with self._lock:
            interval = self._settings.jwt_jwks_refresh_seconds
            now = self._clock.monotonic()
            if not force and now - self._last_fetch < interval:
                return False
            self._last_fetch = now
            try:
                document = await asyncio.to_thread(_fetch, url)
                self._fetched = public_keys_from_jwks(document)
            except (OSError, ValueError) as exc:
                log.warning("JWKS refresh from %s failed: %s", url, exc)
                return False
            return True


def _fetch(url: str) -> bytes:
    if not url.startswith("https://"):
        raise ValueError("JWKS URLs must be https")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (https only, above)
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return body
