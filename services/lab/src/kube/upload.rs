//! CDI uploads: `UploadTokenRequest`s (`upload.cdi.kubevirt.io/v1beta1`) get a token for a PVC, and
//! the upload proxy endpoints (`POST /v1beta1/upload[-async]`, `/v1beta1/upload-form[-async]`) take
//! the image with `Authorization: Bearer <token>`; the DataVolume then completes.

use axum::body::Body;
use axum::http::Response;
use base64::Engine;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, Req};
use crate::kube::resources::keys;
use crate::state::Shared;

/// Give a new UploadTokenRequest its token.
pub fn issue_token(obj: &mut Value) {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let pvc = obj
        .pointer("/spec/pvcName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let claims = json!({"namespace": ns, "pvc": pvc, "nonce": rand::random::<u64>()}).to_string();
    obj["status"] =
        json!({"token": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)});
}

/// Serve the upload proxy.
pub fn handle(shared: &Shared, req: &Req) -> Response<Body> {
    match upload(shared, req) {
        Ok(()) => http::bytes_response(200, "text/plain; charset=utf-8", bytes::Bytes::new()),
        Err(e) => http::text(e.status_code(), &e.to_string()),
    }
}

fn upload(shared: &Shared, req: &Req) -> Result<()> {
    if req.method != axum::http::Method::POST {
        return Err(Error::MethodNotAllowed);
    }
    let token = req
        .header("authorization")
        .strip_prefix("Bearer ")
        .unwrap_or("")
        .trim();
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Error::Unauthorized("authentication failed".into()))?;
    let ns = claims["namespace"].as_str().unwrap_or("").to_string();
    let pvc = claims["pvc"].as_str().unwrap_or("").to_string();
    let dv = shared
        .store
        .get_shared(keys::DATAVOLUMES, &ns, &pvc)
        .ok_or_else(|| Error::Unauthorized("authentication failed".into()))?;
    if dv.pointer("/status/phase").and_then(Value::as_str) != Some("UploadReady") {
        return Err(Error::Unavailable {
            message: format!("upload server for {ns}/{pvc} is not ready"),
            retry_after: Some(2),
        });
    }
    if req.body.is_empty() {
        return Err(Error::BadRequest("empty upload".into()));
    }
    let size = req.body.len();
    shared.store.modify(keys::DATAVOLUMES, &ns, &pvc, |d| {
        d["metadata"]["annotations"]["lab.drover.dev/uploaded-bytes"] = json!(size.to_string());
        Ok(())
    })?;
    Ok(())
}
