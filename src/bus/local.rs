//! The bus of a node that runs alone: there is no other node to hand events to, so
//! publishing is free and the bus is always healthy.

use async_trait::async_trait;
use bytes::Bytes;

use super::{Bus, BusError, Following, Replayed};

/// [`Bus`] for a single node (the embedded default).
#[derive(Debug, Default)]
pub struct LocalBus;

#[async_trait]
impl Bus for LocalBus {
    fn publish(&self, _topic: &str, _seq: u64, _frame: &Bytes) {}

    fn follow(&self, _topic: &str) -> Following {
        Following::none()
    }

    async fn replay(&self, _topic: &str, _after: u64) -> Result<Replayed, BusError> {
        Ok(Replayed::Missing)
    }

    fn describe(&self) -> &'static str {
        "local"
    }
}
