//! CDI uploads: `UploadTokenRequest`s (`upload.cdi.kubevirt.io/v1beta1`) get a token for a PVC, and
//! the upload proxy (`POST /v1beta1/upload`, `/v1beta1/upload-async`, and the multipart
//! `/v1beta1/upload-form[-async]`; `v1alpha1` too) takes the image with `Authorization: Bearer
//! <token>`. The body is streamed: counted, its first bytes (and last 512) kept for the format
//! checks of `image`, the rest discarded, so a multi-GiB upload costs no memory. An image CDI's
//! upload server would refuse gets 400 `Saving stream failed: <reason>` and leaves the DataVolume
//! UploadReady; an accepted one makes it Succeeded with the bytes, format and virtual size in its
//! annotations. One upload at a time per DataVolume (a second gets 503, as CDI's upload server
//! answers a concurrent request).

use axum::body::Body;
use axum::http::{Method, Response};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::cdi::{ANN_FORMAT, ANN_UPLOADED_BYTES, ANN_VIRTUAL_SIZE};
use crate::http::{self, Req};
use crate::image::{self, Meter, Mode};
use crate::kube::resources::keys;
use crate::sim::storage;
use crate::state::Shared;

/// Whether a path belongs to the upload proxy (which shares the lab's port).
pub fn is_upload_path(path: &str) -> bool {
    path.starts_with("/v1beta1/upload") || path.starts_with("/v1alpha1/upload")
}

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

/// A refusal: status, text body, Retry-After.
struct Refusal(u16, String, Option<u64>);

impl Refusal {
    fn response(self) -> Response<Body> {
        http::with_retry_after(http::text(self.0, &self.1), self.2)
    }
}

/// The DataVolume an upload is for.
struct Target {
    ns: String,
    name: String,
    uid: String,
    available: u64,
}

/// Serve the upload proxy. `body` is the request body, not yet read.
pub async fn handle(shared: &Shared, req: &Req, body: Body) -> Response<Body> {
    let path = req.path.trim_end_matches('/');
    let version_free = path
        .strip_prefix("/v1beta1")
        .or_else(|| path.strip_prefix("/v1alpha1"))
        .unwrap_or("");
    let (form, is_async) = match version_free {
        "/upload" => (false, false),
        "/upload-async" => (false, true),
        "/upload-form" => (true, false),
        "/upload-form-async" => (true, true),
        _ => {
            drain(shared, body).await;
            return http::text(404, "404 page not found");
        }
    };
    let target = match target(shared, req) {
        Ok(t) => t,
        Err(r) => {
            drain(shared, body).await;
            return r.response();
        }
    };
    // virtctl asks whether the proxy does async uploads with a HEAD request.
    if req.method == Method::HEAD && is_async {
        return http::text(200, "");
    }
    if req.method != Method::POST {
        drain(shared, body).await;
        return http::text(
            405,
            "the server does not allow this method on the requested resource",
        );
    }
    let Some(_claim) = shared
        .cdi
        .start_upload((target.ns.clone(), target.name.clone()))
    else {
        drain(shared, body).await;
        return Refusal(503, "upload in progress".into(), None).response();
    };
    match receive(shared, req, body, form, &target).await {
        Ok(()) => http::text(200, ""),
        Err(r) => r.response(),
    }
}

/// Check the token and the DataVolume, as CDI's upload proxy does before proxying.
fn target(shared: &Shared, req: &Req) -> Result<Target, Refusal> {
    let header = req.header("authorization").trim();
    if header.is_empty() {
        return Err(Refusal(400, String::new(), None));
    }
    let token = match header.split_once(char::is_whitespace) {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => return Err(Refusal(400, String::new(), None)),
    };
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(|| Refusal(401, "authentication failed".into(), None))?;
    let ns = claims["namespace"].as_str().unwrap_or("").to_string();
    let pvc = claims["pvc"].as_str().unwrap_or("").to_string();
    if ns.is_empty() || pvc.is_empty() {
        return Err(Refusal(400, String::new(), None));
    }
    let dv = shared
        .store
        .get_shared(keys::DATAVOLUMES, &ns, &pvc)
        .ok_or_else(|| {
            Refusal(
                503,
                format!("rejecting Upload Request for PVC {pvc} that doesn't exist"),
                None,
            )
        })?;
    if dv.pointer("/spec/source/upload").is_none() {
        return Err(Refusal(
            503,
            format!("PVC {pvc} is not an upload target"),
            None,
        ));
    }
    match dv.pointer("/status/phase").and_then(Value::as_str) {
        Some("UploadReady") => {}
        Some("Succeeded") => {
            return Err(Refusal(
                503,
                format!("rejecting Upload Request for PVC {pvc} that already finished uploading"),
                None,
            ));
        }
        _ => {
            return Err(Refusal(
                503,
                format!("upload server for {ns}/{pvc} is not ready"),
                Some(2),
            ));
        }
    }
    let pvc_obj = shared.store.get_shared(keys::PVCS, &ns, &pvc);
    let available = storage::requested_bytes(&dv)
        .or_else(|| {
            pvc_obj.and_then(|p| {
                crate::sim::quantity::from_json(p.pointer("/spec/resources/requests/storage"))
            })
        })
        .unwrap_or(storage::DEFAULT_SIZE);
    Ok(Target {
        uid: dv
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        ns,
        name: pvc,
        available: available.max(0.0) as u64,
    })
}

