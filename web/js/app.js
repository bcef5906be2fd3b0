// The web chat: sign-in, the sessions sidebar, the open conversation and the composer.

import { refresh as refreshAdmin, whoami } from "./admin.js";
import { api, download, explain, signIn, signOut, token, upload } from "./api.js";
import { Conversation } from "./conversation.js";
import { Live } from "./live.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
// Messages of a conversation read at a time; older ones come as the view scrolls up.
const HISTORY_PAGE = 200;

const state = {
  sessions: [],
  page: 0,
  more: true,
  loading: false,
  running: new Set(),
  // What the lifecycle feed last said of each session's turns, and when:
  // `{running, at}`, newer than a list read that was asked for before `at`.
  turns: new Map(),
  current: null,
  conversation: null,
  live: null,
  feed: null,
  // Showing the archived chats instead of the others.
  archived: false,
  // The open chat as stored: its name, pinned and archived.
  stored: null,
};

// ---- sign-in -------------------------------------------------------------

async function boot() {
  if (!token()) return showSignIn();
  try {
    await api("GET", "/api/sessions?limit=1");
  } catch (err) {
    if (err.status === 401) return showSignIn();
  }
  showApp();
}

function showSignIn(message) {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("signin-secret").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn($("signin-secret").value);
    $("signin-secret").value = "";
    showApp();
  } catch (err) {
    $("signin-error").textContent = explain(err.code, err.message);
  }
});

$("signout").addEventListener("click", () => {
  signOut();
  closeLive();
  if (state.feed) state.feed.close();
  showSignIn();
});

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  state.sessions = [];
  state.page = 0;
  state.more = true;
  // Another sign-in may be another user: nothing of the last one's sessions carries over.
  state.running.clear();
  state.turns.clear();
  await loadSessions();
  loadModels();
  showChat();
  $("open-admin").hidden = true;
  whoami().then((me) => {
    $("open-admin").hidden = !me?.admin;
    $("whoami").textContent = me?.user ?? "";
  });
  watchFeed();
  const match = /^\/s\/([A-Za-z0-9._-]{1,128})$/.exec(location.pathname);
  const first = match ? match[1] : state.sessions[0]?.id;
  openSession(first || crypto.randomUUID(), { replace: true, fresh: !first });
}

// ---- sessions sidebar ----------------------------------------------------

async function loadSessions(reset) {
  if (reset && state.loading) {
    // A load is in flight with the old list: start over when it lands.
    state.reloadAfter = true;
    return;
  }
  if (reset) {
    state.sessions = [];
    state.page = 0;
    state.more = true;
  }
  if (state.loading || !state.more) return;
  state.loading = true;
  const asked = performance.now();
  try {
    const archived = state.archived ? "&archived=true" : "";
    const page = await api("GET", `/api/sessions?page=${state.page + 1}&limit=${PAGE}${archived}`);
    state.page += 1;
    state.sessions.push(...page.items.filter((s) => !state.sessions.some((o) => o.id === s.id)));
    state.more = state.page * PAGE < page.total;
    for (const s of page.items) {
      // The feed's news of the session wins over a list read asked for before it came
      // (the read may have seen the turn still running); the list wins over older news.
      const said = state.turns.get(s.id);
      const running = said && said.at > asked ? said.running : s.state === "running";
      if (running) state.running.add(s.id);
      else state.running.delete(s.id);
    }
  } catch (err) {
    if (err.status === 401) showSignIn("Your token is no longer valid.");
  } finally {
    state.loading = false;
  }
  if (state.reloadAfter) {
    state.reloadAfter = false;
    return loadSessions(true);
  }
  renderSessions();
}

