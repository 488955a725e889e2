"""Turn the figures of one run into ``docs/benchmarks.md``: pure functions, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.analytics import TARGET_MS


@dataclass(frozen=True)
class Verdict:
    path: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def verdicts(figures: dict[str, Any]) -> list[Verdict]:
    """Each target of issue 7 against this run's figures."""
    out: list[Verdict] = []
    update = figures.get("update")
    if update:
        r = _num(update["ratio"])
        p99 = _num(update["half"]["p99_us"]) / 1000
        out.append(Verdict("`POST /api/score`, one worker", ">= 0.6x `/healthz`",
                           f"{r:.2f}x", r >= 0.6))  # fmt: skip
        out.append(Verdict("`POST /api/score`, half of saturation", "p99 < 10 ms",
                           f"{p99:.1f} ms", p99 < 10))  # fmt: skip
        ticket = update.get("ticket")
        if ticket:
            per = _num(ticket["requests_per_action"])
            out.append(Verdict("POST with a ticket (start + redeem)",
                               "<= 1 extra round trip per action",
                               f"{per:.3f} requests per award "
                               f"({_num(ticket['open_at_stop']):.0f} open at the stop)",
                               not ticket["problems"]))  # fmt: skip
        if update.get("boards"):
            out += board_verdicts(update["boards"])
    reads = figures.get("reads")
    if reads:
        r = _num(reads["board_ratio"])
        out.append(Verdict("`GET /api/score-board`", ">= 0.9x `/healthz`", f"{r:.2f}x", r >= 0.9))
    fanout = figures.get("fanout")
    if fanout:
        top = max(fanout["levels"], key=lambda level: level["clients"])
        kib = per_connection_kib(top, fanout["levels"][0])
        fps = _num(top["frames_per_second"])
        p99 = _num(top["latency"]["p99_ms"])
        n = top["clients"]
        out.append(Verdict("gateway, one process", "10,000 clients",
                           f"{top['connected']:,} of {n:,} connected",
                           top["connected"] >= 10_000))  # fmt: skip
        out.append(Verdict("gateway memory", "<= 16 KiB per connection",
                           f"{kib:.1f} KiB at {n:,}", kib <= 16))  # fmt: skip
        out.append(Verdict("gateway frames delivered", ">= 30,000 frames/s",
                           f"{fps:,.0f}/s at {n:,}", fps >= 30_000))  # fmt: skip
        out.append(Verdict("gateway POST-to-receive", "p99 < 100 ms at 10,000 clients, 20/s",
                           f"{p99:.0f} ms at {n:,}", p99 < 100))  # fmt: skip
        costs = [_num(level["redis_calls_per_change"]) for level in fanout["levels"]]
        worst = max(costs) if costs else math.nan
        out.append(Verdict("Redis commands per change per gateway",
                           "<= 3, constant in clients",
                           " / ".join(f"{c:.2f}" for c in costs), worst <= 3))  # fmt: skip
    persist = figures.get("persist")
    if persist:
        rate = _num(persist["events_per_second_steady"])
        lag = _num(persist["lag"]["lag_p99_s"])
        out.append(Verdict("persister throughput", ">= 20,000 events/s",
                           f"{rate:,.0f}/s", rate >= 20_000))  # fmt: skip
        out.append(Verdict("persister lag", "< 1 s at 2,000 updates/s",
                           f"p99 {lag:.2f} s at {persist['lag']['rate']:,.0f}/s",
                           lag < 1))  # fmt: skip
    analytics = figures.get("stats")
    if analytics:
        day = analytics["windows"]["24h"]
        p99 = _num(day["p99_ms"])
        out.append(Verdict("stats query, 24 h window", f"< {TARGET_MS:.0f} ms on "
                           f"{analytics['events']:,} events", f"p99 {p99:.1f} ms",
                           p99 < TARGET_MS))  # fmt: skip
    return out


def _met(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "**no**")


def per_connection_kib(level: dict[str, Any], first: dict[str, Any]) -> float:
    """Gateway RSS per connection against the fresh gateway (the first level's start)."""
    if "rss_after_bytes" not in level:
        return _num(level["rss_per_connection_bytes"]) / 1024
    baseline = _num(level.get("rss_baseline_bytes", first["rss_before_bytes"]))
    return (_num(level["rss_after_bytes"]) - baseline) / max(1.0, _num(level["connected"])) / 1024


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _wrk_row(name: str, w: dict[str, Any], ceiling: float) -> list[str]:
    rps = _num(w["rps"])
    return [
        name,
        _fmt(rps),
        f"{rps / ceiling:.2f}x" if ceiling else "n/a",
        _fmt(_num(w["p50_us"]) / 1000, 2),
        _fmt(_num(w["p99_us"]) / 1000, 2),
        _fmt(_num(w["errors"])),
    ]


