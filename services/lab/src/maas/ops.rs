//! Ops on one machine with MAAS's rules, state transitions, events and messages: deploy
//! (implicit allocation from Ready, 409 from any state but Allocated), release (erase options,
//! no-op when already Releasing or Ready), abort (Deploying -> Allocated powered off, Disk
//! erasing -> Failed disk erasing), mark_broken (owner only; releases first) and mark_fixed,
//! power_on/power_off/query_power_state, lock/unlock, and set_owner_data (alias
//! set_workload_annotations). What happens over time after an op is `maas/sim.rs`'s job.

use base64::Engine;
use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::faults::ReleaseFault;
use crate::maas::events::kinds;
use crate::maas::form::Params;
use crate::maas::lifecycle::{self, DeployFault, DeployPlan};
use crate::maas::machines::jittered;
use crate::maas::model::{Activity, Region, Status};

/// Ubuntu releases the lab's region has images for: (series, version).
pub const UBUNTU: &[(&str, &str)] = &[("focal", "20.04"), ("jammy", "22.04"), ("noble", "24.04")];

/// Chooses what goes wrong with a release: (hostname, system_id, with disk erasing).
pub type ReleaseFaults<'a> = &'a dyn Fn(&str, &str, bool) -> ReleaseFault;

fn json_of(r: &Region, i: usize) -> Value {
    r.machine_json(&r.machines[i])
}

/// `(osystem, series, default kernel)` for a deploy's `distro_series` (and Palette's extra
/// `osystem`), or MAAS's 400.
fn image(distro_series: Option<&str>, osystem: Option<&str>) -> Result<(String, String, String)> {
    let series = distro_series.filter(|s| !s.is_empty()).unwrap_or("jammy");
    let (os, name) = match series.split_once('/') {
        Some((os, name)) => (os.to_string(), name.to_string()),
        None => (osystem.unwrap_or("ubuntu").to_string(), series.to_string()),
    };
    if os != "ubuntu" {
        if name.is_empty() {
            return Err(invalid_series(series));
        }
        return Ok((os, name, String::new()));
    }
    let (codename, version) = UBUNTU
        .iter()
        .find(|(s, v)| *s == name || *v == name)
        .ok_or_else(|| invalid_series(series))?;
    Ok((
        "ubuntu".into(),
        codename.to_string(),
        format!("ga-{version}"),
    ))
}

fn invalid_series(v: &str) -> Error {
    let choices: Vec<String> = std::iter::once("''".to_string())
        .chain(UBUNTU.iter().map(|(s, _)| format!("'ubuntu/{s}'")))
        .collect();
    Error::Validation(json!({"distro_series": [format!(
        "'{v}' is not a valid distro_series.  It should be one of: {}.",
        choices.join(", ")
    )]}))
}

