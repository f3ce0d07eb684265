//! Structured logs on stderr: each event has a level, a short message and named fields,
//! written as one line, either as text (`TIME LEVEL message key=value ...`, values quoted
//! only where needed) or as a JSON object per line (`ts`, `level`, `msg`, then the fields).
//!
//! The format and the least severe level written are set once at startup ([`init`], from
//! `--log-format` and `--log-level`); until then events go out as text at `info`.

use std::{
    fmt::Write as _,
    io::Write as _,
    sync::atomic::{AtomicU8, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

pub use serde_json::Value;

/// How severe an event is; each level also writes the ones above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// Something failed and was not done.
    Error = 0,
    /// Something was refused or will be retried.
    Warn = 1,
    /// What changed: reconciles, health transitions, cleanup, start and exit.
    Info = 2,
    /// Details of each change (names of containers added and removed...).
    Debug = 3,
}

impl Level {
    pub const fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    const fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Error,
            1 => Level::Warn,
            2 => Level::Info,
            _ => Level::Debug,
        }
    }
}

/// How events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per event for people: `TIME LEVEL message key=value ...`.
    Text = 0,
    /// One JSON object per line: `{"ts":..,"level":..,"msg":..,<fields>}`.
    Json = 1,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);

/// Sets the format and the least severe level written, for the rest of the process.
pub fn init(format: Format, level: Level) {
    FORMAT.store(format as u8, Ordering::Relaxed);
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// Whether events of this level are written (to skip building costly fields).
pub fn enabled(level: Level) -> bool {
    level <= Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Writes one event, if its level is enabled. Field names must not be `ts`, `level` or
/// `msg`.
pub fn log(level: Level, msg: &str, fields: &[(&str, Value)]) {
    if !enabled(level) {
        return;
    }
    let line = render(format(), SystemTime::now(), level, msg, fields);
    // One write per line, so lines of several threads never interleave; a closed stderr
    // is no reason to stop.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn error(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Error, msg, fields);
}

pub fn warn(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Warn, msg, fields);
}

pub fn info(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Info, msg, fields);
}

pub fn debug(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Debug, msg, fields);
}

/// One event as a line (newline included).
pub fn render(
    format: Format,
    time: SystemTime,
    level: Level,
    msg: &str,
    fields: &[(&str, Value)],
) -> String {
    let ts = rfc3339(time);
    let mut line = String::with_capacity(64 + msg.len() + 24 * fields.len());
    match format {
        Format::Json => {
            let _ = write!(
                line,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"msg\":{}",
                level.name(),
                Value::from(msg)
            );
            for (key, value) in fields {
                let _ = write!(line, ",{}:{value}", Value::from(*key));
            }
            line.push('}');
        }
        Format::Text => {
            let _ = write!(
                line,
                "{ts} {:<5} {}",
                level.name().to_uppercase(),
                one_line(msg)
            );
            for (key, value) in fields {
                let _ = write!(line, " {key}={}", text_value(value));
            }
        }
    }
    line.push('\n');
    line
}

/// A message on one line: line breaks become `; `.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A field's value in text: bare when that is unambiguous, else quoted with JSON escapes.
fn text_value(value: &Value) -> String {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=') =>
        {
            s.clone()
        }
        Value::String(_) => value.to_string(),
        Value::Array(items) if items.is_empty() => "\"\"".to_owned(),
        Value::Array(items) => {
            let joined: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            text_value(&Value::String(joined.join(",")))
        }
        other => other.to_string(),
    }
}

/// `2025-06-01T12:00:00.123Z` (UTC, milliseconds).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century year) 23:59:59.999
        assert_eq!(rfc3339(at(951_868_799, 999)), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(at(1_735_689_600, 5)), "2025-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
    }

    fn fields() -> Vec<(&'static str, Value)> {
        vec![
            ("networks", 2.into()),
            ("service", "web".into()),
            ("reason", "connect: refused \"x\"".into()),
            ("empty", "".into()),
            ("names", vec!["web1", "web2"].into()),
            ("up", true.into()),
        ]
    }

    #[test]
    fn text_lines() {
        let line = render(Format::Text, at(0, 0), Level::Info, "reconciled", &fields());
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000Z INFO  reconciled networks=2 service=web \
             reason=\"connect: refused \\\"x\\\"\" empty=\"\" names=web1,web2 up=true\n"
        );
        let line = render(
            Format::Text,
            at(0, 0),
            Level::Warn,
            "a\n  b\n",
            &[("names", Value::Array(vec![]))],
        );
        assert_eq!(line, "1970-01-01T00:00:00.000Z WARN  a; b names=\"\"\n");
    }

    #[test]
    fn json_lines_parse_with_every_field() {
        let line = render(
            Format::Json,
            at(1, 0),
            Level::Error,
            "refused\nsecond line",
            &fields(),
        );
        assert!(line.ends_with("}\n") && line.lines().count() == 1, "{line}");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["ts"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "refused\nsecond line");
        assert_eq!(v["networks"], 2);
        assert_eq!(v["reason"], "connect: refused \"x\"");
        assert_eq!(v["names"][1], "web2");
        assert_eq!(v["up"], true);
        // Fields keep their order after the fixed keys.
        assert!(line.starts_with("{\"ts\":"), "{line}");
        assert!(line.find("\"networks\"") < line.find("\"up\""), "{line}");
    }

    #[test]
    fn levels_filter() {
        assert!(Level::Error < Level::Debug);
        init(Format::Text, Level::Warn);
        assert!(enabled(Level::Error) && enabled(Level::Warn));
        assert!(!enabled(Level::Info) && !enabled(Level::Debug));
        init(Format::Text, Level::Info);
    }
}
