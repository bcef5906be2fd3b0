// Browser tests of the web chat in headless Chromium, driven by tests/it/browser.rs, which
// starts the server and the fake provider and passes them in the environment:
// PARLEY_BASE, PARLEY_TOKEN, PARLEY_PAIR_CODE, FAKE_CONTROL, ARTIFACTS, CHROMIUM.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import { createRequire } from "node:module";

const BASE = process.env.PARLEY_BASE;
const TOKEN = process.env.PARLEY_TOKEN;
const ARTIFACTS = process.env.ARTIFACTS;
const WAIT = 15000;

/** Queues replies on the fake provider. */
async function script(...scripts) {
  const response = await fetch(`${process.env.FAKE_CONTROL}/control/scripts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(scripts),
  });
  assert.equal(response.status, 200);
}

async function api(method, path, body) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: response.status === 204 ? null : await response.json() };
}

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** Serious or critical accessibility violations on `page` now (axe-core), as lines. */
async function audit(page, screen) {
  // Evaluated through the DevTools protocol: the page's Content-Security-Policy, which
  // refuses inline scripts, does not apply to it.
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
    }));
  });
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${screen}: ${v.id} (${v.impact}) ${v.help}: ${v.nodes.join(", ")}`);
}

const words = (n, word) => Array.from({ length: n }, (_, i) => `${word}${i} `);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
const problems = [];

async function newPage() {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} ${response.request().method()} ${response.url()}`);
  });
  return page;
}

async function send(page, text) {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

const results = [];
async function scenario(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`ok      ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`FAILED  ${name}: ${err.stack || err}`);
  }
}

let page = await newPage();

await scenario("signs in with a pairing code, stays signed in across a reload, signs out", async () => {
  await page.goto(BASE);
  await page.waitForSelector("#signin:not([hidden])");
  await page.fill("#signin-secret", "not-a-code");
  await page.click("#signin-form button");
  await page.waitForSelector("#signin-error:has-text('AUTH_ERROR')");
  // That refusal was the point; the browser logs it like any failed request.
  problems.length = 0;
  await page.fill("#signin-secret", process.env.PARLEY_PAIR_CODE);
  await page.click("#signin-form button");
  await page.waitForSelector("#app:not([hidden])");
  await page.reload();
  await page.waitForSelector("#app:not([hidden])");
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])");
  await page.fill("#signin-secret", TOKEN);
  await page.click("#signin-form button");
  await page.waitForSelector("#app:not([hidden])");
});

