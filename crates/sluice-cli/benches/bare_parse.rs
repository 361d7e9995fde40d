//! The bare-parse baseline for JSON decoding: how fast sonic-rs (a SIMD JSON
//! parser) parses a JSON-lines file on one core, without building any Arrow
//! column. `sluice bench nexmark --queries q0 --input FILE` over the same file
//! then shows what decoding into Arrow plus the query cost against it.
//!
//! ```text
//! cargo bench -p sluice-cli --bench bare_parse -- /tmp/nexmark-bench/data/events_10m.jsonl
//! ```
//!
//! Two passes per file, each on one thread: every line into a sonic-rs DOM
//! (`Value`), and every line into typed Nexmark events (borrowed strings, all
//! fields: what a decoder must at least do). Without a file it parses 100,000
//! generated bid lines.

mod common;

use std::io::Read;
use std::time::Instant;

use serde::Deserialize;

/// Bytes read per chunk, as the file source reads.
const CHUNK: usize = 4 << 20;

#[allow(dead_code)]
#[derive(Deserialize)]
struct Event<'a> {
    event_type: i32,
    #[serde(borrow)]
    person: Option<Person<'a>>,
    #[serde(borrow)]
    auction: Option<Auction<'a>>,
    #[serde(borrow)]
    bid: Option<Bid<'a>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Person<'a> {
    id: i64,
    name: &'a str,
    email_address: &'a str,
    credit_card: &'a str,
    city: &'a str,
    state: &'a str,
    date_time: &'a str,
    extra: &'a str,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Auction<'a> {
    id: i64,
    item_name: &'a str,
    description: &'a str,
    initial_bid: i64,
    reserve: i64,
    date_time: &'a str,
    expires: &'a str,
    seller: i64,
    category: i64,
    extra: &'a str,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bid<'a> {
    auction: i64,
    bidder: i64,
    price: i64,
    channel: &'a str,
    url: &'a str,
    date_time: &'a str,
    extra: &'a str,
}

/// Parses every line of `input` with `parse`, chunk by chunk; returns the
/// number of lines and bytes.
fn parse_lines(
    mut input: impl Read,
    mut parse: impl FnMut(&[u8]) -> Result<(), sonic_rs::Error>,
) -> std::io::Result<(u64, u64)> {
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut buffer = vec![0u8; CHUNK];
    let mut filled = 0;
    loop {
        let read = input.read(&mut buffer[filled..])?;
        filled += read;
        let last_newline = buffer[..filled].iter().rposition(|&b| b == b'\n');
        let complete = match (last_newline, read) {
            (Some(at), _) => at + 1,
            (None, 0) => filled,
            (None, _) if filled == buffer.len() => {
                buffer.resize(buffer.len() * 2, 0);
                continue;
            }
            (None, _) => continue,
        };
        for line in buffer[..complete].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            if let Err(error) = parse(line) {
                return Err(std::io::Error::other(format!(
                    "line {}: {error}",
                    lines + 1
                )));
            }
            lines += 1;
        }
        bytes += complete as u64;
        buffer.copy_within(complete..filled, 0);
        filled -= complete;
        if read == 0 {
            return Ok((lines, bytes));
        }
    }
}

fn main() -> std::io::Result<()> {
    // `cargo bench` passes `--bench`; the first other argument is the file.
    let path = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
    let open = || -> std::io::Result<Box<dyn Read>> {
        Ok(match &path {
            Some(path) => Box::new(std::fs::File::open(path)?),
            None => Box::new(std::io::Cursor::new(common::bid_lines(100_000))),
        })
    };
    println!(
        "bare parse of {} on one thread (sonic-rs)",
        path.as_deref().unwrap_or("100,000 generated bid lines")
    );
    println!("pass                  lines     seconds     lines/s       MB/s");
    type Pass = (&'static str, fn(&[u8]) -> Result<(), sonic_rs::Error>);
    let passes: [Pass; 2] = [
        ("DOM (Value)", |line| {
            sonic_rs::from_slice::<sonic_rs::Value>(line).map(drop)
        }),
        ("typed events", |line| {
            sonic_rs::from_slice::<Event>(line).map(drop)
        }),
    ];
    for (name, parse) in passes {
        let started = Instant::now();
        let (lines, bytes) = parse_lines(open()?, parse)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name:<16} {lines:>10} {seconds:>11.2} {:>11.0} {:>10.0}",
            lines as f64 / seconds,
            bytes as f64 / seconds / 1e6
        );
    }
    Ok(())
}
