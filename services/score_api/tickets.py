"""Action tickets: a player starts an action and receives a ticket; completing it redeems it.

The rules, which ``lua/ticket.lua`` and ``lua/award.lua`` apply atomically in Redis (and
``tests/models.py`` holds as a Python reference the tests compare the scripts with):

- Starting a ``ticket``-mode action issues a ticket of 128 random bits, bound to the user and
  the action, valid from ``not_before`` = start + ``min_seconds`` until ``expires_at`` =
  start + ``max_seconds``. Starting one more than ``max_open`` cancels the oldest open one.
- Redeeming it (``POST /api/score`` with the ticket) awards the points once, ever:

      unknown, expired, cancelled, another user's or action's  -> 422 ticket-invalid
      already redeemed (under another Idempotency-Key)         -> 409 ticket-used
      before not_before                                        -> 425 too-early (stays usable)
      otherwise                                                -> awarded; the event records
                                                                  the ticket and duration_ms
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from shared.formats import TICKET


def new_ticket_id() -> str:
    """128 random bits from the operating system's CSPRNG, as lowercase hex."""
    ticket = os.urandom(16).hex()
    assert TICKET.matches(ticket)
    return ticket


def rfc3339(ms: int) -> str:
    """A Unix time in milliseconds as RFC 3339 UTC, e.g. ``2026-12-01T13:00:30.250Z``."""
    # Whole seconds, then exact milliseconds: a float division could print .249 for .250.
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC) + timedelta(milliseconds=ms % 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
