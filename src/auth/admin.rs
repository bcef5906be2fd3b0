//! What admins (and pairing clients) do with identities: pair a device or a new user,
//! mint pairing codes, create, list and revoke tokens, read the audit log. Every change
//! is audited.

use std::net::IpAddr;

use super::{Auth, AuthError, Caller, PairingGrant, tokens};
use crate::store::{AuditEntry, StoreError, TokenRecord};

/// A token handed out by pairing.
pub struct Paired {
    pub record: TokenRecord,
    /// Shown once.
    pub secret: String,
}

/// Refuses a caller without an admin token.
pub fn require_admin(caller: &Caller) -> Result<(), AuthError> {
    if caller.admin { Ok(()) } else { Err(AuthError::AdminOnly) }
}

fn check_user(user: Option<&str>) -> Result<(), AuthError> {
    match user {
        Some(user) if !tokens::valid_user(user) => Err(AuthError::InvalidUser),
        _ => Ok(()),
    }
}

impl Auth {
    /// Trades a one-time pairing code for a token. A code never grants an existing
    /// identity: it creates a new user (a proposed name must be free, else `UserExists`
    /// and the code stays good), or a new device of the user it was minted for. Whether
    /// the token is an admin's was decided when the code was minted. Wrong
    /// codes count toward the client's lockout, which is checked first: a pairing code is
    /// short enough that guessing must be slowed.
    pub async fn pair(
        &self,
        ip: IpAddr,
        code: &str,
        asked: Option<String>,
        label: Option<&str>,
    ) -> Result<Paired, AuthError> {
        let key = ip.to_string();
        if let Err(retry_after) = self.pairing_failures.check(&key).await {
            return Err(AuthError::RateLimited {
                message: "too many wrong pairing codes",
                retry_after,
            });
        }
        check_user(asked.as_deref())?;
        let hash = tokens::hash(&super::normalize_pairing_code(code));
        let Some(grant) = self.store.pairing_code(&hash).await? else {
            return Err(self.wrong_pairing_code(ip).await);
        };
        self.pairing_failures.clear(&key).await;
        let (user, new_user) = match (grant.user, asked) {
            (Some(granted), Some(asked)) if granted != asked => {
                return Err(AuthError::PairingForAnotherUser);
            }
            (Some(granted), _) => (granted, false),
            (None, asked) => {
                (asked.unwrap_or_else(|| format!("user-{}", tokens::random_hex(4))), true)
            }
        };
        let admin = grant.admin;
        let (record, secret) = tokens::new_token(&user, admin, label.or(Some("paired")));
        match self.store.pair(&hash, &record, new_user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::UserExists(user)),
            // Spent or expired since it was looked up.
            Err(StoreError::NotFound) => return Err(self.wrong_pairing_code(ip).await),
            Err(other) => return Err(other.into()),
        }
        let detail = if new_user { "new user" } else { "new device" };
        let detail = format!("{detail}, {}", record.id);
        self.audit("paired", Some(&user), Some(ip), Some(&detail)).await;
        Ok(Paired { record, secret })
    }

    async fn wrong_pairing_code(&self, ip: IpAddr) -> AuthError {
        self.audit("pairing_failure", None, Some(ip), None).await;
        if let Some(lock) = self.pairing_failures.fail(&ip.to_string()).await {
            let detail = format!("pairing, {} s", lock.as_secs());
            self.audit("lockout", None, Some(ip), Some(&detail)).await;
        }
        AuthError::WrongPairingCode
    }

    /// An admin mints a pairing code: for a new device of `grant.user`, or (without a
    /// user) for a new user.
    pub async fn mint_pairing_code(
        &self,
        caller: &Caller,
        ip: IpAddr,
        grant: &PairingGrant,
    ) -> Result<String, AuthError> {
        require_admin(caller)?;
        check_user(grant.user.as_deref())?;
        if grant.admin && grant.user.is_none() {
            return Err(AuthError::AdminCodeWithoutUser);
        }
        let code = super::new_pairing_code(self.store.as_ref(), grant).await?;
        let detail = format!("for {}", grant.user.as_deref().unwrap_or("a new user"));
        self.audit("pairing_code_created", Some(&caller.user), Some(ip), Some(&detail)).await;
        Ok(code)
    }

    /// Every token (never a secret).
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<TokenRecord>, AuthError> {
        require_admin(caller)?;
        Ok(self.store.list_tokens().await?)
    }

    /// Creates a token for `user`; returns it with its secret (shown once).
    pub async fn create_token(
        &self,
        caller: &Caller,
        user: &str,
        admin: bool,
        label: Option<&str>,
    ) -> Result<(TokenRecord, String), AuthError> {
        require_admin(caller)?;
        check_user(Some(user))?;
        let (record, secret) = tokens::issue(self.store.as_ref(), user, admin, label).await?;
        self.audit("token_created", Some(&record.user), None, Some(&record.id)).await;
        Ok((record, secret))
    }

    /// Revokes a token; its open connections close.
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<TokenRecord, AuthError> {
        require_admin(caller)?;
        let record = self.store.revoke_token(id).await.map_err(|err| match err {
            StoreError::NotFound => AuthError::NoSuchToken,
            other => other.into(),
        })?;
        self.revoked_here(&record.id);
        self.audit("token_revoked", Some(&record.user), None, Some(&record.id)).await;
        Ok(record)
    }

    /// The newest `limit` security events.
    pub async fn audit_log(
        &self,
        caller: &Caller,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, AuthError> {
        require_admin(caller)?;
        Ok(self.store.audit_log(limit).await?)
    }
}
