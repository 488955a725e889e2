"""The live page in a real browser (Debian's Chromium driven by Playwright) against real servers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, async_playwright, expect

from devstack.devtoken import issue
from services.broadcast_gateway.server import Gateway
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from services.score_api.tokens import SCOPE_REPORT
from tests.gateway_fixtures import run_gateway
from tests.support import free_port, serve

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS_NAME = "<img src=x onerror=alert(1)>"
SCREENSHOTS = Path("/tmp")
# One ticket action that may be completed 2 s after its start: the panel's whole wait.
QUEST = {"quest": {"points": 10, "mode": "ticket", "min_seconds": 2, "max_seconds": 60}}


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


def require_chromium() -> None:
    """A missing browser fails the suite (the Makefile installs it); it never skips."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium` "
            "(never `playwright install`, which downloads and fails here)"
        )


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def open_site(redis_url: str, key_prefix: str, **api: Any) -> AsyncIterator[Site]:
    """The score API (with ``api`` as ApiSettings keywords) and the gateway, both real."""
    api_port, gateway_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{api_port}"
    async with run_gateway(
        redis_url, key_prefix, gateway_port=gateway_port, gateway_allowed_origins=[origin]
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

    await page.route_web_socket(re.compile(r".*/ws/score$"), relay)
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
