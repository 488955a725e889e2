// The live scoreboard: follows the gateway's snapshots and diffs, and posts score actions.
// Names are user input: they are only ever set with textContent, never parsed as HTML.
"use strict";

(() => {
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  // The gateway pings every 25 s; two missed pings mean the connection is dead.
  const SILENCE_MS = 60000;

  const $ = (id) => document.getElementById(id);
  const boardEl = $("board");
  const emptyEl = $("empty");
  const statusEl = $("status");
  const statusText = $("status-text");

  let board = [];
  let version = null;
  let attempt = 0;
  let socket = null;
  let silenceTimer = null;
  let retryTimer = null;

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
    emptyEl.hidden = board.length > 0;
  }

  function onMessage(event) {
    armSilenceTimer();
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "snapshot") {
      const before = new Map(board.map((e) => [e.rank, e]));
      board = msg.board;
      version = msg.version;
      attempt = 0;
      const changed = new Set(
        board.filter((e) => {
          const old = before.get(e.rank);
          return old && (old.user_id !== e.user_id || old.score !== e.score);
        }).map((e) => e.rank),
      );
      render(changed);
      setStatus("live", "Live");
    } else if (msg.type === "diff") {
      if (version === null || msg.base !== version) {
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
  }

  function resync() {
    version = null; // ignore diffs until the snapshot arrives
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resync" }));
  }

  function armSilenceTimer() {
    clearTimeout(silenceTimer);
    silenceTimer = setTimeout(() => socket && socket.close(4000, "silent"), SILENCE_MS);
  }

  function scheduleReconnect(url) {
    // Full jitter: spread reconnects of many browsers after a gateway restart.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = Math.random() * ceiling;
    attempt += 1;
    setStatus("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => connect(url), delay);
  }

  function connect(url) {
    setStatus(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "Connecting…");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      setStatus("offline", "Invalid gateway URL");
      return;
    }
    socket = ws;
    ws.onopen = armSilenceTimer;
    ws.onmessage = onMessage;
    ws.onclose = () => {
      if (socket !== ws) return;
      clearTimeout(silenceTimer);
      version = null;
      scheduleReconnect(url);
    };
  }

  async function gatewayUrl() {
    try {
      const response = await fetch("/config.json", { cache: "no-store" });
      const config = await response.json();
      if (config.gateway_url) return config.gateway_url;
    } catch {
      // fall through to the default
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.hostname}:8001/ws/score`;
  }

  // The action panel

  function randomKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function showResult(kind, text) {
    const el = $("result");
    el.dataset.kind = kind;
    el.textContent = text;
  }

  async function submit(event) {
    event.preventDefault();
    const token = $("token").value.trim().replace(/^Bearer\s+/i, "");
    if (!token) {
      showResult("error", "Paste a token first.");
      return;
    }
    const button = $("submit");
    button.disabled = true;
    showResult("pending", "Sending…");
    try {
      const response = await fetch("/api/score", {
        method: "POST",
        headers: {
          Authorization: `Bearer ${token}`,
          "Content-Type": "application/json",
          "Idempotency-Key": randomKey(),
        },
        body: JSON.stringify({ action: $("action").value }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        showResult(
          "ok",
          `+${body.awarded} for ${body.name}: score ${formatScore(body.score)}, rank ${body.rank}`,
        );
      } else {
        const detail = body.detail || response.statusText || "request failed";
        showResult("error", `${response.status}: ${detail}`);
      }
    } catch (err) {
      showResult("error", `Network error: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  $("act-form").addEventListener("submit", submit);
  gatewayUrl().then(connect);
})();
