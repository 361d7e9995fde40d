//! The `nexmark` connector: the Nexmark benchmark generator as a source, in the
//! nexmark-flink table shape (`event_type`, `person`, `auction`, `bid` ROWs).
//!
//! Event `n` depends only on (`seed`, `n`), so output is deterministic and the
//! same for any parallelism: subtask `i` of `p` generates events `i, i+p, ...`.
//! The model follows the Beam/nexmark-flink generator: person/auction/bid
//! proportions, hot auctions/sellers/bidders, prices, channels and padding.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanBufferBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    StructArray, TimestampMillisecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_core::connector::{ConnectorFactory, JobContext, SourceConnector, SourceReader};
use sluice_core::options::OptionSpec;
use sluice_core::table::TableDef;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::datagen::conform;
use crate::{project_schema, validate_options};

const NEXMARK_OPTIONS: [OptionSpec; 10] = [
    OptionSpec::required("connector", "'nexmark'"),
    OptionSpec::optional("events.num", "number of events; 0 or unset = unbounded"),
    OptionSpec::optional(
        "first-event.rate",
        "event-time rate in events/s that spaces event timestamps (default 10000)",
    ),
    OptionSpec::optional(
        "next-event.rate",
        "accepted; the event-time rate is 'first-event.rate'",
    ),
    OptionSpec::optional(
        "person.proportion",
        "persons per (person+auction+bid) cycle (default 1)",
    ),
    OptionSpec::optional("auction.proportion", "auctions per cycle (default 3)"),
    OptionSpec::optional("bid.proportion", "bids per cycle (default 46)"),
    OptionSpec::optional("seed", "random seed (default 42)"),
    OptionSpec::optional(
        "events.per-second",
        "wall-clock throttle for the whole source; unset = as fast as possible",
    ),
    OptionSpec::optional(
        "event-time.base",
        "event time of the first event: 'now' (wall clock at start, for latency runs with 'events.per-second' = 'first-event.rate') or epoch milliseconds (default 2015-07-15 00:00:00)",
    ),
];

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i64 = 5;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_BATCH: i64 = 100;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const CHANNELS: usize = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
/// 2015-07-15 00:00:00.000 UTC, Beam's base time.
const BASE_TIME_MS: i64 = 1_436_918_400_000;

/// Generator settings.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// Events to generate; `None` = unbounded.
    pub events: Option<u64>,
    /// Event-time rate (events per second of event time).
    pub rate: f64,
    /// Persons per cycle.
    pub person_proportion: i64,
    /// Auctions per cycle.
    pub auction_proportion: i64,
    /// Bids per cycle.
    pub bid_proportion: i64,
    /// Random seed.
    pub seed: u64,
    /// Wall-clock throttle.
    pub events_per_second: Option<f64>,
    /// Event time of the first event (epoch milliseconds).
    pub base_time_ms: i64,
    /// `'event-time.base' = 'now'`: the base is the wall clock when the
    /// readers open, so event time = creation time under the throttle.
    pub base_time_at_open: bool,
}

impl NexmarkConfig {
    fn total_proportion(&self) -> i64 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    fn timestamp(&self, event: i64) -> i64 {
        self.base_time_ms + ((event as f64) * (1_000_000.0 / self.rate)) as i64 / 1000
    }

    fn last_base0_person_id(&self, event: i64) -> i64 {
        let total = self.total_proportion();
        let epoch = event / total;
        let offset = (event % total).min(self.person_proportion - 1);
        epoch * self.person_proportion + offset
    }

    fn last_base0_auction_id(&self, event: i64) -> i64 {
        let total = self.total_proportion();
        let mut epoch = event / total;
        let mut offset = event % total;
        if offset < self.person_proportion {
            epoch -= 1;
            offset = self.auction_proportion - 1;
        } else if offset >= self.person_proportion + self.auction_proportion {
            offset = self.auction_proportion - 1;
        } else {
            offset -= self.person_proportion;
        }
        epoch * self.auction_proportion + offset
    }

