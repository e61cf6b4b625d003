//! The MAAS contract over raw HTTP: OAuth PLAINTEXT and HMAC-SHA1, `?op=` and `/op-<name>` forms,
//! MAAS's 400/409 texts, node_timeout turning a hung deploy into Failed deployment, and 503 faults
//! with Retry-After.

use std::time::Duration;

use drover_lab::maas::auth::{hmac_header as hmac, plaintext_header as plaintext};
use serde_json::Value;

use drover_lab::{Api, Fault, LabHandle};

use crate::lab::support;

async fn call(
    lab: &LabHandle,
    method: reqwest::Method,
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
    let machine = describe["handlers"]
        .as_array()
        .expect("handlers")
        .iter()
        .find(|h| h["name"] == "MachineHandler")
        .expect("MachineHandler");
    assert_eq!(
        machine["uri"],
        format!("{}api/2.0/machines/{{system_id}}/", lab.maas_url())
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_status_codes_and_messages() {
    let lab = support::lab(600.0).await;
    let post = reqwest::Method::POST;
    let (code, body, _) = call(
        &lab,
        post.clone(),
        "machines/?op=allocate",
        &[("tags", "nope")],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (400, r#"{"tags":["No such tag(s): 'nope'."]}"#)
    );
    let (code, body, _) = call(
        &lab,
        post.clone(),
        "machines/?op=allocate",
        &[("pool", "spare"), ("tags", "gpu")],
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        body,
        r#"No available machine matches constraints: [('pool', ['spare']), ('tags', ['gpu'])] (resolved to "pool=spare tags=gpu")"#
    );
    let (code, body, _) = call(
        &lab,
        post.clone(),
        "machines/op-allocate",
        &[("pool", "spare"), ("zone", "az2")],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let m: Value = serde_json::from_str(&body).expect("machine");
    let id = m["system_id"].as_str().expect("id").to_string();
    assert_eq!(m["status_name"], "Allocated");
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{id}/?op=frobnicate"),
        &[],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (400, "Unrecognised signature: method=POST op=frobnicate")
    );
    let (code, body, _) = call(&lab, reqwest::Method::GET, "machines/zzzzzz/", &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (404, "No Machine matches the given query.")
    );

    // A deploy that hangs becomes Failed deployment at node_timeout, and cannot be redeployed.
    lab.inject(Fault::MaasDeployHang {
        machine: Some(id.clone()),
        count: 1,
    })
    .expect("fault");
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{id}/?op=deploy"),
        &[("distro_series", "jammy")],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let failed = support::wait_for(
        "node_timeout to fail the hung deploy",
        Duration::from_secs(30),
        || async {
            let (_, body, _) =
                call(&lab, reqwest::Method::GET, &format!("machines/{id}/"), &[]).await;
            let m: Value = serde_json::from_str(&body).ok()?;
            (m["status_name"] == "Failed deployment").then_some(m)
        },
    )
    .await;
    assert_eq!(failed["status"], 11);
    assert_eq!(
        failed["status_message"],
        "Marking node failed - Node operation 'Deploying' timed out after 30 minutes."
    );
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{id}/?op=deploy"),
        &[],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Can't deploy a machine that is in the 'Failed deployment' state"
        )
    );
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{id}/?op=mark_fixed"),
        &[],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (409, "Can't mark a non-broken node as 'Ready'.")
    );
    let (code, _, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{id}/?op=mark_broken"),
        &[("comment", "bad disk")],
    )
    .await;
    assert_eq!(code, 200);
    let (code, body, _) = call(&lab, post.clone(), &format!("machines/{id}/?op=abort"), &[]).await;
    assert_eq!(code, 409);
    assert_eq!(
        body,
        format!("Cannot abort in current state: node {id} is in state Broken.")
    );

    lab.inject(Fault::Http {
        api: Api::Maas,
        method: Some("POST".into()),
        path_contains: Some("op=allocate".into()),
        status: 503,
        retry_after: Some(10),
        message: None,
        count: 1,
    })
    .expect("fault");
    let (code, _, headers) = call(&lab, post.clone(), "machines/?op=allocate", &[]).await;
    assert_eq!(code, 503);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("10")
    );
    // A release that hangs fails after MAAS's 5-minute release timeout; its node goes NotReady.
    let (_, body, _) = call(
        &lab,
        reqwest::Method::GET,
        "machines/?hostname=worker-03",
        &[],
    )
    .await;
    let worker: Value = serde_json::from_str(&body).expect("machines");
    let wid = worker[0]["system_id"].as_str().expect("id").to_string();
    lab.inject(Fault::MaasReleaseHang {
        machine: Some("worker-03".into()),
        count: 1,
    })
    .expect("fault");
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{wid}/?op=release"),
        &[],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let failed = support::wait_for(
        "the hung release to fail",
        Duration::from_secs(30),
        || async {
            let (_, body, _) =
                call(&lab, reqwest::Method::GET, &format!("machines/{wid}/"), &[]).await;
            let m: Value = serde_json::from_str(&body).ok()?;
            (m["status_name"] == "Releasing failed").then_some(m)
        },
    )
    .await;
    assert_eq!(failed["status"], 13);
    let node = lab
        .get("nodes", "", "worker-03")
        .expect("node stays while the machine is not released");
    assert!(
        node["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] != "True")
    );

    let audit: Vec<_> = lab
        .audit()
        .into_iter()
        .filter(|e| e.api == "maas")
        .collect();
    assert!(
        audit
            .iter()
            .any(|e| e.verb == "allocate" && e.outcome == 503)
    );
    assert!(
        audit.iter().any(|e| e.verb == "deploy"
            && e.object == format!("machines/{id}/")
            && e.outcome == 200)
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_bond_bridge_vlan_link() {
    let lab = support::lab(60.0).await;
    let post = reqwest::Method::POST;
    let (_, body, _) = call(
        &lab,
        post.clone(),
        "machines/?op=allocate",
        &[("tags", "vmo-worker")],
    )
    .await;
    let m: Value = serde_json::from_str(&body).expect("machine");
    let id = m["system_id"].as_str().expect("id").to_string();
    let nics: Vec<String> = m["interface_set"]
        .as_array()
        .expect("nics")
        .iter()
        .map(|i| i["id"].to_string())
        .collect();
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/?op=create_bond"),
        &[
            ("name", "bond0"),
            ("parents", &nics[0]),
            ("parents", &nics[1]),
            ("bond_mode", "802.3ad"),
            ("bond_lacp_rate", "fast"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let bond: Value = serde_json::from_str(&body).expect("bond");
    assert_eq!(
        (bond["type"].as_str(), bond["params"]["bond_mode"].as_str()),
        (Some("bond"), Some("802.3ad"))
    );
    assert_eq!(bond["parents"], serde_json::json!(["eno1", "eno2"]));
    let bond_id = bond["id"].to_string();
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/?op=create_vlan"),
        &[("vlan", "5003"), ("parent", &bond_id)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let vlan: Value = serde_json::from_str(&body).expect("vlan");
    assert_eq!(vlan["name"], "bond0.20");
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/?op=create_bridge"),
        &[("name", "br0"), ("parents", &bond_id), ("parent", &bond_id)],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (400, "Cannot specify both parent and parents fields.")
    );
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/?op=create_bridge"),
        &[("name", "br0"), ("parents", &bond_id)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let vlan_id = vlan["id"].to_string();
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/{vlan_id}/?op=link_subnet"),
        &[
            ("mode", "STATIC"),
            ("subnet", "3"),
            ("ip_address", "10.20.30.99"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let linked: Value = serde_json::from_str(&body).expect("linked");
    assert_eq!(linked["links"][0]["ip_address"], "10.20.30.99");
    assert_eq!(linked["links"][0]["subnet"]["cidr"], "10.20.0.0/16");
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/{vlan_id}/?op=link_subnet"),
        &[("mode", "bogus"), ("subnet", "3")],
    )
    .await;
    assert_eq!(code, 400, "{body}");
    // Deployed machines' interfaces cannot be edited.
    let (code, _, _) = call(
        &lab,
        post.clone(),
        &format!("machines/{id}/?op=deploy"),
        &[],
    )
    .await;
    assert_eq!(code, 200);
    let (code, body, _) = call(
        &lab,
        post.clone(),
        &format!("nodes/{id}/interfaces/?op=create_bond"),
        &[("name", "bond1"), ("parents", &nics[0])],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (
            409,
            "Cannot create bond interface because the machine is not New, Ready, Allocated, or Broken."
        )
    );
    lab.shutdown().await;
}
