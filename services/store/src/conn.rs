//! How the store reaches Redis: one server by URL, the primary that Redis Sentinel names, or a
//! Redis Cluster (the redis crate's cluster connection, which routes each command by its key's slot
//! and follows `MOVED`/`ASK` redirections).
//!
//! `Conn` is the connection every store call uses (a `redis::aio::ConnectionLike`, so commands and
//! pipelines run on it as on any connection). To a plain URL it is a `ConnectionManager`, which
//! reconnects to the same address by itself. Through Sentinel it is a multiplexed connection to the
//! primary Sentinel names, checked with `ROLE` when made (the redis crate's `SentinelClient`), and
//! dropped when a reply says it no longer leads to a writable primary: the connection broke or
//! timed out, or the server answered `READONLY` (it was demoted to a replica) or `MASTERDOWN`. The
//! call that saw it fails with a transient error, which every caller already retries; the next call
//! asks Sentinel again, and so does the next call on every other connection of the store (they
//! share an epoch). So a failover reaches the store by its effects, with no subscription to
//! `+switch-master` to keep alive, and no reconnection ever goes to an address Sentinel did not name
//! (a killed primary that comes back before Sentinel demoted it is not written to by a reconnect).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server: `redis://[user:password@]host:port[/db]`.
    Direct(String),
    /// The primary of the master group `master`, as the Sentinels at `sentinels` (`host:port`) name
    /// it: `redis+sentinel://[user:password@]host:port[,host:port...]/<master>[/db]`. The
    /// credentials and the database are the primary's; the Sentinels are asked without them.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        username: Option<String>,
        password: Option<String>,
        db: i64,
    },
    /// A Redis Cluster, found through any of its nodes:
    /// `redis+cluster://[user:password@]host:port[,host:port...]`.
    Cluster {
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

/// Splits `user:password@` off a URL's authority.
fn credentials(rest: &str) -> (Option<String>, Option<String>, &str) {
    let (auth, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (Some(a.to_string()), None),
        },
    };
    (username, password, rest)
}

/// Connection settings carrying the URL's credentials, if any.
pub(crate) fn credentials_info(
    username: &Option<String>,
    password: &Option<String>,
) -> redis::RedisConnectionInfo {
    let mut info = redis::RedisConnectionInfo::default();
    if let Some(u) = username {
        info = info.set_username(u);
    }
    if let Some(p) = password {
        info = info.set_password(p);
    }
    info
}

/// `host:port,host:port` as a list; errors name the entry that is not `host:port`.
fn host_list(hosts: &str, what: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(format!(
            "a {what} URL lists at least one {what} as host:port"
        ));
    }
    for s in &list {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => return Err(format!("{what} {s:?} is not host:port")),
        }
    }
    Ok(list)
}

impl Endpoint {
    /// Reads a store URL. Errors say what is wrong, never quoting a password.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (username, password, rest) = credentials(rest);
            let hosts = rest.strip_suffix('/').unwrap_or(rest);
            if hosts.contains('/') {
                return Err("a Cluster URL has no database or path: \
                            redis+cluster://host:7000,host:7001"
                    .into());
            }
            let nodes = host_list(hosts, "Cluster node")?;
            return Ok(Endpoint::Cluster {
                nodes,
                username,
                password,
            });
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return Ok(Endpoint::Direct(url.to_string()));
        };
        let (username, password, rest) = credentials(rest);
        let (hosts, path) = rest.split_once('/').ok_or(
            "a Sentinel URL names its master group after the hosts: \
             redis+sentinel://host:26379,host:26379/mymaster",
        )?;
        let sentinels = host_list(hosts, "Sentinel")?;
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or_default().to_string();
        if master.is_empty() {
            return Err("a Sentinel URL names its master group: .../mymaster".into());
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse()
                .map_err(|_| format!("database {d:?} is not a number"))?,
        };
        if parts.next().is_some() {
            return Err("a Sentinel URL ends with /<master>[/db]".into());
        }
        Ok(Endpoint::Sentinel {
            sentinels,
            master,
            username,
            password,
            db,
        })
    }
}

/// Timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub response: Duration,
    pub connect: Duration,
}

/// A connection to the store's Redis (see the module documentation). Cheap to clone: clones share
/// the connection.
#[derive(Clone)]
pub struct Conn {
    link: Link,
    db: i64,
}

#[derive(Clone)]
enum Link {
    Direct(ConnectionManager),
    Sentinel(Arc<Followed>),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The primary Sentinel named last, and how to ask again.
struct Followed {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection, its generation and the epoch it was made in.
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection, u64)>>,
    /// Shared by the store's connections: bumped when any of them loses the primary, so the others
    /// ask Sentinel again before their next call instead of failing it on the old server.
    epoch: Arc<AtomicU64>,
    /// Held while asking Sentinel, so concurrent calls after a failover ask once.
    resolving: tokio::sync::Mutex<u64>,
    config: AsyncConnectionConfig,
}

impl Conn {
    /// Opens a connection; the store's connections share `epoch` (see [`Followed::epoch`]).
    pub(crate) async fn open(
        endpoint: &Endpoint,
        t: Timeouts,
        epoch: &Arc<AtomicU64>,
    ) -> redis::RedisResult<Conn> {
        match endpoint {
            Endpoint::Direct(url) => {
                let client = redis::Client::open(url.as_str())?;
                let db = client.get_connection_info().redis_settings().db();
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(t.response))
                    .set_connection_timeout(Some(t.connect))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_with_config(client, config).await?;
                Ok(Conn {
                    link: Link::Direct(manager),
                    db,
                })
            }
            Endpoint::Sentinel {
                sentinels,
                master,
                username,
                password,
                db,
            } => {
                let info = credentials_info(username, password).set_db(*db);
                let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                let addrs: Vec<String> = sentinels.iter().map(|s| format!("redis://{s}")).collect();
                let sentinel = SentinelClient::build(
                    addrs,
                    master.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )?;
                let followed = Arc::new(Followed {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    current: std::sync::Mutex::new(None),
                    epoch: epoch.clone(),
                    resolving: tokio::sync::Mutex::new(0),
                    config: AsyncConnectionConfig::new()
                        .set_response_timeout(Some(t.response))
                        .set_connection_timeout(Some(t.connect)),
                });
                followed.get().await?;
                Ok(Conn {
                    link: Link::Sentinel(followed),
                    db: *db,
                })
            }
            Endpoint::Cluster {
                nodes,
                username,
                password,
            } => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(
                    nodes.iter().map(|n| format!("redis://{n}")),
                )
                .response_timeout(t.response)
                .connection_timeout(t.connect)
                .retries(6)
                .min_retry_wait(20)
                .max_retry_wait(500);
                if let Some(u) = username {
                    builder = builder.username(u);
                }
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                let conn = builder.build()?.get_async_connection().await?;
                Ok(Conn {
                    link: Link::Cluster(conn),
                    db: 0,
                })
            }
        }
    }
}

impl Followed {
    /// The connection to the primary, asking Sentinel first if there is none.
    async fn get(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let mut generation = self.resolving.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let client = self.sentinel.lock().await.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *generation += 1;
        let made = (*generation, conn);
        *self.current.lock().unwrap() = Some((made.0, made.1.clone(), epoch));
        tracing::info!(
            primary = %client.get_connection_info().addr(),
            generation = *generation,
            "Connected to the Redis primary Sentinel names."
        );
        Ok(made)
    }

    /// The current connection, unless another connection of the store lost the primary since it
    /// was made.
    fn fresh(&self) -> Option<(u64, MultiplexedConnection)> {
        let mut current = self.current.lock().unwrap();
        match &*current {
            Some((g, c, e)) if *e == self.epoch.load(Ordering::Acquire) => Some((*g, c.clone())),
            _ => {
                *current = None;
                None
            }
        }
    }

