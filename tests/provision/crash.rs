//! Worker processes killed with SIGKILL in the middle of a provisioning: after MAAS allocated the
//! machine but before the step could record it (its owner data write times out at the proxy), and
//! again while the machine deploys. The next worker adopts the machine MAAS holds under the
//! attempt's name instead of allocating another: one allocation and one deploy in the lab's audit,
//! and no machine left held.

use std::time::Duration;

use drover_lab::{Fault, Lab, LabConfig};
use drover_workflows::State;
use drover_workflows::ports::maas::status;

use super::*;

fn worker(redis: &Redis, lab: &LabHandle, dir: &std::path::Path, name: &str) -> WorkerProcess {
    let config = dir.join("drover.toml");
    WorkerProcess::spawn_with(
        &redis.url(),
        name,
        dir,
        &[
            ("DROVER_CONFIG", config.to_str().unwrap()),
            ("DROVER_KUBE_URL", &lab.kube_url()),
            ("DROVER_MAAS_URL", &lab.maas_url()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_never_hold_two_machines_for_one_attempt() {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut config = LabConfig::reference().with_time_scale(SCALE);
    config.scenario = scenario(0);
    config.scenario.time_scale = SCALE;
    let lab = Lab::start(config).await.expect("lab");
    let maas = maas_client(&lab);
    let dir = crate::lab::support::temp_dir("provision-crash");
    let (_, join_file) = secrets(&dir);
    let key_file = dir.join("maas-key");
    std::fs::write(&key_file, lab.maas_api_key()).unwrap();
    std::fs::write(
        dir.join("drover.toml"),
        format!(
            "[secrets]\njoin-command = {{ file = {:?} }}\nmaas-api-key = {{ file = {:?} }}\n\n\
             [maas]\napi_key = {{ secret = \"maas-api-key\" }}\n",
            join_file.to_str().unwrap(),
            key_file.to_str().unwrap()
        ),
    )
    .unwrap();

    // The allocation goes through; recording it on the machine does not.
    lab.inject(Fault::MaasProxyTimeout {
        method: Some("POST".into()),
        path_contains: Some("op=set_owner_data".into()),
        applied: false,
        count: 1000,
    })
    .unwrap();
    let mut w1 = worker(&redis, &lab, &dir, "w1");
    let id = submit(&store, "provision-node", provision_input(), 0).await;
    wait_for(
        Duration::from_secs(30),
        "an allocation whose owner data cannot be written",
        || async {
            let audit = lab.audit();
            let timeouts = audit
                .iter()
                .filter(|e| e.verb == "set_owner_data" && e.outcome == 504)
                .count();
            maas_calls(&lab, "allocate") == 1 && timeouts >= 2
        },
    )
    .await;
    w1.kill9();
    lab.clear_faults();
    let mut w2 = worker(&redis, &lab, &dir, "w2");
    let m2 = maas.clone();
    let deploying = wait_for_value(Duration::from_secs(30), "the machine deploying", || {
        let maas = m2.clone();
        async move {
            machines(maas.as_ref())
                .await
                .into_iter()
                .find(|m| m.status == status::DEPLOYING)
        }
    })
    .await;
    w2.kill9();
    let _w3 = worker(&redis, &lab, &dir, "w3");

    let v = &ended(&store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    assert_eq!(result["node"], deploying.hostname.as_str(), "{result}");
    assert_eq!(maas_calls(&lab, "allocate"), 1, "one allocation in all");
    assert_eq!(maas_calls(&lab, "deploy"), 1, "one deploy in all");
    let held: Vec<String> = machines(maas.as_ref())
        .await
        .into_iter()
        .filter(|m| m.owner.is_some() && m.pool == "spare")
        .map(|m| m.hostname)
        .collect();
    assert_eq!(held, vec![deploying.hostname.clone()]);
    assert!(leaked(maas.as_ref()).await.is_empty());
}
