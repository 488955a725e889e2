"""The OpenAPI document: complete against the app's routes, and fuzzed with schemathesis."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from starlette.routing import Mount, Route

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from services.score_api.tokens import SCOPE_ADMIN, SCOPE_REPORT, SCOPE_WRITE
from tests.persister_fixtures import persisters
from tests.support import api_process

ROOT = Path(__file__).resolve().parent.parent
# 24 operations: about 4,800 cases (the suite must stay under 10 minutes on two cores).
FUZZ_CASES_PER_OPERATION = 200
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def test_every_route_is_in_the_document_and_nothing_else() -> None:
    app = create_app(ApiSettings())
    document = app.state.api.openapi_document
    routes = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    assert [r.path for r in app.routes if isinstance(r, Mount)] == ["/static"]


def test_document_lists_the_configured_actions() -> None:
    settings = ApiSettings(actions={"boss_kill": 40, "coin": 1})
    schema = create_app(settings).state.api.openapi_document["components"]["schemas"]
    for form in schema["ScoreRequest"]["oneOf"]:
        assert form["properties"]["action"]["enum"] == ["boss_kill", "coin"]
    assert schema["StartRequest"]["properties"]["action"]["enum"] == ["boss_kill", "coin"]


async def test_schemathesis_finds_no_server_error_or_nonconformance(
    redis_url: str, key_prefix: str, tmp_path: Path, database_url: str
) -> None:
    # The whole product: the admin endpoints read PostgreSQL, and a revocation waits for a
    # persister to store every earlier event.
    await migrate(database_url)
    async with (
        persisters(tmp_path, redis_url, database_url, key_prefix) as spawn,
        api_process(redis_url, key_prefix, DATABASE_URL=database_url) as url,
    ):
        spawn("p1")
        token = issue(ApiSettings(), "fuzzer", scopes=(SCOPE_WRITE, SCOPE_ADMIN, SCOPE_REPORT))
        report = tmp_path / "report.json"
        # A fixed seed keeps CI reproducible; change it to explore new cases locally.
        fuzz = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "-n",
            str(FUZZ_CASES_PER_OPERATION),
            "--seed",
            "20261126",
            "--generation-database",
            "none",
            "--no-color",
            "--report-json-path",
            str(report),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await fuzz.communicate()
        text = output.decode()
        assert fuzz.returncode == 0, text
        summary = json.loads(report.read_text())
        assert summary["warnings"]["unresolvable_reference"] == [], text
        assert summary["test_cases"]["with_failures"] == 0, text
        assert summary_total(summary) >= 1000, text


def summary_total(summary: dict[str, dict[str, int]]) -> int:
    """The number of generated cases in schemathesis' JSON report."""
    return summary["test_cases"]["generated"]
