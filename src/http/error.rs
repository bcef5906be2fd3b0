//! The one error type at the HTTP edge: every refusal becomes `{"error", "code", ...}` with
//! the right status. 5xx details go to the log, never to the client.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::AuthError;
use crate::runtime::{RuntimeError, TurnError};
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// A request field that is wrong (named in the body's `param`).
    #[error("{message}")]
    InvalidParam { param: String, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the request body is too large")]
    BodyTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{message}")]
    RateLimited { message: &'static str, retry_after: Duration },
    #[error("the server has too many open connections")]
    TooManyConnections,
    /// A plain HTTP request on a WebSocket route.
    #[error("this endpoint needs a WebSocket upgrade: {message}")]
    Upgrade { status: StatusCode, message: String },
    /// A turn that ended in an error, answered to a caller that waited for it.
    #[error("{message}")]
    Turn { error: TurnError, message: String, turn_id: String, session_id: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Whether the store could not be reached: 503 `STORE_UNAVAILABLE`, whatever layer
    /// the failure came through.
    fn store_unavailable(&self) -> bool {
        matches!(
            self,
            ApiError::Store(StoreError::Unavailable(_))
                | ApiError::Runtime(RuntimeError::Store(StoreError::Unavailable(_)))
                | ApiError::Auth(AuthError::Store(StoreError::Unavailable(_)))
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        if self.store_unavailable() {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        match self {
            ApiError::Runtime(err) => match err {
                RuntimeError::InvalidSessionId | RuntimeError::UnknownMessage { .. } => {
                    StatusCode::BAD_REQUEST
                }
                RuntimeError::NotFound | RuntimeError::ApprovalNotFound => StatusCode::NOT_FOUND,
                RuntimeError::EmptyContent => StatusCode::UNPROCESSABLE_ENTITY,
                RuntimeError::ContentTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                RuntimeError::QueueFull { .. } | RuntimeError::RateLimited { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                RuntimeError::ShuttingDown | RuntimeError::SessionBusy => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                RuntimeError::UnknownModel(_) => StatusCode::BAD_REQUEST,
                RuntimeError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
                RuntimeError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Auth(err) => match err {
                AuthError::Missing | AuthError::Invalid | AuthError::WrongPairingCode => {
                    StatusCode::UNAUTHORIZED
                }
                AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                AuthError::CrossOrigin | AuthError::AdminOnly => StatusCode::FORBIDDEN,
                AuthError::InvalidUser
                | AuthError::PairingForAnotherUser
                | AuthError::AdminCodeWithoutUser => StatusCode::UNPROCESSABLE_ENTITY,
                AuthError::UserExists(_) => StatusCode::CONFLICT,
                AuthError::NoSuchToken => StatusCode::NOT_FOUND,
                AuthError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Store(StoreError::NotFound) => StatusCode::NOT_FOUND,
            ApiError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadRequest { .. } | ApiError::InvalidParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upgrade { status, .. } => *status,
            ApiError::Turn { error, .. } => match error {
                TurnError::ProviderNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
                TurnError::ProviderError => StatusCode::BAD_GATEWAY,
                TurnError::AgentError => StatusCode::INTERNAL_SERVER_ERROR,
                TurnError::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            },
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        if self.store_unavailable() {
            return "STORE_UNAVAILABLE";
        }
        match self {
            ApiError::Runtime(err) => match err {
                RuntimeError::InvalidSessionId => "INVALID_SESSION_ID",
                RuntimeError::UnknownMessage { .. } => "UNKNOWN_MESSAGE",
                RuntimeError::NotFound | RuntimeError::ApprovalNotFound => "NOT_FOUND",
                RuntimeError::EmptyContent => "EMPTY_CONTENT",
                RuntimeError::ContentTooLarge { .. } => "MESSAGE_TOO_LARGE",
                RuntimeError::QueueFull { .. } => "SESSION_QUEUE_FULL",
                RuntimeError::RateLimited { .. } => "RATE_LIMITED",
                RuntimeError::ShuttingDown => "SHUTTING_DOWN",
                RuntimeError::SessionBusy => "SESSION_BUSY",
                RuntimeError::UnknownModel(_) => "UNKNOWN_MODEL",
                RuntimeError::BudgetExceeded { .. } => "BUDGET_EXCEEDED",
                RuntimeError::Store(_) => "INTERNAL_ERROR",
            },
            ApiError::Auth(err) => match err {
                AuthError::Missing | AuthError::Invalid | AuthError::WrongPairingCode => {
                    "AUTH_ERROR"
                }
                AuthError::RateLimited { .. } => "RATE_LIMITED",
                AuthError::CrossOrigin | AuthError::AdminOnly => "FORBIDDEN",
                AuthError::InvalidUser | AuthError::PairingForAnotherUser => "INVALID_USER",
                AuthError::AdminCodeWithoutUser => "INVALID_REQUEST",
                AuthError::UserExists(_) => "USER_EXISTS",
                AuthError::NoSuchToken => "NOT_FOUND",
                AuthError::Store(_) => "INTERNAL_ERROR",
            },
            ApiError::Store(StoreError::NotFound) | ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Store(StoreError::Conflict(_)) => "CONFLICT",
            ApiError::Store(_) | ApiError::Internal(_) => "INTERNAL_ERROR",
            ApiError::BadRequest { code, .. } | ApiError::Unprocessable { code, .. } => code,
            ApiError::InvalidParam { .. } => "INVALID_REQUEST",
            ApiError::Turn { error, .. } => error.code(),
            ApiError::BodyTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ApiError::Upgrade { .. } => "UPGRADE_REQUIRED",
        }
    }

    /// Fields that help the client act on the error.
    fn extra(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        match self {
            ApiError::Runtime(RuntimeError::ContentTooLarge { size, limit }) => {
                extra.insert("size".into(), json!(size));
                extra.insert("limit".into(), json!(limit));
            }
            ApiError::Runtime(RuntimeError::QueueFull { limit }) => {
                extra.insert("limit".into(), json!(limit));
            }
            ApiError::Runtime(RuntimeError::UnknownModel(_)) => {
                extra.insert("param".into(), json!("model"));
            }
            ApiError::Runtime(RuntimeError::BudgetExceeded { spent, budget, .. }) => {
                extra.insert("spent".into(), json!(spent));
                extra.insert("limit".into(), json!(budget));
            }
            ApiError::InvalidParam { param, .. } => {
                extra.insert("param".into(), json!(param));
            }
            ApiError::Turn { turn_id, session_id, .. } => {
                extra.insert("turn_id".into(), json!(turn_id));
                extra.insert("session_id".into(), json!(session_id));
            }
            _ => {}
        }
        if let Some(secs) = self.retry_after() {
            extra.insert("retry_after".into(), json!(secs));
        }
        extra
    }

    /// Seconds after which a refused request may be retried.
    fn retry_after(&self) -> Option<u64> {
        if self.store_unavailable() {
            return Some(2);
        }
        match self {
            ApiError::Runtime(RuntimeError::QueueFull { .. } | RuntimeError::SessionBusy) => {
                Some(1)
            }
            ApiError::RateLimited { retry_after, .. }
            | ApiError::Auth(AuthError::RateLimited { retry_after, .. })
            | ApiError::Runtime(
                RuntimeError::RateLimited { retry_after, .. }
                | RuntimeError::BudgetExceeded { retry_after, .. },
            ) => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            _ => None,
        }
    }

    /// Whether the message may reveal internals, so only the log gets it.
    fn is_internal(&self) -> bool {
        matches!(
            self,
            ApiError::Internal(_)
                | ApiError::Store(_)
                | ApiError::Auth(AuthError::Store(_))
                | ApiError::Runtime(RuntimeError::Store(_))
        )
    }
}

/// What an error response said, kept on the response for adapters that answer errors in
/// their protocol's own shape.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: &'static str,
    /// The client-safe message.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if self.store_unavailable() {
            tracing::warn!(error = %self, "the store is unavailable");
            "the store is unavailable; try again shortly".to_owned()
        } else if self.is_internal() && status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "internal error; see the server log".to_owned()
        } else {
            self.to_string()
        };
        let mut body = self.extra();
        let param = body.get("param").and_then(Value::as_str).map(str::to_owned);
        body.insert("error".into(), json!(message));
        body.insert("code".into(), json!(self.code()));
        if let Some(id) = crate::request_id::current() {
            body.insert("request_id".into(), json!(&*id));
        }
        let info = ErrorInfo { code: self.code(), message, param };
        let mut response = (status, axum::Json(Value::Object(body))).into_response();
        // For adapters whose protocol has its own error shape (`/v1`).
        response.extensions_mut().insert(info);
        if let Some(secs) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                ApiError::Unprocessable { code: "INVALID_REQUEST", message: rejection.body_text() }
            }
            _ => ApiError::BadRequest { code: "INVALID_JSON", message: rejection.body_text() },
        }
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(rejection: WebSocketUpgradeRejection) -> Self {
        ApiError::Upgrade { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest { code: "INVALID_QUERY", message: rejection.body_text() }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest { code: "INVALID_PATH", message: rejection.body_text() }
    }
}
