//! The web dashboard: hand-written HTML, CSS and JavaScript compiled into
//! the binary (no Node at build time) and served at `/` and `/assets/...`.
//! The files need no token; the API calls the page makes send one, which
//! the user enters on its login screen.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// One embedded file.
struct Asset {
    /// Path under `/assets/`.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("util.js", JS),
    asset!("charts.js", JS),
    asset!("graph.js", JS),
    asset!("sql.js", JS),
];

/// Scripts, styles and API calls from this server only; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: `/` and `/assets/{path}`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index() -> Response {
    serve("index.html").unwrap_or_else(|error| error.into_response())
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path).unwrap_or_else(|error| error.into_response())
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

fn serve(path: &str) -> Result<Response, ApiError> {
    let asset = find(path)
        .ok_or_else(|| ApiError::not_found("not_found", format!("no dashboard file '{path}'")))?;
    let headers: [(HeaderName, HeaderValue); 6] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        // Small files: revalidate each time, so an upgrade shows at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    Ok((headers, asset.body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_file_is_embedded() {
        let text = |path: &str| {
            std::str::from_utf8(find(path).expect("embedded").body)
                .expect("utf8")
                .to_string()
        };
        let mut referenced = Vec::new();
        for asset in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".html") || a.path.ends_with(".js"))
        {
            let body = text(asset.path);
            for piece in body.split(['"', '\'']) {
                if let Some(path) = piece.strip_prefix("/assets/") {
                    referenced.push(path.to_string());
                } else if let Some(path) = piece.strip_prefix("./") {
                    if path.ends_with(".js") {
                        referenced.push(path.to_string());
                    }
                }
            }
        }
        assert!(referenced.len() >= 3, "{referenced:?}");
        for path in referenced {
            assert!(
                find(&path).is_some(),
                "'{path}' is referenced but not embedded"
            );
        }
        assert!(find("../Cargo.toml").is_none());
    }
}
