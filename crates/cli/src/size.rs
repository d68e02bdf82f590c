//! Sizes as people write them: 4096, 4k, 10M, 2G, 1T (binary multiples).

pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).map_err(|_| format!("{text:?} is not a size"))?
    } else {
        digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size (try 4096, 4k, 10M, 2G)"))?
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("4k"), Ok(4096));
        assert_eq!(parse("10M"), Ok(10 << 20));
        assert_eq!(parse("2G"), Ok(2 << 30));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert_eq!(parse("0x1000"), Ok(4096));
        assert!(parse("ten").is_err());
        assert!(parse("99999999999T").is_err());
        assert_eq!(human(1536 << 20), "1.5 GiB");
    }
}