WRK_HEADER = ["request", "req/s", "ratio to /healthz", "p50 ms", "p99 ms", "errors"]
TICKET_ROW = "`POST /api/actions` + `POST /api/score` (ticket)"


def ticket_section(update: dict[str, Any]) -> list[str]:
    """POST with a ticket (start + redeem) next to today's POST, and the harness's check."""
    plain, ticket = update["saturation"], update["ticket"]
    server = ticket["server"]
    awards = _num(server["accepted"])
    if ticket["problems"]:
        check = "**Check failed:** " + "; ".join(ticket["problems"]) + "."
    else:
        check = (
            f"Checked from the API's counters and the stream: {awards:,.0f} awards, each "
            f"from one redeem (`POST /api/score`, {_num(server['score_requests']):,.0f} sent, "
            f"all 200) and one start (`POST /api/actions`, {_num(server['start_requests']):,.0f}"
            f" sent, all 201); {_num(ticket['open_at_stop']):,.0f} tickets were started but not "
            "yet redeemed when the run stopped (at most one per connection), which is all that "
            "separates the requests per award from 2. Every award appended one stream event, "
            "the newest with its ticket and duration_ms."
        )
    return [
        "",
        "### POST with a ticket (start + redeem)",
        "",
        "Right after the saturation run above, with the same `wrk` settings: each action is "
        "`POST /api/actions` (start, a `ticket`-mode action with `min_seconds` 0) and then "
        "`POST /api/score` with the returned ticket (redeem), with the same user's token "
        "(`bench/wrk/ticket.lua`). Requests per award: the API's own request counts (both "
        "routes) over its awards. Ratio: awards per second against plain POSTs per second. "
        "Latencies above are per request; an action takes two.",
        "",
        _table(
            ["path", "awards/s", "requests/s", "requests per award", "ratio to plain POST"],
            [
                [
                    "`POST /api/score` (today's path)",
                    _fmt(_num(plain["rps"])),
                    _fmt(_num(plain["rps"])),
                    _fmt(_num(plain.get("requests_per_action")), 3),
                    "1.00x",
                ],
                [
                    TICKET_ROW,
                    _fmt(_num(ticket["actions_per_second"])),
                    _fmt(_num(ticket["rps"])),
                    _fmt(_num(ticket["requests_per_action"]), 3),
                    f"{_num(update['ticket_ratio']):.2f}x",
                ],
            ],
        ),
        "",
        check,
    ]


BOARDS_PATH = "POST with the three default periodic boards"
ROUND_TRIPS_PATH = "Redis round trips per POST, three boards"
MEMORY_PATH = "Redis memory per ranked user per board"


def board_verdicts(boards: dict[str, Any]) -> list[Verdict]:
    """Three boards against one: throughput within 10 %, no extra round trip, and the memory
    per ranked user per board (reported: the issue sets no bound)."""
    one, three = boards["one"], boards["three"]
    r = _num(boards["ratio"])
    calls = [_num(x["redis"]["script_calls_per_post"]) for x in (three, one)]
    extra = _num(boards["extra_script_calls_per_post"])
    shared = "" if boards.get("redis_own", True) else "; shared Redis: server-wide counts"
    out = [
        Verdict(BOARDS_PATH, "within 10% of one board",
                f"{r:.2f}x ({_fmt(_num(three['rps']))} / {_fmt(_num(one['rps']))} req/s)"
                + ("; **check failed**" if boards["problems"] else ""),
                r >= 0.9 and not boards["problems"]),
        Verdict(ROUND_TRIPS_PATH, "0 extra (at most 1) against one board",
                f"{extra:+.3f} ({calls[0]:.3f} / {calls[1]:.3f} script calls per award{shared})",
                abs(extra) < 0.01),
    ]  # fmt: skip
    memory = boards.get("memory")
    if memory:
        per = [_num(b["bytes_per_user"]) for b in memory["boards"]]
        out.append(Verdict(MEMORY_PATH, "reported",
                           ", ".join(f"{b['board_id']} {_fmt(x)} B" for b, x in
                                     zip(memory["boards"], per, strict=True))
                           + f"; names {_fmt(_num(memory['names_per_user']))} B, shared"
                           f" (at {memory['users']:,} users)",
                           all(not math.isnan(x) for x in per)))  # fmt: skip
    return out


