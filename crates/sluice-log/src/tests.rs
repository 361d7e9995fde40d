//! Tests on real files in temporary directories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::stream::partition_for_key;
use crate::{FsyncPolicy, LogConfig, LogError, Record, Retention, StreamLog};

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        ..LogConfig::default()
    }
}

fn record(i: u64) -> Record {
    Record::new(1_000 + i as i64, format!("value-{i}")).with_key(format!("key-{i}"))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn append_and_read_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), config(200)).unwrap();
    let stream = log.create_stream("clicks", 2).unwrap();
    for batch in 0..3u64 {
        let records = (batch * 10..batch * 10 + 10).map(record).collect();
        let range = stream.append(1, records).await.unwrap();
        assert_eq!(range, batch * 10..batch * 10 + 10);
    }
    assert!(segment_files(&dir.path().join("clicks/1")).len() > 3);
    let all = stream.read(1, 0, 1000).unwrap();
    assert_eq!(all.len(), 30);
    for (i, stored) in all.iter().enumerate() {
        assert_eq!(stored.offset, i as u64);
        assert_eq!(stored.record, record(i as u64));
    }
    let middle = stream.read(1, 17, 5).unwrap();
    assert_eq!(
        middle.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![17, 18, 19, 20, 21]
    );
    assert!(stream.read(1, 30, 10).unwrap().is_empty());
    assert_eq!(stream.end_offset(0), 0);
    assert!(matches!(
        stream.read(2, 0, 1),
        Err(LogError::NoSuchPartition { partition: 2, .. })
    ));
    let info = stream.info();
    assert_eq!(info.partitions[1].end_offset, 30);
    assert!(info.partitions[1].bytes > 0);
}

#[tokio::test]
async fn reopen_recovers_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = StreamLog::open(dir.path(), config(150)).unwrap();
        let stream = log.create_stream("s", 1).unwrap();
        stream
            .append(0, (0..7).map(record).collect())
            .await
            .unwrap();
    }
    let log = StreamLog::open(dir.path(), config(150)).unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.partitions(), 1);
    assert_eq!(stream.end_offset(0), 7);
    assert_eq!(stream.append(0, vec![record(7)]).await.unwrap(), 7..8);
    let all = stream.read(0, 0, 100).unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(all[7].record, record(7));
}

async fn torn_tail_is_cut(damage: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
        let stream = log.create_stream("s", 1).unwrap();
        stream
            .append(0, (0..5).map(record).collect())
            .await
            .unwrap();
    }
    let files = segment_files(&dir.path().join("s/0"));
    damage(files.last().unwrap());
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.end_offset(0), 4);
    assert_eq!(stream.append(0, vec![record(99)]).await.unwrap(), 4..5);
    let all = stream.read(0, 0, 100).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[3].record, record(3));
    assert_eq!(all[4].record, record(99));
}

#[tokio::test]
async fn truncated_last_record_is_cut_off() {
    torn_tail_is_cut(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len - 3).unwrap();
    })
    .await;
}

#[tokio::test]
async fn flipped_byte_in_last_record_is_cut_off() {
    torn_tail_is_cut(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        flip_byte(path, len - 2);
    })
    .await;
}

#[tokio::test]
async fn corruption_in_an_old_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = StreamLog::open(dir.path(), config(100)).unwrap();
        let stream = log.create_stream("s", 1).unwrap();
        stream
            .append(0, (0..12).map(record).collect())
            .await
            .unwrap();
    }
    let files = segment_files(&dir.path().join("s/0"));
    assert!(files.len() >= 3);
    flip_byte(&files[0], 20);
    let log = StreamLog::open(dir.path(), config(100)).unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.end_offset(0), 12);
    match stream.read(0, 0, 100) {
        Err(LogError::Corrupt { path, position, .. }) => {
            assert_eq!(path, files[0].canonicalize().unwrap());
            assert_eq!(position, 0);
        }
        other => panic!("expected a corrupt segment error, got {other:?}"),
    }
    let message = stream.read(0, 0, 1).unwrap_err().to_string();
    assert!(message.contains("00000000000000000000.log"), "{message}");
    // Later segments still read.
    let later = stream.read(0, 11, 10).unwrap();
    assert_eq!(later.len(), 1);
}

