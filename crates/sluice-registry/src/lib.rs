//! Sluice's schema registry: a server for Confluent's Schema Registry REST API
//! (Avro, JSON Schema and Protobuf schemas; subjects, versions, global ids,
//! compatibility levels and checks, soft and permanent deletes), so Confluent
//! serializers and deserializers work against Sluice unchanged. State lives in
//! one SQLite database (WAL mode).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = sluice_registry::Registry::open("sluice-data/schema-registry.db")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! sluice_registry::serve(listener, registry).await?;
//! # Ok(()) }
//! ```
//!
//! [`router`] gives the routes alone, to nest under a prefix of a larger server.

mod api;
mod compat;
mod error;
mod schema;
mod store;

use std::future::Future;

pub use api::{router, CONTENT_TYPE};
pub use compat::{CompatibilityLevel, Incompatibility};
pub use error::RegistryError;
pub use schema::{SchemaReference, SchemaRequest, SchemaType, StoredSchema};
pub use store::{Registry, SubjectVersion, VersionSpec};

/// Serves the registry on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) -> std::io::Result<()> {
    serve_with_shutdown(listener, registry, std::future::pending()).await
}

/// Serves the registry on `listener` until `shutdown` completes, then stops
/// accepting connections and finishes the requests in flight.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}
