//! Drover's Redis store. Every change of a workflow is one call of a function of the Lua library in
//! `lua/` (loaded with `FUNCTION LOAD REPLACE`), so each transition is atomic; reads are plain
//! commands. The store knows the record layout and the queues; what a transition *means* is decided by
//! the pure engine core in `drover-workflows`.
//!
//! Key schema: see ARCHITECTURE.md. Every key of a workflow and the queues it sits in share one hash
//! tag, the shard's (`drover:{0}:`).

mod claim;
mod conn;
mod control;
mod handback;
pub mod hook;
pub mod probe;
mod query;
pub mod schedule;
pub mod server;
pub mod shards;
mod stats;
mod submit;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::AsyncCommands;

pub use conn::{Conn, Endpoint};

pub use claim::{
    Claim, Claimed, Commit, CommitChild, CommitReply, CommitRequest, CommitResult, Continue,
    Renewal,
};
pub use control::{ControlResult, SignalLimits};
pub use drover_workflows::{NewWorkflow, Submission};
pub use handback::Handback;
pub use query::{Filter, Page, WorkflowView};
pub use stats::{Semaphore, Stats};
pub use submit::{SubmitError, Submitted, fingerprint};

/// The function library: shared helpers first, then one file per function.
const LIBRARY: [&str; 9] = [
    include_str!("../lua/lib.lua"),
    include_str!("../lua/submit.lua"),
    include_str!("../lua/claim.lua"),
    include_str!("../lua/commit.lua"),
    include_str!("../lua/renew.lua"),
    include_str!("../lua/control.lua"),
    include_str!("../lua/handback.lua"),
    include_str!("../lua/schedule.lua"),
    include_str!("../lua/hook.lua"),
];
const TRIM: &str = include_str!("../lua/trim.lua");
/// The line of `lua/lib.lua` that turns the freeze guard on (see its `register`).
const FROZEN_GUARD_ON: &str = "local FROZEN_GUARD = true";
const FROZEN_GUARD_OFF: &str = "local FROZEN_GUARD = false";
/// What `drover_library` returns in `lua/lib.lua`, replaced by the version of the text loaded.
const LIBRARY_VERSION: &str = "DROVER_LIBRARY_VERSION";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt record for workflow {id}: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0:?} is not a workflow id")]
    InvalidId(String),
    /// A new workflow's id names another shard than its cluster's (ids come from
    /// [`Store::workflow_id`]).
    #[error("workflow id {id} does not name shard {shard}, its cluster's")]
    Misplaced { id: String, shard: u16 },
    #[error("bad store URL: {0}")]
    Url(String),
    /// The shard count or placement does not fit the store, or a shard operation cannot be done
    /// (the message says why and what to do).
    #[error("shards: {0}")]
    Shards(String),
    /// With `wait_replicas`, a write the primary made but fewer replicas confirmed within
    /// `wait_timeout`: it may be lost if the primary fails now. Transient: callers retry (writes
    /// are idempotent per lease token, submissions per Idempotency-Key).
    #[error("written on the primary but confirmed by {acked} of {wanted} replicas in time")]
    NotReplicated { acked: i64, wanted: u32 },
}

impl Error {
    /// The same error again, for each caller of a call that failed for all of them (a batch).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Redis(e) => Error::Redis(e.clone()),
            Error::Corrupt { id, reason } => Error::Corrupt {
                id: id.clone(),
                reason: reason.clone(),
            },
            Error::Json(e) => Error::Corrupt {
                id: String::new(),
                reason: format!("encoding: {e}"),
            },
            Error::InvalidId(id) => Error::InvalidId(id.clone()),
            Error::Misplaced { id, shard } => Error::Misplaced {
                id: id.clone(),
                shard: *shard,
            },
            Error::Url(m) => Error::Url(m.clone()),
            Error::Shards(m) => Error::Shards(m.clone()),
            Error::NotReplicated { acked, wanted } => Error::NotReplicated {
                acked: *acked,
                wanted: *wanted,
            },
        }
    }

    /// Whether retrying the same call later may succeed (the connection dropped, Redis restarted).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NotReplicated { .. } => true,
            Error::Redis(e) => {
                conn::lost_primary(e)
                    // Sentinel names no primary while it fails over (the old one is down).
                    || e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    || e.to_string().contains("LOADING")
                    || e.to_string().contains("TRYAGAIN")
                    // A Redis Cluster moving or failing over a shard's slot (a function that
                    // meets a moved key stops before it writes: see `lua/lib.lua`'s guard).
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::ClusterDown
                                | redis::ServerErrorKind::Moved
                                | redis::ServerErrorKind::Ask
                        )
                    )
                    || e.to_string().contains("non local key")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch: the time every store call is given (functions never read the
/// clock). The one definition; the worker, the API, tests and benchmarks use it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether `id` can name a workflow record at all. Ids are parts of key names: one with a `:` would
/// reach a workflow's sub-keys (`<id>:out`), so such ids name nothing. The API checks the exact form
/// ids take (`drover_workflows::is_workflow_id`); this is the store's own line of defence, and every
/// Lua function also checks that its key is a workflow record.
pub(crate) fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 512
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':' && b != b'{' && b != b'}')
}