await scenario("a message streams in token by token and renders Markdown", async () => {
  await page.click("#new-session");
  await script({ text: ["# Title\n\n", "Some **bold** text\n\n", "| a | b |\n|---|---|\n| 1 | 2 |\n\n", ...words(20, "w")], delay_ms: 40 });
  await send(page, "Hello there");
  await page.waitForSelector(".msg.user:has-text('Hello there')");
  // Part of the answer is on screen before the rest arrives.
  await page.waitForSelector(".msg.assistant:has-text('w3')");
  const partial = await page.textContent(".msg.assistant");
  assert.ok(!partial.includes("w19"), "streamed, not all at once");
  await page.waitForSelector(".msg.assistant:has-text('w19')");
  await page.waitForSelector(".msg.assistant h3:has-text('Title')");
  await page.waitForSelector(".msg.assistant strong:has-text('bold')");
  await page.waitForSelector(".msg.assistant table td:has-text('2')");
  await page.waitForSelector(".meta:has-text('tokens')");
  // The URL names the session, so a reload opens the same one.
  assert.match(new URL(page.url()).pathname, /^\/s\//);
  await page.reload();
  await page.waitForSelector(".msg.user:has-text('Hello there')");
  await page.waitForSelector(".msg.assistant:has-text('w19')");
});

await scenario("tool calls show as cards with their output", async () => {
  await page.click("#new-session");
  await script({ tool_call: { id: "c1", name: "list_dir", args: { path: "." } } }, { text: ["Listed."] });
  await send(page, "what is in the workspace?");
  await page.waitForSelector("details.tool summary:has-text('list_dir')");
  await page.waitForSelector("details.tool summary:has-text('ms')");
  await page.waitForSelector("details.tool pre.args:has-text('\"path\"')");
  await page.waitForSelector(".msg.assistant:has-text('Listed.')");
});

await scenario("stop cancels a long answer and keeps the partial text", async () => {
  await page.click("#new-session");
  await script({ text: words(400, "long"), delay_ms: 25 });
  await send(page, "talk for a long time");
  await page.waitForSelector(".msg.assistant:has-text('long5')");
  await page.waitForSelector("#stop:not([hidden])");
  await page.click("#stop");
  await page.waitForSelector(".msg.assistant.interrupted");
  await page.waitForSelector("#stop", { state: "hidden" });
  const text = await page.textContent(".msg.assistant");
  assert.ok(!text.includes("long399"), "stopped before the end");
});

await scenario("reloading mid-answer shows the answer continuing, once", async () => {
  await page.click("#new-session");
  await script({ text: words(60, "r"), delay_ms: 40 });
  await send(page, "count slowly");
  await page.waitForSelector(".msg.assistant:has-text('r5')");
  await page.reload();
  await page.waitForSelector(".msg.assistant:has-text('r59')");
  const texts = await page.$$eval(".msg.assistant", (nodes) => nodes.map((n) => n.textContent));
  assert.equal(texts.length, 1, `one answer, got ${JSON.stringify(texts)}`);
  assert.equal(texts[0].trim(), words(60, "r").join("").trim());
});

await scenario("an approval raised before the page opened can be approved", async () => {
  const id = `approve-${Date.now()}`;
  await script({ tool_call: { id: "sh1", name: "shell", args: { command: "echo approved-output" } } }, { text: ["Ran it."] });
  const posted = await api("POST", `/api/sessions/${id}/messages`, { content: "run echo" });
  assert.equal(posted.status, 202);
  for (let i = 0; i < 200; i++) {
    const pending = await api("GET", "/api/approvals");
    if (pending.body.items.length) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  await page.goto(`${BASE}/s/${id}`);
  await page.waitForSelector(".approval:has-text('shell')");
  await page.click(".approval button:has-text('Approve')");
  await page.waitForSelector("details.tool pre.output:has-text('approved-output')");
  await page.waitForSelector(".msg.assistant:has-text('Ran it.')");
});

await scenario("sessions can be renamed, filtered and deleted", async () => {
  await page.click("#new-session");
  await send(page, "name me");
  await page.waitForSelector(".msg.assistant:has-text('echo: name me')");
  const id = new URL(page.url()).pathname.slice(3);
  // A new chat is named after its first message.
  await page.waitForSelector(`#sessions li[data-session='${id}']:has-text('name me')`);
  page.once("dialog", (dialog) => dialog.accept("Renamed chat"));
  await page.click("#rename");
  await page.waitForSelector("#title:has-text('Renamed chat')");
  await page.waitForSelector(`#sessions li[data-session='${id}']:has-text('Renamed chat')`);
  await page.reload();
  await page.waitForSelector("#title:has-text('Renamed chat')");
  await page.fill("#filter", "renamed");
  assert.equal(await page.locator("#sessions li").count(), 1);
  await page.fill("#filter", "");
  page.once("dialog", (dialog) => dialog.accept());
  await page.click("#delete");
  await page.waitForSelector(`#sessions li[data-session='${id}']`, { state: "detached" });
  assert.equal((await api("GET", `/api/sessions/${id}`)).status, 404);
});

await scenario("hostile Markdown stays text", async () => {
  await page.click("#new-session");
  await script({ text: ["<script>window.__pwned = 1</script> <img src=x onerror=\"window.__pwned = 2\"> [click](javascript:window.__pwned=3) **safe**"] });
  await send(page, "<img src=x onerror=\"window.__pwned = 4\">");
  await page.waitForSelector(".msg.assistant strong:has-text('safe')");
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator(".conversation img").count(), 0);
  assert.equal(await page.locator(".conversation script").count(), 0);
  assert.equal(await page.locator(".conversation a").count(), 0);
  await page.waitForSelector(".msg.assistant:has-text('<script>')");
});

await scenario("a second page sees the first page's turn live", async () => {
  await page.click("#new-session");
  await send(page, "first words");
  await page.waitForSelector(".msg.assistant:has-text('echo: first words')");
  const url = page.url();
  const second = await newPage();
  await second.goto(url);
  await second.waitForSelector(".msg.assistant:has-text('echo: first words')");
  await script({ text: words(30, "live"), delay_ms: 30 });
  await send(page, "both of you watch");
  await second.waitForSelector(".msg.user:has-text('both of you watch')");
  await second.waitForSelector(".msg.assistant:has-text('live29')");
  await page.waitForSelector(".msg.assistant:has-text('live29')");
  await second.close();
});

await scenario("keyboard, queueing and the phone layout", async () => {
  await page.click("#new-session");
  await script({ text: words(40, "q"), delay_ms: 30 });
  await page.fill("#input", "line one");
  await page.press("#input", "Shift+Enter");
  await page.type("#input", "line two");
  assert.equal(await page.inputValue("#input"), "line one\nline two");
  await page.press("#input", "Enter");
  await page.waitForSelector(".msg.assistant:has-text('q2')");
  await send(page, "queued behind");
  await page.waitForSelector(".msg.user.queued:has-text('queued behind')");
  await page.keyboard.press("Escape");
  await page.waitForSelector(".msg.assistant.interrupted");
  await page.waitForSelector(".msg.assistant:has-text('echo: queued behind')");
  await page.setViewportSize({ width: 390, height: 780 });
  await page.waitForSelector("#open-sidebar");
  await page.click("#open-sidebar");
  await page.waitForSelector(".sidebar.open");
  await page.click("#close-sidebar");
  await page.setViewportSize({ width: 1200, height: 800 });
});

await scenario("the model picker offers every model and the answer names the one picked", async () => {
  await page.click("#new-session");
  await page.waitForSelector("#model:not([hidden])");
  const offered = await page.$$eval("#model option", (options) => options.map((o) => o.value));
  assert.deepEqual(offered, ["fake-a", "fake-b"]);
  await page.selectOption("#model", "fake-b");
  await send(page, "which model answers?");
  await page.waitForSelector(".meta:has-text('fake-b')");
  await page.waitForSelector(".meta:has-text('cost 0.0')");
  // The pick is remembered.
  await page.reload();
  await page.waitForSelector("#model:not([hidden])");
  assert.equal(await page.inputValue("#model"), "fake-b");
});

await scenario("a session list read during a turn does not turn its live dot back on after it", async () => {
  // Every list answer lands late: read while the turn runs, applied after it ended.
  let late = 0;
  const delay = async (route) => {
    late += 1;
    const response = await route.fetch();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await route.fulfill({ response });
    late -= 1;
  };
  await page.route(/\/api\/sessions\?page=/, delay);
  await page.click("#new-session");
  await script({ text: ["slow ", "and ", "done"], delay_ms: 300 });
  await send(page, "stale list");
  await page.waitForSelector(".msg.assistant:has-text('done')");
  // The list naming the session is read after the answer; wait for it, then for every
  // late answer still on its way.
  const item = "#sessions li:has-text('stale list')";
  await page.waitForSelector(item);
  while (late > 0) await new Promise((resolve) => setTimeout(resolve, 50));
  await page.unroute(/\/api\/sessions\?page=/, delay);
  assert.equal(await page.locator(`${item} .live`).count(), 0, "the live dot stayed on after the turn ended");
});

await scenario("editing a message branches the conversation; versions switch; regenerate; copy", async () => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  const users = () => page.$$eval(".msg.user", (nodes) => nodes.map((n) => n.textContent));
  const answers = () => page.$$eval(".msg.assistant", (nodes) => nodes.map((n) => n.dataset.raw));
  const clipboard = () => page.evaluate(() => navigator.clipboard.readText());
  await page.click("#new-session");
  await send(page, "first question");
  await page.waitForSelector(".msg.assistant:has-text('echo: first question')");
  await send(page, "second question");
  await page.waitForSelector(".msg.assistant:has-text('echo: second question')");
  await page.waitForSelector(".turn:nth-child(2) .msg-actions button[aria-label='Copy answer']");
  // A second tab on the same chat follows the branch made in the first.
  const other = await newPage();
  await other.goto(page.url());
  await other.waitForSelector(".msg.assistant:has-text('echo: second question')");

  const second = page.locator(".turn").nth(1);
  await second.getByRole("button", { name: "Edit message" }).click();
  await page.fill("form.edit textarea", "second question, edited");
  await page.click("form.edit button[type=submit]");
  await page.waitForSelector(".msg.assistant:has-text('echo: second question, edited')");
  assert.deepEqual(await users(), ["first question", "second question, edited"]);
  assert.deepEqual(await answers(), ["echo: first question", "echo: second question, edited"]);
  assert.equal(await page.textContent(".versions"), "2/2");
  await other.waitForSelector(".msg.assistant:has-text('echo: second question, edited')");
  assert.equal(await other.locator(".msg.user").count(), 2);
  await other.close();
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/branch.png` });

  // The first version is kept: ‹ shows it, › comes back.
  await page.getByRole("button", { name: "Previous version" }).click();
  await page.waitForSelector(".versions:has-text('1/2')");
  assert.deepEqual(await users(), ["first question", "second question"]);
  assert.deepEqual(await answers(), ["echo: first question", "echo: second question"]);
  await page.getByRole("button", { name: "Next version" }).click();
  await page.waitForSelector(".versions:has-text('2/2')");
  assert.deepEqual(await users(), ["first question", "second question, edited"]);

  // Regenerating the first answer asks again beside it.
  await script({ text: ["Another ", "take"] });
  await page.locator(".turn").nth(0).getByRole("button", { name: "Regenerate answer" }).click();
  await page.waitForSelector(".msg.assistant:has-text('Another take')");
  assert.deepEqual(await users(), ["first question"]);
  assert.equal(await page.textContent(".versions"), "2/2");
  await page.getByRole("button", { name: "Copy answer" }).click();
  assert.equal(await clipboard(), "Another take");

  // Going on from an older version continues that one.
  await page.getByRole("button", { name: "Previous version" }).click();
  await page.waitForSelector(".versions:has-text('1/2')");
  assert.deepEqual(await users(), ["first question", "second question, edited"]);
  await script({ text: ["Run:\n\n```sh\necho copied\n```\n"] });
  await send(page, "third question");
  await page.waitForSelector(".msg.user:has-text('third question')");
  await page.waitForSelector(".msg.assistant pre code:has-text('echo copied')");
  // Highlighted: the keyword in a span of its own, the text as it was.
  await page.waitForSelector(".msg.assistant pre code[data-lang=sh] .hl-kw:has-text('echo')");
  assert.deepEqual(await users(), ["first question", "second question, edited", "third question"]);
  await page.getByRole("button", { name: "Copy code" }).click();
  assert.equal(await clipboard(), "echo copied");
  // After a reload the current branch is the one the last message went on.
  await page.reload();
  await page.waitForSelector(".msg.user:has-text('third question')");
  assert.deepEqual(await users(), ["first question", "second question, edited", "third question"]);
});

await scenario("an edit made while a turn runs shows its own branch only, and the running one stays on its own", async () => {
  const users = () => page.$$eval(".msg.user", (nodes) => nodes.map((n) => n.textContent));
  await page.click("#new-session");
  await send(page, "q1");
  await page.waitForSelector(".msg.assistant:has-text('echo: q1')");
  await script({ text: words(60, "slow"), delay_ms: 50 });
  await send(page, "q2");
  await page.waitForSelector(".msg.assistant:has-text('slow3')");
  await page.locator(".turn").nth(0).getByRole("button", { name: "Edit message" }).click();
  await page.fill("form.edit textarea", "q1 edited");
  await page.click("form.edit button[type=submit]");
  // Queued behind q2, answered once it ends; q2's answer never lands in this branch.
  await page.waitForSelector(".msg.assistant:has-text('echo: q1 edited')");
  assert.deepEqual(await users(), ["q1 edited"]);
  assert.equal(await page.locator(".msg.assistant:has-text('slow')").count(), 0);
  await page.waitForSelector("#stop", { state: "hidden" });
  // The other branch has q2 whole.
  await page.getByRole("button", { name: "Previous version" }).click();
  await page.waitForSelector(".versions:has-text('1/2')");
  await page.waitForSelector(".msg.assistant:has-text('slow59')");
  assert.deepEqual(await users(), ["q1", "q2"]);
});

await scenario("a chat exports as Markdown and as JSON", async () => {
  await page.click("#new-session");
  await send(page, "export me");
  await page.waitForSelector(".msg.assistant:has-text('echo: export me')");
  const checks = {
    markdown: (text) => text.includes("## You\n\nexport me") && text.includes("## Assistant\n\necho: export me"),
    json: (text) => JSON.parse(text).messages.map((m) => m.content).join("|") === "export me|echo: export me",
    "json-all": (text) => JSON.parse(text).branches === "all" && JSON.parse(text).messages.length === 2,
  };
  for (const [format, check] of Object.entries(checks)) {
    await page.click("#export summary");
    const [file] = await Promise.all([
      page.waitForEvent("download"),
      page.click(`#export button[data-format=${format}]`),
    ]);
    const text = readFileSync(await file.path(), "utf8");
    assert.ok(check(text), `${format}: ${text}`);
    assert.match(file.suggestedFilename(), format.startsWith("json") ? /\.json$/ : /\.md$/);
  }
});

