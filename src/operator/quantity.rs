//! Comparing Kubernetes quantities (`1Gi`, `500M`, `1.5Ti`) well enough to tell
//! whether a volume grows.

/// The value of a quantity in base units, or `None` if it is not one.
pub fn parse(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * multiplier)
}

/// The larger of `wanted` and `current` (by value); `wanted` when either does not parse.
pub fn at_least<'a>(wanted: &'a str, current: Option<&'a str>) -> &'a str {
    match (
        parse(wanted),
        current.and_then(|c| parse(c).map(|v| (c, v))),
    ) {
        (Some(w), Some((c, v))) if v > w => c,
        _ => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_exponent_suffixes() {
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("512Mi"), Some(536870912.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1.5Ki"), Some(1536.0));
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("12"), Some(12.0));
        assert_eq!(parse("1Xi"), None);
        assert_eq!(parse("Gi"), None);
    }

    #[test]
    fn at_least_never_shrinks() {
        assert_eq!(at_least("1Gi", Some("2Gi")), "2Gi");
        assert_eq!(at_least("2Gi", Some("1Gi")), "2Gi");
        assert_eq!(at_least("1Gi", Some("1024Mi")), "1Gi");
        assert_eq!(at_least("1Gi", None), "1Gi");
        assert_eq!(at_least("1Gi", Some("junk")), "1Gi");
    }
}