/// How the store reaches and lays out Redis.
#[derive(Debug, Clone)]
pub struct Config {
    /// `redis://...` for one server, `redis+sentinel://host:port,.../<master>[/db]` for the primary
    /// Sentinel names, `redis+cluster://host:port,...` for a Redis Cluster (see [`Endpoint`]).
    pub url: String,
    /// How many shards the workflows are spread over (1 to [`MAX_SHARDS`]). Shard `S`'s keys all
    /// begin `drover:{S}:`, so each shard is one Redis Cluster slot. Ids made on a sharded store
    /// carry their shard, so the number may grow, never shrink, while workflows exist.
    pub shards: u16,
    /// Shards chosen for partition keys (target cluster names, `""` for the default cluster)
    /// instead of their hash.
    pub placement: BTreeMap<String, u16>,
    /// History entries kept per workflow (oldest dropped first).
    pub history_max: u32,
    /// Per-command response timeout.
    pub response_timeout: Duration,
    /// Replicas that must confirm each function call's writes (Redis `WAIT`, sent in the same
    /// round trip) before the store reports it done; 0 (the default) sends no `WAIT`.
    pub wait_replicas: u32,
    /// How long a `WAIT` may take before the call fails with [`Error::NotReplicated`].
    pub wait_timeout: Duration,
}

/// The most shards a store can have: an id keeps its shard in its last byte.
pub const MAX_SHARDS: u16 = 256;

impl Config {
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            shards: 1,
            placement: BTreeMap::new(),
            history_max: 1000,
            response_timeout: Duration::from_secs(5),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

/// The key prefix of shard `s`, hash tag included.
pub fn shard_prefix(s: u16) -> String {
    format!("drover:{{{s}}}:")
}

/// A handle on the store; cheap to clone (connections are shared and reconnect by themselves).
/// A handle acts on one shard at a time: calls about a workflow go to the shard its id names,
/// calls about the store as a whole (claiming, the scheduler's and outbox's queues) to the
/// handle's own shard ([`Store::on`]), and listing and counting read every shard.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    shard: u16,
}

struct Inner {
    conn: Conn,
    endpoint: Endpoint,
    prefixes: Vec<String>,
    placement: BTreeMap<String, u16>,
    history_max: u32,
    /// Set with `wait_replicas`: every function call waits for that many replicas.
    wait: Option<Wait>,
    /// Shared by all of this store's connections (see `conn::Conn::open`).
    epoch: Arc<AtomicU64>,
}

/// How function calls wait for replicas.
struct Wait {
    replicas: u32,
    timeout: Duration,
    /// The connections function calls go over, in turn: `WAIT` blocks the connection it is sent on
    /// until the replicas answer, so calls sharing one would wait one after another.
    conns: Vec<Conn>,
    turn: AtomicUsize,
}

/// Connections a store with `wait_replicas` spreads its function calls over.
const WAIT_CONNECTIONS: usize = 8;

