"""User analytics for ``GET /api/admin/stats?window=``: one query on PostgreSQL and a pure
part that shapes its rows (``shape``), tested on its own.

The window is whole UTC hours ending with the current one: ``24h`` at 12:34 covers
[11:00 yesterday, 12:34 today), i.e. the current hour so far and the 23 before it, so points
by hour has exactly one bucket per hour of the window (at most ``MAX_HOURS``). Only accepted,
unrevoked score events count (``type = 'score' AND revoked_by IS NULL``). A new user is an
active one whose first award (``users.first_award_at``, the first the persister stored, even
if revoked since) falls in the window. Refusals are not events: the score API counts
them per UTC hour and reason in Redis (``refusalcount``), the persister copies those
counters into ``refusal_counts`` (``services.persister.refusalcounts``), read here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.score_api.openapi_admin import MAX_STATS_HOURS
from services.score_api.problems import Problem
from services.score_api.tickets import rfc3339

HOUR_S = 3600
MAX_HOURS = MAX_STATS_HOURS  # 30d
DEFAULT_WINDOW = "24h"
TOP_MOVERS = 10
# <n>h or <n>d, n a positive decimal without leading zero, ASCII digits only.
_WINDOW = re.compile(r"([1-9][0-9]{0,2})([hd])", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# One round trip. ``w`` is the window's awards (score_events_recent), ``u`` its users; each
# part of the union is one figure, told apart by ``kind``. Hours are UTC whatever the
# session's time zone (date_bin from the epoch).
QUERY = """
WITH w AS MATERIALIZED (
    SELECT user_id, action, points, created_at
    FROM score_events
    WHERE type = 'score' AND revoked_by IS NULL AND created_at >= $1 AND created_at < $2
), u AS MATERIALIZED (
    SELECT user_id, count(*) AS n, sum(points)::bigint AS points FROM w GROUP BY user_id
)
SELECT 'action' AS kind, action AS key, NULL::bigint AS hour, count(*) AS n,
    sum(points)::bigint AS points, NULL AS name
FROM w GROUP BY action
UNION ALL
SELECT 'hour', NULL, (extract(epoch FROM date_bin('1 hour', created_at, 'epoch')) / 3600)::bigint,
    count(*), sum(points)::bigint, NULL
FROM w GROUP BY date_bin('1 hour', created_at, 'epoch')
UNION ALL
SELECT 'active', NULL, NULL, count(*), NULL, NULL FROM u
UNION ALL
SELECT 'new', NULL, NULL, count(*), NULL, NULL
FROM users f
WHERE f.first_award_at >= $1 AND f.first_award_at < $2 AND f.user_id IN (SELECT user_id FROM u)
UNION ALL
SELECT 'mover', m.user_id, NULL, m.n, m.points, coalesce(us.name, m.user_id)
FROM (SELECT user_id, n, points FROM u ORDER BY points DESC, user_id LIMIT $3) m
LEFT JOIN users us ON us.user_id = m.user_id
UNION ALL
SELECT 'refusal', reason, NULL, sum(count)::bigint, NULL, NULL
FROM refusal_counts WHERE hour >= $1 AND hour < $2
GROUP BY reason
"""


@dataclass(frozen=True, slots=True)
class Window:
    """``hours`` whole UTC hours, the last one the current hour: [start, end) in ms."""

    text: str
    hours: int
    start_ms: int
    end_ms: int

    @property
    def start(self) -> datetime:
        return _EPOCH + timedelta(milliseconds=self.start_ms)

    @property
    def end(self) -> datetime:
        return _EPOCH + timedelta(milliseconds=self.end_ms)

    @property
    def first_hour(self) -> int:
        """The first bucket, in hours since the epoch."""
        return self.start_ms // 1000 // HOUR_S


def window_hours(value: str) -> int:
    """The hours a ``window`` parameter names: ``<n>h`` or ``<n>d``, from 1h to 30d."""
    match = _WINDOW.fullmatch(value)
    hours = 0
    if match is not None:
        hours = int(match[1]) * (24 if match[2] == "d" else 1)
    if not 1 <= hours <= MAX_HOURS:
        raise Problem(
            422,
            "invalid-parameter",
            "window must be <n>h or <n>d, from 1h to 30d (e.g. 24h, 7d)",
            reason="query",
        )
    return hours


def window(params: Mapping[str, str], now_ms: int) -> Window:
    """The window of the query parameters at ``now_ms`` (``DEFAULT_WINDOW`` when absent)."""
    text = params.get("window", DEFAULT_WINDOW)
    hours = window_hours(text)
    current = now_ms // 1000 // HOUR_S
    return Window(text, hours, (current - hours + 1) * HOUR_S * 1000, now_ms)


@dataclass(frozen=True, slots=True)
class Row:
    """One row of ``QUERY`` (an asyncpg record has the same keys)."""

    kind: str
    key: str | None = None
    hour: int | None = None
    n: int = 0
    points: int | None = None
    name: str | None = None


def _row(record: Mapping[str, object] | Row) -> Row:
    if isinstance(record, Row):
        return record
    return Row(**{k: record[k] for k in Row.__slots__})  # type: ignore[arg-type]


def shape(records: Iterable[Mapping[str, object] | Row], span: Window) -> dict[str, object]:
    """The endpoint's body from the query's rows: every hour of the window present (zeros
    included), actions by points then name, movers by points then user id, refusals by
    count then reason."""
    rows = [_row(r) for r in records]
    actions = [r for r in rows if r.kind == "action" and r.key is not None]
    actions.sort(key=lambda r: (-(r.points or 0), r.key or ""))
    hours = {r.hour: r for r in rows if r.kind == "hour" and r.hour is not None}
    movers = [r for r in rows if r.kind == "mover" and r.key is not None]
    movers.sort(key=lambda r: (-(r.points or 0), r.key or ""))
    refusals = [r for r in rows if r.kind == "refusal" and r.key is not None]
    refusals.sort(key=lambda r: (-r.n, r.key or ""))
    single = {r.kind: r.n for r in rows if r.kind in ("active", "new")}
    by_hour = []
    for hour in range(span.first_hour, span.first_hour + span.hours):
        bucket = hours.get(hour)
        by_hour.append(
            {
                "hour": rfc3339(hour * HOUR_S * 1000),
                "awards": 0 if bucket is None else bucket.n,
                "points": 0 if bucket is None else bucket.points or 0,
            }
        )
    return {
        "window": span.text,
        "from": rfc3339(span.start_ms),
        "to": rfc3339(span.end_ms),
        "active_users": single.get("active", 0),
        "new_users": single.get("new", 0),
        "awards": sum(r.n for r in actions),
        "points": sum(r.points or 0 for r in actions),
        "by_action": [{"action": r.key, "awards": r.n, "points": r.points or 0} for r in actions],
        "points_by_hour": by_hour,
        "top_movers": [
            {"user_id": r.key, "name": r.name or r.key, "awards": r.n, "points": r.points or 0}
            for r in movers[:TOP_MOVERS]
        ],
        "refusals": [{"reason": r.key, "count": r.n} for r in refusals],
    }
