"""The live page in a real browser (Debian's Chromium driven by Playwright) against real servers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from devstack.devtoken import issue
from services.broadcast_gateway.server import Gateway
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from services.score_api.tokens import SCOPE_REPORT
from tests.browser_fixtures import SCREENSHOTS, XSS_NAME
from tests.gateway_fixtures import run_gateway
from tests.support import free_port, serve

# One ticket action that may be completed 2 s after its start: the panel's whole wait.
QUEST = {"quest": {"points": 10, "mode": "ticket", "min_seconds": 2, "max_seconds": 60}}
# Three boards: one that never resets, one a day, and one every 10 s (the shortest allowed).
BOARDS: dict[str, Any] = {
    "all-time": {"reset": "never"},
    "daily": {"reset": "daily"},
    "tens": {"reset": "interval", "interval_seconds": 10},
}
RESETS_IN = re.compile(r"^resets in (\d+ d( \d+ h)?|\d+ h( \d+ min)?|\d+ min( \d+ s)?|\d+ s)$")
RESETS_IN_SECONDS = re.compile(r"^resets in ([1-9]|10) s$")
INTERVAL_PERIOD = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UNITS = {"d": 86_400, "h": 3_600, "min": 60, "s": 1}


@dataclass
class Site:
    url: str
    settings: ApiSettings
    http: httpx.AsyncClient
    gateway: Gateway
    gateway_port: int

    async def award(
        self, user: str, name: str | None = None, action: str = "level_up"
    ) -> dict[str, object]:
        """Award as a game server reports it (scope score:report): any action, any mode."""
        token = issue(self.settings, "game-server", scopes=(SCOPE_REPORT,))
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"{user}-{action}"}
        award: dict[str, str] = {"action": action, "user_id": user}
        if name is not None:
            award["name"] = name
        response = await self.http.post("/api/score", json=award, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body


@asynccontextmanager
async def open_site(redis_url: str, key_prefix: str, **api: Any) -> AsyncIterator[Site]:
    """The score API (with ``api`` as ApiSettings keywords) and the gateway, both real."""
    api_port, gateway_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{api_port}"
    # The gateway serves the same family of boards as the API, or the page's tabs lead nowhere.
    boards = {"boards": api["boards"]} if "boards" in api else {}
    async with run_gateway(
        redis_url,
        key_prefix,
        gateway_port=gateway_port,
        gateway_allowed_origins=[origin],
        **boards,
    ) as gateway:
        settings = ApiSettings(
            redis_url=redis_url, redis_key_prefix=key_prefix, api_gateway_url=gateway.url, **api
        )
        async with (
            serve(create_app(settings), port=api_port) as url,
            httpx.AsyncClient(base_url=url) as http,
        ):
            yield Site(url, settings, http, gateway, gateway_port)


@pytest.fixture
async def site(redis_url: str, key_prefix: str) -> AsyncIterator[Site]:
    """The default catalogue: ticket, server and client actions, default limits."""
    async with open_site(redis_url, key_prefix) as opened:
        yield opened


@pytest.fixture
async def quest_site(redis_url: str, key_prefix: str) -> AsyncIterator[Site]:
    async with open_site(redis_url, key_prefix, actions=QUEST) as opened:
        yield opened


async def open_page(
    browser: Browser, site: Site, width: int, height: int, *, clock: str = "real"
) -> tuple[Page, list[str]]:
    """The page, live; ``clock`` "behind": its wall clock an hour behind the server's,
    "fake": Playwright's clock (flowing, but the test may fast-forward it)."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text
            else None
        ),
    )
    if clock == "behind":
        await page.clock.set_system_time(time.time() - 3600)
    elif clock == "fake":
        await page.clock.install()
    await page.goto(site.url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=10_000)
    return page, problems