function renderSessions() {
  const filter = $("filter").value.trim().toLowerCase();
  const list = $("sessions");
  list.replaceChildren();
  for (const session of state.sessions) {
    const label = session.name || session.id;
    if (filter && !label.toLowerCase().includes(filter)) continue;
    const item = document.createElement("li");
    item.dataset.session = session.id;
    const open = document.createElement("button");
    open.type = "button";
    if (session.id === state.current) {
      item.classList.add("active");
      open.setAttribute("aria-current", "page");
    }
    if (state.running.has(session.id)) {
      const dot = document.createElement("span");
      dot.className = "live";
      dot.title = "A turn is running";
      dot.setAttribute("role", "img");
      dot.setAttribute("aria-label", "running");
      open.append(dot);
    }
    if (session.pinned) {
      const pin = document.createElement("span");
      pin.className = "pin";
      pin.textContent = "📌";
      pin.title = "Pinned";
      pin.setAttribute("role", "img");
      pin.setAttribute("aria-label", "pinned");
      open.append(pin);
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    open.append(name);
    open.addEventListener("click", () => {
      openSession(session.id);
      $("sidebar").classList.remove("open");
    });
    item.append(open);
    list.append(item);
  }
}

// ---- search ----------------------------------------------------------------

let searching = null;

$("filter").addEventListener("input", () => {
  renderSessions();
  clearTimeout(searching);
  searching = setTimeout(searchMessages, 250);
});

/** Finds messages holding every word typed (server-side), shown above the chats. */
async function searchMessages() {
  const query = $("filter").value.trim();
  if (query.length < 2) {
    $("found").hidden = true;
    return;
  }
  let found;
  try {
    found = await api("GET", `/api/search?q=${encodeURIComponent(query)}&limit=20`);
  } catch {
    return;
  }
  if ($("filter").value.trim() !== query) return;
  const words = query.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  const list = $("results");
  list.replaceChildren();
  for (const hit of found.items) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    const title = document.createElement("strong");
    title.textContent = hit.session_name || hit.session_id;
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.append(...marked(hit.snippet, words));
    button.append(title, snippet);
    button.addEventListener("click", () => {
      openSession(hit.session_id, { branch: hit.seq });
      $("sidebar").classList.remove("open");
    });
    item.append(button);
    list.append(item);
  }
  if (found.items.length === 0) {
    const none = document.createElement("li");
    none.className = "none";
    none.textContent = "No message says that.";
    list.append(none);
  }
  $("found").hidden = false;
}

/** `text` as nodes, the words that begin with a searched word in <mark>. */
function marked(text, words) {
  const nodes = [];
  for (const part of text.split(/([\p{L}\p{N}]+)/u)) {
    const hit = words.some((word) => part.toLowerCase().startsWith(word));
    if (hit) {
      const mark = document.createElement("mark");
      mark.textContent = part;
      nodes.push(mark);
    } else if (part) {
      nodes.push(document.createTextNode(part));
    }
  }
  return nodes;
}

// ---- the operator's view ---------------------------------------------------

function showChat() {
  $("admin").hidden = true;
  $("chat").hidden = false;
}

$("open-admin").addEventListener("click", () => {
  $("chat").hidden = true;
  $("admin").hidden = false;
  $("sidebar").classList.remove("open");
  refreshAdmin();
});
$("close-admin").addEventListener("click", showChat);

$("show-archived").addEventListener("click", () => {
  state.archived = !state.archived;
  $("show-archived").setAttribute("aria-pressed", String(state.archived));
  $("show-archived").textContent = state.archived ? "All chats" : "Archived";
  $("list-title").hidden = !state.archived;
  loadSessions(true);
});
$("sessions").addEventListener("scroll", () => {
  const list = $("sessions");
  if (list.scrollHeight - list.scrollTop - list.clientHeight < 80) loadSessions();
});
$("new-session").addEventListener("click", () => openSession(crypto.randomUUID(), { fresh: true }));
$("open-sidebar").addEventListener("click", () => $("sidebar").classList.add("open"));
$("close-sidebar").addEventListener("click", () => $("sidebar").classList.remove("open"));

/** The lifecycle feed keeps the sidebar's list and live indicators current. */
async function watchFeed() {
  if (state.feed) state.feed.close();
  let ticket;
  try {
    ticket = (await api("POST", "/api/chat/ticket")).ticket;
  } catch {
    setTimeout(watchFeed, 5000);
    return;
  }
  const feed = new EventSource(`/api/events?ticket=${ticket}`);
  state.feed = feed;
  feed.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const id = event.session_id;
    if (event.type === "turn_started" || event.type === "turn_finished") {
      const running = event.type === "turn_started";
      state.turns.set(id, { running, at: performance.now() });
      if (running) state.running.add(id);
      else state.running.delete(id);
    }
    if (event.type === "session_deleted") {
      state.turns.delete(id);
      state.running.delete(id);
    }
    if (event.type === "session_created" || event.type === "session_deleted") {
      loadSessions(true);
      return;
    }
    renderSessions();
  };
  // Whatever the feed missed while it was away, the list says now.
  feed.onopen = () => loadSessions(true);
  // Tickets are single use: reconnect with a fresh one.
  feed.onerror = () => {
    feed.close();
    if (state.feed === feed) setTimeout(watchFeed, 2000);
  };
}

