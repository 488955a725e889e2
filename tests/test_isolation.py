"""The suite's PostgreSQL isolation: each test gets its own empty database."""

from __future__ import annotations

import asyncpg


async def test_each_test_gets_an_empty_database_of_its_own(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert name.startswith("lb_test_")
    assert tables == 0
