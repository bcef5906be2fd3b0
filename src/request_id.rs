//! Request ids: every HTTP request (and the WebSocket it may become) gets one, accepted from
//! a well-formed `X-Request-Id` or made up. It is answered in the `X-Request-Id` header and
//! in every JSON error, carried by every log line of the request, and handed on to the turns
//! the request submits, so a user's report can be traced without exposing internals.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// Whether a client-sent id is safe to echo and log: 1-128 of `A-Z a-z 0-9 . _ : -`.
pub fn well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A client's id if well-formed, else a new one.
pub fn accept_or_generate(sent: Option<&str>) -> Arc<str> {
    match sent {
        Some(id) if well_formed(id) => id.into(),
        _ => uuid::Uuid::new_v4().simple().to_string().into(),
    }
}

/// The id of the request this task serves, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `future` as part of request `id`.
pub fn scope<F: Future>(id: Arc<str>, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(id, future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_are_kept() {
        assert_eq!(&*accept_or_generate(Some("abc-123:x.y_z")), "abc-123:x.y_z");
        for bad in ["", "has space", "new\nline", "ünï", &"x".repeat(129)] {
            let id = accept_or_generate(Some(bad));
            assert_ne!(&*id, bad);
            assert!(well_formed(&id));
        }
        assert!(well_formed(&accept_or_generate(None)));
    }

    #[tokio::test]
    async fn the_id_is_visible_inside_its_scope_only() {
        assert!(current().is_none());
        let seen = scope("r1".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("r1"));
    }
}
