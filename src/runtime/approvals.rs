//! Pending tool approvals: a turn whose tool call the policy marks `ask` waits here until
//! a watcher (WebSocket or REST) decides, the time-out denies it, or the turn is cancelled.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A decision on a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    /// Approve, and approve this tool without asking for the rest of the session.
    Always,
}

impl Decision {
    /// Parses the wire name (`approve`, `deny`, `always`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approve" | "approved" | "allow" => Some(Decision::Approve),
            "deny" | "denied" | "reject" => Some(Decision::Deny),
            "always" => Some(Decision::Always),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
            Decision::Always => "always",
        }
    }
}

/// A pending approval, as listed and re-sent to watchers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalInfo {
    pub request_id: String,
    #[serde(skip)]
    pub user: String,
    pub session_id: String,
    pub turn_id: String,
    pub tool: String,
    pub args: serde_json::Value,
    pub timeout_secs: f64,
    /// Epoch milliseconds when it is denied by the time-out.
    pub expires_at: i64,
    /// The `seq` of its `approval_request` event.
    pub seq: u64,
}

impl ApprovalInfo {
    /// The `approval_request` frame re-sent to a watcher that missed the event, with the
    /// time left rather than the original time-out.
    pub fn frame(&self) -> serde_json::Value {
        let remaining = (self.expires_at - crate::clock::now_ms()).max(0) as f64 / 1000.0;
        serde_json::json!({
            "type": "approval_request",
            "request_id": self.request_id,
            "tool": self.tool,
            "args": self.args,
            "timeout_secs": remaining,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "seq": self.seq,
        })
    }
}

struct Pending {
    info: ApprovalInfo,
    decide: oneshot::Sender<Decision>,
}

/// Why a decision was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum DecideError {
    /// No pending approval with that id for this user (decided, expired or someone else's).
    NotFound,
}

/// Every pending approval of the node.
#[derive(Default)]
pub struct Approvals {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Approvals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an approval; the receiver resolves with the decision.
    pub fn register(&self, info: ApprovalInfo) -> oneshot::Receiver<Decision> {
        let (decide, decided) = oneshot::channel();
        self.lock().insert(info.request_id.clone(), Pending { info, decide });
        decided
    }

    /// Forgets an approval (decided, expired or its turn ended).
    pub fn remove(&self, request_id: &str) {
        self.lock().remove(request_id);
    }

    /// Decides the user's pending approval `request_id`.
    pub fn decide(
        &self,
        user: &str,
        request_id: &str,
        decision: Decision,
    ) -> Result<(), DecideError> {
        let mut pending = self.lock();
        match pending.get(request_id) {
            Some(p) if p.info.user == user => {}
            _ => return Err(DecideError::NotFound),
        }
        let entry = pending.remove(request_id).ok_or(DecideError::NotFound)?;
        // The turn may have ended at this very moment; then there is nobody to tell.
        let _ = entry.decide.send(decision);
        Ok(())
    }

    /// The user's pending approvals, optionally of one session, oldest first.
    pub fn list(&self, user: &str, session_id: Option<&str>) -> Vec<ApprovalInfo> {
        let mut items: Vec<ApprovalInfo> = self
            .lock()
            .values()
            .filter(|p| p.info.user == user && session_id.is_none_or(|s| p.info.session_id == s))
            .map(|p| p.info.clone())
            .collect();
        items.sort_by_key(|i| i.seq);
        items
    }
}