impl Store {
    /// Connects and loads the function library.
    pub async fn connect(config: &Config) -> Result<Store> {
        if config.shards == 0 || config.shards > MAX_SHARDS {
            return Err(Error::Shards(format!(
                "shards must be 1 to {MAX_SHARDS}, not {}",
                config.shards
            )));
        }
        if let Some((name, s)) = config.placement.iter().find(|(_, s)| **s >= config.shards) {
            return Err(Error::Shards(format!(
                "cluster {name:?} is placed on shard {s}, but there are {} shards (0 to {})",
                config.shards,
                config.shards - 1
            )));
        }
        let endpoint = Endpoint::parse(&config.url).map_err(Error::Url)?;
        let waits = config.wait_replicas > 0;
        let timeouts = conn::Timeouts {
            response: config.response_timeout
                + if waits {
                    config.wait_timeout
                } else {
                    Duration::ZERO
                },
            connect: Duration::from_secs(2),
        };
        let epoch = Arc::new(AtomicU64::new(0));
        let conn = Conn::open(&endpoint, timeouts, &epoch).await?;
        let mut wait = None;
        if waits {
            let mut conns = Vec::with_capacity(WAIT_CONNECTIONS);
            for _ in 0..WAIT_CONNECTIONS {
                conns.push(Conn::open(&endpoint, timeouts, &epoch).await?);
            }
            wait = Some(Wait {
                replicas: config.wait_replicas,
                timeout: config.wait_timeout,
                conns,
                turn: AtomicUsize::new(0),
            });
        }
        let store = Store {
            inner: Arc::new(Inner {
                conn,
                wait,
                epoch,
                endpoint,
                prefixes: (0..config.shards).map(shard_prefix).collect(),
                placement: config.placement.clone(),
                history_max: config.history_max,
            }),
            shard: 0,
        };
        store.load_functions().await?;
        store.check_shard_count().await?;
        for s in store.shards() {
            s.index_top_level().await?;
        }
        Ok(store)
    }

    /// Refuses a shard count the stored workflows cannot live with, and records the count
    /// (`meta:shards` on shard 0). Fewer shards than recorded would leave workflows on shards no
    /// process reads. More is fine for ids made on a sharded store (they name their shard), but
    /// not for a store made with one shard: its ids' last bytes are random, so they would route
    /// to arbitrary shards.
    async fn check_shard_count(&self) -> Result<()> {
        let home = self.on(0);
        let mut conn = self.connection();
        let key = home.key("meta:shards");
        let recorded: Option<u16> = conn.get(&key).await?;
        let n = self.shard_count();
        match recorded {
            Some(r) if n < r => {
                return Err(Error::Shards(format!(
                    "the store has {r} shards; redis_shards = {n} would leave the workflows on \
                     shards {n} to {} unread (shards can be added, never removed)",
                    r - 1
                )));
            }
            None | Some(1) if n > 1 => {
                let used: bool = conn.exists(home.key("idx:all")).await?;
                if used {
                    return Err(Error::Shards(format!(
                        "this store holds workflows made with one shard, whose ids name no \
                         shard: it can have {n} shards only once it holds none (let them end \
                         and be trimmed, or start on an empty Redis)"
                    )));
                }
            }
            _ => {}
        }
        if recorded.is_none_or(|r| r < n) {
            let () = conn.set(&key, n).await?;
        }
        Ok(())
    }

    /// How many shards the store has.
    pub fn shard_count(&self) -> u16 {
        self.inner.prefixes.len() as u16
    }

    /// The shard this handle acts on for calls that name no workflow.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// This store, acting on shard `s` (taken modulo the shard count).
    pub fn on(&self, s: u16) -> Store {
        Store {
            inner: self.inner.clone(),
            shard: s % self.shard_count(),
        }
    }

    /// A handle on each shard, in order.
    pub fn shards(&self) -> Vec<Store> {
        (0..self.shard_count()).map(|s| self.on(s)).collect()
    }

    /// The shard a workflow id lives on: the last byte of its UUID (a child's id begins with its
    /// top-level workflow's). With one shard, every id's.
    pub fn shard_of(&self, id: &str) -> u16 {
        let n = self.shard_count();
        if n == 1 {
            return 0;
        }
        id.get(34..36)
            .and_then(|b| u8::from_str_radix(b, 16).ok())
            .map_or(0, |b| u16::from(b) % n)
    }

    /// This store, acting on the shard of workflow `id`.
    pub(crate) fn at(&self, id: &str) -> Store {
        self.on(self.shard_of(id))
    }

