//! Errors, with the HTTP status and Confluent error code each one maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error of the registry. Every variant carries Confluent's error code and
/// message text, so clients written for Confluent's registry can match on them.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 40401
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402
    #[error("Version {0} not found.")]
    VersionNotFound(i64),
    /// 40403 for an id.
    #[error("Schema {0} not found")]
    SchemaIdNotFound(i64),
    /// 40403 for a lookup by schema text.
    #[error("Schema not found")]
    SchemaNotFound,
    /// 40404
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, i64),
    /// 40407
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, i64),
    /// 40408
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    /// 409
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{details}]")]
    Incompatible { subject: String, details: String },
    /// 42201
    #[error("{0}")]
    InvalidSchema(String),
    /// 42202
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    /// 42203
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel,
    /// 42206
    #[error("One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={0},version={1}}}")]
    ReferenceExists(String, i64),
    /// 400: a body that is not JSON or does not have the expected shape.
    #[error("{0}")]
    BadRequest(String),
    /// 422: a JSON body of the wrong shape (a field of the wrong type).
    #[error("{0}")]
    UnprocessableEntity(String),
    /// 404 for a path no endpoint serves.
    #[error("HTTP 404 Not Found")]
    NotFound,
    /// 405
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// 415
    #[error("HTTP 415 Unsupported Media Type")]
    UnsupportedMediaType,
    /// 50001: SQLite failed.
    #[error("Error in the backend data store: {0}")]
    Store(#[from] rusqlite::Error),
    /// 50001: the data directory could not be created.
    #[error("Error in the backend data store: {0}")]
    Io(#[from] std::io::Error),
    /// 50001: a task running a store operation died.
    #[error("Error in the backend data store: {0}")]
    Internal(String),
}

impl RegistryError {
    /// Confluent's `error_code`.
    pub fn error_code(&self) -> u32 {
        use RegistryError::*;
        match self {
            SubjectNotFound(_) => 40401,
            VersionNotFound(_) => 40402,
            SchemaIdNotFound(_) | SchemaNotFound => 40403,
            SubjectSoftDeleted(_) => 40404,
            SubjectNotSoftDeleted(_) => 40405,
            VersionSoftDeleted(..) => 40406,
            VersionNotSoftDeleted(..) => 40407,
            SubjectCompatibilityNotConfigured(_) => 40408,
            Incompatible { .. } => 409,
            InvalidSchema(_) => 42201,
            InvalidVersion(_) => 42202,
            InvalidCompatibilityLevel => 42203,
            ReferenceExists(..) => 42206,
            BadRequest(_) => 400,
            UnprocessableEntity(_) => 422,
            NotFound => 404,
            MethodNotAllowed => 405,
            UnsupportedMediaType => 415,
            Store(_) | Io(_) | Internal(_) => 50001,
        }
    }

    /// The HTTP status: the error code's first three digits, as Confluent does.
    pub fn status(&self) -> StatusCode {
        let code = self.error_code();
        let status = if code >= 10000 { code / 100 } else { code };
        StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!("schema registry: {self}");
        }
        let body = serde_json::json!({
            "error_code": self.error_code(),
            "message": self.to_string(),
        });
        crate::api::json_response(self.status(), &body)
    }
}