// ---- the open session ----------------------------------------------------

function closeLive() {
  if (state.live) state.live.close();
  state.live = null;
}

function setConnection(text, reconnecting) {
  const node = $("connection");
  node.textContent = text;
  node.classList.toggle("reconnecting", Boolean(reconnecting));
}

function setRunning(turnId) {
  $("stop").hidden = !turnId;
}

/** What a conversation's buttons do: ask again (an edit, a regeneration), show a branch. */
function conversationHooks(id) {
  return {
    ask: async (content, parent) => {
      try {
        await api("POST", `/api/sessions/${id}/messages`, { content, parent, model: pickedModel() });
      } catch (err) {
        return explain(err.code, err.message);
      }
      // The new turn is the newest: the current branch ends with it.
      if (state.current === id) openSession(id, { replace: true });
      return null;
    },
    branch: (seq) => openSession(id, { replace: true, branch: seq }),
    moved: () => openSession(id, { replace: true }),
  };
}

async function openSession(id, { replace, fresh, branch } = {}) {
  closeLive();
  showChat();
  state.current = id;
  // A new chat gets its URL with its first message, so a reload never opens an empty one.
  const url = fresh ? "/" : `/s/${id}`;
  if (location.pathname !== url) history[replace ? "replaceState" : "pushState"]({}, "", url);
  renderSessions();
  const conversation = new Conversation($("conversation"), id, setRunning, conversationHooks(id));
  state.conversation = conversation;
  setRunning(null);
  let detail = null;
  let calls = [];
  let newest = null;
  try {
    if (fresh) throw Object.assign(new Error("new"), { status: 404 });
    const shown = branch === undefined ? "" : `&branch=${branch}`;
    conversation.branchQuery = shown;
    [detail, calls, newest] = await Promise.all([
      api("GET", `/api/sessions/${id}?limit=${HISTORY_PAGE}${shown}`),
      api("GET", `/api/sessions/${id}/tool-calls`).then((r) => r.items),
      // Whether that branch is the current one: the same newest message.
      branch === undefined ? null : api("GET", `/api/sessions/${id}?limit=1`),
    ]);
  } catch (err) {
    if (err.status !== 404) setConnection(explain(err.code, err.message), true);
  }
  if (state.conversation !== conversation) return;
  showStored(detail);
  if (newest) {
    const last = (d) => d.messages.at(-1)?.seq;
    conversation.pinned = last(detail) !== last(newest);
  }
  $("title").textContent = detail?.name || (detail ? id : "New chat");
  if (!detail) {
    conversation.renderHistory([], []);
    setConnection("");
    return;
  }
  // A running turn is replayed from its first event, so a reload mid-answer continues it
  // (when it is on the branch shown).
  let after = detail.last_seq;
  let messages = detail.messages;
  conversation.follow(messages, detail.last_seq);
  [messages, conversation.before] = wholeTurns(messages, detail.has_more ? detail.next_before_seq : null);
  const running = detail.running_turn?.turn_id;
  if (running && conversation.branchTurns.has(running)) {
    const first = messages.find((m) => m.turn_id === running);
    if (first) {
      after = first.seq - 1;
      messages = messages.filter((m) => m.seq <= after);
    }
    conversation.setRunning(running);
  }
  conversation.renderHistory(messages, calls);
  olderIfShort();
  connect(id, after);
}

/** A page of messages without its first turn when the page begins inside it (that turn
 * comes whole with the page before), and the cursor of the page before. */
function wholeTurns(messages, before) {
  if (before === null || messages.length === 0 || messages[0].role === "user") return [messages, before];
  const cut = messages[0].turn_id;
  const kept = messages.filter((m) => m.turn_id !== cut || !cut);
  // A turn longer than a page is shown as it comes.
  if (kept.length === 0) return [messages, before];
  return [kept, kept[0].seq];
}

/** The page before the oldest shown, once the view nears its top. */
async function loadOlder() {
  const conversation = state.conversation;
  if (!conversation || conversation.before === null || conversation.loadingOlder) return;
  conversation.loadingOlder = true;
  const id = conversation.sessionId;
  try {
    const query = `limit=${HISTORY_PAGE}&before_seq=${conversation.before}${conversation.branchQuery}`;
    const page = await api("GET", `/api/sessions/${id}?${query}`);
    if (state.conversation !== conversation) return;
    const [messages, before] = wholeTurns(page.messages, page.has_more ? page.next_before_seq : null);
    conversation.prependHistory(messages);
    conversation.before = before;
    setTimeout(olderIfShort);
  } catch (err) {
    setConnection(explain(err.code, err.message), true);
  } finally {
    conversation.loadingOlder = false;
  }
}

