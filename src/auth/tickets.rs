//! One-time tickets for clients that cannot set headers on a WebSocket or EventSource
//! (browsers): `POST /api/chat/ticket` issues one bound to the caller; it works once,
//! within 30 seconds, on any node of a cluster (kept on the bus; in memory alone, or while
//! the bus is down).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Caller;
use crate::limits::Shared;

/// How long a ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Outstanding tickets.
pub struct Tickets {
    issued: Mutex<HashMap<String, (Caller, Instant)>>,
    shared: Shared,
}

fn key(ticket: &str) -> String {
    format!("ticket:{ticket}")
}

impl Tickets {
    /// Tickets kept on `shared` if given, else in memory.
    pub fn new(shared: Shared) -> Self {
        Self { issued: Mutex::new(HashMap::new()), shared }
    }

    /// Issues a ticket acting as `caller`.
    pub async fn issue(&self, caller: &Caller) -> String {
        let ticket = super::tokens::random_hex(32);
        if let Some(bus) = &self.shared {
            // Serializing a few strings cannot fail.
            let value = Bytes::from(serde_json::to_vec(caller).unwrap_or_default());
            if bus.set(&key(&ticket), value, TICKET_TTL).await.is_ok() {
                return ticket;
            }
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(ticket.clone(), (caller.clone(), now + TICKET_TTL));
        ticket
    }

    /// Spends a ticket: its caller if it was issued, unused and unexpired.
    pub async fn redeem(&self, ticket: &str) -> Option<Caller> {
        if let Some(bus) = &self.shared
            && let Ok(Some(value)) = bus.take(&key(ticket)).await
        {
            return serde_json::from_slice(&value).ok();
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let (caller, expires) = issued.remove(ticket)?;
        (expires > Instant::now()).then_some(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ticket_works_once() {
        let tickets = Tickets::new(None);
        let alice = Caller { user: "alice".into(), admin: false, token_id: Some("t".into()) };
        let ticket = tickets.issue(&alice).await;
        assert_eq!(tickets.redeem(&ticket).await.map(|c| c.user).as_deref(), Some("alice"));
        assert!(tickets.redeem(&ticket).await.is_none());
        assert!(tickets.redeem("forged").await.is_none());
    }
}
