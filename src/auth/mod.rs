//! Who is calling. Until token authentication lands every request acts as the user
//! `default`; handlers already take a [`Caller`], so adding tokens changes only this module.

mod tickets;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::http::ApiError;

pub use tickets::{TICKET_TTL, Tickets};

/// The user every request acts as while authentication is off.
pub const DEFAULT_USER: &str = "default";

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            user: DEFAULT_USER.to_owned(),
            admin: true,
        })
    }
}

/// The user a `?ticket=` names: the ticket is spent; an unknown, replayed or expired one is
/// refused with 401.
pub fn redeem_ticket(
    tickets: &Tickets,
    ticket: Option<&str>,
    caller: Caller,
) -> Result<Caller, ApiError> {
    match ticket {
        None => Ok(caller),
        Some(ticket) => match tickets.redeem(ticket) {
            Some(user) => Ok(Caller {
                admin: caller.admin && user == caller.user,
                user,
            }),
            None => Err(ApiError::Unauthorized(
                "the ticket is invalid, expired or already used",
            )),
        },
    }
}
