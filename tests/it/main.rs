//! Integration tests: the real server driven by real clients, with a fake provider.

mod common;

mod chat;
mod durability;
mod errors;
mod provider_failures;
mod queue;
mod tools;