#[tokio::test]
async fn interval_policy_acknowledges_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let hour = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        ..LogConfig::default()
    };
    let log = StreamLog::open(dir.path(), hour).unwrap();
    let stream = log.create_stream("s", 1).unwrap();
    let appending = tokio::spawn({
        let stream = stream.clone();
        async move { stream.append(0, vec![record(0), record(1)]).await }
    });
    // Written at once (readers see it) ...
    assert!(stream.wait_for(0, 1, Duration::from_secs(10)).await);
    assert_eq!(stream.read(0, 0, 10).unwrap().len(), 2);
    // ... but not acknowledged before a sync.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!appending.is_finished());
    log.sync().unwrap();
    assert_eq!(appending.await.unwrap().unwrap(), 0..2);

    // With a short interval the periodic sync acknowledges by itself.
    drop((log, stream));
    let short = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
        ..LogConfig::default()
    };
    let log = StreamLog::open(dir.path(), short).unwrap();
    let stream = log.stream("s").unwrap();
    let range = tokio::time::timeout(Duration::from_secs(30), stream.append(0, vec![record(2)]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(range, 2..3);
}

#[tokio::test]
async fn wait_for_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    let stream = log.create_stream("s", 1).unwrap();
    assert!(!stream.wait_for(0, 0, Duration::from_millis(20)).await);
    let waiting = tokio::spawn({
        let stream = stream.clone();
        async move { stream.wait_for(0, 0, Duration::from_secs(30)).await }
    });
    stream.append(0, vec![record(0)]).await.unwrap();
    assert!(waiting.await.unwrap());
    assert!(stream.wait_for(0, 0, Duration::ZERO).await);
    assert!(!stream.wait_for(5, 0, Duration::ZERO).await);
}

#[tokio::test]
async fn retention_by_bytes_removes_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 100,
        retention: Retention {
            max_bytes: Some(250),
            max_age: None,
        },
        ..LogConfig::default()
    };
    let log = StreamLog::open(dir.path(), config).unwrap();
    let stream = log.create_stream("s", 1).unwrap();
    stream
        .append(0, (0..20).map(record).collect())
        .await
        .unwrap();
    let before = stream.info().partitions[0].bytes;
    let removed = log.enforce_retention().unwrap();
    assert!(removed > 0);
    let info = stream.info().partitions[0].clone();
    assert_eq!(info.bytes, before - removed);
    assert!(info.bytes <= 250, "{info:?}");
    assert!(info.start_offset > 0);
    assert_eq!(info.end_offset, 20);
    // Reading from a removed offset starts at the start offset.
    let rest = stream.read(0, 0, 100).unwrap();
    assert_eq!(rest[0].offset, info.start_offset);
    assert_eq!(rest.last().unwrap().offset, 19);
    // The active segment is never removed.
    let tiny = LogConfig {
        segment_bytes: 100,
        retention: Retention {
            max_bytes: Some(0),
            max_age: None,
        },
        ..LogConfig::default()
    };
    drop((log, stream));
    let log = StreamLog::open(dir.path(), tiny).unwrap();
    log.enforce_retention().unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(segment_files(&dir.path().join("s/0")).len(), 1);
    assert_eq!(stream.end_offset(0), 20);
    assert_eq!(stream.append(0, vec![record(20)]).await.unwrap(), 20..21);
}

#[tokio::test]
async fn retention_by_age_removes_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 100,
        retention: Retention {
            max_bytes: None,
            max_age: Some(Duration::from_secs(3600)),
        },
        ..LogConfig::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let log = StreamLog::open(dir.path(), config.clone()).unwrap();
    let stream = log.create_stream("s", 1).unwrap();
    let old: Vec<Record> = (0..6)
        .map(|i| Record::new(now - 7_200_000, format!("old-{i}-padding-padding")))
        .collect();
    stream.append(0, old).await.unwrap();
    let new: Vec<Record> = (0..6)
        .map(|i| Record::new(now, format!("new-{i}-padding-padding")))
        .collect();
    stream.append(0, new).await.unwrap();
    // Reopen, so the old segments' timestamps come from a scan.
    drop((log, stream));
    let log = StreamLog::open(dir.path(), config).unwrap();
    let stream = log.stream("s").unwrap();
    assert!(log.enforce_retention().unwrap() > 0);
    let rest = stream.read(0, 0, 100).unwrap();
    assert!(rest.iter().all(|r| r.record.value.starts_with(b"new")));
    assert_eq!(rest.len(), 6);
    assert_eq!(stream.start_offset(0), 6);
    assert_eq!(log.enforce_retention().unwrap(), 0);
}

