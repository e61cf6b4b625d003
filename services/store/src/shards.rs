//! Where the shards are on a Redis Cluster, and moving one to another node without stopping
//! Drover: `drover shards` (list, move).
//!
//! Each shard is one slot (its keys share the hash tag `{S}`). Moving a slot is Redis's own
//! protocol (`CLUSTER SETSLOT` importing and migrating, `MIGRATE` of every key, `SETSLOT NODE`),
//! with one addition: the shard is frozen first (`<prefix>frozen`, moved before any other key),
//! so no function call can start on it, find some keys moved and stop midway with its writes half
//! done (the functions touch keys they do not declare; see `lua/lib.lua`'s guard). Calls that meet
//! the freeze fail as transient and are retried; once the slot is on its new node, the key is
//! deleted there and the shard runs again. `redis-cli --cluster reshard` does not freeze: it is
//! safe for slots that hold no shard, not for Drover's.
//!
//! A move that stops halfway (the process killed) leaves the shard frozen and the slot marked
//! importing and migrating: running the same move again finishes it (every step may be repeated).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::{Endpoint, Error, Result, Store};

/// One primary of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// `host:port`.
    pub addr: String,
    /// Slots it serves, as `CLUSTER NODES` lists them (`a-b` ranges and single slots).
    pub slots: Vec<(u16, u16)>,
}

/// Where a shard is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlace {
    pub shard: u16,
    pub slot: u16,
    /// The primary serving the slot (`host:port`).
    pub node: String,
    /// A move is under way (or stopped halfway): calls on the shard wait.
    pub frozen: bool,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub shard: u16,
    pub slot: u16,
    pub from: String,
    pub to: String,
    /// Keys moved (0 when the shard was on `to` already).
    pub keys: u64,
    /// How long the shard was frozen.
    pub frozen_for: Duration,
}

/// Keys per `MIGRATE`.
const MIGRATE_BATCH: usize = 200;

fn cluster_only(what: &str) -> Error {
    Error::Shards(format!(
        "{what} needs a Redis Cluster store (redis_url = \"redis+cluster://host:port,...\")"
    ))
}

/// The primaries in `CLUSTER NODES` output, by id.
fn parse_nodes(text: &str) -> BTreeMap<String, Node> {
    let mut nodes = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        let addr = f[1].split('@').next().unwrap_or_default().to_string();
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        nodes.insert(
            f[0].to_string(),
            Node {
                id: f[0].to_string(),
                addr,
                slots,
            },
        );
    }
    nodes
}

impl Store {
    /// The cluster's primaries (a Redis Cluster store only).
    pub async fn cluster_nodes(&self) -> Result<Vec<Node>> {
        if !matches!(self.inner.endpoint, Endpoint::Cluster { .. }) {
            return Err(cluster_only("listing the cluster's nodes"));
        }
        let mut conn = self.connection();
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await?;
        Ok(parse_nodes(&text).into_values().collect())
    }

    /// The slot of this handle's shard.
    pub async fn shard_slot(&self) -> Result<u16> {
        let mut conn = self.connection();
        Ok(redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(self.key("frozen"))
            .query_async(&mut conn)
            .await?)
    }

    /// Where every shard is.
    pub async fn shard_places(&self) -> Result<Vec<ShardPlace>> {
        let nodes = self.cluster_nodes().await?;
        let mut out = Vec::new();
        for s in self.shards() {
            let slot = s.shard_slot().await?;
            let node = nodes
                .iter()
                .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            let mut conn = s.connection();
            let frozen: bool = conn.exists(s.key("frozen")).await?;
            out.push(ShardPlace {
                shard: s.shard,
                slot,
                node,
                frozen,
            });
        }
        Ok(out)
    }

    /// A direct connection to one node (`host:port`), with the store's credentials.
    async fn node_conn(&self, addr: &str) -> Result<redis::aio::MultiplexedConnection> {
        let Endpoint::Cluster {
            username, password, ..
        } = &self.inner.endpoint
        else {
            return Err(cluster_only("moving a shard"));
        };
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Shards(format!("node {addr:?} is not host:port")))?;
        let info = crate::conn::credentials_info(username, password);
        use redis::IntoConnectionInfo;
        let client = redis::Client::open(
            redis::ConnectionAddr::Tcp(host, port)
                .into_connection_info()?
                .set_redis_settings(info),
        )?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// Moves shard `shard` to the primary at `to` (`host:port`, as `CLUSTER NODES` names it),
    /// frozen meanwhile (see the module documentation). Repeating a move that stopped halfway
    /// finishes it.
    pub async fn move_shard(&self, shard: u16, to: &str) -> Result<Moved> {
        self.move_shard_observed(shard, to, MIGRATE_BATCH, async |_| {})
            .await
    }

