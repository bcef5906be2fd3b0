//! The web chat: static files from `web/`, embedded in the binary at build time, served
//! with a strict Content-Security-Policy (everything from this origin, nothing inline).

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// One embedded file.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        Asset { path: $path, mime: $mime, body: include_bytes!(concat!("../../web/", $path)) }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("js/app.js", "text/javascript; charset=utf-8"),
    asset!("js/admin.js", "text/javascript; charset=utf-8"),
    asset!("js/api.js", "text/javascript; charset=utf-8"),
    asset!("js/conversation.js", "text/javascript; charset=utf-8"),
    asset!("js/live.js", "text/javascript; charset=utf-8"),
    asset!("js/highlight.js", "text/javascript; charset=utf-8"),
    asset!("js/markdown.js", "text/javascript; charset=utf-8"),
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    headers
        .insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The app's page, for `/` and every `/s/{session}` link.
pub(super) async fn index() -> Response {
    serve(&ASSETS[0])
}

/// `/assets/{*path}`.
pub(super) async fn asset(Path(path): Path<String>) -> Result<Response, ApiError> {
    ASSETS.iter().find(|a| a.path == path).map(serve).ok_or(ApiError::NotFound("file"))
}
