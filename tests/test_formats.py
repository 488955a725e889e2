"""One source per format: no script, validator or document keeps a copy of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis.asyncio

from services.score_api.app import create_app
from services.score_api.ratelimit import Limit
from services.score_api.settings import ApiSettings
from services.score_api.store import AwardRequest, ScoreStore
from shared import formats
from shared.events import ScoreEvent
from shared.formats import FIELDS, OPTIONAL_FIELDS, REQUIRED_FIELDS, Pattern
from shared.keys import BoardKeys
from shared.redisconn import lua
from tests.support import ROOT, stream_events

SCRIPTS = sorted(ROOT.glob("*/**/lua/*.lua"))
PYTHON = [p for p in (ROOT / "services").rglob("*.py")] + list((ROOT / "shared").glob("*.py"))
LUA_CONSTANT = re.compile(r"\b(FIELD|TYPE)\.([a-z_]+)")


def test_every_script_is_found() -> None:
    assert {p.stem for p in SCRIPTS} >= {"award", "moderate", "rank", "top", "swap"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_scripts_hold_no_copy_of_a_format(script: Path) -> None:
    source = script.read_text()
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    assert not re.search(r"%0\d+d", code), "member width: use MEMBER_FORMAT"
    assert not re.search(r"string\.sub\([^,]+,\s*\d+\)", code), "member offset: MEMBER_USER_AT"
    assert "'|'" not in code, "banned separator: use BANNED_SEP"
    assert '"|"' not in code, "banned separator: use BANNED_SEP"
    assert str(formats.MAX_SCORE) not in code, "use MAX_SCORE"
    # Events are built from FIELD.* and EVENT_VERSION only (tested end to end below).
    assert "'v'" not in code, "event version field: use FIELD.version"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_constant_a_script_uses_is_defined(script: Path) -> None:
    package = ".".join(script.relative_to(ROOT).parent.parent.parts)
    text = lua(package, script.stem)
    prelude = formats.lua_constants()
    assert text.startswith(prelude)
    for table, name in LUA_CONSTANT.findall(script.read_text()):
        namespace = FIELDS if table == "FIELD" else formats.EVENT_TYPES
        assert name.upper() in namespace, f"{script.name}: {table}.{name} is not defined"


def test_python_writes_no_identifier_pattern_outside_formats() -> None:
    offenders = []
    for path in PYTHON:
        if path.name == "formats.py":
            continue
        # A bounded character class is an identifier format (e.g. [A-Za-z0-9_-]{1,64}).
        if re.search(r"\[(A-Za-z0-9|0-9A-Za-z|0-9a-f)[^\]]*\]\{\d", path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_openapi_patterns_are_the_formats_patterns() -> None:
    document = create_app(ApiSettings()).state.api.openapi_document
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    ours = {p.schema_pattern for p in vars(formats).values() if isinstance(p, Pattern)}
    assert found
    assert found <= ours


@pytest.mark.parametrize("pattern", [formats.USER_ID, formats.IDEMPOTENCY_KEY, formats.REQUEST_ID])
def test_patterns_are_full_matches(pattern: Pattern) -> None:
    assert pattern.matches("a" * pattern.max_len)
    for bad in ("", "a" * (pattern.max_len + 1), "a\n", "\na", "a b", "ä"):
        assert not pattern.matches(bad), bad


@pytest.mark.parametrize(("score", "member"), [(None, None), (0, None), (42, "0000000000000007:u")])
def test_banned_values_round_trip(score: int | None, member: str | None) -> None:
    assert formats.banned_parts(formats.banned_value(score, member)) == (score, member)


def test_members_round_trip_at_the_width_bounds() -> None:
    top = 10**formats.SEQ_WIDTH - 1
    assert formats.decode_member(formats.encode_member(top, "a:b")) == (top, "a:b")
    with pytest.raises(ValueError, match="range"):
        formats.encode_member(top + 1, "a")


async def test_events_the_scripts_write_use_exactly_the_declared_fields(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 3600)
    extras = {name: "x" for name in OPTIONAL_FIELDS if name != formats.Field.BY}
    request = AwardRequest(
        "alice",
        "Alice",
        "quest_complete",
        10,
        0,
        "k1",
        "10.0.0.1",
        [Limit("user-second", 5, 1000)],
        [Limit("ip-second", 50, 1000)],
        extras,
    )
    assert (await store.award(request)).status == "new"
    await store.moderate("ban", "alice", "10.0.0.2", {formats.Field.BY: "mod"})
    await store.moderate("unban", "alice", "10.0.0.2", {formats.Field.BY: "mod"})
    events = await stream_events(redis_client, keys.stream)
    assert [e[formats.Field.TYPE] for e in events] == ["score", "ban", "unban"]
    for event in events:
        assert set(REQUIRED_FIELDS) <= set(event) <= set(FIELDS.values())
        ScoreEvent.from_fields(event)
    # The member the award wrote decodes with the Python format; the ban kept it whole.
    members: list[bytes] = await redis_client.zrange(keys.board, 0, -1)  # type: ignore[assignment]
    assert [formats.decode_member(m.decode())[1] for m in members] == ["alice"]
