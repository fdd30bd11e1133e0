// End-to-end checks of the web console in headless Chromium, against a running
// Palisade with ingested data. tests/console.rs starts Palisade, ingests real
// fixtures and runs this script; it can also run by hand:
//
//   PALISADE_URL=http://127.0.0.1:7311 node web/e2e/console.mjs
//
// Environment:
//   PALISADE_URL     the server (required)
//   PALISADE_TOKEN   an API token with the query and status scopes; when set the
//                    console must ask for it first
//   E2E_QUERY        a query that finds events with highlighted matches
//   E2E_RANGE_FROM, E2E_RANGE_TO   a window (RFC 3339) holding the alert groups
//   E2E_BLAST_NODE   a host in the connection graph
//   SCREENSHOTS      where to save a PNG of each page (default target/console-screenshots)
//   CHROMIUM         the browser (default /usr/bin/chromium)
//
// Exits 0 when every check passed; otherwise prints the failed check and exits 1.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.PALISADE_URL;
if (!base) {
  console.error("PALISADE_URL is not set");
  process.exit(2);
}
const token = process.env.PALISADE_TOKEN || "";
const query = process.env.E2E_QUERY || "password";
const rangeFrom = process.env.E2E_RANGE_FROM;
const rangeTo = process.env.E2E_RANGE_TO;
const blastNode = process.env.E2E_BLAST_NODE;
const shots = process.env.SCREENSHOTS || "target/console-screenshots";
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The closed network: no background connections, no sandbox as root.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
const page = await context.newPage();
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(error.message));
page.on("console", (message) => {
  // A 4xx answer to a bad query is logged by Chromium as a failed resource; that is
  // the console working. Anything else logged as an error is a failure.
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
    pageErrors.push(`console: ${message.text()}`);
  }
});

let step = "start";
function check(condition, what) {
  if (!condition) throw new Error(`${step}: ${what}`);
}
async function shot(name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}
const rows = (selector) => page.locator(`${selector} tbody tr`);

