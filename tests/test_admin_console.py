"""The moderation console (GET /admin) in a real browser (Debian's Chromium driven by
Playwright) against a real score API process, Redis and PostgreSQL (events persisted by the
real persist loop; flags seeded into user_flags as the flag rules would write them)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import count
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, expect

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.persister.worker import Persister
from services.score_api.settings import TokenSettings
from services.score_api.tokens import SCOPE_ADMIN
from tests.browser_fixtures import SCREENSHOTS, XSS_NAME
from tests.persister_fixtures import drain, open_worker
from tests.support import ONE_BOARD, api_process

MODERATOR = "mod-ana"
# Kolkata is UTC+05:30 all year: the revoke times' conversion to UTC shows in the request.
ZONE = "Asia/Kolkata"
LOCAL = "%Y-%m-%dT%H:%M:%S"
KEY = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Console:
    """The API process (its /admin page), its database, and the persist loop."""

    url: str
    http: httpx.AsyncClient
    database_url: str
    worker: Persister
    tokens: TokenSettings = field(default_factory=TokenSettings)
    _keys: Any = field(default_factory=count)

    @cached_property
    def admin(self) -> str:
        return issue(self.tokens, MODERATOR, scopes=(SCOPE_ADMIN,))

    async def score(
        self, user: str, name: str, action: str = "quest_complete", agent: str = "game/1.0"
    ) -> None:
        """A player's own award (client-mode catalogue), with its user agent on the event."""
        headers = {
            "Authorization": f"Bearer {issue(self.tokens, user, name=name)}",
            "Idempotency-Key": f"k{next(self._keys)}",
            "User-Agent": agent,
        }
        response = await self.http.post("/api/score", json={"action": action}, headers=headers)
        assert response.status_code == 200, response.text

    async def persist(self) -> None:
        await drain(self.worker)

    async def flag(self, user: str, rule: str = "points_per_hour") -> int:
        """An open flag, as services.persister.flags writes one."""
        conn = await asyncpg.connect(self.database_url)
        try:
            flag_id: int = await conn.fetchval(
                "INSERT INTO user_flags (user_id, rule, window_seconds, observed, threshold,"
                " first_seen, last_seen) VALUES ($1, $2, 3600, 900, 500,"
                " now() - interval '10 minutes', now()) RETURNING flag_id",
                user,
                rule,
            )
            return flag_id
        finally:
            await conn.close()

    async def board(self) -> dict[str, int]:
        response = await self.http.get("/api/score-board")
        assert response.status_code == 200, response.text
        return {row["user_id"]: row["score"] for row in response.json()["board"]}


@pytest.fixture
async def console(
    redis_url: str, key_prefix: str, database_url: str, tmp_path: Path
) -> AsyncIterator[Console]:
    await migrate(database_url)
    async with (
        api_process(redis_url, key_prefix, tmp_path / "api.log", DATABASE_URL=database_url) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        open_worker(redis_url, database_url, key_prefix, **ONE_BOARD) as worker,
    ):
        yield Console(url, http, database_url, worker)


