//! One-time tickets for clients that cannot set headers on a WebSocket or EventSource
//! (browsers): `POST /api/chat/ticket` issues one bound to the caller's user; it works
//! once, within 30 seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Outstanding tickets.
#[derive(Default)]
pub struct Tickets {
    issued: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tickets {
    /// Issues a ticket for `user`.
    pub fn issue(&self, user: &str) -> String {
        let ticket = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(ticket.clone(), (user.to_owned(), now + TICKET_TTL));
        ticket
    }

    /// Spends a ticket: its user if it was issued, unused and unexpired.
    pub fn redeem(&self, ticket: &str) -> Option<String> {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let (user, expires) = issued.remove(ticket)?;
        (expires > Instant::now()).then_some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once() {
        let tickets = Tickets::default();
        let ticket = tickets.issue("alice");
        assert_eq!(tickets.redeem(&ticket).as_deref(), Some("alice"));
        assert_eq!(tickets.redeem(&ticket), None);
        assert_eq!(tickets.redeem("forged"), None);
    }
}