    /// Forgets connection `generation` (if it is still the current one) and tells the store's
    /// other connections: the next call of each asks Sentinel again.
    fn drop_connection(&self, generation: u64) {
        let mut current = self.current.lock().unwrap();
        if matches!(&*current, Some((g, _, _)) if *g == generation) {
            *current = None;
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Whether an error means this connection no longer leads to a writable primary.
pub(crate) fn lost_primary(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

fn lost_primary_reply(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if matches!(
        e.kind(),
        Some(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown)
    ))
}

impl Followed {
    /// Runs `call` on the primary's connection; forgets the connection when the outcome says it no
    /// longer leads to a writable primary (`lost` judges a reply that arrived).
    async fn call<T>(
        &self,
        call: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
        lost: impl Fn(&T) -> bool,
    ) -> redis::RedisResult<T> {
        let (generation, mut conn) = self.get().await?;
        let reply = call(&mut conn).await;
        let gone = match &reply {
            Ok(v) => lost(v),
            Err(e) => lost_primary(e),
        };
        if gone {
            self.drop_connection(generation);
        }
        reply
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match &mut self.link {
                Link::Direct(m) => m.req_packed_command(cmd).await,
                Link::Cluster(c) => c.req_packed_command(cmd).await,
                Link::Sentinel(f) => {
                    f.call(
                        async |c| c.req_packed_command(cmd).await,
                        lost_primary_reply,
                    )
                    .await
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match &mut self.link {
                Link::Direct(m) => m.req_packed_commands(pipeline, offset, count).await,
                Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
                Link::Sentinel(f) => {
                    f.call(
                        async |c| c.req_packed_commands(pipeline, offset, count).await,
                        |vs: &Vec<Value>| vs.iter().any(lost_primary_reply),
                    )
                    .await
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sentinel_urls() {
        assert_eq!(
            Endpoint::parse("redis://127.0.0.1:6379/0").unwrap(),
            Endpoint::Direct("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            Endpoint::parse("redis+sentinel://a:26379,b:26380/mymaster").unwrap(),
            Endpoint::Sentinel {
                sentinels: vec!["a:26379".into(), "b:26380".into()],
                master: "mymaster".into(),
                username: None,
                password: None,
                db: 0
            }
        );
        assert_eq!(
            Endpoint::parse("redis+sentinel://:s3cret@a:26379/m/2").unwrap(),
            Endpoint::Sentinel {
                sentinels: vec!["a:26379".into()],
                master: "m".into(),
                username: None,
                password: Some("s3cret".into()),
                db: 2
            }
        );
        assert_eq!(
            Endpoint::parse("redis+sentinel://u:p@a:1/m").unwrap(),
            Endpoint::Sentinel {
                sentinels: vec!["a:1".into()],
                master: "m".into(),
                username: Some("u".into()),
                password: Some("p".into()),
                db: 0
            }
        );
        for (bad, says) in [
            ("redis+sentinel://a:26379", "names its master group"),
            ("redis+sentinel://a:26379/", "names its master group"),
            ("redis+sentinel:///m", "at least one Sentinel"),
            ("redis+sentinel://a/m", "not host:port"),
            ("redis+sentinel://a:x/m", "not host:port"),
            ("redis+sentinel://a:1/m/x", "not a number"),
            ("redis+sentinel://a:1/m/0/z", "ends with"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            Endpoint::parse("redis+cluster://:pw@a:7000,b:7001/").unwrap(),
            Endpoint::Cluster {
                nodes: vec!["a:7000".into(), "b:7001".into()],
                username: None,
                password: Some("pw".into()),
            }
        );
        for (bad, says) in [
            ("redis+cluster://", "at least one"),
            ("redis+cluster://a:7000/0", "no database"),
            ("redis+cluster://a:7000,b", "not host:port"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Endpoint::parse("redis+sentinel://:hunter2@a/m").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
