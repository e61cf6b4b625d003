//! Server-side printing: `meta.k8s.io/v1 Table` responses for kubectl's human-readable output, with
//! the columns kubectl shows for nodes, pods and the KubeVirt types, and NAME/AGE for the rest.

use serde_json::{Value, json};

use crate::clock;
use crate::http::Req;
use crate::kube::resources::ResourceDef;
use crate::state::Shared;

/// How a row's cells are computed from its object.
type Cells<'a> = Box<dyn Fn(&Value) -> Vec<Value> + 'a>;

/// Whether the client asked for a Table.
pub fn wants_table(req: &Req) -> bool {
    req.header("accept").contains("as=Table")
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.into()
    }
}

/// Render objects as a Table.
pub fn render(def: &ResourceDef, items: &[&Value], rv: u64, shared: &Shared) -> Value {
    let now = clock::unix(shared.clock.wall());
    let age = |o: &Value| {
        clock::parse_rfc3339(s(o, "/metadata/creationTimestamp"))
            .map(|t| clock::short_age(now.saturating_sub(t)))
            .unwrap_or_else(|| "<unknown>".into())
    };
    let (columns, cells): (Vec<Value>, Cells<'_>) = match def.plural {
        "nodes" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
            ],
            Box::new(move |o| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| s(c, "/status").to_string());
                let mut st = match ready.as_deref() {
                    Some("True") => "Ready".to_string(),
                    Some(_) => "NotReady".to_string(),
                    None => "Unknown".to_string(),
                };
                if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                    st.push_str(",SchedulingDisabled");
                }
                let roles: Vec<&str> = o
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|l| {
                        l.keys()
                            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                            .collect()
                    })
                    .unwrap_or_default();
                let ip = o["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_default();
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(st),
                    json!(or_none(&roles.join(","))),
                    json!(age(o)),
                    json!(s(o, "/status/nodeInfo/kubeletVersion")),
                    json!(or_none(&ip)),
                ]
            }),
        ),
        "pods" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
            ],
            Box::new(move |o| {
                let statuses = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = statuses
                    .iter()
                    .filter(|c| c["ready"] == json!(true))
                    .count();
                let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
                    "Terminating"
                } else {
                    s(o, "/status/phase")
                };
                let phase = if phase == "Succeeded" {
                    "Completed"
                } else {
                    phase
                };
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!("0"),
                    json!(age(o)),
                    json!(or_none(s(o, "/status/podIP"))),
                    json!(or_none(s(o, "/spec/nodeName"))),
                ]
            }),
        ),
        "virtualmachineinstances" => (
            vec![
                col("Name", "string", 0),
                col("Age", "string", 0),
                col("Phase", "string", 0),
                col("IP", "string", 0),
                col("NodeName", "string", 0),
                col("Ready", "string", 0),
            ],
            Box::new(move |o| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| s(c, "/status").to_string())
                    .unwrap_or_else(|| "False".into());
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(age(o)),
                    json!(s(o, "/status/phase")),
                    json!(s(o, "/status/interfaces/0/ipAddress")),
                    json!(s(o, "/status/nodeName")),
                    json!(ready),
                ]
            }),
        ),
        "virtualmachines" => (
            vec![
                col("Name", "string", 0),
                col("Age", "string", 0),
                col("Status", "string", 0),
                col("Ready", "string", 0),
            ],
            Box::new(move |o| {
                let ready = if o.pointer("/status/ready") == Some(&json!(true)) {
                    "True"
                } else {
                    "False"
                };
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(age(o)),
                    json!(s(o, "/status/printableStatus")),
                    json!(ready),
                ]
            }),
        ),
        "persistentvolumeclaims" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Volume", "string", 0),
                col("Capacity", "string", 0),
                col("Access Modes", "string", 0),
                col("StorageClass", "string", 0),
                col("Age", "string", 0),
                col("VolumeMode", "string", 1),
            ],
            Box::new(move |o| {
                let modes: Vec<&str> = o["spec"]["accessModes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|m| match m {
                                "ReadWriteMany" => "RWX",
                                "ReadWriteOnce" => "RWO",
                                "ReadOnlyMany" => "ROX",
                                "ReadWriteOncePod" => "RWOP",
                                other => other,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(s(o, "/spec/volumeName")),
                    json!(s(o, "/status/capacity/storage")),
                    json!(modes.join(",")),
                    json!(s(o, "/spec/storageClassName")),
                    json!(age(o)),
                    json!(s(o, "/spec/volumeMode")),
                ]
            }),
        ),
        "datavolumes" => (
            vec![
                col("Name", "string", 0),
                col("Phase", "string", 0),
                col("Progress", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
            ],
            Box::new(move |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(s(o, "/status/progress")),
                    json!(
                        o.pointer("/status/restartCount")
                            .and_then(Value::as_u64)
                            .unwrap_or(0)
                            .to_string()
                    ),
                    json!(age(o)),
                ]
            }),
        ),
        "storageclasses" => (
            vec![
                col("Name", "string", 0),
                col("Provisioner", "string", 0),
                col("ReclaimPolicy", "string", 0),
                col("VolumeBindingMode", "string", 0),
                col("AllowVolumeExpansion", "string", 0),
                col("Age", "string", 0),
            ],
            Box::new(move |o| {
                let default = o
                    .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                    == Some(&json!("true"));
                let name = if default {
                    format!("{} (default)", s(o, "/metadata/name"))
                } else {
                    s(o, "/metadata/name").to_string()
                };
                vec![
                    json!(name),
                    json!(s(o, "/provisioner")),
                    json!(s(o, "/reclaimPolicy")),
                    json!(s(o, "/volumeBindingMode")),
                    json!(
                        o.pointer("/allowVolumeExpansion")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                            .to_string()
                    ),
                    json!(age(o)),
                ]
            }),
        ),
        "virtualmachineinstancemigrations" => (
            vec![
                col("Name", "string", 0),
                col("Phase", "string", 0),
                col("VMI", "string", 0),
            ],
            Box::new(|o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(s(o, "/spec/vmiName")),
                ]
            }),
        ),
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            Box::new(move |o| vec![json!(s(o, "/metadata/name")), json!(age(o))]),
        ),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(o),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(Value::Null)}
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows
    })
}
