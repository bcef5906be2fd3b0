// A small MCP server (stdio) for tests/it/mcp.rs, built on the official SDK: its tool list
// changes on demand, and it misbehaves on demand.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

const server = new McpServer({ name: "changing", version: "1.0.0" });
let grown = 0;

server.registerTool("grow", { description: "Adds a tool named grown-N" }, async () => {
  grown += 1;
  const n = grown;
  // Registering after the handshake sends notifications/tools/list_changed.
  server.registerTool(`grown-${n}`, { description: `Grown tool ${n}` }, async () => ({
    content: [{ type: "text", text: `grown ${n} ran` }],
  }));
  return { content: [{ type: "text", text: `added grown-${n}` }] };
});

// Bytes that are not UTF-8 and a line without end on stderr: the server must live on.
server.registerTool("noisy", { description: "Writes junk to stderr" }, async () => {
  process.stderr.write(Buffer.from([0xff, 0xfe, 0x0a, 0xc3, 0x28, 0x0a]));
  process.stderr.write("x".repeat(100_000));
  process.stderr.write("\n");
  return { content: [{ type: "text", text: "still here" }] };
});

// An error result far larger than any output cap.
server.registerTool("flood", { description: "Fails at length" }, async () => ({
  content: [{ type: "text", text: "E".repeat(200_000) }],
  isError: true,
}));

await server.connect(new StdioServerTransport());
