"""What the persister treats as "PostgreSQL is away or refusing": retried, or reported unready.

Data errors among these (``store.is_data_error``) are handled per row, never retried.
"""

from __future__ import annotations

import asyncpg

# InternalClientError: asyncpg's connection state machine breaks when the server goes away
# mid-operation (seen when PostgreSQL shuts down under load); a fresh connection recovers.
PG_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
