"""``python -m bench``: run every scenario on this machine and write ``docs/benchmarks.md``.

Starts embedded Redis and PostgreSQL (or uses REDIS_URL / DATABASE_URL, with a key prefix and
a database of its own), starts each service as a subprocess, runs the scenarios, writes the
report and the raw figures, and stops everything it started, also on failure.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from bench import analytics, boards, fanout, persist, reads, update
from bench.report import render
from bench.stack import ROOT, Stack, raise_fd_limit, say, temporary_dir
from shared.keys import BoardKeys

SCENARIOS = ("update", "reads", "fanout", "persist", "stats")
FINDINGS = Path(__file__).parent / "findings.md"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        mem_kib = int(info.readline().split()[1])
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (CI): small sizes")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="report directory")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run / fan-out level")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite benchmarks.md from benchmarks.json"
    )
    args = parser.parse_args(argv)
    if args.render:
        write_report(args.out, orjson.loads((args.out / "benchmarks.json").read_bytes()))
        return 0
    quick = args.quick
    seconds = args.seconds or (3.0 if quick else 10.0)
    users = 20_000 if quick else 1_000_000
    levels = [100, 500] if quick else [100, 1000, 5000, 10_000]
    events = 20_000 if quick else 200_000
    fd_limit = raise_fd_limit()
    say(f"RLIMIT_NOFILE soft limit raised to {fd_limit} (inherited by the services)")
    started = time.monotonic()
    figures: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
    }
    code = 0
    with temporary_dir() as workdir, Stack(workdir) as stack:
        figures["machine"] |= stack.versions()
        say(f"machine: {figures['machine']}")
        keys = BoardKeys(stack.prefix, "global")
        try:
            api = stack.start("score_api")
            say(f"score API on {api.url} (one worker)")
            if "update" in args.only:
                figures["update"] = update.run(
                    api, workdir, seconds, connections=32, redis_url=stack.redis_url, keys=keys
                )
                if figures["update"]["ticket"]["problems"]:
                    code = 1  # reported, and the report says why; the other scenarios run
                figures["update"]["boards"] = boards.run(
                    stack,
                    workdir / update.TOKENS_FILE,
                    seconds=seconds,
                    connections=32,
                    memory_users=20_000 if quick else boards.MEMORY_USERS,
                )
                if figures["update"]["boards"]["problems"]:
                    code = 1
            if "reads" in args.only:
                figures["reads"] = reads.run(
                    api, stack.redis_url, keys, users, seconds, connections=32
                )
            if "fanout" in args.only:
                gateway = stack.start(
                    "broadcast_gateway",
                    GATEWAY_PING_SECONDS="3600",
                    GATEWAY_PROTOCOL_PING_INTERVAL="3600",
                )
                say(f"gateway on {gateway.url}")
                # Only APIs without the board cache run meanwhile: an API's stream follower
                # would add XREADs to the Redis commands counted for the gateway.
                stack.stop(api)
                driver = stack.start("score_api", API_BOARD_CACHE_SECONDS="0")
                figures["fanout"] = fanout.run(
                    driver, gateway, stack.redis_url, workdir, levels, seconds, rate=20
                )
                stack.stop(driver)
                stack.stop(gateway)
            if "persist" in args.only:
                figures["persist"] = persist.run(stack, events, rate=2000, seconds=seconds * 2)
            if "stats" in args.only:
                figures["stats"] = analytics.run(stack)
        except Exception:
            traceback.print_exc()
            figures["error"] = traceback.format_exc(limit=3)
            code = 1
    figures["duration_s"] = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_bytes(
        orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    write_report(args.out, figures)
    say(f"wrote {args.out / 'benchmarks.md'} and benchmarks.json in {figures['duration_s']:.0f} s")
    return code


def write_report(out: Path, figures: dict[str, Any]) -> None:
    """The Markdown report: this run's figures, then what was tried (``bench/findings.md``)."""
    findings = FINDINGS.read_text() if FINDINGS.exists() else ""
    (out / "benchmarks.md").write_text(render(figures, findings))


if __name__ == "__main__":
    sys.exit(main())
