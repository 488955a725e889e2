"""The anomaly flag job: every ``FLAG_INTERVAL_SECONDS`` the persister evaluates the rules of
``services.persister.flagrules`` over the last ``FLAG_WINDOW_SECONDS`` and records what they
raise in ``user_flags``.

One evaluation is one PostgreSQL transaction under ``pg_try_advisory_xact_lock``: while one
persister evaluates, the others skip their turn (an evaluation is idempotent, so replicas
whose timers differ merely repeat it). It reads each active user's points (score events not
revoked, created in ``[now - window, now]``, users neither banned nor quarantined), the
(user, rule) pairs dismissed (or actioned by the automatic quarantine) less than one window
ago, evaluates, and upserts: an open flag per (user, rule) gets the new observed value,
threshold and ``last_seen``; otherwise a flag is opened with ``first_seen = last_seen = now``.
"now" is the injected clock's, for every time the job writes or compares.

With ``AUTO_QUARANTINE=true`` every user flagged in an evaluation is then quarantined through
the injected ``quarantine`` (``shared.moderator.Moderator`` in the persister, ``by`` =
``auto:flags``) and their flags are marked ``actioned``. A user whose quarantine failed keeps
an open flag and is tried again at the next evaluation. PostgreSQL failures are logged and
retried at the next interval; nothing here stops the persist loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from services.persister import metrics
from services.persister.errors import PG_ERRORS
from services.persister.flagrules import Flag, FlagRules, evaluate
from services.persister.settings import PersisterSettings
from shared.boards import Slots
from shared.clock import Clock, ms
from shared.formats import EventType, Field
from shared.moderator import Moderator

log = logging.getLogger(__name__)

# Names "leaderboard flags" among advisory locks (the migrations use 0x6C626D69).
LOCK_KEY = 0x6C62_666C
AUTO_BY = "auto:flags"

_WINDOW_POINTS = """
SELECT e.user_id, sum(e.points)::bigint AS points
FROM score_events e
WHERE e.type = 'score' AND e.revoked_by IS NULL AND e.created_at >= $1 AND e.created_at <= $2
    AND NOT EXISTS (
        SELECT 1 FROM users u WHERE u.user_id = e.user_id AND (u.banned OR u.quarantined))
GROUP BY e.user_id
"""

# Decisions that keep a rule quiet for one window (flagrules: suppression).
_SUPPRESSED = """
SELECT DISTINCT user_id, rule FROM user_flags
WHERE decided_at > $1
    AND (state = 'dismissed' OR (state = 'actioned' AND decided_by = $2))
"""

# xmax = 0: the row was inserted by this statement, not updated.
_UPSERT = """
INSERT INTO user_flags AS f
    (user_id, rule, window_seconds, observed, threshold, first_seen, last_seen)
SELECT user_id, rule, $5, observed, threshold, $6, $6
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
    AS t(user_id, rule, observed, threshold)
ON CONFLICT (user_id, rule) WHERE state = 'open' DO UPDATE SET
    window_seconds = excluded.window_seconds,
    observed = excluded.observed,
    threshold = excluded.threshold,
    last_seen = excluded.last_seen
RETURNING f.flag_id, f.user_id, f.rule, (f.xmax = 0) AS inserted
"""

_ACTIONED = """
UPDATE user_flags SET state = 'actioned', decided_by = $2, decided_at = $3, decision = $4
WHERE flag_id = ANY($1::bigint[]) AND state = 'open'
"""


class Quarantine(Protocol):
    async def __call__(self, user_id: str, reason: str, by: str) -> None:
        """Quarantine the user (idempotent); raise if it could not be done."""
        ...


class QuarantineRefused(Exception):
    """Redis refused the quarantine (the user is banned there)."""


def moderator_quarantine(moderator: Moderator, slots: Slots, clock: Clock) -> Quarantine:
    """``quarantine`` carried out by the moderation script, on every retained period too."""

    async def quarantine(user_id: str, reason: str, by: str) -> None:
        extras = {Field.BY: by, Field.REASON: reason}
        done = await moderator(EventType.QUARANTINE, user_id, "", extras, slots.retained(ms(clock)))
        if getattr(done, "status", "") == "refused":
            raise QuarantineRefused(f"{user_id}: {getattr(done, 'state', '')}")

    return quarantine


@dataclass(frozen=True, slots=True)
class Raised:
    flag_id: int
    flag: Flag
    new: bool  # opened by this evaluation (else an open flag was updated)


@dataclass(frozen=True, slots=True)
class Evaluation:
    population: int  # active users in the window
    raised: list[Raised]
    quarantined: list[str]  # users the automatic quarantine took


def reason_for(flags: Sequence[Flag], window_seconds: int) -> str:
    """The automatic quarantine's reason: what each rule saw."""
    parts = [
        f"{f.rule}: {f.observed} points in {window_seconds} s, above {f.threshold}" for f in flags
    ]
    return "; ".join(parts)


