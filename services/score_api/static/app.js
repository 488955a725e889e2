// The live scoreboard: follows the gateway's snapshots and diffs, and posts score actions.
// Names are user input: they are only ever set with textContent, never parsed as HTML.
"use strict";

(() => {
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  // The gateway pings every 25 s; two missed pings mean the connection is dead.
  const SILENCE_MS = 60000;
  // The board the page follows until the visitor picks another (always one of BOARDS).
  const ALL_TIME = "all-time";
  // GET /api/boards is fetched again when its answer no longer matches the board shown:
  // first after this long, then twice as long each time, up to the cap.
  const BOARDS_RETRY_MS = 500;
  const BOARDS_RETRY_CAP_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const boardEl = $("board");
  const emptyEl = $("empty");
  const statusEl = $("status");
  const statusText = $("status-text");
  const tabsEl = $("tabs");
  const panelEl = $("board-panel");
  const periodEl = $("period");
  const periodIdEl = $("period-id");
  const resetsEl = $("resets");

  // The local clock only measures intervals: performance.now() is monotonic and the server's
  // times are never compared with this device's wall clock, which may be off by minutes.
  const now = () => performance.now();

  let board = [];
  let version = null;
  let period = null; // the period the table shows, as the frames name it
  let attempt = 0;
  let socket = null;
  let silenceTimer = null;
  let retryTimer = null;
  let gatewayBase = null; // the gateway's URL, without ?board=
  let selectedBoard = ALL_TIME;

  // The boards of GET /api/boards, each with its current period. ends_at is on the server's
  // clock: it becomes a deadline on now() when the answer arrives (see serverTime).
  const boards = {
    list: [], // [{ id, reset, period, endsAt }], endsAt a now() or null (all-time)
    loaded: false,
    inFlight: false,
    retryMs: BOARDS_RETRY_MS,
    notBefore: 0, // now() before which it is not fetched again
    timer: null,
    ticker: null,
  };

  // Same rule as services/broadcast_gateway/protocol.py apply_diff.
  function applyDiff(rows, changes, size) {
    const out = rows.slice();
    for (const change of changes) out[change.rank - 1] = change;
    out.length = size;
    for (let i = 0; i < size; i++) if (!out[i]) throw new Error("gap in board");
    return out;
  }

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusText.textContent = text;
  }

  function formatScore(score) {
    return Number(score).toLocaleString();
  }

  function makeRow() {
    const li = document.createElement("li");
    for (const cls of ["rank", "name", "score num"]) {
      const span = document.createElement("span");
      span.className = cls;
      li.appendChild(span);
    }
    return li;
  }

  function render(changedRanks) {
    while (boardEl.children.length < board.length) boardEl.appendChild(makeRow());
    while (boardEl.children.length > board.length) boardEl.lastElementChild.remove();
    board.forEach((entry, i) => {
      const li = boardEl.children[i];
      li.dataset.userId = entry.user_id;
      li.children[0].textContent = String(entry.rank);
      li.children[1].textContent = entry.name;
      li.children[1].title = entry.name;
      li.children[2].textContent = formatScore(entry.score);
      if (changedRanks.has(entry.rank)) {
        li.classList.remove("changed");
        void li.offsetWidth; // restart the highlight animation
        li.classList.add("changed");
      }
    });
    boardEl.dataset.version = version === null ? "" : String(version);
    boardEl.dataset.board = selectedBoard;
    boardEl.dataset.period = period === null ? "" : period;
    emptyEl.hidden = board.length > 0;
  }

  // Boards, tabs and the period

  function entryOf(id) {
    return boards.list.find((entry) => entry.id === id) || null;
  }

  // The server's wall clock as ``response`` arrives: this device's own unless the answer's
  // Date (whole seconds) differs from it by more than its resolution and a round trip, e.g.
  // on a device an hour off. Only ends_at minus this is kept: a duration from the answer.
  function serverTime(response) {
    const local = Date.now();
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isFinite(date) || Math.abs(date - local) < 2000) return local;
    return date + 500; // the middle of the second the header names
  }

  // True when the selected board's entry no longer describes the period shown: the table
  // moved to another period, or the entry's period has ended by the countdown.
  function boardsStale() {
    if (!boards.loaded) return true;
    const entry = entryOf(selectedBoard);
    if (!entry || entry.endsAt === null) return false;
    return (period !== null && entry.period !== period) || now() >= entry.endsAt;
  }

  async function fetchBoards() {
    if (boards.inFlight) return;
    boards.inFlight = true;
    clearTimeout(boards.timer);
    try {
      const response = await fetch("/api/boards", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      const received = now();
      const server = serverTime(response);
      boards.list = body.boards.map((b) => ({
        id: String(b.board_id),
        reset: String(b.reset),
        period: String(b.period),
        endsAt: b.ends_at ? received + (Date.parse(b.ends_at) - server) : null,
      }));
      boards.loaded = boards.list.length > 0;
    } catch {
      // keep what we had; retried below
    } finally {
      boards.inFlight = false;
    }
    if (boards.loaded && !entryOf(selectedBoard)) {
      selectBoard(boards.list[0].id); // the selected board is gone from BOARDS
    }
    if (boardsStale()) {
      boards.notBefore = now() + boards.retryMs;
      boards.timer = setTimeout(refreshBoards, boards.retryMs);
      boards.retryMs = Math.min(BOARDS_RETRY_CAP_MS, boards.retryMs * 2);
    } else {
      boards.retryMs = BOARDS_RETRY_MS;
      boards.notBefore = 0;
    }
    renderTabs();
    renderPeriod();
  }

  // Fetches the boards again when they are stale, at most as often as the backoff allows.
  function refreshBoards() {
    if (boards.inFlight) return;
    if (!boardsStale()) boards.retryMs = BOARDS_RETRY_MS;
    else if (now() >= boards.notBefore) fetchBoards();
  }

  function makeTab(entry) {
    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "tab";
    tab.id = `tab-${entry.id}`; // board ids are [a-z0-9_-]
    tab.dataset.board = entry.id;
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-controls", "board-panel");
    tab.textContent = entry.id;
    return tab;
  }

  // One tab per board; with a single board the tab list stays hidden and the page is as it
  // was before boards existed.
  function renderTabs() {
    const ids = boards.list.map((entry) => entry.id).join(" ");
    if (tabsEl.dataset.ids !== ids) {
      tabsEl.replaceChildren(...boards.list.map(makeTab));
      tabsEl.dataset.ids = ids;
    }
    for (const tab of tabsEl.children) {
      const on = tab.dataset.board === selectedBoard;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
    }
    tabsEl.hidden = boards.list.length < 2;
    if (tabsEl.hidden) {
      panelEl.removeAttribute("role");
      panelEl.removeAttribute("aria-labelledby");
      panelEl.removeAttribute("tabindex");
    } else {
      panelEl.setAttribute("role", "tabpanel");
      panelEl.setAttribute("aria-labelledby", `tab-${selectedBoard}`);
      panelEl.tabIndex = 0; // the panel holds nothing focusable: Tab from the tabs lands on it
    }
  }

  function untilReset(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60) % 60;
    if (s < 600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
    if (s < 3600) return `${m} min`;
    const h = Math.floor(s / 3600) % 24;
    if (s < 86400) return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ""}`;
    return `${Math.floor(s / 86400)} d${h ? ` ${h} h` : ""}`;
  }

  function resetText(entry, shown) {
    if (entry.period !== shown) return "resetting…"; // until the boards are fetched again
    const left = (entry.endsAt - now()) / 1000;
    return left > 0 ? `resets in ${untilReset(left)}` : "resetting…";
  }

  // The period line of a periodic board: its period id and the countdown to its reset.
  function renderPeriod() {
    const entry = entryOf(selectedBoard);
    const periodic = entry !== null && entry.endsAt !== null;
    periodEl.hidden = !periodic;
    if (periodic) {
      const shown = period === null ? entry.period : period;
      setText(periodIdEl, shown);
      setText(resetsEl, resetText(entry, shown));
    }
    if (periodic && boards.ticker === null) {
      boards.ticker = setInterval(() => {
        refreshBoards();
        renderPeriod();
      }, 250);
    } else if (!periodic && boards.ticker !== null) {
      clearInterval(boards.ticker);
      boards.ticker = null;
    }
  }

  // Switching boards: the table starts over from the new board's snapshot, on a new socket.
  function selectBoard(id) {
    if (id === selectedBoard) return;
    selectedBoard = id;
    board = [];
    version = null;
    period = null;
    attempt = 0;
    render(new Set());
    renderTabs();
    renderPeriod();
    refreshBoards();
    if (gatewayBase !== null) subscribe();
  }

  function subscribe() {
    clearTimeout(retryTimer);
    clearTimeout(silenceTimer);
    const old = socket;
    socket = null; // its close and any late frame are ignored from now on
    if (old) old.close(1000, "board switched");
    connect();
  }

  function onTabKey(event) {
    const tabs = Array.from(tabsEl.children);
    const at = tabs.findIndex((tab) => tab.dataset.board === selectedBoard);
    let next;
    if (event.key === "ArrowRight" || event.key === "ArrowDown") next = (at + 1) % tabs.length;
    else if (event.key === "ArrowLeft" || event.key === "ArrowUp") {
      next = (at - 1 + tabs.length) % tabs.length;
    } else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = tabs.length - 1;
    else return;
    event.preventDefault();
    selectBoard(tabs[next].dataset.board);
    tabs[next].focus();
  }

  tabsEl.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) selectBoard(tab.dataset.board);
  });
  tabsEl.addEventListener("keydown", onTabKey);

  // The live feed

  function onMessage(ws, event) {
    if (ws !== socket) return; // a late frame of a socket this page has left
    armSilenceTimer();
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type !== "snapshot" && msg.type !== "diff") return;
    // A gateway older than the boards names none: its frames are the all-time board's.
    if ((msg.board_id ?? ALL_TIME) !== selectedBoard) return;
    const framePeriod = msg.period ?? null;
    if (msg.type === "snapshot") {
      // Highlight what changed within one period; a new period is a new board.
      const before = new Map(framePeriod === period ? board.map((e) => [e.rank, e]) : []);
      board = msg.board;
      version = msg.version;
      period = framePeriod;
      attempt = 0;
      const changed = new Set(
        board.filter((e) => {
          const old = before.get(e.rank);
          return old && (old.user_id !== e.user_id || old.score !== e.score);
        }).map((e) => e.rank),
      );
      render(changed);
      setStatus("live", "Live");
    } else {
      // A diff never spans two periods: one of another period means a snapshot was missed.
      if (version === null || msg.base !== version || framePeriod !== period) {
        resync();
        return;
      }
      try {
        board = applyDiff(board, msg.changes, msg.size);
      } catch {
        resync();
        return;
      }
      version = msg.version;
      render(new Set(msg.changes.map((c) => c.rank)));
    }
    refreshBoards(); // a new period: its end comes from GET /api/boards
    renderPeriod();
  }

  function resync() {
    version = null; // ignore diffs until the snapshot arrives
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resync" }));
  }

  function armSilenceTimer() {
    clearTimeout(silenceTimer);
    silenceTimer = setTimeout(() => socket && socket.close(4000, "silent"), SILENCE_MS);
  }

  function scheduleReconnect() {
    // Full jitter: spread reconnects of many browsers after a gateway restart.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = Math.random() * ceiling;
    attempt += 1;
    setStatus("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  // The selected board's feed: ?board=<id> on the gateway's URL.
  function boardUrl() {
    const url = new URL(gatewayBase, location.href);
    url.searchParams.set("board", selectedBoard);
    return url.href;
  }

  function connect() {
    setStatus(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "Connecting…");
    let ws;
    try {
      ws = new WebSocket(boardUrl());
    } catch {
      setStatus("offline", "Invalid gateway URL");
      return;
    }
    socket = ws;
    ws.onopen = armSilenceTimer;
    ws.onmessage = (event) => onMessage(ws, event);
    ws.onclose = () => {
      if (socket !== ws) return;
      clearTimeout(silenceTimer);
      version = null;
      scheduleReconnect();
    };
  }

  async function loadConfig() {
    try {
      const response = await fetch("/config.json", { cache: "no-store" });
      if (response.ok) return await response.json();
    } catch {
      // fall through to the defaults
    }
    return {};
  }

  function gatewayUrl(config) {
    if (config.gateway_url) return config.gateway_url;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.hostname}:8001/ws/score`;
  }

  // The action panel. Each action of the catalogue (GET /api/actions) has a trust mode:
  // "client" posts directly; "ticket" is started (POST /api/actions), then completed with the
  // ticket once its not_before has passed; "server" only a game server may report.

  const controls = $("controls");
  const actionSelect = $("action");
  const sendButton = $("submit");
  const startButton = $("start");
  const completeButton = $("complete");
  const countdownEl = $("countdown");
  const noteEl = $("mode-note");

  const panel = {
    actions: new Map(), // name -> the catalogue's entry
    loaded: false,
    playerWrites: true,
    busy: false,
    tickets: new Map(), // action name -> { ticket, key, readyAt, expiresAt } (performance.now)
    holds: new Map(), // action name -> performance.now() before which it is not retried
  };
  let ticker = null;

  function randomKey() {
    if (crypto.randomUUID) return crypto.randomUUID(); // [0-9a-f-]{36}: a valid key
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setText(el, text) {
    // Unchanged text is left alone, so a live region announces only real changes.
    if (el.textContent !== text) el.textContent = text;
  }

  function showResult(kind, text) {
    const el = $("result");
    el.dataset.kind = kind;
    el.textContent = text;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    if (s < 120) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
    const m = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ""}`;
  }

  function modeNote(action) {
    if (action.mode === "server") {
      return "Reported by the game server: it cannot be posted from this page.";
    }
    if (action.mode === "ticket") {
      const wait = action.min_seconds ? ` after ${duration(action.min_seconds)}` : "";
      return `Start it, then complete it${wait} and within ${duration(action.max_seconds)}.`;
    }
    const limits = [];
    if (action.max_per_day) limits.push(`at most ${action.max_per_day} a day`);
    if (action.cooldown_seconds) limits.push(`${duration(action.cooldown_seconds)} apart`);
    return `Posts directly${limits.length ? ` (${limits.join(", ")})` : ""}.`;
  }

  function selected() {
    return panel.actions.get(actionSelect.value) || null;
  }

  function token() {
    return $("token").value.trim().replace(/^Bearer\s+/i, "");
  }

  // Draws the panel from its state; called on every change and, while a ticket or a hold is
  // pending, a few times a second for the countdown.
  function renderPanel() {
    const action = selected();
    const writable = panel.loaded && panel.playerWrites;
    $("writes-off").hidden = panel.playerWrites;
    controls.disabled = !writable;
    const mode = action ? action.mode : "client";
    sendButton.hidden = mode === "ticket";
    startButton.hidden = completeButton.hidden = mode !== "ticket";
    if (panel.loaded) setText(noteEl, action ? modeNote(action) : "No actions are configured.");

    const t = now();
    let countdown = "";
    let pending = false;
    const hold = action ? panel.holds.get(action.action) : undefined;
    const held = hold !== undefined && hold > t;
    if (hold !== undefined && !held) panel.holds.delete(action.action);
    const ticket = action ? panel.tickets.get(action.action) : undefined;
    let ready = false;
    if (ticket && mode === "ticket") {
      if (t >= ticket.expiresAt) {
        ticket.expired = true;
        countdown = "The ticket expired: start the action again.";
      } else if (t < ticket.readyAt) {
        countdown = `Complete in ${duration((ticket.readyAt - t) / 1000)}`;
        pending = true;
      } else {
        countdown = held ? "" : "Ready: complete it now.";
        ready = true;
        pending = true; // until it expires
      }
    }
    if (held && !(ticket && !ticket.expired && t < ticket.readyAt)) {
      countdown = `Try again in ${duration((hold - t) / 1000)}`;
      pending = true;
    }
    setText(countdownEl, countdown);

    const idle = writable && !panel.busy && action !== null;
    sendButton.disabled = !idle || mode !== "client" || held;
    startButton.disabled = !idle || held;
    completeButton.disabled = !idle || held || !ready;

    if (pending && ticker === null) ticker = setInterval(renderPanel, 250);
    if (!pending && ticker !== null) {
      clearInterval(ticker);
      ticker = null;
    }
  }

  function problemSlug(body) {
    const type = typeof body.type === "string" ? body.type : "";
    return type.slice(Math.max(type.lastIndexOf(":"), type.lastIndexOf("/")) + 1);
  }

  // One request of the panel: the answer's body, or a shown error; ``answer`` is null then.
  async function post(path, headers, payload, actionName) {
    const bearer = token();
    if (!bearer) {
      showResult("error", "Paste a token first.");
      return null;
    }
    panel.busy = true;
    renderPanel();
    showResult("pending", "Sending…");
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { Authorization: `Bearer ${bearer}`, "Content-Type": "application/json", ...headers },
        body: JSON.stringify(payload),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) return { response, body };
      const slug = problemSlug(body);
      const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
      if (slug === "player-writes-off") panel.playerWrites = false;
      if (Number.isFinite(retry) && retry > 0) {
        // Waited out here, then retried only when the user asks again.
        const until = now() + retry * 1000;
        const ticket = panel.tickets.get(actionName);
        if (slug === "too-early" && ticket) ticket.readyAt = Math.max(ticket.readyAt, until);
        else panel.holds.set(actionName, until);
      }
      const detail = body.detail || response.statusText || "request failed";
      showResult("error", `${response.status}: ${detail}`);
      return { response, body, slug, failed: true };
    } catch (err) {
      showResult("error", `Network error: ${err.message}`);
      return null;
    } finally {
      panel.busy = false;
      renderPanel();
    }
  }

  function showAward(body) {
    showResult(
      "ok",
      `+${body.awarded} for ${body.name}: score ${formatScore(body.score)}, rank ${body.rank}`,
    );
  }

  async function send(event) {
    event.preventDefault();
    const action = selected();
    if (!action || action.mode !== "client" || sendButton.disabled) return;
    const answer = await post(
      "/api/score",
      { "Idempotency-Key": randomKey() },
      { action: action.action },
      action.action,
    );
    if (answer && !answer.failed) showAward(answer.body);
  }

  async function start() {
    const action = selected();
    if (!action || action.mode !== "ticket") return;
    const sent = now();
    const answer = await post("/api/actions", {}, { action: action.action }, action.action);
    if (!answer || answer.failed) return;
    const received = now();
    const { body } = answer;
    const notBefore = Date.parse(body.not_before);
    const expires = Date.parse(body.expires_at);
    // Both times are on the server's clock; the ticket was issued at not_before - min_seconds
    // on it, i.e. between sending and receiving here. Counting from the answer errs late.
    let wait = action.min_seconds * 1000;
    let life = action.max_seconds * 1000;
    if (!(Number.isFinite(notBefore) && Number.isFinite(expires) && expires > notBefore)) {
      showResult("error", "The server's ticket has no valid times.");
      return;
    }
    if (Math.abs(expires - notBefore - (life - wait)) > 1000) {
      // A catalogue changed since this page loaded: fall back to the local wall clock.
      wait = notBefore - Date.now();
      life = expires - Date.now();
    }
    panel.tickets.set(action.action, {
      ticket: body.ticket,
      key: randomKey(), // one per ticket: a retry after a lost answer gets the same award
      readyAt: received + Math.max(0, wait),
      expiresAt: sent + life,
    });
    showResult("ok", `Started ${action.action}.`);
    renderPanel();
  }

  async function complete() {
    const action = selected();
    const ticket = action && panel.tickets.get(action.action);
    if (!ticket || completeButton.disabled) return;
    const answer = await post(
      "/api/score",
      { "Idempotency-Key": ticket.key },
      { action: action.action, ticket: ticket.ticket },
      action.action,
    );
    if (!answer) return;
    if (!answer.failed) {
      panel.tickets.delete(action.action);
      showAward(answer.body);
    } else if (answer.slug === "ticket-invalid" || answer.slug === "ticket-used") {
      panel.tickets.delete(action.action);
    }
    renderPanel();
  }

  function fillActions(actions) {
    actionSelect.replaceChildren();
    panel.actions.clear();
    for (const action of actions) {
      panel.actions.set(action.action, action);
      const option = document.createElement("option");
      option.value = action.action;
      option.textContent = `${action.action} (+${formatScore(action.points)}, ${action.mode})`;
      option.dataset.mode = action.mode;
      actionSelect.appendChild(option);
    }
  }

  async function loadActions(delay = 2000) {
    try {
      const response = await fetch("/api/actions", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      fillActions(body.actions);
      if (body.player_writes === false) panel.playerWrites = false;
      panel.loaded = true;
      renderPanel();
    } catch (err) {
      setText(noteEl, `Could not load the actions (${err.message}); retrying…`);
      setTimeout(() => loadActions(Math.min(delay * 2, 60000)), delay);
    }
  }

  $("act-form").addEventListener("submit", send);
  startButton.addEventListener("click", start);
  completeButton.addEventListener("click", complete);
  actionSelect.addEventListener("change", renderPanel);

  loadConfig().then((config) => {
    if (config.player_writes === false) panel.playerWrites = false;
    renderPanel();
    gatewayBase = gatewayUrl(config);
    connect();
  });
  fetchBoards();
  loadActions();
})();
