// The Palisade console: one page, five views, all data from the HTTP API.
// No build step and no third-party code: modules served by the palisade binary.

const TOKEN_KEY = "palisade.token";
const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------- API access

class Unauthorised extends Error {}

/** A JSON API call with the session's token; an error carries the JSON body. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) throw new Unauthorised(json.error);
  if (!response.ok) {
    const error = new Error(json.error || `HTTP ${response.status}`);
    error.body = json;
    throw error;
  }
  return json;
}

// ------------------------------------------------------------------- helpers

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

/** Shows or hides an element (the attribute, so it works on SVG elements too). */
function show(node, visible) {
  node.toggleAttribute("hidden", !visible);
}

function fail(node, error) {
  node.textContent = error.message;
  show(node, true);
}

const cellText = (value) =>
  value === null || value === undefined
    ? ""
    : typeof value === "object"
      ? JSON.stringify(value)
      : String(value);

/** A table from rows and columns; `onrow` makes rows clickable. */
function fillTable(table, columns, rows, { onrow, html = {} } = {}) {
  table.replaceChildren(
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el(
      "tbody",
      {},
      rows.map((row) => {
        const tr = el(
          "tr",
          onrow ? { class: "clickable", onclick: () => onrow(row) } : {},
          columns.map((c) => {
            const td = el("td", { "data-column": c });
            // Only the server's highlight snippets are HTML: <b> around matches in
            // escaped text (src/query/snippet.rs).
            if (html[c] && row[html[c]]) td.innerHTML = row[html[c]];
            else td.textContent = cellText(row[c]);
            return td;
          }),
        );
        return tr;
      }),
    ),
  );
}

const utc = (date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");
/** `datetime-local` value (read as UTC) → RFC 3339. */
const localToUtc = (value) => (value ? `${value.length === 16 ? `${value}:00` : value}Z` : "");
const quote = (text) => `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

// ------------------------------------------------------------------- routing

/** `#/page?key=value…` → { page, params }. */
function route() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  return { page: path || "search", params: new URLSearchParams(query) };
}

function navigate(page, params = {}) {
  const query = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== "" && v !== undefined && v !== null),
  ).toString();
  const hash = `#/${page}${query ? `?${query}` : ""}`;
  if (location.hash === hash) render();
  else location.hash = hash;
}

let statusTimer = null;

async function render() {
  clearInterval(statusTimer);
  const { page, params } = route();
  for (const section of document.querySelectorAll(".page")) show(section, false);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  show($("#drawer"), false);
  const pages = { search, groups, blast, vulns, status };
  const view = pages[page] || search;
  show($(`#page-${pages[page] ? page : "search"}`), true);
  try {
    await view(params);
  } catch (error) {
    if (error instanceof Unauthorised) login(error.message);
    else throw error;
  }
}

function login(message) {
  for (const section of document.querySelectorAll(".page")) show(section, false);
  show($("#login"), true);
  if (message && sessionStorage.getItem(TOKEN_KEY)) {
    $("#login-error").textContent = message;
    show($("#login-error"), true);
  }
  $("#token").focus();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  show($("#login-error"), false);
  show($("#logout"), true);
  render();
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  show($("#logout"), false);
  login();
});

// -------------------------------------------------------------------- search

const RANGES = { "15m": "last_15m", "1h": "last_1h", "24h": "last_24h", "7d": "last_7d", "30d": "last_30d" };
const BUCKETS = { "15m": "1m", "1h": "5m", "24h": "1h", "7d": "6h", "30d": "1d", all: "30d" };
const EVENT_ENTITIES = new Set(["events", "alerts", "logs"]);
let fieldCatalogue = null;
let lastAnswer = null;

/** The time terms for a range: `time:last_24h`, or the custom instants. */
function timeTerms(range, from, to) {
  if (RANGES[range]) return `time:${RANGES[range]}`;
  if (range === "custom") {
    return [from && `time:>=${from}`, to && `time:<${to}`].filter(Boolean).join(" ");
  }
  return "";
}

/**
 * The user's query with the time terms added to its filter (before the first
 * stage), and a map from a column of that text back to the user's column, so a
 * syntax error points into what the user typed.
 */
