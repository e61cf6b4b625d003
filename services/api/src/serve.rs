//! Serving the API over HTTP/1.1 with the limits a server facing untrusted clients needs: a deadline
//! for a request's headers (which also closes idle kept-alive connections), a cap on open connections
//! (one more is answered 503 and closed at once), and a bounded head buffer. Bodies get their deadline
//! in [`crate::guard`], where the reply can be the API's JSON error.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::{AppState, MAX_HEADER_BUFFER};

/// How many header lines hyper parses before answering 431 itself; [`crate::guard`] refuses far fewer
/// with a JSON body.
pub(crate) const MAX_HEADER_LINES: usize = 512;

/// How long in-flight requests may take to finish once shutdown began.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config.clone();
    let app = crate::app(state);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_timeout_ms))
        .max_buf_size(MAX_HEADER_BUFFER)
        .max_headers(MAX_HEADER_LINES);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    warn!(error = %e, "Accepting a connection failed; retrying shortly.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, config.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "Connection ended with an error.");
            }
            drop(slot);
        });
    }
    drop(listener);
    info!("API stopping: no new connections; in-flight requests finish.");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            secs = DRAIN.as_secs(),
            "Some requests were still running when the drain period ended."
        );
    }
    Ok(())
}

/// Answers a connection over the cap with 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = serde_json::json!({
        "error": "too many connections",
        "detail": format!("the API holds its maximum of {max} open connections; retry shortly"),
    })
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