    fn next_base0_person_id(&self, event: i64, rng: &mut SmallRng) -> i64 {
        let people = self.last_base0_person_id(event) + 1;
        let active = people.min(NUM_ACTIVE_PEOPLE);
        people - active + rng.gen_range(0..active + PERSON_ID_LEAD)
    }

    fn next_base0_auction_id(&self, event: i64, rng: &mut SmallRng) -> i64 {
        let max = self.last_base0_auction_id(event).max(0);
        let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
        min + rng.gen_range(0..max - min + 1 + AUCTION_ID_LEAD)
    }
}

/// The full generator schema (nexmark-flink's table shape).
pub fn nexmark_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let person = Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("emailAddress", DataType::Utf8, true),
        Field::new("creditCard", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("dateTime", ts(), true),
        Field::new("extra", DataType::Utf8, true),
    ]);
    let auction = Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("itemName", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("initialBid", DataType::Int64, true),
        Field::new("reserve", DataType::Int64, true),
        Field::new("dateTime", ts(), true),
        Field::new("expires", ts(), true),
        Field::new("seller", DataType::Int64, true),
        Field::new("category", DataType::Int64, true),
        Field::new("extra", DataType::Utf8, true),
    ]);
    let bid = Fields::from(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("dateTime", ts(), true),
        Field::new("extra", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, true),
        Field::new("person", DataType::Struct(person), true),
        Field::new("auction", DataType::Struct(auction), true),
        Field::new("bid", DataType::Struct(bid), true),
    ]))
}

/// Creates `nexmark` sources.
pub struct NexmarkConnector;

fn parse_config(table: &TableDef) -> Result<NexmarkConfig> {
    let options = &table.options;
    let config = NexmarkConfig {
        events: options.parse::<u64>("events.num")?.filter(|n| *n > 0),
        rate: options
            .parse::<f64>("first-event.rate")?
            .unwrap_or(10_000.0),
        person_proportion: options.parse::<i64>("person.proportion")?.unwrap_or(1),
        auction_proportion: options.parse::<i64>("auction.proportion")?.unwrap_or(3),
        bid_proportion: options.parse::<i64>("bid.proportion")?.unwrap_or(46),
        seed: options.parse::<u64>("seed")?.unwrap_or(42),
        events_per_second: options.parse::<f64>("events.per-second")?,
        base_time_at_open: options.get("event-time.base") == Some("now"),
        base_time_ms: match options.get("event-time.base") {
            None => BASE_TIME_MS,
            Some("now") => chrono::Utc::now().timestamp_millis(),
            Some(_) => options
                .parse::<i64>("event-time.base")?
                .unwrap_or(BASE_TIME_MS),
        },
    };
    if config.rate <= 0.0
        || config.person_proportion < 1
        || config.auction_proportion < 1
        || config.bid_proportion < 0
    {
        return Err(SluiceError::Config(format!(
            "table `{}`: 'first-event.rate' must be > 0, person/auction proportions >= 1 and bid proportion >= 0",
            table.name
        )));
    }
    Ok(config)
}

impl ConnectorFactory for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        validate_options(table, &[&NEXMARK_OPTIONS])?;
        let config = parse_config(table)?;
        let schema = project_schema(table, projection);
        let generator = Arc::new(Generator::new(config));
        // Check now that the declared columns can be produced.
        let sample = generator.generate(0, 1, 1);
        conform(&sample, &schema)
            .map_err(|e| SluiceError::Config(format!("table `{}`: {e}", table.name)))?;
        Ok(Arc::new(NexmarkSource {
            generator,
            schema,
            batch_size: job.batch_size,
        }))
    }
}