function withTime(q, terms) {
  if (!terms) return { text: q, column: (c) => c };
  // A query that opens with a stage gets the filter in front of it.
  if (opensWithStage(q)) {
    const prefix = `${terms} | `;
    return { text: prefix + q, column: (c) => clamp(c - prefix.length, q) };
  }
  const bar = stageStart(q);
  const filter = bar < 0 ? q : q.slice(0, bar);
  const lead = filter.length - filter.trimStart().length;
  const trimmed = filter.trim();
  if (!trimmed) {
    const prefix = `${terms} `;
    return { text: `${prefix}${q.trim()}`, column: (c) => clamp(c - prefix.length + lead, q) };
  }
  const prefix = `${terms} (`;
  const stagesAt = prefix.length + trimmed.length + 2;
  const text = `${prefix}${trimmed}) ${bar < 0 ? "" : q.slice(bar)}`.trimEnd();
  return {
    text,
    column: (c) =>
      bar >= 0 && c - 1 >= stagesAt
        ? clamp(c - stagesAt + bar, q)
        : clamp(Math.min(c - prefix.length + lead, lead + trimmed.length + 1), q),
  };
}

const clamp = (column, q) => Math.max(1, Math.min(column, q.length + 1));

/** Whether the query opens with a stage (`SIMILAR_TO(…)`, `group_similar`). */
const opensWithStage = (q) => /^\s*(SIMILAR_TO\s*\(|group_similar|blast_radius)/i.test(q);

/**
 * A range select with its custom from/to inputs (read as UTC): `restore` sets them
 * from the address, `value` reads them for the address.
 */
function rangePicker(select, custom, from, to) {
  select.addEventListener("change", () => show(custom, select.value === "custom"));
  return {
    restore(params, fallback) {
      const range = params.get("range") || fallback;
      select.value = range;
      from.value = (params.get("from") || "").replace(/Z$/, "");
      to.value = (params.get("to") || "").replace(/Z$/, "");
      show(custom, range === "custom");
      return range;
    },
    value() {
      const range = select.value;
      const custom = range === "custom";
      return { range, from: custom ? localToUtc(from.value) : "", to: custom ? localToUtc(to.value) : "" };
    },
  };
}

const searchRange = rangePicker($("#range"), $("#custom-range"), $("#from"), $("#to"));
const groupsRange = rangePicker($("#groups-range"), $("#groups-custom"), $("#groups-from"), $("#groups-to"));

/** Index of the first `|` outside quotes, or -1. */
function stageStart(q) {
  let quoted = false;
  for (let i = 0; i < q.length; i += 1) {
    if (q[i] === "\\") i += 1;
    else if (q[i] === '"') quoted = !quoted;
    else if (q[i] === "|" && !quoted) return i;
  }
  return -1;
}

async function search(params) {
  const q = params.get("q") || "";
  $("#srql").value = q;
  const range = searchRange.restore(params, "24h");
  show($("#srql-error"), false);
  show($("#explain-out"), false);
  if (!fieldCatalogue) {
    // Also the sign-in check: a 401 here shows the login form.
    try {
      fieldCatalogue = await api("/api/v1/fields");
    } catch (error) {
      if (error instanceof Unauthorised) throw error;
    }
  }
  if (!q && !params.has("run")) {
    $("#summary").textContent = "Type an SRQL query and press Enter.";
    $("#results").replaceChildren();
    show($("#histogram"), false);
    return;
  }
  await runSearch(q, range, params.get("from") || "", params.get("to") || "");
}

async function runSearch(q, range, from, to, cursor) {
  const terms = timeTerms(range, from, to);
  const full = withTime(q, terms);
  $("#summary").textContent = "Searching…";
  let answer;
  try {
    answer = await api("/api/v1/query", { method: "POST", body: { q: full.text, limit: 100, cursor } });
  } catch (error) {
    if (error instanceof Unauthorised) throw error;
    $("#summary").textContent = "";
    $("#results").replaceChildren();
    show($("#histogram"), false);
    showSrqlError(q, full, error);
    return;
  }
  lastAnswer = { q, range, from, to, answer };
  const rows = answer.rows || [];
  const total = answer.total || {};
  $("#summary").textContent =
    `${total.relation === "gte" ? "at least " : ""}${total.value ?? rows.length} ` +
    `${answer.entity} · ${answer.path} path · ${Math.round(answer.took_ms)} ms` +
    (answer.partial ? " · partial" : "") +
    (answer.groups ? ` · ${answer.groups.events} events, ${answer.groups.patterns} patterns` : "");
  const columns = (answer.columns || []).filter((c) => c !== "attributes");
  if (answer.path === "search") columns.push("score");
  if (rows.some((r) => r.similarity !== undefined) && !columns.includes("similarity")) {
    columns.push("similarity");
  }
  const clickable = EVENT_ENTITIES.has(answer.entity) && rows.some((r) => r.id);
  fillTable($("#results"), columns, rows, {
    onrow: clickable ? (row) => openEvent(row.id) : undefined,
    html: { message: "snippet" },
  });
  show($("#more"), Boolean(answer.next_cursor));
  $("#more").onclick = () => runSearch(q, range, from, to, answer.next_cursor);
  const plainFilter = stageStart(q) < 0 && !opensWithStage(q);
  if (EVENT_ENTITIES.has(answer.entity) && plainFilter && !cursor) {
    histogram(q, range, terms);
  } else {
    show($("#histogram"), false);
  }
}

/** An SRQL error under the bar: the query with a caret at the column, and the message. */
function showSrqlError(q, full, error) {
  const box = $("#srql-error");
  const srql = error.body && error.body.srql;
  box.replaceChildren();
  if (srql && srql.column) {
    // The server counts columns in the query it got, time terms included.
    const column = full.column(srql.column);
    const line = el("pre", { class: "srql-line" }, q || " ");
    const caret = el("pre", { class: "caret", "data-column": String(column) },
      `${" ".repeat(column - 1)}^`);
    box.append(line, caret, el("div", { class: "message" },
      `column ${column}: expected ${srql.expected}${srql.found ? ` (${srql.found})` : ""}`));
    const input = $("#srql");
    input.focus();
    input.setSelectionRange(column - 1, column - 1);
  } else {
    box.append(el("div", { class: "message" }, error.message));
  }
  show(box, true);
}

/** Hits over time: `filter | stats count() by bucket(ts, width)`. */
async function histogram(q, range, terms) {
  const width = BUCKETS[range] || "1h";
  const filter = [terms, q.trim() && `(${q.trim()})`].filter(Boolean).join(" ") || "in:events";
  let answer;
  try {
    answer = await api("/api/v1/query", {
      method: "POST",
      body: { q: `${filter} | stats count() by bucket(ts, ${width})`, limit: 1000 },
    });
  } catch {
    show($("#histogram"), false);
    return;
  }
  const rows = (answer.rows || [])
    .map((r) => ({ t: Date.parse(r.bucket), n: Number(r.count) }))
    .filter((r) => !Number.isNaN(r.t))
    .sort((a, b) => a.t - b.t);
  const chart = $("#histogram");
  chart.replaceChildren();
  if (!rows.length) {
    show(chart, false);
    return;
  }
  const w = 1000;
  const h = 90;
  chart.setAttribute("viewBox", `0 0 ${w} ${h + 16}`);
  const max = Math.max(...rows.map((r) => r.n));
  const t0 = rows[0].t;
  const t1 = rows[rows.length - 1].t;
  const span = Math.max(1, t1 - t0);
  const bar = Math.max(2, Math.min(40, (w / Math.max(rows.length, 1)) * 0.8));
  for (const r of rows) {
    const x = rows.length === 1 ? w / 2 : ((r.t - t0) / span) * (w - bar);
    const height = Math.max(1, (r.n / max) * h);
    const rect = svg("rect", { x, y: h - height, width: bar, height, class: "bar" });
    rect.append(svg("title"));
    rect.firstChild.textContent = `${new Date(r.t).toISOString()}: ${r.n}`;
    chart.append(rect);
  }
  const label = (x, text, anchor) => {
    const t = svg("text", { x, y: h + 13, "text-anchor": anchor, class: "axis" });
    t.textContent = text;
    chart.append(t);
  };
  label(0, new Date(t0).toISOString().slice(0, 16).replace("T", " "), "start");
  label(w, new Date(t1).toISOString().slice(0, 16).replace("T", " "), "end");
  show(chart, true);
}

$("#search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  show($("#suggest"), false);
  navigate("search", {
    q: $("#srql").value.trim(),
    ...searchRange.value(),
    run: $("#srql").value.trim() ? "" : "1",
  });
});


