// Parley's /api/ag-ui driven by the official AG-UI client (@ag-ui/client's HttpAgent).
// Run by tests/it/clients.rs against a real server (whose `shell` tool asks for approval)
// and the fake provider: PARLEY_URL, PARLEY_TOKEN, FAKE_URL. Each check prints its name;
// a failure throws and the process exits non-zero.

import assert from "node:assert/strict";
import { HttpAgent } from "@ag-ui/client";

const { PARLEY_URL, PARLEY_TOKEN, FAKE_URL } = process.env;

async function script(...replies) {
  const response = await fetch(`${FAKE_URL}/control/scripts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(replies),
  });
  assert.equal(response.status, 200);
}

async function parley(path) {
  const response = await fetch(PARLEY_URL + path, {
    headers: { authorization: `Bearer ${PARLEY_TOKEN}` },
  });
  return response.json();
}

/// An agent on a new thread whose fetch records the SSE ids it saw.
function agent(threadId) {
  const seen = { events: [] };
  const tap = async (url, init) => {
    const response = await fetch(url, init);
    if (!response.body) return response;
    const [mine, theirs] = response.body.tee();
    (async () => {
      const decoder = new TextDecoder();
      const reader = mine.getReader();
      let buffer = "";
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const id = block.split("\n").find((l) => l.startsWith("id:"))?.slice(3).trim();
            const data = block.split("\n").find((l) => l.startsWith("data:"))?.slice(5).trim();
            if (id && data) seen.events.push({ id, event: JSON.parse(data) });
          }
        }
      } catch {}
    })();
    return new Response(theirs, { status: response.status, headers: response.headers });
  };
  const a = new HttpAgent({
    url: `${PARLEY_URL}/api/ag-ui`,
    headers: { authorization: `Bearer ${PARLEY_TOKEN}` },
    threadId,
    fetch: tap,
  });
  return { agent: a, seen };
}

function collector() {
  const events = [];
  return { events, subscriber: { onEvent: ({ event }) => void events.push(event) } };
}

async function check(name, fn) {
  await fn();
  console.log("ok", name);
}

const stamp = Date.now();

await check("a run with a tool call", async () => {
  await script(
    { tool_call: { id: "call_ls", name: "list_dir", args: { path: "." } } },
    { text: ["Nothing ", "much here."] },
  );
  const { agent: a } = agent(`agui-tools-${stamp}`);
  a.addMessage({ id: "u1", role: "user", content: "What is in my workspace?" });
  const { events, subscriber } = collector();
  await a.runAgent({}, subscriber);
  const types = events.map((e) => e.type);
  assert.equal(types[0], "RUN_STARTED");
  assert.equal(types.at(-1), "RUN_FINISHED");
  for (const t of ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]) {
    assert.ok(types.includes(t), `${t} in ${types}`);
  }
  const withCall = a.messages.find((m) => m.role === "assistant" && m.toolCalls?.length);
  assert.equal(withCall.toolCalls[0].function.name, "list_dir");
  assert.deepEqual(JSON.parse(withCall.toolCalls[0].function.arguments), { path: "." });
  const result = a.messages.find((m) => m.role === "tool");
  assert.equal(result.toolCallId, "call_ls");
  const last = a.messages.at(-1);
  assert.equal(last.role, "assistant");
  assert.equal(last.content, "Nothing much here.");
  // The thread is a Parley session with the whole exchange.
  const detail = await parley(`/api/sessions/agui-tools-${stamp}`);
  assert.equal(detail.messages.at(-1).content, "Nothing much here.");
});

await check("an approval interrupts the run; the next run resumes it", async () => {
  await script(
    { tool_call: { id: "call_sh", name: "shell", args: { command: "echo approved-run" } } },
    { text: ["It printed."] },
  );
  const { agent: a } = agent(`agui-approval-${stamp}`);
  a.addMessage({ id: "u1", role: "user", content: "Run echo." });
  let finished;
  await a.runAgent({}, { onRunFinishedEvent: (e) => void (finished = e) });
  assert.equal(finished.outcome, "interrupt");
  assert.equal(a.pendingInterrupts.length, 1);
  const interrupt = a.pendingInterrupts[0];
  assert.equal(interrupt.reason, "tool_approval");
  assert.equal(interrupt.toolCallId, "call_sh");
  assert.equal(interrupt.metadata.tool, "shell");
  // The turn waits, server-side, for the answer.
  const pending = await parley("/api/approvals");
  assert.equal(pending.items?.length ?? pending.length, 1);

  const { events, subscriber } = collector();
  await a.runAgent(
    { resume: [{ interruptId: interrupt.id, status: "resolved", payload: { approved: true } }] },
    subscriber,
  );
  const types = events.map((e) => e.type);
  assert.equal(types[0], "RUN_STARTED");
  assert.equal(types.at(-1), "RUN_FINISHED", types.join(","));
  assert.equal(a.pendingInterrupts.length, 0);
  const result = a.messages.find((m) => m.role === "tool" && m.toolCallId === "call_sh");
  assert.match(result.content, /approved-run/);
  assert.equal(a.messages.at(-1).content, "It printed.");
});

await check("a dropped stream reconnects with Last-Event-ID and continues", async () => {
  const parts = Array.from({ length: 12 }, (_, i) => `w${i} `);
  await script({ text: parts, delay_ms: 80 });
  const { agent: a, seen } = agent(`agui-resume-${stamp}`);
  a.addMessage({ id: "u1", role: "user", content: "Count." });
  const runId = `run-${stamp}`;
  let contents = 0;
  let dropped;
  await a.runAgent(
    { runId },
    {
      onTextMessageContentEvent: ({ event }) => {
        contents += 1;
        if (contents === 3) {
          dropped = event;
          a.abortRun();
        }
      },
    },
  );
  assert.ok(dropped, `${contents} content events before the drop`);
  // The id of the last event the agent applied (the tap may have read further).
  const same = ({ event }) =>
    event.type === "TEXT_MESSAGE_CONTENT" &&
    event.messageId === dropped.messageId &&
    event.delta === dropped.delta;
  for (let i = 0; !seen.events.some(same) && i < 200; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const last = seen.events.find(same)?.id;
  assert.ok(last, "the tap saw the event");
  a.headers = { ...a.headers, "Last-Event-ID": last };
  const { events, subscriber } = collector();
  await a.runAgent({ runId }, subscriber);
  const types = events.map((e) => e.type);
  assert.equal(types[0], "RUN_STARTED");
  assert.equal(types.at(-1), "RUN_FINISHED", types.join(","));
  assert.equal(a.messages.at(-1).content, parts.join(""));
});

await check("a client that leaves stops its run", async () => {
  await script({ text: Array(300).fill("slow "), delay_ms: 50 });
  const thread = `agui-stop-${stamp}`;
  const { agent: a } = agent(thread);
  a.addMessage({ id: "u1", role: "user", content: "Talk." });
  let contents = 0;
  await a.runAgent(
    {},
    {
      onTextMessageContentEvent: () => {
        contents += 1;
        if (contents === 2) a.abortRun();
      },
    },
  );
  const deadline = Date.now() + 15000;
  for (;;) {
    const detail = await parley(`/api/sessions/${thread}`);
    const last = detail.messages.at(-1);
    if (detail.running_turn == null && last.role === "assistant") {
      assert.equal(last.status, "interrupted");
      assert.ok(last.content.length < 300 * 5, "the answer stopped early");
      break;
    }
    assert.ok(Date.now() < deadline, "the run was not stopped");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
});

console.log("all ag-ui client checks passed");
