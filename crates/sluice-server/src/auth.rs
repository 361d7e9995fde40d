//! Bearer API tokens: random tokens shown once, stored as SHA-256 hashes;
//! every API route but the health check requires one unless the server runs
//! with `insecure_no_auth`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ServerError};
use crate::store::MetadataStore;
use crate::AppState;

/// Prefix of every Sluice API token.
pub const TOKEN_PREFIX: &str = "sluice_";

/// A new random token (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// The hash a token is stored as.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// On first start, stores the admin token: `SLUICE_ADMIN_TOKEN` when given,
/// else a new one, which is returned so it can be printed once.
pub fn bootstrap_admin(
    store: &MetadataStore,
    from_env: Option<String>,
) -> Result<Option<String>, ServerError> {
    if let Some(token) = from_env.filter(|t| !t.is_empty()) {
        store.add_token("admin", &hash_token(&token))?;
        return Ok(None);
    }
    if store.token_count()? > 0 {
        return Ok(None);
    }
    let token = generate_token();
    store.add_token("admin", &hash_token(&token))?;
    Ok(Some(token))
}

/// Middleware: rejects requests without a valid `Authorization: Bearer` token
/// (`401` with `WWW-Authenticate`).
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config.insecure_no_auth {
        return Ok(next.run(request).await);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| query_token(request.uri().query()));
    let Some(token) = presented else {
        return Err(unauthorized(
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    };
    match state.store.token_name(&hash_token(token)) {
        Ok(Some(_)) => Ok(next.run(request).await),
        Ok(None) => Err(unauthorized("invalid token")),
        Err(error) => Err(ApiError::internal(error.to_string())),
    }
}

/// `?access_token=` for clients that cannot set headers (browser
/// `EventSource` for the live tail).
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Adds `WWW-Authenticate` to `401` answers.
pub async fn challenge(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"sluice\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), a);
        assert_eq!(query_token(Some("x=1&access_token=abc")), Some("abc"));
    }

    #[test]
    fn bootstrap_prints_a_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("db")).unwrap();
        let token = bootstrap_admin(&store, None).unwrap().unwrap();
        assert!(bootstrap_admin(&store, None).unwrap().is_none());
        assert!(store.token_name(&hash_token(&token)).unwrap().is_some());
        bootstrap_admin(&store, Some("given".into())).unwrap();
        assert!(store.token_name(&hash_token("given")).unwrap().is_some());
    }
}
