//! Input shared by the benchmarks.

/// `count` nexmark-flink bid lines (JSON, one per line).
pub fn bid_lines(count: usize) -> Vec<u8> {
    let mut data = Vec::new();
    for i in 0..count {
        data.extend_from_slice(
            format!(
                r#"{{"event_type":2,"person":null,"auction":null,"bid":{{"auction":{},"bidder":{},"price":{},"channel":"channel-{}","url":"https://www.nexmark.com/item.htm?query=1&channel_id={}","dateTime":"2026-11-29 12:{:02}:{:02}.{:03}","extra":"{}"}}}}"#,
                1000 + i % 97,
                2000 + i % 1013,
                100 + i * 7 % 10_000,
                i % 5,
                i * 31 % 4096,
                i / 60_000 % 60,
                i / 1000 % 60,
                i % 1000,
                "x".repeat(i % 24),
            )
            .as_bytes(),
        );
        data.push(b'\n');
    }
    data
}
