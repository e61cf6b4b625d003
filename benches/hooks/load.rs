//! The open-loop driver: request i is due at `t0 + i × period` whatever happened to the ones before
//! it, and its latency runs from that due time to the end of its response (status and body), so a
//! server that stalls cannot hide the queue it builds (no coordinated omission). Each request is
//! its own task on a shared keep-alive HTTP/1.1 client; one that gets no answer within
//! [`REQUEST_TIMEOUT`] counts as an error and as slower than every answered one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// What a sender waits for at most (Jira Cloud gives up on a webhook after 10 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One prepared request: its body and its headers beside the content type.
pub struct Request {
    pub body: Vec<u8>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the request is, for splitting the figures (e.g. "new", "replay").
    pub class: &'static str,
}

/// How one request went.
pub struct Outcome {
    pub index: usize,
    pub class: &'static str,
    /// Due time -> task running the send (the client's own delay: timer tick and scheduling).
    pub lag: Duration,
    /// Due time -> response read; `None`: no answer (error or timeout).
    pub latency: Option<Duration>,
    /// Send start -> response read.
    pub service: Option<Duration>,
    /// The status, with `(duplicate)` when the body says so; or the error.
    pub answer: String,
    /// When the response was read (for the achieved rate).
    pub done: Instant,
    pub sent: Instant,
}

/// Sends `requests` to `url`, request i due at `t0 + i × period`; returns every outcome, in order.
/// The due times are kept by a thread of its own sleeping with the OS's timer (tokio's timer
/// wheel ticks in whole milliseconds, a fifth of the period), which hands each request to the
/// runtime as its own task.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    requests: Vec<Request>,
    t0: Instant,
    period: Duration,
) -> Result<Vec<Outcome>> {
    let n = requests.len();
    let runtime = tokio::runtime::Handle::current();
    let (client, url) = (client.clone(), url.to_string());
    let tasks = tokio::task::spawn_blocking(move || {
        let mut tasks = Vec::with_capacity(n);
        for (index, req) in requests.into_iter().enumerate() {
            let due = t0 + period * index as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            tasks.push(runtime.spawn(send(client.clone(), url.clone(), req, index, due)));
        }
        tasks
    })
    .await?;
    // Every request has its own timeout; this only guards against a task that never ends.
    let grace = REQUEST_TIMEOUT + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + grace;
    let mut outcomes = Vec::with_capacity(n);
    let mut tasks = tasks.into_iter();
    while let Some(task) = tasks.next() {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(joined) => outcomes.push(joined?),
            Err(_) => {
                let left = 1 + tasks.len();
                for t in tasks {
                    t.abort();
                }
                bail!(
                    "{left} requests still running {} s after the last was due",
                    grace.as_secs()
                );
            }
        }
    }
    Ok(outcomes)
}

async fn send(
    client: reqwest::Client,
    url: String,
    req: Request,
    index: usize,
    due: Instant,
) -> Outcome {
    let sent = Instant::now();
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in req.headers {
        headers.insert(k, v);
    }
    let result = async {
        let resp = client
            .post(&url)
            .headers(headers)
            .body(req.body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let done = Instant::now();
    let (latency, service, answer) = match result {
        Ok((status, body)) => {
            let dup = body.windows(16).any(|w| w == b"\"duplicate\":true");
            (
                Some(done - due),
                Some(done - sent),
                if dup {
                    format!("{status} (duplicate)")
                } else {
                    status.to_string()
                },
            )
        }
        Err(e) if e.is_timeout() => (None, None, "timeout".to_string()),
        Err(e) if e.is_connect() => (None, None, "connect error".to_string()),
        Err(_) => (None, None, "other error".to_string()),
    };
    Outcome {
        index,
        class: req.class,
        lag: sent.saturating_duration_since(due),
        latency,
        service,
        answer,
        done,
        sent,
    }
}

/// Latency figures of a set of outcomes.
pub struct Summary {
    pub count: usize,
    /// p50, p90, p99, p99.9, max of the latency from the due time; `None` where the rank falls on
    /// an unanswered request.
    pub pct: [Option<Duration>; 5],
    /// p50 and p99 of the same requests' latency from their send start.
    pub service: [Option<Duration>; 2],
    /// p50 and p99 of the client's lag (due time -> send start).
    pub lag: [Duration; 2],
    /// Requests sent per second (first to last send start) and 2xx answers per second (first due
    /// time to last 2xx answer).
    pub sent_rate: f64,
    pub ok_rate: f64,
    /// Answers by status (and errors by kind).
    pub answers: BTreeMap<String, u64>,
    pub non_2xx: u64,
    pub errors: u64,
}

pub const PERCENTILES: [f64; 5] = [0.50, 0.90, 0.99, 0.999, 1.0];

/// Nearest rank: the smallest value with at least `p` of the values at or below it. Unanswered
/// requests (`None`) rank above every answered one.
pub fn percentile(sorted: &[Option<Duration>], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(values: impl Iterator<Item = Option<Duration>>) -> Vec<Option<Duration>> {
    let mut v: Vec<Option<Duration>> = values.collect();
    // None (no answer) last.
    v.sort_by_key(|d| (d.is_none(), *d));
    v
}

pub fn summarize<'a>(outcomes: impl Iterator<Item = &'a Outcome> + Clone) -> Summary {
    let lat = sorted(outcomes.clone().map(|o| o.latency));
    let svc = sorted(outcomes.clone().map(|o| o.service));
    let lags = sorted(outcomes.clone().map(|o| Some(o.lag)));
    let count = lat.len();
    let mut answers = BTreeMap::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for o in outcomes.clone() {
        *answers.entry(o.answer.clone()).or_insert(0) += 1;
        match o.answer.as_bytes().first() {
            Some(b'2') => {}
            Some(b'1'..=b'9') => non_2xx += 1,
            _ => errors += 1,
        }
    }
    let first_sent = outcomes.clone().map(|o| o.sent).min();
    let last_sent = outcomes.clone().map(|o| o.sent).max();
    let sent_rate = match (first_sent, last_sent) {
        (Some(a), Some(b)) if b > a => (count - 1) as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    // The first request's due time is its send time less its lag.
    let first_due = outcomes.clone().map(|o| o.sent - o.lag).min();
    let ok: Vec<Instant> = outcomes
        .clone()
        .filter(|o| o.answer.starts_with('2'))
        .map(|o| o.done)
        .collect();
    let ok_rate = match (first_due, ok.iter().max()) {
        (Some(a), Some(b)) if *b > a => ok.len() as f64 / (*b - a).as_secs_f64(),
        _ => 0.0,
    };
    Summary {
        count,
        pct: PERCENTILES.map(|p| percentile(&lat, p)),
        service: [percentile(&svc, 0.5), percentile(&svc, 0.99)],
        lag: [
            percentile(&lags, 0.5).unwrap_or_default(),
            percentile(&lags, 0.99).unwrap_or_default(),
        ],
        sent_rate,
        ok_rate,
        answers,
        non_2xx,
        errors,
    }
}

/// Milliseconds with two decimals, or "no answer".
pub fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2}", d.as_secs_f64() * 1000.0),
        None => "no answer".into(),
    }
}
