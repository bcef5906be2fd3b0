// The conversation view: turns built from the stored history and updated by live events.
// Each turn is keyed by its turn_id, so replayed and live events land in the right place.
// A turn's user message can be edited and its answer regenerated: both start a branch
// beside it (the old one is kept and browsable with ‹ 1/2 ›), through `hooks`.

import { api, explain } from "./api.js";
import { highlight } from "./highlight.js";
import { renderMarkdown } from "./markdown.js";

const LONG_OUTPUT = 600;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, title, onClick) {
  const node = el("button", "small", label);
  node.type = "button";
  node.title = title;
  node.setAttribute("aria-label", title);
  node.addEventListener("click", onClick);
  return node;
}

/** Copies `text`; without the clipboard API (a page not served over https), a selection. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }
}

/** Highlighting and a copy button for each code block under `node`. */
function codeCopies(node) {
  for (const pre of node.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (code) highlight(code);
    const copy = button("Copy", "Copy code", async () => {
      if (await copyText(pre.querySelector("code")?.textContent ?? pre.textContent)) {
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = "Copy"; }, 1500);
      }
    });
    copy.classList.add("code-copy");
    pre.prepend(copy);
  }
  return node;
}

function markdown(text) {
  const fragment = renderMarkdown(text);
  const holder = document.createElement("div");
  holder.append(fragment);
  codeCopies(holder);
  return [...holder.childNodes];
}

function pretty(args) {
  if (typeof args === "string") return args;
  return JSON.stringify(args, null, 2);
}

class Turn {
  constructor(container, id, hooks) {
    this.id = id;
    this.hooks = hooks;
    this.node = el("div", "turn");
    this.node.dataset.turn = id;
    this.userBox = el("div", "user-box");
    this.userBox.hidden = true;
    this.user = el("div", "msg user");
    this.userActions = el("div", "msg-actions");
    this.userBox.append(this.user, this.userActions);
    this.body = el("div", "body");
    this.meta = el("div", "meta");
    this.answerActions = el("div", "msg-actions");
    this.answerActions.hidden = true;
    this.node.append(this.userBox, this.body, this.meta, this.answerActions);
    container.append(this.node);
    this.text = null;
    this.thinking = null;
    this.tools = new Map();
    this.approvals = new Map();
    this.content = null;
    this.seq = null;
    this.parent = null;
    this.siblings = [];
  }

  /** The turn's user message: its text, seq, the turn it follows and its siblings. */
  setUser(content, seq, parent, siblings) {
    this.content = content;
    this.seq = seq ?? null;
    this.parent = parent ?? null;
    this.siblings = siblings || [];
    this.user.textContent = content;
    this.userBox.hidden = false;
    this.renderUserActions();
  }

  renderUserActions() {
    this.userActions.replaceChildren();
    if (this.seq === null || this.parent === null) return;
    this.userActions.append(button("Edit", "Edit message", () => this.startEdit()));
    const at = this.siblings.indexOf(this.seq);
    if (this.siblings.length > 1 && at >= 0) {
      const previous = button("‹", "Previous version", () => this.hooks.branch(this.siblings[at - 1]));
      previous.disabled = at === 0;
      const next = button("›", "Next version", () => this.hooks.branch(this.siblings[at + 1]));
      next.disabled = at === this.siblings.length - 1;
      const where = el("span", "versions", `${at + 1}/${this.siblings.length}`);
      where.setAttribute("aria-label", `Version ${at + 1} of ${this.siblings.length}`);
      this.userActions.append(previous, where, next);
    }
  }