/** Reads older pages while what is shown does not fill the view (no scrolling to ask). */
function olderIfShort() {
  const view = $("conversation");
  if (view.scrollHeight <= view.clientHeight + 400) loadOlder();
}

$("conversation").addEventListener("scroll", () => {
  if ($("conversation").scrollTop < 400) loadOlder();
});

function connect(id, after) {
  const conversation = state.conversation;
  state.live = new Live(id, after, {
    onEvent: (frame) => {
      if (frame.type === "session_deleted") {
        openSession(crypto.randomUUID(), { fresh: true });
        return;
      }
      conversation.apply(frame);
    },
    onState: (status) => {
      if (status === "live") setConnection("live");
      if (status === "reconnecting") setConnection("reconnecting…", true);
      if (status === "closed") showSignIn("Your token was revoked.");
    },
    onResync: () => openSession(id, { replace: true }),
  });
}

window.addEventListener("popstate", () => {
  const match = /^\/s\/([A-Za-z0-9._-]{1,128})$/.exec(location.pathname);
  if (match) openSession(match[1], { replace: true });
});

/** The open chat's pin and archive buttons, as stored. */
function showStored(session) {
  state.stored = session;
  for (const [button, on, yes, no] of [
    ["pin", session?.pinned, "Unpin", "Pin"],
    ["archive", session?.archived, "Unarchive", "Archive"],
  ]) {
    $(button).hidden = !session;
    $(button).textContent = on ? yes : no;
    $(button).setAttribute("aria-pressed", String(Boolean(on)));
  }
}

async function setFlag(flag) {
  const id = state.current;
  const value = !state.stored?.[flag];
  try {
    const session = await api("PATCH", `/api/sessions/${id}`, { [flag]: value });
    if (state.current === id) showStored(session);
  } catch (err) {
    setConnection(explain(err.code, err.message), true);
    return;
  }
  loadSessions(true);
}

$("pin").addEventListener("click", () => setFlag("pinned"));
$("archive").addEventListener("click", () => setFlag("archived"));

$("rename").addEventListener("click", async () => {
  const name = prompt("Rename this chat", $("title").textContent);
  if (!name || !name.trim()) return;
  try {
    const session = await api("PATCH", `/api/sessions/${state.current}`, { name: name.trim() });
    $("title").textContent = session.name;
    const item = state.sessions.find((s) => s.id === state.current);
    if (item) item.name = session.name;
    renderSessions();
  } catch (err) {
    setConnection(explain(err.code, err.message), true);
  }
});

$("export").addEventListener("click", async (event) => {
  const format = event.target.dataset?.format;
  if (!format) return;
  $("export").open = false;
  // The branch on screen, when it is not the current one; or every branch.
  const pinned = state.conversation?.pinned ? `&branch=${state.conversation.lastTurn}` : "";
  const query = format === "json-all" ? "format=json&branches=all" : `format=${format}${pinned}`;
  try {
    await download(`/api/sessions/${state.current}/export?${query}`);
  } catch (err) {
    setConnection(explain(err.code, err.message), true);
  }
});

$("delete").addEventListener("click", async () => {
  if (!confirm("Delete this chat and everything in it?")) return;
  const id = state.current;
  try {
    await api("DELETE", `/api/sessions/${id}`);
  } catch (err) {
    if (err.status !== 404) return setConnection(explain(err.code, err.message), true);
  }
  state.sessions = state.sessions.filter((s) => s.id !== id);
  renderSessions();
  const next = state.sessions[0]?.id;
  openSession(next || crypto.randomUUID(), { replace: true, fresh: !next });
});

// ---- files -----------------------------------------------------------------

/** Uploads `files` into the workspace's `uploads/` and names them in the message box, so
 * the agent's file tools can read them. */
