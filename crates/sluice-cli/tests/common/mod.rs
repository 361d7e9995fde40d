//! Helpers for end-to-end tests that run the real `sluice` binary.

#![allow(dead_code)]

pub mod kafka;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A temporary working directory for one test.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Writes `sql` (with `$DIR` replaced by this directory) and runs `sluice run` on it.
    pub fn run(&self, sql: &str, extra: &[&str]) -> Output {
        let script = self.write("job.sql", &self.expand(sql));
        self.sluice(&[&["run", script.to_str().expect("utf8")], extra].concat())
    }

    pub fn expand(&self, sql: &str) -> String {
        sql.replace("$DIR", self.dir.path().to_str().expect("utf8"))
    }

    /// Runs `sluice` with arguments in this directory.
    pub fn sluice(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(self.dir.path())
            .env("SLUICE_LOG", "warn")
            .output()
            .expect("run sluice")
    }

    /// Runs `sluice` with arguments, writing `input` to its stdin.
    pub fn sluice_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(self.dir.path())
            .env("SLUICE_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait for sluice")
    }

    /// All lines of the published part files in a sink directory, sorted.
    pub fn sink_lines(&self, name: &str) -> Vec<String> {
        read_part_files(&self.path(name))
    }
}

/// Lines of every `part-*` file under `dir`, sorted (a multiset).
pub fn read_part_files(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lines;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            let text = std::fs::read_to_string(entry.path()).expect("read part");
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// The final rows of a `debezium-json` changelog sink directory: `c` adds
/// the `after` row, `d` removes the `before` row. Sorted (a multiset).
pub fn materialize_changelog(dir: &Path) -> Vec<String> {
    let mut rows: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("sink directory").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("part");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(r#"{"before":null,"after":"#) {
                let row = rest.strip_suffix(r#","op":"c"}"#).expect("insert envelope");
                *rows.entry(row.to_string()).or_default() += 1;
            } else {
                let rest = line.strip_prefix(r#"{"before":"#).expect("envelope");
                let row = rest
                    .strip_suffix(r#","after":null,"op":"d"}"#)
                    .expect("delete envelope");
                *rows.entry(row.to_string()).or_default() -= 1;
            }
        }
    }
    assert!(
        rows.values().all(|count| *count >= 0),
        "a row was retracted more often than added"
    );
    rows.into_iter()
        .flat_map(|(row, count)| std::iter::repeat_n(row, count as usize))
        .collect()
}

/// Asserts success and returns stdout.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "sluice failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts failure and returns stderr.
pub fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "sluice unexpectedly succeeded:\nstdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The nexmark-flink source table and views over a JSON-lines file (as in
/// benchmarks/nexmark/queries/_source.sql).
pub fn nexmark_file_source(path: &str) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benchmarks/nexmark/queries/_source.sql"
    ))
    .expect("nexmark source sql")
    .replace("${INPUT}", path)
}

/// A Nexmark query from benchmarks/nexmark/queries with its sink filled in
/// (q13's side input is `$DIR/side_input.csv`).
pub fn nexmark_query(name: &str, sink_options: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../benchmarks/nexmark/queries/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("nexmark query")
    .replace("${SINK}", sink_options)
    .replace("${SIDE_INPUT}", "$DIR/side_input.csv")
}

/// Writes `events` Nexmark generator events (with extra generator options,
/// e.g. `'seed' = '7'`) as nexmark-flink JSON lines into `$DIR/events`.
pub fn write_nexmark_events(ws: &Workspace, events: usize, generator_options: &str) {
    let source = nexmark_file_source("unused")
        .split("CREATE VIEW")
        .next()
        .expect("table ddl")
        .replace("'connector' = 'filesystem',", "'connector' = 'nexmark',")
        .replace("'path' = 'unused',", &format!("'events.num' = '{events}',"))
        .replace("'format' = 'json',", "")
        .replace("'json.fail-on-missing-field' = 'false',", "")
        .replace("'json.ignore-parse-errors' = 'false',", "")
        .replace(
            "'json.timestamp-format.standard' = 'SQL'",
            generator_options,
        );
    let job = format!(
        "SET 'execution.checkpointing.interval' = 'off';
         {source};
         CREATE TABLE events (event_type INT,
             person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
             auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
             bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>)
         WITH ('connector' = 'filesystem', 'path' = '$DIR/events', 'format' = 'json');
         INSERT INTO events SELECT event_type, person, auction, bid FROM nexmark;"
    );
    ok(&ws.run(&job, &[]));
}

/// Lets `child` run for `delay` (or until it exits), then kills it with
/// SIGKILL. Returns whether it exited successfully before the kill.
pub fn kill_after(mut child: Child, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll") {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().ok();
    child.wait().expect("reap");
    false
}

/// The number after the newest stored checkpoint (`chk-N.manifest`) in `dir`.
pub fn next_checkpoint(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("chk-")?
                        .strip_suffix(".manifest")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
        + 1
}

/// A long-running `sluice` process (a server) that prints
/// `<listening prefix>http://ADDR` on stderr once it accepts connections.
/// Killed when dropped, so a failing test leaves nothing behind.
pub struct Service {
    pub child: Child,
    /// `http://ADDR`.
    pub url: String,
    /// Every stderr line after the address line.
    pub stderr: std::sync::mpsc::Receiver<String>,
    /// Stderr lines before the address line.
    pub startup: Vec<String>,
}

impl Service {
    /// Starts `sluice <args>` with `env` and waits (up to 60 s) for the line
    /// starting with `listening`.
    pub fn start(args: &[&str], env: &[(&str, &str)], listening: &str) -> Service {
        use std::io::{BufRead, BufReader};
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start sluice");
        // Read stderr on a thread so the pipe never fills up.
        let (lines, stderr) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut startup = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(listening) {
                        break url.trim().to_string();
                    }
                    startup.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "sluice {args:?} printed no '{listening}' line; stderr:\n{}",
                        startup.join("\n")
                    );
                }
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{url}"
        );
        Service {
            child,
            url,
            stderr,
            startup,
        }
    }

    /// Sends `signal`, then waits (up to `timeout`) for the exit status and
    /// the rest of stderr.
    pub fn signal(mut self, signal: i32, timeout: Duration) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling a child process we own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let rest: Vec<String> = self.stderr.try_iter().collect();
                panic!(
                    "sluice did not exit within {timeout:?} of signal {signal}; stderr:\n{}",
                    rest.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(300)) {
            rest.push(line);
        }
        (status, rest.join("\n"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `bucket` with an unsigned `PUT /bucket` (enough for moto).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the S3 endpoint");
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.1 200") || response.contains("BucketAlreadyOwnedByYou"),
        "creating the bucket: {response}"
    );
}