/// Read the whole body (the file part of a form), judge the image and record the outcome.
async fn receive(
    shared: &Shared,
    req: &Req,
    body: Body,
    form: bool,
    target: &Target,
) -> Result<(), Refusal> {
    let failed = |msg: String| Refusal(400, format!("Saving stream failed: {msg}"), None);
    let mut form_reader = if form {
        match FormReader::new(req.header("content-type")) {
            Ok(f) => Some(f),
            Err(e) => {
                drain(shared, body).await;
                return Err(failed(e));
            }
        }
    } else {
        None
    };
    let mut meter = Meter::default();
    let mut stream = body.into_data_stream();
    let mut form_error = None;
    let started = std::time::Instant::now();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            // The client went away mid-way: nothing is recorded, the DataVolume stays UploadReady.
            return Err(failed("unexpected EOF".into()));
        };
        // A limited link: read no faster than the scenario's `upload_mb_per_s`.
        received += chunk.len() as u64;
        if let Some(rate) = shared.faults.upload_rate() {
            let due = std::time::Duration::from_secs_f64(received as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        shared
            .cdi
            .upload_received_bytes
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        match form_reader.as_mut() {
            Some(f) if form_error.is_none() => {
                if let Err(e) = f.push(&chunk, &mut meter) {
                    form_error = Some(e);
                }
            }
            Some(_) => {}
            None => meter.feed(&chunk),
        }
    }
    let refused = |msg: String| {
        shared
            .cdi
            .uploads_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        failed(msg)
    };
    if let Some(f) = &form_reader
        && let Err(e) = form_error.map_or_else(|| f.finish(), Err)
    {
        return Err(refused(e));
    }
    let probe = meter.probe();
    let virtual_size =
        image::validate(&probe, meter.bytes, target.available, Mode::Upload).map_err(refused)?;
    let recorded = shared
        .store
        .modify(keys::DATAVOLUMES, &target.ns, &target.name, |d| {
            if d.pointer("/metadata/uid").and_then(Value::as_str) != Some(target.uid.as_str()) {
                return Err(crate::error::Error::NotFound {
                    resource: keys::DATAVOLUMES.into(),
                    name: target.name.clone(),
                });
            }
            let ann = &mut d["metadata"]["annotations"];
            ann[ANN_UPLOADED_BYTES] = json!(meter.bytes.to_string());
            ann[ANN_FORMAT] = json!(probe.format.name());
            ann[ANN_VIRTUAL_SIZE] = json!(virtual_size.to_string());
            storage::set_succeeded(d);
            Ok(())
        });
    if recorded.is_err() {
        return Err(Refusal(
            503,
            format!(
                "rejecting Upload Request for PVC {} that doesn't exist",
                target.name
            ),
            None,
        ));
    }
    let c = &shared.cdi;
    c.uploaded_bytes
        .fetch_add(meter.bytes, std::sync::atomic::Ordering::Relaxed);
    c.uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Read and discard a body (so the client, still sending, reads the answer instead of a reset).
async fn drain(shared: &Shared, body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        shared
            .cdi
            .upload_received_bytes
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a multipart reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before the first boundary.
    Preamble,
    /// Just past a boundary: `--` ends the form, CRLF starts a part.
    Boundary { file: bool },
    /// A part's headers.
    Headers,
    /// A part's body (the file's when `file`).
    Body { file: bool },
    /// After the closing boundary.
    Epilogue,
}

/// A streaming `multipart/form-data` reader that feeds the part named `file` to a [`Meter`] (as
/// CDI's upload server takes the first part named `file`), keeping only what may be the start of
/// a boundary between chunks.
#[derive(Debug)]
pub struct FormReader {
    /// `\r\n--<boundary>`.
    delim: Vec<u8>,
    buf: Vec<u8>,
    state: Part,
    found_file: bool,
}

impl FormReader {
    /// A reader for a request's `Content-Type`.
    pub fn new(content_type: &str) -> Result<Self, String> {
        let mut parts = content_type.split(';');
        let mime = parts.next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("multipart/form-data") {
            return Err("request Content-Type isn't multipart/form-data".into());
        }
        let boundary = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| "no multipart boundary param in Content-Type".to_string())?;
        Ok(FormReader {
            delim: format!("\r\n--{boundary}").into_bytes(),
            // The first boundary need not follow a line break.
            buf: b"\r\n".to_vec(),
            state: Part::Preamble,
            found_file: false,
        })
    }

    /// Take one chunk of the body.
    pub fn push(&mut self, chunk: &[u8], meter: &mut Meter) -> Result<(), String> {
        if self.state == Part::Epilogue {
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            match self.state {
                Part::Epilogue => {
                    at = self.buf.len();
                    break;
                }
                Part::Preamble | Part::Body { .. } => {
                    let file = matches!(self.state, Part::Body { file: true });
                    match memchr::memmem::find(rest, &self.delim) {
                        Some(pos) => {
                            if file {
                                meter.feed(&rest[..pos]);
                            }
                            at += pos + self.delim.len();
                            self.state = Part::Boundary { file };
                        }
                        None => {
                            let safe = rest.len().saturating_sub(self.delim.len() - 1);
                            if file {
                                meter.feed(&rest[..safe]);
                            }
                            at += safe;
                            break;
                        }
                    }
                }
                Part::Boundary { file } => {
                    if file {
                        // The file part is complete: the rest of the form does not matter.
                        self.state = Part::Epilogue;
                        continue;
                    }
                    if rest.len() < 2 {
                        break;
                    }
                    if rest.starts_with(b"--") {
                        self.state = Part::Epilogue;
                        continue;
                    }
                    // Transport padding, then the line break before the headers.
                    match memchr::memmem::find(rest, b"\r\n") {
                        Some(pos) => {
                            at += pos + 2;
                            self.state = Part::Headers;
                        }
                        None if rest.len() > 1024 => {
                            return Err("multipart: boundary is followed by garbage".into());
                        }
                        None => break,
                    }
                }
                Part::Headers if rest.starts_with(b"\r\n") => {
                    // A part without headers has no name.
                    at += 2;
                    self.state = Part::Body { file: false };
                }
                Part::Headers => match memchr::memmem::find(rest, b"\r\n\r\n") {
                    Some(pos) => {
                        let headers = String::from_utf8_lossy(&rest[..pos]);
                        let is_file = !self.found_file
                            && headers
                                .lines()
                                .filter_map(|l| l.split_once(':'))
                                .filter(|(h, _)| {
                                    h.trim().eq_ignore_ascii_case("content-disposition")
                                })
                                .any(|(_, v)| form_name(v) == Some("file"));
                        self.found_file |= is_file;
                        // The body follows; the CRLF before its closing boundary belongs to the
                        // delimiter, so an empty body is a delimiter right here.
                        at += pos + 4;
                        self.state = Part::Body { file: is_file };
                    }
                    None if rest.len() > 64 * 1024 => {
                        return Err("multipart: message too large".into());
                    }
                    None => break,
                },
            }
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// After the last chunk: the form must have held a complete `file` part.
    pub fn finish(&self) -> Result<(), String> {
        if !self.found_file {
            return Err("the form has no part named \"file\"".into());
        }
        if self.state != Part::Epilogue {
            return Err("multipart: NextPart: EOF".into());
        }
        Ok(())
    }
}

/// The `name` parameter of a `Content-Disposition` value.
fn form_name(disposition: &str) -> Option<&str> {
    disposition
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("name"))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for (name, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"file\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    #[test]
    fn form_file_part_in_any_chunking() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| if i % 97 == 0 { b'\r' } else { (i % 251) as u8 })
            .collect();
        let body = form(
            "XyZ",
            &[
                ("meta", b"ignored\r\n--Xy"),
                ("file", &data),
                ("other", b"z"),
            ],
        );
        for size in [1usize, 2, 3, 7, 64, 1000, 65536, body.len()] {
            let mut r = FormReader::new("multipart/form-data; boundary=\"XyZ\"").unwrap();
            let mut m = Meter::default();
            for c in body.chunks(size) {
                r.push(c, &mut m).unwrap();
            }
            r.finish().unwrap();
            assert_eq!(m.bytes, data.len() as u64, "chunk size {size}");
            assert_eq!(m.head, data[..image::HEAD_BYTES.min(data.len())]);
        }
        let mut r = FormReader::new("multipart/form-data; boundary=b").unwrap();
        let mut m = Meter::default();
        r.push(&form("b", &[("notfile", b"abc")]), &mut m).unwrap();
        assert!(r.finish().is_err());
        assert!(FormReader::new("application/octet-stream").is_err());
        let mut r = FormReader::new("multipart/form-data; boundary=b").unwrap();
        let mut m = Meter::default();
        r.push(&form("b", &[("file", b"")]), &mut m).unwrap();
        r.finish().unwrap();
        assert_eq!(m.bytes, 0);
    }
}