$("#explain").addEventListener("click", async () => {
  const q = $("#srql").value.trim();
  const { range, from, to } = searchRange.value();
  const full = withTime(q, timeTerms(range, from, to));
  const out = $("#explain-out");
  show($("#srql-error"), false);
  try {
    const plan = await api(`/api/v1/query/explain?q=${encodeURIComponent(full.text)}`);
    out.textContent = JSON.stringify(plan, null, 2);
    show(out, true);
  } catch (error) {
    if (error instanceof Unauthorised) return login(error.message);
    show(out, false);
    showSrqlError(q, full, error);
  }
});

// Autocomplete: field names as you type a word, then the field's known values.
let suggestions = [];
let chosen = -1;

function currentWord(input) {
  const upto = input.value.slice(0, input.selectionStart);
  const match = upto.match(/[^\s()|]*$/);
  return { word: match ? match[0] : "", start: upto.length - (match ? match[0].length : 0) };
}

function suggestFor(word) {
  if (!fieldCatalogue) return [];
  const colon = word.indexOf(":");
  if (colon > 0) {
    const field = word.slice(0, colon).replace(/^[-!]/, "");
    const prefix = word.slice(colon + 1).replace(/^"/, "").toLowerCase();
    let values = (fieldCatalogue.values || {})[field] || [];
    if (field === "severity") values = fieldCatalogue.severities || [];
    if (field === "in") values = fieldCatalogue.entities.map((e) => e.entity);
    return values
      .filter((v) => String(v).toLowerCase().startsWith(prefix))
      .slice(0, 12)
      .map((v) => {
        const text = /[\s:()"|]/.test(String(v)) ? quote(String(v)) : String(v);
        return { label: String(v), insert: `${word.slice(0, colon + 1)}${text} ` };
      });
  }
  const prefix = word.replace(/^[-!]/, "").toLowerCase();
  if (!prefix) return [];
  const names = new Map();
  for (const entity of fieldCatalogue.entities) {
    for (const f of entity.fields) if (!names.has(f.name)) names.set(f.name, f.description || "");
  }
  names.set("in", "entity: events, alerts, logs, vulns, incidents, …");
  names.set("time", "time window: last_24h, today, [from,to]");
  return [...names]
    .filter(([name]) => name.toLowerCase().startsWith(prefix))
    .slice(0, 12)
    .map(([name, description]) => ({
      label: name,
      description,
      insert: `${word.startsWith("-") || word.startsWith("!") ? word[0] : ""}${name}:`,
    }));
}

function renderSuggestions() {
  const list = $("#suggest");
  list.replaceChildren(
    ...suggestions.map((s, i) =>
      el(
        "li",
        { class: i === chosen ? "chosen" : "", onmousedown: (e) => (e.preventDefault(), accept(i)) },
        el("span", { class: "name" }, s.label),
        s.description ? el("span", { class: "description" }, s.description) : null,
      ),
    ),
  );
  show(list, suggestions.length > 0);
}

function accept(i) {
  const input = $("#srql");
  const { start } = currentWord(input);
  const end = input.selectionStart;
  const text = suggestions[i].insert;
  input.value = input.value.slice(0, start) + text + input.value.slice(end);
  input.setSelectionRange(start + text.length, start + text.length);
  input.focus();
  suggestions = suggestFor(currentWord(input).word);
  chosen = -1;
  renderSuggestions();
}

$("#srql").addEventListener("input", () => {
  suggestions = suggestFor(currentWord($("#srql")).word);
  chosen = -1;
  renderSuggestions();
});

$("#srql").addEventListener("keydown", (event) => {
  if ($("#suggest").hasAttribute("hidden")) return;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    chosen = (chosen + step + suggestions.length) % suggestions.length;
    renderSuggestions();
  } else if ((event.key === "Tab" || event.key === "Enter") && chosen >= 0) {
    event.preventDefault();
    accept(chosen);
  } else if (event.key === "Escape") {
    show($("#suggest"), false);
  }
});

$("#srql").addEventListener("blur", () => show($("#suggest"), false));

// The event drawer: raw JSON, related events, find similar.
async function openEvent(id) {
  const drawer = $("#drawer");
  $("#drawer-json").textContent = "Loading…";
  $("#related").replaceChildren();
  show(drawer, true);
  let event;
  try {
    event = await api(`/api/v1/events/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error instanceof Unauthorised) return login(error.message);
    $("#drawer-json").textContent = error.message;
    return;
  }
  $("#drawer-json").textContent = JSON.stringify(event, null, 2);
  const text = event.message || "";
  $("#find-similar").onclick = () =>
    navigate("search", { q: `SIMILAR_TO(${quote(text.slice(0, 500))}, 20)`, range: "all" });
  $("#find-similar").disabled = !text;
  if (event.ts && event.host) {
    const at = Date.parse(event.ts);
    const from = utc(new Date(at - 10 * 60 * 1000));
    const to = utc(new Date(at + 10 * 60 * 1000));
    try {
      const related = await api("/api/v1/query", {
        method: "POST",
        body: { q: `host:${quote(event.host)} time:>=${from} time:<=${to} | sort:ts:asc`, limit: 20 },
      });
      fillTable($("#related"), ["ts", "type", "severity", "rule", "message"],
        related.rows.filter((r) => r.id !== event.id), { onrow: (row) => openEvent(row.id) });
    } catch {
      $("#related").replaceChildren();
    }
  }
}

$("#drawer-close").addEventListener("click", () => show($("#drawer"), false));

// -------------------------------------------------------------- alert groups

async function groups(params) {
  const q = params.get("q") || "";
  $("#groups-filter").value = q;
  const range = groupsRange.restore(params, "24h");
  show($("#groups-error"), false);
  const window = range === "custom"
    ? `from=${encodeURIComponent(params.get("from") || "")}&to=${encodeURIComponent(params.get("to") || "")}`
    : `window=${range}`;
  $("#groups-headline").textContent = "Loading…";
  let answer;
  try {
    answer = await api(`/api/v1/alerts/groups?q=${encodeURIComponent(q)}&${window}&limit=100`);
  } catch (error) {
    if (error instanceof Unauthorised) throw error;
    $("#groups-headline").textContent = "";
    $("#groups").replaceChildren();
    return fail($("#groups-error"), error);
  }
  $("#groups-headline").textContent =
    `${answer.events.toLocaleString("en")} events, ${answer.patterns} attack pattern${answer.patterns === 1 ? "" : "s"}` +
    (answer.ungrouped ? ` (${answer.ungrouped} not grouped yet)` : "") +
    (answer.partial ? " · partial" : "");
  const timeline = answer.timeline;
  $("#groups").replaceChildren(
    ...answer.groups.map((group) => groupCard(group, answer.window, timeline)),
  );
}

function sparkline(counts, timeline) {
  const w = 240;
  const h = 36;
  const chart = svg("svg", { class: "sparkline", viewBox: `0 0 ${w} ${h}`, width: w, height: h });
  const max = Math.max(1, ...counts);
  const step = w / counts.length;
  counts.forEach((n, i) => {
    const height = n ? Math.max(2, (n / max) * (h - 2)) : 0;
    chart.append(svg("rect", { x: i * step + 1, y: h - height, width: step - 2, height, class: "bar" }));
  });
  if (timeline) {
    const title = svg("title");
    title.textContent = `${timeline.from} to ${timeline.to}, ${counts.length} slices`;
    chart.append(title);
  }
  return chart;
}

function groupCard(group, window, timeline) {
  const exemplar = group.exemplar || {};
  const card = el(
    "article",
    { class: "group", "data-group": group.id },
    el("div", { class: "count" }, el("strong", {}, group.events.toLocaleString("en")), " events"),
    sparkline(group.sparkline || [], timeline),
    el("div", { class: "exemplar" }, exemplar.message || exemplar.text || "(no text)"),
    el("div", { class: "hosts" }, `hosts (${group.host_count}): ${group.hosts.join(", ") || "—"}`),
    el("div", { class: "rules" }, `rules (${group.rule_count}): ${group.rules.join(", ") || "—"}`),
    el("div", { class: "seen" }, `first seen ${group.first_seen} · last seen ${group.last_seen}`),
  );
  const events = el("table", { class: "group-events results", hidden: "" });
  card.append(events);
  card.addEventListener("click", async (e) => {
    if (events.contains(e.target)) return;
    if (!events.hasAttribute("hidden")) {
      card.classList.remove("open");
      return show(events, false);
    }
    const answer = await api(
      `/api/v1/alerts/groups/events?ids=${group.groups.join(",")}` +
        `&from=${encodeURIComponent(window.from)}&to=${encodeURIComponent(window.to)}&limit=200`,
    );
    fillTable(events, ["ts", "host", "severity", "rule", "message"], answer.events, {
      onrow: (row) => openEvent(row.id),
    });
    card.classList.add("open");
    show(events, true);
  });
  return card;
}

$("#groups-form").addEventListener("submit", (event) => {
  event.preventDefault();
  navigate("groups", { q: $("#groups-filter").value.trim(), ...groupsRange.value() });
});

// -------------------------------------------------------------- blast radius

function riskClass(node) {
  const e = node.evidence || {};
  if (e.running_vulnerable > 0) return "risk-p0";
  if (e.critical_cves > 0 || e.high_cves > 0) return "risk-critical";
  if (e.recent_alerts > 0) return "risk-alert";
  return "risk-none";
}

async function blast(params) {
  const node = params.get("node") || "";
  const depth = params.get("depth") || "3";
  const direction = params.get("direction") || "outbound";
  $("#blast-node").value = node;
  $("#blast-depth").value = depth;
  $("#blast-direction").value = direction;
  show($("#blast-error"), false);
  show($("#blast-graph"), false);
  show($("#blast-detail"), false);
  $("#blast-summary").textContent = node ? "Walking the graph…" : "Pick a host, IP or service.";
  if (!node) return;
  let radius;
  try {
    radius = await api(
      `/api/v1/graph/blast-radius?node=${encodeURIComponent(node)}&depth=${depth}&direction=${direction}`,
    );
  } catch (error) {
    if (error instanceof Unauthorised) throw error;
    $("#blast-summary").textContent = "";
    return fail($("#blast-error"), error);
  }
  $("#blast-summary").textContent =
    `${radius.nodes.length} node${radius.nodes.length === 1 ? "" : "s"} within ${radius.depth} ` +
    `hop${radius.depth === 1 ? "" : "s"} ${radius.direction} of ${radius.from}, most at risk first`;
  drawGraph(radius);
}

/** Columns by hop distance, the start on the left; edges as the walk found them. */
function drawGraph(radius) {
  const chart = $("#blast-graph");
  chart.replaceChildren();
  const columns = new Map([[0, [{ node: radius.from, hops: 0, path: [radius.from], start: true }]]]);
  for (const node of radius.nodes) {
    if (!columns.has(node.hops)) columns.set(node.hops, []);
    columns.get(node.hops).push(node);
  }
  // Services sit at their host's hop (runs-on is no hop): keep columns apart.
  const colWidth = 230;
  const rowHeight = 46;
  const tallest = Math.max(...[...columns.values()].map((c) => c.length));
  const width = colWidth * columns.size + 40;
  const height = rowHeight * tallest + 40;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.setAttribute("width", width);
  chart.setAttribute("height", height);
  const at = new Map();
  [...columns.keys()].sort((a, b) => a - b).forEach((hops, ci) => {
    columns.get(hops).forEach((node, ri) => {
      at.set(node.node, { x: 30 + ci * colWidth, y: 30 + ri * rowHeight, node });
    });
  });
  const edges = svg("g", { class: "edges" });
  for (const edge of radius.edges) {
    const a = at.get(edge.source);
    const b = at.get(edge.target);
    if (!a || !b) continue;
    edges.append(svg("line", {
      x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      class: edge.kind === "runs_on" ? "edge runs-on" : "edge",
      "data-source": edge.source, "data-target": edge.target,
    }));
  }
  chart.append(edges);
  for (const { x, y, node } of at.values()) {
    const group = svg("g", {
      class: `node ${node.start ? "start" : riskClass(node)}`,
      "data-node": node.node,
      transform: `translate(${x},${y})`,
      tabindex: "0",
    });
    group.append(svg("circle", { r: node.start ? 11 : 8 }));
    const label = svg("text", { x: 14, y: 4 });
    label.textContent = node.node;
    group.append(label);
    group.addEventListener("click", () => nodeDetail(node, chart));
    chart.append(group);
  }
  show(chart, true);
}

function nodeDetail(node, chart) {
  for (const line of chart.querySelectorAll(".edge")) line.classList.remove("on-path");
  const path = node.path || [node.node];
  for (let i = 1; i < path.length; i += 1) {
    for (const line of chart.querySelectorAll(".edge")) {
      if (line.dataset.source === path[i - 1] && line.dataset.target === path[i]) {
        line.classList.add("on-path");
      }
    }
  }
  const e = node.evidence || {};
  const detail = $("#blast-detail");
  detail.replaceChildren(
    el("h3", {}, node.node),
    el("p", {}, `${node.kind || "start"}${node.host ? ` on ${node.host}` : ""}${node.process ? ` · ${node.process}` : ""}`),
    el("p", { class: "path" }, `path: ${path.join(" → ")}`),
    node.start ? null : el("ul", {},
      el("li", {}, `hops: ${node.hops}`),
      el("li", {}, `running vulnerable binaries (P0): ${e.running_vulnerable ?? 0}`),
      el("li", {}, `open critical CVEs: ${e.critical_cves ?? 0}, high: ${e.high_cves ?? 0}`),
      el("li", {}, `alerts in the last 24 h: ${e.recent_alerts ?? 0}`),
      el("li", {}, `risk score: ${node.risk ?? 0}`)),
    node.host ? el("a", { href: `#/search?q=${encodeURIComponent(`host:${quote(node.host)}`)}&range=24h` },
      "this host's events") : null,
  );
  show(detail, true);
}

$("#blast-form").addEventListener("submit", (event) => {
  event.preventDefault();
  navigate("blast", {
    node: $("#blast-node").value.trim(),
    depth: $("#blast-depth").value,
    direction: $("#blast-direction").value,
  });
});

// ----------------------------------------------------------- vulnerabilities

async function vulns() {
  const columns = ["priority", "host", "vulnerability_id", "severity", "package", "version", "title",
    "opened_at", "escalated_at", "remediation_job"];
  const [running, dormant] = await Promise.all([
    api("/api/v1/vulns?state=running&limit=500"),
    api("/api/v1/vulns?state=dormant&limit=500"),
  ]);
  const evidence = (row) => ({
    ...row,
    package: `${row.package}${(row.evidence || []).map((p) => ` [pid ${p.pid} ${p.exe} by ${p.matched_by}]`).join("")}`,
  });
  fillTable($("#vulns-running"), columns, running.incidents.map(evidence), {
    onrow: (row) => navigate("blast", { node: row.host }),
  });
  fillTable($("#vulns-dormant"), columns.filter((c) => c !== "escalated_at"), dormant.incidents, {
    onrow: (row) => navigate("blast", { node: row.host }),
  });
}

// ------------------------------------------------------------- ingest status

let previous = null;

async function status() {
  previous = null;
  await refreshStatus();
  statusTimer = setInterval(() => refreshStatus().catch(() => {}), 2000);
}

async function refreshStatus() {
  const now = Date.now();
  const s = await api("/api/v1/status");
  const rates = new Map();
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    for (const stream of s.nats.streams) {
      const before = previous.streams.get(stream.name);
      if (before !== undefined) rates.set(stream.name, (stream.last_seq - before) / seconds);
    }
  }
  previous = { at: now, streams: new Map(s.nats.streams.map((x) => [x.name, x.last_seq])) };
  fillTable($("#ingest"), ["stream", "sources", "messages", "messages/s"],
    s.nats.streams.map((stream) => ({
      stream: stream.name,
      sources: stream.subjects.join(" "),
      messages: stream.messages,
      "messages/s": rates.has(stream.name) ? rates.get(stream.name).toFixed(1) : "…",
    })));
  fillTable($("#lag"), ["projection", "stream", "pending (lag)", "unacked"],
    s.projections.flatMap((p) => p.consumers.map((c) => ({
      projection: p.name,
      stream: c.stream,
      "pending (lag)": c.pending,
      unacked: c.ack_pending,
    }))));
  const dlq = s.nats.streams.find((x) => x.name.endsWith("_DLQ"));
  $("#dlq").textContent =
    `Dead letters: ${s.ingested.dead_letters} stored` +
    (dlq ? `, ${dlq.messages} on the dead-letter stream` : "");
}

// ---------------------------------------------------------------------- start

window.addEventListener("hashchange", render);
show($("#logout"), Boolean(sessionStorage.getItem(TOKEN_KEY)));
render();
