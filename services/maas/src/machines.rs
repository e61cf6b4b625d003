//! Machines: list with filters (owner data matched here, since MAAS cannot filter on it), get,
//! allocate, deploy, release, abort, mark broken and fixed, and owner data. Writes are
//! `POST machines/[{system_id}/]?op=<op>` with form fields, as MAAS's own clients send them.

use std::collections::BTreeMap;

use base64::Engine;
use drover_workflows::ports::maas::{
    Allocation, Deployment, MaasError, Machine, MachineFilter, Release,
};

use crate::Client;
use crate::error::Replay;
use crate::model::{self, status_name};
use crate::request::Call;

fn machine_path(system_id: &str) -> [&str; 2] {
    ["machines", system_id]
}

pub async fn list(c: &Client, filter: &MachineFilter) -> Result<Vec<Machine>, MaasError> {
    let statuses = filter
        .statuses
        .iter()
        .map(|s| {
            status_name(*s).ok_or_else(|| {
                MaasError::Permanent(format!(
                    "list machines: MAAS has no status {s} to filter on"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let call = Call::get("list machines", &["machines"], None)
        .params("id", &filter.system_ids)
        .params("hostname", &filter.hostnames)
        .params("status", statuses)
        .param_opt("agent_name", filter.agent_name.as_ref())
        .param_opt("owner", filter.owner.as_ref())
        .param_opt("pool", filter.pool.as_ref())
        .param_opt("zone", filter.zone.as_ref())
        .params("tags", &filter.tags);
    let machines: Vec<model::Machine> = c.call(call).await?;
    Ok(machines
        .into_iter()
        .map(Machine::from)
        .filter(|m| filter.owner_data_matches(m))
        .collect())
}

pub async fn get(c: &Client, system_id: &str) -> Result<Machine, MaasError> {
    let call = Call::get(
        format!("get machine {system_id}"),
        &machine_path(system_id),
        None,
    );
    Ok(c.call::<model::Machine>(call).await?.into())
}

pub async fn allocate(c: &Client, a: &Allocation) -> Result<Machine, MaasError> {
    let call = Call::post("allocate", &["machines"], "allocate")
        .param_opt("pool", a.pool.as_ref())
        .param_opt("zone", a.zone.as_ref())
        .params("tags", &a.tags)
        .params("not_tags", &a.not_tags)
        .param_opt("cpu_count", a.cpu_count)
        .param_opt("mem", a.memory_mib)
        .param_opt("system_id", a.system_id.as_ref())
        .param_opt("agent_name", a.agent_name.as_ref())
        .param_opt("comment", a.comment.as_ref());
    Ok(c.call::<model::Machine>(call).await?.into())
}

/// The user data is sent base64-encoded, as MAAS requires; callers give plain text.
pub async fn deploy(c: &Client, system_id: &str, d: &Deployment) -> Result<Machine, MaasError> {
    let user_data = d
        .user_data
        .as_ref()
        .map(|u| base64::engine::general_purpose::STANDARD.encode(u));
    let call = Call::post(
        format!("deploy machine {system_id}"),
        &machine_path(system_id),
        "deploy",
    )
    .param_opt("distro_series", d.distro_series.as_ref())
    .param_opt("hwe_kernel", d.hwe_kernel.as_ref())
    .param_opt("user_data", user_data)
    .param_opt("comment", d.comment.as_ref());
    Ok(c.call::<model::Machine>(call).await?.into())
}

pub async fn release(c: &Client, system_id: &str, r: &Release) -> Result<Machine, MaasError> {
    let call = Call::post(
        format!("release machine {system_id}"),
        &machine_path(system_id),
        "release",
    )
    .flag("erase", r.erase)
    .flag("quick_erase", r.quick_erase)
    .flag("secure_erase", r.secure_erase)
    .param_opt("comment", r.comment.as_ref());
    Ok(c.call::<model::Machine>(call).await?.into())
}

/// `abort`, `mark_broken` and `mark_fixed`: an op with an optional comment.
pub async fn act(
    c: &Client,
    system_id: &str,
    op: &'static str,
    comment: Option<&str>,
) -> Result<Machine, MaasError> {
    let what = format!("{} machine {system_id}", op.replace('_', " "));
    let call = Call::post(what, &machine_path(system_id), op).param_opt("comment", comment);
    Ok(c.call::<model::Machine>(call).await?.into())
}

/// `set_owner_data`: `key=value` fields, an empty value deleting the key. Setting the same data
/// twice is harmless, so this write is repeated after any transient failure.
pub async fn set_owner_data(
    c: &Client,
    system_id: &str,
    data: &BTreeMap<String, Option<String>>,
) -> Result<Machine, MaasError> {
    if let Some(key) = data.keys().find(|k| k.is_empty() || *k == "op") {
        return Err(MaasError::Permanent(format!(
            "set owner data of machine {system_id}: {key:?} cannot be an owner data key"
        )));
    }
    let mut call = Call::post(
        format!("set owner data of machine {system_id}"),
        &machine_path(system_id),
        "set_owner_data",
    )
    .replay(Replay::Safe);
    for (k, v) in data {
        call = call.param(k, v.as_deref().unwrap_or(""));
    }
    Ok(c.call::<model::Machine>(call).await?.into())
}
