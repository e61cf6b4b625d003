//! Per-ticket write pacing: an in-process token bucket per ticket (burst 2, refilled at the
//! system's `writes_per_second_per_ticket`), so a burst of steps commenting on one ticket does not
//! run into Jira's per-issue write limit or a ServiceNow rate-limit rule. A write waits here for a
//! token, but only a few seconds: a longer wait becomes a Transient error carrying it, so the engine
//! waits durably instead of holding a worker. A 429 with `Retry-After` empties the ticket's bucket
//! until then. The bucket arithmetic takes `now` as an input and is table-tested.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes a bucket lets through at once.
pub const BURST: f64 = 2.0;

/// Buckets kept before idle, full ones are dropped.
const MAX_IDLE_BUCKETS: usize = 1024;

/// One ticket's bucket: `tokens` as of `at`. `at` is in the future while the system has asked us
/// to wait (a 429's `Retry-After`); nothing is taken before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(now: Instant) -> Bucket {
        Bucket {
            tokens: BURST,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, rate: f64, now: Instant) -> Result<(), Duration> {
        if now < self.at {
            let deficit = (1.0 - self.tokens).max(0.0) / rate;
            return Err(self.at - now + Duration::from_secs_f64(deficit));
        }
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// The system said to wait until `until`: nothing goes before then, one write may go then.
    pub fn block(&mut self, until: Instant) {
        if until > self.at {
            self.at = until;
            self.tokens = 1.0;
        }
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        if now > self.at {
            let gained = now.duration_since(self.at).as_secs_f64() * rate;
            self.tokens = (self.tokens + gained).min(BURST);
            self.at = now;
        }
    }

    /// Whether the bucket is as a new one would be (so it can be forgotten).
    fn idle(&self, rate: f64, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        now >= b.at && b.tokens >= BURST
    }
}

/// The buckets of one system, by ticket key.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// `rate` writes per second per ticket (validated positive and finite by the config).
    pub fn new(rate: f64) -> Limiter {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes a token for `ticket` now, or says how long until one is there.
    pub fn take(&self, ticket: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.lock();
        if buckets.len() > MAX_IDLE_BUCKETS {
            buckets.retain(|_, b| !b.idle(self.rate, now));
        }
        buckets
            .entry(ticket.to_string())
            .or_insert_with(|| Bucket::full(now))
            .take(self.rate, now)
    }

    /// Empties `ticket`'s bucket until `until` (a 429's `Retry-After`).
    pub fn block(&self, ticket: &str, now: Instant, until: Instant) {
        self.lock()
            .entry(ticket.to_string())
            .or_insert_with(|| Bucket::full(now))
            .block(until);
    }

    /// Waits for a token for `ticket`, at most `max_wait`; a longer wait is returned instead.
    pub async fn acquire(&self, ticket: &str, max_wait: Duration) -> Result<(), Duration> {
        let deadline = Instant::now() + max_wait;
        loop {
            let now = Instant::now();
            match self.take(ticket, now) {
                Ok(()) => return Ok(()),
                Err(wait) if now + wait > deadline => return Err(wait),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_rate_then_block() {
        let t0 = Instant::now();
        let mut b = Bucket::full(t0);
        let rate = 2.0;
        assert_eq!(b.take(rate, t0), Ok(()));
        assert_eq!(b.take(rate, t0), Ok(()));
        assert_eq!(b.take(rate, t0), Err(ms(500)));
        assert_eq!(b.take(rate, t0 + ms(250)), Err(ms(250)));
        assert_eq!(b.take(rate, t0 + ms(500)), Ok(()));
        // A 429 asking for 3 s: nothing before then, one write then, the next half a second later.
        let now = t0 + ms(500);
        b.block(now + ms(3000));
        assert_eq!(b.take(rate, now + ms(1000)), Err(ms(2000)));
        assert_eq!(b.take(rate, now + ms(3000)), Ok(()));
        assert_eq!(b.take(rate, now + ms(3000)), Err(ms(500)));
        // An earlier Retry-After does not shorten a longer one.
        b.block(now + ms(100));
        assert_eq!(b.take(rate, now + ms(3500)), Ok(()));
        // Refill stops at the burst.
        let later = now + ms(60_000);
        assert_eq!(b.take(rate, later), Ok(()));
        assert_eq!(b.take(rate, later), Ok(()));
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn limiter_keys_buckets_by_ticket_and_forgets_idle_ones() {
        let l = Limiter::new(1.0);
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(l.take("OPS-1", t0), Ok(()));
        }
        assert_eq!(l.take("OPS-1", t0), Err(ms(1000)));
        assert_eq!(l.take("OPS-2", t0), Ok(()));
        l.block("OPS-2", t0, t0 + ms(5000));
        assert_eq!(l.take("OPS-2", t0 + ms(1000)), Err(ms(4000)));
        for i in 0..=MAX_IDLE_BUCKETS {
            l.take(&format!("T-{i}"), t0).ok();
        }
        l.take("new", t0 + ms(10_000)).ok();
        assert!(l.lock().len() < 10, "{}", l.lock().len());
    }
}
