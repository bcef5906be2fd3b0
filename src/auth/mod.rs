//! Who is calling, and whether they may: tokens (each belongs to a user), one-time tickets,
//! pairing codes, per-token and per-IP rate limits, failed-auth lockouts, the WebSocket
//! origin check, and the audit log of security events.

mod admin;
mod forwarded;
mod pairing;
mod tickets;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use axum::http::request::Parts;
use tokio::sync::broadcast;

use crate::bus::Bus;
use crate::config::Config;
use crate::limits::{Lockouts, RateLimiter};
use crate::store::{AuditEntry, PairingGrant, Store, StoreError};

pub use admin::{Paired, require_admin};
pub use forwarded::{ForwardedHeader, Network, TrustedProxies};
pub use pairing::{
    PAIRING_TTL_MS, new_code as new_pairing_code, normalize as normalize_pairing_code,
};
pub use tickets::{TICKET_TTL, Tickets};

/// Why a caller was refused. The HTTP layer maps each to its status and wire code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send a bearer token")]
    Missing,
    #[error("invalid, revoked or expired credentials")]
    Invalid,
    #[error("{message}")]
    RateLimited { message: &'static str, retry_after: Duration },
    #[error("cross-origin WebSocket connections are not allowed")]
    CrossOrigin,
    #[error("this needs an admin token")]
    AdminOnly,
    #[error("user names are 1-64 characters of A-Z a-z 0-9 . _ -")]
    InvalidUser,
    #[error("the pairing code is wrong, used or expired")]
    WrongPairingCode,
    #[error("the user {0:?} already exists; choose another name")]
    UserExists(String),
    #[error("this pairing code was made for another user; leave out `user`")]
    PairingForAnotherUser,
    #[error("an admin pairing code must name its user")]
    AdminCodeWithoutUser,
    #[error("no active token with that id")]
    NoSuchToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bus topic revoked token ids are broadcast on.
const REVOCATIONS: &str = "revocations";

/// The user every request acts as when `auth.mode = "none"`.
pub const DEFAULT_USER: &str = "default";

/// The authenticated user of a request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
    /// The token the request authenticated with (directly or through a ticket).
    pub token_id: Option<String>,
}

/// The client's address as the request-context middleware established it: the peer, or
/// the client a trusted proxy named.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Authentication state shared by every entry point.
pub struct Auth {
    enabled: bool,
    trusted_proxies: TrustedProxies,
    store: Arc<dyn Store>,
    allowed_origins: Vec<String>,
    pub tickets: Tickets,
    per_token: RateLimiter,
    per_ip: RateLimiter,
    failures: Lockouts,
    pairing_failures: Lockouts,
    revocations: broadcast::Sender<String>,
    /// The cluster's bus (none alone): revocations made here reach the other nodes at once.
    cluster: crate::limits::Shared,
}

impl Auth {
    /// Authentication as configured, over `store`; limits, lockouts and tickets hold
    /// across the cluster of `bus` if it is one.
    pub fn new(config: &Config, store: Arc<dyn Store>, bus: &Arc<dyn Bus>) -> Self {
        let limits = &config.limits;
        let lock_for = Duration::from_secs(limits.lockout_secs);
        let shared = crate::limits::shared(bus);
        let cluster = shared.clone();
        Self {
            enabled: config.auth_enabled(),
            // `Config::validate` refused entries that do not parse.
            trusted_proxies: config.trusted_proxies().unwrap_or_default(),
            store,
            allowed_origins: config.auth.allowed_origins.clone(),
            tickets: Tickets::new(shared.clone()),
            per_token: RateLimiter::shared_per_minute(
                "token",
                limits.requests_per_minute_per_token,
                shared.clone(),
            ),
            per_ip: RateLimiter::shared_per_minute(
                "ip",
                limits.requests_per_minute_per_ip,
                shared.clone(),
            ),
            failures: Lockouts::shared(
                "auth",
                limits.auth_failures_per_minute,
                Duration::from_secs(60),
                lock_for,
                shared.clone(),
            ),
            // Pairing failures count for a whole lockout period, not per minute.
            pairing_failures: Lockouts::shared(
                "pairing",
                limits.pairing_attempts,
                lock_for,
                lock_for,
                shared,
            ),
            revocations: broadcast::channel(64).0,
            cluster,
        }
    }

    /// Counts a request against its IP's limit.
    pub async fn limit_ip(&self, ip: IpAddr) -> Result<(), AuthError> {
        self.per_ip.check(&ip.to_string()).await.map_err(|retry| AuthError::RateLimited {
            message: "too many requests from this address",
            retry_after: retry,
        })
    }

