// The conversation view: turns built from the stored history and updated by live events.
// Each turn is keyed by its turn_id, so replayed and live events land in the right place.

import { api, explain } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const LONG_OUTPUT = 600;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pretty(args) {
  if (typeof args === "string") return args;
  return JSON.stringify(args, null, 2);
}

class Turn {
  constructor(container, id) {
    this.id = id;
    this.node = el("div", "turn");
    this.node.dataset.turn = id;
    this.user = el("div", "msg user");
    this.user.hidden = true;
    this.body = el("div", "body");
    this.meta = el("div", "meta");
    this.node.append(this.user, this.body, this.meta);
    container.append(this.node);
    this.text = null;
    this.thinking = null;
    this.tools = new Map();
    this.approvals = new Map();
  }

  setUser(content) {
    this.user.textContent = content;
    this.user.hidden = false;
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
        block.node.replaceChildren(renderMarkdown(block.raw));
      });
    }
  }

  setText(content, interrupted) {
    if (!content) return;
    const block = this.block();
    block.raw = content;
    block.node.replaceChildren(renderMarkdown(content));
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
  constructor(container, sessionId, onRunning) {
    this.container = container;
    this.sessionId = sessionId;
    this.onRunning = onRunning;
    this.turns = new Map();
    this.running = null;
  }

  turn(id) {
    if (!this.turns.has(id)) this.turns.set(id, new Turn(this.container, id));
    return this.turns.get(id);
  }

  /** Renders stored messages (with the tool-call timeline for durations and errors). */
  renderHistory(messages, toolCalls) {
    this.container.replaceChildren();
    this.turns.clear();
    const timeline = new Map(toolCalls.map((call) => [call.id, call]));
    for (const message of messages) {
      const turn = this.turn(message.turn_id || `m${message.id}`);
      if (message.role === "user") {
        turn.setUser(message.content);
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
    this.scroll(true);
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
    const turn = frame.turn_id ? this.turn(frame.turn_id) : null;
    switch (frame.type) {
      case "user_message":
        turn.setUser(frame.content);
        break;
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
        if (this.running === frame.turn_id) this.setRunning(null);
        break;
      case "cancelled":
        if (turn.text) turn.text.node.classList.add("interrupted");
        turn.endBlock();
        if (this.running === frame.turn_id) this.setRunning(null);
        break;
      case "error":
        if (turn) {
          turn.error(frame.code, frame.message);
          turn.endBlock();
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