def boards_section(boards: dict[str, Any]) -> list[str]:
    """Three boards against one (throughput, Redis commands) and the memory per user."""
    shared = (
        ""
        if boards.get("redis_own", True)
        else " **This run used a shared Redis (REDIS_URL): other clients' commands are in "
        "these counts.**"
    )
    rows = []
    for name, label in (("one", "all-time only"), ("three", "all-time, weekly, daily")):
        x = boards[name]
        cost = x["redis"]
        rows.append(
            [
                label,
                " / ".join(_fmt(_num(v)) for v in x["rps_runs"]),
                _fmt(_num(x["rps"])),
                "1.00x" if name == "one" else f"{_num(boards['ratio']):.2f}x",
                _fmt(_num(x["p99_us"]) / 1000, 2),
                _fmt(_num(cost["script_calls_per_post"]), 3),
                _fmt(_num(cost["top_level_per_post"]), 3),
                _fmt(_num(cost["in_scripts_per_post"]), 1),
                _fmt(_num(x.get("api_cpu_us_per_award")), 0),
                _fmt(_num(x.get("redis_cpu_us_per_award")), 0),
                _fmt(_num(x.get("script_us_per_award")), 0),
            ]
        )
    if boards["problems"]:
        check = "**Check failed:** " + "; ".join(boards["problems"]) + "."
    else:
        periods = boards["periods"]["three"]
        check = (
            "Checked: every POST of both APIs answered 200 with one award and one stream "
            "event; the three-board API's entries per board: "
            + ", ".join(f"`{k}` {v:,}" for k, v in periods.items())
            + "; the one-board API wrote no period."
        )
    parts = [
        "",
        "### Periodic boards: three against one",
        "",
        "Two more APIs, started side by side for this comparison and identical but for "
        "`BOARDS`: the all-time board alone, or the three default boards (all-time, weekly, "
        "daily: each award also lands in the current week's and day's sorted sets, in the "
        "same award script). Each has a key prefix of its own, so neither follows the other's "
        "stream. Same `wrk` settings as above, after a short warm-up of each; runs in the "
        f"order {' '.join(boards['order'])} (req/s listed in that API's order), so a drift of "
        "the host weighs on both alike. Ratio: mean req/s of the three-board API over the "
        "one-board API's (per round: "
        + " / ".join(f"{_num(x):.2f}x" for x in boards["pair_ratios"])
        + "). Redis commands from `INFO commandstats` around each run, per award: script "
        "calls (`EVALSHA`: the award's round trips; the API pipelines concurrent ones, so "
        "network round trips are fewer still), every command the clients sent (the same plus "
        "the stream follower's `XREAD`), and the commands the award script ran inside Redis "
        "(Redis CPU, no round trip). Per award: the API process's CPU (`/proc`), Redis's "
        "CPU (`INFO cpu`) and the award script's run time (`INFO commandstats` µs of "
        "`EVALSHA`: wall time, above the CPU when Redis is preempted); all share the 2 cores "
        "with `wrk`." + shared,
        "",
        _table(
            [
                "BOARDS",
                "req/s per run",
                "mean req/s",
                "ratio to one board",
                "worst p99 ms",
                "script calls / award",
                "commands sent / award",
                "in-script commands / award",
                "API CPU µs / award",
                "Redis CPU µs / award",
                "script µs / award",
            ],
            rows,
        ),
        "",
        check,
    ]
    memory = boards.get("memory")
    if memory:
        parts += [
            "",
            f"Redis memory: {memory['users']:,} users bulk-loaded into the three boards' "
            "layout (the award script's: member `<seq>:<user_id>` on each board, "
            f"{memory['member_chars']} characters for these {memory['user_id_chars']}-character "
            "ids; a longer id costs more on every board), then `MEMORY USAGE <key> SAMPLES 0` "
            "over the number of users, on the Redis of the machine table. A periodic board "
            "holds only the users who scored in that period; the names hash is one for all "
            "boards.",
            "",
            _table(
                [
                    "board",
                    "period",
                    "sorted set B",
                    "members hash B",
                    "bytes per ranked user",
                    "encodings",
                ],
                [
                    [
                        f"`{b['board_id']}`",
                        f"`{b['period']}`",
                        _fmt(_num(b["zset_bytes"])),
                        _fmt(_num(b["members_bytes"])),
                        _fmt(_num(b["bytes_per_user"]), 1),
                        f"{b['zset_encoding']}, {b['members_encoding']}",
                    ]
                    for b in memory["boards"]
                ]
                + [
                    [
                        "names (shared)",
                        "",
                        "",
                        _fmt(_num(memory["names_bytes"])),
                        _fmt(_num(memory["names_per_user"]), 1),
                        memory["names_encoding"],
                    ]
                ],
            ),
        ]
    return parts


