//! `GET /MAAS/api/2.0/describe/`: the handler catalogue python-libmaas bootstraps from. Handler
//! URIs point back at the host the client used, so the client keeps talking to the lab.

use serde_json::{Value, json};

use crate::maas::model::ROOT;

/// (handler name, path below the API root, URI params, actions as (name, op, method)).
type Handler = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, Option<&'static str>, &'static str)],
);

const R: Option<&str> = None;

static HANDLERS: &[Handler] = &[
    (
        "MachinesHandler",
        "machines/",
        &[],
        &[
            ("read", R, "GET"),
            ("create", R, "POST"),
            ("allocate", Some("allocate"), "POST"),
            ("release", Some("release"), "POST"),
            ("list_allocated", Some("list_allocated"), "GET"),
            ("power_parameters", Some("power_parameters"), "GET"),
            ("accept", Some("accept"), "POST"),
            ("accept_all", Some("accept_all"), "POST"),
        ],
    ),
    (
        "MachineHandler",
        "machines/{system_id}/",
        &["system_id"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
            ("deploy", Some("deploy"), "POST"),
            ("release", Some("release"), "POST"),
            ("abort", Some("abort"), "POST"),
            ("mark_broken", Some("mark_broken"), "POST"),
            ("mark_fixed", Some("mark_fixed"), "POST"),
            ("power_on", Some("power_on"), "POST"),
            ("power_off", Some("power_off"), "POST"),
            ("query_power_state", Some("query_power_state"), "GET"),
            ("lock", Some("lock"), "POST"),
            ("unlock", Some("unlock"), "POST"),
            ("details", Some("details"), "GET"),
            ("power_parameters", Some("power_parameters"), "GET"),
            ("set_owner_data", Some("set_owner_data"), "POST"),
            (
                "set_workload_annotations",
                Some("set_workload_annotations"),
                "POST",
            ),
            (
                "clear_default_gateways",
                Some("clear_default_gateways"),
                "POST",
            ),
            ("get_curtin_config", Some("get_curtin_config"), "GET"),
            ("commission", Some("commission"), "POST"),
            ("rescue_mode", Some("rescue_mode"), "POST"),
            ("exit_rescue_mode", Some("exit_rescue_mode"), "POST"),
            (
                "restore_default_configuration",
                Some("restore_default_configuration"),
                "POST",
            ),
            (
                "restore_networking_configuration",
                Some("restore_networking_configuration"),
                "POST",
            ),
            (
                "restore_storage_configuration",
                Some("restore_storage_configuration"),
                "POST",
            ),
        ],
    ),
    ("NodesHandler", "nodes/", &[], &[("read", R, "GET")]),
    (
        "EventsHandler",
        "events/",
        &[],
        &[("query", Some("query"), "GET")],
    ),
    (
        "InterfacesHandler",
        "nodes/{system_id}/interfaces/",
        &["system_id"],
        &[
            ("read", R, "GET"),
            ("create_physical", Some("create_physical"), "POST"),
            ("create_bond", Some("create_bond"), "POST"),
            ("create_bridge", Some("create_bridge"), "POST"),
            ("create_vlan", Some("create_vlan"), "POST"),
        ],
    ),
    (
        "InterfaceHandler",
        "nodes/{system_id}/interfaces/{id}/",
        &["system_id", "id"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
            ("link_subnet", Some("link_subnet"), "POST"),
            ("unlink_subnet", Some("unlink_subnet"), "POST"),
            ("disconnect", Some("disconnect"), "POST"),
            ("set_default_gateway", Some("set_default_gateway"), "POST"),
            ("add_tag", Some("add_tag"), "POST"),
            ("remove_tag", Some("remove_tag"), "POST"),
        ],
    ),
    (
        "ResourcePoolsHandler",
        "resourcepools/",
        &[],
        &[("read", R, "GET"), ("create", R, "POST")],
    ),
    (
        "ResourcePoolHandler",
        "resourcepool/{id}/",
        &["id"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
        ],
    ),
    (
        "ZonesHandler",
        "zones/",
        &[],
        &[("read", R, "GET"), ("create", R, "POST")],
    ),
    (
        "ZoneHandler",
        "zones/{name}/",
        &["name"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
        ],
    ),
    (
        "TagsHandler",
        "tags/",
        &[],
        &[("read", R, "GET"), ("create", R, "POST")],
    ),
    (
        "TagHandler",
        "tags/{name}/",
        &["name"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
            ("machines", Some("machines"), "GET"),
            ("nodes", Some("nodes"), "GET"),
            ("update_nodes", Some("update_nodes"), "POST"),
        ],
    ),
    (
        "FabricsHandler",
        "fabrics/",
        &[],
        &[("read", R, "GET"), ("create", R, "POST")],
    ),
    (
        "FabricHandler",
        "fabrics/{id}/",
        &["id"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
        ],
    ),
    (
        "VlansHandler",
        "fabrics/{fabric_id}/vlans/",
        &["fabric_id"],
        &[("read", R, "GET"), ("create", R, "POST")],
    ),
    (
        "VlanHandler",
        "fabrics/{fabric_id}/vlans/{vid}/",
        &["fabric_id", "vid"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
        ],
    ),
    (
        "SubnetsHandler",
        "subnets/",
        &[],
        &[("read", R, "GET"), ("create", R, "POST")],
    ),
    (
        "SubnetHandler",
        "subnets/{id}/",
        &["id"],
        &[
            ("read", R, "GET"),
            ("update", R, "PUT"),
            ("delete", R, "DELETE"),
        ],
    ),
    (
        "UsersHandler",
        "users/",
        &[],
        &[("read", R, "GET"), ("whoami", Some("whoami"), "GET")],
    ),
    (
        "MaasHandler",
        "maas/",
        &[],
        &[
            ("get_config", Some("get_config"), "GET"),
            ("set_config", Some("set_config"), "POST"),
        ],
    ),
];

fn handler_json(h: &Handler, host: &str) -> Value {
    let (name, path, params, actions) = h;
    let actions: Vec<Value> = actions
        .iter()
        .map(|(n, op, method)| json!({"name": n, "op": op, "method": method, "restful": op.is_none(), "doc": ""}))
        .collect();
    json!({
        "name": name,
        "doc": "",
        "params": params,
        "path": format!("{ROOT}{path}"),
        "uri": format!("http://{host}{ROOT}{path}"),
        "actions": actions,
    })
}

/// The description document for a client that reached the lab at `host`.
pub fn describe(host: &str) -> Value {
    let mut handlers: Vec<Value> = HANDLERS.iter().map(|h| handler_json(h, host)).collect();
    let mut resources: Vec<Value> = handlers
        .iter()
        .map(|h| json!({"name": h["name"], "anon": null, "auth": h}))
        .collect();
    let version = handler_json(
        &("VersionHandler", "version/", &[], &[("read", R, "GET")]),
        host,
    );
    let mut anon_version = version.clone();
    anon_version["name"] = json!("AnonVersionHandler");
    resources.push(json!({"name": "VersionHandler", "anon": anon_version, "auth": null}));
    handlers.push(version);
    json!({"doc": "MAAS API", "hash": "drover-lab", "handlers": handlers, "resources": resources})
}
