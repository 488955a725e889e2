"""The benchmark harness: percentile maths, wrk output parsing, report rendering, the counts
that check the ticket path and the periodic boards' comparison, the persist scenario's rows,
the ticket scenario and three-board POSTs run by wrk against a real API, and the board memory
measurement (no timing is asserted: speed is measured by the benchmark, not tested)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from bench import boards, persist, stack, update
from bench.httpload import WrkError, parse_wrk_output
from bench.report import (
    BOARDS_PATH,
    MEMORY_PATH,
    ROUND_TRIPS_PATH,
    TICKET_ROW,
    render,
    verdicts,
)
from bench.stats import percentile, ratio, summary_ms
from devstack.servers import Server
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


ONE_BOARD_DELTA = {"evalsha": 1_000, "xread": 20, "hset": 3_000, "zadd": 1_000, "info": 1}
THREE_BOARD_DELTA = {"evalsha": 900, "xread": 18, "hset": 4_500, "zadd": 2_700, "xlen": 2}


def post_run(rps: float, accepted: float, delta: dict[str, int], **server: float) -> dict[str, Any]:
    """One saturation run of ``boards.post_run``: wrk's figures, the server's counts and the
    Redis commandstats delta."""
    counts = {
        "score_requests": accepted,
        "score_200": accepted,
        "accepted": accepted,
        "stream_events": accepted,
    } | server
    return wrk(rps) | {
        "server": counts,
        "redis_calls": delta,
        "redis": boards.redis_cost(delta, counts["accepted"]),
        "cpu": {"api_s": accepted * 200e-6, "redis_s": accepted * 40e-6, "script_s": 0.03},
    }


THREE_PERIODS = {"all-time:all": 1_000, "weekly:2030-W01": 1_000, "daily:2030-01-01": 1_000}


def boards_run(**changes: Any) -> dict[str, Any]:
    """The comparison's figures (as ``boards.run`` returns them) from two rounds: one board at
    4,000 and 4,200 req/s, three at 3,800 and 3,900."""
    runs = {
        "one": [post_run(4_000, 1_000, ONE_BOARD_DELTA), post_run(4_200, 1_000, ONE_BOARD_DELTA)],
        "three": [
            post_run(3_800, 900, THREE_BOARD_DELTA),
            post_run(3_900, 900, THREE_BOARD_DELTA),
        ],
    } | changes.pop("runs", {})
    periods = {"one": {"all-time:all": 1_000}, "three": THREE_PERIODS} | changes.pop("periods", {})
    out = boards.boards_figures(runs, boards.run_order(2), periods, changes.pop("own", True))
    out["memory"] = {
        "users": 100_000,
        "load_seconds": 1.5,
        "user_id_chars": 8,
        "member_chars": 25,
        "boards": [
            {"board_id": board, "period": period, "zset_bytes": 10_000_000,
             "members_bytes": 5_500_000, "zset_encoding": "skiplist",
             "members_encoding": "hashtable", "bytes_per_user": 155.0}
            for board, period in (("all-time", "all"), ("weekly", "2030-W01"),
                                  ("daily", "2030-01-01"))
        ],
        "names_bytes": 3_900_000,
        "names_encoding": "hashtable",
        "names_per_user": 39.0,
    }  # fmt: skip
    return out


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
            "boards": boards_run(),
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


def test_the_award_scripts_commands_are_read_from_its_source() -> None:
    assert {"zadd", "hset", "zrank", "pexpireat", "xadd", "time"} <= boards.AWARD_COMMANDS
    assert not boards.AWARD_COMMANDS & boards.SCRIPT_CALLS
    source = """redis.call('ZADD', k, 1, m) redis.pcall( "hGet", h, f) -- redis.call(name)"""
    assert boards.script_commands(source) == {"zadd", "hget"}


def test_redis_cost_splits_round_trips_from_commands_run_inside_the_script() -> None:
    delta = {"evalsha": 1_000, "xread": 50, "hset": 3_000, "zadd": 1_000, "info": 1, "xlen": 2}
    cost = boards.redis_cost(delta, 1_000)
    assert cost["script_calls"] == 1_000
    assert cost["script_calls_per_post"] == 1.0
    assert cost["top_level"] == 1_050  # EVALSHA and the follower's XREAD, not the harness's
    assert cost["top_level_per_post"] == 1.05
    assert cost["in_scripts"] == 4_000
    assert cost["in_scripts_per_post"] == 4.0
    assert math.isnan(boards.redis_cost(delta, 0)["script_calls_per_post"])


def test_the_runs_alternate_so_a_drift_weighs_on_both_boards() -> None:
    assert boards.run_order(2) == ["one", "three", "three", "one"]
    assert boards.run_order(3) == ["one", "three", "three", "one", "one", "three"]


def test_the_comparison_gives_the_ratio_of_means_and_the_extra_round_trips() -> None:
    run = boards_run()
    assert run["problems"] == []
    assert run["one"]["rps"] == 4_100
    assert run["three"]["rps"] == 3_850
    assert run["ratio"] == 3_850 / 4_100
    assert run["pair_ratios"] == [3_800 / 4_000, 3_900 / 4_200]
    assert run["one"]["redis"]["awards"] == 2_000  # summed over the runs
    assert run["three"]["redis"]["script_calls_per_post"] == 1.0
    assert run["extra_script_calls_per_post"] == 0
    assert run["three"]["redis"]["in_scripts_per_post"] == 8.0
    assert run["one"]["p99_us"] == 2_000
    assert run["one"]["api_cpu_us_per_award"] == pytest.approx(200)
    assert run["one"]["redis_cpu_us_per_award"] == pytest.approx(40)
    assert run["three"]["script_us_per_award"] == pytest.approx(0.06 / 1_800 * 1e6)


def test_a_second_script_call_per_award_shows_as_an_extra_round_trip() -> None:
    twice = THREE_BOARD_DELTA | {"evalsha": 1_800}
    run = boards_run(runs={"three": [post_run(3_800, 900, twice), post_run(3_900, 900, twice)]})
    assert run["extra_script_calls_per_post"] == 1.0
    met = {v.path: v.met for v in verdicts({"update": figures()["update"] | {"boards": run}})}
    assert met[ROUND_TRIPS_PATH] is False


@pytest.mark.parametrize(
    ("runs", "periods", "why"),
    [
        ({"one": [post_run(4_000, 0, ONE_BOARD_DELTA)] * 2}, {}, "one board, run 1: no award"),
        ({"three": [post_run(3_800, 900, THREE_BOARD_DELTA, score_200=899)] * 2}, {},
         "three boards, run 1: 900 POSTs, 899 answered 200"),
        ({"three": [post_run(3_800, 900, THREE_BOARD_DELTA, stream_events=1)] * 2}, {},
         "1 stream events for 900 awards"),
        ({"one": [post_run(4_000, 1_000, ONE_BOARD_DELTA) | {"errors": 3}] * 2}, {},
         "3 wrk errors"),
        ({}, {"three": {"all-time:all": 1_000, "weekly:2030-W01": 1_000}},
         "daily periods hold [] entries for 1000"),
        ({}, {"three": THREE_PERIODS | {"daily:2030-01-01": 990}},
         "daily periods hold [990] entries for 1000"),
        ({}, {"one": {"all-time:all": 1_000, "weekly:2030-W01": 1_000}},
         "periods of boards it does not have: ['weekly:2030-W01']"),
    ],
)  # fmt: skip
def test_the_boards_check_names_what_is_off(
    runs: dict[str, Any], periods: dict[str, Any], why: str
) -> None:
    problems = boards_run(runs=runs, periods=periods)["problems"]
    assert any(why in problem for problem in problems), problems


def test_a_period_boundary_inside_the_runs_is_no_problem() -> None:
    split = THREE_PERIODS | {"daily:2030-01-01": 400, "daily:2030-01-02": 700}
    assert boards_run(periods={"three": split})["problems"] == []


def test_report_puts_three_boards_next_to_one_with_round_trips_and_memory() -> None:
    text = render(figures())
    assert "### Periodic boards: three against one" in text
    row = next(line for line in text.splitlines() if line.startswith("| all-time, weekly, daily |"))
    assert "| 3,800 / 3,900 | 3,850 | 0.94x |" in row
    # Script calls, commands sent, in-script commands; API, Redis and script µs; per award.
    assert "| 1.000 | 1.020 | 8.0 | 200 | 40 | 33 |" in row
    one = next(line for line in text.splitlines() if line.startswith("| all-time only |"))
    assert "| 4,000 / 4,200 | 4,100 | 1.00x |" in one
    assert "order one three three one" in text
    assert (
        "| `weekly` | `2030-W01` | 10,000,000 | 5,500,000 | 155.0 | skiplist, hashtable |" in text
    )
    assert "| names (shared) |  |  | 3,900,000 | 39.0 | hashtable |" in text
    assert "`daily:2030-01-01` 1,000" in text
    verdict = {v.path: v for v in verdicts(figures())}
    assert verdict[BOARDS_PATH].met is True  # 0.94x: within 10 %
    assert verdict[BOARDS_PATH].measured == "0.94x (3,850 / 4,100 req/s)"
    assert verdict[ROUND_TRIPS_PATH].met is True
    assert verdict[ROUND_TRIPS_PATH].measured.startswith("+0.000 (1.000 / 1.000 script calls")
    assert verdict[MEMORY_PATH].met is True
    assert verdict[MEMORY_PATH].measured == (
        "all-time 155 B, weekly 155 B, daily 155 B; names 39 B, shared (at 100,000 users)"
    )


def test_three_boards_beyond_ten_percent_or_a_failed_check_miss_the_target() -> None:
    slow = boards_run(
        runs={"three": [post_run(3_000, 900, THREE_BOARD_DELTA), post_run(3_100, 900, {})]}
    )
    assert slow["ratio"] < 0.9
    met = {v.path: v.met for v in verdicts({"update": figures()["update"] | {"boards": slow}})}
    assert met[BOARDS_PATH] is False
    failed = boards_run(periods={"three": {"all-time:all": 1_000}})
    update_figures = figures()["update"] | {"boards": failed}
    verdict = {v.path: v for v in verdicts({"update": update_figures})}
    assert verdict[BOARDS_PATH].met is False
    assert "check failed" in verdict[BOARDS_PATH].measured
    assert "**Check failed:** three boards: weekly periods hold []" in render(
        figures() | {"update": update_figures}
    )


def test_round_trips_counted_on_a_shared_redis_say_so() -> None:
    shared = figures()
    shared["update"]["boards"] = boards_run(own=False)
    text = render(shared)
    assert "shared Redis: server-wide counts" in text
    assert "This run used a shared Redis (REDIS_URL)" in text
    assert "shared Redis" not in render(figures())


def test_a_run_from_before_periodic_boards_renders_without_them() -> None:
    old = figures()
    del old["update"]["boards"]
    text = render(old)
    assert "## 1. Update path" in text
    assert "Periodic boards" not in text
    assert BOARDS_PATH not in {v.path for v in verdicts(old)}


def test_the_copy_ceiling_writes_every_column_the_persister_inserts() -> None:
    inserted = re.search(r"INSERT INTO score_events \(([^)]*)\)", store._INSERT_EVENTS)
    assert inserted is not None
    assert [c.strip() for c in inserted.group(1).split(",")] == list(EventRow._fields)
    rows = persist.ceiling_rows(8)
    for column in EventRow._fields:
        # Dev tokens, and no moderation events (their moderator, reason, revocation, flag).
        if column not in ("jti", "iss", "moderator", "reason", "revocation", "flag"):
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


async def test_board_memory_measures_every_board_of_the_loaded_users_and_cleans_up(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    keys = BoardKeys(key_prefix, "global")
    memory = await boards.board_memory(redis_url, keys, 300)
    assert [b["board_id"] for b in memory["boards"]] == ["all-time", "weekly", "daily"]
    assert memory["boards"][0]["period"] == "all"
    for board in memory["boards"]:
        assert board["zset_bytes"] > 0
        assert board["members_bytes"] > 0
        assert board["bytes_per_user"] == (board["zset_bytes"] + board["members_bytes"]) / 300
        assert board["zset_encoding"] == "skiplist"  # past the listpack size, as a real board
    assert memory["names_per_user"] > 0
    assert memory["member_chars"] == len("0000000000000001:u0000000")
    assert not [key async for key in redis_client.scan_iter(match=f"{{{key_prefix}*")]


async def test_three_board_posts_cost_one_script_call_per_award_against_a_real_api(
    own_redis: Server, key_prefix: str, tmp_path: Path
) -> None:
    keys = BoardKeys(key_prefix, "global")
    tokens = update.write_tokens(tmp_path / "tokens.txt", count=50)
    env = {"BOARDS": json.dumps(boards.THREE_BOARDS)}
    async with api_process(own_redis.url, key_prefix, None, **env) as url:
        run = await asyncio.to_thread(
            boards.post_run, url, tokens, own_redis.url, keys, seconds=1, connections=4, tag="t"
        )
    periods = await boards.period_counts(own_redis.url, keys)
    assert {key.split(":")[0] for key in periods} == {"all-time", "weekly", "daily"}
    assert boards.boards_problems({"three": [run]}, {"three": periods}) == []
    cost = run["redis"]
    assert cost["awards"] == run["server"]["accepted"] > 0
    # This Redis serves this test alone: one EVALSHA per award and no other script call.
    assert cost["script_calls"] == cost["awards"]
    # Set once per key, by the award that creates it: 2 periods x 2 keys (twice at a boundary).
    assert run["redis_calls"]["pexpireat"] in (4, 8)
    assert math.isnan(run["cpu"]["api_s"])  # no pid given
    assert run["cpu"]["redis_s"] >= run["cpu"]["script_s"] > 0
