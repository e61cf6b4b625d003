//! `drover shards`: where the store's shards are on a Redis Cluster, and moving one to another
//! primary while Drover runs (see `drover_store::shards`). It talks to Redis directly (the
//! config's `redis_url` and `redis_shards`), as an operator's maintenance tool, not through the API.

use clap::{Args as ClapArgs, Subcommand};

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Shards>,
}

#[derive(Subcommand, Debug)]
enum Shards {
    /// Each shard's slot, the primary serving it and whether it is frozen by a move (the default).
    List,
    /// Moves a shard's slot to another primary: the shard is frozen (its calls wait and retry)
    /// for as long as its keys take to move. Run it again to finish a move that was interrupted.
    Move {
        /// The shard (0 to redis_shards - 1).
        shard: u16,
        /// The primary to move it to, as `host:port` (`drover shards` lists them).
        #[arg(long)]
        to: String,
    },
}

pub async fn run(args: Args, config: crate::config::Config) -> anyhow::Result<()> {
    let store = crate::connect(&config.require_redis()?).await?;
    match args.command.unwrap_or(Shards::List) {
        Shards::List => {
            let places = store.shard_places().await?;
            let nodes = store.cluster_nodes().await?;
            println!("{:<6} {:<6} {:<22} STATE", "SHARD", "SLOT", "PRIMARY");
            for p in places {
                println!(
                    "{:<6} {:<6} {:<22} {}",
                    p.shard,
                    p.slot,
                    p.node,
                    if p.frozen {
                        "frozen (a move is under way or was interrupted: run it again)"
                    } else {
                        "serving"
                    }
                );
            }
            let addrs: Vec<String> = nodes.into_iter().map(|n| n.addr).collect();
            println!("primaries: {}", addrs.join(", "));
        }
        Shards::Move { shard, to } => {
            let moved = store.move_shard(shard, &to).await?;
            if moved.keys == 0 {
                println!(
                    "shard {shard} (slot {}) is on {} already",
                    moved.slot, moved.to
                );
            } else {
                println!(
                    "shard {shard} (slot {}) moved from {} to {}: {} keys, frozen for {} ms",
                    moved.slot,
                    moved.from,
                    moved.to,
                    moved.keys,
                    moved.frozen_for.as_millis()
                );
            }
        }
    }
    Ok(())
}
