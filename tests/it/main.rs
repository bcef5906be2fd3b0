//! Integration tests: the real server driven by real clients, with a fake provider.

mod common;

mod agui;
mod anthropic;
mod branches;
mod browser;
mod bus_contract;
mod chat;
mod clients;
mod cluster;
mod durability;
mod errors;
mod hardening;
mod leases;
mod live_control;
mod live_protocols;
mod mcp;
mod models;
mod openai;
mod openapi;
mod operations;
mod organize;
mod provider_failures;
mod queue;
mod reliability;
mod security;
mod session_lifecycle;
mod store_contract;
mod store_copy;
mod store_outage;
mod terminal;
mod tools;
mod uploads;
mod ws_chat;
