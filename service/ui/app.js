"use strict";
/*
 * template-sync status page (design section 13).
 *
 * A plain script with no build step. The page's Content-Security-Policy runs this file and
 * nothing else, so there is no inline handler anywhere, and nothing is parsed as markup:
 * every value from the service (names, Meta's rejection reasons, error details) enters the
 * page as text, through textContent and createElement.
 * The token lives in this tab's sessionStorage and in Authorization headers, never in a URL.
 * The event stream is read with fetch, since an EventSource cannot send that header.
 */
(() => {
  const KEYS = { workspace: "template-sync.workspace", token: "template-sync.token" };
  const PER_PAGE = 100; // the API's largest page
  const STATUSES = [
    "PENDING", "IN_APPEAL", "APPROVED", "REJECTED", "PAUSED", "DISABLED", "LIMIT_EXCEEDED",
    "PENDING_DELETION", "DELETED", "ARCHIVED", "UNKNOWN",
  ];
  const WAITING = { PENDING: "pending", IN_APPEAL: "in appeal" }; // what a sync asks Meta about
  const RETRY_FIRST_MS = 500; // the first pause before the stream reconnects; doubles up to:
  const RETRY_MAX_MS = 15000;
  const TICK_MS = 30000; // waiting times and ages are redrawn this often
  const TOKEN_REFUSED = "The service refused this token (401): check it, "
    + "or create one with template-sync token create";
  const WORKSPACE_UNKNOWN = "Workspace not found for this token";
  const KIND_WORDS = {
    throttled: "Meta is throttling this account; the service waits before asking again",
    token_invalid: "Meta refused the access token",
    permission: "the access token lacks a permission",
    transient: "Meta had a temporary error",
    invalid_response: "Meta's answer could not be read",
    network: "Meta could not be reached",
    server: "the upstream service failed",
    other: "Meta refused the request",
  };
  const TRIGGER_WORDS = {
    api: "Sync now or the API", poller: "the polling fallback", cli: "the command line",
  };
  const RUN_WORDS = {
    succeeded: "succeeded", partial: "partly failed", failed: "failed", running: "running",
  };

  const session = { workspace: "", token: "" };
  const templates = new Map(); // template id -> template object, as the API answers it
  const seen = new Map(); // template id -> highest history id applied from the stream
  let lastEventId = null; // the stream's resume point (Last-Event-ID)
  let generation = 0; // bumped on every open and forget: late answers of an old one are dropped
  let streamAbort = null;
  let lastRun; // the last sync run: undefined until read, null when there has been none
  let historyOpener = null;

  const $ = (id) => document.getElementById(id);

  /** An element with text content and attributes; never parses markup. */
  function el(tag, text, attributes = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function dash(value) {
    return value === null || value === undefined || value === "" ? "-" : String(value);
  }

  function words(status) {
    return status.replaceAll("_", " ");
  }

  // --- time in words -------------------------------------------------------------------

  function duration(ms) {
    const minutes = Math.floor(Math.max(0, ms) / 60000);
    if (minutes < 1) return "less than a minute";
    if (minutes < 120) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    return hours < 48 ? `${hours} h` : `${Math.floor(hours / 24)} days`;
  }

  function ago(iso) {
    const ms = Date.now() - Date.parse(iso);
    return ms < 60000 ? "just now" : `${duration(ms)} ago`;
  }

  function when(iso) {
    return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  }

  function timeNode(iso, text) {
    return el("time", text, { datetime: iso, title: when(iso) });
  }

  // --- the service's API ---------------------------------------------------------------

  function apiUrl(path) {
    // Relative to the page (/ui/), so it holds behind a proxy that adds a path prefix.
    const workspace = encodeURIComponent(session.workspace);
    return new URL(`../api/v3/workspaces/${workspace}${path}`, window.location.href);
  }

  function requestHeaders(accept) {
    return { Authorization: `Bearer ${session.token}`, Accept: accept };
  }

  /** {status, body, headers} of an answer; body null when it is not JSON (a proxy's page). */
  async function answerOf(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return { status: response.status, body, headers: response.headers };
  }

  /** An API call's answer; status 0 when the service could not be reached at all. */
  async function call(path, method = "GET") {
    try {
      const response = await fetch(apiUrl(path), {
        method, headers: requestHeaders("application/json"), cache: "no-store",
        credentials: "omit",
      });
      return await answerOf(response);
    } catch {
      return { status: 0, body: null, headers: new Headers() };
    }
  }

  function unreachable() {
    return `Cannot reach the service at ${window.location.origin}`;
  }

  function workspaceUnknown(answer) {
    return answer.status === 404 && answer.body !== null
      && answer.body.message === "Workspace not found";
  }

  function sessionRefused(answer) {
    return answer.status === 401 || workspaceUnknown(answer);
  }

  /** Handles what concerns the whole session rather than one request (a refused token, an
   *  unknown workspace, no service at all); true when it did. */
  function sessionFailure(answer) {
    if (answer.status === 401) return refuse(TOKEN_REFUSED);
    if (workspaceUnknown(answer)) return refuse(WORKSPACE_UNKNOWN);
    if (answer.status === 0) {
      showError(unreachable());
      return true;
    }
    return false;
  }

  function answerText(answer) {
    const body = answer.body;
    const message = body && typeof body.message === "string" ? body.message : "";
    return message ? `${answer.status}: ${message}` : `${answer.status}`;
  }

  // --- errors and the live indicator ----------------------------------------------------

  function showError(text) {
    $("error").textContent = text;
  }

  function clearError() {
    $("error").textContent = "";
  }

  function setLive(state, text) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = text;
  }

  // --- session: fragment, sessionStorage, form, forget -----------------------------------

  /** `#workspace=WS&token=TOKEN`, then off the address bar so it stays out of history. */
  function takeFragment() {
    if (!window.location.hash) return;
    const params = new URLSearchParams(window.location.hash.slice(1));
    const workspace = params.get("workspace");
    const token = params.get("token");
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    if (workspace && token) remember(workspace, token);
  }

  function remember(workspace, token) {
    sessionStorage.setItem(KEYS.workspace, workspace);
    sessionStorage.setItem(KEYS.token, token);
  }

  function stopSession() {
    generation += 1;
    if (streamAbort) streamAbort.abort();
    streamAbort = null;
    session.token = "";
    templates.clear();
    seen.clear();
    lastEventId = null;
    lastRun = undefined;
    $("templates").tBodies[0].replaceChildren();
    $("last-sync").textContent = "Last sync: loading...";
    $("sync-result").textContent = "";
    setLive("off", "Not connected");
  }

  function showLogin(workspace) {
    $("content").hidden = true;
    $("forget").hidden = true;
    $("workspace-name").hidden = true;
    $("login").hidden = false;
    $("login-workspace").value = workspace || "";
    $(workspace ? "login-token" : "login-workspace").focus();
  }

  /** The token or workspace was refused: forget the token, say why, ask again. */
  function refuse(message) {
    const workspace = session.workspace;
    stopSession();
    sessionStorage.removeItem(KEYS.token);
    showLogin(workspace);
    showError(message);
    return true;
  }

  function forget() {
    stopSession();
    sessionStorage.removeItem(KEYS.workspace);
    sessionStorage.removeItem(KEYS.token);
    session.workspace = "";
    clearError();
    showLogin("");
  }

  function openSession() {
    const workspace = sessionStorage.getItem(KEYS.workspace);
    const token = sessionStorage.getItem(KEYS.token);
    if (!workspace || !token) {
      showLogin(workspace);
      return;
    }
    stopSession();
    session.workspace = workspace;
    session.token = token;
    $("login").hidden = true;
    $("content").hidden = false;
    $("forget").hidden = false;
    const name = $("workspace-name");
    name.textContent = `Workspace ${workspace}`;
    name.hidden = false;
    follow(generation);
  }

  function submitLogin(event) {
    event.preventDefault(); // the CSP's form-action 'none' blocks a real submission anyway
    const workspace = $("login-workspace").value.trim();
    const token = $("login-token").value.trim();
    if (!workspace || !token) return;
    $("login-token").value = "";
    clearError();
    remember(workspace, token);
    openSession();
  }

  // --- templates: load, merge, render -----------------------------------------------------

  async function refresh(gen) {
    await Promise.all([loadTemplates(gen), loadLastSync(gen)]);
  }

  async function loadTemplates(gen) {
    const found = [];
    for (let page = 1; ; page += 1) {
      const answer = await call(`/templates?per_page=${PER_PAGE}&page=${page}`);
      if (gen !== generation) return;
      if (answer.status !== 200) {
        if (!sessionFailure(answer)) showError(`The template list failed (${answerText(answer)})`);
        return;
      }
      found.push(...answer.body.data);
      if (page >= answer.body.meta.last_page) break;
    }
    clearError();
    const fresh = new Map();
    for (const template of found) {
      // A stream event applied while the list was read may be newer than the list's row.
      const current = templates.get(template.id);
      const newer = current && current.updated_at > template.updated_at;
      fresh.set(template.id, newer ? current : template);
    }
    templates.clear();
    for (const [id, template] of fresh) templates.set(id, template);
    renderTable();
  }

  function before(a, b) {
    const keyA = [a.name, a.language, a.id];
    const keyB = [b.name, b.language, b.id];
    for (let i = 0; i < keyA.length; i += 1) {
      if (keyA[i] !== keyB[i]) return keyA[i] < keyB[i];
    }
    return false;
  }

  function renderTable() {
    const rows = [...templates.values()]
      .sort((a, b) => (before(a, b) ? -1 : 1))
      .map((template) => fillRow(el("tr", null, { role: "row" }), template));
    $("templates").tBodies[0].replaceChildren(...rows);
    applyFilters();
  }

  function templateOf(row) {
    return templates.get(Number(row.dataset.templateId));
  }

  /** One template as an event carried it: its row changes in place, or is added. */
  function applyTemplate(template, historyId) {
    if (historyId <= (seen.get(template.id) || 0)) return; // a replay of what was applied
    seen.set(template.id, historyId);
    const current = templates.get(template.id);
    if (current && current.updated_at > template.updated_at) return;
    templates.set(template.id, template);
    const body = $("templates").tBodies[0];
    const row = body.querySelector(`tr[data-template-id="${Number(template.id)}"]`);
    if (row) {
      fillRow(row, template);
    } else {
      const next = [...body.rows].find((other) => before(template, templateOf(other)));
      body.insertBefore(fillRow(el("tr", null, { role: "row" }), template), next || null);
    }
    applyFilters();
  }

  /** A cell labelled with its column (what a phone shows before the value). The roles keep
   *  the table's semantics when the phone layout makes rows into blocks. */
  function cell(tag, label, ...content) {
    const role = tag === "th" ? "rowheader" : "cell";
    const node = el(tag, null, { "data-label": label, role });
    if (tag === "th") node.setAttribute("scope", "row");
    node.append(...content);
    return node;
  }

  function statusCell(template) {
    const chip = (status) => el("span", words(status), { class: "chip", "data-status": status });
    const chips = [chip(template.status)];
    if (template.flagged) chips.push(chip("FLAGGED"));
    return cell("td", "Status", ...chips);
  }

  function waitingText(template) {
    const waiting = WAITING[template.status];
    if (!waiting) return "-";
    return `${waiting} for ${duration(Date.now() - Date.parse(template.status_updated_at))}`;
  }

  function webhookCell(template) {
    const at = template.last_webhook_at;
    const content = at
      ? timeNode(at, `webhook ${ago(at)}`)
      : el("span", "no webhook yet", { class: "muted" });
    return cell("td", "Webhook", content);
  }

  function nameCell(template) {
    const name = el("span", template.name, { class: "name" });
    const metaId = el("span", `Meta id ${template.provider_id}`, { class: "sub" });
    return cell("th", "Name", name, metaId);
  }

  function historyButton(template) {
    const button = el("button", "History", { type: "button", class: "history" });
    button.setAttribute("aria-label", `History of ${template.name} (${template.language})`);
    button.addEventListener("click", () => showHistory(templateOf(button.closest("tr")), button));
    return button;
  }

  /** The row's cells from `template`; its History button is kept, so focus on it stays. */
  function fillRow(row, template) {
    row.dataset.templateId = String(template.id);
    const button = row.querySelector("button.history") || historyButton(template);
    const quality = dash(template.quality_score);
    row.replaceChildren(
      nameCell(template),
      cell("td", "Language", template.language),
      cell("td", "Category", dash(template.category)),
      statusCell(template),
      cell("td", "Waiting", waitingText(template)),
      webhookCell(template),
      cell("td", "Quality", el("span", quality, { "data-quality": quality })),
      cell("td", "Rejection reason", dash(template.rejected_reason)),
      cell("td", "Actions", button),
    );
    return row;
  }

  // --- filters -------------------------------------------------------------------------------

  function applyFilters() {
    const status = $("filter-status").value;
    const name = $("filter-name").value.trim().toLowerCase();
    let shown = 0;
    for (const row of $("templates").tBodies[0].rows) {
      const template = templateOf(row);
      const visible = (!status || template.status === status)
        && (!name || template.name.toLowerCase().includes(name));
      row.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    renderStatusOptions();
    $("shown").textContent = templates.size === 0
      ? "No templates in this workspace yet."
      : `Showing ${shown} of ${plural(templates.size, "template")}.`;
  }

  /** The status filter's options: the statuses present, with counts, and the chosen one.
   *  Options are relabelled in place while the set stays the same (an open list stays). */
  function renderStatusOptions() {
    const select = $("filter-status");
    const counts = new Map();
    for (const { status } of templates.values()) counts.set(status, (counts.get(status) || 0) + 1);
    const chosen = select.value;
    const wanted = [...new Set([...STATUSES, ...counts.keys()])]
      .filter((status) => counts.has(status) || status === chosen);
    const options = [el("option", `All statuses (${templates.size})`, { value: "" })];
    for (const status of wanted) {
      const label = `${words(status)} (${counts.get(status) || 0})`;
      options.push(el("option", label, { value: status }));
    }
    const same = options.length === select.options.length
      && options.every((option, i) => option.value === select.options[i].value);
    if (same) {
      options.forEach((option, i) => { select.options[i].textContent = option.textContent; });
    } else {
      select.replaceChildren(...options);
      select.value = chosen;
    }
  }

  // --- last sync and Sync now ------------------------------------------------------------------

  async function loadLastSync(gen) {
    const answer = await call("/templates/sync");
    if (gen !== generation) return;
    if (answer.status !== 200) {
      if (sessionFailure(answer)) return;
      $("last-sync").textContent = `The last sync could not be read (${answerText(answer)})`;
      return;
    }
    lastRun = answer.body.data;
    renderLastSync();
  }

  function counts(data) {
    return `checked ${data.checked}, updated ${data.updated}, `
      + `unchanged ${data.unchanged}, missing ${data.missing}`;
  }

  function failureText(error) {
    const explained = KIND_WORDS[error.kind] || "the sync failed";
    const code = error.code === null || error.code === undefined ? "" : `, code ${error.code}`;
    const where = error.waba_id ? `WABA ${error.waba_id}: ` : "";
    return `${where}${explained} (${error.kind}${code}): ${error.detail}`;
  }

  function stamp(iso) {
    return timeNode(iso, `${when(iso)} (${ago(iso)})`);
  }

  function renderLastSync() {
    const box = $("last-sync");
    const run = lastRun;
    if (!run) {
      box.replaceChildren(el("p", "No sync has run in this workspace yet."));
      return;
    }
    const status = RUN_WORDS[run.status] || run.status;
    const trigger = TRIGGER_WORDS[run.trigger] || run.trigger;
    const summary = el("p", `Last sync ${status}, started by ${trigger}, `);
    if (run.finished_at) {
      const calls = `${plural(run.graph_calls, "call")} to the source`;
      summary.append("finished ", stamp(run.finished_at), `: ${counts(run)}; ${calls}.`);
    } else {
      summary.append("running since ", stamp(run.started_at), ".");
    }
    const parts = [summary];
    if (run.errors && run.errors.length) {
      const list = el("ul", null);
      list.append(...run.errors.map((error) => el("li", failureText(error))));
      parts.push(el("p", "Errors:"), list);
    }
    box.replaceChildren(...parts);
  }

  /** The sync endpoint's answer in words (the seed's three, and the rest). */
  function syncMessage(answer) {
    const body = answer.body || {};
    if (answer.status === 200) return `Templates synced successfully: ${counts(body.data)}.`;
    if (answer.status === 404 && body.message === "No pending templates found") {
      return "No pending templates found: nothing to sync";
    }
    if (answer.status === 500 && body.error) {
      const updated = body.data ? body.data.updated : 0;
      const kept = updated ? ` Updates from the other accounts were kept (${updated}).` : "";
      return `Failed to sync the templates: ${failureText(body.error)}.${kept}`;
    }
    if (answer.status === 429) {
      const wait = answer.headers.get("Retry-After");
      return `Too many requests (429): try again ${wait ? `in ${wait} s` : "later"}.`;
    }
    return `The sync did not run: the service answered ${answerText(answer)}.`;
  }

  async function syncNow() {
    const gen = generation;
    const button = $("sync-now");
    const result = $("sync-result");
    button.disabled = true;
    result.textContent = "Syncing with Meta...";
    const answer = await call("/templates/sync", "POST");
    if (gen !== generation) return;
    button.disabled = false;
    if (sessionFailure(answer)) {
      result.textContent = "";
      return;
    }
    result.textContent = syncMessage(answer);
    result.dataset.status = String(answer.status);
    await refresh(gen);
  }

  // --- the event stream ---------------------------------------------------------------------

  /** Server-sent events from text chunks, by the WHATWG parsing rules for the fields this
   *  stream uses: calls `onEvent({type, data})` per event and keeps `lastEventId`. */
  function sseParser(onEvent) {
    let buffer = "";
    let data = [];
    let type = "";
    const line = (text) => {
      if (text === "") {
        if (data.length) onEvent({ type: type || "message", data: data.join("\n") });
        data = [];
        type = "";
        return;
      }
      if (text.startsWith(":")) return; // a comment: the keep-alive
      const colon = text.indexOf(":");
      const name = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") data.push(value);
      else if (name === "event") type = value;
      else if (name === "id" && !value.includes("\u0000")) lastEventId = value;
    };
    return (chunk) => {
      let text = buffer + chunk;
      const held = text.endsWith("\r") ? "\r" : ""; // maybe the first half of a \r\n
      if (held) text = text.slice(0, -1);
      const lines = text.split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      lines.forEach(line);
    };
  }

  function onEvent(event) {
    if (!event.type.startsWith("template.")) return;
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch {
      return;
    }
    const data = payload && payload.data;
    if (data && data.template) applyTemplate(data.template, data.history_id);
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  /** Follows the stream until the session ends: after a drop it reconnects with a capped,
   *  jittered backoff, resuming with Last-Event-ID so no event is missed. */
  async function follow(gen) {
    let delay = RETRY_FIRST_MS;
    setLive("connecting", "Connecting...");
    while (gen === generation) {
      const outcome = await streamOnce(gen);
      if (gen !== generation || outcome === "refused") return;
      if (outcome === "connected") delay = RETRY_FIRST_MS;
      const pause = delay * (0.8 + Math.random() * 0.4);
      setLive("reconnecting", `Reconnecting in ${Math.max(1, Math.round(pause / 1000))} s...`);
      await sleep(pause);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  /** One connection: "refused", "failed" (no stream) or "connected" (it ran, then ended). */
  async function streamOnce(gen) {
    const abort = new AbortController();
    streamAbort = abort;
    const headers = requestHeaders("text/event-stream");
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    let response;
    try {
      response = await fetch(apiUrl("/events"), {
        headers, cache: "no-store", credentials: "omit", signal: abort.signal,
      });
    } catch {
      if (gen === generation) showError(unreachable());
      return "failed";
    }
    if (!response.ok) {
      const answer = await answerOf(response);
      if (gen !== generation) return "refused";
      if (sessionRefused(answer)) return sessionFailure(answer) && "refused";
      showError(`The event stream failed (${answerText(answer)})`);
      return "failed";
    }
    setLive("live", "Live: statuses update as webhooks land");
    clearError();
    // Without a resume point there is nothing to replay from: read the current state instead.
    if (lastEventId === null) refresh(gen);
    await readStream(response.body, gen);
    return "connected";
  }

  async function readStream(body, gen) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const feed = sseParser(onEvent);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== generation) break;
        feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      // the connection dropped (or the session ended): follow() decides what comes next
    }
  }

  // --- history drawer -------------------------------------------------------------------------

  function historyRow(event) {
    const time = event.event_time || event.received_at;
    const concerns = event.field === "status" || event.field === "template";
    const cells = [
      ["Time", timeNode(time, when(time))],
      ["Event", concerns ? event.event : `${words(event.field)} ${event.event}`],
      ["Change", `${dash(event.old_status)} \u2192 ${dash(event.new_status)}`],
      ["Source", event.source],
      ["Reason", dash(event.reason)],
      ["Applied", event.applied ? "yes" : "no: older than the current state"],
    ];
    const row = el("tr", null, { role: "row" });
    row.append(...cells.map(([label, content]) => cell("td", label, content)));
    return row;
  }

  async function showHistory(template, opener) {
    const dialog = $("history");
    const status = $("history-status");
    const gen = generation;
    historyOpener = opener;
    $("history-title").textContent = `History of ${template.name} (${template.language})`;
    $("history-table").tBodies[0].replaceChildren();
    status.textContent = "Loading...";
    dialog.showModal();
    const answer = await call(`/templates/${template.id}/history`);
    if (gen !== generation || !dialog.open || historyOpener !== opener) return;
    if (answer.status !== 200) {
      status.textContent = `The history could not be read (${answerText(answer)})`;
      return;
    }
    const events = answer.body.data;
    status.textContent = plural(events.length, "event");
    $("history-table").tBodies[0].replaceChildren(...events.map(historyRow));
  }

  function historyClosed() {
    // Back to the button that opened it, after Esc and Close alike.
    if (historyOpener && historyOpener.isConnected) historyOpener.focus();
    historyOpener = null;
  }

  // --- start ---------------------------------------------------------------------------------

  function tick() {
    for (const row of $("templates").tBodies[0].rows) {
      const template = templateOf(row);
      if (template) fillRow(row, template);
    }
    if (lastRun !== undefined) renderLastSync();
  }

  function start() {
    $("login").addEventListener("submit", submitLogin);
    $("forget").addEventListener("click", forget);
    $("sync-now").addEventListener("click", syncNow);
    $("filter-status").addEventListener("change", applyFilters);
    $("filter-name").addEventListener("input", applyFilters);
    $("history-close").addEventListener("click", () => $("history").close());
    $("history").addEventListener("close", historyClosed);
    // A link with a fragment opened again in this tab does not reload the page.
    window.addEventListener("hashchange", () => {
      if (!window.location.hash) return;
      takeFragment();
      clearError();
      openSession();
    });
    takeFragment();
    openSession();
    setInterval(tick, TICK_MS);
  }

  start();
})();
