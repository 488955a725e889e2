"""Public keys from a JWKS served over real HTTPS: fetched at start, refreshed on an unknown
``kid`` at most once per interval, so forged ``kid`` values cannot hammer the issuer."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID
from jose import jwk, jws

from tests.support import ManualClock
from tests.test_score_api import Api, running_api


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return dict(jwk.construct(pem.decode(), "RS256").to_dict()) | {"kid": kid, "use": "sig"}


@dataclass
class Issuer:
    """An identity provider's JWKS endpoint: real TLS on loopback, counting its fetches."""

    url: str
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    fetches: int = 0

    def token(self, kid: str, sub: str = "alice") -> str:
        claims = {
            "sub": sub,
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
            "scope": "score:write",
        }
        signed: str = jws.sign(
            orjson.dumps(claims),
            private_pem(self.keys[kid]),
            algorithm="RS256",
            headers={"kid": kid},
        )
        return signed

    def document(self) -> bytes:
        return orjson.dumps({"keys": [public_jwk(k, kid) for kid, k in self.keys.items()]})


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    key_file.write_text(private_pem(key))
    return cert_file, key_file


@pytest.fixture
def issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Issuer]:
    cert_file, key_file = self_signed(tmp_path)
    # The API trusts the system's CAs; this test's CA joins them through OpenSSL's variable.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    state = Issuer("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            body = state.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"https://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    state.keys["k1"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def api(
    issuer: Issuer, redis_url: str, key_prefix: str, clock: ManualClock
) -> AsyncIterator[Api]:
    async with running_api(
        clock,
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        jwt_algorithms=["RS256"],
        jwt_jwks_url=issuer.url,
        jwt_jwks_refresh_seconds=2,
    ) as running:
        yield running


async def post(api: Api, token: str, key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    return await api.http.post("/api/score", json={"action": "quest_complete"}, headers=headers)


async def test_keys_are_fetched_at_start_and_a_rotated_key_is_picked_up(
    api: Api, issuer: Issuer, clock: ManualClock
) -> None:
    assert issuer.fetches == 1
    assert (await post(api, issuer.token("k1"), "a")).status_code == 200
    issuer.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (await post(api, issuer.token("k2", sub="bob"), "early")).status_code == 401
    assert issuer.fetches == 1  # within the refresh interval: no fetch
    clock.advance(2.1)  # past the refresh interval
    assert (await post(api, issuer.token("k2", sub="bob"), "b")).status_code == 200
    assert issuer.fetches == 2


async def test_unknown_kids_refresh_at_most_once_per_interval(
    api: Api, issuer: Issuer, clock: ManualClock
) -> None:
    clock.advance(2.1)
    issuer.keys["k9"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = [issuer.token("k9", sub=f"u{i}") for i in range(10)]
    del issuer.keys["k9"]  # the issuer never published k9: these kids stay unknown
    statuses = [(await post(api, token, f"k{i}")).status_code for i, token in enumerate(tokens)]
    assert statuses == [401] * 10
    assert issuer.fetches == 2  # one refresh for ten unknown kids