    /// [`Store::move_shard`], migrating `batch` keys per `MIGRATE` and calling `between` after
    /// each batch with the keys moved so far (the freeze key included), while the slot is split
    /// between the two nodes: tests look at the shard in that state.
    pub async fn move_shard_observed(
        &self,
        shard: u16,
        to: &str,
        batch: usize,
        mut between: impl AsyncFnMut(u64),
    ) -> Result<Moved> {
        if shard >= self.shard_count() {
            return Err(Error::Shards(format!(
                "there is no shard {shard}: the store has {} (0 to {})",
                self.shard_count(),
                self.shard_count() - 1
            )));
        }
        let s = self.on(shard);
        let nodes = s.cluster_nodes().await?;
        let slot = s.shard_slot().await?;
        let target = nodes.iter().find(|n| n.addr == to).ok_or_else(|| {
            let known: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
            Error::Shards(format!(
                "no primary at {to}; the cluster's primaries are {}",
                known.join(", ")
            ))
        })?;
        let source = nodes
            .iter()
            .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .ok_or_else(|| Error::Shards(format!("no primary serves slot {slot}")))?;
        let frozen_key = s.key("frozen");
        let mut cluster = s.connection();
        if source.id == target.id {
            // Already there (or a halfway move whose last step was done): thaw it.
            let _: i64 = cluster.del(&frozen_key).await?;
            return Ok(Moved {
                shard,
                slot,
                from: source.addr.clone(),
                to: target.addr.clone(),
                keys: 0,
                frozen_for: Duration::ZERO,
            });
        }
        let started = Instant::now();
        // Frozen before anything moves: every call from here on stops before it writes.
        let _: () = cluster.set(&frozen_key, "moving").await?;
        let mut src = s.node_conn(&source.addr).await?;
        let mut dst = s.node_conn(&target.addr).await?;
        let (host, port) = target.addr.rsplit_once(':').unwrap_or_default();
        let setslot = |state: &str, id: &str| {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(state).arg(id);
            c
        };
        let () = setslot("IMPORTING", &source.id)
            .query_async(&mut dst)
            .await?;
        let () = setslot("MIGRATING", &target.id)
            .query_async(&mut src)
            .await?;
        let migrate = |keys: &[String]| {
            let mut c = redis::cmd("MIGRATE");
            c.arg(host)
                .arg(port)
                .arg("")
                .arg(0)
                .arg(10_000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(keys);
            c
        };
        let mut moved = 0u64;
        // The freeze key first: from now on the target holds it, the source no longer does.
        let _: String = migrate(std::slice::from_ref(&frozen_key))
            .query_async(&mut src)
            .await?;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(batch.max(1))
                .query_async(&mut src)
                .await?;
            if keys.is_empty() {
                break;
            }
            let _: String = migrate(&keys).query_async(&mut src).await?;
            moved += keys.len() as u64;
            between(moved + 1).await;
        }
        // The target first, then the source, then every other primary learns the new owner.
        let () = setslot("NODE", &target.id).query_async(&mut dst).await?;
        let () = setslot("NODE", &target.id).query_async(&mut src).await?;
        for n in nodes
            .iter()
            .filter(|n| n.id != source.id && n.id != target.id)
        {
            let mut c = s.node_conn(&n.addr).await?;
            let () = setslot("NODE", &target.id).query_async(&mut c).await?;
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&frozen_key)
            .query_async(&mut dst)
            .await?;
        Ok(Moved {
            shard,
            slot,
            from: source.addr.clone(),
            to: target.addr.clone(),
            keys: moved + 1,
            frozen_for: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 master - 0 0 1 connected 0-5460 [5461->-e7d1]
e7d1 127.0.0.1:30002@40002 myself,master - 0 0 2 connected 5461-10922 12000
aaaa 127.0.0.1:30003@40003 slave e7d1 0 0 2 connected
bbbb 127.0.0.1:30005@40005 master,fail - 0 0 3 disconnected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes["07c3"].addr, "127.0.0.1:30004");
        assert_eq!(nodes["07c3"].slots, vec![(0, 5460)]);
        assert_eq!(nodes["e7d1"].slots, vec![(5461, 10922), (12000, 12000)]);
    }
}
