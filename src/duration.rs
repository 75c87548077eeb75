//! Karpenter's duration fields (`consolidateAfter`, `expireAfter`, `terminationGracePeriod`, budget
//! `duration`): Go-style `1h30m`, `90s`, or `Never`.

use std::time::Duration;

/// `1h30m`, `90s`, `2h` → a duration; `None` when unreadable (and for `Never`).
pub fn parse(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(unit)?)?;
    }
    number.is_empty().then_some(Duration::from_secs(total))
}

/// A duration field that may say `Never`: `Ok(None)` for Never, `Err` for anything unreadable.
pub fn parse_or_never(text: &str) -> Result<Option<Duration>, String> {
    if text == "Never" {
        return Ok(None);
    }
    parse(text).map(Some).ok_or_else(|| format!("{text:?} is not a duration (like 30s, 10m, 1h30m) or Never"))
}

/// A command-line duration (`15m`, `1h30m`), with an error that says how to write one.
pub fn parse_flag(text: &str) -> Result<Duration, String> {
    parse(text).ok_or_else(|| format!("{text:?} is not a duration (like 30s, 10m, 1h30m)"))
}

/// Go's way, as Karpenter's fields are written: `1h30m`, `2m`, `45s`, `0s` (whole seconds).
pub fn format(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 || text.is_empty() {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_are_written_and_read_back() {
        for (seconds, text) in [(0, "0s"), (45, "45s"), (120, "2m"), (5400, "1h30m"), (3661, "1h1m1s")] {
            assert_eq!(format(Duration::from_secs(seconds)), text);
            assert_eq!(parse(text), Some(Duration::from_secs(seconds)));
        }
    }

    #[test]
    fn durations_read_as_karpenter_writes_them() {
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("720h"), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("Never"), None);
        assert_eq!(parse("10"), None);
        assert_eq!(parse_or_never("Never"), Ok(None));
        assert_eq!(parse_or_never("2m"), Ok(Some(Duration::from_secs(120))));
        assert!(parse_or_never("soon").is_err());
    }
}
