//! Watches: newline-delimited JSON events streamed in a chunked response, replayed from a
//! resourceVersion out of the store's history (an `ERROR` event with a 410 `Expired` Status when it
//! is too old), filtered by label and field selectors, with bookmarks, `sendInitialEvents` and
//! `timeoutSeconds`. A `watch_disconnect` fault ends the stream early, as a flaky apiserver would.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::http::{self, Req};
use crate::kube::selectors::{FieldSelector, LabelSelector};
use crate::kube::{Target, status};
use crate::state::Shared;
use crate::store::{Event, EventType};

struct WatchState {
    replay: std::vec::IntoIter<Arc<Event>>,
    live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    resource: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    deadline: Instant,
    bookmarks: bool,
    initial_end_pending: bool,
    last_rv: u64,
    api_version: String,
    kind: String,
    done: bool,
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// Serve `?watch=true`.
pub async fn handle(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), t.def)?;
    let send_initial = req.flag("sendInitialEvents");
    let from = match req.q("resourceVersion").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            Error::BadRequest(format!(
                "resourceVersion: Invalid value: \"{v}\": must be a non-negative integer"
            ))
        })?),
    }
    .filter(|_| !send_initial);
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let mut deadline = Instant::now() + Duration::from_secs(timeout);
    if let Some(cut) = shared.faults.watch_disconnect() {
        deadline = deadline.min(Instant::now() + cut);
    }
    let key = t.def.qualified();
    let start = match shared.store.watch(&key, t.namespace.as_deref(), from) {
        Ok(s) => s,
        Err(err @ Error::Gone { .. }) => {
            let line = json!({"type": "ERROR", "object": status::body(&err)}).to_string() + "\n";
            return Ok(http::bytes_response(
                200,
                "application/json",
                Bytes::from(line),
            ));
        }
        Err(e) => return Err(e),
    };
    let state = WatchState {
        replay: start.replay.into_iter(),
        live: start.live,
        resource: key,
        namespace: t.namespace.clone(),
        labels,
        fields,
        deadline,
        bookmarks: req.flag("allowWatchBookmarks"),
        initial_end_pending: send_initial,
        last_rv: from.unwrap_or(start.rv),
        api_version: t.def.api_version(),
        kind: t.def.kind.to_string(),
        done: false,
        stopping: shared.stopping.clone(),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        let line = next_line(&mut st).await?;
        Some((Ok::<Bytes, Infallible>(Bytes::from(line)), st))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn selected(st: &WatchState, obj: &Value) -> bool {
    st.labels.matches(obj) && st.fields.matches(obj)
}

/// The event type this watcher sees, if any: like the apiserver, a modification that moves an
/// object into the selection is ADDED and one that moves it out is DELETED.
fn seen_as(st: &WatchState, ev: &Event) -> Option<&'static str> {
    if ev.resource != st.resource || st.namespace.as_deref().is_some_and(|ns| ev.namespace != ns) {
        return None;
    }
    let now = selected(st, &ev.object);
    match (ev.kind, ev.prev.as_deref().map(|p| selected(st, p))) {
        (EventType::Modified, Some(true)) if !now => Some("DELETED"),
        (EventType::Modified, Some(false)) if now => Some("ADDED"),
        (EventType::Modified, Some(false)) => None,
        (kind, _) => now.then(|| kind.as_str()),
    }
}

fn event_line(kind: &str, object: &Value) -> String {
    json!({"type": kind, "object": object}).to_string() + "\n"
}

fn bookmark(st: &WatchState, initial_end: bool) -> String {
    let mut meta = json!({"resourceVersion": st.last_rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": st.kind, "apiVersion": st.api_version, "metadata": meta}),
    )
}

async fn next_line(st: &mut WatchState) -> Option<String> {
    if st.done {
        return None;
    }
    while let Some(ev) = st.replay.next() {
        st.last_rv = st.last_rv.max(ev.rv);
        if let Some(kind) = seen_as(st, &ev) {
            return Some(event_line(kind, &ev.object));
        }
    }
    if st.initial_end_pending {
        st.initial_end_pending = false;
        return Some(bookmark(st, true));
    }
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(15));
        tokio::select! {
            _ = tokio::time::sleep_until(st.deadline) => {
                st.done = true;
                return None;
            }
            _ = st.stopping.changed() => {
                st.done = true;
                return None;
            }
            _ = tick, if st.bookmarks => return Some(bookmark(st, false)),
            r = st.live.recv() => match r {
                Ok(ev) => {
                    st.last_rv = ev.rv;
                    if let Some(kind) = seen_as(st, &ev) {
                        return Some(event_line(kind, &ev.object));
                    }
                }
                // A watcher that cannot keep up is disconnected; it resumes from its last event.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    st.done = true;
                    return None;
                }
            }
        }
    }
}
