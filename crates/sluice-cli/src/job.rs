//! `sluice savepoint` / `sluice stop`, and what `sluice run` logs about
//! checkpoints. Running itself is `sluice_runtime::supervisor`.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use sluice_runtime::checkpoint::human_bytes;
use sluice_runtime::supervisor::take_savepoint;
use sluice_runtime::JobSummary;
use tracing::info;

/// Asks a running job for a savepoint (and to stop, with `stop`).
pub async fn savepoint(data_dir: &Path, target: &str, stop: bool) -> Result<()> {
    let taken = take_savepoint(data_dir, target, stop, Duration::from_secs(300)).await?;
    println!(
        "savepoint {} written to {}",
        taken.checkpoint, taken.location
    );
    Ok(())
}

/// Logs what checkpointing did.
pub fn report_checkpoints(summary: &JobSummary) {
    if let Some(checkpoint) = summary.resumed_from {
        info!("resumed from checkpoint {checkpoint}");
    }
    let Some(stats) = &summary.checkpoints else {
        return;
    };
    let per_operator: Vec<String> = stats
        .last_bytes_by_operator
        .iter()
        .map(|(operator, bytes)| format!("{operator} {}", human_bytes(*bytes)))
        .collect();
    info!(
        "checkpoints: {} completed, {} abandoned; last {} of state ({}), slowest {:.1?}",
        stats.completed,
        stats.abandoned,
        human_bytes(stats.last_bytes),
        if per_operator.is_empty() {
            "no operator state".to_string()
        } else {
            per_operator.join(", ")
        },
        stats.max_duration
    );
}
