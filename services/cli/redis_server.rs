//! A private redis-server for `drover dev`: AOF on (fsync every second) in a data directory, its log
//! in `redis.log` there, so stopping and starting dev resumes where it stopped. The server dies with
//! this process. The launcher is the store's (`drover_store::server`), shared with the tests and the
//! benchmarks; this file only says how dev runs it.

use std::path::Path;

use anyhow::Context;
use drover_store::server::{self, Aof, Options};

/// A running private Redis.
pub struct RedisServer {
    pub url: String,
    _server: server::RedisServer,
}

impl RedisServer {
    pub async fn start(data_dir: &Path) -> anyhow::Result<RedisServer> {
        let options = Options::in_dir(data_dir).aof(Aof::EverySec).log_file();
        // The launcher waits for readiness with blocking sleeps.
        let server = tokio::task::spawn_blocking(move || server::RedisServer::start(options))
            .await?
            .context("no private Redis for dev (set REDIS_URL to use another)")?;
        Ok(RedisServer {
            url: server.url(),
            _server: server,
        })
    }
}
