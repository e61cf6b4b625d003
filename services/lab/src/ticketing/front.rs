//! What stands in front of a ticketing system's handlers: a load balancer that can be "down",
//! injected faults (429 with `Retry-After`, 500, 503, added latency; by rate or as a sequence)
//! and the per-ticket write rate limit (a token bucket per issue or record), so that a client
//! ignoring rate limits is caught. The decisions take `now` and a random draw as inputs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Faults injected into one system. Rates are fractions of matching requests (0 to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketFaults {
    /// Every request answered 503 by the load balancer (an HTML page), before authentication.
    pub down: bool,
    /// Fraction answered 429 with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    /// Fraction answered 500.
    pub rate_500: f64,
    /// Fraction answered 503 with `Retry-After: retry_after_secs`.
    pub rate_503: f64,
    /// The `Retry-After` of injected 429 and 503 answers, in seconds.
    pub retry_after_secs: u64,
    /// Added to every matching request before it is answered, in milliseconds.
    pub latency_ms: u64,
    /// Added after a matching request was handled, before its answer goes out, in milliseconds:
    /// the work is done while the client still waits (and may give up, or die, not knowing).
    pub response_delay_ms: u64,
    /// Statuses for the next matching requests, in order, before the rates apply (`0` lets a
    /// request through): `[429, 500]` fails the next two.
    pub sequence: Vec<u16>,
    /// Only requests with this method (all when unset).
    pub method: Option<String>,
    /// Only requests whose path and query contain this (all when unset).
    pub path_contains: Option<String>,
}

impl Default for TicketFaults {
    fn default() -> Self {
        TicketFaults {
            down: false,
            rate_429: 0.0,
            rate_500: 0.0,
            rate_503: 0.0,
            retry_after_secs: 1,
            latency_ms: 0,
            response_delay_ms: 0,
            sequence: Vec::new(),
            method: None,
            path_contains: None,
        }
    }
}

/// A per-ticket write limit: a token bucket of `burst` tokens refilled at `writes_per_sec`.
/// `writes_per_sec` 0 turns it off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    pub writes_per_sec: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            writes_per_sec: 10.0,
            burst: 10,
        }
    }
}

