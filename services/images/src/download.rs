//! Downloading an http(s) URL to a file under the work root, streaming (an OVA is read from a URL
//! by downloading it first: a tar is read by seeking, which a plain GET cannot do).

use std::path::Path;

use drover_workflows::ports::images::ImageError;
use drover_workflows::ports::kube::{OnProgress, Transferred};

use crate::copy::{Partial, REPORT_EVERY};
use crate::qemu::is_url;

/// GETs `url` into `dest` through `dest.partial`; returns the bytes written.
pub(crate) async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    on_progress: OnProgress<'_>,
) -> Result<u64, ImageError> {
    if !is_url(url) {
        return Err(ImageError::Invalid(format!(
            "{url} is not an http or https URL"
        )));
    }
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| request_error(url, e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(status_error(url, status));
    }
    let total = resp.content_length().unwrap_or(0);
    let mut out = Partial::create(dest).await?;
    let mut done = 0u64;
    let mut reported = 0u64;
    on_progress(Transferred { done, total });
    while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(url, e))? {
        out.write(&chunk).await?;
        done += chunk.len() as u64;
        if done - reported >= REPORT_EVERY {
            reported = done;
            on_progress(Transferred { done, total });
        }
    }
    if total != 0 && done != total {
        return Err(ImageError::Transient(format!(
            "{url}: the connection ended after {done} of {total} bytes"
        )));
    }
    out.finish().await?;
    if reported != done || done == 0 {
        on_progress(Transferred {
            done,
            total: total.max(done),
        });
    }
    Ok(done)
}

/// What a server's error status means: gone, worth retrying, or refused.
pub(crate) fn status_error(url: &str, status: reqwest::StatusCode) -> ImageError {
    let why = format!("{url}: the server answered {status}");
    match status.as_u16() {
        404 | 410 => ImageError::NotFound(why),
        408 | 429 | 500..=599 => ImageError::Transient(why),
        _ => ImageError::Invalid(why),
    }
}

/// A request that got no complete answer: worth retrying, except a URL reqwest cannot fetch at all.
pub(crate) fn request_error(url: &str, e: reqwest::Error) -> ImageError {
    let builder = e.is_builder();
    // The message names the URL once, in front.
    let text = chain(&e.without_url());
    if builder {
        return ImageError::Invalid(format!("{url}: {text}"));
    }
    // The workspace's reqwest is built without a TLS backend, and says so only as a bad scheme.
    if text.contains("scheme is not http") {
        return ImageError::Invalid(format!(
            "{url}: this build reads URLs over http only ({text}); serve it over http or copy it \
             to the worker's disk"
        ));
    }
    ImageError::Transient(format!("{url}: {text}"))
}

/// An error with its sources (reqwest's own text is only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
