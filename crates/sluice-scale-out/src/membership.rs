//! Membership in the job's consumer group: the group protocol assigns the
//! partitions of the internal `<job>-tasks` topic (one per task) to the
//! processes running the job, with the cooperative-sticky assignor, and
//! takes the tasks of a process that stops heartbeating away.
//!
//! The consumer runs on its own thread. Revocations are handed to the job
//! and wait until it has stopped the tasks, so a task's next owner starts
//! only after its previous one stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use sluice_core::{Result, SluiceError};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::layout::TaskLayout;

/// Longest a revocation waits for the job to stop the revoked tasks.
const REVOKE_WAIT: Duration = Duration::from_secs(120);

/// A change of this process's tasks.
#[derive(Debug)]
pub(crate) enum MembershipEvent {
    /// These tasks are this process's now.
    Assigned(Vec<usize>),
    /// These tasks must stop. Answer on `done` once they stopped.
    Revoked {
        tasks: Vec<usize>,
        done: std::sync::mpsc::SyncSender<()>,
    },
}

struct MembershipContext {
    events: mpsc::UnboundedSender<MembershipEvent>,
}

fn tasks_of(list: &TopicPartitionList) -> Vec<usize> {
    let mut tasks: Vec<usize> = list
        .elements()
        .iter()
        .filter_map(|element| usize::try_from(element.partition()).ok())
        .collect();
    tasks.sort_unstable();
    tasks
}

impl ClientContext for MembershipContext {}

impl ConsumerContext for MembershipContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let tasks = tasks_of(list);
            if tasks.is_empty() {
                return;
            }
            // Lost: the group gave them to others already (this process
            // missed its session timeout).
            let lost = consumer.assignment_lost();
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            info!(?tasks, lost, "tasks revoked");
            if self
                .events
                .send(MembershipEvent::Revoked { tasks, done })
                .is_ok()
                && wait.recv_timeout(REVOKE_WAIT).is_err()
            {
                warn!("revoked tasks did not stop within {REVOKE_WAIT:?}");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let tasks = tasks_of(list);
                if !tasks.is_empty() {
                    info!(?tasks, "tasks assigned");
                    let _ = self.events.send(MembershipEvent::Assigned(tasks));
                }
            }
            Rebalance::Error(error) => warn!("consumer group rebalance failed: {error}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// This process's membership; leaves the group when dropped or on [`Membership::leave`].
pub(crate) struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Membership {
    /// Joins the job's group as `member`; task changes arrive on `events`.
    pub(crate) fn join(
        layout: &TaskLayout,
        member: &str,
        events: mpsc::UnboundedSender<MembershipEvent>,
    ) -> Result<Self> {
        let mut config = ClientConfig::new();
        for (key, value) in &layout.group_properties {
            config.set(key, value);
        }
        let session_ms = layout.session_timeout_ms.max(1000);
        config
            .set("group.id", &layout.group_id)
            .set("client.id", member)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 3).clamp(100, 3000).to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest");
        let consumer: BaseConsumer<MembershipContext> = config
            .create_with_context(MembershipContext { events })
            .map_err(|e| {
                SluiceError::Connector(format!(
                    "scale-out: joining consumer group '{}': {e}",
                    layout.group_id
                ))
            })?;
        consumer.subscribe(&[&layout.tasks_topic]).map_err(|e| {
            SluiceError::Connector(format!(
                "scale-out: subscribing to '{}': {e}",
                layout.tasks_topic
            ))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-membership".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    // The tasks topic holds no records: polling serves the
                    // group protocol's callbacks.
                    if let Some(Err(error)) = consumer.poll(Duration::from_millis(200)) {
                        warn!("consumer group: {error}");
                    }
                }
                // Leaving revokes every task (answered by the job) and tells
                // the group at once, instead of after the session timeout.
                consumer.unsubscribe();
                for _ in 0..10 {
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                drop(consumer);
            })
            .map_err(|e| SluiceError::Runtime(format!("scale-out: membership thread: {e}")))?;
        Ok(Membership {
            stop,
            thread: Some(thread),
        })
    }

    /// Starts leaving the group; returns at once (the thread answers
    /// revocations until it is gone; see [`Membership::is_gone`]).
    pub(crate) fn leave(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The consumer has left the group.
    pub(crate) fn is_gone(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