/// Why the front answered instead of the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The load balancer has no server: 503 with its HTML page.
    Down,
    /// An injected status, with `Retry-After` for 429 and 503.
    Injected {
        status: u16,
        retry_after: Option<u64>,
    },
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(limit: &RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    /// Take a token, or say in how many whole seconds (at least 1) one will be there.
    pub fn take(&mut self, limit: &RateLimit, now: Instant) -> Result<(), u64> {
        let cap = f64::from(limit.burst.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.writes_per_sec).min(cap);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / limit.writes_per_sec;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// The front of one system.
#[derive(Debug)]
pub struct Front {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    faults: TicketFaults,
    limit: RateLimit,
    buckets: HashMap<String, Bucket>,
}

impl Front {
    /// A front without faults.
    pub fn new(limit: RateLimit) -> Self {
        Front {
            inner: Mutex::new(Inner {
                faults: TicketFaults::default(),
                limit,
                buckets: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the faults.
    pub fn set_faults(&self, faults: TicketFaults) {
        self.lock().faults = faults;
    }

    /// The faults.
    pub fn faults(&self) -> TicketFaults {
        self.lock().faults.clone()
    }

    /// Set "down" only.
    pub fn set_down(&self, down: bool) {
        self.lock().faults.down = down;
    }

    /// Replace the per-ticket limit (buckets start full again).
    pub fn set_rate_limit(&self, limit: RateLimit) {
        let mut inner = self.lock();
        inner.limit = limit;
        inner.buckets.clear();
    }

    /// The per-ticket limit.
    pub fn rate_limit(&self) -> RateLimit {
        self.lock().limit.clone()
    }

    /// What to do with a request before its handler: a delay to add, and an answer instead of
    /// the handler's.
    pub fn admit(&self, method: &str, path: &str) -> (Option<Duration>, Option<Refusal>) {
        let mut inner = self.lock();
        decide(&mut inner.faults, method, path, rand::random::<f64>())
    }

    /// How long to hold a handled request's answer (`response_delay_ms`, for matching requests).
    pub fn response_delay(&self, method: &str, path: &str) -> Option<Duration> {
        let inner = self.lock();
        let f = &inner.faults;
        let matches = f
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && f.path_contains.as_deref().is_none_or(|p| path.contains(p));
        (matches && f.response_delay_ms > 0).then(|| Duration::from_millis(f.response_delay_ms))
    }

    /// Take a write token for `ticket`, or the seconds to wait.
    pub fn take_write(&self, ticket: &str, now: Instant) -> Result<(), u64> {
        let mut inner = self.lock();
        if inner.limit.writes_per_sec <= 0.0 {
            return Ok(());
        }
        let limit = inner.limit.clone();
        inner
            .buckets
            .entry(ticket.to_string())
            .or_insert_with(|| Bucket::full(&limit, now))
            .take(&limit, now)
    }
}

/// The fault decision for one request; consumes one step of the sequence when it matches. `draw`
/// is a uniform random number in [0, 1).
fn decide(
    faults: &mut TicketFaults,
    method: &str,
    path: &str,
    draw: f64,
) -> (Option<Duration>, Option<Refusal>) {
    if faults.down {
        return (None, Some(Refusal::Down));
    }
    let matches = faults
        .method
        .as_deref()
        .is_none_or(|m| m.eq_ignore_ascii_case(method))
        && faults
            .path_contains
            .as_deref()
            .is_none_or(|p| path.contains(p));
    if !matches {
        return (None, None);
    }
    let latency = (faults.latency_ms > 0).then(|| Duration::from_millis(faults.latency_ms));
    let retry_after = Some(faults.retry_after_secs);
    let injected = |status: u16| Refusal::Injected {
        status,
        retry_after: matches!(status, 429 | 503).then_some(retry_after).flatten(),
    };
    if !faults.sequence.is_empty() {
        let status = faults.sequence.remove(0);
        return (latency, (status != 0).then(|| injected(status)));
    }
    let mut edge = faults.rate_429;
    let refusal = if draw < edge {
        Some(injected(429))
    } else {
        edge += faults.rate_500;
        if draw < edge {
            Some(injected(500))
        } else {
            edge += faults.rate_503;
            (draw < edge).then(|| injected(503))
        }
    };
    (latency, refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_then_rates_then_down() {
        let mut f = TicketFaults {
            sequence: vec![429, 0, 500],
            rate_503: 0.5,
            retry_after_secs: 7,
            path_contains: Some("/comment".into()),
            ..TicketFaults::default()
        };
        let get = |f: &mut TicketFaults, draw| decide(f, "POST", "/x/comment", draw).1;
        assert_eq!(decide(&mut f, "GET", "/x/issue", 0.0).1, None);
        assert_eq!(
            get(&mut f, 0.9),
            Some(Refusal::Injected {
                status: 429,
                retry_after: Some(7)
            })
        );
        assert_eq!(get(&mut f, 0.0), None);
        assert_eq!(
            get(&mut f, 0.9),
            Some(Refusal::Injected {
                status: 500,
                retry_after: None
            })
        );
        assert_eq!(get(&mut f, 0.9), None);
        assert_eq!(
            get(&mut f, 0.2),
            Some(Refusal::Injected {
                status: 503,
                retry_after: Some(7)
            })
        );
        f.down = true;
        assert_eq!(decide(&mut f, "GET", "/", 0.9).1, Some(Refusal::Down));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limit = RateLimit {
            writes_per_sec: 2.0,
            burst: 2,
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(&limit, t0);
        assert_eq!(b.take(&limit, t0), Ok(()));
        assert_eq!(b.take(&limit, t0), Ok(()));
        assert_eq!(b.take(&limit, t0), Err(1));
        assert_eq!(b.take(&limit, t0 + Duration::from_millis(499)), Err(1));
        assert_eq!(b.take(&limit, t0 + Duration::from_millis(600)), Ok(()));
        let slow = RateLimit {
            writes_per_sec: 0.25,
            burst: 1,
        };
        let mut b = Bucket::full(&slow, t0);
        assert_eq!(b.take(&slow, t0), Ok(()));
        assert_eq!(b.take(&slow, t0), Err(4));
    }
}