await scenario("search finds a message and opens its chat there; pin and archive", async () => {
  await page.click("#new-session");
  await send(page, "the zanzibar itinerary");
  await page.waitForSelector(".msg.assistant:has-text('echo: the zanzibar itinerary')");
  const chat = "#sessions li:has-text('the zanzibar itinerary')";
  await page.waitForSelector(chat);
  const url = page.url();
  await page.click("#new-session");
  await page.fill("#filter", "zanzi itin");
  await page.waitForSelector("#results li:has-text('zanzibar')");
  assert.deepEqual(await page.$$eval("#results li:first-child mark", (marks) => marks.map((m) => m.textContent)),
    ["zanzibar", "itinerary"]);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/search.png` });
  await page.click("#results li >> nth=0");
  await page.waitForURL(url);
  await page.waitForSelector(".msg.user:has-text('the zanzibar itinerary')");
  await page.fill("#filter", "");
  await page.waitForSelector("#found", { state: "hidden" });

  await page.click("#pin");
  await page.waitForSelector("#pin[aria-pressed=true]");
  await page.waitForSelector("#sessions li:first-child:has-text('the zanzibar itinerary') .pin");
  await page.click("#archive");
  await page.waitForSelector("#archive[aria-pressed=true]");
  await page.waitForSelector(chat, { state: "detached" });
  await page.click("#show-archived");
  await page.waitForSelector("#list-title:not([hidden])");
  await page.waitForSelector(chat);
  await page.click("#archive");
  await page.waitForSelector(chat, { state: "detached" });
  await page.click("#show-archived");
  await page.waitForSelector(chat);
  await page.click("#pin");
  await page.waitForSelector("#pin[aria-pressed=false]");
});

await scenario("a 2 000-message chat opens on its newest page and scrolls back to its first message", async () => {
  // tests/it/browser.rs wrote it to the store: "message 0" to "message 999", each answered.
  await page.goto(`${BASE}/s/long`);
  await page.waitForSelector(".msg.assistant:has-text('echo: message 999')");
  const shown = () => page.locator(".msg.user").count();
  const first = await shown();
  assert.ok(first <= 100, `${first} turns shown at first; a page is 200 messages`);
  // Scrolling up brings the older pages, each above the last, in order.
  let count = first;
  while (!(await page.locator(".msg.user:text-is('message 0')").count())) {
    await page.evaluate(() => { document.getElementById("conversation").scrollTop = 0; });
    await page.waitForFunction((n) => document.querySelectorAll(".msg.user").length > n, count);
    count = await shown();
  }
  const users = await page.$$eval(".msg.user", (nodes) => nodes.map((n) => n.textContent));
  assert.equal(users.length, 1000);
  assert.deepEqual(users, Array.from({ length: 1000 }, (_, i) => `message ${i}`));
});

await scenario("a file attached from the chat lands in the workspace and is named in the message; Files lists it", async () => {
  await page.click("#new-session");
  await page.setInputFiles("#attach-input", {
    name: "hello.txt", mimeType: "text/plain", buffer: Buffer.from("hello from a file"),
  });
  await page.waitForFunction(() => document.getElementById("input").value.includes("[file: uploads/hello.txt]"));
  await page.waitForSelector("#connection:has-text('attached uploads/hello.txt')");
  const { status, body } = await api("GET", "/api/workspace/tree");
  assert.equal(status, 200);
  assert.ok(body.items.some((item) => item.path === "uploads/hello.txt"), JSON.stringify(body));
  await page.click("#files summary");
  await page.waitForSelector("#file-list button:has-text('uploads/hello.txt')");
  const [file] = await Promise.all([
    page.waitForEvent("download"),
    page.click("#file-list button:has-text('uploads/hello.txt')"),
  ]);
  assert.equal(readFileSync(await file.path(), "utf8"), "hello from a file");
  await page.click("#files summary");
  await script({ tool_call: { id: "f1", name: "read_file", args: { path: "uploads/hello.txt" } } }, { text: ["Read it."] });
  await page.press("#input", "Enter");
  await page.waitForSelector("details.tool pre.output:has-text('hello from a file')");
});

await scenario("no serious accessibility violations on any screen (axe-core)", async () => {
  const found = [];
  const signedOut = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const signin = await signedOut.newPage();
  await signin.goto(BASE);
  await signin.waitForSelector("#signin:not([hidden])");
  found.push(...await audit(signin, "sign-in"));
  await signedOut.close();

  await page.click("#new-session");
  found.push(...await audit(page, "new chat"));
  await script({ tool_call: { id: "a1", name: "list_dir", args: {} } },
    { text: ["# Heading\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```js\nconst x = 1;\n```\n"] });
  await send(page, "audit this");
  await page.waitForSelector(".msg.assistant:has-text('Heading')");
  await page.waitForSelector(".turn .msg-actions button[aria-label='Copy answer']");
  found.push(...await audit(page, "conversation"));
  await page.getByRole("button", { name: "Edit message" }).click();
  found.push(...await audit(page, "editing"));
  await page.getByRole("button", { name: "Cancel editing" }).click();
  await page.click("#export summary");
  found.push(...await audit(page, "export menu"));
  await page.click("#export summary");
  await page.fill("#filter", "audit");
  await page.waitForSelector("#results li");
  found.push(...await audit(page, "search"));
  await page.fill("#filter", "");
  await page.setViewportSize({ width: 390, height: 780 });
  found.push(...await audit(page, "phone"));
  await page.click("#open-sidebar");
  found.push(...await audit(page, "phone sidebar"));
  await page.click("#close-sidebar");
  await page.setViewportSize({ width: 1200, height: 800 });
  assert.deepEqual(found, [], found.join("\n"));
});

await scenario("the operator's view: status, a token made and revoked (its sockets close), a turn killed, a pairing code, usage, audit", async () => {
  await page.click("#new-session");
  await page.waitForSelector("#open-admin:not([hidden])");
  await page.click("#open-admin");
  await page.waitForSelector("#admin-status dl");
  await page.waitForSelector("#admin-tokens td:has-text('tests')");
  await page.fill("#admin-token-user", "carol");
  await page.fill("#admin-token-label", "laptop");
  await page.click("#admin-token-form button[type=submit]");
  await page.waitForSelector("#admin-secret code");
  const secret = (await page.textContent("#admin-secret code")).trim();
  assert.match(secret, /^pk_/);
  await page.waitForSelector("#admin-tokens td:has-text('laptop')");

  // Carol signs in with it elsewhere and chats; revoking it closes her connection.
  const theirs = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const carol = await theirs.newPage();
  carol.setDefaultTimeout(WAIT);
  await carol.goto(BASE);
  await carol.fill("#signin-secret", secret);
  await carol.click("#signin-form button");
  await carol.waitForSelector("#app:not([hidden])");
  assert.ok(await carol.locator("#open-admin").isHidden(), "no operator's view for a user token");
  await send(carol, "hello from carol");
  await carol.waitForSelector(".msg.assistant:has-text('echo: hello from carol')");
  await carol.waitForSelector("#connection:has-text('live')");
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Revoke carol's token laptop" }).click();
  await carol.waitForSelector("#signin:not([hidden])");
  assert.match(await carol.textContent("#signin-error"), /revoked/);
  await theirs.close();
  await page.waitForSelector("#admin-tokens tr:has-text('laptop') td:nth-child(5):not(:empty)");
  await page.waitForSelector("#admin-users td:has-text('carol')");

  // A running turn, stopped from here.
  const chat = await newPage();
  await chat.goto(BASE);
  await chat.click("#new-session");
  await script({ text: words(400, "long"), delay_ms: 25 });
  await send(chat, "run for a while");
  await chat.waitForSelector(".msg.assistant:has-text('long3')");
  await page.click("#admin-refresh");
  await page.getByRole("button", { name: /^Kill the turn in / }).click();
  await chat.waitForSelector(".msg.assistant.interrupted");
  await chat.close();

  await page.click("#admin-pair");
  await page.waitForSelector("#admin-code code");
  assert.match(await page.textContent("#admin-code code"), /^[A-Z0-9]{4}-[A-Z0-9]{4}$/);
  await page.waitForSelector("#admin-usage-users td:has-text('default')");
  await page.waitForSelector("#admin-usage-models td:has-text('fake-')");
  await page.waitForSelector("#admin-audit td");
  const found = await audit(page, "operator");
  assert.deepEqual(found, [], found.join("\n"));
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/admin.png`, fullPage: true });
  await page.click("#close-admin");
  await page.waitForSelector("#chat:not([hidden])");
});

await scenario("main screen screenshot", async () => {
  await page.click("#new-session");
  await script({ tool_call: { id: "s1", name: "list_dir", args: {} } },
    { text: ["Here is a summary:\n\n- one\n- two\n\n```sh\nls -la\n```\n"] });
  await send(page, "Show me the workspace and summarise it");
  await page.waitForSelector(".msg.assistant:has-text('summary')");
  await page.waitForSelector(".meta:has-text('tokens')");
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/main.png` });
  await page.setViewportSize({ width: 390, height: 780 });
  // Let the sidebar finish sliding out of view.
  await page.waitForFunction(() => document.getElementById("sidebar").getBoundingClientRect().right <= 0);
  await page.screenshot({ path: `${ARTIFACTS}/phone.png` });
});

await browser.close();
const failed = results.filter((r) => !r.ok).length;
for (const problem of problems) console.log(`PROBLEM ${problem}`);
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed > 0 || problems.length > 0 ? 1 : 0);
