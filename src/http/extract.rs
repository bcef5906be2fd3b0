//! Extractors whose rejections are [`ApiError`]s, so a bad body, query or path gets the
//! same JSON error shape as everything else.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use super::ApiError;

/// `axum::Json` with JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The authenticated caller of a request (see [`crate::auth::Auth::authenticate`]).
impl FromRequestParts<super::AppState> for crate::auth::Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(state.auth.authenticate(parts).await?)
    }
}
