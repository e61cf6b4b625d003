//! Kubernetes resource quantities (`8Gi`, `512Mi`, `1.5G`, `500m`) as plain numbers, for capacity
//! arithmetic in the scheduler.

/// Parse a quantity into base units (bytes, or cores for CPU). `None` when malformed.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powf(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// A quantity in the JSON form the API returns (string or number), in base units.
pub fn from_json(v: Option<&serde_json::Value>) -> Option<f64> {
    match v? {
        serde_json::Value::String(s) => parse(s),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Bytes as a `<n>Gi`/`<n>Mi` quantity string.
pub fn bytes_to_string(bytes: f64) -> String {
    let gib = bytes / 1024f64.powi(3);
    if gib.fract() == 0.0 {
        format!("{gib}Gi")
    } else {
        format!("{}Mi", (bytes / 1024f64.powi(2)).round())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases = [
            ("8Gi", Some(8.0 * 1073741824.0)),
            ("512Mi", Some(536870912.0)),
            ("500m", Some(0.5)),
            ("4", Some(4.0)),
            ("1G", Some(1e9)),
            ("1e3", Some(1000.0)),
            ("x", None),
            ("5Qi", None),
        ];
        for (q, want) in cases {
            assert_eq!(parse(q), want, "{q}");
        }
        assert_eq!(bytes_to_string(8.0 * 1073741824.0), "8Gi");
    }
}
