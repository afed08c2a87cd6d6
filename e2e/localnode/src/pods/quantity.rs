//! Resource quantities ("500m", "1Gi", "2e3") and `resourceFieldRef` values.

/// A quantity in units of 10⁻⁹.
pub type Nanos = i128;

const NANO: Nanos = 1_000_000_000;

/// Parses a Kubernetes quantity into nano-units.
pub fn parse(q: &str) -> Result<Nanos, String> {
    let bad = || format!("invalid quantity {q:?}");
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier = suffix_nanos(suffix).ok_or_else(bad)?;
    let (negative, digits) = match number.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    let mantissa: Nanos = format!("{int}{frac}").parse().map_err(|_| bad())?;
    let scale = 10i128.checked_pow(frac.len() as u32).ok_or_else(bad)?;
    let value = mantissa.checked_mul(multiplier).ok_or_else(bad)?;
    // Round up like Kubernetes does when a quantity has more precision than nano units.
    let nanos = (value + scale - 1) / scale;
    Ok(if negative { -nanos } else { nanos })
}

/// Multiplier of a suffix, in nano-units (`None` if unknown).
fn suffix_nanos(suffix: &str) -> Option<Nanos> {
    let bin = |p: u32| Some((1i128 << p) * NANO);
    match suffix {
        "n" => Some(1),
        "u" => Some(1_000),
        "m" => Some(1_000_000),
        "" => Some(NANO),
        "k" => Some(1_000 * NANO),
        "M" => Some(1_000_000 * NANO),
        "G" => Some(1_000_000_000 * NANO),
        "T" => Some(10i128.pow(12) * NANO),
        "P" => Some(10i128.pow(15) * NANO),
        "E" => Some(10i128.pow(18) * NANO),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            let e = exp + 9;
            (0..=38).contains(&e).then(|| 10i128.pow(e as u32))
        }
        _ => None,
    }
}

/// `ceil(value / divisor)` as the kubelet renders a `resourceFieldRef`.
pub fn divide_ceil(value: Nanos, divisor: Nanos) -> Result<String, String> {
    if divisor <= 0 {
        return Err("resourceFieldRef divisor must be positive".to_string());
    }
    let q = value.div_euclid(divisor) + i128::from(value.rem_euclid(divisor) != 0);
    Ok(q.to_string())
}

/// The node's allocatable amount of a resource, used when a container sets no limit.
pub fn node_allocatable(resource: &str) -> Nanos {
    match resource {
        "cpu" => std::thread::available_parallelism().map_or(1, |n| n.get() as Nanos) * NANO,
        "memory" => mem_total_bytes() * NANO,
        _ => 0,
    }
}

fn mem_total_bytes() -> Nanos {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<Nanos>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse("1").unwrap(), NANO);
        assert_eq!(parse("500m").unwrap(), NANO / 2);
        assert_eq!(parse("1.5").unwrap(), 3 * NANO / 2);
        assert_eq!(parse("1Gi").unwrap(), (1 << 30) * NANO);
        assert_eq!(parse("128Mi").unwrap(), 128 * (1 << 20) * NANO);
        assert_eq!(parse("2k").unwrap(), 2000 * NANO);
        assert_eq!(parse("1e3").unwrap(), 1000 * NANO);
        assert_eq!(parse("100n").unwrap(), 100);
        assert!(parse("1Qi").is_err());
        assert!(parse("abc").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn divides_with_ceiling() {
        let v = |s| parse(s).unwrap();
        assert_eq!(divide_ceil(v("250m"), v("1")).unwrap(), "1");
        assert_eq!(divide_ceil(v("250m"), v("1m")).unwrap(), "250");
        assert_eq!(divide_ceil(v("1Gi"), v("1Mi")).unwrap(), "1024");
        assert_eq!(divide_ceil(v("1G"), v("1Mi")).unwrap(), "954");
        assert_eq!(divide_ceil(v("0"), v("1")).unwrap(), "0");
        assert!(divide_ceil(v("1"), 0).is_err());
    }
}