/// `POST machines/{id}/?op=deploy` (`user_data` base64, `distro_series`, `hwe_kernel`,
/// `agent_name`, `comment`). A Ready machine is allocated to `user` first. `fault` is what
/// will go wrong with this deployment.
pub fn deploy(
    r: &mut Region,
    id: &str,
    p: &Params,
    user: &str,
    now: SimTime,
    fault: DeployFault,
) -> Result<Value> {
    let i = r.index(id)?;
    let user_data = p.get("user_data").unwrap_or("");
    let compact: String = user_data.chars().filter(|c| !c.is_whitespace()).collect();
    let user_data = match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) if compact.is_empty() => String::new(),
        Err(_) => {
            return Err(Error::Validation(
                json!({"user_data": ["Invalid base64 user data."]}),
            ));
        }
    };
    let (osystem, series, default_kernel) = image(p.get("distro_series"), p.get("osystem"))?;
    if r.machines[i].status == Status::Ready && r.machines[i].owner.is_none() {
        r.request(i, kinds::REQUEST_NODE_ACQUIRE, user, None, now);
        r.machines[i].owner = Some(user.to_string());
        r.set_status(i, Status::Allocated, now);
    }
    let status = r.machines[i].status;
    if status != Status::Allocated {
        return Err(Error::StateConflict(format!(
            "Can't deploy a machine that is in the '{}' state",
            status.label()
        )));
    }
    let secs = jittered(r.settings.deploy_secs, r.settings.deploy_jitter);
    r.request(
        i,
        kinds::REQUEST_NODE_START_DEPLOYMENT,
        user,
        p.get("comment"),
        now,
    );
    let m = &mut r.machines[i];
    m.user_data = user_data;
    m.osystem = osystem;
    m.distro_series = series;
    m.hwe_kernel = p
        .get("hwe_kernel")
        .filter(|k| !k.is_empty())
        .map_or(default_kernel, String::from);
    if let Some(agent) = p.get("agent_name") {
        m.agent_name = agent.to_string();
    }
    m.error_description.clear();
    m.deployed_at = None;
    m.joined = false;
    m.node_created = None;
    m.activity = Activity::Deploying {
        started: now,
        plan: DeployPlan::new(secs, fault),
        stages: 0,
    };
    r.set_status(i, Status::Deploying, now);
    r.event(i, kinds::DEPLOYING, "", None, now);
    let audit = format!("Started deploying '{}'.", r.machines[i].hostname);
    r.event(i, kinds::NODE, &audit, Some(user), now);
    Ok(json_of(r, i))
}

/// `POST machines/{id}/?op=release` (`erase`, `secure_erase`, `quick_erase`, `comment`): a
/// no-op when already Releasing or Ready, 409 unless releasable.
pub fn release(
    r: &mut Region,
    id: &str,
    p: &Params,
    user: &str,
    now: SimTime,
    faults: ReleaseFaults<'_>,
) -> Result<Value> {
    let i = r.index(id)?;
    let status = r.machines[i].status;
    if matches!(status, Status::Releasing | Status::Ready) {
        return Ok(json_of(r, i));
    }
    if !status.releasable() {
        return Err(Error::StateConflict(format!(
            "Machine cannot be released in its current state ('{}').",
            status.label()
        )));
    }
    let erase_secs = lifecycle::erase_secs(
        &r.settings,
        p.flag("erase"),
        p.flag("secure_erase"),
        p.flag("quick_erase"),
    );
    let (host, sid) = (
        r.machines[i].hostname.clone(),
        r.machines[i].system_id.clone(),
    );
    let fault = faults(&host, &sid, erase_secs.is_some());
    r.request(i, kinds::REQUEST_NODE_RELEASE, user, p.get("comment"), now);
    start_release(r, i, now, erase_secs, fault);
    Ok(json_of(r, i))
}

/// Put machine `i` into Releasing (disk erasing of `erase_secs` to follow when set).
pub fn start_release(
    r: &mut Region,
    i: usize,
    now: SimTime,
    erase_secs: Option<f64>,
    fault: ReleaseFault,
) {
    r.machines[i].activity = Activity::Releasing {
        started: now,
        erase_secs,
        erase_fails: fault.erase,
        hang: fault.hang,
    };
    r.set_status(i, Status::Releasing, now);
    r.event(i, kinds::RELEASING, "", None, now);
}

/// `POST machines/{id}/?op=abort` (`comment`).
pub fn abort(r: &mut Region, id: &str, p: &Params, user: &str, now: SimTime) -> Result<Value> {
    let i = r.index(id)?;
    let (request, back_to, aborted) = match r.machines[i].status {
        Status::Deploying => (
            kinds::REQUEST_NODE_ABORT_DEPLOYMENT,
            Status::Allocated,
            kinds::ABORTED_DEPLOYMENT,
        ),
        Status::DiskErasing => (
            kinds::REQUEST_NODE_ABORT_ERASE_DISK,
            Status::FailedDiskErasing,
            kinds::ABORTED_DISK_ERASING,
        ),
        s => {
            return Err(Error::StateConflict(format!(
                "Cannot abort in current state: node {} is in state {}.",
                r.machines[i].system_id,
                s.label()
            )));
        }
    };
    r.request(i, request, user, p.get("comment"), now);
    r.machines[i].activity = Activity::Idle;
    r.set_power(i, "off", now);
    r.set_status(i, back_to, now);
    r.event(i, aborted, "", None, now);
    Ok(json_of(r, i))
}

