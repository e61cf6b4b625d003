//! CDI's upload proxy: `POST <proxy>/v1beta1/upload` with the upload token as a bearer token and
//! the image as `application/octet-stream`, its length said up front and its bytes streamed from
//! the file in 1 MiB chunks (a worker uploading a 2 GiB image holds a few chunks, never the file).
//!
//! The request goes through hyper with kube-rs's own connector: plain HTTP for an `http://` proxy
//! (the lab), and for `https://` the cluster's TLS settings (its CA, or the system's roots when the
//! kubeconfig names none; its client certificate; `insecure-skip-tls-verify`). reqwest is not used:
//! its TLS needs a rustls crypto provider feature that, unified into the workspace's one reqwest,
//! would change every other reqwest client of the process.
//!
//! How the proxy answers: 2xx is done; 400 (not an image, larger than the claim) is permanent with
//! the proxy's words; 401 is a refused token, permanent; 408, 429 and 5xx (503 while the upload
//! server is not ready) are transient, with the proxy's Retry-After; a connection that fails or
//! breaks is transient.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_workflows::ports::kube::{KubeError, OnProgress, Transferred};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;

/// How much of the file is read at a time.
const CHUNK: usize = 1024 * 1024;
/// How often the caller hears how far the upload is.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// An upload whose body has not moved for this long is given up (transient: the next attempt
/// starts over with a new token).
const STALLED_AFTER: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where CDI's upload proxy is, and the cluster's TLS settings for it.
#[derive(Clone)]
pub struct Proxy {
    url: String,
    config: Arc<kube::Config>,
}

impl Proxy {
    /// The proxy at `url` (`http://` or `https://`, no path), or at the API server's URL when None.
    pub fn new(url: Option<&str>, config: kube::Config) -> Result<Proxy, String> {
        let url = match url {
            Some(u) => u.trim().trim_end_matches('/').to_string(),
            None => config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("upload proxy URL {url:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "upload proxy URL {url:?}: give http:// or https:// and a host"
            ));
        }
        Ok(Proxy {
            url,
            config: Arc::new(config),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Streams the file at `path` to the proxy with `token`; returns the bytes sent.
    pub async fn upload(
        &self,
        token: &str,
        path: &std::path::Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, KubeError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| KubeError::Permanent(format!("{}: {e}", path.display())))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| KubeError::Permanent(format!("{}: {e}", path.display())))?
            .len();
        let uri: Uri = format!("{}/v1beta1/upload", self.url)
            .parse()
            .map_err(|e| KubeError::Permanent(format!("upload proxy URL {}: {e}", self.url)))?;
        let sent = Arc::new(AtomicU64::new(0));
        let body = FileBody {
            chunks: read_ahead(file.into_std().await, total),
            remaining: total,
            sent: sent.clone(),
        };
        let request = Request::post(uri.clone())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, total)
            .body(body)
            .map_err(|e| KubeError::Permanent(format!("upload request: {e}")))?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let response = if uri.scheme_str() == Some("https") {
            let connector = self
                .tls_config(&uri)
                .rustls_https_connector_with_connector(http)
                .map_err(|e| KubeError::Permanent(format!("upload proxy TLS: {e}")))?;
            let client = Client::builder(TokioExecutor::new()).build(connector);
            follow(client.request(request), &sent, total, on_progress).await?
        } else {
            let client = Client::builder(TokioExecutor::new()).build(http);
            follow(client.request(request), &sent, total, on_progress).await?
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = text(response).await;
        match status.as_u16() {
            200..=299 => {
                on_progress(Transferred { done: total, total });
                Ok(total)
            }
            400 => Err(KubeError::Permanent(format!(
                "the upload proxy refused the image: {text}"
            ))),
            401 => Err(KubeError::Permanent("upload token refused".into())),
            408 | 429 | 500..=599 => Err(KubeError::Transient {
                message: format!("upload proxy: {status} {text}"),
                retry_after,
            }),
            404 => Err(KubeError::Permanent(format!(
                "upload proxy {}: {status} {text} (is this CDI's upload proxy? uploads go to the \
                 API server's URL unless an upload proxy URL is configured)",
                self.url
            ))),
            _ => Err(KubeError::Permanent(format!(
                "upload proxy: {status} {text}"
            ))),
        }
    }

    /// The cluster's TLS settings; the API server's own server name only for the API server's host.
    fn tls_config(&self, uri: &Uri) -> kube::Config {
        let mut config = (*self.config).clone();
        if config.cluster_url.host() != uri.host() {
            config.tls_server_name = None;
        }
        config
    }
}

/// Waits for the response, telling `on_progress` how far the body is every [`PROGRESS_EVERY`], and
/// gives up on a body that stopped moving.
async fn follow<F>(
    response: F,
    sent: &AtomicU64,
    total: u64,
    on_progress: OnProgress<'_>,
) -> Result<Response<Incoming>, KubeError>
where
    F: Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
{
    let mut response = std::pin::pin!(response);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut reported, mut moved_at) = (0u64, Instant::now());
    loop {
        tokio::select! {
            r = &mut response => {
                return r.map_err(|e| KubeError::Transient {
                    message: format!("upload proxy: {}", chain(&e)),
                    retry_after: None,
                });
            }
            _ = tick.tick() => {
                let done = sent.load(Ordering::Relaxed);
                if done != reported {
                    on_progress(Transferred { done, total });
                    (reported, moved_at) = (done, Instant::now());
                } else if done < total && moved_at.elapsed() >= STALLED_AFTER {
                    return Err(KubeError::Transient {
                        message: format!(
                            "upload stalled: the proxy took no byte for {} s ({done} of {total} sent)",
                            STALLED_AFTER.as_secs()
                        ),
                        retry_after: None,
                    });
                }
            }
        }
    }
}

