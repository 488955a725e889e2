"""The benchmark's pure parts: percentile maths, wrk output parsing and report rendering."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.httpload import WrkError, parse_wrk_output
from bench.report import render, verdicts
from bench.stats import percentile, ratio, summary_ms


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
