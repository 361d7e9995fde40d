//! `sluice serve` configuration: defaults, then a TOML file, then `SLUICE_*`
//! environment variables, then command-line overrides. Every key `a.b` is
//! also the variable `SLUICE_A_B` (`ingest.rate_limit` → `SLUICE_INGEST_RATE_LIMIT`)
//! and `--set a.b=value`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_log::{FsyncPolicy, LogConfig, Retention};

use crate::error::ServerError;

/// Everything `sluice serve` can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Where jobs, checkpoints, streams and the metadata database live.
    pub data_dir: PathBuf,
    /// Serve without authentication (only with this explicit setting).
    pub insecure_no_auth: bool,
    /// HTTP ingest.
    pub ingest: IngestConfig,
    /// The embedded stream log.
    pub streams: StreamsConfig,
    /// HTTPS.
    pub tls: TlsConfig,
}

/// HTTPS: serve TLS (rustls) when both files are set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain.
    pub cert: String,
    /// PEM file with the private key.
    pub key: String,
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }
}

/// HTTP ingest limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest request body accepted (bytes); larger ones get `413`.
    pub max_request_bytes: usize,
    /// Events per second each stream accepts (0: unlimited); over it clients
    /// get `429` with `Retry-After`.
    pub rate_limit: u64,
}

/// The embedded log HTTP ingest appends to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// `batch`: every append is fsynced before it is acknowledged;
    /// `interval`: appends are fsynced together every `fsync_interval_ms`
    /// and acknowledged after that sync.
    pub fsync: String,
    /// Group-commit interval of `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Partitions of a stream created by ingest.
    pub partitions: u32,
    /// Segment file size.
    pub segment_bytes: u64,
    /// Bytes kept per partition (0: no limit); older segments are deleted.
    pub retention_bytes: u64,
    /// Age of records kept (0: no limit).
    pub retention_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("sluice-data"),
            insecure_no_auth: false,
            ingest: IngestConfig::default(),
            streams: StreamsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_request_bytes: 16 * 1024 * 1024,
            rate_limit: 0,
        }
    }
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            fsync: "batch".into(),
            fsync_interval_ms: 20,
            partitions: 1,
            segment_bytes: 64 * 1024 * 1024,
            retention_bytes: 0,
            retention_ms: 0,
        }
    }
}

impl ServerConfig {
    /// Loads the configuration: defaults, then `file` (if any), then
    /// `SLUICE_*` variables from `env`, then `overrides` (`key=value`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Self, ServerError> {
        let mut value = toml::Value::try_from(ServerConfig::default())
            .map_err(|e| ServerError::Config(e.to_string()))?;
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|source| ServerError::Io {
                context: format!("reading '{}'", file.display()),
                source,
            })?;
            let from_file: toml::Value = toml::from_str(&text)
                .map_err(|e| ServerError::Config(format!("{}: {e}", file.display())))?;
            merge(&mut value, from_file);
        }
        let keys = leaf_keys(&value, "");
        for (name, text) in env {
            if let Some(key) = keys.iter().find(|key| env_name(key) == name) {
                set_key(&mut value, key, &text, &name)?;
            }
        }
        for (key, text) in overrides {
            if !keys.contains(key) {
                return Err(ServerError::Config(format!(
                    "unknown setting '{key}'; settings: {}",
                    keys.join(", ")
                )));
            }
            set_key(&mut value, key, text, key)?;
        }
        let config: ServerConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| ServerError::Config(e.message().to_string()))?;
        config.log_config()?;
        if config.tls.enabled() && (config.tls.cert.is_empty() || config.tls.key.is_empty()) {
            return Err(ServerError::Config(
                "TLS needs both tls.cert and tls.key (PEM files)".into(),
            ));
        }
        Ok(config)
    }

    /// The stream log's configuration.
    pub fn log_config(&self) -> Result<LogConfig, ServerError> {
        let fsync = match self.streams.fsync.as_str() {
            "batch" => FsyncPolicy::EveryBatch,
            "interval" => {
                FsyncPolicy::Interval(Duration::from_millis(self.streams.fsync_interval_ms.max(1)))
            }
            other => {
                return Err(ServerError::Config(format!(
                    "streams.fsync: '{other}' is not one of 'batch', 'interval'"
                )))
            }
        };
        if self.streams.partitions == 0 {
            return Err(ServerError::Config(
                "streams.partitions must be at least 1".into(),
            ));
        }
        Ok(LogConfig {
            fsync,
            segment_bytes: self.streams.segment_bytes.max(4096),
            retention: Retention {
                max_bytes: (self.streams.retention_bytes > 0)
                    .then_some(self.streams.retention_bytes),
                max_age: (self.streams.retention_ms > 0)
                    .then(|| Duration::from_millis(self.streams.retention_ms)),
            },
            default_partitions: self.streams.partitions,
        })
    }

    /// Whether the listen address is beyond loopback.
    pub fn listens_beyond_loopback(&self) -> bool {
        let host = self
            .listen
            .rsplit_once(':')
            .map_or(self.listen.as_str(), |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !(host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
    }
}

/// The environment variable of a dotted key.
fn env_name(key: &str) -> String {
    format!("SLUICE_{}", key.replace('.', "_").to_uppercase())
}

/// Every dotted key of a table, depth first.
fn leaf_keys(value: &toml::Value, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    if let toml::Value::Table(table) = value {
        for (name, child) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match child {
                toml::Value::Table(_) => keys.extend(leaf_keys(child, &key)),
                _ => keys.push(key),
            }
        }
    }
    keys
}

