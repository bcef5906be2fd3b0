//! `GET /api/usage`: tokens and cost summed by user, model or day over a period. An admin
//! sees everyone's (or one user's with `user=`); anyone else sees their own, with their
//! monthly budget.

use axum::Json as JsonResponse;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Query;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::conversation::Usage;
use crate::store::{UsageGroup, UsageQuery};

/// The query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageParams {
    /// A date (`YYYY-MM-DD`, UTC) or an RFC 3339 instant; default: the month's start.
    from: Option<String>,
    /// Exclusive; default: now.
    to: Option<String>,
    /// `user`, `model` or `day` (default `model`).
    group_by: Option<String>,
    /// Only this user's usage (an admin's filter; anyone else may name only themselves).
    user: Option<String>,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::InvalidParam { param: param.into(), message: message.into() }
}

fn instant(param: &str, text: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => crate::clock::parse(text).ok_or_else(|| {
            invalid(param, "use a date (YYYY-MM-DD) or an RFC 3339 time (2026-11-01T00:00:00Z)")
        }),
    }
}

#[utoipa::path(get, path = "/api/usage", tag = "usage", params(UsageParams), responses((status = 200, description = "Tokens and cost summed by user, model or day, with the budget of one user's report", body = Value)))]
#[tracing::instrument(skip_all)]
pub(super) async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<UsageParams>,
) -> Result<JsonResponse<Value>, ApiError> {
    let now = crate::clock::now_ms();
    let from = instant("from", params.from.as_deref(), crate::clock::month_of(now).0)?;
    let to = instant("to", params.to.as_deref(), now + 1)?;
    if to <= from {
        return Err(invalid("to", "`to` must be after `from`"));
    }
    let (group_by, label) = match params.group_by.as_deref().unwrap_or("model") {
        "user" => (UsageGroup::User, "user"),
        "model" => (UsageGroup::Model, "model"),
        "day" => (UsageGroup::Day, "day"),
        _ => return Err(invalid("group_by", "group_by is one of user, model, day")),
    };
    let user = match params.user {
        Some(user) if caller.admin || user == caller.user => Some(user),
        Some(_) => return Err(ApiError::Forbidden("only an admin sees other users' usage")),
        None if caller.admin => None,
        None => Some(caller.user.clone()),
    };
    let query = UsageQuery { from, to, user, group_by };
    let lines = state.runtime.usage_report(&query).await?;
    let mut total = Usage::default();
    let items: Vec<Value> = lines
        .iter()
        .map(|line| {
            total.add(line.usage);
            let mut item = usage_json(&line.usage);
            item["turns"] = json!(line.turns);
            item[label] = json!(line.key);
            item
        })
        .collect();
    // One user's report shows their budget too.
    let budget = match &query.user {
        Some(user) => state.runtime.budget(user).await?,
        None => None,
    };
    Ok(JsonResponse(json!({
        "from": crate::clock::rfc3339(from),
        "to": crate::clock::rfc3339(to),
        "group_by": label,
        "user": query.user,
        "items": items,
        // No turn count: a turn that fell back to another model is a line of each.
        "total": usage_json(&total),
        "budget": budget,
    })))
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "total_tokens": usage.total_tokens,
        "cost": usage.cost,
    })
}
