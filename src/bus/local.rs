//! The bus of a node that runs alone: there is no other node to hand events to, so
//! publishing is free and the bus is always healthy.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Bus, BusError, Following, Replayed, Request};

fn alone() -> BusError {
    BusError::Other("a node alone shares nothing".into())
}

/// [`Bus`] for a single node (the embedded default).
#[derive(Debug, Default)]
pub struct LocalBus;

#[async_trait]
impl Bus for LocalBus {
    fn publish(&self, _topic: &str, _seq: u64, _epoch: u64, _frame: &Bytes) {}

    async fn claim(&self, _topic: &str, _epoch: u64) -> Result<(), BusError> {
        Ok(())
    }

    fn follow(&self, _topic: &str) -> Following {
        Following::none()
    }

    async fn subscribe(&self, _topic: &str) -> Result<(), BusError> {
        Ok(())
    }

    fn broadcast(&self, _topic: &str, _frame: &Bytes) {}

    async fn replay(&self, _topic: &str, _after: u64) -> Result<Replayed, BusError> {
        Ok(Replayed::Missing)
    }

    async fn newest(&self, _topic: &str) -> Result<Option<u64>, BusError> {
        Ok(None)
    }

    async fn request(&self, node: &str, _: Bytes, _: Duration) -> Result<Bytes, BusError> {
        Err(BusError::NoSuchNode(node.to_owned()))
    }

    fn requests(&self) -> Option<mpsc::Receiver<Request>> {
        None
    }

    async fn put(&self, _: &str, _: &str, _: Bytes, _: Duration) -> Result<(), BusError> {
        Ok(())
    }

    async fn remove(&self, _: &str, _: &str) -> Result<(), BusError> {
        Ok(())
    }

    async fn entries(&self, _: &str) -> Result<Vec<(String, Bytes)>, BusError> {
        Ok(Vec::new())
    }

    // One node keeps its counters and values in memory (see `limits`): nothing is shared.
    async fn count(&self, _: &str, _: Duration) -> Result<(u64, Duration), BusError> {
        Err(alone())
    }

    async fn set(&self, _: &str, _: Bytes, _: Duration) -> Result<(), BusError> {
        Err(alone())
    }

    async fn take(&self, _: &str) -> Result<Option<Bytes>, BusError> {
        Err(alone())
    }

    async fn ttl(&self, _: &str) -> Result<Option<Duration>, BusError> {
        Err(alone())
    }

    async fn delete(&self, _: &str) -> Result<(), BusError> {
        Err(alone())
    }

    fn describe(&self) -> &'static str {
        "local"
    }
}
