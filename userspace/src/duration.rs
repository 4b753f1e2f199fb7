//! The one parser of duration flags: `500ms`, `2s` or `2` (seconds). Zero is rejected:
//! every duration geodns takes is a period or a timeout, and a zero one would either
//! spin (an interval), panic (tokio's `interval`) or fail every operation at once.

use std::time::Duration;

/// Parses a duration flag; see the module doc.
pub fn parse(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected e.g. 500ms, 2s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        _ => return Err(format!("`{s}`: unit must be ms or s")),
    };
    if d.is_zero() {
        return Err(format!("`{s}`: must be more than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_zero() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        for bad in ["0", "0s", "0ms", "1m", "", "s", "-1s", "1.5s"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