    /// The shard for workflows on target cluster `cluster` (`None`: the default cluster): its
    /// placement if configured, else a stable hash (FNV-1a) of its name. Workflows on one cluster
    /// share its semaphores, so they share a shard.
    pub fn shard_for(&self, cluster: Option<&str>) -> u16 {
        let name = cluster.unwrap_or("");
        if let Some(s) = self.inner.placement.get(name) {
            return *s;
        }
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % u64::from(self.shard_count())) as u16
    }

    /// A new workflow id from `uuid` for a workflow on `cluster`: with more than one shard, the
    /// UUID's last byte is replaced by the cluster's shard (so [`Store::shard_of`] finds it).
    pub fn workflow_id(&self, uuid: uuid::Uuid, cluster: Option<&str>) -> String {
        self.on(self.shard_for(cluster)).stamp(uuid.to_string())
    }

    /// `id` (a UUID's text) naming this handle's shard: with more than one shard, its last byte
    /// becomes the shard number. Workflows created by a call on this handle's shard that are not
    /// submissions (a schedule's fire, a write-back) take their ids from it.
    pub fn stamp(&self, mut id: String) -> String {
        if self.shard_count() > 1 && id.len() >= 36 && id.is_char_boundary(34) {
            id.replace_range(34..36, &format!("{:02x}", self.shard));
        }
        id
    }

    /// Builds `idx:top` (top-level workflows, for the default listing) from `idx:all` once, for
    /// stores written before the index existed; `meta:idx_top` records that it was done. Every
    /// workflow created since is indexed by `create`. Idempotent, so replicas starting together
    /// may all run it.
    async fn index_top_level(&self) -> Result<()> {
        let mut conn = self.connection();
        let marker = self.key("meta:idx_top");
        let done: bool = conn.exists(&marker).await?;
        if done {
            return Ok(());
        }
        let mut start = 0isize;
        const BATCH: isize = 500;
        loop {
            let rows: Vec<(String, f64)> = conn
                .zrange_withscores(self.key("idx:all"), start, start + BATCH - 1)
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &rows {
                pipe.hexists(self.wf_key(id), "parent");
            }
            let has_parent: Vec<bool> = pipe.query_async(&mut conn).await?;
            let mut add = redis::pipe();
            for ((id, score), child) in rows.iter().zip(has_parent) {
                if !child {
                    add.zadd(self.key("idx:top"), id, *score).ignore();
                }
            }
            let () = add.query_async(&mut conn).await?;
            start += BATCH;
        }
        let () = conn.set(&marker, 1).await?;
        Ok(())
    }

    /// Loads (or replaces) the function library, unless this very library is loaded already: on
    /// one server (Sentinel's primary included) `drover_library` tells which version Redis holds,
    /// so the processes of a deployment that start together, or restart one by one, do not each
    /// compile and replace it (2 ms of Redis time per load). Functions persist in Redis's AOF and
    /// RDB. On a Redis Cluster it always loads, on every primary (the redis crate routes
    /// `FUNCTION LOAD` so; one call could not ask each primary what it holds).
    pub async fn load_functions(&self) -> Result<()> {
        let mut conn = self.connection();
        let mut library = LIBRARY.join("\n") + "\n" + TRIM;
        let cluster = matches!(self.inner.endpoint, Endpoint::Cluster { .. });
        if !cluster {
            // No slot of a single server moves: the freeze guard would only cost a call.
            library = library.replacen(FROZEN_GUARD_ON, FROZEN_GUARD_OFF, 1);
        }
        let version = sha1_smol::Sha1::from(library.as_bytes())
            .digest()
            .to_string();
        let library = library.replacen(LIBRARY_VERSION, &version, 1);
        if !cluster {
            // An error (no library yet, or one from before `drover_library`) means: load it.
            let loaded: redis::RedisResult<String> = redis::cmd("FCALL_RO")
                .arg("drover_library")
                .arg(0)
                .query_async(&mut conn)
                .await;
            if loaded.is_ok_and(|v| v == version) {
                return Ok(());
            }
        }
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(library)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A dedicated connection for blocking waits, so they never stall other commands.
    pub async fn waiter(&self, block: Duration) -> Result<Waiter> {
        let conn = Conn::open(
            &self.inner.endpoint,
            conn::Timeouts {
                response: block + Duration::from_secs(5),
                connect: Duration::from_secs(2),
            },
            &self.inner.epoch,
        )
        .await?;
        Ok(Waiter {
            conn,
            key: self.key("wake"),
        })
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.connection();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Deletes up to `batch` workflows per shard that finished before `cutoff_ms`; returns how
    /// many.
    pub async fn trim(&self, cutoff_ms: u64, batch: u32) -> Result<u64> {
        let mut trimmed = 0;
        for s in self.shards() {
            trimmed += s
                .fcall("drover_trim", &s.key("finished"))
                .arg(cutoff_ms)
                .arg(batch)
                .run::<u64>()
                .await?;
        }
        Ok(trimmed)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix())
    }

    fn wf_key(&self, id: &str) -> String {
        format!("{}wf:{id}", self.prefix())
    }

    /// A call of function `name` on this handle's shard, with `key` (one of that shard's) as its
    /// declared key, which routes it to the shard's node on a Redis Cluster.
    fn fcall(&self, name: &str, key: &str) -> Call {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(name).arg(1).arg(key).arg(self.prefix());
        Call {
            cmd,
            store: self.clone(),
        }
    }

    /// A call of function `name` about workflow `id`, on the shard the id names.
    fn wf_call(&self, name: &str, id: &str) -> Call {
        let s = self.at(id);
        s.fcall(name, &s.wf_key(id))
    }

    /// The key prefix of this handle's shard.
    pub fn prefix(&self) -> &str {
        &self.inner.prefixes[usize::from(self.shard)]
    }

    fn history_max(&self) -> u32 {
        self.inner.history_max
    }

    /// The raw connection, for tests and tools that inspect the schema.
    pub fn connection(&self) -> Conn {
        self.inner.conn.clone()
    }
}