async function attach(files) {
  const input = $("input");
  for (const file of files) {
    const name = file.name.replace(/[\/\\]/g, "_") || "file";
    try {
      const stored = await upload(`uploads/${name}`, file);
      const reference = `[file: ${stored.path}]`;
      input.value = input.value && !input.value.endsWith("\n") ? `${input.value}\n${reference}` : `${input.value}${reference}`;
      setConnection(`attached ${stored.path}`);
    } catch (err) {
      setConnection(`${file.name}: ${explain(err.code, err.message)}`, true);
    }
  }
  input.focus();
}

$("attach").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", (event) => {
  attach([...event.target.files]);
  event.target.value = "";
});
$("chat").addEventListener("dragover", (event) => {
  if (event.dataTransfer?.types.includes("Files")) {
    event.preventDefault();
    $("chat").classList.add("dropping");
  }
});
$("chat").addEventListener("dragleave", () => $("chat").classList.remove("dropping"));
$("chat").addEventListener("drop", (event) => {
  if (!event.dataTransfer?.files.length) return;
  event.preventDefault();
  $("chat").classList.remove("dropping");
  attach([...event.dataTransfer.files]);
});

/** The Files menu lists the workspace when it opens; a file opens as a download. */
$("files").addEventListener("toggle", async () => {
  if (!$("files").open) return;
  const list = $("file-list");
  list.replaceChildren();
  let tree;
  try {
    tree = await api("GET", "/api/workspace/tree");
  } catch (err) {
    setConnection(explain(err.code, err.message), true);
    return;
  }
  const files = tree.items.filter((item) => item.kind === "file");
  for (const file of files) {
    const item = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = file.path;
    open.title = `${file.size} bytes`;
    open.addEventListener("click", () => {
      const encoded = file.path.split("/").map(encodeURIComponent).join("/");
      download(`/api/workspace/file/${encoded}`, file.path.split("/").pop())
        .catch((err) => setConnection(explain(err.code, err.message), true));
    });
    item.append(open);
    list.append(item);
  }
  if (files.length === 0) {
    const none = document.createElement("li");
    none.textContent = "No files yet.";
    list.append(none);
  }
});

// ---- composer ------------------------------------------------------------

const MODEL_KEY = "parley.model";

/** Fills the model picker from `/v1/models` (the default first); shown only when there is
 * a choice. The last model picked is remembered while the server still offers it. */
async function loadModels() {
  const picker = $("model");
  let models = [];
  try {
    models = (await api("GET", "/v1/models")).data.map((m) => m.id);
  } catch {
    // No picker: the server's default answers.
  }
  picker.replaceChildren(
    ...models.map((id, i) => {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = i === 0 ? `${id} (default)` : id;
      return option;
    }),
  );
  const remembered = localStorage.getItem(MODEL_KEY);
  if (models.includes(remembered)) picker.value = remembered;
  picker.hidden = models.length < 2;
}

$("model").addEventListener("change", (event) => {
  localStorage.setItem(MODEL_KEY, event.target.value);
});

function pickedModel() {
  const picker = $("model");
  return picker.hidden ? undefined : picker.value;
}

async function send() {
  const input = $("input");
  const content = input.value;
  if (!content.trim()) return;
  const id = state.current;
  // On a branch other than the current one, the message goes on from it (and makes it
  // the current one).
  const pinned = state.conversation?.pinned ? state.conversation.lastTurn : undefined;
  try {
    await api("POST", `/api/sessions/${id}/messages`, { content, model: pickedModel(), parent: pinned });
  } catch (err) {
    // The text stays in the box: nothing typed is lost.
    setConnection(explain(err.code, err.message), true);
    return;
  }
  input.value = "";
  input.style.height = "";
  if (pinned !== undefined && state.current === id) {
    openSession(id, { replace: true });
    return;
  }
  if (!state.live && state.current === id) {
    // The first message created the session: name it after the message, and start
    // watching it from its beginning.
    const name = content.trim().split("\n")[0].slice(0, 60);
    $("title").textContent = name;
    showStored({ id, name, pinned: false, archived: false });
    history.replaceState({}, "", `/s/${id}`);
    connect(id, 0);
    await api("PATCH", `/api/sessions/${id}`, { name }).catch(() => {});
    loadSessions(true);
  }
}

async function stop() {
  try {
    await api("POST", `/api/sessions/${state.current}/abort`);
  } catch (err) {
    setConnection(explain(err.code, err.message), true);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
$("stop").addEventListener("click", stop);
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("input").addEventListener("input", (event) => {
  event.target.style.height = "";
  event.target.style.height = `${event.target.scrollHeight}px`;
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("stop").hidden) stop();
});

boot();
