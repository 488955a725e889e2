"""What PostgreSQL knows of one period of a periodic board: the events that name it.

Event version 2 records in ``score_events.periods`` the periods an award counted in
(``shared.formats.period_tag``); ``archive``, ``rebuild`` and ``reconcile`` read a period's
standings through this one query, whose ``$1`` is the period's tag. A revoked event (its
``revoked_by`` set by the score API's revocation) never counts.
"""

from __future__ import annotations

# Per user: the points of the unrevoked events counted in the period, the arrival counter of
# the last one (the tie-break) and when it came (when the user reached that score).
PERIOD_TOTALS = """
SELECT user_id, sum(points)::bigint AS score, max(seq) AS last_seq,
    max(created_at) AS reached_at
FROM score_events
WHERE type = 'score' AND string_to_array(periods, ' ') @> ARRAY[$1::text]
    AND revoked_by IS NULL
GROUP BY user_id
"""
