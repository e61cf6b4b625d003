//! The apiserver contract over raw HTTP: Status errors as kube-apiserver writes them, optimistic
//! concurrency, selectors, patches, watches resumed from a resourceVersion (and 410 when too old),
//! KubeVirt's eviction and migrate semantics, faults, and a short fuzz of request parsing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use drover_lab::{Fault, Lab, LabConfig};

use crate::lab::support::{self, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_and_concurrency() {
    let lab = support::lab(60.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let (code, body) = send(c.get(format!("{base}/api/v1/namespaces/vmo-prod/pods/nope"))).await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "pods \"nope\" not found");
    let (code, body) = send(c.get(format!(
        "{base}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachineinstances/nope"
    )))
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            404,
            Some("virtualmachineinstances.kubevirt.io \"nope\" not found")
        )
    );
    assert_eq!(body["details"]["group"], "kubevirt.io");

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "1"}});
    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    let (code, created) = send(c.post(&url).json(&cm)).await;
    assert_eq!(code, 201);
    let (code, body) = send(c.post(&url).json(&cm)).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(body["message"], "configmaps \"c1\" already exists");
    let mut stale = created.clone();
    stale["data"]["a"] = json!("2");
    let (code, _) = send(c.put(format!("{url}/c1")).json(&stale)).await;
    assert_eq!(code, 200);
    let (code, body) = send(c.put(format!("{url}/c1")).json(&stale)).await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("the object has been modified")
    );
    let (code, body) = send(
        c.post(format!("{base}/api/v1/namespaces/nowhere/configmaps"))
            .json(&cm),
    )
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("namespaces \"nowhere\" not found"))
    );
    let (code, body) = send(c.post(&url).body("{not json")).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) = send(
        c.post(&url)
            .json(&json!({"metadata": {"name": "Bad_Name"}})),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));

    let (code, body) = send(c.get(format!("{base}/api/v1/pods?labelSelector=a%20in%20b"))).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) =
        send(c.get(format!("{base}/api/v1/pods?fieldSelector=spec.bogus%3Dx"))).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("field label not supported: spec.bogus"))
    );
    let (code, list) = send(c.get(format!("{base}/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-01&labelSelector=kubevirt.io%3Dvirt-launcher"))).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(20));

    let node = format!("{base}/api/v1/nodes/worker-01");
    let (code, body) = send(
        c.patch(&node)
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"remove","path":"/spec/nothing"}]"#),
    )
    .await;
    assert_eq!((code, body["kind"].as_str()), (422, Some("Status")));
    let (code, _) = send(
        c.patch(&node)
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_eq!(code, 415);
    let (code, body) = send(
        c.patch(&node)
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#),
    )
    .await;
    assert_eq!(
        (code, body["metadata"]["labels"]["x"].as_str()),
        (200, Some("y"))
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_then_merges() {
    let lab = support::lab(60.0).await;
    let c = support::http();
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps/applied?fieldManager=drover&force=true",
        lab.kube_url()
    );
    let apply = |data: Value| {
        c.patch(&url).header("content-type", "application/apply-patch+yaml").json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": data}))
    };
    let (code, _) = send(apply(json!({"a": "1"}))).await;
    assert_eq!(code, 201);
    let (code, body) = send(apply(json!({"b": "2"}))).await;
    assert_eq!(code, 200);
    assert_eq!(body["data"], json!({"a": "1", "b": "2"}));
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_and_expires() {
    support::crypto();
    let lab = Lab::start(LabConfig {
        watch_history: 64,
        ..LabConfig::default()
    })
    .await
    .expect("lab");
    let c = support::http();
    let base = lab.kube_url();
    let (_, list) = send(c.get(format!("{base}/api/v1/namespaces/default/configmaps"))).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let (code, _) = send(
        c.post(format!("{base}/api/v1/namespaces/default/configmaps"))
            .json(&json!({"metadata": {"name": "w1"}})),
    )
    .await;
    assert_eq!(code, 201);
    let resp = c.get(format!("{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1")).send().await.expect("watch");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("events");
    let first: Value = serde_json::from_str(text.lines().next().expect("one event")).expect("json");
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "w1");
    // A streaming list (sendInitialEvents) ends its initial events with a marked bookmark.
    let text = c
        .get(format!("{base}/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"))
        .send()
        .await
        .expect("streaming list")
        .text()
        .await
        .expect("events");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some(json!("ADDED"))
    );
    let bookmark = events
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    for i in 0..80 {
        let (code, _) = send(
            c.post(format!("{base}/api/v1/namespaces/default/configmaps"))
                .json(&json!({"metadata": {"name": format!("x{i}")}})),
        )
        .await;
        assert_eq!(code, 201);
    }
    let text = c
        .get(format!(
            "{base}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
        ))
        .send()
        .await
        .expect("watch")
        .text()
        .await
        .expect("body");
    let ev: Value = serde_json::from_str(text.lines().next().expect("error event")).expect("json");
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_follow_kubevirt() {
    let lab = support::lab(120.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let pod_of = |vmi: &str| {
        lab.list("pods", Some("vmo-prod"))
            .into_iter()
            .find(|p| p["metadata"]["ownerReferences"][0]["name"] == vmi)
            .and_then(|p| p["metadata"]["name"].as_str().map(String::from))
            .expect("launcher pod")
    };
    let evict = |pod: String| {
        c.post(format!("{base}/api/v1/namespaces/vmo-prod/pods/{pod}/eviction"))
            .json(&json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": "vmo-prod"}}))
    };
    // vm-05-19 sits on an RWO volume: not live-migratable, so drain can never evict it.
    let (code, body) = send(evict(pod_of("vm-05-19"))).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (429, Some("TooManyRequests"))
    );
    assert_eq!(
        body["message"],
        "admission webhook \"virt-launcher-eviction-interceptor.kubevirt.io\" denied the request: VMI vm-05-19 is configured with an eviction strategy but is not live-migratable"
    );
    let pod = pod_of("vm-01-00");
    let (code, body) = send(evict(pod.clone())).await;
    assert_eq!(code, 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("Eviction triggered evacuation of VMI \"vmo-prod/vm-01-00\""),
        "{body}"
    );
    let (code, body) = send(evict(pod.clone())).await;
    assert_eq!(code, 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("Evacuation in progress"),
        "{body}"
    );
    support::wait_for(
        "the evacuation to move vm-01-00",
        Duration::from_secs(30),
        || async {
            let v = lab.get(
                "virtualmachineinstances.kubevirt.io",
                "vmo-prod",
                "vm-01-00",
            )?;
            (v["status"]["nodeName"] != "worker-01"
                && v["status"]["migrationState"]["completed"] == true)
                .then_some(())
        },
    )
    .await;
    let (code, _) = send(evict(pod)).await;
    assert_eq!(code, 404, "the source pod is gone once migrated");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_subresource_honours_added_node_selector_and_faults() {
    let lab = support::lab(120.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let vm_url = |vm: &str, action: &str| {
        format!(
            "{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/{vm}/{action}"
        )
    };
    let (code, _) = send(
        c.put(vm_url("vm-01-01", "migrate"))
            .json(&json!({"addedNodeSelector": {"topology.kubernetes.io/zone": "az2"}})),
    )
    .await;
    assert_eq!(code, 202);
    let vmi = support::wait_for("vm-01-01 to migrate", Duration::from_secs(30), || async {
        let v = lab.get(
            "virtualmachineinstances.kubevirt.io",
            "vmo-prod",
            "vm-01-01",
        )?;
        (v["status"]["migrationState"]["completed"] == true).then_some(v)
    })
    .await;
    let target = vmi["status"]["nodeName"]
        .as_str()
        .expect("node")
        .to_string();
    let node = lab.get("nodes", "", &target).expect("target node");
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"], "az2",
        "target {target}"
    );
    let m = lab
        .list(
            "virtualmachineinstancemigrations.kubevirt.io",
            Some("vmo-prod"),
        )
        .into_iter()
        .next()
        .expect("vmim");
    assert!(
        m["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("kubevirt-migrate-vm-")
    );
    let phases: Vec<&str> = m["status"]["phaseTransitionTimestamps"]
        .as_array()
        .expect("timestamps")
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    assert_eq!(
        phases,
        [
            "Pending",
            "Scheduling",
            "Scheduled",
            "PreparingTarget",
            "TargetReady",
            "Running",
            "Succeeded"
        ]
    );

    lab.inject(Fault::MigrationFailure {
        vmi: Some("vmo-prod/vm-01-02".into()),
        phase: Some("PreparingTarget".into()),
        count: 1,
    })
    .expect("fault");
    let (code, _) = send(c.put(vm_url("vm-01-02", "migrate")).body("{}")).await;
    assert_eq!(code, 202);
    support::wait_for(
        "vm-01-02's migration to fail",
        Duration::from_secs(30),
        || async {
            let v = lab.get(
                "virtualmachineinstances.kubevirt.io",
                "vmo-prod",
                "vm-01-02",
            )?;
            (v["status"]["migrationState"]["failed"] == true).then_some(())
        },
    )
    .await;
    assert_eq!(
        lab.get(
            "virtualmachineinstances.kubevirt.io",
            "vmo-prod",
            "vm-01-02"
        )
        .expect("vmi")["status"]["nodeName"],
        "worker-01"
    );

    let (code, body) = send(c.put(vm_url("vm-05-19", "migrate")).body("{}")).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("DisksNotLiveMigratable")
    );
    let (code, body) = send(c.put(vm_url("nope", "start")).body("{}")).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = send(c.put(vm_url("vm-01-03", "start")).body("{}")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("VM is already running"))
    );

    lab.inject(Fault::Http {
        api: drover_lab::Api::Kube,
        method: Some("GET".into()),
        path_contains: Some("/api/v1/nodes".into()),
        status: 503,
        retry_after: Some(3),
        message: None,
        count: 1,
    })
    .expect("fault");
    let resp = c
        .get(format!("{base}/api/v1/nodes"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("3")
    );
    assert_eq!(
        c.get(format!("{base}/api/v1/nodes"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_never_break_the_server() {
    let lab = support::lab(60.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let paths = [
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/configmaps/x",
        "/api/v1/nodes/worker-01",
        "/api/v1/namespaces/vmo-prod/pods/p/eviction",
        "/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-01-00",
        "/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-01-00/migrate",
        "/api/v1/pods?labelSelector=%28%28%28&fieldSelector=%3D%3D",
        "/apis/kubevirt.io/v1/virtualmachineinstances?watch=true&resourceVersion=abc",
        "/MAAS/api/2.0/machines/?op=allocate",
        "/apis/x/y/z/w/v/u/t",
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancemigrations",
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/fz/addvolume",
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/fz/start",
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/fz",
        "/apis/cdi.kubevirt.io/v1beta1/namespaces/default/datavolumes",
        "/v1beta1/upload",
        "/lab/faults",
    ];
    let methods = [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
        reqwest::Method::GET,
    ];
    let types = [
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let bodies: [&[u8]; 11] = [
        b"",
        b"\x00\xff{{{",
        br#"{"metadata":{"name":[1,2]},"spec":null}"#,
        br#"[{"op":"move","from":"/a/b","path":"/a/b/c"},{"op":"add"}]"#,
        br#"{"apiVersion":"v1","kind":"Eviction","metadata":{"name":7}}"#,
        br#"{"metadata":"x"}"#,
        br#"{"metadata":{"name":"fz","labels":"x"}}"#,
        br#"{"metadata":{"name":"fz"},"spec":{"template":"x","runStrategy":"Always"}}"#,
        br#"{"metadata":{"name":"fz2"},"spec":{"runStrategy":"Always","template":{"spec":{"domain":"x","volumes":7,"networks":{"a":1}}}}}"#,
        br#"{"metadata":{"generateName":"m-"},"spec":{"vmiName":["x"]}}"#,
        br#"{"name":"v","disk":{"disk":{}},"volumeSource":{"persistentVolumeClaim":{"claimName":"c"}}}"#,
    ];
    // Every path x method x content type x body, plus random bytes: nothing may answer 5xx.
    let mut cases = Vec::new();
    for path in paths {
        for method in &methods {
            for (i, ctype) in types.iter().enumerate() {
                for body in bodies {
                    cases.push((path, method.clone(), *ctype, body.to_vec()));
                }
                let noise: Vec<u8> = (0..rand::random_range(0..64))
                    .map(|_| rand::random::<u8>())
                    .collect();
                cases.push((path, method.clone(), types[(i + 1) % types.len()], noise));
            }
        }
    }
    for (path, method, ctype, body) in cases {
        let resp = c
            .request(method.clone(), format!("{base}{path}"))
            .header("content-type", ctype)
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(resp) = resp {
            assert!(
                resp.status().as_u16() < 500,
                "{method} {path} ({ctype}) -> {}",
                resp.status()
            );
        }
    }
    assert_eq!(
        c.get(format!("{base}/api/v1/nodes"))
            .send()
            .await
            .expect("alive")
            .status(),
        200
    );
    // Targeted malformed objects: a VM whose template is a string, a patch that breaks metadata.
    let vms = format!("{base}/apis/kubevirt.io/v1/namespaces/default/virtualmachines");
    let bad_vm =
        json!({"metadata": {"name": "broken"}, "spec": {"template": "x", "runStrategy": "Always"}});
    assert_eq!(
        c.post(&vms)
            .json(&bad_vm)
            .send()
            .await
            .expect("create")
            .status(),
        201
    );
    for action in ["addvolume", "removevolume"] {
        let url = format!(
            "{base}/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/broken/{action}"
        );
        let body = json!({"name": "v", "disk": {"disk": {}}, "volumeSource": {"persistentVolumeClaim": {"claimName": "c"}}});
        assert_eq!(
            c.put(url).json(&body).send().await.expect(action).status(),
            409,
            "{action}"
        );
    }
    let resp = c
        .patch(format!("{base}/api/v1/nodes/worker-02"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":"x"}"#)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 422);
    // The simulator survived whatever was created: a migration still completes.
    let url = format!(
        "{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-02-05/migrate"
    );
    assert_eq!(
        c.put(url)
            .body("{}")
            .send()
            .await
            .expect("migrate")
            .status(),
        202
    );
    support::wait_for(
        "a migration after the fuzz",
        Duration::from_secs(30),
        || async {
            let v = lab.get(
                "virtualmachineinstances.kubevirt.io",
                "vmo-prod",
                "vm-02-05",
            )?;
            (v["status"]["migrationState"]["completed"] == true).then_some(())
        },
    )
    .await;
    lab.shutdown().await;
}

/// The MAAS region, signed in, against hostile parameters on every endpoint the adapter uses:
/// form, multipart (empty, garbage, bad base64), JSON and no content type; nothing may answer
/// 5xx, and a machine still deploys afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maas_malformed_input_never_breaks_the_region() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let auth = drover_lab::maas::auth::plaintext_header(&lab.maas_api_key());
    let api = format!("{}api/2.0/", lab.maas_url());
    let machines: Value = c
        .get(format!("{api}machines/"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("machines")
        .json()
        .await
        .expect("json");
    let by_host = |h: &str| -> (String, String) {
        let m = machines
            .as_array()
            .expect("machines")
            .iter()
            .find(|m| m["hostname"] == h)
            .expect("machine");
        (
            m["system_id"].as_str().expect("id").to_string(),
            m["interface_set"][0]["id"].to_string(),
        )
    };
    let (worker, worker_nic) = by_host("worker-01");
    let (spare, spare_nic) = by_host("spare-01");
    // Kept out of the fuzz (a locked machine is never allocated) to deploy afterwards.
    let (kept, _) = by_host("spare-04");
    let lock = |op: &'static str| {
        let req = c
            .post(format!("{api}machines/{kept}/?op={op}"))
            .header("authorization", &auth);
        async move { req.send().await.expect(op).status().as_u16() }
    };
    assert_eq!(lock("lock").await, 200);
    let mut paths = vec![
        "machines/?op=allocate".to_string(),
        "machines/?op=release".to_string(),
        "machines/?status=x&zone=&pool=%00&tags=,,,&cpu_count=nan&mem=-1".to_string(),
        "events/?op=query".to_string(),
        "events/?op=query&limit=-5&before=-1&level=".to_string(),
        "events/?op=query&after=99999999999999999999&id=zzz".to_string(),
    ];
    for id in [&worker, &spare, &"zzzzzz".to_string()] {
        for op in [
            "deploy",
            "release",
            "abort",
            "mark_broken",
            "mark_fixed",
            "power_on",
            "power_off",
            "query_power_state",
            "set_owner_data",
            "lock",
        ] {
            paths.push(format!("machines/{id}/?op={op}"));
        }
        paths.push(format!("machines/{id}/"));
        for op in [
            "create_bond",
            "create_vlan",
            "create_bridge",
            "create_physical",
        ] {
            paths.push(format!("nodes/{id}/interfaces/?op={op}"));
        }
    }
    for (id, nic) in [(&worker, &worker_nic), (&spare, &spare_nic)] {
        for op in ["link_subnet", "unlink_subnet", "disconnect", "add_tag"] {
            paths.push(format!("nodes/{id}/interfaces/{nic}/?op={op}"));
        }
        paths.push(format!("nodes/{id}/interfaces/{nic}/"));
        paths.push(format!("nodes/{id}/interfaces/99999999999999999999/"));
    }
    let forms: [&[u8]; 9] = [
        b"",
        b"user_data=%%%&distro_series=%00&hwe_kernel=&osystem=/",
        b"parents=abc&parents=-1&parents=99999999999999999999&name=&vlan=x&mtu=1&bond_miimon=-3",
        b"parent=1&parents=2&vlan=5003&bridge_fd=x&bond_num_grat_arp=999",
        b"mode=zzz&subnet=99999999999999999999&ip_address=300.1.1.1&id=",
        b"mode=STATIC&subnet=1/99&ip_address=::1&force=maybe",
        b"cpu_count=inf&mem=1e999&tags=&not_tags=a,,b&arch=sparc&system_id=&name=%ff",
        b"erase=maybe&secure_erase=1&quick_erase=yes&comment=%00&machines=zzzzzz",
        b"stop_mode=now&key=&=value&%00=%00&tag=",
    ];
    let boundary = "===============0000000000==";
    let multipart_bodies: [String; 4] = [
        format!("--{boundary}\r\n\r\n--{boundary}--"),
        format!("--{boundary}\r\ngarbage"),
        format!(
            "--{boundary}\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=\"user_data\"\r\n\r\n@@@\r\n--{boundary}--"
        ),
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"parents\"\r\n\r\n{spare_nic}\r\n--{boundary}--"
        ),
    ];
    let methods = [Method::POST, Method::GET, Method::PUT, Method::DELETE];
    let mut cases: Vec<(String, Method, String, Vec<u8>)> = Vec::new();
    for path in &paths {
        for method in &methods {
            for body in forms {
                cases.push((
                    path.clone(),
                    method.clone(),
                    "application/x-www-form-urlencoded".into(),
                    body.to_vec(),
                ));
            }
            for body in &multipart_bodies {
                cases.push((
                    path.clone(),
                    method.clone(),
                    format!("multipart/form-data; boundary=\"{boundary}\""),
                    body.as_bytes().to_vec(),
                ));
            }
            cases.push((
                path.clone(),
                method.clone(),
                "multipart/form-data".into(),
                b"x".to_vec(),
            ));
            cases.push((
                path.clone(),
                method.clone(),
                "application/json".into(),
                br#"{"tags":[1,{"a":null}],"parents":7}"#.to_vec(),
            ));
            cases.push((
                path.clone(),
                method.clone(),
                "".into(),
                (0..48).map(|_| rand::random::<u8>()).collect(),
            ));
        }
    }
    for (path, method, ctype, body) in cases {
        let mut req = c
            .request(method.clone(), format!("{api}{path}"))
            .header("authorization", &auth)
            .body(body)
            .timeout(Duration::from_secs(5));
        if !ctype.is_empty() {
            req = req.header("content-type", ctype.clone());
        }
        if let Ok(resp) = req.send().await {
            assert!(
                resp.status().as_u16() < 500,
                "{method} {path} ({ctype}) -> {}",
                resp.status()
            );
        }
    }
    // Still a MAAS: the machine kept aside deploys.
    assert_eq!(lock("unlock").await, 200);
    let id = kept.clone();
    let resp = c
        .post(format!("{api}machines/{id}/?op=deploy"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("deploy");
    assert_eq!(resp.status(), 200);
    support::wait_for("the deploy after the fuzz", Duration::from_secs(30), || {
        let (c, auth, url) = (c.clone(), auth.clone(), format!("{api}machines/{id}/"));
        async move {
            let m: Value = c
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (m["status_name"] == "Deployed").then_some(())
        }
    })
    .await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_selector_sees_objects_leave() {
    let lab = support::lab(120.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let (_, list) = send(c.get(format!("{base}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachineinstances?labelSelector=kubevirt.io%2FnodeName%3Dworker-01"))).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(20));
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let mut resp = c
        .get(format!("{base}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachineinstances?watch=true&resourceVersion={rv}&labelSelector=kubevirt.io%2FnodeName%3Dworker-01&timeoutSeconds=20"))
        .send()
        .await
        .expect("watch");
    let url = format!(
        "{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-01-09/migrate"
    );
    assert_eq!(
        c.put(url)
            .body("{}")
            .send()
            .await
            .expect("migrate")
            .status(),
        202
    );
    let mut buf = String::new();
    let deleted = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = resp.chunk().await.expect("chunk") {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for line in buf.lines() {
                let Ok(ev) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if ev["type"] == "DELETED" && ev["object"]["metadata"]["name"] == "vm-01-09" {
                    return Some(ev);
                }
            }
        }
        None
    })
    .await
    .expect("the watch reports the VMI leaving worker-01")
    .expect("a DELETED event");
    assert_ne!(deleted["object"]["status"]["nodeName"], "worker-01");
    lab.shutdown().await;
}