/// Shared, immutable generator state.
#[derive(Debug)]
pub struct Generator {
    config: NexmarkConfig,
    channel_names: Vec<String>,
    channel_urls: Vec<String>,
    full_schema: SchemaRef,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn next_string(rng: &mut SmallRng, max_len: usize, special: char, out: &mut String) {
    let len = 3 + rng.gen_range(0..max_len - 3);
    // Two random bytes per character: one picks the letter, one the 1-in-13 special.
    let mut bytes = [0u8; 256];
    let random = &mut bytes[..len * 2];
    rng.fill(random);
    let start = out.len();
    for pair in random.chunks_exact(2) {
        if pair[1] % 13 == 0 {
            out.push(special);
        } else {
            out.push((b'a' + pair[0] % 26) as char);
        }
    }
    if special == ' ' {
        let trimmed = out[start..].trim().to_string();
        out.truncate(start);
        out.push_str(&trimmed);
    }
}

fn next_extra(rng: &mut SmallRng, current_size: i64, desired_average: i64, out: &mut String) {
    if current_size > desired_average {
        return;
    }
    let gap = desired_average - current_size;
    let delta = (gap as f64 * 0.2).round() as i64;
    let size = (gap - delta
        + if delta > 0 {
            rng.gen_range(0..2 * delta)
        } else {
            0
        })
    .max(0) as usize;
    let mut bytes = vec![0u8; size];
    rng.fill(bytes.as_mut_slice());
    out.extend(bytes.iter().map(|b| (b'a' + b % 26) as char));
}

fn next_price(rng: &mut SmallRng) -> i64 {
    (10f64.powf(rng.gen::<f64>() * 6.0) * 100.0).round() as i64
}

fn java_abs_reverse(value: i32) -> i64 {
    (value.reverse_bits() as i64).abs()
}

struct StructColumns {
    ints: Vec<Int64Builder>,
    strings: Vec<StringBuilder>,
    times: Vec<TimestampMillisecondBuilder>,
    valid: BooleanBufferBuilder,
}

impl StructColumns {
    fn new(ints: usize, strings: usize, times: usize, capacity: usize) -> Self {
        StructColumns {
            ints: (0..ints)
                .map(|_| Int64Builder::with_capacity(capacity))
                .collect(),
            strings: (0..strings)
                .map(|_| StringBuilder::with_capacity(capacity, capacity * 64))
                .collect(),
            times: (0..times)
                .map(|_| TimestampMillisecondBuilder::with_capacity(capacity))
                .collect(),
            valid: BooleanBufferBuilder::new(capacity),
        }
    }

    fn append_null(&mut self) {
        self.ints.iter_mut().for_each(|b| b.append_null());
        self.strings.iter_mut().for_each(|b| b.append_null());
        self.times.iter_mut().for_each(|b| b.append_null());
        self.valid.append(false);
    }

    /// Builds the struct with fields taken in `order`: ('i'|'s'|'t', index).
    fn finish(mut self, fields: &Fields, order: &[(char, usize)]) -> ArrayRef {
        let columns: Vec<ArrayRef> = order
            .iter()
            .map(|(kind, index)| -> ArrayRef {
                match kind {
                    'i' => Arc::new(self.ints[*index].finish()),
                    's' => Arc::new(self.strings[*index].finish()),
                    _ => Arc::new(self.times[*index].finish()),
                }
            })
            .collect();
        let nulls = NullBuffer::new(self.valid.finish());
        Arc::new(StructArray::new(fields.clone(), columns, Some(nulls)))
    }
}

impl Generator {
    /// A generator with its channel table.
    pub fn new(config: NexmarkConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(splitmix(config.seed ^ 0x05EE_DC4A));
        let mut channel_names: Vec<String> = HOT_CHANNELS.iter().map(|s| s.to_string()).collect();
        let mut channel_urls = Vec::with_capacity(CHANNELS + HOT_CHANNELS.len());
        let base_url = |rng: &mut SmallRng| {
            let mut url = String::from("https://www.nexmark.com/");
            for part in 0..3 {
                if part > 0 {
                    url.push('/');
                }
                next_string(rng, 5, '_', &mut url);
            }
            url.push_str("/item.htm?query=1");
            url
        };
        for _ in HOT_CHANNELS {
            channel_urls.push(base_url(&mut rng));
        }
        for channel in 0..CHANNELS {
            let mut url = base_url(&mut rng);
            if rng.gen_range(0..10) > 0 {
                url.push_str(&format!("&channel_id={}", java_abs_reverse(channel as i32)));
            }
            channel_names.push(format!("channel-{channel}"));
            channel_urls.push(url);
        }
        Generator {
            config,
            channel_names,
            channel_urls,
            full_schema: nexmark_schema(),
        }
    }

