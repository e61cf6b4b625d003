//! A worker process for the versioned-steps test (`tests/versioning.rs`): runs the kinds of one
//! version (`versioned_worker v1|v2`, Redis from `DROVER_REDIS_URL`) until SIGTERM. Built by cargo
//! with the tests; not a product binary.

#[path = "../tests/versioning/kinds.rs"]
mod kinds;

use std::sync::Arc;

use drover_store::probe::RedisProbe;
use drover_workflows::ports::Ports;

fn main() {
    let version = std::env::args()
        .nth(1)
        .expect("usage: versioned_worker v1|v2");
    let url = std::env::var("DROVER_REDIS_URL").expect("DROVER_REDIS_URL");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = drover_store::Store::connect(&drover_store::Config::new(url))
            .await
            .expect("store");
        let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
            .with_probe(Arc::new(RedisProbe::new(store.clone())));
        let config = drover_worker::Config {
            concurrency: 8,
            lease_ms: 3_000,
            idle_wait_ms: 500,
            shutdown_grace_ms: 5_000,
            name: Some(format!("{version}-{}", std::process::id())),
            ..drover_worker::Config::default()
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        drover_worker::run(
            store,
            kinds::registry(&version),
            ports,
            config,
            async move {
                term.recv().await;
            },
        )
        .await
        .expect("worker runs");
    });
}