async def test_page_shows_the_board_and_live_updates_and_names_stay_text(
    browser: Browser, site: Site
) -> None:
    await site.award("alice", name="Alice")
    await site.award("bob", name="Bob", action="match_win")
    page, problems = await open_page(browser, site, 1280, 800)
    try:
        board = page.locator("#board li")
        await expect(board).to_have_count(2)
        await expect(board.nth(0).locator(".name")).to_have_text("Alice")
        await expect(board.nth(0).locator(".score")).to_have_text("25")
        # The default BOARDS: a tab per board, all-time first and selected, which never resets.
        tabs = page.get_by_role("tab")
        await expect(tabs).to_have_text(["all-time", "weekly", "daily"])
        await expect(tabs.first).to_have_attribute("aria-selected", "true")
        await expect(page.locator("#period")).to_be_hidden()

        await site.award("bob", name="Bob", action="achievement_unlocked")
        bob = page.locator('#board li[data-user-id="bob"]')
        await expect(bob.locator(".score")).to_have_text("70", timeout=5_000)
        await expect(bob.locator(".rank")).to_have_text("1")
        await expect(bob).to_have_class("changed")

        await site.award("mallory", name=XSS_NAME, action="achievement_unlocked")
        mallory = page.locator('#board li[data-user-id="mallory"] .name')
        await expect(mallory).to_have_text(XSS_NAME, timeout=5_000)
        assert await page.locator("#board img").count() == 0
        await page.screenshot(path=SCREENSHOTS / "board-desktop.png")
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=SCREENSHOTS / "board-phone.png", full_page=True)
        assert problems == []
    finally:
        await page.close()


async def test_action_panel_lists_the_catalogue_and_posts_a_client_action(
    browser: Browser, site: Site
) -> None:
    page, problems = await open_page(browser, site, 390, 844)
    try:
        options = page.locator("#action option")
        await expect(options).to_have_text(
            [
                "quest_complete (+10, ticket)",
                "level_up (+25, ticket)",
                "match_win (+20, server)",
                "achievement_unlocked (+50, server)",
                "daily_login (+5, client)",
            ]
        )
        result = page.locator("#result")
        await page.fill("#token", "not-a-token")
        await page.select_option("#action", "quest_complete")
        await page.click("#start")
        await expect(result).to_have_attribute("data-kind", "error")
        await expect(result).to_contain_text("401")

        await page.fill("#token", issue(site.settings, "carol", name="Carol"))
        await page.select_option("#action", "daily_login")
        await expect(page.locator("#mode-note")).to_have_text(
            "Posts directly (at most 1 a day, 20 h apart)."
        )
        await expect(page.locator("#start")).to_be_hidden()
        await page.click("#submit")
        await expect(result).to_have_attribute("data-kind", "ok")
        await expect(result).to_contain_text("+5 for Carol: score 5, rank 1")
        await expect(page.locator('#board li[data-user-id="carol"] .score')).to_have_text("5")

        # Refused with Retry-After: the panel says so and waits, it does not retry.
        await page.click("#submit")
        await expect(result).to_have_attribute("data-kind", "error")
        await expect(result).to_contain_text("429")
        await expect(page.locator("#countdown")).to_have_text(re.compile(r"^Try again in \d+ h"))
        await expect(page.locator("#submit")).to_be_disabled()
        assert problems == []
    finally:
        await page.close()