/// Sets `key` from text, typed like its current value.
fn set_key(root: &mut toml::Value, key: &str, text: &str, source: &str) -> Result<(), ServerError> {
    let mut slot = root;
    for part in key.split('.') {
        slot = slot
            .get_mut(part)
            .ok_or_else(|| ServerError::Config(format!("unknown setting '{key}'")))?;
    }
    let invalid = |kind: &str| ServerError::Config(format!("{source}: '{text}' is not {kind}"));
    *slot = match slot {
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(text.parse().map_err(|_| invalid("true or false"))?)
        }
        toml::Value::Integer(_) => {
            toml::Value::Integer(text.parse().map_err(|_| invalid("an integer"))?)
        }
        _ => toml::Value::String(text.to_string()),
    };
    Ok(())
}

/// Overlays `other` onto `base`, table by table.
fn merge(base: &mut toml::Value, other: toml::Value) {
    match (base, other) {
        (toml::Value::Table(base), toml::Value::Table(other)) => {
            for (key, value) in other {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_table() && value.is_table() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, other) => *base = other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\n[ingest]\nrate_limit = 5\n[streams]\nfsync = \"interval\"\n",
        )
        .unwrap();
        let env = vec![
            ("SLUICE_INGEST_RATE_LIMIT".to_string(), "7".to_string()),
            ("SLUICE_LOG".to_string(), "debug".to_string()),
        ];
        let overrides = vec![("data_dir".to_string(), "/srv/sluice".to_string())];
        let config = ServerConfig::load(Some(&file), env, &overrides).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.ingest.rate_limit, 7);
        assert_eq!(config.data_dir, PathBuf::from("/srv/sluice"));
        assert!(matches!(
            config.log_config().unwrap().fsync,
            FsyncPolicy::Interval(_)
        ));
        assert!(config.listens_beyond_loopback());
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = ServerConfig::load(
            None,
            vec![("SLUICE_INGEST_RATE_LIMIT".to_string(), "fast".to_string())],
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("SLUICE_INGEST_RATE_LIMIT"),
            "{error}"
        );
        let error =
            ServerConfig::load(None, vec![], &[("ingest.speed".into(), "1".into())]).unwrap_err();
        assert!(error.to_string().contains("ingest.rate_limit"), "{error}");
        let error = ServerConfig::load(None, vec![], &[("streams.fsync".into(), "never".into())])
            .unwrap_err();
        assert!(error.to_string().contains("'never'"), "{error}");
        assert!(!ServerConfig::default().listens_beyond_loopback());
    }
}