  startEdit() {
    const form = el("form", "edit");
    const area = el("textarea");
    area.value = this.content;
    area.setAttribute("aria-label", "Edited message");
    area.rows = Math.min(12, Math.max(2, this.content.split("\n").length));
    const send = el("button", "primary", "Send");
    send.type = "submit";
    const cancel = button("Cancel", "Cancel editing", () => this.endEdit(form));
    const problem = el("div", "turn-error");
    problem.setAttribute("role", "alert");
    const actions = el("div", "actions");
    actions.append(send, cancel);
    form.append(area, actions, problem);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!area.value.trim()) return;
      send.disabled = true;
      const error = await this.hooks.ask(area.value, this.parent);
      send.disabled = false;
      if (error) problem.textContent = error;
    });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.endEdit(form);
      }
    });
    this.user.hidden = true;
    this.userActions.hidden = true;
    this.userBox.append(form);
    area.focus();
  }

  endEdit(form) {
    form.remove();
    this.user.hidden = false;
    this.userActions.hidden = false;
  }

  /** Copy and regenerate, once the turn has ended. */
  showAnswerActions() {
    this.answerActions.replaceChildren();
    const answer = () => [...this.body.querySelectorAll(".msg.assistant")].map((n) => n.dataset.raw || "").join("\n\n");
    const copy = button("Copy", "Copy answer", async () => {
      if (await copyText(answer())) {
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = "Copy"; }, 1500);
      }
    });
    this.answerActions.append(copy);
    if (this.content !== null && this.parent !== null) {
      this.answerActions.append(
        button("Regenerate", "Regenerate answer", () => this.hooks.ask(this.content, this.parent)),
      );
    }
    this.answerActions.hidden = false;
  }

  /** The assistant block being streamed into. */
  block() {
    if (!this.text) {
      const node = el("div", "msg assistant");
      this.body.append(node);
      this.text = { node, raw: "", pending: false };
    }
    return this.text;
  }

  appendText(content) {
    const block = this.block();
    block.raw += content;
    if (!block.pending) {
      block.pending = true;
      requestAnimationFrame(() => {
        block.pending = false;
        block.node.dataset.raw = block.raw;
        block.node.replaceChildren(...markdown(block.raw));
      });
    }
  }

  setText(content, interrupted) {
    if (!content) return;
    const block = this.block();
    block.raw = content;
    block.node.dataset.raw = content;
    block.node.replaceChildren(...markdown(content));
    block.node.classList.toggle("interrupted", Boolean(interrupted));
  }

  endBlock() {
    this.text = null;
    this.thinking = null;
  }

  appendThinking(content) {
    if (!this.thinking) {
      const details = el("details", "thinking");
      details.append(el("summary", null, "Thinking"), el("div", "thinking-body"));
      this.body.append(details);
      this.thinking = details.lastChild;
    }
    this.thinking.textContent += content;
  }

  toolCall(id, name, args) {
    this.endBlock();
    const card = el("details", "tool");
    card.dataset.tool = name;
    const summary = el("summary", null, `${name} · running…`);
    const argsNode = el("pre", "args", pretty(args));
    const output = el("pre", "output");
    output.hidden = true;
    card.append(summary, argsNode, output);
    this.body.append(card);
    this.tools.set(id, { card, summary, output, name });
    return this.tools.get(id);
  }

  toolResult(id, name, output, isError, durationMs) {
    const tool = this.tools.get(id) || this.toolCall(id, name, "");
    tool.output.textContent = output;
    tool.output.hidden = false;
    const took = durationMs === undefined || durationMs === null ? "" : ` · ${durationMs} ms`;
    tool.summary.textContent = `${tool.name}${isError ? " · error" : ""}${took}`;
    tool.card.classList.toggle("error", Boolean(isError));
    tool.card.open = output.length <= LONG_OUTPUT;
  }

  approval(frame, onDecide) {
    if (this.approvals.has(frame.request_id)) return;
    const box = el("div", "approval");
    box.dataset.request = frame.request_id;
    box.append(el("div", null, `Allow ${frame.tool} to run?`), el("pre", null, pretty(frame.args)));
    const actions = el("div", "actions");
    for (const [label, decision] of [["Approve", "approve"], ["Deny", "deny"], ["Always", "always"]]) {
      const button = el("button", decision === "approve" ? "primary" : "", label);
      button.type = "button";
      button.onclick = () => onDecide(frame.request_id, decision, box);
      actions.append(button);
    }
    box.append(actions);
    this.body.append(box);
    this.approvals.set(frame.request_id, box);
  }

  resolveApproval(requestId, note) {
    const box = this.approvals.get(requestId);
    if (box) {
      box.replaceChildren(el("div", "meta", note));
      box.className = "meta";
    }
  }

  error(code, message) {
    this.body.append(el("div", "turn-error", explain(code, message)));
  }

  finish(frame) {
    const tokens = frame.usage ? `${frame.usage.total_tokens} tokens` : "";
    const time = frame.duration_ms !== undefined ? `${(frame.duration_ms / 1000).toFixed(1)} s` : "";
    // In the prices' currency; two significant digits of a fraction of a cent.
    const amount = frame.usage?.cost;
    const cost = typeof amount === "number"
      ? `cost ${amount >= 0.01 ? amount.toFixed(2) : amount.toPrecision(2)}`
      : "";
    this.meta.textContent = [frame.model, tokens, cost, time].filter(Boolean).join(" · ");
  }
}