async def test_ticket_action_counts_down_then_completes(browser: Browser, quest_site: Site) -> None:
    """Start, a countdown from the server's own times (the page's wall clock is an hour off,
    which must not show), Complete enabled only once not_before passed, then the award."""
    page, problems = await open_page(browser, quest_site, 1280, 800, clock="behind")
    try:
        countdown, complete = page.locator("#countdown"), page.locator("#complete")
        await expect(countdown).to_have_attribute("aria-live", "polite")
        await expect(page.locator("#action option")).to_have_text(["quest (+10, ticket)"])
        await expect(page.locator("#mode-note")).to_have_text(
            "Start it, then complete it after 2 s and within 60 s."
        )
        await expect(page.locator("#submit")).to_be_hidden()
        await expect(complete).to_be_disabled()
        await page.fill("#token", issue(quest_site.settings, "quinn", name="Quinn"))
        await page.click("#start")
        await expect(countdown).to_have_text(re.compile(r"^Complete in [12] s$"))
        first = int(re.findall(r"\d+", await countdown.inner_text())[0])
        assert first > 0
        await expect(complete).to_be_disabled()
        await page.screenshot(path=SCREENSHOTS / "panel-countdown.png")
        if first == 2:
            await expect(countdown).to_have_text("Complete in 1 s", timeout=3_000)
            await expect(complete).to_be_disabled()
        await expect(complete).to_be_enabled(timeout=5_000)
        await expect(countdown).to_have_text("Ready: complete it now.")
        await complete.click()
        result = page.locator("#result")
        await expect(result).to_have_attribute("data-kind", "ok")
        await expect(result).to_contain_text("+10 for Quinn: score 10, rank 1")
        await expect(countdown).to_have_text("")
        await expect(complete).to_be_disabled()
        quinn = page.locator('#board li[data-user-id="quinn"]')
        await expect(quinn.locator(".name")).to_have_text("Quinn")
        await expect(quinn.locator(".score")).to_have_text("10")
        assert problems == []
    finally:
        await page.close()


async def test_too_early_waits_for_retry_after_and_an_expired_ticket_says_so(
    browser: Browser, quest_site: Site
) -> None:
    """The page's clock runs ahead (fast-forwarded): the server answers 425, the panel waits
    its Retry-After before Complete is offered again; past expires_at the ticket is gone."""
    page, problems = await open_page(browser, quest_site, 1280, 800, clock="fake")
    try:
        countdown, complete, result = (
            page.locator("#countdown"),
            page.locator("#complete"),
            page.locator("#result"),
        )
        await page.fill("#token", issue(quest_site.settings, "rita", name="Rita"))
        await page.click("#start")
        await expect(countdown).to_have_text(re.compile(r"^Complete in [12] s$"))
        await page.clock.fast_forward(2_500)
        await expect(complete).to_be_enabled()
        await complete.click()
        await expect(result).to_contain_text("425")
        await expect(countdown).to_have_text(re.compile(r"^Complete in [12] s$"))
        await expect(complete).to_be_disabled()
        await expect(complete).to_be_enabled(timeout=5_000)
        await complete.click()
        await expect(result).to_contain_text("+10 for Rita: score 10, rank 1")

        await page.click("#start")
        await expect(countdown).to_have_text(re.compile(r"^Complete in [12] s$"))
        await page.clock.fast_forward("01:01")
        await expect(countdown).to_have_text("The ticket expired: start the action again.")
        await expect(complete).to_be_disabled()
        await expect(page.locator("#start")).to_be_enabled()
        assert problems == []
    finally:
        await page.close()


async def test_server_action_cannot_be_posted_from_the_panel(browser: Browser, site: Site) -> None:
    page, problems = await open_page(browser, site, 390, 844)
    try:
        await page.fill("#token", issue(site.settings, "sam", name="Sam"))
        await page.select_option("#action", "match_win")
        await expect(page.locator("#mode-note")).to_contain_text(
            "Reported by the game server", ignore_case=True
        )
        await expect(page.locator("#submit")).to_be_disabled()
        await expect(page.locator("#start")).to_be_hidden()
        await expect(page.locator("#complete")).to_be_hidden()
        await page.press("#action", "Enter")  # no form submission sneaks past the button
        await expect(page.locator("#result")).to_have_text("")
        assert problems == []
    finally:
        await page.close()


