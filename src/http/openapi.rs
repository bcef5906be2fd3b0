//! `GET /api/openapi.json`: the OpenAPI document of every REST route, generated (utoipa)
//! from the handlers' `#[utoipa::path]` annotations and request types, with the response
//! bodies below. Every operation also answers the JSON error body ([`ErrorBody`]) for any
//! other status, and needs a bearer token unless it says otherwise. CI fuzzes a running
//! server against this document (schemathesis), so it is checked, not only written.

use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{approvals, chat, health, identity, sessions, turns, usage, workspace};
use crate::conversation::Usage;

/// `GET /api/openapi.json` (public: it describes the API, and holds nothing secret). Built
/// once: it is the same for the life of the process.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", security(()), responses((status = 200, description = "This document", body = Value)))]
pub(super) async fn document() -> Json<&'static Document> {
    static DOCUMENT: std::sync::OnceLock<Document> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(openapi))
}

/// The whole document: the REST API here, the OpenAI APIs and AG-UI.
pub fn openapi() -> Document {
    let mut doc = RestApi::openapi();
    doc.merge(crate::openai::OpenAiApi::openapi());
    doc.merge(crate::agui::AgUiApi::openapi());
    doc.merge(crate::sse::SseApi::openapi());
    doc.merge(crate::ws::WsApi::openapi());
    Errors.modify(&mut doc);
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley",
        description = "A self-hosted gateway for AI agents: durable, resumable sessions over \
                       REST, WebSocket, SSE, the OpenAI APIs and AG-UI."
    ),
    paths(
        document,
        health::health,
        health::ready,
        health::status,
        health::config,
        super::metrics::metrics,
        usage::usage,
        identity::pair,
        identity::create_pairing_code,
        identity::list_tokens,
        identity::create_token,
        identity::revoke_token,
        identity::audit_log,
        chat::chat,
        chat::ticket,
        sessions::list,
        sessions::detail,
        sessions::update,
        sessions::delete,
        sessions::post_message,
        sessions::abort,
        sessions::tool_calls,
        super::export::export,
        super::search::search,
        sessions::notify,
        sessions::prune,
        approvals::list,
        approvals::decide,
        turns::list,
        turns::kill,
        workspace::tree,
        workspace::file,
        workspace::upload,
    ),
    components(schemas(ErrorBody, Usage)),
    modifiers(&Security)
)]
struct RestApi;

/// Every error: a human message and a stable code, with fields that help where they
/// apply (`limit`, `size`, `retry_after`, `param`, `spent`, ...).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in plain words (5xx bodies never carry internals).
    pub error: String,
    /// The stable machine-readable code (`NOT_FOUND`, `RATE_LIMITED`, ...).
    pub code: String,
    /// The request's id, also in the `X-Request-Id` header and the server log.
    pub request_id: Option<String>,
}

/// Bearer tokens, required by every operation that does not say otherwise.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// Adds the error body as every operation's `default` response: whatever status it
/// answers besides the documented ones, the body is an [`ErrorBody`] (on `/v1`, OpenAI's
/// error object).
struct Errors;

impl Modify for Errors {
    fn modify(&self, doc: &mut Document) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let schema = if path.starts_with("/v1/") { "OpenAiErrorBody" } else { "ErrorBody" };
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                add_default(operation, schema);
                describe_responses(operation);
            }
        }
    }
}

/// Every response of the document says what it is: OpenAPI requires a description, and
/// client generators refuse a document without one.
fn describe_responses(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && response.description.trim().is_empty()
        {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                .and_then(|code| code.canonical_reason());
            response.description = reason.unwrap_or("The answer").to_owned();
        }
    }
}

fn add_default(operation: &mut Operation, schema: &str) {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
    let response = ResponseBuilder::new()
        .description("An error: the JSON body says what and why, with a stable code")
        .content("application/json", content)
        .build();
    operation.responses.responses.entry("default".into()).or_insert(RefOr::T(response));
}

/// A session as listed.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionView {
    id: String,
    name: Option<String>,
    /// `idle` or `running`.
    state: String,
    message_count: i64,
    created_at: String,
    updated_at: String,
    /// Listed first, and never pruned.
    pinned: bool,
    /// Listed apart (`?archived=true`).
    archived: bool,
    /// The last event number of the session (resume after it).
    last_seq: u64,
    running_turn: Option<RunningTurnView>,
    /// Turns waiting behind the running one.
    queued: u64,
    /// Their ids, in order (null for a session another node of a cluster runs).
    queued_turns: Option<Vec<String>>,
    /// The owner (admins listing `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

/// The turn a session is running.
#[derive(Serialize, ToSchema)]
pub(super) struct RunningTurnView {
    turn_id: String,
    started_at: String,
}

/// A page of sessions, newest activity first.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionPage {
    items: Vec<SessionView>,
    total: u64,
    page: u64,
    limit: u64,
}

/// A session with a page of its messages (oldest first).
#[derive(Serialize, ToSchema)]
pub(super) struct SessionDetail {
    #[serde(flatten)]
    session: SessionView,
    /// Messages of one branch: `seq`, `role`, `content`, `status`, `tool_calls`,
    /// `turn_id`, ...; a user message has `parent` (the `seq` of the user message of the
    /// turn it follows, 0 for none) and, when an edit or a regenerated answer put others
    /// beside it, `siblings` (their `seq`s, its own included).
    messages: Vec<Value>,
    has_more: bool,
    /// Pass as `before_seq` for the page before this one.
    next_before_seq: Option<i64>,
}

/// The answer to `POST /api/chat`.
#[derive(Serialize, ToSchema)]
pub(super) struct ChatAnswer {
    id: String,
    /// The message as received.
    echo: String,
    reply: String,
    session_id: String,
    project_id: Option<String>,
    turn_id: String,
    /// `done`, `cancelled`, `interrupted`, or `queued` (the node stopped first).
    status: String,
    cancelled: bool,
    duration_ms: u64,
    tool_calls: Vec<Value>,
    usage: Usage,
    /// The model that served the turn.
    model: Option<String>,
}

/// A queued turn.
#[derive(Serialize, ToSchema)]
pub(super) struct TurnAccepted {
    turn_id: String,
    session_id: String,
}

/// A one-time ticket for a WebSocket or SSE URL (`?ticket=`).
#[derive(Serialize, ToSchema)]
pub(super) struct Ticket {
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

/// A list.
#[derive(Serialize, ToSchema)]
pub(super) struct Items {
    items: Vec<Value>,
}

/// A token as listed (its secret only once, when created).
#[derive(Serialize, ToSchema)]
pub(super) struct TokenView {
    id: String,
    user: String,
    label: Option<String>,
    admin: bool,
    created_at: String,
    revoked_at: Option<String>,
    /// The secret, shown once (creation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// A token traded for a pairing code.
#[derive(Serialize, ToSchema)]
pub(super) struct Paired {
    token: String,
    token_id: String,
    user: String,
    admin: bool,
}

/// A new pairing code.
#[derive(Serialize, ToSchema)]
pub(super) struct PairingCode {
    code: String,
    user: Option<String>,
    admin: bool,
    expires_in: u64,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub(super) struct Liveness {
    status: String,
    version: String,
}

/// `GET /health/ready` (also the 503 body, with `error` and `code`).
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// `ready`, `degraded` or `unavailable`.
    status: String,
    node_id: String,
    components: Value,
}