/// `POST machines/{id}/?op=mark_broken` (`comment`, legacy `error_description`): only the
/// owner may; a releasable machine is released first (powered off, owner and owner data gone).
pub fn mark_broken(
    r: &mut Region,
    id: &str,
    p: &Params,
    user: &str,
    now: SimTime,
) -> Result<Value> {
    let i = r.index(id)?;
    let m = &r.machines[i];
    if m.owner.as_deref() != Some(user) {
        return Err(Error::Forbidden(
            "You do not have permission to mark this node as broken.".into(),
        ));
    }
    if m.status == Status::Broken {
        return Err(Error::StateConflict(format!(
            "Cannot mark node broken: node {} is already broken.",
            m.system_id
        )));
    }
    let comment = p
        .get("comment")
        .or_else(|| p.get("error_description"))
        .unwrap_or("")
        .to_string();
    r.request(
        i,
        kinds::REQUEST_NODE_MARK_BROKEN,
        user,
        Some(&comment),
        now,
    );
    if r.machines[i].status.releasable() {
        // Released first: powered off, and fixed later it comes back Ready, not Deployed.
        r.set_power(i, "off", now);
        r.set_status(i, Status::Releasing, now);
    }
    r.machines[i].activity = Activity::Idle;
    r.disown(i);
    r.set_status(i, Status::Broken, now);
    r.machines[i].error_description = comment;
    Ok(json_of(r, i))
}

/// `POST machines/{id}/?op=mark_fixed` (`comment`): Broken -> Deployed when it was Deployed
/// when it broke (the region marked it broken without releasing it), else Ready.
pub fn mark_fixed(r: &mut Region, id: &str, p: &Params, user: &str, now: SimTime) -> Result<Value> {
    let i = r.index(id)?;
    if r.machines[i].status != Status::Broken {
        return Err(Error::StateConflict(
            "Can't mark a non-broken node as 'Ready'.".into(),
        ));
    }
    r.request(
        i,
        kinds::REQUEST_NODE_MARK_FIXED,
        user,
        p.get("comment"),
        now,
    );
    let to = if r.machines[i].previous_status == Status::Deployed {
        Status::Deployed
    } else {
        r.disown(i);
        Status::Ready
    };
    r.set_status(i, to, now);
    r.machines[i].error_description.clear();
    Ok(json_of(r, i))
}

/// `power_on` (`comment`; 409 unless allocated), `power_off` (`stop_mode`, `comment`) and
/// `query_power_state` (`{"state": ...}`). Powering a deploying machine off stalls its
/// deployment until `node_timeout` fails it.
pub fn power(
    r: &mut Region,
    id: &str,
    op: &str,
    p: &Params,
    user: &str,
    now: SimTime,
) -> Result<Value> {
    let i = r.index(id)?;
    match op {
        "power_on" => {
            if r.machines[i].owner.is_none() {
                return Err(Error::StateConflict(
                    "Can't start node: it hasn't been allocated.".into(),
                ));
            }
            r.request(i, kinds::REQUEST_NODE_START, user, p.get("comment"), now);
            r.set_power(i, "on", now);
        }
        "power_off" => {
            if let Some(mode) = p
                .get("stop_mode")
                .filter(|m| !matches!(*m, "soft" | "hard"))
            {
                return Err(Error::Validation(json!({"stop_mode": [format!(
                    "Select a valid choice. {mode} is not one of the available choices."
                )]})));
            }
            r.request(i, kinds::REQUEST_NODE_STOP, user, p.get("comment"), now);
            power_loss(r, i, now);
        }
        _ => return Ok(json!({"state": r.machines[i].power_state})),
    }
    Ok(json_of(r, i))
}