async def test_player_writes_off_disables_the_panel(
    browser: Browser, redis_url: str, key_prefix: str
) -> None:
    async with open_site(redis_url, key_prefix, player_writes=False) as site:
        assert (await site.http.get("/config.json")).json()["player_writes"] is False
        page, problems = await open_page(browser, site, 390, 844)
        try:
            notice = page.locator("#writes-off")
            await expect(notice).to_be_visible()
            await expect(notice).to_contain_text("Player writes are off")
            await expect(notice).to_contain_text("game servers")
            await expect(page.locator("#action option")).to_have_count(5)
            for control in ("#token", "#action", "#submit", "#start", "#complete"):
                await expect(page.locator(control)).to_be_disabled()
            await site.award("uma", name="Uma", action="match_win")  # a game server still can
            await expect(page.locator('#board li[data-user-id="uma"] .score')).to_have_text("20")
            await page.screenshot(path=SCREENSHOTS / "panel-writes-off.png")
            assert problems == []
        finally:
            await page.close()


async def test_page_reconnects_after_a_gateway_restart(browser: Browser, site: Site) -> None:
    page, problems = await open_page(browser, site, 1280, 800)
    try:
        await site.gateway.shutdown()  # closes the page's connection with 1012, frees the port
        await expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        await site.award("dave", name="Dave")
        async with run_gateway(
            site.settings.redis_url,
            site.settings.redis_key_prefix,
            gateway_port=site.gateway_port,
            gateway_allowed_origins=[site.url],
            boards=site.settings.boards,
        ):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "live", timeout=20_000
            )
            await expect(page.locator('#board li[data-user-id="dave"] .score')).to_have_text("25")
        assert problems == []
    finally:
        await page.close()


async def test_page_is_served_with_a_content_security_policy(site: Site) -> None:
    page = await site.http.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (await site.http.get("/static/app.js")).status_code == 200
    assert (await site.http.get("/config.json")).json() == {
        "gateway_url": site.settings.api_gateway_url,
        "player_writes": True,
    }


