//! Go-style durations (`5s`, `1m30s`, `500ms`, `1.5h`): the format of the
//! apiserver's `?timeout=` query and of this binary's duration flags.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (use e.g. 500ms, 10s, 2m, 1h30m)")]
pub struct DurationError(pub String);

pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_owned());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num.parse().map_err(|_| err())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

/// clap value parser.
pub fn flag(s: &str) -> Result<Duration, String> {
    parse(s).map_err(|e| e.to_string())
}

/// clap value parser for timeouts, where zero would fail everything.
pub fn positive_flag(s: &str) -> Result<Duration, String> {
    match flag(s)? {
        Duration::ZERO => Err(format!("{s:?} must be greater than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5x", "-1s", "1..2s", "5 s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(positive_flag("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(
            positive_flag("0s"),
            Err("\"0s\" must be greater than zero".to_owned())
        );
        assert!(positive_flag("0").is_err());
        assert!(positive_flag("soon").is_err());
    }
}