/// An error and its causes, `a: b: c` (hyper's own says only "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The start of the response's text, for messages.
async fn text(response: Response<Incoming>) -> String {
    const MAX: usize = 4096;
    match http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(body) => {
            let bytes = body.to_bytes();
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
            text.trim().to_string()
        }
        Err(e) => format!("(unreadable answer: {e})"),
    }
}

/// The file as a request body of known length, counting what it hands to hyper.
struct FileBody {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
    sent: Arc<AtomicU64>,
}

/// Chunks read ahead in a thread of their own, at most `READ_AHEAD` waiting: plain blocking reads
/// keep up with the proxy where tokio's file reader (a blocking-pool hop per chunk) did not. The
/// thread ends at the end of the file, or as soon as the body is dropped (a cancelled upload).
fn read_ahead(
    mut file: std::fs::File,
    total: u64,
) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        let mut left = total;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            let chunk = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// Chunks read ahead of the connection.
const READ_AHEAD: usize = 4;

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match ready!(self.chunks.poll_recv(cx)) {
            Some(Ok(chunk)) => {
                let n = chunk.len() as u64;
                self.remaining = self.remaining.saturating_sub(n);
                self.sent.fetch_add(n, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None if self.remaining > 0 => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the image file shrank while it was uploaded",
            )))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-request proxy: reads the head and the whole body, answers `status` with `text` (and
    /// Retry-After: 7), and hands back the head and the body's length.
    async fn proxy_answering(
        status: &'static str,
        text: &'static str,
    ) -> (String, tokio::task::JoinHandle<(String, usize)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut data = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let end = loop {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                data.extend_from_slice(&buf[..n]);
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a content-length");
            let mut body = data.len() - end;
            while body < length {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the body ended early");
                body += n;
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nretry-after: 7\r\nconnection: \
                 close\r\n\r\n{text}",
                text.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            (head, body)
        });
        (url, served)
    }

    fn image(len: usize) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("drover-kube-upload-{}-{len}", std::process::id()));
        std::fs::write(&path, vec![0x51u8; len]).unwrap();
        path
    }

    fn proxy(url: &str) -> Proxy {
        let config = kube::Config::new("http://127.0.0.1:1/".parse().unwrap());
        Proxy::new(Some(url), config).unwrap()
    }

    #[tokio::test]
    async fn the_file_goes_with_its_length_and_the_token() {
        let (url, served) = proxy_answering("200 OK", "").await;
        let path = image(3 * CHUNK + 17);
        let seen = std::sync::Mutex::new(Vec::new());
        let sent = proxy(&url)
            .upload("tok", &path, &|t| seen.lock().unwrap().push(t))
            .await
            .unwrap();
        let (head, body) = served.await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((sent, body), (3 * CHUNK as u64 + 17, 3 * CHUNK + 17));
        assert!(head.starts_with("post /v1beta1/upload "), "{head}");
        assert!(head.contains("authorization: bearer tok\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/octet-stream\r\n"),
            "{head}"
        );
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&Transferred {
                done: sent,
                total: sent
            })
        );
    }

    #[tokio::test]
    async fn the_proxys_answers_are_classified() {
        let path = image(1000);
        for (status, text, expect) in [
            (
                "400 Bad Request",
                "Saving stream failed: Unexpected EOF",
                KubeError::Permanent(
                    "the upload proxy refused the image: Saving stream failed: Unexpected EOF"
                        .into(),
                ),
            ),
            (
                "401 Unauthorized",
                "",
                KubeError::Permanent("upload token refused".into()),
            ),
            (
                "503 Service Unavailable",
                "not ready",
                KubeError::Transient {
                    message: "upload proxy: 503 Service Unavailable not ready".into(),
                    retry_after: Some(Duration::from_secs(7)),
                },
            ),
        ] {
            let (url, served) = proxy_answering(status, text).await;
            let got = proxy(&url).upload("tok", &path, &|_| {}).await;
            served.await.unwrap();
            assert_eq!(got, Err(expect));
        }
        // Nothing listens: transient.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let got = proxy(&url).upload("tok", &path, &|_| {}).await;
        assert!(matches!(got, Err(KubeError::Transient { .. })), "{got:?}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_proxy_defaults_to_the_api_server() {
        let config = kube::Config::new("http://127.0.0.1:6443/".parse().unwrap());
        let p = Proxy::new(None, config.clone()).unwrap();
        assert_eq!(p.url(), "http://127.0.0.1:6443");
        let p = Proxy::new(Some("https://cdi-uploadproxy.example/"), config.clone()).unwrap();
        assert_eq!(p.url(), "https://cdi-uploadproxy.example");
        assert!(Proxy::new(Some("cdi-uploadproxy:443"), config.clone()).is_err());
        assert!(Proxy::new(Some("ftp://x"), config).is_err());
    }
}
