//! The MAAS contract over raw HTTP: OAuth PLAINTEXT and HMAC-SHA1, `?op=` and `/op-<name>` forms,
//! multipart bodies without parameters, machine filters, allocate constraints, deploy, release
//! with erase, abort, mark_broken/mark_fixed, power, owner data, interfaces and events with
//! MAAS's status codes, texts and transitions, and the faults the lab injects into each (503
//! bursts, 504 from the proxy, 409 with Retry-After, failed deployments and releases, power
//! loss).

use std::collections::HashMap;
use std::time::Duration;

use drover_lab::maas::auth::{hmac_header as hmac, plaintext_header as plaintext};
use reqwest::Method;
use serde_json::{Value, json};

use drover_lab::{Api, Fault, LabHandle};

use crate::lab::support;

async fn call(
    lab: &LabHandle,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String, reqwest::header::HeaderMap) {
    let url = format!("{}api/2.0/{path}", lab.maas_url());
    let resp = support::http()
        .request(method, url)
        .header("authorization", plaintext(&lab.maas_api_key()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .expect("request");
    let (code, headers) = (resp.status().as_u16(), resp.headers().clone());
    (code, resp.text().await.expect("body"), headers)
}

/// A call that must answer 200 with JSON.
async fn ok(lab: &LabHandle, method: Method, path: &str, form: &[(&str, &str)]) -> Value {
    let (code, body, _) = call(lab, method.clone(), path, form).await;
    assert_eq!(code, 200, "{method} {path} {form:?}: {body}");
    serde_json::from_str(&body).expect("json")
}

async fn get(lab: &LabHandle, path: &str) -> Value {
    ok(lab, Method::GET, path, &[]).await
}

async fn post(lab: &LabHandle, path: &str, form: &[(&str, &str)]) -> Value {
    ok(lab, Method::POST, path, form).await
}

/// A POST, whatever it answers.
async fn try_post(
    lab: &LabHandle,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String, reqwest::header::HeaderMap) {
    call(lab, Method::POST, path, form).await
}

/// `POST machines/{id}/?op={op}`, which must answer 200 with JSON.
async fn machine_op(lab: &LabHandle, id: &str, op: &str, form: &[(&str, &str)]) -> Value {
    post(lab, &format!("machines/{id}/?op={op}"), form).await
}

/// `POST machines/{id}/?op={op}`, whatever it answers.
async fn try_machine_op(
    lab: &LabHandle,
    id: &str,
    op: &str,
    form: &[(&str, &str)],
) -> (u16, String, reqwest::header::HeaderMap) {
    try_post(lab, &format!("machines/{id}/?op={op}"), form).await
}

/// A lab at `scale` and its machines' ids by hostname.
async fn lab_and_ids(scale: f64) -> (LabHandle, HashMap<String, String>) {
    let lab = support::lab(scale).await;
    let ids = ids(&lab).await;
    (lab, ids)
}

/// hostname -> system_id.
async fn ids(lab: &LabHandle) -> HashMap<String, String> {
    get(lab, "machines/")
        .await
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| {
            (
                m["hostname"].as_str().expect("hostname").to_string(),
                m["system_id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

/// Wait until a machine's `status_name` is `want`.
async fn wait_status(lab: &LabHandle, id: &str, want: &str) -> Value {
    support::wait_for(
        &format!("machine {id} to be {want}"),
        Duration::from_secs(30),
        || async {
            let m = get(lab, &format!("machines/{id}/")).await;
            (m["status_name"] == want).then_some(m)
        },
    )
    .await
}

/// A node's Ready condition status ("True", "Unknown"), or None without a Node.
fn node_ready(lab: &LabHandle, name: &str) -> Option<String> {
    let n = lab.get("nodes", "", name)?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(String::from))
}

async fn wait_node(lab: &LabHandle, name: &str, want: Option<&str>) {
    support::wait_for(
        &format!("node {name} to be {want:?}"),
        Duration::from_secs(30),
        || async { (node_ready(lab, name).as_deref() == want).then_some(()) },
    )
    .await;
}

/// The events of a machine, newest first, as `events/?op=query` gives them.
async fn events(lab: &LabHandle, id: &str, level: &str) -> Vec<Value> {
    get(
        lab,
        &format!("events/?op=query&id={id}&level={level}&limit=1000"),
    )
    .await["events"]
        .as_array()
        .expect("events")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_signatures() {
    let lab = support::lab(60.0).await;
    let c = support::http();
    let base = format!("{}api/2.0/machines/", lab.maas_url());
    let resp = c.get(&base).send().await.expect("anonymous");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.expect("body"),
        "Authorization Error: Invalid API key."
    );
    let resp = c
        .get(&base)
        .header("authorization", plaintext("lab-consumer:lab-token:nope"))
        .send()
        .await
        .expect("bad");
    assert_eq!(resp.status(), 401);
    let resp = c
        .get(&base)
        .header("authorization", plaintext(&lab.maas_api_key()))
        .send()
        .await
        .expect("plaintext");
    assert_eq!(resp.status(), 200);
    let machines: Value = resp.json().await.expect("json");
    assert_eq!(machines.as_array().map(Vec::len), Some(15));
    let whoami = format!("{}api/2.0/users/", lab.maas_url());
    let auth = hmac(&lab.maas_api_key(), "GET", &whoami, &[("op", "whoami")]);
    let resp = c
        .get(format!("{whoami}?op=whoami"))
        .header("authorization", auth.clone())
        .send()
        .await
        .expect("hmac");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["username"],
        "admin"
    );
    let resp = c
        .get(format!("{whoami}?op=whoami&x=1"))
        .header("authorization", auth)
        .send()
        .await
        .expect("hmac tampered");
    assert_eq!(
        resp.status(),
        401,
        "a signature over other parameters is refused"
    );
    let describe: Value = c
        .get(format!("{}api/2.0/describe/", lab.maas_url()))
        .send()
        .await
        .expect("describe")
        .json()
        .await
        .expect("json");
    let handler = |name: &str| {
        describe["handlers"]
            .as_array()
            .expect("handlers")
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in describe"))
    };
    assert_eq!(
        handler("MachineHandler")["uri"],
        format!("{}api/2.0/machines/{{system_id}}/", lab.maas_url())
    );
    assert_eq!(handler("EventsHandler")["actions"][0]["op"], "query");
    lab.shutdown().await;
}

/// python-libmaas sends a multipart body with one empty part for calls without parameters
/// (`allocate()`, `deploy()`); MAAS takes that as no parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_multipart_bodies_mean_no_parameters() {
    let lab = support::lab(600.0).await;
    let b = "===============8666602823579139788==";
    let send = |path: String, body: String| {
        let url = format!("{}api/2.0/{path}", lab.maas_url());
        let auth = plaintext(&lab.maas_api_key());
        async move {
            let resp = support::http()
                .post(url)
                .header("authorization", auth)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary=\"{b}\""),
                )
                .body(body)
                .send()
                .await
                .expect("request");
            let code = resp.status().as_u16();
            (code, resp.text().await.expect("body"))
        }
    };
    let one_empty_part = format!("--{b}\r\n\r\n--{b}--");
    let no_parts = format!("--{b}--");
    let mut allocated = Vec::new();
    for body in [&one_empty_part, &no_parts] {
        let (code, text) = send("machines/?op=allocate".into(), body.clone()).await;
        assert_eq!(code, 200, "{text}");
        let m: Value = serde_json::from_str(&text).expect("machine");
        assert_eq!(m["status_name"], "Allocated");
        allocated.push(m["system_id"].as_str().expect("id").to_string());
    }
    let (code, text) = send(
        format!("machines/{}/?op=deploy", allocated[0]),
        one_empty_part.clone(),
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let m: Value = serde_json::from_str(&text).expect("machine");
    assert_eq!(
        (
            m["status_name"].as_str(),
            m["osystem"].as_str(),
            m["distro_series"].as_str()
        ),
        (Some("Deploying"), Some("ubuntu"), Some("jammy"))
    );
    wait_status(&lab, &allocated[0], "Deployed").await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_filters_and_their_errors() {
    let lab = support::lab(60.0).await;
    let count = |v: Value| v.as_array().map(Vec::len).expect("a list");
    let m = post(
        &lab,
        "machines/?op=allocate",
        &[("pool", "spare"), ("agent_name", "wf-7")],
    )
    .await;
    let sid = m["system_id"].as_str().expect("id").to_string();
    let cases: Vec<(String, usize)> = vec![
        ("status=deployed".into(), 11),
        ("status=ready".into(), 3),
        ("status=allocated&owner=admin".into(), 1),
        ("owner=admin".into(), 12),
        ("agent_name=wf-7".into(), 1),
        (format!("id={sid}"), 1),
        ("hostname=spare-01&hostname=spare-02".into(), 2),
        ("pool=spare&zone=az1".into(), 2),
        ("tags=vmo-worker&pool=spare".into(), 4),
        ("tags=control-plane".into(), 3),
        ("not_tags=vmo-worker".into(), 3),
        ("pool=vmo&not_in_zone=az1".into(), 7),
        ("power_state=off".into(), 4),
    ];
    for (query, want) in cases {
        assert_eq!(
            count(get(&lab, &format!("machines/?{query}")).await),
            want,
            "{query}"
        );
    }
    for (query, want) in [
        (
            "zone=nowhere",
            json!({"zone": ["No such zone: 'nowhere'."]}),
        ),
        ("pool=deep", json!({"pool": ["No such pool: 'deep'."]})),
        (
            "tags=gpu&tags=fpga",
            json!({"tags": ["No such tag(s): 'fpga'."]}),
        ),
        (
            "status=sleeping",
            json!({"status": ["Select a valid choice. sleeping is not one of the available choices."]}),
        ),
        (
            "owner=mallory",
            json!({"owner": ["No such owner: 'mallory'."]}),
        ),
    ] {
        let (code, body, headers) =
            call(&lab, Method::GET, &format!("machines/?{query}"), &[]).await;
        assert_eq!(code, 400, "{query}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json"),
            want,
            "{query}"
        );
    }
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_constraints_and_maas_messages() {
    let lab = support::lab(60.0).await;
    let m = post(
        &lab,
        "machines/?op=allocate",
        &[
            ("pool", "spare"),
            ("zone", "az2"),
            ("tags", "vmo-worker"),
            ("not_tags", "gpu"),
            ("cpu_count", "32"),
            ("mem", "65536"),
            ("agent_name", "drover/wf-1"),
            ("comment", "provision-node wf-1"),
        ],
    )
    .await;
    assert_eq!(
        (
            m["status"].as_u64(),
            m["status_name"].as_str(),
            m["owner"].as_str()
        ),
        (Some(10), Some("Allocated"), Some("admin"))
    );
    assert_eq!(m["zone"]["name"], "az2");
    assert_eq!(m["pool"]["name"], "spare");
    let id = m["system_id"].as_str().expect("id").to_string();
    let mine = get(&lab, "machines/?agent_name=drover/wf-1").await;
    assert_eq!(mine[0]["system_id"], id.as_str());
    let debug = events(&lab, &id, "DEBUG").await;
    assert!(debug.iter().any(|e| e["type"] == "User acquiring node"
        && e["description"] == "(admin) - provision-node wf-1"
        && e["level"] == "DEBUG"));
    assert!(debug.iter().any(|e| e["type"] == "Node changed status"
        && e["description"] == "From 'Ready' to 'Allocated' (to admin)"));

    let conflict = |form: Vec<(&'static str, String)>, want: String| {
        let lab = &lab;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (code, body, headers) =
                call(lab, Method::POST, "machines/?op=allocate", &pairs).await;
            assert_eq!((code, body), (409, want));
            assert!(
                headers.get("retry-after").is_none(),
                "a business 409 has no Retry-After"
            );
        }
    };
    conflict(
        vec![("pool", "spare".into()), ("cpu_count", "128".into()), ("agent_name", "a".into())],
        r#"No available machine matches constraints: [('pool', ['spare']), ('cpu_count', ['128']), ('agent_name', ['a'])] (resolved to "cpu_count=128.0 pool=spare")"#.into(),
    )
    .await;
    conflict(
        vec![("tags", "vmo-worker".into()), ("tags", "gpu".into())],
        r#"No available machine matches constraints: [('tags', ['vmo-worker', 'gpu'])] (resolved to "tags=gpu,vmo-worker")"#.into(),
    )
    .await;
    conflict(
        vec![("system_id", id.clone())],
        format!("No machine with system ID {id} available."),
    )
    .await;
    for (form, want) in [
        (
            vec![("tags", "nope")],
            json!({"tags": ["No such tag(s): 'nope'."]}),
        ),
        (vec![("pool", "x")], json!({"pool": ["No such pool: 'x'."]})),
        (vec![("zone", "x")], json!({"zone": ["No such zone: 'x'."]})),
        (
            vec![("memory", "4096")],
            json!({"memory": ["No such constraint."]}),
        ),
        (
            vec![("cpu_count", "lots"), ("mem", "big")],
            json!({"cpu_count": ["Invalid CPU count: number required."], "mem": ["Invalid memory: number of MiB required."]}),
        ),
    ] {
        let (code, body, _) = try_post(&lab, "machines/?op=allocate", &form).await;
        assert_eq!(code, 400, "{form:?}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), want);
    }
    for _ in 0..3 {
        post(&lab, "machines/op-allocate", &[]).await;
    }
    conflict(
        vec![("comment", "one more".into())],
        "No machine available.".into(),
    )
    .await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_walks_status_messages_and_refuses_wrong_states() {
    let lab = support::lab(300.0).await;
    let m = post(&lab, "machines/?op=allocate", &[("pool", "spare")]).await;
    let id = m["system_id"].as_str().expect("id").to_string();
    let deploy = format!("machines/{id}/?op=deploy");
    let (code, body, _) = try_post(&lab, &deploy, &[("distro_series", "hirsute")]).await;
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"distro_series": ["'hirsute' is not a valid distro_series.  It should be one of: '', 'ubuntu/focal', 'ubuntu/jammy', 'ubuntu/noble'."]})
    );
    let (code, _, _) = try_post(&lab, &deploy, &[("user_data", "not base64!")]).await;
    assert_eq!(code, 400);
    let m = post(
        &lab,
        &deploy,
        &[
            ("user_data", "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtlY2hvXQ=="),
            ("distro_series", "ubuntu/jammy"),
            ("hwe_kernel", "hwe-22.04"),
        ],
    )
    .await;
    assert_eq!(
        (
            m["status"].as_u64(),
            m["status_message"].as_str(),
            m["osystem"].as_str(),
            m["distro_series"].as_str(),
            m["hwe_kernel"].as_str()
        ),
        (
            Some(9),
            Some("Deploying"),
            Some("ubuntu"),
            Some("jammy"),
            Some("hwe-22.04")
        )
    );
    let (code, body, _) = try_post(&lab, &deploy, &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Can't deploy a machine that is in the 'Deploying' state"
        )
    );
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let deployed = loop {
        let m = get(&lab, &format!("machines/{id}/")).await;
        let msg = m["status_message"].as_str().unwrap_or("").to_string();
        if seen.last() != Some(&msg) {
            seen.push(msg);
        }
        if m["status_name"] == "Deployed" {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deployment: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stages = [
        "Deploying",
        "Powering on",
        "Performing PXE boot",
        "Loading ephemeral",
        "Configuring storage",
        "Installing OS",
        "Configuring OS",
        "Rebooting",
        "Deployed",
    ];
    assert!(
        seen.iter().all(|s| stages.contains(&s.as_str())) && seen.len() >= 3,
        "status messages seen while polling: {seen:?}"
    );
    assert_eq!(deployed["status_message"], "Deployed");
    assert_eq!(
        (
            deployed["power_state"].as_str(),
            deployed["status"].as_u64()
        ),
        (Some("on"), Some(6))
    );
    assert!(
        deployed["ip_addresses"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    // Every stage is an INFO event, oldest last.
    let info: Vec<String> = events(&lab, &id, "INFO")
        .await
        .iter()
        .rev()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(info, stages);
    let (code, body, _) = try_post(&lab, &deploy, &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Can't deploy a machine that is in the 'Deployed' state"
        )
    );
    let (code, body, _) = try_machine_op(&lab, &id, "abort", &[]).await;
    assert_eq!(
        (code, body),
        (
            409,
            format!("Cannot abort in current state: node {id} is in state Deployed.")
        )
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployments_fast_and_at_node_timeout() {
    let (lab, ids) = lab_and_ids(600.0).await;
    let plan = [
        (
            "spare-01",
            Fault::MaasDeployFailure {
                machine: Some("spare-01".into()),
                count: 1,
            },
            "Installation failed (refer to the installation log for more information).",
            "on",
        ),
        (
            "spare-02",
            Fault::MaasDeployPowerFailure {
                machine: Some("spare-02".into()),
                count: 1,
            },
            "",
            "error",
        ),
        (
            "spare-03",
            Fault::MaasDeployHang {
                machine: Some("spare-03".into()),
                count: 1,
            },
            "Node operation 'Deploying' timed out after 30 minutes.",
            "off",
        ),
        (
            "spare-04",
            Fault::MaasDeployPowerLoss {
                machine: Some("spare-04".into()),
                count: 1,
            },
            "Node operation 'Deploying' timed out after 30 minutes.",
            "off",
        ),
    ];
    let started = lab.sim_time();
    for (host, fault, _, _) in &plan {
        lab.inject(fault.clone()).expect("fault");
        // Deploying a Ready machine allocates it first.
        let m = machine_op(&lab, &ids[*host], "deploy", &[]).await;
        assert_eq!(
            (m["status_name"].as_str(), m["owner"].as_str()),
            (Some("Deploying"), Some("admin"))
        );
    }
    let power_failed = wait_status(&lab, &ids["spare-02"], "Failed deployment").await;
    assert!(
        lab.sim_time() - started < 600.0,
        "a BMC failure fails the deployment within minutes, not at node_timeout"
    );
    let sid2 = &ids["spare-02"];
    assert_eq!(
        power_failed["error_description"],
        format!(
            "Power on for the node failed: Failed talking to node's BMC: Failed to power {sid2}. BMC never transitioned from off to on."
        )
    );
    for (host, _, reason, power) in &plan {
        let id = &ids[*host];
        let m = wait_status(&lab, id, "Failed deployment").await;
        let reason = if reason.is_empty() {
            m["error_description"].as_str().unwrap_or("").to_string()
        } else {
            reason.to_string()
        };
        assert_eq!(m["status"], 11);
        assert_eq!(m["error_description"], reason.as_str(), "{host}");
        assert_eq!(m["power_state"], *power, "{host}");
        let errors = events(&lab, id, "ERROR").await;
        assert!(
            errors
                .iter()
                .any(|e| e["type"] == "Marking node failed" && e["description"] == reason.as_str()),
            "{host}: {errors:?}"
        );
        let (code, body, _) = try_machine_op(&lab, id, "deploy", &[]).await;
        assert_eq!(
            (code, body.as_str()),
            (
                409,
                "Can't deploy a machine that is in the 'Failed deployment' state"
            )
        );
    }
    assert!(
        lab.sim_time() - started >= 1800.0,
        "silent deployments fail at node_timeout"
    );
    let hung = get(&lab, &format!("machines/{}/", ids["spare-03"])).await;
    assert_eq!(
        hung["status_message"],
        "Marking node failed - Node operation 'Deploying' timed out after 30 minutes."
    );
    // A failed machine is released (quick erase) and Ready again.
    let id = &ids["spare-01"];
    machine_op(
        &lab,
        id,
        "release",
        &[("erase", "true"), ("quick_erase", "true")],
    )
    .await;
    let m = wait_status(&lab, id, "Ready").await;
    assert_eq!(
        (m["owner"].clone(), m["error_description"].as_str()),
        (Value::Null, Some(""))
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_erase_options_and_failures() {
    let (lab, ids) = lab_and_ids(600.0).await;
    let t0 = lab.sim_time();
    let release = |host: &str, form: Vec<(&'static str, &'static str)>| {
        let (lab, id) = (&lab, ids[host].clone());
        async move { post(lab, &format!("machines/{id}/?op=release"), &form).await }
    };
    let m = release("worker-05", vec![("comment", "decommission")]).await;
    assert_eq!(
        (m["status"].as_u64(), m["status_message"].as_str()),
        (Some(12), Some("Releasing"))
    );
    // Already releasing: a no-op 200.
    let again = release("worker-05", vec![]).await;
    assert_eq!(again["status_name"], "Releasing");
    release(
        "worker-06",
        vec![("erase", "true"), ("quick_erase", "true")],
    )
    .await;
    release(
        "worker-07",
        vec![("erase", "true"), ("secure_erase", "true")],
    )
    .await;
    release("worker-08", vec![("erase", "true")]).await;
    // quick_erase without erase does not erase.
    release("worker-01", vec![("quick_erase", "true")]).await;
    let erasing = wait_status(&lab, &ids["worker-06"], "Disk erasing").await;
    assert_eq!(
        (erasing["status"].as_u64(), erasing["power_state"].as_str()),
        (Some(14), Some("on"))
    );
    let (code, body, _) = try_machine_op(&lab, &ids["worker-06"], "release", &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Machine cannot be released in its current state ('Disk erasing')."
        )
    );
    for host in [
        "worker-05",
        "worker-01",
        "worker-06",
        "worker-07",
        "worker-08",
    ] {
        let m = wait_status(&lab, &ids[host], "Ready").await;
        assert_eq!(
            (
                m["owner"].clone(),
                m["power_state"].as_str(),
                m["status_message"].as_str(),
                m["osystem"].as_str()
            ),
            (Value::Null, Some("off"), Some("Released"), Some("")),
            "{host}"
        );
        let info: Vec<String> = events(&lab, &ids[host], "INFO")
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect();
        let erased = info.iter().any(|t| t == "Disks erased");
        assert_eq!(
            erased,
            matches!(host, "worker-06" | "worker-07" | "worker-08"),
            "{host}: {info:?}"
        );
        wait_node(&lab, host, None).await;
    }
    // A full erase takes the scenario's erase_secs (an hour).
    assert!(lab.sim_time() - t0 >= 3600.0);

    lab.inject(Fault::MaasEraseFailure {
        machine: Some("worker-04".into()),
        count: 1,
    })
    .expect("fault");
    release("worker-04", vec![("erase", "true")]).await;
    let m = wait_status(&lab, &ids["worker-04"], "Failed disk erasing").await;
    assert_eq!(
        (
            m["status"].as_u64(),
            m["status_message"].as_str(),
            m["owner"].as_str()
        ),
        (
            Some(15),
            Some("Marking node failed - Failed to erase disks."),
            Some("admin")
        )
    );
    wait_node(&lab, "worker-04", Some("Unknown")).await;
    release("worker-04", vec![]).await;
    wait_status(&lab, &ids["worker-04"], "Ready").await;

    lab.inject(Fault::MaasReleaseHang {
        machine: Some("worker-03".into()),
        count: 1,
    })
    .expect("fault");
    release("worker-03", vec![]).await;
    let m = wait_status(&lab, &ids["worker-03"], "Releasing failed").await;
    assert_eq!(m["status"], 13);
    assert_eq!(
        m["status_message"],
        "Marking node failed - Node operation 'Releasing' timed out after 5 minutes."
    );
    assert_eq!(
        node_ready(&lab, "worker-03").as_deref(),
        Some("Unknown"),
        "the node stays while the machine is not released"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mark_broken_mark_fixed_and_power() {
    let (lab, ids) = lab_and_ids(300.0).await;
    // Abort a deployment: Allocated again, powered off.
    let a = &ids["spare-01"];
    machine_op(&lab, a, "deploy", &[]).await;
    let m = machine_op(&lab, a, "abort", &[("comment", "wrong image")]).await;
    assert_eq!(
        (
            m["status_name"].as_str(),
            m["power_state"].as_str(),
            m["status_message"].as_str()
        ),
        (Some("Allocated"), Some("off"), Some("Aborted deployment"))
    );
    let (code, body, _) = try_machine_op(&lab, a, "abort", &[]).await;
    assert_eq!(
        (code, body),
        (
            409,
            format!("Cannot abort in current state: node {a} is in state Allocated.")
        )
    );

    // mark_broken: only the owner may; it releases first; fixed, it is Ready.
    let b = &ids["spare-02"];
    let (code, _, _) = try_machine_op(&lab, b, "mark_broken", &[]).await;
    assert_eq!(
        code, 403,
        "an unowned machine cannot be marked broken by a user"
    );
    machine_op(&lab, a, "set_owner_data", &[("drover/workflow", "wf-1")]).await;
    let m = machine_op(&lab, a, "mark_broken", &[("comment", "bad NIC")]).await;
    assert_eq!(
        (
            m["status"].as_u64(),
            m["owner"].clone(),
            m["owner_data"].clone(),
            m["error_description"].as_str()
        ),
        (Some(8), Value::Null, json!({}), Some("bad NIC"))
    );
    let (code, body, _) = try_machine_op(&lab, b, "mark_fixed", &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (409, "Can't mark a non-broken node as 'Ready'.")
    );
    assert_eq!(
        machine_op(&lab, a, "mark_fixed", &[]).await["status_name"],
        "Ready"
    );

    // A deployed worker marked broken by its owner is released: its Node goes, fixed it is Ready.
    let w3 = &ids["worker-03"];
    machine_op(&lab, w3, "mark_broken", &[("comment", "ECC errors")]).await;
    wait_node(&lab, "worker-03", Some("Unknown")).await;
    assert_eq!(
        machine_op(&lab, w3, "mark_fixed", &[]).await["status_name"],
        "Ready"
    );
    wait_node(&lab, "worker-03", None).await;
    // One the region marks broken keeps its deployment: fixed, it is Deployed and its Node Ready.
    lab.inject(Fault::MaasMachineBroken {
        machine: "worker-02".into(),
    })
    .expect("fault");
    wait_node(&lab, "worker-02", Some("Unknown")).await;
    let m = machine_op(&lab, &ids["worker-02"], "mark_fixed", &[]).await;
    assert_eq!(
        (m["status_name"].as_str(), m["owner"].as_str()),
        (Some("Deployed"), Some("admin"))
    );
    wait_node(&lab, "worker-02", Some("True")).await;

    // Power: off takes the Node down, on brings it back once booted.
    let w4 = &ids["worker-04"];
    let m = machine_op(&lab, w4, "power_off", &[("stop_mode", "soft")]).await;
    assert_eq!(m["power_state"], "off");
    assert_eq!(
        get(&lab, &format!("machines/{w4}/?op=query_power_state")).await,
        json!({"state": "off"})
    );
    wait_node(&lab, "worker-04", Some("Unknown")).await;
    machine_op(&lab, w4, "power_on", &[]).await;
    assert_eq!(
        get(&lab, &format!("machines/{w4}/?op=query_power_state")).await,
        json!({"state": "on"})
    );
    wait_node(&lab, "worker-04", Some("True")).await;
    let (code, body, _) = try_machine_op(&lab, b, "power_on", &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (409, "Can't start node: it hasn't been allocated.")
    );
    // Losing power at once (a fault): the same as power_off.
    lab.inject(Fault::MaasPowerLoss {
        machine: "worker-05".into(),
    })
    .expect("fault");
    wait_node(&lab, "worker-05", Some("Unknown")).await;
    assert_eq!(
        get(&lab, &format!("machines/{}/", ids["worker-05"])).await["power_state"],
        "off"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_data_is_set_deleted_and_cleared_on_release() {
    let (lab, ids) = lab_and_ids(600.0).await;
    let (code, body, _) =
        try_machine_op(&lab, &ids["spare-01"], "set_owner_data", &[("a", "b")]).await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Cannot set workload annotation: it hasn't been acquired."
        )
    );
    let m = post(&lab, "machines/?op=allocate", &[("pool", "spare")]).await;
    let id = m["system_id"].as_str().expect("id").to_string();
    assert_eq!(m["owner_data"], json!({}));
    let m = machine_op(
        &lab,
        &id,
        "set_owner_data",
        &[("drover/workflow", "wf-1"), ("drover/attempt", "1")],
    )
    .await;
    assert_eq!(
        m["owner_data"],
        json!({"drover/workflow": "wf-1", "drover/attempt": "1"})
    );
    let m = post(
        &lab,
        &format!("machines/{id}/op-set_workload_annotations"),
        &[("drover/attempt", ""), ("drover/workflow", "wf-2")],
    )
    .await;
    assert_eq!(m["owner_data"], json!({"drover/workflow": "wf-2"}));
    let m = get(&lab, &format!("machines/{id}/")).await;
    assert_eq!(
        m["workload_annotations"],
        json!({"drover/workflow": "wf-2"})
    );
    machine_op(&lab, &id, "release", &[]).await;
    let m = wait_status(&lab, &id, "Ready").await;
    assert_eq!(
        (m["owner_data"].clone(), m["owner"].clone()),
        (json!({}), Value::Null)
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_bond_bridge_vlan_link() {
    let lab = support::lab(60.0).await;
    let m = post(
        &lab,
        "machines/?op=allocate",
        &[("tags", "vmo-worker"), ("pool", "spare")],
    )
    .await;
    let id = m["system_id"].as_str().expect("id").to_string();
    let nics: Vec<String> = m["interface_set"]
        .as_array()
        .expect("nics")
        .iter()
        .map(|i| i["id"].to_string())
        .collect();
    let ifaces = format!("nodes/{id}/interfaces/");
    let listed = get(&lab, &ifaces).await;
    assert_eq!(
        listed.as_array().map(|a| a
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()),
        Some(vec!["eno1".to_string(), "eno2".to_string()])
    );
    let bad = |op: &'static str, form: Vec<(&'static str, String)>, want: Value| {
        let (lab, path) = (&lab, format!("{ifaces}?op={op}"));
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (code, body, _) = call(lab, Method::POST, &path, &pairs).await;
            assert_eq!(code, 400, "{op} {form:?}: {body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).expect("json"),
                want,
                "{op} {form:?}"
            );
        }
    };
    bad(
        "create_bond",
        vec![("name", "bond0".into()), ("parents", "99999".into())],
        json!({"parents": ["Select a valid choice. 99999 is not one of the available choices."]}),
    )
    .await;
    bad(
        "create_bond",
        vec![("name", "bond0".into())],
        json!({"parents": ["A bond interface must have one or more parents."]}),
    )
    .await;
    let bond = post(
        &lab,
        &format!("{ifaces}?op=create_bond"),
        &[
            ("name", "bond0"),
            ("parents", &nics[0]),
            ("parents", &nics[1]),
            ("bond_mode", "802.3ad"),
            ("bond_lacp_rate", "fast"),
            ("bond_xmit_hash_policy", "layer3+4"),
            ("mtu", "9000"),
        ],
    )
    .await;
    assert_eq!(
        (
            bond["type"].as_str(),
            bond["params"]["bond_mode"].as_str(),
            bond["params"]["bond_miimon"].as_u64()
        ),
        (Some("bond"), Some("802.3ad"), Some(100))
    );
    assert_eq!(bond["parents"], json!(["eno1", "eno2"]));
    assert_eq!(bond["mac_address"], m["interface_set"][0]["mac_address"]);
    assert_eq!(
        get(&lab, &format!("{ifaces}{}/", nics[0])).await["children"],
        json!(["bond0"])
    );
    bad(
        "create_bond",
        vec![("name", "bond1".into()), ("parents", nics[0].clone())],
        json!({"parents": ["Interfaces already in-use: eno1."]}),
    )
    .await;
    let bond_id = bond["id"].to_string();
    let vlan10 = post(
        &lab,
        &format!("{ifaces}?op=create_vlan"),
        &[("vlan", "5002"), ("parent", &bond_id)],
    )
    .await;
    let vlan20 = post(
        &lab,
        &format!("{ifaces}?op=create_vlan"),
        &[("vlan", "5003"), ("parent", &bond_id)],
    )
    .await;
    assert_eq!(
        (vlan10["name"].as_str(), vlan20["name"].as_str()),
        (Some("bond0.10"), Some("bond0.20"))
    );
    assert_eq!(vlan20["vlan"]["vid"], 20);
    bad(
        "create_vlan",
        vec![("vlan", "5001".into()), ("parent", bond_id.clone())],
        json!({"vlan": ["A VLAN interface can only belong to a tagged VLAN."]}),
    )
    .await;
    bad(
        "create_vlan",
        vec![("vlan", "5003".into()), ("parent", nics[1].clone())],
        json!({"parent": ["A VLAN interface can't have a parent that is already in a bond."]}),
    )
    .await;
    let (code, body, _) = try_post(
        &lab,
        &format!("{ifaces}?op=create_bridge"),
        &[("name", "br0"), ("parents", &bond_id), ("parent", &bond_id)],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (400, "Cannot specify both parent and parents fields.")
    );
    let br = post(
        &lab,
        &format!("{ifaces}?op=create_bridge"),
        &[
            ("name", "br0"),
            ("parent", &bond_id),
            ("bridge_stp", "true"),
        ],
    )
    .await;
    assert_eq!(
        (
            br["type"].as_str(),
            br["params"]["bridge_stp"].as_bool(),
            br["params"]["bridge_fd"].as_u64()
        ),
        (Some("bridge"), Some(true), Some(15))
    );
    bad(
        "create_bridge",
        vec![("name", "br1".into()), ("parent", bond_id.clone())],
        json!({"parent": ["A bridge interface can't have a parent that is already in a bond or a bridge."]}),
    )
    .await;
    let vlan_id = vlan20["id"].to_string();
    let link = format!("{ifaces}{vlan_id}/?op=link_subnet");
    let linked = post(
        &lab,
        &link,
        &[
            ("mode", "STATIC"),
            ("subnet", "3"),
            ("ip_address", "10.20.30.99"),
            ("default_gateway", "true"),
        ],
    )
    .await;
    assert_eq!(
        linked["links"].as_array().map(Vec::len),
        Some(1),
        "the link_up link is replaced"
    );
    assert_eq!(
        (
            linked["links"][0]["mode"].as_str(),
            linked["links"][0]["ip_address"].as_str()
        ),
        (Some("static"), Some("10.20.30.99"))
    );
    assert_eq!(linked["links"][0]["subnet"]["cidr"], "10.20.0.0/16");
    for (form, want) in [
        (
            vec![("mode", "bogus"), ("subnet", "3")],
            json!({"mode": ["Select a valid choice. bogus is not one of the available choices."]}),
        ),
        (
            vec![("mode", "AUTO")],
            json!({"subnet": ["This field is required."]}),
        ),
        (
            vec![
                ("mode", "STATIC"),
                ("subnet", "3"),
                ("ip_address", "192.168.9.9"),
            ],
            json!({"ip_address": ["IP address is not in the given subnet '10.20.0.0/16'."]}),
        ),
        (
            vec![
                ("mode", "STATIC"),
                ("subnet", "3"),
                ("ip_address", "10.20.30.99"),
            ],
            json!({"ip_address": ["IP address is already in use."]}),
        ),
    ] {
        let (code, body, _) = try_post(&lab, &link, &form).await;
        assert_eq!(code, 400, "{form:?}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), want);
    }
    let link_id = linked["links"][0]["id"].to_string();
    let unlinked = post(
        &lab,
        &format!("{ifaces}{vlan_id}/?op=unlink_subnet"),
        &[("id", &link_id)],
    )
    .await;
    assert_eq!(unlinked["links"][0]["mode"], "link_up");
    let (code, body, _) = try_post(
        &lab,
        &format!("{ifaces}{vlan_id}/?op=unlink_subnet"),
        &[("id", "424242")],
    )
    .await;
    assert_eq!(
        (code, serde_json::from_str::<Value>(&body).expect("json")),
        (
            400,
            json!({"id": ["Select a valid choice. 424242 is not one of the available choices."]})
        )
    );
    let (code, body, _) = call(
        &lab,
        Method::DELETE,
        &format!("{ifaces}{}/", vlan10["id"]),
        &[],
    )
    .await;
    assert_eq!((code, body.as_str()), (204, ""));
    let (code, body, _) = call(
        &lab,
        Method::GET,
        &format!("{ifaces}{}/", vlan10["id"]),
        &[],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (404, "No Interface matches the given query.")
    );
    // Deploying machines' interfaces cannot be changed, with MAAS's wording per operation.
    machine_op(&lab, &id, "deploy", &[]).await;
    for (path, form, words) in [
        (
            format!("{ifaces}?op=create_bond"),
            vec![("name", "bond1"), ("parents", nics[0].as_str())],
            "create bond",
        ),
        (
            format!("{ifaces}?op=create_vlan"),
            vec![("vlan", "5002"), ("parent", bond_id.as_str())],
            "create VLAN",
        ),
        (
            format!("{ifaces}?op=create_bridge"),
            vec![("name", "br9"), ("parent", bond_id.as_str())],
            "create bridge",
        ),
        (link.clone(), vec![("mode", "DHCP")], "link subnet"),
        (
            format!("{ifaces}{vlan_id}/?op=unlink_subnet"),
            vec![("id", "1")],
            "unlink subnet",
        ),
    ] {
        let (code, body, _) = try_post(&lab, &path, &form).await;
        assert_eq!(
            (code, body),
            (
                409,
                format!(
                    "Cannot {words} interface because the machine is not New, Ready, Allocated, or Broken."
                )
            )
        );
    }
    let (code, body, _) = call(&lab, Method::DELETE, &format!("{ifaces}{bond_id}/"), &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Cannot delete interface interface because the machine is not New, Ready, Allocated, or Broken."
        )
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_query_shape_filters_and_paging() {
    let (lab, ids) = lab_and_ids(600.0).await;
    let id = ids["spare-01"].clone();
    machine_op(&lab, &id, "deploy", &[]).await;
    wait_status(&lab, &id, "Deployed").await;
    machine_op(&lab, &ids["spare-02"], "deploy", &[]).await;
    let page = get(&lab, &format!("events/?op=query&id={id}")).await;
    let keys: Vec<&str> = page
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in ["count", "events", "next_uri", "prev_uri"] {
        assert!(page.get(k).is_some(), "{k}");
    }
    let events = page["events"].as_array().expect("events");
    assert_eq!(page["count"].as_u64(), Some(events.len() as u64));
    let newest = &events[0];
    assert_eq!(
        (
            newest["type"].as_str(),
            newest["level"].as_str(),
            newest["node"].as_str(),
            newest["hostname"].as_str()
        ),
        (
            Some("Deployed"),
            Some("INFO"),
            Some(id.as_str()),
            Some("spare-01")
        )
    );
    for e in events {
        let mut keys: Vec<&str> = e
            .as_object()
            .expect("event")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "created",
                "description",
                "hostname",
                "id",
                "level",
                "node",
                "type",
                "username"
            ]
        );
        assert_ne!(e["level"], "DEBUG", "INFO by default");
        // `Wed, 17 Nov. 2021 00:04:51`
        let created = e["created"].as_str().expect("created");
        let parts: Vec<&str> = created.split(' ').collect();
        assert!(
            parts.len() == 5
                && parts[0].ends_with(',')
                && parts[2].ends_with('.')
                && parts[4].len() == 8,
            "{created}"
        );
    }
    let ids_of = |v: &Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_u64().expect("id"))
            .collect()
    };
    let all = ids_of(&page);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");
    let debug = get(&lab, &format!("events/?op=query&id={id}&level=DEBUG")).await;
    assert!(
        debug["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["type"] == "User starting deployment")
    );
    assert!(
        get(&lab, "events/?op=query&hostname=spare-02").await["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["hostname"] == "spare-02")
    );
    assert_eq!(
        get(&lab, "events/?op=query&level=AUDIT").await["events"][0]["type"],
        "Node"
    );
    // Paging: two at a time, then prev_uri for the older ones.
    let first = get(&lab, &format!("events/?op=query&id={id}&limit=2")).await;
    assert_eq!(ids_of(&first), all[..2]);
    let prev = first["prev_uri"].as_str().expect("prev_uri");
    assert!(
        prev.starts_with("/MAAS/api/2.0/events/?") && prev.contains(&format!("before={}", all[1])),
        "{prev}"
    );
    let older = get(
        &lab,
        &format!(
            "events/{}",
            prev.trim_start_matches("/MAAS/api/2.0/events/")
        ),
    )
    .await;
    assert_eq!(ids_of(&older), all[2..4]);
    for (query, want) in [
        ("level=LOUD", "Unrecognised log level: LOUD"),
        (
            "limit=1001",
            "Requested number of events 1001 is greater than limit: 1000",
        ),
        (
            "before=5&after=3",
            "There is undetermined behaviour when both `after` and `before` are specified.",
        ),
    ] {
        let (code, body, _) =
            call(&lab, Method::GET, &format!("events/?op=query&{query}"), &[]).await;
        assert_eq!((code, body.as_str()), (400, want));
    }
    let (code, body, _) = call(&lab, Method::GET, "events/?op=query&limit=ten", &[]).await;
    assert_eq!(
        (code, serde_json::from_str::<Value>(&body).expect("json")),
        (400, json!({"limit": ["Please enter an integer value"]}))
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_bursts_proxy_timeouts_and_conflicts() {
    let lab = support::lab(60.0).await;
    // A burst of 503s with MAAS's Retry-After of 10 s across any MAAS op: 10 simulated seconds, so
    // at this lab's 60x, the header's least of one real second.
    lab.set_fault_rates(drover_lab::scenario::FaultRates {
        maas_503: 1.0,
        maas_503_burst: 3,
        ..Default::default()
    });
    let (code, body, headers) = call(&lab, Method::GET, "machines/", &[]).await;
    lab.set_fault_rates(Default::default());
    assert_eq!(
        (code, body.as_str()),
        (
            503,
            "Unable to connect to any rack controller; no connections available."
        )
    );
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    for path in ["events/?op=query", "machines/?op=allocate"] {
        let method = if path.contains("allocate") {
            Method::POST
        } else {
            Method::GET
        };
        let (code, _, headers) = call(&lab, method, path, &[]).await;
        assert_eq!(code, 503, "{path} is still in the burst");
        assert_eq!(
            headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    assert_eq!(
        call(&lab, Method::GET, "machines/", &[]).await.0,
        200,
        "the burst is over"
    );

    // 409 with Retry-After: 5 (serialization retries exhausted).
    lab.inject(Fault::Http {
        api: Api::Maas,
        method: Some("POST".into()),
        path_contains: Some("op=allocate".into()),
        status: 409,
        retry_after: Some(5),
        message: None,
        count: 1,
    })
    .expect("fault");
    let (code, body, headers) =
        try_post(&lab, "machines/?op=allocate", &[("agent_name", "wf-409")]).await;
    assert_eq!(
        (code, body.as_str()),
        (409, "Conflict error. Please try again.")
    );
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(
        get(&lab, "machines/?agent_name=wf-409").await,
        json!([]),
        "nothing was allocated"
    );

    // 504 from the proxy, before MAAS saw the request: nothing happened.
    let c = support::http();
    let (code, _) = support::send(
        c.post(format!("{}/lab/faults", lab.kube_url()))
            .json(&json!({"kind": "maas_proxy_timeout", "path_contains": "op=allocate"})),
    )
    .await;
    assert_eq!(code, 201);
    let (code, body, headers) =
        try_post(&lab, "machines/?op=allocate", &[("agent_name", "wf-504")]).await;
    assert_eq!(code, 504);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/html")
    );
    assert!(body.contains("504 Gateway Time-out"), "{body}");
    assert_eq!(get(&lab, "machines/?agent_name=wf-504").await, json!([]));
    // ... and after MAAS applied it: the machine is allocated although the client saw a 504.
    lab.inject(Fault::MaasProxyTimeout {
        method: Some("POST".into()),
        path_contains: Some("op=allocate".into()),
        applied: true,
        count: 1,
    })
    .expect("fault");
    let (code, _, _) = try_post(&lab, "machines/?op=allocate", &[("agent_name", "wf-504")]).await;
    assert_eq!(code, 504);
    let held = get(&lab, "machines/?agent_name=wf-504").await;
    assert_eq!(
        held.as_array().map(Vec::len),
        Some(1),
        "the allocation took effect"
    );
    assert_eq!(held[0]["status_name"], "Allocated");
    let audit: Vec<_> = lab
        .audit()
        .into_iter()
        .filter(|e| e.api == "maas" && e.verb == "allocate")
        .collect();
    assert_eq!(
        audit.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        [503, 409, 504, 504],
        "the audit records what the client saw"
    );
    lab.shutdown().await;
}
