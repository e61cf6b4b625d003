//! MAAS API authentication: OAuth 1.0a with the PLAINTEXT signature, from an API key
//! `<consumer_key>:<token_key>:<token_secret>` (the consumer secret is empty, as MAAS issues keys).
//! Every request gets a fresh header (timestamp, nonce). The key lives only in [`ApiKey`], which
//! prints as `<redacted>`, and in the header value, which is marked sensitive; no error or log
//! line carries either.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use drover_workflows::ports::secrets::Secret;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderValue;

use crate::error::Error;

/// OAuth's percent-encoding: RFC 3986's unreserved characters stay, everything else is escaped.
const OAUTH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, OAUTH).to_string()
}

/// A parsed MAAS API key.
#[derive(Clone)]
pub struct ApiKey {
    consumer_key: Secret,
    token_key: Secret,
    token_secret: Secret,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ApiKey {
    /// Splits `consumer_key:token_key:token_secret`. The error never quotes the key.
    pub fn parse(key: &Secret) -> Result<ApiKey, Error> {
        let mut parts = key.expose().trim().splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(t), Some(s)) if !c.is_empty() && !t.is_empty() && !s.is_empty() => {
                Ok(ApiKey {
                    consumer_key: Secret::new(c),
                    token_key: Secret::new(t),
                    token_secret: Secret::new(s),
                })
            }
            _ => Err(Error::Config(
                "the MAAS API key is not <consumer_key>:<token_key>:<token_secret> (three \
                 non-empty fields separated by ':', as `maas apikey` prints it)"
                    .into(),
            )),
        }
    }

    /// A fresh `Authorization` header: PLAINTEXT signature `<consumer_secret>&<token_secret>`
    /// with an empty consumer secret, each value percent-encoded as OAuth requires.
    pub fn header(&self) -> HeaderValue {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let nonce: u64 = rand::random();
        let signature = format!("&{}", enc(self.token_secret.expose()));
        let value = format!(
            "OAuth realm=\"\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", \
             oauth_signature_method=\"PLAINTEXT\", oauth_signature=\"{}\", \
             oauth_timestamp=\"{timestamp}\", oauth_nonce=\"{nonce}\", oauth_version=\"1.0\"",
            enc(self.consumer_key.expose()),
            enc(self.token_key.expose()),
            enc(&signature),
        );
        // Percent-encoding leaves only visible ASCII, so the value is always a valid header.
        let mut header = HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("OAuth realm=\"\""));
        header.set_sensitive(true);
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_header_and_redaction() {
        let key = ApiKey::parse(&Secret::new("ck:tk:s3cret/+x")).unwrap();
        let h = key.header();
        assert!(h.is_sensitive());
        let h = h.to_str().unwrap();
        assert!(h.starts_with("OAuth realm=\"\", oauth_consumer_key=\"ck\", oauth_token=\"tk\""));
        assert!(h.contains("oauth_signature_method=\"PLAINTEXT\""));
        // "&" + enc("s3cret/+x"), encoded once more for the header.
        assert!(
            h.contains("oauth_signature=\"%26s3cret%252F%252Bx\""),
            "{h}"
        );
        assert!(h.contains("oauth_version=\"1.0\""));
        assert_eq!(format!("{key:?}"), "<redacted>");
        for bad in ["", "a:b", "a::c", "a:b:"] {
            let e = ApiKey::parse(&Secret::new(bad)).unwrap_err().to_string();
            assert!(e.contains("is not <consumer_key>"), "{e}");
        }
        let e = ApiKey::parse(&Secret::new("only-one-part-hunter2"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