    /// The client's address: the connection's peer, or, when the peer is a trusted proxy,
    /// the client its forwarding headers name.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted_proxies.client(peer, headers)
    }

    /// Whether `ip` is a trusted proxy (a client address that is one means the proxy did
    /// not say who its client was).
    pub fn is_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.trusts(ip)
    }

    /// Authenticates a request: `Authorization: Bearer`, then a `bearer.<token>`
    /// WebSocket sub-protocol, then `?token=`, then a one-time `?ticket=`.
    ///
    /// A valid credential is never refused by an address lockout: lockouts slow down
    /// guessing, and behind a proxy (or NAT) one address is shared by many users.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Caller, AuthError> {
        if !self.enabled {
            return Ok(Caller { user: DEFAULT_USER.into(), admin: true, token_id: None });
        }
        let ip = client_ip(parts);
        let key = ip.to_string();
        let query = query_pairs(parts);
        let caller = match credential(&parts.headers, &query) {
            None => return Err(AuthError::Missing),
            Some(Credential::Token(secret)) => self.check_token(&secret).await?,
            Some(Credential::Ticket(ticket)) => self.tickets.redeem(&ticket).await,
        };
        let Some(caller) = caller else {
            if let Err(retry) = self.failures.check(&key).await {
                return Err(AuthError::RateLimited {
                    message: "too many failed authentications from this address",
                    retry_after: retry,
                });
            }
            self.audit("auth_failure", None, Some(ip), None).await;
            if let Some(lock) = self.failures.fail(&key).await {
                tracing::warn!(client = %ip, "locked out after repeated failed authentications");
                self.audit("lockout", None, Some(ip), Some(&format!("{} s", lock.as_secs()))).await;
            }
            return Err(AuthError::Invalid);
        };
        let token_key = caller.token_id.clone().unwrap_or_else(|| caller.user.clone());
        self.per_token.check(&token_key).await.map_err(|retry| AuthError::RateLimited {
            message: "too many requests with this token",
            retry_after: retry,
        })?;
        Ok(caller)
    }

    async fn check_token(&self, secret: &str) -> Result<Option<Caller>, AuthError> {
        let Some(record) = self.store.token_by_hash(&tokens::hash(secret)).await? else {
            return Ok(None);
        };
        let valid = record.revoked_at.is_none() && tokens::matches(secret, &record.hash);
        Ok(valid.then_some(Caller {
            user: record.user,
            admin: record.admin,
            token_id: Some(record.id),
        }))
    }

    /// Refuses a cross-site WebSocket upgrade: the `Origin` must be the server's own or in
    /// `auth.allowed_origins`. Clients that send no `Origin` (not browsers) pass.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
        let origin = origin.to_str().unwrap_or_default();
        if self.allowed_origins.iter().any(|allowed| allowed == "*" || allowed == origin) {
            return Ok(());
        }
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
            return Ok(());
        }
        Err(AuthError::CrossOrigin)
    }

    /// Tells open connections that a token was revoked.
    pub fn announce_revocation(&self, token_id: &str) {
        let _ = self.revocations.send(token_id.to_owned());
    }

    /// Tells open connections here and on every other node that a token was revoked.
    fn revoked_here(&self, token_id: &str) {
        self.announce_revocation(token_id);
        if let Some(bus) = &self.cluster {
            bus.broadcast(REVOCATIONS, &bytes::Bytes::from(token_id.to_owned()));
        }
    }

    /// Resolves when `token_id` is revoked (never, without a token).
    pub fn revoked(
        &self,
        token_id: Option<String>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut revocations = self.revocations.subscribe();
        async move {
            let Some(token_id) = token_id else { return std::future::pending().await };
            loop {
                match revocations.recv().await {
                    Ok(id) if id == token_id => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }

    /// Records a security event; a failure to record it is logged, never fatal.
    pub async fn audit(
        &self,
        kind: &str,
        user: Option<&str>,
        ip: Option<IpAddr>,
        detail: Option<&str>,
    ) {
        let entry = AuditEntry {
            at: crate::clock::now_ms(),
            kind: kind.to_owned(),
            user: user.map(str::to_owned),
            ip: ip.map(|ip| ip.to_string()),
            detail: detail.map(str::to_owned),
        };
        if let Err(err) = self.store.audit(&entry).await {
            tracing::error!(%err, kind, "writing the audit log failed");
        }
    }

    /// Forwards revocations made by other processes (`parley token revoke`) to open
    /// connections, polling the store every second until `stop`; in a cluster, the other
    /// nodes' revocations also arrive at once over the bus.
    pub async fn watch_revocations(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if let Some(bus) = self.cluster.clone() {
            let mut following = bus.follow(REVOCATIONS);
            if let Err(err) = bus.subscribe(REVOCATIONS).await {
                tracing::warn!(%err, "following revocations on the bus failed; the store's poll remains");
            }
            let (auth, stop) = (Arc::downgrade(&self), stop.clone());
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        next = following.next() => next,
                        () = stop.cancelled() => return,
                    };
                    let Some(auth) = auth.upgrade() else { return };
                    match next {
                        Some(crate::bus::Followed::Frame { frame, .. }) => {
                            auth.announce_revocation(&String::from_utf8_lossy(&frame));
                        }
                        Some(crate::bus::Followed::Resumed) => {
                            let _ = bus.subscribe(REVOCATIONS).await;
                        }
                        None => return,
                    }
                }
            });
        }
        let mut since = crate::clock::now_ms();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = crate::clock::now_ms();
            match self.store.revoked_since(since - 1000).await {
                Ok(ids) => ids.iter().for_each(|id| self.announce_revocation(id)),
                Err(err) => tracing::warn!(%err, "checking for revoked tokens failed"),
            }
            since = now;
        }
    }
}

enum Credential {
    Token(String),
    Ticket(String),
}

fn credential(headers: &HeaderMap, query: &[(String, String)]) -> Option<Credential> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "));
        return Some(Credential::Token(token.unwrap_or_default().trim().to_owned()));
    }
    let protocols = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    for protocol in protocols.flat_map(|v| v.split(',')) {
        if let Some(token) = protocol.trim().strip_prefix("bearer.") {
            return Some(Credential::Token(token.to_owned()));
        }
    }
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    param("token").map(Credential::Token).or_else(|| param("ticket").map(Credential::Ticket))
}

fn query_pairs(parts: &Parts) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The client's address: as the request-context middleware established it, else the
/// connection's peer.
pub fn client_ip(parts: &Parts) -> IpAddr {
    if let Some(ClientAddr(ip)) = parts.extensions.get::<ClientAddr>() {
        return *ip;
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip())
}
