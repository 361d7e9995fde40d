//! A load generator for `sluice serve`'s HTTP ingest: `CONNECTIONS` clients
//! each post `EVENTS_PER_REQUEST` NDJSON events per request, back to back,
//! for `SECONDS`; prints the sustained event rate and the acknowledgement
//! latency percentiles.
//!
//! ```sh
//! cargo run --release -p sluice-cli --example ingest_load -- \
//!     http://127.0.0.1:8080 $SLUICE_TOKEN clicks 8 100 20
//! ```

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: ingest_load URL TOKEN STREAM CONNECTIONS EVENTS_PER_REQUEST SECONDS");
        std::process::exit(2);
    }
    let (url, token, stream) = (args[1].clone(), args[2].clone(), args[3].clone());
    let connections: usize = args[4].parse()?;
    let per_request: usize = args[5].parse()?;
    let seconds: u64 = args[6].parse()?;
    let body: String = (0..per_request)
        .map(|i| {
            format!(
                "{{\"user_name\":\"u{}\",\"amount\":{},\"page\":\"/products/{}\"}}\n",
                i % 97,
                i % 500,
                i % 13
            )
        })
        .collect();
    let endpoint = format!("{url}/api/v1/streams/{stream}/events");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, endpoint, token, body) = (
                client.clone(),
                endpoint.clone(),
                token.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let answer = client
                        .post(&endpoint)
                        .bearer_auth(&token)
                        .body(body.clone())
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            latencies.push(sent.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mut more, failed) = worker.await?;
        latencies.append(&mut more);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let events = latencies.len() * per_request;
    println!(
        "{} requests ({events} events) in {elapsed:.1} s, {failures} failed: {:.0} events/s, \
         ack latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        latencies.len(),
        events as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        percentile(0.999)
    );
    Ok(())
}
