//! The bus: hands session events to the *other* nodes of a cluster. Watchers on the node
//! where an event happens get it from its session's log directly; what crosses the bus is
//! the event's frame, serialized once, with its `seq` — nothing in here knows runtime types.
//! One node alone has nobody to hand events to ([`LocalBus`]); a Redis bus joins it for
//! multi-node.

mod local;

use bytes::Bytes;

pub use local::LocalBus;

/// Carries serialized session events across nodes.
pub trait Bus: Send + Sync + 'static {
    /// Hands the frame of event `seq` on `topic` to the other nodes; never blocks the
    /// caller.
    fn publish(&self, topic: &str, seq: u64, frame: &Bytes);

    /// A short description for logs and status.
    fn describe(&self) -> &'static str;

    /// Whether the bus delivers across nodes right now (the in-process bus always does).
    fn healthy(&self) -> bool {
        true
    }
}
