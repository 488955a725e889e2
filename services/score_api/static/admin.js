// The moderation console (GET /admin): open flags, a user's events and history, the
// moderation actions, each confirmed in the page with a reason, and the stats of a window.
// Every value from the API is set with textContent, never parsed as HTML. The token lives in
// its field only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  let user = null; // the user the actions apply to: the last one looked up
  let pending = null; // the action the confirmation dialog is about
  let busy = false;

  // What each action does, as the confirmation says it.
  const ACTIONS = {
    ban: ["Ban", "removes them from every board and refuses their scores until an unban."],
    unban: ["Unban", "restores their scores to the boards and lets them score again."],
    quarantine: ["Quarantine", "hides them from every public board; they still see their rank."],
    release: ["Release", "puts them back on the public boards, in their old place."],
    revoke: ["Revoke points", "subtracts the points of their score events"],
  };

  function token() {
    return $("token").value.trim().replace(/^Bearer\s+/i, "");
  }

  function setStatus(el, kind, text) {
    el.dataset.kind = kind;
    el.textContent = text;
  }

  // The answer's one-line summary: its status, and a problem's title and detail.
  function summary(answer) {
    if (answer.local) return answer.local;
    if (answer.network) return `Network error: ${answer.network}`;
    const { status, body } = answer;
    const head = `${status} ${answer.statusText}`.trim();
    if (body && typeof body === "object" && (body.title || body.detail)) {
      const retry = answer.retryAfter ? ` (Retry-After: ${answer.retryAfter} s)` : "";
      return `${status} ${body.title || ""}: ${body.detail || ""}${retry}`;
    }
    return head;
  }

  // One request, never retried: {ok, status, statusText, retryAfter, body}, or {local} (not
  // sent) or {network} (no answer).
  async function call(method, path, payload, headers = {}) {
    const bearer = token();
    if (!bearer) return { local: "Paste an admin token first." };
    const init = {
      method,
      cache: "no-store",
      credentials: "omit",
      headers: { Authorization: `Bearer ${bearer}`, ...headers },
    };
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return { network: err.message };
    }
    const text = await response.text().catch(() => "");
    let body = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: shown as it came
    }
    return {
      ok: response.ok,
      status: response.status,
      statusText: response.statusText,
      retryAfter: response.headers.get("Retry-After"),
      body,
    };
  }

  function cellText(value) {
    if (value === null || value === undefined || value === "") return "—";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // A table body from rows of values; ``extra(tr, row)`` may add cells or attributes.
  function fillTable(table, rows, columns, extra) {
    const body = table.tBodies[0];
    body.replaceChildren(
      ...rows.map((row) => {
        const tr = document.createElement("tr");
        for (const column of columns) {
          const td = document.createElement("td");
          td.textContent = cellText(row[column]);
          td.dataset.field = column;
          tr.appendChild(td);
        }
        if (extra) extra(tr, row);
        return tr;
      }),
    );
  }

  function button(text, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.addEventListener("click", onClick);
    return b;
  }

  // Open flags

  const FLAG_COLUMNS = [
    "user_id", "name", "rule", "window_seconds", "observed", "threshold", "first_seen", "last_seen",
  ];

  async function loadFlags() {
    const status = $("flags-status");
    setStatus(status, "pending", "Loading…");
    const answer = await call("GET", "/api/admin/flags?state=open");
    if (!answer.ok) {
      setStatus(status, "error", summary(answer));
      return;
    }
    const flags = Array.isArray(answer.body.flags) ? answer.body.flags : [];
    fillTable($("flags"), flags, FLAG_COLUMNS, (tr, flag) => {
      tr.dataset.flagId = String(flag.flag_id);
      tr.dataset.userId = String(flag.user_id);
      const td = document.createElement("td");
      td.className = "buttons";
      td.append(
        button("Dismiss", () => ask("dismiss", flag)),
        button("Look up user", () => lookUp(String(flag.user_id))),
      );
      tr.appendChild(td);
    });
    setStatus(status, "ok", flags.length ? `${flags.length} open.` : "No open flags.");
  }

  // One user: events and moderation history

  const EVENT_COLUMNS = [
    "at", "type", "action", "points", "score_after", "client_ip", "user_agent", "request_id",
    "ticket", "duration_ms", "reporter", "revoked_by", "by", "reason",
  ];
  const AUDIT_COLUMNS = ["at", "type", "by", "reason", "score", "request_id", "revocation", "flag"];

  async function lookUp(id) {
    const status = $("user-status");
    id = id.trim();
    $("user-id").value = id;
    if (!id) {
      setStatus(status, "error", "Enter a user id.");
      return;
    }
    user = id;
    $("current-user").textContent = id;
    $("user-panel").hidden = false;
    setStatus(status, "pending", "Loading…");
    const path = encodeURIComponent(id);
    const [events, audit] = await Promise.all([
      call("GET", `/api/admin/users/${path}/events?limit=50`),
      call("GET", `/api/admin/audit?user_id=${path}`),
    ]);
    if (user !== id) return; // another look-up started meanwhile
    // An id the API refuses (422) is no one to act on; any other failure, e.g. PostgreSQL
    // away (503), leaves the actions offered: they go through Redis.
    $("user-panel").hidden = events.status === 422;
    const errors = [];
    if (events.ok) {
      fillTable($("events"), events.body.events || [], EVENT_COLUMNS, (tr, event) => {
        if (event.revoked_by) tr.classList.add("revoked");
      });
    } else {
      $("events").tBodies[0].replaceChildren();
      errors.push(`events: ${summary(events)}`);
    }
    if (audit.ok) {
      fillTable($("audit"), audit.body.actions || [], AUDIT_COLUMNS);
    } else {
      $("audit").tBodies[0].replaceChildren();
      errors.push(`history: ${summary(audit)}`);
    }
    if (errors.length) {
      setStatus(status, "error", errors.join(" — "));
    } else {
      const n = $("events").tBodies[0].rows.length;
      const m = $("audit").tBodies[0].rows.length;
      setStatus(status, "ok", `${n} recent events, ${m} moderation actions.`);
    }
  }

  // Stats over a window (GET /api/admin/stats)

  async function loadStats() {
    const status = $("stats-status");
    const window = $("stats-window").value;
    setStatus(status, "pending", "Loading…");
    const answer = await call("GET", `/api/admin/stats?window=${encodeURIComponent(window)}`);
    if (!answer.ok) {
      $("stats-panel").hidden = true;
      setStatus(status, "error", summary(answer));
      return;
    }
    const stats = answer.body;
    const list = (value) => (Array.isArray(value) ? value : []);
    $("stats-summary").textContent =
      `${cellText(stats.active_users)} active users, ${cellText(stats.new_users)} new; ` +
      `${cellText(stats.awards)} awards, ${cellText(stats.points)} points ` +
      `(${cellText(stats.from)} to ${cellText(stats.to)}).`;
    fillTable($("stats-actions"), list(stats.by_action), ["action", "awards", "points"]);
    fillTable($("stats-movers"), list(stats.top_movers), ["user_id", "name", "awards", "points"]);
    fillTable($("stats-refusals"), list(stats.refusals), ["reason", "count"]);
    fillTable($("stats-hours"), list(stats.points_by_hour), ["hour", "awards", "points"]);
    $("stats-panel").hidden = false;
    setStatus(status, "ok", `Window ${cellText(stats.window)}.`);
  }

  // Actions: ask (the dialog), then send once confirmed

  // datetime-local (this browser's zone) -> RFC 3339 UTC, whole seconds; null if unset.
  function utc(value) {
    if (!value) return null;
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return null;
    return date.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  // An Idempotency-Key: 32 of [0-9a-f] (a UUID without its dashes).
  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID().replaceAll("-", "");
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function showAnswer(kind, text, body) {
    setStatus($("answer"), kind, text);
    const pre = $("answer-body");
    pre.hidden = body === undefined;
    if (typeof body !== "string") body = body === undefined ? "" : JSON.stringify(body, null, 2);
    pre.textContent = body;
  }

  function ask(op, flag) {
    let title;
    let text;
    const extra = {};
    if (op === "dismiss") {
      title = `Dismiss flag ${flag.flag_id}`;
      text = `The ${flag.rule} flag of ${flag.user_id} is closed as dismissed; `;
      text += "the user is unchanged.";
      extra.flag = String(flag.flag_id);
    } else {
      const [label, effect] = ACTIONS[op];
      title = `${label}: ${user}`;
      text = `${label} ${user}: ${effect}`;
      if (op === "revoke") {
        const since = utc($("since").value);
        const until = utc($("until").value);
        if (!since || !until || since >= until) {
          showAnswer("error", "Revoke: give both times, the first before the second.");
          return;
        }
        extra.since = since;
        extra.until = until;
        text += ` from ${since} until ${until} (UTC), from every board, and records why.`;
      }
    }
    pending = { op, user: op === "dismiss" ? String(flag.user_id) : user, ...extra };
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("reason").value = "";
    $("confirm-error").textContent = "";
    $("confirm-ok").disabled = false;
    $("confirm").showModal();
    $("reason").focus();
  }

  function cancel() {
    pending = null;
    if ($("confirm").open) $("confirm").close();
  }

  async function confirmed(event) {
    event.preventDefault();
    if (!pending || busy) return;
    const reason = $("reason").value.trim();
    if (!reason) {
      $("confirm-error").textContent = "A reason is required.";
      $("reason").focus();
      return;
    }
    const action = pending;
    pending = null;
    $("confirm").close();
    const base = `/api/admin/users/${encodeURIComponent(action.user)}`;
    let path;
    let payload = { reason };
    const headers = {};
    if (action.op === "dismiss") {
      path = `/api/admin/flags/${encodeURIComponent(action.flag)}/dismiss`;
    } else if (action.op === "revoke") {
      path = `${base}/revoke`;
      payload = { since: action.since, until: action.until, reason };
      headers["Idempotency-Key"] = newKey();
    } else {
      path = `${base}/${action.op}`;
    }
    busy = true;
    showAnswer("pending", `Sending ${action.op}…`);
    const answer = await call("POST", path, payload, headers);
    busy = false;
    showAnswer(answer.ok ? "ok" : "error", summary(answer), answer.body);
    if (answer.ok) {
      // What changed: the flags (any action may close one) and the user's tables.
      if ($("flags-status").textContent) loadFlags();
      if (user === action.user) lookUp(action.user);
    }
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadFlags();
  });
  $("stats-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadStats();
  });
  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    lookUp($("user-id").value);
  });
  for (const b of document.querySelectorAll("#user-panel button[data-op]")) {
    b.addEventListener("click", () => ask(b.dataset.op));
  }
  $("confirm-form").addEventListener("submit", confirmed);
  $("confirm-cancel").addEventListener("click", cancel);
  $("confirm").addEventListener("close", () => {
    pending = null;
  });
})();
