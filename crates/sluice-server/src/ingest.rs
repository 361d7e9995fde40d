//! HTTP ingest: `POST /api/v1/streams/{name}/events` takes a JSON object, a
//! JSON array of objects or NDJSON, appends the events to the stream's log,
//! and answers once they are durable (as the log's fsync policy says).
//! Per-stream rate limits answer `429` with `Retry-After`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use serde::Serialize;
use sluice_log::{Record, Stream};
use utoipa::ToSchema;

use crate::error::ApiError;

/// What an ingest request appended.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestReceipt {
    /// Events appended (all of them: a request is taken whole or not at all).
    pub accepted: usize,
    /// Offsets written per partition: `[first, last]`.
    pub offsets: BTreeMap<u32, [u64; 2]>,
}

/// Counters of one stream's ingest.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Requests answered `200`.
    pub requests: AtomicU64,
    /// Events appended.
    pub events: AtomicU64,
    /// Bytes of events appended.
    pub bytes: AtomicU64,
    /// Requests refused by the rate limit.
    pub throttled: AtomicU64,
    /// Requests refused as invalid.
    pub rejected: AtomicU64,
}

/// Rate limits and counters per stream.
pub struct Ingest {
    rate_limit: u64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    counters: Mutex<BTreeMap<String, Arc<IngestCounters>>>,
    next_partition: AtomicU64,
}

impl Ingest {
    /// Ingest limited to `rate_limit` events per second per stream (0: none).
    pub fn new(rate_limit: u64) -> Self {
        Ingest {
            rate_limit,
            buckets: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            next_partition: AtomicU64::new(0),
        }
    }

    /// The counters of `stream`.
    pub fn counters(&self, stream: &str) -> Arc<IngestCounters> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stream.to_string())
            .or_default()
            .clone()
    }

    /// Counters of every stream that took a request.
    pub fn all_counters(&self) -> Vec<(String, Arc<IngestCounters>)> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, counters)| (name.clone(), counters.clone()))
            .collect()
    }

    /// Parses `body` and appends its events to `stream`, partitioned by the
    /// field `key` when given (else one partition per request, round robin).
    pub async fn append(
        &self,
        stream: &Stream,
        body: &[u8],
        key: Option<&str>,
    ) -> Result<IngestReceipt, ApiError> {
        let counters = self.counters(stream.name());
        let events = match parse_events(body) {
            Ok(events) => events,
            Err(error) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        if let Err(error) = self.admit(stream.name(), events.len() as u64) {
            counters.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let round_robin = (self.next_partition.fetch_add(1, Ordering::Relaxed)
            % u64::from(stream.partitions())) as u32;
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        let mut bytes = 0u64;
        for (index, event) in events.iter().enumerate() {
            let key_bytes = match key {
                Some(field) => Some(key_of(event, field, index)?),
                None => None,
            };
            let partition = key_bytes
                .as_deref()
                .map_or(round_robin, |k| stream.partition_for_key(k));
            let value = serde_json::to_vec(event)
                .map_err(|e| ApiError::internal(format!("encoding event {}: {e}", index + 1)))?;
            bytes += value.len() as u64;
            by_partition.entry(partition).or_default().push(Record {
                timestamp_ms: now,
                key: key_bytes,
                value,
            });
        }
        let appends = by_partition
            .into_iter()
            .map(|(partition, records)| async move {
                stream
                    .append(partition, records)
                    .await
                    .map(|range| (partition, [range.start, range.end.saturating_sub(1)]))
            });
        let offsets = futures::future::try_join_all(appends)
            .await
            .map_err(|e| {
                ApiError::internal(format!("appending to stream '{}': {e}", stream.name()))
            })?
            .into_iter()
            .collect();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(IngestReceipt {
            accepted: events.len(),
            offsets,
        })
    }

    /// Takes `events` from the stream's bucket, or says when to retry.
    fn admit(&self, stream: &str, events: u64) -> Result<(), ApiError> {
        if self.rate_limit == 0 {
            return Ok(());
        }
        if events > self.rate_limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                format!(
                    "the request has {events} events, more than stream '{stream}' takes per second \
                     ({}); split it into smaller requests",
                    self.rate_limit
                ),
            ));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(stream.to_string())
            .or_insert_with(|| TokenBucket::full(self.rate_limit));
        bucket.take(events, self.rate_limit).map_err(|wait_seconds| {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "stream '{stream}' takes at most {} events per second; retry in {wait_seconds} s",
                    self.rate_limit
                ),
            );
            error.retry_after = Some(wait_seconds);
            error
        })
    }
}