def render(figures: dict[str, Any], findings: str = "") -> str:
    """The whole Markdown report."""
    m = figures.get("machine", {})
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); raw figures in `docs/benchmarks.json`. "
        "Every service runs as one process on the same machine as the load generators, so "
        "absolute numbers drift with the host: compare the ratios to each scenario's ceiling, "
        "measured in the same run.",
        "",
        f"Run: {figures.get('started', '?')}, {figures.get('duration_s', 0):.0f} s"
        + (" (`--quick`)" if figures.get("quick") else ""),
        "",
        "## Machine",
        "",
        _table(["", ""], [[k, str(v)] for k, v in m.items()]),
        "",
        "## Targets",
        "",
        _table(
            ["path", "target", "measured", "met"],
            [
                [v.path, v.target, v.measured, _met(v.met)]
                for v in verdicts(figures)
            ],
        ),
    ]  # fmt: skip
    update = figures.get("update")
    if update:
        ceiling = _num(update["ceiling"]["rps"])
        parts += [
            "",
            "## 1. Update path",
            "",
            f"`wrk`, 1 thread, {update['connections']} connections, {update['seconds']:.0f} s "
            "per run; rotating tokens of 1,000 users, a fresh `Idempotency-Key` per request. "
            "Half of saturation is paced (each of 16 connections pauses between requests; "
            f"offered ~{_num(update['half_target_rps']):,.0f} req/s).",
            "",
            _table(
                WRK_HEADER,
                [
                    _wrk_row("`GET /healthz` (ceiling)", update["ceiling"], ceiling),
                    _wrk_row("`POST /api/score`, saturation", update["saturation"], ceiling),
                    *(
                        [_wrk_row(TICKET_ROW + ", saturation", update["ticket"], ceiling)]
                        if update.get("ticket")
                        else []
                    ),
                    _wrk_row("`POST /api/score`, half of saturation", update["half"], ceiling),
                ],
            ),
        ]
        if update.get("ticket"):
            parts += ticket_section(update)
        if update.get("boards"):
            parts += boards_section(update["boards"])
    reads = figures.get("reads")
    if reads:
        ceiling = _num(reads["ceiling"]["rps"])
        parts += [
            "",
            "## 2. Board reads",
            "",
            f"Board of {reads['users']:,} ranked users, bulk-loaded into Redis in "
            f"{_num(reads['load_seconds']):.1f} s. `wrk`, 1 thread, {reads['connections']} "
            f"connections, {reads['seconds']:.0f} s per run; ranks of random users.",
            "",
            _table(
                WRK_HEADER,
                [
                    _wrk_row("`GET /healthz` (ceiling)", reads["ceiling"], ceiling),
                    _wrk_row("`GET /api/score-board`", reads["board"], ceiling),
                    _wrk_row("`GET /api/users/{id}/rank?around=5`", reads["rank"], ceiling),
                ],
            ),
        ]
    fanout = figures.get("fanout")
    if fanout:
        rows = []
        for level in fanout["levels"]:
            lat = level["latency"]
            rows.append(
                [
                    f"{level['clients']:,}",
                    f"{level['connected']:,}",
                    _fmt(_num(level["frames_per_second"])),
                    f"{_num(level['frames_per_second']) / 30_000:.2f}x",
                    _fmt(_num(level["gateway_messages_per_second"])),
                    _fmt(_num(lat["p50_ms"]), 1),
                    _fmt(_num(lat["p99_ms"]), 1),
                    _fmt(_num(lat["max_ms"]), 1),
                    _fmt(per_connection_kib(level, fanout["levels"][0]), 1),
                    _fmt(_num(level["gateway_cpu_percent"])),
                    _fmt(_num(level.get("broadcast_ms", float("nan"))), 1),
                    _fmt(_num(level["connect_seconds"]), 1),
                ]
            )
        parts += [
            "",
            "## 3. Fan-out",
            "",
            f"One gateway process; the driver POSTs big awards for 10 users at "
            f"{fanout['rate']:.0f}/s through the API for {fanout['seconds']:.0f} s per level, "
            "so every POST changes the top 10. Clients: `bench/wsload.py` (plain asyncio "
            "protocols on uvloop) in one (≤ 1,000) or two load processes, each with "
            "RLIMIT_NOFILE raised to "
            f"its hard limit ({fanout['fd_limit']:,}). Latency: POST sent → first frame showing "
            "its result, on ~100 sampled connections per load process. No natural ceiling "
            "exists for fan-out on one box, so the ratio is to the 30,000 frames/s target. "
            "ms / broadcast: the gateway's wall time to write one version to every client.",
            "",
            _table(
                [
                    "clients",
                    "connected",
                    "frames/s received",
                    "ratio to target",
                    "frames/s written",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "KiB RSS / conn",
                    "gateway CPU %",
                    "ms / broadcast",
                    "connect s",
                ],
                rows,
            ),
            "",
            "## 4. Redis cost",
            "",
            "Top-level commands the gateway sent (`INFO commandstats`: `XREAD` + `EVALSHA` "
            "minus the API's one `EVALSHA` per POST, + `PING`; commands run inside scripts "
            "are not round trips and are not counted), per board version it published and per "
            "POST, during the fan-out window.",
            "",
            _table(
                [
                    "clients",
                    "board versions",
                    "POSTs",
                    "gateway commands",
                    "per change",
                    "per POST",
                ],
                [
                    [
                        f"{level['clients']:,}",
                        _fmt(_num(level["board_versions"])),
                        _fmt(_num(level["posts"])),
                        _fmt(_num(level["redis_gateway_calls"])),
                        _fmt(_num(level["redis_calls_per_change"]), 2),
                        _fmt(_num(level["redis_calls_per_post"]), 2),
                    ]
                    for level in fanout["levels"]
                ],
            ),
        ]
    persist = figures.get("persist")
    if persist:
        lag = persist["lag"]
        ceiling = _num(persist["copy_ceiling_per_second"])
        whole = _num(persist["events_per_second"])
        parts += [
            "",
            "## 5. Persist path",
            "",
            f"{persist['events']:,} valid v1 events preloaded with pipelined XADD "
            f"({_num(persist['preload_seconds']):.1f} s), then one persister started and "
            "timed until `persister_events_persisted_total` reached them all. Ceiling: a bare "
            "`COPY` of the same number of rows into a temporary copy of `score_events`, in "
            "transactions of 1,000, from one connection. Lag: events appended straight to the "
            "stream at a steady rate; lag = now - when the oldest not-yet-persisted event was "
            "appended, sampled every 0.25 s (first fifth skipped).",
            "",
            _table(
                ["measure", "value", "ratio to ceiling"],
                [
                    [
                        "COPY ceiling",
                        f"{_num(persist['copy_ceiling_per_second']):,.0f} rows/s",
                        "1.00x",
                    ],
                    [
                        "drain, whole (from start)",
                        f"{_num(persist['events_per_second']):,.0f} events/s",
                        f"{whole / ceiling:.2f}x",
                    ],
                    [
                        "drain, steady (10-90 %)",
                        f"{_num(persist['events_per_second_steady']):,.0f} events/s",
                        f"{_num(persist['ratio']):.2f}x",
                    ],
                    [
                        f"lag at {lag['rate']:,.0f}/s for {lag['seconds']:.0f} s",
                        f"p50 {_num(lag['lag_p50_s']):.2f} s, p99 {_num(lag['lag_p99_s']):.2f} s, "
                        f"max {_num(lag['lag_max_s']):.2f} s",
                        "",
                    ],
                ],
            ),
        ]
    analytics = figures.get("stats")
    if analytics:
        parts += [
            "",
            "## 6. Stats query",
            "",
            f"`GET /api/admin/stats`' query (`services.score_api.stats.QUERY`) on "
            f"{analytics['events']:,} score events of {analytics['users']:,} users over 30 "
            f"days, in a database of its own (generated and analysed in "
            f"{_num(analytics['load_seconds']):.0f} s), from one connection after a warm-up.",
            "",
            _table(
                ["window", "awards in it", "runs", "p50", "p99"],
                [
                    [
                        f"`{text}`",
                        f"{w['awards']:,}",
                        str(w["runs"]),
                        f"{_num(w['p50_ms']):.1f} ms",
                        f"{_num(w['p99_ms']):.1f} ms",
                    ]
                    for text, w in analytics["windows"].items()
                ],
            ),
        ]
    if findings.strip():
        parts += ["", findings.strip()]
    return "\n".join(parts) + "\n"