try {
  // ------------------------------------------------------------------ login
  step = "login";
  await page.goto(`${base}/#/search`);
  if (token) {
    await page.locator("#login").waitFor({ state: "visible" });
    await shot("login");
    await page.fill("#token", "not-the-token");
    await page.click("#login-submit");
    await page.locator("#login-error").waitFor({ state: "visible" });
    await page.fill("#token", token);
    await page.click("#login-submit");
    check(!page.url().includes(token), "the token never shows in the address");
  }
  await page.locator("#page-search").waitFor({ state: "visible" });

  // ------------------------------------------------------- search and autocomplete
  step = "autocomplete";
  await page.selectOption("#range", "all");
  await page.click("#srql");
  await page.keyboard.type("hos");
  await page.locator("#suggest li", { hasText: "host" }).first().waitFor();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("Enter");
  check((await page.inputValue("#srql")) === "host:", `field accepted, got ${await page.inputValue("#srql")}`);
  await page.locator("#suggest li").first().waitFor();
  check((await page.locator("#suggest li").count()) > 0, "the field's values are suggested");
  await shot("search-autocomplete");

  step = "search";
  await page.fill("#srql", query);
  await page.press("#srql", "Enter");
  await rows("#results").first().waitFor();
  check((await rows("#results").count()) > 0, "rows for the query");
  check((await page.locator("#results td b").count()) > 0, "matches are highlighted");
  await page.locator("#histogram rect").first().waitFor();
  check(page.url().includes(`q=${encodeURIComponent(query).replace(/%20/g, "+")}`) ||
    decodeURIComponent(page.url()).includes(query), `the query is in the address: ${page.url()}`);
  const summary = await page.textContent("#summary");
  check(/\d+ events/.test(summary), `summary: ${summary}`);
  await shot("search");

  step = "shareable URL";
  // Another tab: the token is per tab (session storage), so it signs in first and
  // then lands on the shared query.
  const shared = await context.newPage();
  await shared.goto(page.url());
  if (token) {
    await shared.locator("#login").waitFor({ state: "visible" });
    await shared.fill("#token", token);
    await shared.click("#login-submit");
  }
  await shared.locator("#results tbody tr").first().waitFor();
  check((await shared.inputValue("#srql")) === query, "the shared address restores the query");
  check((await shared.inputValue("#range")) === "all", "and the range");
  await shared.close();

  step = "explain";
  await page.click("#explain");
  await page.locator("#explain-out").waitFor({ state: "visible" });
  check((await page.textContent("#explain-out")).includes("\"plan\""), "explain shows the plan");

  // ------------------------------------------------------------ event drawer
  step = "event drawer";
  await rows("#results").first().click();
  await page.locator("#drawer").waitFor({ state: "visible" });
  await page.waitForFunction(() => document.querySelector("#drawer-json").textContent.includes("\"id\""));
  const raw = JSON.parse(await page.textContent("#drawer-json"));
  check(raw.id && raw.ts, "the raw event is shown");
  await shot("event-drawer");

  step = "find similar";
  await page.click("#find-similar");
  await page.waitForFunction(() => document.querySelector("#srql").value.startsWith("SIMILAR_TO("));
  await page.waitForFunction(() => /similar|vector|events/.test(document.querySelector("#summary").textContent)
    && document.querySelectorAll("#results tbody tr").length > 0);
  check((await page.locator("#results td[data-column=similarity]").count()) > 0, "rows ranked by similarity");
  await shot("find-similar");

  // ----------------------------------------------------------- syntax errors
  step = "syntax error";
  await page.fill("#srql", "host:(a");
  await page.press("#srql", "Enter");
  await page.locator("#srql-error").waitFor({ state: "visible" });
  const caret = await page.getAttribute("#srql-error .caret", "data-column");
  check(caret === "8", `the caret points at column 8, got ${caret}`);
  check((await page.textContent("#srql-error")).includes("expected"), "says what was expected");
  check(!(await page.locator("#histogram").isVisible()), "no histogram left from the last query");
  check((await rows("#results").count()) === 0, "no rows left from the last query");
  await shot("syntax-error");

  // ------------------------------------------------------------ alert groups
  step = "alert groups";
  const window = rangeFrom && rangeTo
    ? `range=custom&from=${encodeURIComponent(rangeFrom)}&to=${encodeURIComponent(rangeTo)}`
    : "range=90d";
  await page.goto(`${base}/#/groups?${window}`);
  await page.waitForFunction(() => /\d+ events, \d+ attack patterns?/.test(
    document.querySelector("#groups-headline").textContent));
  if (rangeFrom && rangeTo) {
    // The form gives back the custom range it restored from the address.
    const before = new URL(page.url()).hash;
    await page.click("#groups-run");
    await page.waitForFunction(() => /\d+ events, \d+ attack patterns?/.test(
      document.querySelector("#groups-headline").textContent));
    const after = new URLSearchParams(new URL(page.url()).hash.split("?")[1]);
    check(after.get("from") === rangeFrom && after.get("to") === rangeTo,
      `the custom range survives the form: ${before} → ${page.url()}`);
  }
  const cards = page.locator(".group");
  check((await cards.count()) > 0, "patterns are listed");
  check((await cards.first().locator(".sparkline rect").count()) === 24, "a sparkline of 24 slices");
  check((await cards.first().locator(".exemplar").textContent()).length > 0, "an exemplar");
  await cards.first().locator(".exemplar").click();
  await cards.first().locator(".group-events tbody tr").first().waitFor();
  const expected = Number((await cards.first().locator(".count strong").textContent()).replace(/,/g, ""));
  const listed = await cards.first().locator(".group-events tbody tr").count();
  check(listed === Math.min(expected, 200), `the group's ${expected} events are listed, got ${listed}`);
  await shot("alert-groups");

  // ------------------------------------------------------------ blast radius
  if (blastNode) {
    step = "blast radius";
    await page.goto(`${base}/#/blast?node=${encodeURIComponent(blastNode)}&depth=3`);
    await page.locator("#blast-graph .node").nth(1).waitFor();
    const nodes = await page.locator("#blast-graph .node").count();
    check(nodes >= 2, `reached nodes are drawn, got ${nodes}`);
    check((await page.locator("#blast-graph .node.risk-p0").count()) > 0, "a P0 node is coloured");
    await page.locator("#blast-graph .node.risk-p0").first().click();
    await page.locator("#blast-detail").waitFor({ state: "visible" });
    check((await page.textContent("#blast-detail")).includes("→"), "the path to the node");
    check((await page.locator("#blast-graph .edge.on-path").count()) > 0, "the path is drawn");
    await shot("blast-radius");
  }

  // ---------------------------------------------------------- vulnerabilities
  step = "vulnerabilities";
  await page.goto(`${base}/#/vulns`);
  await page.locator("#vulns-running thead").waitFor();
  await page.locator("#vulns-dormant thead").waitFor();
  await shot("vulnerabilities");

  // ----------------------------------------------------------- ingest status
  step = "ingest status";
  await page.goto(`${base}/#/status`);
  await rows("#ingest").first().waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll("#ingest td[data-column='messages/s']")]
    .some((td) => /^\d/.test(td.textContent)), null, { timeout: 10000 });
  check((await rows("#lag").count()) > 0, "consumer lag per projection");
  check(/Dead letters: \d+/.test(await page.textContent("#dlq")), "the dead-letter count");
  await shot("ingest-status");

  step = "page errors";
  check(pageErrors.length === 0, `no script errors: ${pageErrors.join("; ")}`);
  console.log(`console e2e: every check passed; screenshots in ${shots}`);
} catch (error) {
  await shot(`failed-${step.replace(/\W+/g, "-")}`).catch(() => {});
  console.error(`console e2e FAILED at ${error.message}`);
  if (pageErrors.length) console.error(`script errors: ${pageErrors.join("; ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
