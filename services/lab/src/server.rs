//! The HTTP front: one axum app serving the Kubernetes API at `/`, CDI's upload proxy at
//! `/v1beta1/upload*`, the MAAS region at `/MAAS/` and the lab's admin endpoints at `/lab/`. Every request passes the fault injector first (and MAAS
//! requests again after their handler, for a proxy that times out on an applied request) and
//! every mutating request lands in the audit with the outcome the client saw.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Method, Request, Response};

use crate::audit;
use crate::faults::Api;
use crate::http::{self, Req};
use crate::kube;
use crate::state::Shared;
use crate::{admin, maas};

/// Largest request body accepted (bigger ones get 413), except the upload proxy's, which is
/// streamed.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The lab's router.
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new().fallback(entry).with_state(shared)
}

async fn entry(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "in-process".into());
    // CDI's upload proxy streams its body (images of many GiB); everything else is read whole.
    let (body, upload_body) = if kube::upload::is_upload_path(parts.uri.path()) {
        (bytes::Bytes::new(), Some(body))
    } else {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => (b, None),
            Err(_) => return http::text(413, "request body too large"),
        }
    };
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if let Some(tp) = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        shared.audit.record_traceparent(crate::audit::Traced {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            traceparent: tp.to_string(),
        });
    }
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let req = Req {
        method: parts.method.clone(),
        path: percent_encoding::percent_decode_str(parts.uri.path())
            .decode_utf8_lossy()
            .into_owned(),
        query,
        client: format!("{}@{addr}", header("user-agent")),
        host: header("host"),
        headers: parts.headers,
        body,
    };
    let api = if req.path.starts_with("/MAAS/") {
        Some(Api::Maas)
    } else if req.path.starts_with("/lab/") {
        None
    } else {
        Some(Api::Kube)
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if let Some(api) = api {
        if let Some(delay) = shared.faults.latency() {
            tokio::time::sleep(delay).await;
        }
        if let Some(err) = shared
            .faults
            .http(api, req.method.as_str(), &path_and_query)
        {
            // An upload is read to its end before the injected answer, as a proxy that refuses
            // it after receiving it would: answering mid-body would reset the connection, and
            // the client would see a transport error (which it retries) instead of the status.
            if let Some(body) = upload_body {
                let _ = axum::body::to_bytes(body, usize::MAX).await;
            }
            let resp = match api {
                Api::Kube => kube::status::response(&err),
                Api::Maas => maas::error_response(&err),
            };
            audit(&shared, &req, api, resp.status().as_u16());
            return resp;
        }
    }
    // Handlers validate their input; this net turns a missed case into a 500 instead of a dropped
    // connection.
    let handled = std::panic::AssertUnwindSafe(async {
        match api {
            Some(Api::Maas) => maas::handle(&shared, &req).await,
            // CDI's upload proxy shares the lab's port.
            Some(Api::Kube) if upload_body.is_some() => {
                let body = upload_body.unwrap_or_default();
                kube::upload::handle(&shared, &req, body).await
            }
            Some(Api::Kube) => kube::handle(&shared, &req).await,
            None => admin::handle(&shared, &req).await,
        }
    });
    let resp = match futures::FutureExt::catch_unwind(handled).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!(path = %req.path, method = %req.method, "A lab handler panicked.");
            let err = crate::error::Error::Internal("handler panicked".into());
            match api {
                Some(Api::Maas) => maas::error_response(&err),
                _ => kube::status::response(&err),
            }
        }
    };
    // A proxy that gave up waiting: the request took effect, the client sees the error.
    let resp = match api.and_then(|api| {
        shared
            .faults
            .http_after(api, req.method.as_str(), &path_and_query)
    }) {
        Some(err) => maas::error_response(&err),
        None => resp,
    };
    if let Some(api) = api {
        audit(&shared, &req, api, resp.status().as_u16());
    }
    resp
}

fn audit(shared: &Shared, req: &Req, api: Api, outcome: u16) {
    let entry = match api {
        Api::Kube => kube_audit(req),
        Api::Maas => maas::audit_verb(req),
    };
    let Some((verb, object)) = entry else { return };
    shared.audit.record(audit::Entry {
        seq: 0,
        time: shared.clock.rfc3339(),
        sim_time: shared.clock.now(),
        client: req.client.clone(),
        api: match api {
            Api::Kube => "kube".into(),
            Api::Maas => "maas".into(),
        },
        verb,
        object,
        outcome,
        request_object: None,
    });
}

/// (verb, object) of a mutating Kubernetes request; `None` for reads.
fn kube_audit(req: &Req) -> Option<(String, String)> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if let [
        "apis",
        "subresources.kubevirt.io",
        _,
        "namespaces",
        ns,
        plural,
        name,
        action,
    ] = segs.as_slice()
    {
        return Some((
            action.to_string(),
            format!("{plural}.kubevirt.io/{ns}/{name}"),
        ));
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let verb = match (&req.method, rest.last()) {
        (&Method::POST, Some(&"eviction")) => "evict",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => return None,
    };
    let object = match kube::parse_target(group, version, rest) {
        Ok(t) => {
            // A create names its object in the body, as the apiserver's audit log shows it.
            let created = (verb == "create" && t.name.is_none())
                .then(|| serde_json::from_slice::<serde_json::Value>(&req.body).ok())
                .flatten()
                .and_then(|b| {
                    let meta = &b["metadata"];
                    meta["name"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| meta["generateName"].as_str().map(|g| format!("{g}*")))
                });
            let mut o = format!(
                "{}/{}/{}",
                t.def.qualified(),
                t.namespace.as_deref().unwrap_or(""),
                t.name.as_deref().or(created.as_deref()).unwrap_or("")
            );
            if let Some(sub) = t.subresource.filter(|s| s != "eviction") {
                o.push('/');
                o.push_str(&sub);
            }
            if t.name.is_none() && verb == "delete" {
                return Some(("deletecollection".into(), o));
            }
            o
        }
        Err(_) => req.path.clone(),
    };
    Some((verb.into(), object))
}