/// One call of a library function. If Redis lost the library (restarted without persistence, or
/// flushed), it is loaded again and the call retried once.
pub(crate) struct Call {
    cmd: redis::Cmd,
    store: Store,
}

impl Call {
    pub(crate) fn arg<T: redis::ToRedisArgs>(mut self, arg: T) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub(crate) async fn run<T: redis::FromRedisValue>(self) -> Result<T> {
        let mut conn = match &self.store.inner.wait {
            None => self.store.connection(),
            Some(w) => w.conns[w.turn.fetch_add(1, Ordering::Relaxed) % w.conns.len()].clone(),
        };
        match self.query(&mut conn).await {
            Err(Error::Redis(e)) if e.to_string().contains("Function not found") => {
                self.store.load_functions().await?;
                self.query(&mut conn).await
            }
            other => other,
        }
    }

    /// The call, followed in the same round trip by `WAIT` when the store asks for replicas.
    async fn query<T: redis::FromRedisValue>(&self, conn: &mut Conn) -> Result<T> {
        let Some(w) = &self.store.inner.wait else {
            return Ok(self.cmd.query_async(conn).await?);
        };
        let wanted = w.replicas;
        let (reply, acked): (redis::Value, i64) = redis::pipe()
            .add_command(self.cmd.clone())
            .cmd("WAIT")
            .arg(wanted)
            .arg(w.timeout.as_millis() as u64)
            .query_async(conn)
            .await?;
        // The call's own error (a refusal, a missing library) comes first: it wrote nothing.
        let reply = reply.extract_error()?;
        if acked < i64::from(wanted) {
            return Err(Error::NotReplicated { acked, wanted });
        }
        Ok(redis::from_redis_value(reply).map_err(redis::RedisError::from)?)
    }
}

/// Blocks until new work is signalled or the timeout passes.
pub struct Waiter {
    conn: Conn,
    key: String,
}

impl Waiter {
    /// Returns true when woken by new work, false on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let secs = timeout.as_secs_f64().max(0.001);
        let popped: Option<(String, String)> = self.conn.blpop(&self.key, secs).await?;
        Ok(popped.is_some())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_freeze_guard_can_be_turned_off() {
        let lib = super::LIBRARY[0];
        assert_eq!(lib.matches(super::FROZEN_GUARD_ON).count(), 1);
    }

    #[test]
    fn the_library_names_its_version_once() {
        let all = super::LIBRARY.join("\n") + super::TRIM;
        assert_eq!(all.matches(super::LIBRARY_VERSION).count(), 1);
    }
}
