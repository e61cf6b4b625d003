//! Secrets by reference. A workflow's input names a secret ([`SecretRef`], written
//! `{"secret": "<name>"}`); the worker resolves the name from its own configuration through the
//! [`Secrets`] port. So inputs, outputs, history, logs and API responses hold names, never values:
//! a field declared a secret refuses a literal value at submission, and a resolved [`Secret`] shows
//! as `<redacted>` however it is printed.

use std::fmt;

use async_trait::async_trait;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A reference to a secret by name, as inputs carry it: `{"secret": "maas-api-key"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef(String);

/// Its schema says what its deserializer accepts: `{"secret": "<name>"}` and nothing else.
impl schemars::JsonSchema for SecretRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a reference to a secret by name, never the secret itself",
            "type": "object",
            "properties": {
                "secret": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,63}$"}
            },
            "required": ["secret"],
            "additionalProperties": false
        })
    }
}

impl SecretRef {
    pub fn new(name: impl Into<String>) -> SecretRef {
        SecretRef(name.into())
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("secret", &self.0)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
        struct V;
        const EXPECTED: &str = "a secret reference {\"secret\": \"<name>\"}";
        const LITERAL: &str = "this field is a secret: name it as {\"secret\": \"<name>\"} (a secret \
                               in the worker's configuration); secret values are never accepted in \
                               workflow inputs";
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            // A literal is refused without echoing it: serde's default message would quote it.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(LITERAL))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(LITERAL))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(LITERAL))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut name: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" || name.is_some() {
                        return Err(de::Error::custom(format!(
                            "{EXPECTED}: unexpected key {key:?}"
                        )));
                    }
                    name = Some(map.next_value()?);
                }
                let name = name.ok_or_else(|| de::Error::custom(EXPECTED))?;
                if !crate::model::is_name(&name) {
                    return Err(de::Error::custom(format!(
                        "secret names are {}",
                        crate::model::NAME_RULE
                    )));
                }
                Ok(SecretRef(name))
            }
        }
        d.deserialize_any(V)
    }
}

/// A resolved secret value. It prints as `<redacted>`; [`Secret::expose`] is the one way to read
/// it, for the adapter that sends it where it belongs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be resolved. Messages name the secret and its source, never its value:
/// `Unavailable` and `Invalid` carry the quoted name and the reason, `"maas-key" (environment
/// variable MAAS_KEY is not set)`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    /// The name is not in the worker's `[secrets]`.
    #[error("no secret named {0:?} is configured on this worker; add it under [secrets]")]
    Unknown(String),
    /// The source did not answer (a file not there yet, the cluster unreachable): worth retrying.
    #[error("secret {0} is unavailable for now")]
    Unavailable(String),
    /// The source answered, but not with a usable value (unset, empty, not UTF-8, no such key).
    #[error("secret {0} is unusable")]
    Invalid(String),
}

/// Where a worker finds secret values by name.
#[async_trait]
pub trait Secrets: Send + Sync {
    async fn get(&self, name: &str) -> Result<Secret, SecretError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_parse_and_literals_are_refused_without_echo() {
        let r: SecretRef = serde_json::from_value(json!({"secret": "maas-key"})).unwrap();
        assert_eq!(r.name(), "maas-key");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"secret": "maas-key"})
        );
        let e = serde_json::from_value::<SecretRef>(json!("hunter2-literal")).unwrap_err();
        assert!(e.to_string().contains("this field is a secret"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(serde_json::from_value::<SecretRef>(json!({"secret": "a b"})).is_err());
        assert!(serde_json::from_value::<SecretRef>(json!({"value": "x"})).is_err());
        assert_eq!(
            format!("{:?} {}", Secret::new("v"), Secret::new("v")),
            "<redacted> <redacted>"
        );
    }
}
