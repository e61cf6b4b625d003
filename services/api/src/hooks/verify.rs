//! Webhook signatures: HMAC-SHA256 over the raw body (or `<timestamp>.<body>`), compared in
//! constant time (`ring::hmac::verify`), and the sender's timestamp checked against a window.

/// Why a delivery's signature was refused (said to the sender without any secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Missing(&'static str),
    Malformed(&'static str),
    Mismatch,
    Timestamp(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing(h) => write!(f, "the {h} header is missing"),
            Refused::Malformed(h) => write!(
                f,
                "the {h} header is not of the form sha256=<64 hex digits>"
            ),
            Refused::Mismatch => write!(
                f,
                "the signature does not match the body (HMAC-SHA256 with the configured secret)"
            ),
            Refused::Timestamp(why) => f.write_str(why),
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `header` (`sha256=<hex>`, or bare hex when `prefix_optional`) against HMAC-SHA256 of
/// `message` with `secret`.
pub fn check(
    secret: &[u8],
    message: &[u8],
    header: Option<&str>,
    name: &'static str,
    prefix_optional: bool,
) -> Result<(), Refused> {
    let value = header.ok_or(Refused::Missing(name))?.trim();
    let hex = match value.strip_prefix("sha256=") {
        Some(h) => h,
        None if prefix_optional => value,
        None => return Err(Refused::Malformed(name)),
    };
    let tag = unhex(hex)
        .filter(|t| t.len() == 32)
        .ok_or(Refused::Malformed(name))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, message, &tag).map_err(|_| Refused::Mismatch)
}

/// Checks a sender's timestamp (Unix seconds) is within `tolerance_secs` of `now_ms`.
pub fn timestamp(
    header: Option<&str>,
    name: &'static str,
    now_ms: u64,
    tolerance_secs: u64,
) -> Result<i64, Refused> {
    let ts: i64 = header
        .ok_or(Refused::Missing(name))?
        .trim()
        .parse()
        .map_err(|_| Refused::Timestamp(format!("the {name} header is not Unix seconds")))?;
    let skew = (now_ms as i64 / 1000 - ts).abs();
    if skew as u64 > tolerance_secs {
        return Err(Refused::Timestamp(format!(
            "the {name} header is {skew} s away from the receiver's clock (at most \
             {tolerance_secs} s): a replay, or a clock to fix"
        )));
    }
    Ok(ts)
}

/// The scheme with a sender timestamp (ServiceNow's outbound messages, the generic hook): the
/// signature is over `<timestamp>.<body>`, then the timestamp must be within `tolerance_secs`.
/// Returns the timestamp (Unix seconds).
#[allow(clippy::too_many_arguments)]
pub fn check_timestamped(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
    signature_name: &'static str,
    prefix_optional: bool,
    timestamp_value: Option<&str>,
    timestamp_name: &'static str,
    now_ms: u64,
    tolerance_secs: u64,
) -> Result<i64, Refused> {
    let mut signed = timestamp_value.unwrap_or_default().as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    check(secret, &signed, signature, signature_name, prefix_optional)?;
    timestamp(timestamp_value, timestamp_name, now_ms, tolerance_secs)
}

/// HMAC-SHA256 of `message` as lowercase hex (senders and tests sign with it).
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::sign(&key, message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_test_vector_and_refusals() {
        // GitHub's documented vector (domain-apis.md section 6).
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), &good[7..]);
        assert_eq!(
            check(secret, body, Some(good), "X-Hub-Signature", false),
            Ok(())
        );
        assert_eq!(
            check(
                secret,
                b"Hello, World?",
                Some(good),
                "X-Hub-Signature",
                false
            ),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            check(secret, body, None, "X-Hub-Signature", false),
            Err(Refused::Missing("X-Hub-Signature"))
        );
        assert_eq!(
            check(secret, body, Some(&good[7..]), "X-Hub-Signature", false),
            Err(Refused::Malformed("X-Hub-Signature"))
        );
        assert_eq!(check(secret, body, Some(&good[7..]), "X", true), Ok(()));
        assert_eq!(
            check(secret, body, Some("sha256=zz"), "X", false),
            Err(Refused::Malformed("X"))
        );
        assert!(timestamp(Some("1000"), "T", 1_000_000, 300).is_ok());
        assert!(timestamp(Some("1400"), "T", 1_000_000, 300).is_err());
        assert!(timestamp(Some("x"), "T", 1_000_000, 300).is_err());
    }
}