class FlagJob:
    def __init__(
        self,
        pool: asyncpg.Pool,
        rules: FlagRules,
        clock: Clock,
        *,
        interval_seconds: float,
        auto_quarantine: bool = False,
        quarantine: Quarantine | None = None,
    ) -> None:
        if auto_quarantine and quarantine is None:
            raise ValueError("AUTO_QUARANTINE needs a quarantine")
        self.pool = pool
        self.rules = rules
        self.clock = clock
        self.interval_seconds = interval_seconds
        self.auto_quarantine = auto_quarantine
        self.quarantine = quarantine

    @classmethod
    def from_settings(
        cls,
        settings: PersisterSettings,
        pool: asyncpg.Pool,
        clock: Clock,
        quarantine: Quarantine | None = None,
    ) -> FlagJob:
        rules = FlagRules(
            window_seconds=settings.flag_window_seconds,
            points_per_hour=settings.flag_points_per_hour,
            outlier_factor=settings.flag_outlier_factor,
            min_population=settings.flag_min_population,
        )
        return cls(
            pool,
            rules,
            clock,
            interval_seconds=settings.flag_interval_seconds,
            auto_quarantine=settings.auto_quarantine,
            quarantine=quarantine,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Evaluate every interval, the first one interval after the start (a persister
        starting has a backlog to store first), until ``stopping`` is set; never raises."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval_seconds)
            if not stopping.is_set():
                await self.run_once()

    async def run_once(self) -> Evaluation | None:
        """One evaluation, its failure logged; None if it failed or another persister held
        the lock."""
        started = time.perf_counter()
        try:
            evaluation = await self.evaluate()
        except PG_ERRORS as exc:
            metrics.FLAG_EVALUATIONS.labels("failed").inc()
            log.warning("flag evaluation failed, retrying in %ss: %r", self.interval_seconds, exc)
            return None
        except Exception:
            metrics.FLAG_EVALUATIONS.labels("failed").inc()
            log.exception("flag evaluation failed, retrying in %ss", self.interval_seconds)
            return None
        if evaluation is None:
            metrics.FLAG_EVALUATIONS.labels("locked").inc()
            return None
        metrics.FLAG_EVALUATIONS.labels("done").inc()
        metrics.FLAG_SECONDS.observe(time.perf_counter() - started)
        if evaluation.raised:
            log.info(
                "flags raised",
                extra={
                    "population": evaluation.population,
                    "new": sum(r.new for r in evaluation.raised),
                    "updated": sum(not r.new for r in evaluation.raised),
                    "quarantined": len(evaluation.quarantined),
                },
            )
        return evaluation

    async def evaluate(self) -> Evaluation | None:
        """Evaluate the rules now (the clock's); None if another persister is evaluating."""
        at = datetime.fromtimestamp(self.clock.time(), UTC)
        window = timedelta(seconds=self.rules.window_seconds)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
                return None
            rows = await conn.fetch(_WINDOW_POINTS, at - window, at)
            points = {r["user_id"]: int(r["points"]) for r in rows}
            quiet = await conn.fetch(_SUPPRESSED, at - window, AUTO_BY)
            flags = evaluate(points, self.rules, {(r["user_id"], r["rule"]) for r in quiet})
            raised = await self._upsert(conn, flags, at) if flags else []
        for r in raised:
            if r.new:
                metrics.FLAGS_RAISED.labels(r.flag.rule).inc()
        quarantined = await self._quarantine(raised, at) if self.auto_quarantine else []
        return Evaluation(len(points), raised, quarantined)

    async def _upsert(
        self, conn: asyncpg.Connection, flags: list[Flag], at: datetime
    ) -> list[Raised]:
        by_key = {(f.user_id, f.rule): f for f in flags}
        returned = await conn.fetch(
            _UPSERT,
            [f.user_id for f in flags],
            [f.rule for f in flags],
            [f.observed for f in flags],
            [f.threshold for f in flags],
            self.rules.window_seconds,
            at,
        )
        return sorted(
            (
                Raised(r["flag_id"], by_key[r["user_id"], r["rule"]], r["inserted"])
                for r in returned
            ),
            key=lambda r: r.flag,
        )

    async def _quarantine(self, raised: list[Raised], at: datetime) -> list[str]:
        """Quarantine each flagged user, then mark their flags actioned."""
        assert self.quarantine is not None
        by_user: dict[str, list[Raised]] = {}
        for r in raised:
            by_user.setdefault(r.flag.user_id, []).append(r)
        done = []
        for user, theirs in by_user.items():
            reason = reason_for([r.flag for r in theirs], self.rules.window_seconds)
            try:
                await self.quarantine(user, reason, AUTO_BY)
            except Exception as exc:
                # The flag stays open: the next evaluation flags the user and tries again.
                log.warning("automatic quarantine of %s failed: %r", user, exc)
                continue
            metrics.AUTO_QUARANTINED.inc()
            done.append(user)
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(
                        _ACTIONED,
                        [r.flag_id for r in theirs],
                        AUTO_BY,
                        at,
                        f"{EventType.QUARANTINE}: {reason}",
                    )
            except PG_ERRORS as exc:
                # Quarantined all the same: the persister marks open flags actioned when it
                # stores the quarantine event.
                log.warning("could not mark the flags of %s actioned: %r", user, exc)
        return done
