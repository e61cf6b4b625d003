//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>` and per-group
//! resource lists, built from the resource table so kubectl and client libraries find every type
//! (including the KubeVirt, CDI, snapshot and Multus CRDs) and the `pods/eviction` subresource.

use serde_json::{Value, json};

use crate::kube::resources::{self, KUBEVIRT_SUBRESOURCES, RESOURCES, ResourceDef};

/// `/version`.
pub fn version(git_version: &str) -> Value {
    let minor = git_version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("30");
    json!({
        "major": "1",
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "drover-lab",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]
    })
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = resources::group_versions()
        .iter()
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, `None` for unknown groups.
pub fn group(name: &str) -> Option<Value> {
    resources::group_versions()
        .iter()
        .find(|(g, _)| *g == name)
        .map(|(g, v)| {
            let mut e = group_entry(g, v);
            e["kind"] = json!("APIGroup");
            e["apiVersion"] = json!("v1");
            e
        })
}

fn resource_entry(r: &ResourceDef) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

/// `/api/v1` or `/apis/<group>/<version>`, `None` for unknown group versions.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut list: Vec<Value> = Vec::new();
    if group == "subresources.kubevirt.io" && version == "v1" {
        for (res, verb) in KUBEVIRT_SUBRESOURCES {
            list.push(json!({"name": format!("{res}/{verb}"), "singularName": "", "namespaced": true, "kind": "", "verbs": ["update"]}));
        }
    }
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        list.push(resource_entry(r));
        for sub in r.subresources {
            let sub_entry = match *sub {
                "eviction" => {
                    json!({"name": format!("{}/eviction", r.plural), "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
                }
                _ => {
                    json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
                }
            };
            list.push(sub_entry);
        }
    }
    if list.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}
