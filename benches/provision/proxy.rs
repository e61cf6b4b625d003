//! A counting proxy in front of the lab's MAAS region, for both runs of the provisioning benchmark.
//! It forwards every request unchanged (the `Host` header too, so the URIs MAAS's `describe` hands
//! python-libmaas point back at the proxy) and counts each one by operation and answer, reads
//! included: the lab's audit records only writes.
//!
//! It also carries MAAS's `Retry-After` into lab time. MAAS answers a 503 with `Retry-After: 10`
//! (and its retryable 409 with 5), seconds its clients wait. The header counts whole real seconds,
//! so a lab that passes 10 on makes a client wait 10 real seconds (10 minutes of lab time at 60x),
//! and one that scales it can say no less than 1 (a lab minute at 60x). So the proxy holds such an
//! answer for MAAS's own delay in lab time (10 s / time scale) and passes it on with
//! `Retry-After: 0`: a client that honours the header retries after the 10 lab seconds MAAS
//! meant. Both runs' clients honour it, so both get the same treatment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response, StatusCode};

/// What went through the proxy.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Requests by `METHOD path?op=` (ids in the path as `{id}`), with the answers' statuses.
    pub by_call: BTreeMap<String, BTreeMap<u16, u64>>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.by_call.values().flat_map(|s| s.values()).sum()
    }

    /// Requests that are not GETs.
    pub fn writes(&self) -> u64 {
        self.by_call
            .iter()
            .filter(|(k, _)| !k.starts_with("GET "))
            .flat_map(|(_, s)| s.values())
            .sum()
    }

    /// Answers with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.by_call.values().filter_map(|s| s.get(&code)).sum()
    }
}

/// MAAS's Retry-After by status, in lab seconds: 503 (no rack controller) and 409 (serialization
/// retries exhausted), as the lab's faults model them.
const MAAS_RETRY_AFTER: [(u16, f64); 2] = [(503, 10.0), (409, 5.0)];

struct Shared {
    upstream: String,
    http: reqwest::Client,
    scale: f64,
    counts: Mutex<Counts>,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`) on a free loopback port, with the lab's
    /// time scale.
    pub async fn start(upstream: String, scale: f64) -> Result<Proxy> {
        let shared = Arc::new(Shared {
            upstream,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            scale,
            counts: Mutex::new(Counts::default()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy { addr, shared, task })
    }

    /// MAAS's URL through the proxy, as clients take it.
    pub fn maas_url(&self) -> String {
        format!("http://{}/MAAS/", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `POST /MAAS/api/2.0/machines/abc123/?op=deploy` -> `POST machines/{id}/?op=deploy`: MAAS's
/// paths alternate collection and id (`machines/{id}/interfaces/{id}/`).
fn call_key(method: &str, path: &str, query: Option<&str>) -> String {
    let rest = path
        .strip_prefix("/MAAS/api/2.0/")
        .or_else(|| path.strip_prefix("/MAAS/"))
        .unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        out.push_str(if i % 2 == 1 && !s.starts_with("op-") {
            "{id}"
        } else {
            s
        });
        out.push('/');
    }
    let op = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("op="));
    match op {
        Some(op) => format!("{method} {out}?op={op}"),
        None => format!("{method} {out}"),
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let key = call_key(parts.method.as_str(), parts.uri.path(), parts.uri.query());
    let answer = async {
        let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.ok()?;
        let target = format!(
            "{}{}",
            shared.upstream,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut headers = parts.headers.clone();
        for h in [
            "connection",
            "content-length",
            "transfer-encoding",
            "keep-alive",
        ] {
            headers.remove(h);
        }
        let upstream = shared
            .http
            .request(parts.method.clone(), target)
            .headers(headers)
            .body(body)
            .send()
            .await
            .ok()?;
        let status = upstream.status();
        let mut headers = upstream.headers().clone();
        let bytes = upstream.bytes().await.ok()?;
        for h in [
            "connection",
            "content-length",
            "transfer-encoding",
            "keep-alive",
        ] {
            headers.remove(h);
        }
        Some((status, headers, bytes))
    }
    .await;
    let Some((status, mut headers, bytes)) = answer else {
        count(&shared, key, 502);
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("the bench's proxy could not reach the lab"))
            .unwrap_or_default();
    };
    let hold = MAAS_RETRY_AFTER
        .iter()
        .find(|(code, _)| *code == status.as_u16())
        .filter(|_| headers.contains_key("retry-after"))
        .map(|(_, secs)| *secs);
    if let Some(secs) = hold {
        tokio::time::sleep(Duration::from_secs_f64(secs / shared.scale)).await;
        headers.insert("retry-after", HeaderValue::from_static("0"));
    }
    count(&shared, key, status.as_u16());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn count(shared: &Shared, key: String, status: u16) {
    let mut c = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
    *c.by_call.entry(key).or_default().entry(status).or_default() += 1;
}