async def test_page_resyncs_after_a_lost_diff(browser: Browser, site: Site) -> None:
    """A diff lost on the way (dropped by the test between the real gateway and the page)
    leaves a version gap; the page must ask for a snapshot and converge."""
    await site.award("erin", name="Erin")
    page = await browser.new_page()
    sent_by_page: list[str] = []
    dropped: list[str] = []

    async def relay(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if not dropped and isinstance(message, str) and '"type":"diff"' in message:
                dropped.append(message)
                return
            route.send(message)

        def to_server(message: str | bytes) -> None:
            sent_by_page.append(str(message))
            server.send(message)

        server.on_message(to_page)
        route.on_message(to_server)

    await page.route_web_socket(re.compile(r".*/ws/score(\?.*)?$"), relay)
    try:
        await page.goto(site.url)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        await site.award("frank", name="Frank")  # this diff is dropped
        for _ in range(200):  # the next award must travel in a diff of its own
            if dropped:
                break
            await asyncio.sleep(0.05)
        await site.award("grace", name="Grace", action="achievement_unlocked")
        grace = page.locator('#board li[data-user-id="grace"] .score')
        await expect(grace).to_have_text("50", timeout=10_000)
        await expect(page.locator('#board li[data-user-id="frank"] .score')).to_have_text("25")
        assert len(dropped) == 1
        assert any('"resync"' in message for message in sent_by_page)
        board = (await site.http.get("/api/score-board")).json()["board"]
        shown = await page.locator("#board li").evaluate_all(
            "rows => rows.map(r => r.dataset.userId)"
        )
        assert shown == [entry["user_id"] for entry in board]
    finally:
        await page.close()


def shown_seconds(text: str) -> int:
    """What a countdown such as "resets in 3 h 12 min" says, in seconds."""
    return sum(int(n) * UNITS[unit] for n, unit in re.findall(r"(\d+) (d|h|min|s)\b", text))


async def current_periods(site: Site) -> dict[str, dict[str, Any]]:
    """GET /api/boards, by board id."""
    response = await site.http.get("/api/boards")
    assert response.status_code == 200, response.text
    return {entry["board_id"]: entry for entry in response.json()["boards"]}


def seconds_until(ends_at: str) -> float:
    return datetime.fromisoformat(ends_at).timestamp() - time.time()


async def test_tabs_switch_boards_and_count_down_to_each_reset_without_a_reload(
    browser: Browser, redis_url: str, key_prefix: str
) -> None:
    """A tab per board; the selected one's period and a countdown to its reset, counted from
    the server's times (the page's wall clock is an hour off, which must not show); switching
    tabs switches the subscription; the 10 s board empties at its boundary. One page load."""
    async with open_site(redis_url, key_prefix, boards=BOARDS) as site:
        page, problems = await open_page(browser, site, 1280, 800, clock="behind")
        loads: list[object] = []
        page.on("load", lambda loaded: loads.append(loaded))  # any load from now on is a reload
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        await page.evaluate("window.loadedOnce = true")
        try:
            board, rows = page.locator("#board"), page.locator("#board li")
            period_id, resets = page.locator("#period-id"), page.locator("#resets")
            tabs = page.get_by_role("tab")
            await expect(page.get_by_role("tablist")).to_be_visible()
            await expect(tabs).to_have_text(["all-time", "daily", "tens"])
            await expect(page.locator("#tab-all-time")).to_have_attribute("aria-selected", "true")
            await expect(board).to_have_attribute("data-period", "all")
            await expect(page.locator("#period")).to_be_hidden()  # all-time never resets

            daily = page.locator("#tab-daily")
            await daily.click()
            await expect(daily).to_have_attribute("aria-selected", "true")
            await expect(page.locator("#tab-all-time")).to_have_attribute("aria-selected", "false")
            await expect(page.locator("#board-panel")).to_have_attribute(
                "aria-labelledby", "tab-daily"
            )
            periods = await current_periods(site)
            await expect(board).to_have_attribute("data-period", periods["daily"]["period"])
            await expect(period_id).to_have_text(periods["daily"]["period"])
            await expect(resets).to_have_text(RESETS_IN)
            left = seconds_until(periods["daily"]["ends_at"])
            assert abs(shown_seconds(await resets.inner_text()) - left) < 70
            await expect(page.locator("#empty")).to_be_visible()

            await site.award("dana", name="Dana")
            await expect(page.locator('#board li[data-user-id="dana"] .score')).to_have_text("25")
            await expect(rows).to_have_count(1)

            # The keyboard: the arrow moves the selection, and the focus, to the next tab.
            await expect(daily).to_be_focused()
            await page.keyboard.press("ArrowRight")
            tens = page.locator("#tab-tens")
            await expect(tens).to_have_attribute("aria-selected", "true")
            await expect(tens).to_be_focused()
            await expect(board).to_have_attribute("data-board", "tens")
            await expect(board).to_have_attribute("data-period", INTERVAL_PERIOD)
            await expect(resets).to_have_text(RESETS_IN_SECONDS)
            first = await board.get_attribute("data-period")
            assert first is not None
            await expect(period_id).to_have_text(first)

            # Enough of the period left to see an award in it: else wait for the next one.
            if shown_seconds(await resets.inner_text()) < 4:
                await expect(board).not_to_have_attribute("data-period", first, timeout=11_000)
                first = await board.get_attribute("data-period")
                assert first is not None
                await expect(resets).to_have_text(RESETS_IN_SECONDS)
            periods = await current_periods(site)
            shown = shown_seconds(await resets.inner_text())
            if periods["tens"]["period"] == first:
                assert abs(shown - seconds_until(periods["tens"]["ends_at"])) < 2.5
            await site.award("tess", name="Tess", action="match_win")
            await expect(page.locator('#board li[data-user-id="tess"] .score')).to_have_text("20")
            await page.screenshot(path=SCREENSHOTS / "board-tabs.png")

            # The boundary: the new period's snapshot (empty), its id and a new countdown.
            await expect(board).not_to_have_attribute("data-period", first, timeout=11_000)
            await expect(rows).to_have_count(0)
            await expect(page.locator("#empty")).to_be_visible()
            second = await board.get_attribute("data-period")
            assert second is not None
            assert INTERVAL_PERIOD.match(second)
            assert second > first
            await expect(period_id).to_have_text(second)
            await expect(resets).to_have_text(RESETS_IN_SECONDS)
            assert (await current_periods(site))["tens"]["period"] == second

            # Back to daily: its period still holds both awards.
            await page.locator("#tab-daily").click()
            await expect(page.locator('#board li[data-user-id="tess"] .score')).to_have_text("20")
            await expect(rows).to_have_count(2)

            assert loads == []
            assert await page.evaluate("window.loadedOnce === true")
            assert [url.rpartition("?")[2] for url in sockets] == [
                "board=daily",
                "board=tens",
                "board=daily",
            ]
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=SCREENSHOTS / "board-tabs-phone.png", full_page=True)
            assert problems == []
        finally:
            await page.close()


