// The live connection to one session over /ws/chat: reconnects with backoff and resumes
// from the last seq it saw, so a dropped network loses nothing.

import { token } from "./api.js";

export class Live {
  /**
   * @param {string} sessionId
   * @param {number} after  the last seq already shown
   * @param {object} handlers  onEvent(frame), onState("live"|"reconnecting"|"closed"), onResync()
   */
  constructor(sessionId, after, handlers) {
    this.sessionId = sessionId;
    this.lastSeq = after;
    this.handlers = handlers;
    this.closed = false;
    this.attempt = 0;
    this.outbox = [];
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // The resume point goes in the URL, so the replay comes before any live event.
    const url = `${scheme}://${location.host}/ws/chat?session_id=${encodeURIComponent(this.sessionId)}&last_seq=${this.lastSeq}`;
    const socket = new WebSocket(url, ["parley.v1", `bearer.${token()}`]);
    this.socket = socket;
    socket.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === "session_start") {
        this.attempt = 0;
        this.handlers.onState("live");
        for (const queued of this.outbox.splice(0)) socket.send(JSON.stringify(queued));
        return;
      }
      if (frame.type === "resync") {
        this.lastSeq = frame.last_seq;
        this.handlers.onResync();
        return;
      }
      // Pending approvals are re-sent with their original seq; the view keys them by id.
      if (typeof frame.seq === "number" && frame.type !== "approval_request") {
        if (frame.seq <= this.lastSeq) return;
        this.lastSeq = frame.seq;
      }
      this.handlers.onEvent(frame);
    };
    socket.onclose = (event) => {
      if (this.closed) return;
      if (event.code === 1008 && event.reason === "token revoked") {
        this.handlers.onState("closed");
        return;
      }
      this.handlers.onState("reconnecting");
      const delay = Math.min(10000, 250 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    };
    socket.onerror = () => {};
  }

  /** Sends a frame now, or as soon as the connection is back. */
  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
    } else {
      this.outbox.push(frame);
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close();
  }
}