    /// Generates events `first, first + step, ...` (`count` of them) as a batch
    /// of the full generator schema.
    pub fn generate(&self, first: u64, step: u64, count: usize) -> RecordBatch {
        let config = &self.config;
        let total = config.total_proportion();
        let mut event_type = Int32Builder::with_capacity(count);
        let mut person = StructColumns::new(1, 6, 1, count);
        let mut auction = StructColumns::new(5, 3, 2, count);
        let mut bid = StructColumns::new(3, 3, 1, count);
        let mut text = String::with_capacity(256);
        for k in 0..count {
            let n = (first + k as u64 * step) as i64;
            let mut rng = SmallRng::seed_from_u64(splitmix(
                config.seed.wrapping_mul(0x100_0000_01B3) ^ n as u64,
            ));
            let ts = config.timestamp(n);
            let offset = n % total;
            if offset < config.person_proportion {
                event_type.append_value(0);
                let id = config.last_base0_person_id(n) + FIRST_PERSON_ID;
                let name = format!(
                    "{} {}",
                    FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())],
                    LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())]
                );
                text.clear();
                next_string(&mut rng, 7, ' ', &mut text);
                text.push('@');
                next_string(&mut rng, 5, ' ', &mut text);
                text.push_str(".com");
                let email = text.clone();
                let card = format!(
                    "{:04} {:04} {:04} {:04}",
                    rng.gen_range(0..10000),
                    rng.gen_range(0..10000),
                    rng.gen_range(0..10000),
                    rng.gen_range(0..10000)
                );
                let city = US_CITIES[rng.gen_range(0..US_CITIES.len())];
                let state = US_STATES[rng.gen_range(0..US_STATES.len())];
                let size =
                    8 + (name.len() + email.len() + card.len() + city.len() + state.len()) as i64;
                text.clear();
                next_extra(&mut rng, size, 200, &mut text);
                person.ints[0].append_value(id);
                for (builder, value) in person.strings.iter_mut().zip([
                    name.as_str(),
                    &email,
                    &card,
                    city,
                    state,
                    &text,
                ]) {
                    builder.append_value(value);
                }
                person.times[0].append_value(ts);
                person.valid.append(true);
                auction.append_null();
                bid.append_null();
            } else if offset < config.person_proportion + config.auction_proportion {
                event_type.append_value(1);
                let id = config.last_base0_auction_id(n) + FIRST_AUCTION_ID;
                let seller = if rng.gen_range(0..4) > 0 {
                    (config.last_base0_person_id(n) / HOT_BATCH) * HOT_BATCH
                } else {
                    config.next_base0_person_id(n, &mut rng)
                } + FIRST_PERSON_ID;
                let category = FIRST_CATEGORY_ID + rng.gen_range(0..NUM_CATEGORIES);
                let initial_bid = next_price(&mut rng);
                let events_for_auctions =
                    (NUM_IN_FLIGHT_AUCTIONS * total) / config.auction_proportion;
                let horizon = config.timestamp(n + events_for_auctions) - ts;
                let expires = ts + 1 + rng.gen_range(0..(2 * horizon).max(1));
                let mut item = String::new();
                next_string(&mut rng, 20, ' ', &mut item);
                let mut description = String::new();
                next_string(&mut rng, 100, ' ', &mut description);
                let reserve = initial_bid + next_price(&mut rng);
                text.clear();
                next_extra(
                    &mut rng,
                    8 + (item.len() + description.len()) as i64 + 40,
                    500,
                    &mut text,
                );
                for (builder, value) in
                    auction
                        .ints
                        .iter_mut()
                        .zip([id, initial_bid, reserve, seller, category])
                {
                    builder.append_value(value);
                }
                for (builder, value) in
                    auction
                        .strings
                        .iter_mut()
                        .zip([item.as_str(), &description, &text])
                {
                    builder.append_value(value);
                }
                auction.times[0].append_value(ts);
                auction.times[1].append_value(expires);
                auction.valid.append(true);
                person.append_null();
                bid.append_null();
            } else {
                event_type.append_value(2);
                let auction_id = if rng.gen_range(0..2) > 0 {
                    (config.last_base0_auction_id(n) / HOT_BATCH) * HOT_BATCH
                } else {
                    config.next_base0_auction_id(n, &mut rng)
                } + FIRST_AUCTION_ID;
                let bidder = if rng.gen_range(0..4) > 0 {
                    (config.last_base0_person_id(n) / HOT_BATCH) * HOT_BATCH + 1
                } else {
                    config.next_base0_person_id(n, &mut rng)
                } + FIRST_PERSON_ID;
                let price = next_price(&mut rng);
                let channel = if rng.gen_range(0..2) > 0 {
                    rng.gen_range(0..HOT_CHANNELS.len())
                } else {
                    HOT_CHANNELS.len() + rng.gen_range(0..CHANNELS)
                };
                text.clear();
                next_extra(&mut rng, 32, 100, &mut text);
                for (builder, value) in bid.ints.iter_mut().zip([auction_id, bidder, price]) {
                    builder.append_value(value);
                }
                bid.strings[0].append_value(&self.channel_names[channel]);
                bid.strings[1].append_value(&self.channel_urls[channel]);
                bid.strings[2].append_value(&text);
                bid.times[0].append_value(ts);
                bid.valid.append(true);
                person.append_null();
                auction.append_null();
            }
        }
        let fields = |i: usize| match self.full_schema.field(i).data_type() {
            DataType::Struct(fields) => fields.clone(),
            _ => Fields::empty(),
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(event_type.finish()),
            person.finish(
                &fields(1),
                &[
                    ('i', 0),
                    ('s', 0),
                    ('s', 1),
                    ('s', 2),
                    ('s', 3),
                    ('s', 4),
                    ('t', 0),
                    ('s', 5),
                ],
            ),
            auction.finish(
                &fields(2),
                &[
                    ('i', 0),
                    ('s', 0),
                    ('s', 1),
                    ('i', 1),
                    ('i', 2),
                    ('t', 0),
                    ('t', 1),
                    ('i', 3),
                    ('i', 4),
                    ('s', 2),
                ],
            ),
            bid.finish(
                &fields(3),
                &[
                    ('i', 0),
                    ('i', 1),
                    ('i', 2),
                    ('s', 0),
                    ('s', 1),
                    ('t', 0),
                    ('s', 2),
                ],
            ),
        ];
        RecordBatch::try_new(self.full_schema.clone(), columns)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.full_schema.clone()))
    }
}

