//! kube-rs (the client Drover's adapters use) against the lab: typed lists with field and label
//! selectors, watches, server-side apply, JSON patches on KubeVirt objects, evictions answered with
//! KubeVirt's 429, and Status errors surfacing as `kube::Error::Api`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, EvictParams, GroupVersionKind, ListParams, Patch, PatchParams,
    WatchEvent, WatchParams,
};

use crate::lab::support;

async fn client(lab: &drover_lab::LabHandle) -> kube::Client {
    let mut config = kube::Config::new(lab.kube_url().parse().expect("url"));
    // kube 5 retries 429/503/504 by default (15 times, backoff up to 1,000 s): an eviction that
    // KubeVirt answers with 429 would block for minutes. Callers that treat 429 as "not now" must
    // turn that off, as Drover's adapter has to.
    config.default_retry = false;
    kube::Client::try_from(config).expect("kube client")
}

fn vmis(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    );
    Api::namespaced_with(client.clone(), "vmo-prod", &ar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_reads_writes_watches_and_evicts() {
    let lab = support::lab(120.0).await;
    let client = client(&lab).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    assert_eq!(list.items.len(), 11);
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(
            &ListParams::default()
                .fields("spec.nodeName=worker-04")
                .labels("kubevirt.io=virt-launcher"),
        )
        .await
        .expect("pods");
    assert_eq!(on_node.items.len(), 20);
    let on_node = vmis(&client)
        .list(&ListParams::default().labels("kubevirt.io/nodeName=worker-04"))
        .await
        .expect("vmis");
    assert_eq!(on_node.items.len(), 20);

    let err = Api::<Pod>::namespaced(client.clone(), "vmo-prod")
        .get("nope")
        .await
        .expect_err("404");
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("unexpected error {other:?}"),
    }

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}})).expect("cm");
    let applied = cms
        .patch(
            "ssa",
            &PatchParams::apply("drover").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("apply creates");
    assert_eq!(
        applied
            .data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("1")
    );

    let stream = cms
        .watch(
            &WatchParams::default().timeout(5),
            &applied
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
        )
        .await
        .expect("watch");
    cms.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"b": "2"}})),
    )
    .await
    .expect("merge patch");
    let mut stream = Box::pin(stream);
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("event in time")
        .expect("stream ok")
        .expect("an event");
    match ev {
        WatchEvent::Modified(cm) => assert_eq!(
            cm.data.and_then(|d| d.get("b").cloned()).as_deref(),
            Some("2")
        ),
        other => panic!("unexpected event {other:?}"),
    }

    let vmi_pod = Api::<Pod>::namespaced(client.clone(), "vmo-prod")
        .list(&ListParams::default().fields("spec.nodeName=worker-06"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("virt-launcher-vm-06-19"))
        })
        .expect("the RWO VM's launcher pod");
    let err = Api::<Pod>::namespaced(client.clone(), "vmo-prod")
        .evict(
            vmi_pod.metadata.name.as_deref().unwrap_or(""),
            &EvictParams::default(),
        )
        .await
        .expect_err("429");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 429);
            assert!(
                s.message.contains("is not live-migratable"),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    let events: Vec<_> = vmis(&client)
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch vmis")
        .take(3)
        .collect()
        .await;
    assert_eq!(events.len(), 3);
    lab.shutdown().await;
}
