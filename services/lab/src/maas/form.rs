//! MAAS request parameters: the query string plus an `application/x-www-form-urlencoded` or
//! `multipart/form-data` body (python-libmaas sends base64 transfer-encoded parts). Repeated keys
//! are multi-valued (`tags=a&tags=b`). As Django's parser does, a multipart body without parts,
//! or whose parts are empty or unnamed, carries no parameters: python-libmaas sends exactly that
//! (one empty part) for `allocate()` without constraints and `deploy()` with defaults.

use base64::Engine;

use crate::error::{Error, Result};
use crate::http::Req;

/// Ordered, multi-valued parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parameters from literal pairs, as unit tests write them.
    #[cfg(test)]
    pub fn of(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// First value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a key (comma-separated values are split too, as MAAS accepts `tags=a,b`).
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A boolean flag (`true`, `1`, `on`).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "on" | "yes"))
    }
}

/// Form errors, gathered field by field as Django reports them; MAAS answers them all at once
/// as a 400 `{"field": ["message", ...]}`.
#[derive(Default)]
pub struct Errors(serde_json::Map<String, serde_json::Value>);

impl Errors {
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        let entry = self
            .0
            .entry(field.to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(a) = entry {
            a.push(serde_json::Value::String(msg.into()));
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// `Ok` when there is none, else every error as one validation error.
    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(serde_json::Value::Object(self.0)))
        }
    }
}

/// Query and body parameters of a request.
pub fn params(req: &Req) -> Result<Params> {
    let mut out = req.query.clone();
    let ct = req.header("content-type").to_string();
    if req.body.is_empty() {
        return Ok(Params(out));
    }
    if ct.starts_with("multipart/form-data") {
        let boundary = ct
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_string())
            .ok_or_else(|| Error::BadRequest("Invalid boundary in multipart: None".into()))?;
        out.extend(multipart(&req.body, &boundary)?);
    } else if ct.starts_with("application/x-www-form-urlencoded") || ct.is_empty() {
        out.extend(form_urlencoded::parse(&req.body).into_owned());
    } else if ct.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(&req.body)
            .map_err(|e| Error::BadRequest(format!("Invalid JSON: {e}")))?;
        if let Some(o) = v.as_object() {
            for (k, v) in o {
                match v {
                    serde_json::Value::Array(a) => {
                        out.extend(a.iter().map(|x| (k.clone(), scalar(x))))
                    }
                    x => out.push((k.clone(), scalar(x))),
                }
            }
        }
    }
    Ok(Params(out))
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parse a multipart/form-data body. Empty parts and parts without a `name` are skipped (Django
/// skips them too); a part with content but no blank line after its headers, or a base64 part
/// that does not decode, is a 400.
pub fn multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>> {
    let bad = || Error::BadRequest("Invalid multipart body".into());
    let text = String::from_utf8_lossy(body);
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    for part in text.split(&delim).skip(1) {
        if part.starts_with("--") {
            break;
        }
        if part.trim().is_empty() {
            continue;
        }
        let part = part
            .strip_prefix("\r\n")
            .or_else(|| part.strip_prefix('\n'))
            .unwrap_or(part);
        let (head, value) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))
            .ok_or_else(bad)?;
        let mut name = None;
        let mut base64_encoded = false;
        for line in head.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                name = line
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("name="))
                    .map(|n| n.trim_matches('"').to_string());
            } else if lower.starts_with("content-transfer-encoding:") && lower.contains("base64") {
                base64_encoded = true;
            }
        }
        let Some(name) = name else { continue };
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(value);
        let value = if base64_encoded {
            let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| bad())?;
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            value.to_string()
        };
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_libmaas_multipart() {
        let body = "--===============7198413373808836249==\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=\"tags\"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\ndm1vLXdvcmtlcg==\r\n\r\n--===============7198413373808836249==\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=\"user_data\"\r\n\r\nSTJOc2IzVms=\r\n\r\n--===============7198413373808836249==--";
        let got = multipart(body.as_bytes(), "===============7198413373808836249==").unwrap();
        assert_eq!(
            got,
            vec![
                ("tags".into(), "vmo-worker".into()),
                ("user_data".into(), "I2Nsb3Vk".into())
            ]
        );
        assert!(multipart(b"--b\r\ngarbage", "b").is_err());
    }

    #[test]
    fn empty_multipart_bodies_carry_no_parameters() {
        // What python-libmaas sends for `allocate()` and `deploy()` without arguments.
        let b = "===============8666602823579139788==";
        let one_empty_part = format!("--{b}\r\n\r\n--{b}--");
        let no_parts = format!("--{b}--");
        let unnamed = format!("--{b}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{b}--");
        let cases = [
            (one_empty_part.as_str(), Vec::new()),
            (no_parts.as_str(), Vec::new()),
            (unnamed.as_str(), Vec::new()),
            ("", Vec::new()),
        ];
        for (body, want) in cases {
            assert_eq!(multipart(body.as_bytes(), b).unwrap(), want, "{body:?}");
        }
        let bad_base64 = format!(
            "--{b}\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n@@@\r\n--{b}--"
        );
        assert!(multipart(bad_base64.as_bytes(), b).is_err());
    }
}
