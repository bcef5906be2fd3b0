// The operator's view (admin tokens only): status of the store, bus, providers and MCP
// servers; running turns with a kill button; tokens (create, with the secret shown once, and
// revoke); users; a pairing code; usage and cost by user and model; the audit log.

import { api, explain } from "./api.js";

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function button(label, title, onClick) {
  const node = el("button", label);
  node.type = "button";
  if (title) node.setAttribute("aria-label", title);
  node.addEventListener("click", onClick);
  return node;
}

/** A table of `rows` (arrays of text or nodes) under `headers`, in place of `holder`'s. */
function table(holder, headers, rows, empty) {
  if (rows.length === 0) {
    holder.replaceChildren(el("p", empty, "meta"));
    return;
  }
  const node = el("table");
  const head = el("tr");
  for (const header of headers) {
    const th = el("th", header);
    th.scope = "col";
    head.append(th);
  }
  node.append(el("thead"));
  node.tHead.append(head);
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) {
      const td = el("td");
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell ?? "";
      tr.append(td);
    }
    body.append(tr);
  }
  node.append(body);
  holder.replaceChildren(node);
}

function when(text) {
  return text ? new Date(text).toLocaleString() : "";
}

function problem(err) {
  $("admin-error").textContent = explain(err.code, err.message);
}

/** Who is signed in: `{user, admin}` (null if the server cannot say). */
export async function whoami() {
  try {
    const status = await api("GET", "/api/status");
    return { user: status.user, admin: Boolean(status.admin) };
  } catch {
    return null;
  }
}

async function loadStatus() {
  const status = await api("GET", "/api/status");
  const list = el("dl");
  const add = (term, value) => list.append(el("dt", term), el("dd", value));
  add("Status", status.status);
  add("Version", status.version);
  add("Node", status.node_id);
  add("Up", `${Math.round(status.uptime_secs / 60)} min`);
  add("Running turns", status.active_turns);
  add("Connections", status.connections);
  for (const [name, component] of Object.entries(status.components || {})) {
    const state = typeof component === "string" ? component : component.status ?? JSON.stringify(component);
    add(name, state);
  }
  $("admin-status").replaceChildren(list);
}

async function loadTurns() {
  const turns = (await api("GET", "/api/agents?all=true")).items;
  table($("admin-turns"), ["User", "Chat", "Node", "Started", "Waiting", ""], turns.map((turn) => [
    turn.user,
    turn.session_id,
    turn.node_id,
    new Date(turn.started_at).toLocaleTimeString(),
    turn.queued,
    button("Kill", `Kill the turn in ${turn.session_id}`, async () => {
      try {
        await api("POST", `/api/agents/${encodeURIComponent(turn.turn_id)}/kill`);
      } catch (err) {
        problem(err);
      }
      loadTurns();
    }),
  ]), "No turn is running.");
}

async function loadTokens() {
  const tokens = (await api("GET", "/api/tokens")).items;
  table($("admin-tokens"), ["User", "Label", "Admin", "Created", "Revoked", ""], tokens.map((token) => [
    token.user,
    token.label,
    token.admin ? "yes" : "",
    when(token.created_at),
    when(token.revoked_at),
    token.revoked_at ? "" : button("Revoke", `Revoke ${token.user}'s token ${token.label || token.id}`, async () => {
      if (!confirm(`Revoke this token of ${token.user}? Its connections close at once.`)) return;
      try {
        await api("DELETE", `/api/tokens/${encodeURIComponent(token.id)}`);
      } catch (err) {
        problem(err);
      }
      loadTokens();
    }),
  ]), "No tokens.");
  // Users: everyone with a token, and how many of theirs still work.
  const users = new Map();
  for (const token of tokens) {
    const user = users.get(token.user) || { active: 0, admin: false };
    if (!token.revoked_at) user.active += 1;
    user.admin ||= token.admin && !token.revoked_at;
    users.set(token.user, user);
  }
  table($("admin-users"), ["User", "Working tokens", "Admin"],
    [...users].map(([name, user]) => [name, user.active, user.admin ? "yes" : ""]), "No users.");
}

async function loadUsage() {
  for (const [group, holder] of [["user", "admin-usage-users"], ["model", "admin-usage-models"]]) {
    const report = await api("GET", `/api/usage?group_by=${group}`);
    const rows = report.items.map((line) => [
      line[group],
      line.turns,
      line.total_tokens,
      typeof line.cost === "number" ? line.cost.toFixed(4) : "",
    ]);
    table($(holder), [group === "user" ? "User" : "Model", "Turns", "Tokens", "Cost"], rows, "Nothing used this month.");
  }
}

async function loadAudit() {
  const entries = (await api("GET", "/api/audit")).items.slice(0, 100);
  table($("admin-audit"), ["When", "What", "User", "Address", "Detail"],
    entries.map((e) => [when(e.at), e.kind, e.user, e.ip, e.detail]), "Nothing recorded yet.");
}

/** Reads every section again. */
export async function refresh() {
  $("admin-error").textContent = "";
  const sections = [loadStatus, loadTurns, loadTokens, loadUsage, loadAudit];
  await Promise.all(sections.map((load) => load().catch(problem)));
}

$("admin-token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("admin-token-user").value.trim();
  if (!user) return;
  try {
    const created = await api("POST", "/api/tokens", {
      user,
      label: $("admin-token-label").value.trim() || undefined,
      admin: $("admin-token-admin").checked,
    });
    const secret = $("admin-secret");
    secret.replaceChildren(
      el("p", `The token of ${created.user}, shown this once:`),
      el("code", created.token, "secret"),
    );
    secret.hidden = false;
    event.target.reset();
  } catch (err) {
    problem(err);
  }
  loadTokens();
});

$("admin-pair").addEventListener("click", async () => {
  const user = $("admin-pair-user").value.trim();
  try {
    const code = await api("POST", "/api/pairing-codes", user ? { user } : {});
    $("admin-code").replaceChildren(
      el("code", code.code, "secret"),
      el("span", ` for ${code.user || "a new user"}, valid ${Math.round(code.expires_in / 60)} min`, "meta"),
    );
  } catch (err) {
    problem(err);
  }
});

$("admin-refresh").addEventListener("click", refresh);
