//! A private redis-server for `drover dev`: AOF on, in a data directory, so stopping and starting dev
//! resumes where it stopped. The server dies with this process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running private Redis.
pub struct RedisServer {
    pub url: String,
    _child: Child,
}

impl RedisServer {
    pub async fn start(data_dir: &Path) -> anyhow::Result<RedisServer> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec", "--dir"])
            .arg(data_dir)
            .args(["--logfile", "redis.log"])
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start redis-server ({e}); install it (apt-get install redis-server) or set REDIS_URL"
                )
            })?;
        let url = format!("redis://127.0.0.1:{port}/0");
        let client = redis::Client::open(url.as_str())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "redis-server did not answer within 10 s; see {}/redis.log",
                    data_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(RedisServer { url, _child: child })
    }
}