/// Machine `i` goes off (a user's power_off, or lost power): a deployment in progress stalls.
pub fn power_loss(r: &mut Region, i: usize, now: SimTime) {
    if let Activity::Deploying { started, plan, .. } = &mut r.machines[i].activity
        && plan.stall_at.is_none()
    {
        plan.stall_at = Some(now - *started);
    }
    r.set_power(i, "off", now);
}

/// `lock` / `unlock`.
pub fn lock(r: &mut Region, id: &str, lock: bool) -> Result<Value> {
    let i = r.index(id)?;
    let m = &mut r.machines[i];
    if m.locked == lock {
        return Err(Error::StateConflict(if lock {
            "Machine is already locked".into()
        } else {
            "Machine is not locked".into()
        }));
    }
    m.locked = lock;
    Ok(json_of(r, i))
}

/// `POST machines/{id}/?op=set_owner_data` (and `set_workload_annotations`): every parameter
/// but `op` is a key, an empty value deletes it. Only the owner may (409 otherwise).
pub fn set_owner_data(r: &mut Region, id: &str, p: &Params, user: &str) -> Result<Value> {
    let i = r.index(id)?;
    let m = &mut r.machines[i];
    if m.owner.as_deref() != Some(user) {
        return Err(Error::StateConflict(
            "Cannot set workload annotation: it hasn't been acquired.".into(),
        ));
    }
    for (k, v) in p.0.iter().filter(|(k, _)| k != "op") {
        if v.is_empty() {
            m.owner_data.remove(k);
        } else {
            m.owner_data.insert(k.clone(), v.clone());
        }
    }
    Ok(json_of(r, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maas::machines::allocate;

    fn no_faults(_: &str, _: &str, _: bool) -> ReleaseFault {
        ReleaseFault::default()
    }

    fn ready(r: &Region) -> String {
        r.machines
            .iter()
            .find(|m| m.status == Status::Ready)
            .unwrap()
            .system_id
            .clone()
    }

    #[test]
    fn deploy_release_abort_transitions() {
        let mut r = Region::reference();
        let id = ready(&r);
        let none = DeployFault::None;
        let m = deploy(
            &mut r,
            &id,
            &Params::of(&[
                ("distro_series", "ubuntu/jammy"),
                ("user_data", "I2Nsb3VkLWNvbmZpZw=="),
            ]),
            "admin",
            0.0,
            none,
        )
        .unwrap();
        assert_eq!(
            (m["status"].as_u64(), m["status_name"].as_str()),
            (Some(9), Some("Deploying"))
        );
        assert_eq!(m["status_message"], "Deploying");
        assert_eq!(m["hwe_kernel"], "ga-22.04");
        assert_eq!(
            (m["osystem"].as_str(), m["distro_series"].as_str()),
            (Some("ubuntu"), Some("jammy"))
        );
        assert_eq!(r.machine(&id).unwrap().user_data, "#cloud-config");
        assert_eq!(
            deploy(&mut r, &id, &Params::of(&[]), "admin", 0.0, none)
                .unwrap_err()
                .to_string(),
            "Can't deploy a machine that is in the 'Deploying' state"
        );
        let m = abort(&mut r, &id, &Params::of(&[]), "admin", 1.0).unwrap();
        assert_eq!(
            (m["status_name"].as_str(), m["power_state"].as_str()),
            (Some("Allocated"), Some("off"))
        );
        assert_eq!(m["status_message"], "Aborted deployment");
        assert!(
            abort(&mut r, &id, &Params::of(&[]), "admin", 1.0)
                .unwrap_err()
                .to_string()
                .starts_with("Cannot abort in current state: node")
        );
        let i = r.index(&id).unwrap();
        r.machines[i].status = Status::FailedDeployment;
        assert_eq!(
            deploy(&mut r, &id, &Params::of(&[]), "admin", 0.0, none)
                .unwrap_err()
                .to_string(),
            "Can't deploy a machine that is in the 'Failed deployment' state"
        );
        let m = release(
            &mut r,
            &id,
            &Params::of(&[("quick_erase", "true"), ("erase", "true")]),
            "admin",
            2.0,
            &no_faults,
        )
        .unwrap();
        assert_eq!(m["status_name"], "Releasing");
        assert_eq!(
            r.machines[i].activity,
            Activity::Releasing {
                started: 2.0,
                erase_secs: Some(r.settings.quick_erase_secs),
                erase_fails: false,
                hang: false
            }
        );
        r.machines[i].status = Status::New;
        assert_eq!(
            release(&mut r, &id, &Params::of(&[]), "admin", 0.0, &no_faults)
                .unwrap_err()
                .to_string(),
            "Machine cannot be released in its current state ('New')."
        );
        assert_eq!(
            mark_fixed(&mut r, &id, &Params::of(&[]), "admin", 0.0)
                .unwrap_err()
                .to_string(),
            "Can't mark a non-broken node as 'Ready'."
        );
        r.machines[i].owner = None;
        assert_eq!(
            power(&mut r, &id, "power_on", &Params::of(&[]), "admin", 0.0)
                .unwrap_err()
                .to_string(),
            "Can't start node: it hasn't been allocated."
        );
        assert!(matches!(
            deploy(&mut r, &id, &Params::of(&[("distro_series", "hirsute")]), "admin", 0.0, none),
            Err(Error::Validation(v)) if v["distro_series"][0] == "'hirsute' is not a valid distro_series.  It should be one of: '', 'ubuntu/focal', 'ubuntu/jammy', 'ubuntu/noble'."
        ));
    }

    #[test]
    fn events_record_who_did_what() {
        let mut r = Region::reference();
        let id = ready(&r);
        deploy(
            &mut r,
            &id,
            &Params::of(&[("comment", "rack 4")]),
            "admin",
            5.0,
            DeployFault::None,
        )
        .unwrap();
        let got: Vec<(&str, &str)> = r
            .events
            .iter()
            .map(|e| (e.kind.description, e.description.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("User acquiring node", "(admin)"),
                (
                    "Node changed status",
                    "From 'Ready' to 'Allocated' (to admin)"
                ),
                ("User starting deployment", "(admin) - rack 4"),
                ("Node changed status", "From 'Allocated' to 'Deploying'"),
                ("Deploying", ""),
                ("Node", "Started deploying 'spare-01'."),
            ]
        );
    }

    #[test]
    fn owner_data_and_mark_broken() {
        let mut r = Region::reference();
        let m = allocate(&mut r, &Params::of(&[("pool", "spare")]), "admin", 0.0).unwrap();
        let id = m["system_id"].as_str().unwrap().to_string();
        let m = set_owner_data(
            &mut r,
            &id,
            &Params::of(&[
                ("op", "set_owner_data"),
                ("drover/workflow", "wf-1"),
                ("attempt", "1"),
            ]),
            "admin",
        )
        .unwrap();
        assert_eq!(
            m["owner_data"],
            json!({"drover/workflow": "wf-1", "attempt": "1"})
        );
        let m = set_owner_data(&mut r, &id, &Params::of(&[("attempt", "")]), "admin").unwrap();
        assert_eq!(m["owner_data"], json!({"drover/workflow": "wf-1"}));
        assert_eq!(
            mark_broken(&mut r, &id, &Params::of(&[]), "mallory", 0.0)
                .unwrap_err()
                .status_code(),
            403
        );
        let m = mark_broken(
            &mut r,
            &id,
            &Params::of(&[("comment", "bad disk")]),
            "admin",
            1.0,
        )
        .unwrap();
        assert_eq!(
            (
                m["status_name"].as_str(),
                m["owner"].clone(),
                m["owner_data"].clone(),
                m["error_description"].as_str()
            ),
            (Some("Broken"), Value::Null, json!({}), Some("bad disk"))
        );
        assert_eq!(
            set_owner_data(&mut r, &id, &Params::of(&[("a", "b")]), "admin")
                .unwrap_err()
                .to_string(),
            "Cannot set workload annotation: it hasn't been acquired."
        );
        let m = mark_fixed(&mut r, &id, &Params::of(&[]), "admin", 2.0).unwrap();
        assert_eq!(m["status_name"], "Ready");
    }
}
