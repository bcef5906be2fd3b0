//! Parley: a self-hosted gateway between people or programs and an AI agent.
//!
//! The layers, from the wire inwards (see DESIGN.md "Architecture"):
//!
//! - [`http`], [`ws`], [`sse`], [`openai`]: the protocol adapters (REST, WebSocket,
//!   Server-Sent Events, the OpenAI APIs) and [`agui`] (AG-UI); they translate between
//!   their wire format and runtime events, nothing more.
//! - [`auth`]: who is calling.
//! - [`runtime`]: owns turns: a FIFO queue per session, the event log with its `seq`, and
//!   cancellation. A turn never belongs to the connection that started it.
//! - [`agent`]: the loop of model calls and tool calls of one turn.
//! - [`providers`]: LLM APIs (OpenAI-compatible and Anthropic, streaming).
//! - [`tools`]: shell and workspace file tools, confined to the user's workspace, and the
//!   tools of MCP servers (`tools::mcp`).
//! - [`store`]: durable sessions, messages, turns and tool calls (SQLite or PostgreSQL).
//! - [`bus`]: fan-out of session events to watchers (in-process).
//! - [`metrics`]: what a node counts, for `GET /metrics`.
//! - [`config`] and [`server`]: configuration, start-up and graceful shutdown.
//! - [`request_id`]: the id that ties a request's logs, errors and turns together.
//! - [`client`]: `parley chat`, a terminal client of a running server (REST and SSE).

pub mod agent;
pub mod agui;
pub mod auth;
pub mod bus;
pub mod client;
pub mod clock;
pub mod config;
pub mod conversation;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod providers;
pub mod request_id;
pub mod runtime;
pub mod server;
pub mod sse;
pub mod store;
pub mod tools;
pub mod ws;