/** A session's conversation. */
export class Conversation {
  /**
   * @param {object} hooks  ask(content, parent) → error text or null (an edit or a
   *   regeneration), branch(seq) (show another branch), moved() (another client started a
   *   branch: show the current one again)
   */
  constructor(container, sessionId, onRunning, hooks) {
    this.container = container;
    this.sessionId = sessionId;
    this.onRunning = onRunning;
    this.hooks = hooks;
    this.turns = new Map();
    this.running = null;
    // The seq of the newest turn shown (its user message); 0 before the first.
    this.lastTurn = 0;
    // Showing a branch other than the current one: live turns of other branches stay out.
    this.pinned = false;
    // The turns of the branch shown, and the seq it was read at.
    this.branchTurns = new Set();
    this.users = new Map();
    this.loadedSeq = 0;
    this.calls = [];
    // The cursor of the page before the oldest shown (null: nothing older), the branch
    // query those pages are read with, and whether one is on its way.
    this.before = null;
    this.branchQuery = "";
    this.loadingOlder = false;
  }

  /** The branch about to be shown (all its messages, a running turn's included), read at
   * `lastSeq`: live events of turns on other branches are left out. */
  follow(messages, lastSeq) {
    this.branchTurns = new Set(messages.map((m) => m.turn_id).filter(Boolean));
    // User messages by seq: a replayed turn's parent and siblings come from here.
    this.users = new Map(messages.filter((m) => m.role === "user").map((m) => [m.seq, m]));
    for (const seq of this.users.keys()) this.lastTurn = Math.max(this.lastTurn, seq);
    this.loadedSeq = lastSeq;
  }

  turn(id, into = this.container) {
    if (!this.turns.has(id)) this.turns.set(id, new Turn(into, id, this.hooks));
    return this.turns.get(id);
  }

  /** Renders stored messages (with the tool-call timeline for durations and errors). */
  renderHistory(messages, toolCalls) {
    this.container.replaceChildren();
    this.turns.clear();
    this.calls = toolCalls;
    const built = this.build(messages, this.container);
    for (const turn of built) {
      if (turn.id !== this.running) turn.showAnswerActions();
    }
    this.scroll(true);
  }

  /** Puts an older page of whole turns above what is shown, keeping the view still. */
  prependHistory(messages) {
    const c = this.container;
    const fromBottom = c.scrollHeight - c.scrollTop;
    const holder = document.createElement("div");
    for (const turn of this.build(messages, holder)) turn.showAnswerActions();
    c.prepend(...holder.childNodes);
    c.scrollTop = c.scrollHeight - fromBottom;
  }

  /** Makes the turns of `messages` in `into`; returns the turns touched. */
  build(messages, into) {
    const timeline = new Map(this.calls.map((call) => [call.id, call]));
    const touched = new Set();
    for (const message of messages) {
      const turn = this.turn(message.turn_id || `m${message.id}`, into);
      touched.add(turn);
      if (message.turn_id) this.branchTurns.add(message.turn_id);
      if (message.role === "user") this.users.set(message.seq, message);
      if (message.role === "user") {
        turn.setUser(message.content, message.seq, message.parent, message.siblings);
        this.lastTurn = Math.max(this.lastTurn, message.seq);
      } else if (message.role === "assistant") {
        if (message.reasoning) turn.appendThinking(message.reasoning);
        turn.setText(message.content, message.status === "interrupted");
        turn.endBlock();
        for (const call of message.tool_calls || []) {
          let args = call.arguments;
          try { args = JSON.parse(call.arguments); } catch { /* shown as written */ }
          turn.toolCall(call.id, call.name, args);
        }
      } else if (message.role === "tool") {
        const call = timeline.get(message.tool_call_id) || {};
        turn.toolResult(message.tool_call_id, message.tool_name, message.content, call.is_error, call.duration_ms);
      }
    }
    return touched;
  }

