//! Secrets: one key of one Secret, for the worker's `kubernetes` secret sources. This is not part of
//! the `Kube` port on purpose: steps name secrets and the worker resolves them; no step reads the
//! cluster's Secrets itself.
//!
//! The Secret is fetched as text and decoded here rather than through `Api<Secret>::get`: kube-rs
//! logs the whole response body at warn level when it cannot decode one, and that body is the
//! Secret. Errors name the Secret and the key, never a value.

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::GetParams;
use kube::core::Request;

use drover_workflows::ports::kube::KubeError;

use crate::error::retrying;

/// The bytes under `key` in Secret `namespace/name` (k8s-openapi's `ByteString` undoes the base64).
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, KubeError> {
    // Both go into the request path unescaped: hold them to the DNS-label-ish form Kubernetes gives
    // them, so a name can never address another resource.
    for part in [namespace, name] {
        if !is_object_name(part) {
            return Err(KubeError::Permanent(format!(
                "{part:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.')"
            )));
        }
    }
    let request = Request::new(Secret::url_path(&(), Some(namespace)))
        .get(name, &GetParams::default())
        .map_err(|e| KubeError::Permanent(e.to_string()))?;
    let text = retrying("read secret", || client.request_text(request.clone())).await?;
    let secret: Secret = serde_json::from_str(&text).map_err(|_| {
        // serde's message can quote the body; say only what could not be read.
        KubeError::Permanent(format!(
            "Secret {namespace}/{name} could not be decoded as a Secret"
        ))
    })?;
    secret
        .data
        .and_then(|mut data| data.remove(key))
        .map(|bytes| bytes.0)
        .ok_or_else(|| KubeError::NotFound(format!("Secret {namespace}/{name} has no key {key:?}")))
}

fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}