#[tokio::test]
async fn key_partitioning_is_stable() {
    // xxHash64 of the empty input with seed 0.
    assert_eq!(
        partition_for_key(b"", 7),
        (0xEF46_DB37_51D8_E999u64 % 7) as u32
    );
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    let stream = log.create_stream("s", 8).unwrap();
    let first = stream.partition_for_key(b"user-42");
    assert_eq!(first, stream.partition_for_key(b"user-42"));
    let used: std::collections::BTreeSet<u32> = (0..100)
        .map(|i| stream.partition_for_key(format!("user-{i}").as_bytes()))
        .collect();
    assert!(used.len() > 4 && used.iter().all(|p| *p < 8));
}

#[test]
fn the_lock_rejects_a_second_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    let error = StreamLog::open(dir.path(), LogConfig::default()).unwrap_err();
    assert!(matches!(error, LogError::Locked(_)));
    assert!(
        error.to_string().contains("is in use by another process"),
        "{error}"
    );
    drop(log);
    StreamLog::open(dir.path(), LogConfig::default()).unwrap();
}

#[test]
fn open_shared_returns_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let a = StreamLog::open_shared(dir.path(), LogConfig::default()).unwrap();
    let other = LogConfig {
        default_partitions: 4,
        ..LogConfig::default()
    };
    let b = StreamLog::open_shared(&dir.path().join("."), other).unwrap();
    assert_eq!(b.config().default_partitions, 1);
    a.create_stream("x", 2).unwrap();
    assert_eq!(b.stream("x").unwrap().partitions(), 2);
    drop((a, b));
    let c = StreamLog::open_shared(dir.path(), LogConfig::default()).unwrap();
    assert!(c.stream("x").is_some());
}

#[tokio::test]
async fn streams_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    for bad in ["", "a/b", "..", ".hidden", "a b", &"x".repeat(201)] {
        assert!(
            matches!(log.create_stream(bad, 1), Err(LogError::InvalidName(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        log.create_stream("zero", 0),
        Err(LogError::InvalidPartitionCount { .. })
    ));
    log.create_stream("b.s_1-x", 3).unwrap();
    log.create_stream("b.s_1-x", 3).unwrap();
    assert!(matches!(
        log.create_stream("b.s_1-x", 2),
        Err(LogError::PartitionMismatch {
            existing: 3,
            requested: 2,
            ..
        })
    ));
    let a = log.get_or_create("a").unwrap();
    assert_eq!(a.partitions(), 1);
    let names: Vec<String> = log.streams().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b.s_1-x"]);
    assert!(log.delete_stream("a").unwrap());
    assert!(!log.delete_stream("a").unwrap());
    assert!(matches!(
        a.append(0, vec![record(0)]).await,
        Err(LogError::StreamDeleted(_))
    ));
    assert!(!dir.path().join("a").exists());
    drop((log, a));
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    let names: Vec<String> = log.streams().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["b.s_1-x"]);
}

#[tokio::test]
async fn concurrent_appends_get_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), config(4096)).unwrap();
    let stream = log.create_stream("s", 2).unwrap();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let stream = stream.clone();
            tokio::spawn(async move {
                let records = (0..50).map(|i| record(t * 1000 + i)).collect();
                stream.append((t % 2) as u32, records).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for partition in 0..2 {
        let all = stream.read(partition, 0, 1000).unwrap();
        assert_eq!(all.len(), 200);
        assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
    }
}

#[tokio::test]
async fn a_stream_handle_keeps_its_log_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    let stream = log.create_stream("s", 1).unwrap();
    drop(log);
    assert_eq!(stream.append(0, vec![record(0)]).await.unwrap(), 0..1);
    assert!(matches!(
        StreamLog::open(dir.path(), LogConfig::default()),
        Err(LogError::Locked(_))
    ));
    drop(stream);
    let log = StreamLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.stream("s").unwrap().end_offset(0), 1);
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<StreamLog>();
    check::<crate::Stream>();
    fn check_data<T: Send + Sync>() {}
    check_data::<LogError>();
    check_data::<crate::StoredRecord>();
    check_data::<crate::StreamInfo>();
}