async def test_a_reconnect_follows_the_selected_board(
    browser: Browser, redis_url: str, key_prefix: str
) -> None:
    async with open_site(redis_url, key_prefix, boards=BOARDS) as site:
        page, problems = await open_page(browser, site, 390, 844)
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        try:
            status, board = page.locator("#status"), page.locator("#board")
            await page.locator("#tab-daily").click()
            daily = (await current_periods(site))["daily"]["period"]
            await expect(board).to_have_attribute("data-period", daily)
            await site.gateway.shutdown()
            await expect(status).to_have_attribute("data-state", "reconnecting")
            await site.award("dave", name="Dave")
            async with run_gateway(
                site.settings.redis_url,
                site.settings.redis_key_prefix,
                gateway_port=site.gateway_port,
                gateway_allowed_origins=[site.url],
                boards=BOARDS,
            ):
                await expect(status).to_have_attribute("data-state", "live", timeout=20_000)
                await expect(page.locator('#board li[data-user-id="dave"] .score')).to_have_text(
                    "25"
                )
            await expect(page.locator("#tab-daily")).to_have_attribute("aria-selected", "true")
            assert len(sockets) >= 2
            assert all(url.endswith("?board=daily") for url in sockets)
            assert problems == []
        finally:
            await page.close()


async def test_frames_naming_another_board_are_ignored(
    browser: Browser, redis_url: str, key_prefix: str
) -> None:
    """A late frame of the board left behind (injected here into the new board's socket)
    must not reach the table."""
    async with open_site(redis_url, key_prefix, boards=BOARDS) as site:
        await site.award("erin", name="Erin")
        page = await browser.new_page()
        routes: list[WebSocketRoute] = []

        def relay(route: WebSocketRoute) -> None:
            route.connect_to_server()  # relays both ways, untouched
            routes.append(route)

        await page.route_web_socket(re.compile(r".*/ws/score\?board=.*$"), relay)
        try:
            board = page.locator("#board")
            await page.goto(site.url)
            await expect(page.locator("#status")).to_have_attribute("data-state", "live")
            await page.locator("#tab-daily").click()
            daily = (await current_periods(site))["daily"]["period"]
            await expect(board).to_have_attribute("data-period", daily)
            await expect(page.locator('#board li[data-user-id="erin"]')).to_have_count(1)
            ghost = {"rank": 1, "user_id": "ghost", "name": "Ghost", "score": 999}
            routes[-1].send(
                orjson.dumps(
                    {
                        "type": "snapshot",
                        "version": 10**6,
                        "board_id": "all-time",
                        "period": "all",
                        "board": [ghost],
                    }
                ).decode()
            )
            await site.award("frank", name="Frank", action="match_win")  # a frame after it
            await expect(page.locator('#board li[data-user-id="frank"] .score')).to_have_text("20")
            await expect(page.locator('#board li[data-user-id="ghost"]')).to_have_count(0)
            await expect(board).to_have_attribute("data-period", daily)
            assert await board.get_attribute("data-version") != str(10**6)
        finally:
            await page.close()
