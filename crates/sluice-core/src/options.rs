//! Key/value options from `WITH (...)` clauses and `SET` statements, with typed
//! accessors and validation that lists the valid keys when one is unknown.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Result, SluiceError};

/// Describes one accepted option, for validation and documentation.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The option key, e.g. `path` or `json.fail-on-missing-field`.
    pub key: &'static str,
    /// Whether the option must be given.
    pub required: bool,
    /// One line saying what it does (and its default).
    pub description: &'static str,
}

impl OptionSpec {
    /// An optional option.
    pub const fn optional(key: &'static str, description: &'static str) -> Self {
        OptionSpec {
            key,
            required: false,
            description,
        }
    }

    /// A mandatory option.
    pub const fn required(key: &'static str, description: &'static str) -> Self {
        OptionSpec {
            key,
            required: true,
            description,
        }
    }
}

/// Options of one table (or of the job), remembering whose they are for messages.
#[derive(Debug, Clone, Default)]
pub struct Options {
    owner: String,
    values: BTreeMap<String, String>,
}

impl Options {
    /// Creates options owned by `owner` (e.g. "table `bids`"), used in error messages.
    pub fn new(owner: impl Into<String>, values: BTreeMap<String, String>) -> Self {
        Options {
            owner: owner.into(),
            values,
        }
    }

    /// Who these options belong to, for messages.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The raw value of a mandatory `key`.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| {
            SluiceError::Config(format!("{}: missing required option '{key}'", self.owner))
        })
    }

    /// Sets a value (used by defaults and by the CLI).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// All keys and values in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Parses `key` with `FromStr`, naming the option and value on failure.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<T>().map(Some).map_err(|_| {
                SluiceError::Config(format!(
                    "{}: option '{key}' has invalid value '{raw}' (expected {})",
                    self.owner,
                    short_type_name::<T>()
                ))
            }),
        }
    }

    /// Parses a boolean option (`true`/`false`, case-insensitive).
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(SluiceError::Config(format!(
                    "{}: option '{key}' must be 'true' or 'false', got '{raw}'",
                    self.owner
                ))),
            },
        }
    }

    /// Parses a duration such as `10s`, `500 ms`, `1 min`, `2h` (Flink's syntax).
    pub fn duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => parse_duration(raw).map(Some).ok_or_else(|| {
                SluiceError::Config(format!(
                    "{}: option '{key}' has invalid duration '{raw}' (examples: '500 ms', '10s', '1 min')",
                    self.owner
                ))
            }),
        }
    }

    /// Parses a memory size such as `128mb`, `1 gb`, `4096` (bytes).
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => parse_size(raw).map(Some).ok_or_else(|| {
                SluiceError::Config(format!(
                    "{}: option '{key}' has invalid size '{raw}' (examples: '4096', '64kb', '128mb')",
                    self.owner
                ))
            }),
        }
    }

    /// Fails on any key not in `specs` (listing the valid keys) and on missing
    /// required keys.
    pub fn validate(&self, specs: &[OptionSpec]) -> Result<()> {
        for key in self.values.keys() {
            if !specs.iter().any(|spec| spec.key == key) {
                let mut valid: Vec<&str> = specs.iter().map(|spec| spec.key).collect();
                valid.sort_unstable();
                return Err(SluiceError::Config(format!(
                    "{}: unknown option '{key}'; valid options are: {}",
                    self.owner,
                    valid.join(", ")
                )));
            }
        }
        for spec in specs.iter().filter(|spec| spec.required) {
            self.require(spec.key)?;
        }
        Ok(())
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Parses Flink-style durations: a number followed by an optional unit
/// (`ms`, `s`, `min`, `h`, `d` and their long forms). A bare number is milliseconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let text = raw.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let millis_per_unit = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return None,
    };
    Some(Duration::from_micros(
        (value * millis_per_unit * 1000.0) as u64,
    ))
}

/// Parses memory sizes: a number with an optional `b`, `kb`, `mb`, `gb` unit.
pub fn parse_size(raw: &str) -> Option<u64> {
    let text = raw.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    value.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Options {
        Options::new(
            "table `t`",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn durations_follow_flink_syntax() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1 min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("ten"), None);
    }

    #[test]
    fn sizes_parse_units() {
        assert_eq!(parse_size("128mb"), Some(128 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2 GB"), Some(2 << 30));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn unknown_option_lists_valid_keys() {
        let specs = [
            OptionSpec::required("path", "file"),
            OptionSpec::optional("format", "fmt"),
        ];
        let err = options(&[("path", "/x"), ("pth", "y")])
            .validate(&specs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option 'pth'"), "{err}");
        assert!(err.contains("format, path"), "{err}");
        let err = options(&[]).validate(&specs).unwrap_err().to_string();
        assert!(err.contains("missing required option 'path'"), "{err}");
    }

    #[test]
    fn typed_values_report_bad_input() {
        let opts = options(&[("n", "12"), ("b", "yes"), ("d", "3x")]);
        assert_eq!(opts.parse::<u32>("n").unwrap(), Some(12));
        assert!(opts
            .bool("b", false)
            .unwrap_err()
            .to_string()
            .contains("'b'"));
        assert!(opts.duration("d").is_err());
    }
}
