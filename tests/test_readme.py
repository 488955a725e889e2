"""The README as a specification stays true: its commands, endpoints and settings exist."""

from __future__ import annotations

import re
from pathlib import Path

from services.broadcast_gateway.settings import GatewaySettings
from services.persister.settings import PersisterSettings
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETTINGS = (ApiSettings, GatewaySettings, PersisterSettings)


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README))
    assert named, "the README names no make target"
    assert named <= targets, named - targets


def test_every_http_endpoint_the_readme_names_is_in_the_openapi_document() -> None:
    document = create_app(ApiSettings()).state.api.openapi_document
    operations = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    named = set(re.findall(r"`(GET|POST|DELETE|PUT|PATCH) (/[^`?\s]*)", README))
    assert named, "the README names no endpoint"
    api_named = {(m, p) for m, p in named if not p.startswith(("/ws", ":"))}
    assert api_named <= operations, api_named - operations


def test_every_setting_is_in_a_configuration_table_and_every_row_is_a_setting() -> None:
    fields = {name.upper() for cls in SETTINGS for name in cls.model_fields}
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README, re.MULTILINE))
    assert fields - rows == set(), f"settings missing from the README: {sorted(fields - rows)}"
    assert rows - fields == set(), f"README rows that are not settings: {sorted(rows - fields)}"


def test_every_test_file_the_readme_cites_exists() -> None:
    cited = set(re.findall(r"`(tests/test_[a-z0-9_]+\.py)", README))
    assert cited
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert missing == []


def test_every_test_the_readme_names_exists() -> None:
    named = re.findall(r"`?(tests/test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)", README)
    named += [
        (path, test)
        for path, tests in re.findall(
            r"(tests/test_[a-z0-9_]+\.py)::test_[a-z0-9_]+((?:`, `::test_[a-z0-9_]+)+)", README
        )
        for test in re.findall(r"::(test_[a-z0-9_]+)", tests)
    ]
    assert named
    missing = [
        f"{path}::{test}" for path, test in named if f"def {test}(" not in (ROOT / path).read_text()
    ]
    assert missing == []
