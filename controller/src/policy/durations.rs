//! Durations (and rates) as operators write them, for the CLI's flags and the dashboard's forms
//! alike (the same words in the same errors): "90s", "15m", "24h", "7d", "1h30m".
//! The error is the text shown after the field's name.

use std::time::Duration;

/// A value an operator wrote that does not read as what was asked; the text quotes it
/// and says what was expected (shown after the flag's or field's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(pub String);

impl BadValue {
    /// The same complaint, prefixed with the flag or field it is about.
    pub fn about(self, what: &str) -> BadValue {
        BadValue(format!("{what}: {}", self.0))
    }
}

/// A duration longer than zero (a bare number is refused: which unit?).
pub fn parse_duration(s: &str) -> Result<Duration, BadValue> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        // "24" could mean seconds, hours or days: say which.
        return Err(BadValue(format!(
            "{s:?}: a duration needs a unit, e.g. {s}h, {s}m, {s}s or {s}d"
        )));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        BadValue(format!(
            "{s:?}: {e}; expected e.g. 24h, 30m, 90s, 7d or 1h30m"
        ))
    })?;
    if d.is_zero() {
        return Err(BadValue(format!("{s:?}: must be longer than zero")));
    }
    Ok(d)
}

/// A duration that may be zero: "0", "0s", or anything [`parse_duration`] takes.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, BadValue> {
    let t = s.trim();
    if t == "0" || humantime::parse_duration(t).is_ok_and(|d| d.is_zero()) {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// "512KiB", "2MiB", "100000" (bytes per second).
pub fn parse_rate(s: &str) -> Result<u64, BadValue> {
    let t = s.trim().trim_end_matches("/s");
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
    .unwrap_or((t, 1));
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| BadValue(format!("{s:?}: expected a rate such as 512KiB or 2MiB")))
}