  decide = async (requestId, decision, box) => {
    try {
      await api("POST", `/api/approvals/${encodeURIComponent(requestId)}/${decision}`);
    } catch (err) {
      box.append(el("div", "turn-error", explain(err.code, err.message)));
    }
  };

  setRunning(turnId) {
    this.running = turnId;
    this.onRunning(turnId);
  }

  /** Applies one live event. */
  apply(frame) {
    if (frame.turn_id && !this.turns.has(frame.turn_id) && !this.branchTurns.has(frame.turn_id)) {
      // A turn not on the branch shown: one that goes on from it joins it; another
      // branch's stays out (a pinned view leaves every new turn out), and a new branch
      // started after the view was read is shown whole instead.
      if (frame.type !== "user_message" || this.pinned) return;
      if (frame.parent !== undefined && frame.parent !== this.lastTurn) {
        if (frame.seq > this.loadedSeq) this.hooks.moved();
        return;
      }
      this.branchTurns.add(frame.turn_id);
    }
    const turn = frame.turn_id ? this.turn(frame.turn_id) : null;
    switch (frame.type) {
      case "user_message": {
        const stored = this.users.get(frame.seq);
        const parent = frame.parent ?? stored?.parent ?? turn.parent ?? this.lastTurn;
        turn.setUser(frame.content, frame.seq, parent, stored?.siblings ?? turn.siblings);
        this.lastTurn = Math.max(this.lastTurn, frame.seq);
        break;
      }
      case "operator_status":
        if (frame.phase === "queued") {
          turn.user.classList.add("queued");
        } else {
          turn.user.classList.remove("queued");
          this.setRunning(frame.turn_id);
        }
        break;
      case "chunk":
        turn.appendText(frame.content);
        break;
      case "thinking":
        turn.appendThinking(frame.content);
        break;
      case "chunk_reset":
        turn.endBlock();
        break;
      case "tool_call":
        turn.toolCall(frame.id, frame.name, frame.args);
        break;
      case "tool_result":
        turn.toolResult(frame.id, frame.name, frame.output, frame.is_error, frame.duration_ms);
        break;
      case "approval_request":
        turn.approval(frame, this.decide);
        break;
      case "approval_resolved":
        turn.resolveApproval(frame.request_id, `Tool call ${frame.decision === "deny" ? "denied" : "approved"}`);
        break;
      case "approval_expired":
        turn.resolveApproval(frame.request_id, "Approval timed out: the tool call was denied");
        break;
      case "done":
        if (frame.full_response && !turn.text && !turn.body.querySelector(".msg.assistant")) {
          turn.setText(frame.full_response);
        }
        turn.endBlock();
        turn.finish(frame);
        turn.showAnswerActions();
        if (this.running === frame.turn_id) this.setRunning(null);
        break;
      case "cancelled":
        if (turn.text) turn.text.node.classList.add("interrupted");
        turn.endBlock();
        turn.showAnswerActions();
        if (this.running === frame.turn_id) this.setRunning(null);
        break;
      case "error":
        if (turn) {
          turn.error(frame.code, frame.message);
          turn.endBlock();
          turn.showAnswerActions();
          if (this.running === frame.turn_id) this.setRunning(null);
        }
        break;
      default:
        break;
    }
    this.scroll(false);
  }

  scroll(force) {
    const c = this.container;
    if (force || c.scrollHeight - c.scrollTop - c.clientHeight < 160) c.scrollTop = c.scrollHeight;
  }
}
