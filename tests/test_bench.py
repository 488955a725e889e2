"""The benchmark harness: percentile maths, wrk output parsing, report rendering, the counts
that check the ticket path, the persist scenario's rows, and the ticket scenario run by wrk
against a real API (no timing is asserted: speed is measured by the benchmark, not tested)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from bench import persist, stack, update
from bench.httpload import WrkError, parse_wrk_output
from bench.report import TICKET_ROW, render, verdicts
from bench.stats import percentile, ratio, summary_ms
from services.persister import store
from services.persister.batch import EventRow
from services.persister.migrate import migrate
from shared.keys import BoardKeys
from tests.support import api_process, stream_events


def test_percentile_uses_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_ignores_input_order() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_percentile_of_nothing_is_nan_and_p_is_bounded() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_summary_is_in_milliseconds() -> None:
    summary = summary_ms([0.001, 0.002, 0.010])
    assert summary == {"p50_ms": 2.0, "p99_ms": 10.0, "max_ms": 10.0, "samples": 3.0}


def test_ratio_to_a_missing_ceiling_is_nan() -> None:
    assert ratio(5, 10) == 0.5
    assert math.isnan(ratio(5, 0))


WRK_LINE = (
    'WRKJSON {"requests": 2000, "duration_us": 2000000, "bytes": 1, "errors_status": 1, '
    '"errors_connect": 0, "errors_read": 0, "errors_write": 0, "errors_timeout": 2, '
    '"p50_us": 900, "p90_us": 1500, "p99_us": 4000, "max_us": 9000, "mean_us": 1000.0}'
)


def test_wrk_summary_line_gives_rate_and_error_total() -> None:
    figures = parse_wrk_output("Running 2s test\n" + WRK_LINE + "\n")
    assert figures["rps"] == 1000
    assert figures["errors"] == 3
    assert figures["p99_us"] == 4000


def test_wrk_output_without_summary_is_an_error() -> None:
    with pytest.raises(WrkError, match="no summary"):
        parse_wrk_output("unable to connect\n")


def wrk(rps: float, p99_us: float = 2000) -> dict[str, float]:
    return {"rps": rps, "p50_us": 1000, "p99_us": p99_us, "errors": 0}


CONNECTIONS = 32


def ticket_run(**server: float) -> dict[str, Any]:
    """A clean ticket run's figures (as ``update.run_ticket`` returns them), ``server``
    counts changed; its check recomputed from them."""
    counts = {
        "start_requests": 1_030.0,
        "start_201": 1_030.0,
        "score_requests": 1_000.0,
        "score_200": 1_000.0,
        "accepted": 1_000.0,
        "stream_events": 1_000.0,
    } | server
    raw = wrk(6_000) | {
        "duration_us": 300_000,
        "count_started": 1_030,
        "count_redeemed": 990,
        "count_start_refused": 0,
        "count_redeem_refused": 0,
        "count_unmatched": 0,
        "server": counts,
        "newest_event": {"ticket": "ab" * 16, "duration_ms": "3"},
    }
    return update.ticket_figures(raw, CONNECTIONS)


def figures() -> dict[str, Any]:
    level = {
        "clients": 10_000,
        "connected": 10_000,
        "frames_per_second": 40_000.0,
        "gateway_messages_per_second": 41_000.0,
        "latency": {"p50_ms": 20.0, "p99_ms": 150.0, "max_ms": 300.0, "samples": 100.0},
        "rss_per_connection_bytes": 12 * 1024,
        "gateway_cpu_percent": 90.0,
        "connect_seconds": 10.0,
        "board_versions": 200,
        "posts": 200,
        "redis_gateway_calls": 400,
        "redis_calls_per_change": 2.0,
        "redis_calls_per_post": 2.0,
    }
    return {
        "started": "2030-01-01T00:00:00+00:00",
        "duration_s": 600.0,
        "quick": False,
        "machine": {"CPU": "Test CPU", "cores": "2"},
        "update": {
            "ceiling": wrk(10_000),
            "saturation": wrk(7_000),
            "ticket": ticket_run(),
            "ticket_ratio": 0.48,
            "half": wrk(3_500, p99_us=12_000),
            "half_target_rps": 3_500,
            "ratio": 0.7,
            "connections": 32,
            "seconds": 10,
        },
        "reads": {
            "users": 1_000_000,
            "load_seconds": 20.0,
            "ceiling": wrk(10_000),
            "board": wrk(5_000),
            "rank": wrk(4_000),
            "board_ratio": 0.5,
            "rank_ratio": 0.4,
            "connections": 32,
            "seconds": 10,
        },
        "fanout": {
            "levels": [level | {"clients": 100, "connected": 100}, level],
            "rate": 20,
            "seconds": 10,
            "fd_limit": 20_000,
        },
        "persist": {
            "events": 200_000,
            "copy_ceiling_per_second": 100_000.0,
            "events_per_second": 20_000.0,
            "events_per_second_steady": 25_000.0,
            "ratio": 0.25,
            "preload_seconds": 5.0,
            "drain_seconds": 10.0,
            "lag": {
                "rate": 2000,
                "seconds": 20,
                "lag_p50_s": 0.1,
                "lag_p99_s": 0.5,
                "lag_max_s": 0.7,
                "samples": 80,
                "appended": 40_000,
            },
        },
    }


def test_verdicts_compare_each_target_with_the_figures() -> None:
    met = {v.target: v.met for v in verdicts(figures())}
    assert met[">= 0.6x `/healthz`"] is True
    assert met["p99 < 10 ms"] is False
    assert met[">= 0.9x `/healthz`"] is False
    assert met["<= 16 KiB per connection"] is True
    assert met[">= 30,000 frames/s"] is True
    assert met["p99 < 100 ms at 10,000 clients, 20/s"] is False
    assert met["<= 3, constant in clients"] is True
    assert met[">= 20,000 events/s"] is True
    assert met["< 1 s at 2,000 updates/s"] is True


def test_report_has_a_table_per_scenario_with_ratios_and_the_machine() -> None:
    text = render(figures(), findings="## Findings\n\nsomething we tried")
    for heading in (
        "## Machine",
        "## Targets",
        "## 1. Update path",
        "## 2. Board reads",
        "## 3. Fan-out",
        "## 4. Redis cost",
        "## 5. Persist path",
        "## Findings",
    ):
        assert heading in text
    assert "| Test CPU |" in text.replace("| CPU | Test CPU |", "| Test CPU |")
    assert "0.70x" in text  # POST ratio to /healthz
    assert "0.50x" in text  # board ratio
    assert "1.33x" in text  # frames/s against the 30,000 target
    assert "0.25x" in text  # persister steady rate against COPY


def test_report_renders_a_partial_run() -> None:
    partial = {"machine": {"CPU": "x"}, "started": "now", "duration_s": 1.0}
    text = render(partial)
    assert "## Targets" in text
    assert "## 1. Update path" not in text


def test_a_clean_ticket_run_shows_one_start_and_one_redeem_per_award() -> None:
    run = ticket_run()
    assert run["problems"] == []
    assert run["actions_per_second"] == 990 / 0.3  # what wrk read back within its window
    assert run["requests_per_action"] == 2_030 / 1_000
    assert run["open_at_stop"] == 30


@pytest.mark.parametrize(
    ("server", "wrk_counts", "why"),
    [
        ({"accepted": 0.0, "score_200": 0.0, "score_requests": 0.0, "stream_events": 0.0},
         {"count_redeemed": 0}, "no award landed"),
        # A second start per award (a harness that retried, or sent starts it never redeemed).
        ({"start_requests": 2_000.0, "start_201": 2_000.0}, {}, "more than one start"),
        ({"start_requests": 1_031.0}, {}, "1 starts refused"),
        ({"score_requests": 1_010.0}, {}, "a redeem must be one request"),
        ({"score_200": 990.0}, {}, "a redeem must be one request"),
        ({"stream_events": 999.0}, {}, "999 stream events"),
        ({}, {"count_redeem_refused": 3}, "redeem_refused: 3"),
        ({}, {"count_unmatched": 1}, "unmatched: 1"),
        ({}, {"errors": 2}, "wrk errors: 2"),
        ({}, {"count_redeemed": 1_001}, "wrk read 1001 awards"),
        ({}, {"count_redeemed": 900}, "wrk read 900 awards"),
        ({}, {"newest_event": {"action": "bench_quest"}}, "carries no ticket"),
    ],
)  # fmt: skip
def test_the_ticket_check_names_what_is_off(
    server: dict[str, float], wrk_counts: dict[str, Any], why: str
) -> None:
    run = ticket_run(**server) | wrk_counts
    problems = update.ticket_problems(run, CONNECTIONS)
    assert any(why in problem for problem in problems), problems


METRICS = """\
# HELP score_api_requests_total HTTP requests
# TYPE score_api_requests_total counter
score_api_requests_total{route="start_action",method="POST",status="201"} 30.0
score_api_requests_total{route="start_action",method="POST",status="429"} 2.0
score_api_requests_total{route="post_score",method="POST",status="200"} 25.0
score_api_requests_total{route="post_score",method="POST",status="409"} 1.0
score_api_requests_total{route="healthz",method="GET",status="200"} 7.0
score_api_requests_total_created{route="healthz",method="GET",status="200"} 1.7e+09
score_api_updates_accepted_total 25.0
"""


def test_metrics_are_summed_by_name_and_labels() -> None:
    assert stack.metric_sum(METRICS, "score_api_requests_total") == 65
    assert stack.metric_sum(METRICS, "score_api_requests_total", status="200") == 32
    assert stack.metric_sum(METRICS, "score_api_requests_total", route="start_action") == 32
    assert stack.metric_sum(METRICS, "score_api_updates_accepted") == 0  # a prefix is no name
    assert update.server_counts(METRICS) == {
        "start_requests": 32,
        "start_201": 30,
        "score_requests": 26,
        "score_200": 25,
        "accepted": 25,
    }


def test_report_puts_the_ticket_path_next_to_todays_post() -> None:
    text = render(figures())
    assert "### POST with a ticket (start + redeem)" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {TICKET_ROW} |"))
    assert "| 3,300 |" in row  # awards/s
    assert "| 2.030 |" in row  # requests per award
    assert "| 0.48x |" in row  # against plain POSTs/s
    assert "30 tickets were started but not yet redeemed" in text
    met = {v.path: v.met for v in verdicts(figures())}
    assert met["POST with a ticket (start + redeem)"] is True


def test_a_failed_ticket_check_fails_its_target_and_says_why() -> None:
    failed = figures()
    failed["update"]["ticket"] = ticket_run(stream_events=10.0)
    text = render(failed)
    assert "**Check failed:** 10 stream events for 1000 awards" in text
    met = {v.path: v.met for v in verdicts(failed)}
    assert met["POST with a ticket (start + redeem)"] is False


def test_a_run_from_before_tickets_renders_without_them() -> None:
    old = figures()
    del old["update"]["ticket"], old["update"]["ticket_ratio"]
    text = render(old)
    assert "## 1. Update path" in text
    assert "ticket" not in text.split("## 2.")[0].lower()


def test_the_copy_ceiling_writes_every_column_the_persister_inserts() -> None:
    inserted = re.search(r"INSERT INTO score_events \(([^)]*)\)", store._INSERT_EVENTS)
    assert inserted is not None
    assert [c.strip() for c in inserted.group(1).split(",")] == list(EventRow._fields)
    rows = persist.ceiling_rows(8)
    for column in EventRow._fields:
        if column not in ("jti", "iss", "moderator"):  # dev tokens and no moderation events
            assert any(getattr(row, column) is not None for row in rows), column
    # A player's redeemed ticket, or a game server's report: never both on one award.
    assert all((row.ticket is None) != (row.reporter is None) for row in rows)
    assert all((row.ticket is None) == (row.duration_ms is None) for row in rows)


async def test_the_copy_ceiling_runs_on_the_migrated_schema(database_url: str) -> None:
    await migrate(database_url)
    assert await persist.copy_ceiling(database_url, 2_500) > 0


async def test_the_ticket_scenario_starts_and_redeems_every_award_against_a_real_api(
    redis_url: str, key_prefix: str, tmp_path: Path, redis_client: redis.asyncio.Redis
) -> None:
    keys = BoardKeys(key_prefix, "global")
    tokens = update.write_tokens(tmp_path / "tokens.txt", count=50)
    async with api_process(redis_url, key_prefix, None, **stack.api_env()) as url:
        run = await asyncio.to_thread(
            update.run_ticket, url, tokens, redis_url, keys, seconds=1, connections=4
        )
    assert run["problems"] == []
    server = run["server"]
    assert server["accepted"] > 0
    assert server["score_requests"] == server["score_200"] == server["accepted"]
    assert 0 <= server["start_requests"] - server["accepted"] <= 4
    assert run["requests"] == run["count_started"] + run["count_redeemed"]
    events = await stream_events(redis_client, keys.stream)
    assert len(events) == server["accepted"]
    assert {e["action"] for e in events} == {update.TICKET_ACTION}
    # One award per ticket, each redeemed by the user who started it (the X-Request-ID names
    # the token of its start, so a mixed-up queue would show as ticket-invalid refusals).
    assert len({e["ticket"] for e in events}) == len(events)
    assert all(e["duration_ms"].isdigit() for e in events)
    assert all(e["request_id"].endswith(f"-r{int(e['user_id'][1:]) + 1}") for e in events)


async def test_the_ticket_check_fails_when_redeems_are_refused(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    keys = BoardKeys(key_prefix, "global")
    tokens = update.write_tokens(tmp_path / "tokens.txt", count=20)
    early = {"bench_quest": {"points": 10, "mode": "ticket", "min_seconds": 60}}
    env = stack.api_env() | {"ACTIONS": json.dumps(early)}
    async with api_process(redis_url, key_prefix, None, **env) as url:
        run = await asyncio.to_thread(
            update.run_ticket, url, tokens, redis_url, keys, seconds=1, connections=2
        )
    assert any("redeem_refused" in problem for problem in run["problems"])
    assert any("no award landed" in problem for problem in run["problems"])