@dataclass
class Watched:
    """A console page and what it did: requests to the API, and any problem it showed."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and path in r.url]

    def admin_requests(self) -> list[Request]:
        return [r for r in self.requests if "/api/" in r.url]


async def open_console(
    browser: Browser, console: Console, *, zone: str | None = None, width: int = 1280
) -> Watched:
    page = await browser.new_page(viewport={"width": width, "height": 900}, timezone_id=zone)
    watched = Watched(page)
    page.on("request", lambda request: watched.requests.append(request))
    page.on("dialog", lambda dialog: watched.problems.append(f"dialog: {dialog.message}"))
    page.on("pageerror", lambda error: watched.problems.append(f"error: {error}"))
    page.on(
        "console",
        lambda msg: (
            watched.problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text
            else None
        ),
    )
    # Every CSP violation, reported by the browser itself (init scripts are not subject to it).
    await page.add_init_script(
        "window.violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    response = await page.goto(f"{console.url}/admin")
    assert response is not None
    assert response.status == 200
    return watched


async def violations(page: Page) -> list[str]:
    found: list[str] = await page.evaluate("window.violations")
    return found


async def paste_token(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#load-flags")


async def look_up(page: Page, user: str) -> None:
    await page.fill("#user-id", user)
    await page.click("#lookup")
    await expect(page.locator("#current-user")).to_have_text(user)


async def act(page: Page, op: str, reason: str) -> Any:
    """Click the action, check the confirmation, give the reason, confirm: the JSON answer."""
    await page.click(f'#user-panel button[data-op="{op}"]')
    dialog = page.locator("#confirm")
    await expect(dialog).to_be_visible()
    await page.fill("#reason", reason)
    await page.click("#confirm-ok")
    await expect(dialog).to_be_hidden()
    return await answer(page)


async def answer(page: Page) -> Any:
    await expect(page.locator("#answer")).not_to_have_attribute("data-kind", "pending")
    await expect(page.locator("#answer-body")).to_be_visible()
    return json.loads(await page.locator("#answer-body").inner_text())


def column(page: Page, table: str, name: str) -> Any:
    return page.locator(f'#{table} tbody td[data-field="{name}"]')


async def test_the_console_is_served_under_its_csp_and_loads_cleanly(
    browser: Browser, console: Console
) -> None:
    response = await console.http.get("/admin")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self';" in csp
    assert response.headers["cache-control"] == "no-store"
    for asset in ("/static/admin.js", "/static/theme.css", "/static/admin.css"):
        assert (await console.http.get(asset)).status_code == 200

    watched = await open_console(browser, console)
    page = watched.page
    errors: list[str] = []
    # Every console error but the browser's own request for /favicon.ico (the API has none).
    page.on(
        "console",
        lambda msg: (
            errors.append(f"{msg.text} {msg.location}")
            if msg.type == "error" and not msg.location["url"].endswith("/favicon.ico")
            else None
        ),
    )
    try:
        await expect(page.locator("#token")).to_have_attribute("type", "password")
        await expect(page.locator("#user-panel")).to_be_hidden()
        # No token: said so in the page, nothing sent.
        await page.click("#load-flags")
        await expect(page.locator("#flags-status")).to_have_text("Paste an admin token first.")
        assert watched.admin_requests() == []

        await paste_token(page, console.admin)
        await expect(page.locator("#flags-status")).to_have_text("No open flags.")
        # The token went as a bearer header, and nowhere else: not the URL, not storage.
        (flags,) = watched.sent("GET", "/api/admin/flags?state=open")
        assert flags.headers["authorization"] == f"Bearer {console.admin}"
        assert console.admin not in page.url
        stored = await page.evaluate(
            "JSON.stringify([localStorage.length, sessionStorage.length, document.cookie])"
        )
        assert stored == '[0,0,""]'
        await page.screenshot(path=SCREENSHOTS / "admin-empty.png")
        assert errors == []
        assert watched.problems == []
        assert await violations(page) == []
    finally:
        await page.close()


async def test_flags_and_events_show_hostile_text_as_text(
    browser: Browser, console: Console
) -> None:
    await console.score("mallory", XSS_NAME, agent=XSS_NAME)
    await console.score("mallory", XSS_NAME, "achievement_unlocked", agent="bot/2")
    await console.persist()
    flag_id = await console.flag("mallory")
    watched = await open_console(browser, console)
    page = watched.page
    try:
        await paste_token(page, console.admin)
        rows = page.locator("#flags tbody tr")
        await expect(rows).to_have_count(1)
        row = rows.first
        await expect(row).to_have_attribute("data-flag-id", str(flag_id))
        await expect(column(page, "flags", "user_id")).to_have_text("mallory")
        await expect(column(page, "flags", "name")).to_have_text(XSS_NAME)
        await expect(column(page, "flags", "rule")).to_have_text("points_per_hour")
        await expect(column(page, "flags", "observed")).to_have_text("900")
        await expect(column(page, "flags", "threshold")).to_have_text("500")
        await expect(column(page, "flags", "first_seen")).not_to_have_text("—")

        await row.get_by_role("button", name="Look up user").click()
        await expect(page.locator("#current-user")).to_have_text("mallory")
        await expect(page.locator("#user-id")).to_have_value("mallory")
        events = page.locator("#events tbody tr")
        await expect(events).to_have_count(2)
        # Newest first.
        await expect(column(page, "events", "action")).to_have_text(
            ["achievement_unlocked", "quest_complete"]
        )
        await expect(column(page, "events", "user_agent")).to_have_text(["bot/2", XSS_NAME])
        await expect(column(page, "events", "points")).to_have_text(["50", "10"])
        await expect(column(page, "events", "score_after")).to_have_text(["60", "10"])
        await expect(column(page, "events", "client_ip").first).to_have_text("127.0.0.1")
        await expect(page.locator("#user-status")).to_have_text(
            "2 recent events, 0 moderation actions."
        )
        (lookup,) = watched.sent("GET", "/api/admin/users/mallory/events?limit=50")
        assert lookup.headers["authorization"] == f"Bearer {console.admin}"
        assert watched.sent("GET", "/api/admin/audit?user_id=mallory")

        # A hostile user id is sent encoded and refused by the API, shown as text.
        await look_up(page, XSS_NAME)
        await expect(page.locator("#user-status")).to_contain_text("422")
        await expect(page.locator("#user-panel")).to_be_hidden()  # no one to act on
        assert await page.locator("img").count() == 0
        await page.screenshot(path=SCREENSHOTS / "admin-flags.png", full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=SCREENSHOTS / "admin-phone.png", full_page=True)
        assert watched.problems == []
        assert await violations(page) == []
    finally:
        await page.close()


async def test_a_wrong_token_shows_the_401_or_403_problem(
    browser: Browser, console: Console
) -> None:
    watched = await open_console(browser, console)
    page = watched.page
    status = page.locator("#flags-status")
    try:
        await paste_token(page, "not-a-token")
        await expect(status).to_have_attribute("data-kind", "error")
        await expect(status).to_contain_text("401 Unauthorized: ")
        # A player's token (score:write) is valid but not an admin's.
        await paste_token(page, issue(console.tokens, "player", name="Player"))
        await expect(status).to_contain_text("403 Forbidden: ")
        await expect(status).to_contain_text("score:admin")
        await look_up(page, "player")
        await expect(page.locator("#user-status")).to_contain_text("403")
        body = await act(page, "quarantine", "testing")
        assert body["status"] == 403
        await expect(page.locator("#answer")).to_have_attribute("data-kind", "error")
        await expect(page.locator("#answer")).to_contain_text("403 Forbidden: ")
        # One request per click: nothing retried.
        assert len(watched.sent("GET", "/api/admin/flags")) == 2
        assert len(watched.sent("POST", "/quarantine")) == 1
        assert watched.problems == []
    finally:
        await page.close()


async def test_an_action_needs_a_reason_and_a_confirmation(
    browser: Browser, console: Console
) -> None:
    await console.score("alice", "Alice")
    watched = await open_console(browser, console)
    page = watched.page
    dialog, error = page.locator("#confirm"), page.locator("#confirm-error")
    try:
        await page.fill("#token", console.admin)
        await look_up(page, "alice")
        before = len(watched.admin_requests())
        await page.click('#user-panel button[data-op="ban"]')
        await expect(dialog).to_be_visible()
        await expect(page.locator("#confirm-title")).to_have_text("Ban: alice")
        await expect(page.locator("#confirm-text")).to_contain_text("removes them from every board")
        await expect(page.locator("#reason")).to_be_focused()
        for blank in ("", "   \n "):
            await page.fill("#reason", blank)
            await page.click("#confirm-ok")
            await expect(error).to_have_text("A reason is required.")
            await expect(dialog).to_be_visible()
        await page.click("#confirm-cancel")
        await expect(dialog).to_be_hidden()
        # Escape cancels too.
        await page.click('#user-panel button[data-op="quarantine"]')
        await expect(error).to_have_text("")
        await page.fill("#reason", "second thoughts")
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        # Revoke needs both times, in order, before it is even asked.
        await page.fill("#since", "2030-01-02T10:00:00")
        await page.fill("#until", "2030-01-01T10:00:00")
        await page.click('#user-panel button[data-op="revoke"]')
        await expect(dialog).to_be_hidden()
        await expect(page.locator("#answer")).to_contain_text("the first before the second")
        assert len(watched.admin_requests()) == before
        assert "alice" in await console.board()
        assert watched.problems == []
    finally:
        await page.close()


async def test_quarantine_hides_the_user_and_release_brings_them_back(
    browser: Browser, console: Console
) -> None:
    await console.score("alice", "Alice", "achievement_unlocked")
    await console.score("bob", "Bob")
    watched = await open_console(browser, console)
    page = watched.page
    try:
        await page.fill("#token", console.admin)
        await look_up(page, "alice")
        body = await act(page, "quarantine", "farming <script>alert(1)</script>")
        assert body == {"user_id": "alice", "status": "quarantined", "changed": True, "score": 50}
        await expect(page.locator("#answer")).to_have_text("200 OK")
        assert await console.board() == {"bob": 10}
        (sent,) = watched.sent("POST", "/api/admin/users/alice/quarantine")
        assert sent.post_data_json == {"reason": "farming <script>alert(1)</script>"}

        body = await act(page, "release", "appeal upheld")
        assert body == {"user_id": "alice", "status": "active", "changed": True, "score": 50}
        assert await console.board() == {"alice": 50, "bob": 10}

        # The history, once persisted: newest first, reasons as text.
        await console.persist()
        await look_up(page, "alice")
        await expect(column(page, "audit", "type")).to_have_text(["release", "quarantine"])
        await expect(column(page, "audit", "reason")).to_have_text(
            ["appeal upheld", "farming <script>alert(1)</script>"]
        )
        await expect(column(page, "audit", "by")).to_have_text([MODERATOR, MODERATOR])
        assert watched.problems == []
        assert await violations(page) == []
    finally:
        await page.close()


async def test_ban_then_unban_and_a_banned_user_is_not_quarantined(
    browser: Browser, console: Console
) -> None:
    await console.score("carol", "Carol")
    watched = await open_console(browser, console)
    page = watched.page
    try:
        await page.fill("#token", console.admin)
        await look_up(page, "carol")
        body = await act(page, "ban", "cheating")
        assert body == {"user_id": "carol", "status": "banned", "changed": True, "score": 10}
        assert "carol" not in await console.board()
        (sent,) = watched.sent("POST", "/api/admin/users/carol/ban")
        assert sent.post_data_json == {"reason": "cheating"}

        body = await act(page, "quarantine", "belt and braces")
        assert body["status"] == 409
        assert body["type"].endswith("user-banned")
        await expect(page.locator("#answer")).to_have_attribute("data-kind", "error")
        await expect(page.locator("#answer")).to_contain_text("409 Conflict: ")

        # A reason with a control character: the API's 422, shown as it came.
        body = await act(page, "unban", "line one\u0007")
        assert body["status"] == 422
        await expect(page.locator("#answer")).to_contain_text("422")

        body = await act(page, "unban", "appeal upheld")
        assert body == {"user_id": "carol", "status": "active", "changed": True, "score": 10}
        assert await console.board() == {"carol": 10}
        assert watched.problems == []
    finally:
        await page.close()


async def test_revoke_sends_utc_times_and_one_key_per_confirmation(
    browser: Browser, console: Console
) -> None:
    await console.score("dave", "Dave", "achievement_unlocked")
    await console.score("dave", "Dave")
    await console.score("erin", "Erin")
    await console.persist()
    watched = await open_console(browser, console, zone=ZONE)
    page = watched.page
    now = datetime.now(UTC).replace(microsecond=0)
    since, until = now - timedelta(hours=1), now + timedelta(minutes=5)
    try:
        await page.fill("#token", console.admin)
        await look_up(page, "dave")
        await expect(page.locator("#events tbody tr")).to_have_count(2)
        await page.fill("#since", since.astimezone(ZoneInfo(ZONE)).strftime(LOCAL))
        await page.fill("#until", until.astimezone(ZoneInfo(ZONE)).strftime(LOCAL))
        utc = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (since, until)]
        await page.click('#user-panel button[data-op="revoke"]')
        await expect(page.locator("#confirm-text")).to_contain_text(
            f"from {utc[0]} until {utc[1]} (UTC)"
        )
        await page.fill("#reason", "bought points")
        await page.click("#confirm-ok")
        revoked = await answer(page)
        assert revoked["user_id"] == "dave"
        assert (revoked["events"], revoked["points"], revoked["score"]) == (2, 60, 0)
        assert revoked["replayed"] is False
        assert "dave" not in await console.board()

        # A revocation waits for the persisters to have stored every earlier event.
        await console.persist()
        body = await act(page, "revoke", "again, by mistake")
        assert (body["events"], body["points"]) == (0, 0)
        first, second = watched.sent("POST", "/api/admin/users/dave/revoke")
        assert first.post_data_json == {"since": utc[0], "until": utc[1], "reason": "bought points"}
        keys = [r.headers["idempotency-key"] for r in (first, second)]
        assert all(KEY.match(key) for key in keys)
        assert keys[0] != keys[1]
        # The events table, looked up again after the answer, marks the revoked events
        # (newest first: the first revocation's own event, then the two it revoked).
        await expect(column(page, "events", "type")).to_have_text(["revoke", "score", "score"])
        await expect(column(page, "events", "revoked_by")).to_have_text(
            ["—", revoked["revocation_id"], revoked["revocation_id"]]
        )
        await expect(column(page, "events", "reason").first).to_have_text("bought points")
        await expect(page.locator("#events tbody tr.revoked")).to_have_count(2)
        assert await console.board() == {"erin": 10}
        assert watched.problems == []
    finally:
        await page.close()


async def test_dismiss_closes_the_flag_and_an_unknown_flag_is_404(
    browser: Browser, console: Console
) -> None:
    await console.score("frank", "Frank")
    await console.persist()
    flag_id = await console.flag("frank")
    gone = await console.flag("frank", rule="actions_per_minute")
    watched = await open_console(browser, console)
    page = watched.page
    rows = page.locator("#flags tbody tr")
    try:
        await paste_token(page, console.admin)
        await expect(rows).to_have_count(2)
        # The second flag disappears behind the page's back: its Dismiss gets the 404.
        conn = await asyncpg.connect(console.database_url)
        try:
            await conn.execute("DELETE FROM user_flags WHERE flag_id = $1", gone)
        finally:
            await conn.close()
        await (
            page.locator(f'#flags tr[data-flag-id="{gone}"]')
            .get_by_role("button", name="Dismiss")
            .click()
        )
        await page.fill("#reason", "stale")
        await page.click("#confirm-ok")
        body = await answer(page)
        assert body["status"] == 404
        await expect(page.locator("#answer")).to_contain_text("404 Not Found: ")

        await (
            page.locator(f'#flags tr[data-flag-id="{flag_id}"]')
            .get_by_role("button", name="Dismiss")
            .click()
        )
        await expect(page.locator("#confirm-title")).to_have_text(f"Dismiss flag {flag_id}")
        await expect(page.locator("#confirm-text")).to_contain_text("points_per_hour flag of frank")
        await page.fill("#reason", "a tournament weekend")
        await page.click("#confirm-ok")
        body = await answer(page)
        assert body == {"flag_id": flag_id, "state": "dismissed", "changed": True}
        (sent,) = watched.sent("POST", f"/api/admin/flags/{flag_id}/dismiss")
        assert sent.post_data_json == {"reason": "a tournament weekend"}
        await expect(rows).to_have_count(0)
        await expect(page.locator("#flags-status")).to_have_text("No open flags.")
        assert watched.problems == []
    finally:
        await page.close()


async def test_network_failures_and_503_are_shown_and_not_retried(
    browser: Browser, console: Console
) -> None:
    await console.score("gina", "Gina")
    watched = await open_console(browser, console)
    page = watched.page
    routed: list[str] = []

    async def fail(route: Route) -> None:
        routed.append(route.request.url)
        await route.abort("connectionreset")

    async def unavailable(route: Route) -> None:
        routed.append(route.request.url)
        problem = {
            "type": "urn:leaderboard:problem:unavailable",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "redis unavailable",
        }
        await route.fulfill(
            status=503,
            headers={"Retry-After": "2"},
            content_type="application/problem+json",
            body=json.dumps(problem),
        )

    try:
        await page.fill("#token", console.admin)
        await look_up(page, "gina")
        await page.route("**/api/admin/users/gina/ban", fail)
        await page.click('#user-panel button[data-op="ban"]')
        await page.fill("#reason", "cheating")
        await page.click("#confirm-ok")
        await expect(page.locator("#answer")).to_have_text(re.compile(r"^Network error: "))
        await expect(page.locator("#answer-body")).to_be_hidden()
        await page.unroute("**/api/admin/users/gina/ban")

        await page.route("**/api/admin/users/gina/quarantine", unavailable)
        body = await act(page, "quarantine", "farming")
        assert body["status"] == 503
        await expect(page.locator("#answer")).to_have_text(
            "503 Service Unavailable: redis unavailable (Retry-After: 2 s)"
        )
        await page.wait_for_timeout(2_500)
        assert len(routed) == 2
        assert await console.board() == {"gina": 10}
        assert watched.problems == []
    finally:
        await page.close()


async def test_the_stats_of_a_chosen_window_are_shown_as_text(
    browser: Browser, console: Console
) -> None:
    await console.score("mallory", XSS_NAME)
    await console.score("mallory", XSS_NAME, "achievement_unlocked")
    await console.score("ana", "Ana")
    await console.persist()
    watched = await open_console(browser, console)
    page = watched.page
    try:
        await page.click("#load-stats")  # no token: said so, nothing sent
        await expect(page.locator("#stats-status")).to_have_text("Paste an admin token first.")
        assert watched.admin_requests() == []
        await page.fill("#token", console.admin)
        await page.select_option("#stats-window", "1h")
        await page.click("#load-stats")
        await expect(page.locator("#stats-status")).to_have_text("Window 1h.")
        (sent,) = watched.sent("GET", "/api/admin/stats?window=1h")
        assert sent.headers["authorization"] == f"Bearer {console.admin}"
        await expect(page.locator("#stats-summary")).to_contain_text(
            "2 active users, 2 new; 3 awards"
        )
        await expect(column(page, "stats-movers", "user_id")).to_have_text(["mallory", "ana"])
        # The hostile name is text, not markup.
        await expect(column(page, "stats-movers", "name")).to_have_text([XSS_NAME, "Ana"])
        assert await page.locator("#stats-movers img").count() == 0
        actions = column(page, "stats-actions", "action")
        await expect(actions).to_have_count(2)
        await expect(column(page, "stats-hours", "hour")).to_have_count(1)
        await page.select_option("#stats-window", "7d")
        await page.click("#load-stats")
        await expect(page.locator("#stats-status")).to_have_text("Window 7d.")
        await expect(column(page, "stats-hours", "hour")).to_have_count(168)
        await page.screenshot(path=SCREENSHOTS / "admin-stats.png")
        assert watched.problems == []
        assert await violations(page) == []
    finally:
        await page.close()


async def test_a_stats_failure_is_shown_and_hides_the_tables(
    browser: Browser, console: Console
) -> None:
    watched = await open_console(browser, console)
    page = watched.page
    try:
        player = issue(console.tokens, "ana", name="Ana")
        await page.fill("#token", player)
        await page.click("#load-stats")
        await expect(page.locator("#stats-status")).to_have_attribute("data-kind", "error")
        await expect(page.locator("#stats-status")).to_contain_text("403")
        await expect(page.locator("#stats-panel")).to_be_hidden()
        assert watched.problems == []
    finally:
        await page.close()