#[derive(Debug)]
struct NexmarkSource {
    generator: Arc<Generator>,
    schema: SchemaRef,
    batch_size: usize,
}

impl SourceConnector for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.generator.config.events.is_some()
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    /// Reader `i` resumes at the next event number reader `i` of the
    /// checkpointed run would have generated (same parallelism only: the
    /// readers split the event sequence by subtask).
    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        let resumed = crate::per_subtask_positions("nexmark", positions, parallelism, |p| {
            serde_json::from_slice::<GeneratorPosition>(p).ok()
        })?;
        let per_subtask_rate = self
            .generator
            .config
            .events_per_second
            .map(|rate| rate / parallelism as f64);
        let generator = if self.generator.config.base_time_at_open {
            let mut generator = Generator::new(self.generator.config.clone());
            // Set after building the generator, together with `started` below;
            // a resumed run keeps the first run's base so timestamps continue.
            generator.config.base_time_ms = resumed
                .first()
                .map(|p| p.base_time_ms)
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            Arc::new(generator)
        } else {
            self.generator.clone()
        };
        let started = Instant::now();
        Ok((0..parallelism)
            .map(|subtask| {
                Box::new(NexmarkReader {
                    generator: generator.clone(),
                    schema: self.schema.clone(),
                    next_event: resumed
                        .get(subtask)
                        .map(|p| p.next_event)
                        .unwrap_or(subtask as u64),
                    step: parallelism as u64,
                    batch_size: self.batch_size,
                    rate: per_subtask_rate,
                    started,
                    emitted: 0,
                }) as Box<dyn SourceReader>
            })
            .collect())
    }

    fn describe(&self) -> String {
        let config = &self.generator.config;
        match config.events {
            Some(events) => format!("nexmark generator, {events} events, seed {}", config.seed),
            None => format!("nexmark generator, unbounded, seed {}", config.seed),
        }
    }
}

