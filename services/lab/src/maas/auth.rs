//! MAAS API authentication: OAuth 1.0a from an API key `consumer:token:secret` (empty consumer
//! secret), with PLAINTEXT (`oauth_signature="%26<secret>"`) and HMAC-SHA1 signatures verified.
//! Anything else is 401 `Authorization Error: Invalid API key.`

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, Result};

/// The message MAAS answers bad credentials with.
pub const INVALID: &str = "Authorization Error: Invalid API key.";

const REQUIRED: &[&str] = &[
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
];

/// RFC 3986 unreserved characters stay; everything else is escaped (OAuth's encoding).
const OAUTH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the request looked like, for the HMAC base string.
pub struct Signed<'a> {
    pub method: &'a str,
    /// `http://host/path` without the query.
    pub base_url: String,
    /// Query parameters plus urlencoded form parameters.
    pub params: Vec<(String, String)>,
}

/// Parse `Authorization: OAuth k="v", ...` into decoded pairs.
pub fn parse_header(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("OAuth")?.trim();
    let mut out = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=')?;
        let v = v.trim().trim_matches('"');
        out.push((
            k.trim().to_string(),
            percent_decode_str(v).decode_utf8_lossy().into_owned(),
        ));
    }
    Some(out)
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, OAUTH).to_string()
}

/// Check a request's Authorization header against the API key. Returns the user on success.
pub fn verify(header: &str, api_key: &str, req: &Signed<'_>) -> Result<()> {
    let unauthorized = || Error::Unauthorized(INVALID.into());
    let mut key = api_key.splitn(3, ':');
    let (consumer, token, secret) = match (key.next(), key.next(), key.next()) {
        (Some(c), Some(t), Some(s)) => (c, t, s),
        _ => return Err(unauthorized()),
    };
    let params = parse_header(header).ok_or_else(unauthorized)?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if REQUIRED.iter().any(|k| get(k).is_none()) {
        return Err(unauthorized());
    }
    if get("oauth_consumer_key") != Some(consumer) || get("oauth_token") != Some(token) {
        return Err(unauthorized());
    }
    let signature = get("oauth_signature").unwrap_or("");
    let signing_key = format!("&{}", enc(secret));
    match get("oauth_signature_method") {
        Some("PLAINTEXT") if signature == signing_key || signature == format!("&{secret}") => {
            Ok(())
        }
        Some("HMAC-SHA1") => {
            let mut all: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| k != "realm" && k != "oauth_signature")
                .cloned()
                .chain(req.params.iter().cloned())
                .map(|(k, v)| (enc(&k), enc(&v)))
                .collect();
            all.sort();
            let normalized: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let base = format!(
                "{}&{}&{}",
                req.method.to_uppercase(),
                enc(&req.base_url),
                enc(&normalized.join("&"))
            );
            let k = ring::hmac::Key::new(
                ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                signing_key.as_bytes(),
            );
            let want = base64::engine::general_purpose::STANDARD
                .encode(ring::hmac::sign(&k, base.as_bytes()).as_ref());
            if want == signature {
                Ok(())
            } else {
                Err(unauthorized())
            }
        }
        _ => Err(unauthorized()),
    }
}

/// A PLAINTEXT `Authorization` header for an API key, as python-libmaas and gomaasapi send it
/// (for tests and tools that talk to the lab without a MAAS client library).
pub fn plaintext_header(api_key: &str) -> String {
    let mut k = api_key.splitn(3, ':');
    let (consumer, token, secret) = (
        k.next().unwrap_or(""),
        k.next().unwrap_or(""),
        k.next().unwrap_or(""),
    );
    format!(
        r#"OAuth realm="", oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="{}", oauth_token="{}", oauth_signature="{}", oauth_nonce="{}", oauth_timestamp="{}""#,
        enc(consumer),
        enc(token),
        enc(&format!("&{secret}")),
        rand::random::<u64>(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    )
}

/// An HMAC-SHA1 `Authorization` header, as spectrocloud/maas-client-go signs: the base string is the
/// method, the URL without query, and the sorted OAuth and query parameters.
pub fn hmac_header(api_key: &str, method: &str, base_url: &str, query: &[(&str, &str)]) -> String {
    let mut k = api_key.splitn(3, ':');
    let (consumer, token, secret) = (
        k.next().unwrap_or(""),
        k.next().unwrap_or(""),
        k.next().unwrap_or(""),
    );
    let nonce = rand::random::<u64>().to_string();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let oauth = [
        ("oauth_consumer_key", consumer),
        ("oauth_token", token),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", timestamp.as_str()),
        ("oauth_nonce", nonce.as_str()),
        ("oauth_version", "1.0"),
    ];
    let mut all: Vec<(String, String)> = oauth
        .iter()
        .chain(query.iter())
        .map(|(a, b)| (enc(a), enc(b)))
        .collect();
    all.sort();
    let normalized: Vec<String> = all.iter().map(|(a, b)| format!("{a}={b}")).collect();
    let base = format!(
        "{}&{}&{}",
        method.to_uppercase(),
        enc(base_url),
        enc(&normalized.join("&"))
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("&{}", enc(secret)).as_bytes(),
    );
    let sig = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, base.as_bytes()).as_ref());
    let fields: Vec<String> = oauth
        .iter()
        .map(|(a, b)| format!("{a}=\"{}\"", enc(b)))
        .collect();
    format!(
        "OAuth {}, oauth_signature=\"{}\"",
        fields.join(", "),
        enc(&sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ck:tk:sec";

    fn signed() -> Signed<'static> {
        Signed {
            method: "GET",
            base_url: "http://127.0.0.1:5240/MAAS/api/2.0/machines/".into(),
            params: vec![("op".into(), "list_allocated".into())],
        }
    }

    #[test]
    fn plaintext() {
        let h = r#"OAuth realm="OAuth", oauth_nonce="1", oauth_timestamp="2", oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="ck", oauth_token="tk", oauth_signature="%26sec""#;
        assert!(verify(h, KEY, &signed()).is_ok());
        assert!(verify(&h.replace("%26sec", "%26bad"), KEY, &signed()).is_err());
        assert!(verify(&h.replace(r#"oauth_nonce="1", "#, ""), KEY, &signed()).is_err());
        assert!(verify("Bearer x", KEY, &signed()).is_err());
    }

    #[test]
    fn hmac_sha1() {
        // Base string and key as RFC 5849 builds them; signature computed independently.
        let params = [
            ("oauth_consumer_key", "ck"),
            ("oauth_nonce", "n"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1"),
            ("oauth_token", "tk"),
            ("oauth_version", "1.0"),
            ("op", "list_allocated"),
        ];
        let normalized: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let base = format!(
            "GET&{}&{}",
            enc("http://127.0.0.1:5240/MAAS/api/2.0/machines/"),
            enc(&normalized.join("&"))
        );
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"&sec");
        let sig = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&k, base.as_bytes()).as_ref());
        let h = format!(
            r#"OAuth oauth_consumer_key="ck", oauth_nonce="n", oauth_signature_method="HMAC-SHA1", oauth_timestamp="1", oauth_token="tk", oauth_version="1.0", oauth_signature="{}""#,
            enc(&sig)
        );
        assert!(verify(&h, KEY, &signed()).is_ok());
        let other = Signed {
            method: "POST",
            ..signed()
        };
        assert!(verify(&h, KEY, &other).is_err());
    }
}
