"""The live page in a real browser (Debian's Chromium driven by Playwright) against real servers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, async_playwright, expect

from devstack.devtoken import issue
from services.broadcast_gateway.server import Gateway
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
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
        token = issue(self.settings, user, name=name)
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"{user}-{action}"}
        response = await self.http.post("/api/score", json={"action": action}, headers=headers)
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


@pytest.fixture
async def site(redis_url: str, key_prefix: str) -> AsyncIterator[Site]:
    api_port, gateway_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{api_port}"
    async with run_gateway(
        redis_url, key_prefix, gateway_port=gateway_port, gateway_allowed_origins=[origin]
    ) as gateway:
        settings = ApiSettings(
            redis_url=redis_url, redis_key_prefix=key_prefix, api_gateway_url=gateway.url
        )
        async with (
            serve(create_app(settings), port=api_port) as url,
            httpx.AsyncClient(base_url=url) as http,
        ):
            yield Site(url, settings, http, gateway, gateway_port)


async def open_page(
    browser: Browser, site: Site, width: int, height: int
) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
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


async def test_action_panel_shows_the_answer_and_the_error(browser: Browser, site: Site) -> None:
    page, problems = await open_page(browser, site, 390, 844)
    try:
        await page.fill("#token", issue(site.settings, "carol", name="Carol"))
        await page.select_option("#action", "quest_complete")
        await page.click("#submit")
        await expect(page.locator("#result")).to_have_attribute("data-kind", "ok")
        await expect(page.locator("#result")).to_contain_text("score 10, rank 1")
        await expect(page.locator('#board li[data-user-id="carol"] .score')).to_have_text("10")

        await page.fill("#token", "not-a-token")
        await page.click("#submit")
        await expect(page.locator("#result")).to_have_attribute("data-kind", "error")
        await expect(page.locator("#result")).to_contain_text("401")
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
        "gateway_url": site.settings.api_gateway_url
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