struct NexmarkReader {
    generator: Arc<Generator>,
    schema: SchemaRef,
    next_event: u64,
    step: u64,
    batch_size: usize,
    rate: Option<f64>,
    started: Instant,
    emitted: u64,
}

#[async_trait]
impl SourceReader for NexmarkReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        let mut count = self.batch_size;
        if let Some(limit) = self.generator.config.events {
            if self.next_event >= limit {
                return Ok(None);
            }
            let remaining = (limit - self.next_event).div_ceil(self.step);
            count = count.min(remaining as usize);
        }
        if let Some(rate) = self.rate {
            // About a millisecond of events per batch, emitted once its last
            // event is due: no event leaves before its creation time, and
            // latency measured from event time is honest.
            count = count.min(((rate / 1000.0).ceil() as usize).max(1));
            let due = Duration::from_secs_f64((self.emitted + count as u64) as f64 / rate);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let batch = self.generator.generate(self.next_event, self.step, count);
        self.next_event += count as u64 * self.step;
        self.emitted += count as u64;
        Ok(Some(ChangeBatch::inserts(conform(&batch, &self.schema)?)))
    }

    fn position(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&GeneratorPosition {
            next_event: self.next_event,
            base_time_ms: self.generator.config.base_time_ms,
        })
        .map_err(|e| SluiceError::State(e.to_string()))
    }
}

/// A generator reader's checkpoint position.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct GeneratorPosition {
    /// The next event number this reader generates.
    next_event: u64,
    /// The generator's time base (ms), so resumed timestamps continue.
    base_time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int32Type;

    fn config() -> NexmarkConfig {
        NexmarkConfig {
            events: Some(100),
            rate: 10_000.0,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            seed: 42,
            events_per_second: None,
            base_time_ms: BASE_TIME_MS,
            base_time_at_open: false,
        }
    }

    #[test]
    fn proportions_and_determinism() {
        let generator = Generator::new(config());
        let batch = generator.generate(0, 1, 100);
        let types = batch.column(0).as_primitive::<Int32Type>();
        let persons = types.iter().filter(|t| *t == Some(0)).count();
        let auctions = types.iter().filter(|t| *t == Some(1)).count();
        assert_eq!((persons, auctions, 100 - persons - auctions), (2, 6, 92));
        assert!(batch.column(1).is_valid(0) && batch.column(3).is_null(0));
        // Event 7 is the same whether generated alone or in a run.
        let single = generator.generate(7, 1, 1);
        assert_eq!(single.slice(0, 1), batch.slice(7, 1));
        // Two subtasks together produce the same events as one.
        let even = generator.generate(0, 2, 50);
        assert_eq!(even.slice(3, 1), batch.slice(6, 1));
    }

    #[test]
    fn timestamps_follow_the_event_rate() {
        let config = config();
        assert_eq!(config.timestamp(0), BASE_TIME_MS);
        assert_eq!(config.timestamp(10_000), BASE_TIME_MS + 1000);
    }
}
