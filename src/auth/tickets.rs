//! One-time tickets for clients that cannot set headers on a WebSocket or EventSource
//! (browsers): `POST /api/chat/ticket` issues one bound to the caller; it works once,
//! within 30 seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Caller;

/// How long a ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Outstanding tickets.
#[derive(Default)]
pub struct Tickets {
    issued: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Tickets {
    /// Issues a ticket acting as `caller`.
    pub fn issue(&self, caller: &Caller) -> String {
        let ticket = super::tokens::random_hex(32);
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(ticket.clone(), (caller.clone(), now + TICKET_TTL));
        ticket
    }

    /// Spends a ticket: its caller if it was issued, unused and unexpired.
    pub fn redeem(&self, ticket: &str) -> Option<Caller> {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let (caller, expires) = issued.remove(ticket)?;
        (expires > Instant::now()).then_some(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once() {
        let tickets = Tickets::default();
        let alice = Caller { user: "alice".into(), admin: false, token_id: Some("t".into()) };
        let ticket = tickets.issue(&alice);
        assert_eq!(tickets.redeem(&ticket).map(|c| c.user).as_deref(), Some("alice"));
        assert!(tickets.redeem(&ticket).is_none());
        assert!(tickets.redeem("forged").is_none());
    }
}
