//! What the store holds, counted for metrics: workflows by state (and, for those not ended, by
//! kind), tasks by the structure they wait in, and permits held per semaphore. Two pipelined
//! round trips, each command O(1) or bounded by the live workflows (never a scan of the ended
//! ones), so a scrape costs Redis about as much as a claim.

use drover_workflows::State;

use crate::{Result, Store};

/// The counts of one reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Workflows by state, every state listed.
    pub by_state: Vec<(State, u64)>,
    /// Workflows not ended, by kind and state (only non-zero counts).
    pub live: Vec<(String, State, u64)>,
    /// Tasks in `ready`, `delayed`, `leases` (leased), `paused`, and waiting for a semaphore.
    pub ready: u64,
    pub delayed: u64,
    pub leased: u64,
    pub paused: u64,
    pub waiting_for_permits: u64,
    /// Per semaphore with holders: permits held and tasks waiting.
    pub semaphores: Vec<Semaphore>,
}

/// One semaphore's use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Semaphore {
    pub name: String,
    pub held: u64,
    pub waiting: u64,
}

impl Store {
    /// Counts what the store holds, over every shard; `kinds` are the kinds to break live
    /// workflows down by.
    pub async fn stats(&self, kinds: &[&str]) -> Result<Stats> {
        let mut total = Stats::default();
        for s in self.shards() {
            total.add(s.stats_shard(kinds).await?);
        }
        Ok(total)
    }

    async fn stats_shard(&self, kinds: &[&str]) -> Result<Stats> {
        let mut conn = self.connection();
        let live: Vec<State> = State::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        let mut pipe = redis::pipe();
        for s in State::ALL {
            pipe.zcard(self.key(&format!("idx:state:{}", s.as_str())));
        }
        // ZINTERCARD costs the size of the smaller set times the number of sets: the live state's
        // index, small next to a kind's (which keeps ended workflows for the retention).
        for kind in kinds {
            for s in &live {
                pipe.cmd("ZINTERCARD")
                    .arg(2)
                    .arg(self.key(&format!("idx:state:{}", s.as_str())))
                    .arg(self.key(&format!("idx:kind:{kind}")));
            }
        }
        pipe.zcard(self.key("ready"))
            .zcard(self.key("delayed"))
            .zcard(self.key("leases"))
            .scard(self.key("paused"))
            .smembers(self.key("sems"));
        let reply: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut it = reply.into_iter();
        let mut next_u64 = || count(it.next());
        let by_state = State::ALL.into_iter().map(|s| (s, next_u64())).collect();
        let mut live_counts = Vec::new();
        for kind in kinds {
            for s in &live {
                let n = next_u64();
                if n > 0 {
                    live_counts.push((kind.to_string(), *s, n));
                }
            }
        }
        let (ready, delayed, leased, paused) = (next_u64(), next_u64(), next_u64(), next_u64());
        let names: Vec<String> = it
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let mut semaphores = Vec::with_capacity(names.len());
        if !names.is_empty() {
            let mut pipe = redis::pipe();
            for n in &names {
                pipe.zcard(self.key(&format!("sem:{n}")))
                    .zcard(self.key(&format!("semwait:{n}")));
            }
            let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
            for (name, c) in names.into_iter().zip(counts.chunks(2)) {
                semaphores.push(Semaphore {
                    name,
                    held: c[0],
                    waiting: c.get(1).copied().unwrap_or(0),
                });
            }
        }
        Ok(Stats {
            by_state,
            live: live_counts,
            ready,
            delayed,
            leased,
            paused,
            waiting_for_permits: semaphores.iter().map(|s| s.waiting).sum(),
            semaphores,
        })
    }
}

impl Stats {
    /// Adds another shard's counts to these.
    fn add(&mut self, other: Stats) {
        for (state, n) in other.by_state {
            match self.by_state.iter_mut().find(|(s, _)| *s == state) {
                Some((_, m)) => *m += n,
                None => self.by_state.push((state, n)),
            }
        }
        for (kind, state, n) in other.live {
            match self
                .live
                .iter_mut()
                .find(|(k, s, _)| *k == kind && *s == state)
            {
                Some((_, _, m)) => *m += n,
                None => self.live.push((kind, state, n)),
            }
        }
        self.ready += other.ready;
        self.delayed += other.delayed;
        self.leased += other.leased;
        self.paused += other.paused;
        self.waiting_for_permits += other.waiting_for_permits;
        for sem in other.semaphores {
            match self.semaphores.iter_mut().find(|s| s.name == sem.name) {
                Some(s) => {
                    s.held += sem.held;
                    s.waiting += sem.waiting;
                }
                None => self.semaphores.push(sem),
            }
        }
    }
}

fn count(v: Option<redis::Value>) -> u64 {
    v.and_then(|v| redis::from_redis_value::<u64>(v).ok())
        .unwrap_or(0)
}
