//! Scale-out: several `sluice` processes share one job over Kafka, the way
//! Kafka Streams applications do; no cluster manager of our own.
//!
//! - **Tasks.** A job divides into one task per partition of its source
//!   topic (`layout`). Task `t` runs the whole plan over partition `t` of
//!   every source, at parallelism 1, as its own checkpointed run (`task`).
//! - **Repartition topics.** Every input of a keyed operator whose rows must
//!   move between tasks is cut (`split`): upstream, task `t` writes rows to
//!   the partition their key hashes to in `<job>-<operator>-repartition`,
//!   exactly once (held until the checkpoint completes, then one Kafka
//!   transaction); downstream, task `t` reads partition `t` of that topic,
//!   `read_committed`, with the watermark each upstream task wrote.
//! - **Assignment.** A consumer group (`membership`) on an internal topic
//!   `<job>-tasks` with one partition per task assigns tasks to processes
//!   (cooperative-sticky); the group detects dead processes.
//! - **State and fencing.** Each task checkpoints to
//!   `<checkpoint dir>/task-<t>`. A new owner claims the next ownership
//!   epoch there (an atomic create), initialises the task's transactional
//!   producers (fencing the previous owner's), and only then restores the
//!   latest checkpoint; checkpoint ids carry the epoch, and every manifest
//!   write first checks the epoch is still the newest.

mod layout;
mod membership;
mod run;
mod split;
mod status;
mod task;

pub use layout::{RepartitionCut, TaskLayout};
pub use run::{run_scale_out, ScaleOutJob};
pub use split::task_plan;
pub use status::{print_status, TaskStatus};