/// Events per second, with a burst of one second's worth.
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn full(rate: u64) -> Self {
        TokenBucket {
            tokens: rate as f64,
            refilled: Instant::now(),
        }
    }

    /// Takes `n` tokens, or returns the whole seconds until there are enough.
    fn take(&mut self, n: u64, rate: u64) -> Result<(), u64> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        self.refilled = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            Ok(())
        } else {
            let missing = n as f64 - self.tokens;
            Err(((missing / rate as f64).ceil() as u64).max(1))
        }
    }
}

/// A JSON object, a JSON array of objects, or NDJSON (one object a line).
fn parse_events(body: &[u8]) -> Result<Vec<serde_json::Value>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the body is not UTF-8: {e}"))
    })?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body holds no events",
        ));
    }
    let events: Vec<serde_json::Value> = if trimmed.starts_with('[') {
        let events: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the JSON array is invalid: {e}"))
        })?;
        for (index, event) in events.iter().enumerate() {
            if !event.is_object() {
                return Err(ApiError::bad_request(
                    "invalid_event",
                    format!("element {} of the array is not a JSON object", index + 1),
                ));
            }
        }
        events
    } else {
        let mut events = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let event: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("line {}: {e}", index + 1))
            })?;
            if !event.is_object() {
                return Err(ApiError::bad_request(
                    "invalid_event",
                    format!("line {}: not a JSON object", index + 1),
                ));
            }
            events.push(event);
        }
        events
    };
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body holds no events",
        ));
    }
    Ok(events)
}

/// The partitioning key of an event: its field's text (strings without quotes).
fn key_of(event: &serde_json::Value, field: &str, index: usize) -> Result<Vec<u8>, ApiError> {
    match event.get(field) {
        Some(serde_json::Value::String(text)) => Ok(text.as_bytes().to_vec()),
        Some(serde_json::Value::Null) | None => Err(ApiError::bad_request(
            "missing_key",
            format!(
                "event {} has no value for the key field '{field}'",
                index + 1
            ),
        )),
        Some(other) => Ok(other.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_array_and_ndjson_bodies() {
        assert_eq!(parse_events(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(parse_events(br#" [{"a":1},{"a":2}]"#).unwrap().len(), 2);
        assert_eq!(parse_events(b"{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        let error = parse_events(b"{\"a\":1}\n{\"a\":\n").unwrap_err();
        assert!(error.message.starts_with("line 2:"), "{}", error.message);
        let error = parse_events(b"[{\"a\":1}, 3]").unwrap_err();
        assert!(error.message.contains("element 2"), "{}", error.message);
        assert_eq!(parse_events(b"  ").unwrap_err().code, "empty_body");
    }

    #[test]
    fn keys_and_rate_limits() {
        let event = serde_json::json!({"user": "ann", "n": 7});
        assert_eq!(key_of(&event, "user", 0).unwrap(), b"ann");
        assert_eq!(key_of(&event, "n", 0).unwrap(), b"7");
        assert!(key_of(&event, "missing", 4)
            .unwrap_err()
            .message
            .contains("event 5"));
        let ingest = Ingest::new(10);
        assert!(ingest.admit("s", 10).is_ok());
        let error = ingest.admit("s", 5).unwrap_err();
        assert_eq!(
            (error.status, error.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(1))
        );
        assert_eq!(ingest.admit("s", 11).unwrap_err().code, "too_many_events");
        assert!(ingest.admit("other", 10).is_ok());
    }
}
