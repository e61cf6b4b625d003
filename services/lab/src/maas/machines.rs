//! Machine endpoints and ops with MAAS's own rules and messages: list with filters, allocate
//! (constraints, 409 texts, 400 for unknown tags/pools/zones), deploy (implicit allocation, 409 from
//! the wrong state), release (erase options, bulk), abort, mark_broken/mark_fixed, power ops, lock.

use base64::Engine;
use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::maas::form::Params;
use crate::maas::model::{Activity, Machine, Region, Status};

/// Options that are not constraints in an allocate request.
const NON_CONSTRAINTS: &[&str] = &[
    "op",
    "agent_name",
    "comment",
    "dry_run",
    "verbose",
    "bridge_all",
    "bridge_type",
    "bridge_stp",
    "bridge_fd",
];

fn not_found() -> Error {
    Error::NotFound {
        resource: "Machine".into(),
        name: String::new(),
    }
}

fn machine<'a>(r: &'a mut Region, id: &str) -> Result<&'a mut Machine> {
    r.machine_mut(id).ok_or_else(not_found)
}

/// `GET machines/` with MAAS's filters.
pub fn list(r: &Region, p: &Params) -> Result<Value> {
    let statuses: Vec<Status> = p
        .all("status")
        .iter()
        .map(|s| {
            Status::from_constant(s).ok_or_else(|| {
                Error::Validation(json!({"status": [format!("Select a valid choice. {s} is not one of the available choices.")]}))
            })
        })
        .collect::<Result<_>>()?;
    let hostnames = p.all("hostname");
    let ids: Vec<String> = p.all("id").into_iter().chain(p.all("system_id")).collect();
    let tags = p.all("tags");
    let not_tags = p.all("not_tags");
    let zones = p.all("zone");
    let pools = p.all("pool");
    let owners = p.all("owner");
    let agents = p.all("agent_name");
    let items: Vec<Value> = r
        .machines
        .iter()
        .filter(|m| statuses.is_empty() || statuses.contains(&m.status))
        .filter(|m| hostnames.is_empty() || hostnames.contains(&m.hostname))
        .filter(|m| ids.is_empty() || ids.contains(&m.system_id))
        .filter(|m| tags.iter().all(|t| m.tags.contains(t)))
        .filter(|m| !not_tags.iter().any(|t| m.tags.contains(t)))
        .filter(|m| zones.is_empty() || zones.contains(&m.zone))
        .filter(|m| pools.is_empty() || pools.contains(&m.pool))
        .filter(|m| owners.is_empty() || m.owner.as_ref().is_some_and(|o| owners.contains(o)))
        .filter(|m| agents.is_empty() || agents.contains(&m.agent_name))
        .map(|m| r.machine_json(m))
        .collect();
    Ok(Value::Array(items))
}

fn python_repr(p: &Params) -> (String, String) {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in &p.0 {
        if !NON_CONSTRAINTS.contains(&k.as_str()) && !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let lists: Vec<String> = keys
        .iter()
        .map(|k| {
            let vals: Vec<String> =
                p.0.iter()
                    .filter(|(x, _)| x == k)
                    .map(|(_, v)| format!("'{v}'"))
                    .collect();
            format!("('{k}', [{}])", vals.join(", "))
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    let resolved: Vec<String> = sorted
        .iter()
        .map(|k| format!("{k}={}", p.all(k).join(",")))
        .collect();
    (format!("[{}]", lists.join(", ")), resolved.join(" "))
}

/// `POST machines/?op=allocate`.
pub fn allocate(r: &mut Region, p: &Params, user: &str) -> Result<Value> {
    let tags = p.all("tags");
    let unknown: Vec<String> = tags
        .iter()
        .filter(|t| !r.tags.iter().any(|x| &x.name == *t))
        .map(|t| format!("'{t}'"))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Validation(
            json!({"tags": [format!("No such tag(s): {}.", unknown.join(", "))]}),
        ));
    }
    if let Some(pool) = p
        .get("pool")
        .filter(|x| !r.pools.iter().any(|y| y.name == *x))
    {
        return Err(Error::Validation(
            json!({"pool": [format!("No such pool: '{pool}'.")]}),
        ));
    }
    if let Some(zone) = p
        .get("zone")
        .filter(|x| !r.zones.iter().any(|y| y.name == *x))
    {
        return Err(Error::Validation(
            json!({"zone": [format!("No such zone: '{zone}'.")]}),
        ));
    }
    let not_tags = p.all("not_tags");
    let not_in_zone: Vec<String> = p
        .all("not_in_zone")
        .into_iter()
        .chain(p.all("not_in_zones"))
        .collect();
    let not_in_pool = p.all("not_in_pool");
    let num = |k: &str| -> Result<Option<f64>> {
        match p.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::Validation(json!({k: ["Enter a number."]}))),
        }
    };
    let (cpu, mem) = (num("cpu_count")?, num("mem")?);
    let name = p.get("name");
    let system_id = p.get("system_id");
    let arches = p.all("arch");
    let domain = r.settings.domain.clone();
    let pick = r.machines.iter().position(|m| {
        m.status == Status::Ready
            && !m.locked
            && name.is_none_or(|n| n == m.hostname || n == format!("{}.{}", m.hostname, domain))
            && system_id.is_none_or(|s| s == m.system_id)
            && tags.iter().all(|t| m.tags.contains(t))
            && !not_tags.iter().any(|t| m.tags.contains(t))
            && p.get("zone").is_none_or(|z| z == m.zone)
            && !not_in_zone.contains(&m.zone)
            && p.get("pool").is_none_or(|x| x == m.pool)
            && !not_in_pool.contains(&m.pool)
            && cpu.is_none_or(|c| f64::from(m.cpu_count) >= c)
            && mem.is_none_or(|x| m.memory as f64 >= x)
            && (arches.is_empty() || arches.iter().any(|a| a == "amd64" || a == "amd64/generic"))
    });
    let Some(i) = pick else {
        let (repr, resolved) = python_repr(p);
        let msg = if let Some(s) = system_id {
            format!("No machine with system ID {s} available.")
        } else if resolved.is_empty() {
            "No machine available.".to_string()
        } else {
            format!("No available machine matches constraints: {repr} (resolved to \"{resolved}\")")
        };
        return Err(Error::StateConflict(msg));
    };
    if !p.flag("dry_run") {
        let m = &mut r.machines[i];
        m.status = Status::Allocated;
        m.status_message = "Allocated".into();
        m.owner = Some(user.to_string());
        m.agent_name = p.get("agent_name").unwrap_or("").to_string();
    }
    let mut out = r.machine_json(&r.machines[i]);
    out["constraints_by_type"] = json!({});
    Ok(out)
}

/// A duration drawn from a lognormal distribution around `median` (`sigma` 0 means exact): real
/// deployments vary, median ~12 min with a long tail.
pub fn jittered(median: f64, sigma: f64) -> f64 {
    if sigma <= 0.0 {
        return median;
    }
    // Box-Muller: a standard normal from two uniforms.
    let (u1, u2) = (rand::random::<f64>().max(1e-12), rand::random::<f64>());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * z).exp()
}

/// `POST machines/{id}/?op=deploy`.
pub fn deploy(
    r: &mut Region,
    id: &str,
    p: &Params,
    user: &str,
    now: SimTime,
    fault: Option<bool>,
) -> Result<Value> {
    let (r_deploy_secs, r_jitter) = (r.settings.deploy_secs, r.settings.deploy_jitter);
    let m = machine(r, id)?;
    if m.status == Status::Ready {
        m.status = Status::Allocated;
        m.owner = Some(user.to_string());
    }
    if m.status != Status::Allocated {
        return Err(Error::StateConflict(format!(
            "Can't deploy a machine that is in the '{}' state",
            m.status.label()
        )));
    }
    let user_data = p.get("user_data").unwrap_or("");
    let compact: String = user_data.chars().filter(|c| !c.is_whitespace()).collect();
    m.user_data = match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) if user_data.is_empty() => String::new(),
        Err(_) => {
            return Err(Error::Validation(
                json!({"user_data": ["Invalid base64 user data."]}),
            ));
        }
    };
    let series = p.get("distro_series").unwrap_or("jammy");
    let (osystem, series) = match series.split_once('/') {
        Some((os, s)) => (os.to_string(), s.to_string()),
        None => (
            p.get("osystem").unwrap_or("ubuntu").to_string(),
            series.to_string(),
        ),
    };
    m.osystem = osystem;
    m.distro_series = series;
    m.hwe_kernel = p.get("hwe_kernel").unwrap_or("").to_string();
    if let Some(agent) = p.get("agent_name") {
        m.agent_name = agent.to_string();
    }
    m.status = Status::Deploying;
    m.status_message = "Deploying".into();
    m.error_description.clear();
    m.power_state = "on".into();
    m.deployed_at = None;
    m.joined = false;
    m.activity = Activity::Deploying {
        started: now,
        secs: jittered(r_deploy_secs, r_jitter),
        fail: fault == Some(false),
        hang: fault == Some(true),
    };
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// `POST machines/{id}/?op=release`.
pub fn release(r: &mut Region, id: &str, p: &Params, now: SimTime) -> Result<Value> {
    let quick = r.settings.quick_erase_secs;
    let full = r.settings.erase_secs;
    let m = machine(r, id)?;
    if matches!(m.status, Status::Releasing | Status::Ready) {
        let m = m.clone();
        return Ok(r.machine_json(&m));
    }
    if !m.status.releasable() {
        return Err(Error::StateConflict(format!(
            "Machine cannot be released in its current state ('{}').",
            m.status.label()
        )));
    }
    let erase = p.flag("erase") || p.flag("secure_erase") || p.flag("quick_erase");
    let erase_secs = match (erase, p.flag("quick_erase")) {
        (false, _) => 0.0,
        (true, true) => quick,
        (true, false) => full,
    };
    start_release(m, now, erase_secs);
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// Put a machine into Releasing.
pub fn start_release(m: &mut Machine, now: SimTime, erase_secs: f64) {
    m.status = Status::Releasing;
    m.status_message = "Releasing".into();
    m.activity = Activity::Releasing {
        started: now,
        erase_secs,
        hang: false,
    };
}

/// `POST machines/?op=release` with repeated `machines=<id>`.
pub fn release_many(r: &mut Region, p: &Params, now: SimTime) -> Result<Value> {
    let ids = p.all("machines");
    let missing: Vec<&String> = ids.iter().filter(|id| r.machine(id).is_none()).collect();
    if !missing.is_empty() {
        return Err(Error::Validation(
            json!({"machines": [format!("Unknown machine(s): {}.", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]}),
        ));
    }
    let bad: Vec<String> = ids
        .iter()
        .filter_map(|id| r.machine(id))
        .filter(|m| {
            !m.status.releasable() && !matches!(m.status, Status::Ready | Status::Releasing)
        })
        .map(|m| format!("{} ('{}')", m.system_id, m.status.label()))
        .collect();
    if !bad.is_empty() {
        return Err(Error::StateConflict(format!(
            "Machine(s) cannot be released in their current state: {}.",
            bad.join(", ")
        )));
    }
    for id in &ids {
        release(r, id, &Params::default(), now)?;
    }
    Ok(json!(ids))
}

/// `POST machines/{id}/?op=abort`.
pub fn abort(r: &mut Region, id: &str) -> Result<Value> {
    let m = machine(r, id)?;
    match m.status {
        Status::Deploying => {
            m.status = Status::Allocated;
            m.status_message = "Aborted deployment".into();
            m.power_state = "off".into();
            m.activity = Activity::Idle;
        }
        Status::DiskErasing => {
            m.status = Status::FailedDiskErasing;
            m.status_message = "Aborted disk erasing".into();
            m.power_state = "off".into();
            m.activity = Activity::Idle;
        }
        s => {
            return Err(Error::StateConflict(format!(
                "Cannot abort in current state: node {} is in state {}.",
                m.system_id,
                s.label()
            )));
        }
    }
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// `POST machines/{id}/?op=mark_broken` (owner only).
pub fn mark_broken(r: &mut Region, id: &str, p: &Params, user: &str) -> Result<Value> {
    let m = machine(r, id)?;
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
    m.previous_status = m.status;
    if m.status.releasable() {
        m.owner = None;
    }
    m.status = Status::Broken;
    m.status_message = if comment.is_empty() {
        "Marking node broken".into()
    } else {
        format!("Marking node broken - {comment}")
    };
    m.error_description = comment;
    m.activity = Activity::Idle;
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// `POST machines/{id}/?op=mark_fixed`.
pub fn mark_fixed(r: &mut Region, id: &str) -> Result<Value> {
    let m = machine(r, id)?;
    if m.status != Status::Broken {
        return Err(Error::StateConflict(
            "Can't mark a non-broken node as 'Ready'.".into(),
        ));
    }
    m.status = if m.previous_status == Status::Deployed {
        Status::Deployed
    } else {
        Status::Ready
    };
    m.status_message = m.status.label().into();
    m.error_description.clear();
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// Power ops: `power_on`, `power_off`, `query_power_state`.
pub fn power(r: &mut Region, id: &str, op: &str) -> Result<Value> {
    let m = machine(r, id)?;
    match op {
        "power_on" => {
            if m.owner.is_none() {
                return Err(Error::StateConflict(
                    "Can't start node: it hasn't been allocated.".into(),
                ));
            }
            m.power_state = "on".into();
        }
        "power_off" => m.power_state = "off".into(),
        _ => return Ok(json!({"state": m.power_state})),
    }
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// `lock` / `unlock`.
pub fn lock(r: &mut Region, id: &str, lock: bool) -> Result<Value> {
    let m = machine(r, id)?;
    if m.locked == lock {
        return Err(Error::StateConflict(if lock {
            "Machine is already locked".into()
        } else {
            "Machine is not locked".into()
        }));
    }
    m.locked = lock;
    let m = m.clone();
    Ok(r.machine_json(&m))
}

/// `PUT machines/{id}/`.
pub fn update(r: &mut Region, id: &str, p: &Params) -> Result<Value> {
    let pools: Vec<String> = r.pools.iter().map(|x| x.name.clone()).collect();
    let zones: Vec<String> = r.zones.iter().map(|x| x.name.clone()).collect();
    let m = machine(r, id)?;
    if let Some(h) = p.get("hostname") {
        m.hostname = h.to_string();
    }
    if let Some(s) = p.get("swap_size") {
        m.swap_size = Some(
            s.parse()
                .map_err(|_| Error::Validation(json!({"swap_size": ["Enter a whole number."]})))?,
        );
    }
    if let Some(pool) = p.get("pool") {
        if !pools.iter().any(|x| x == pool) {
            return Err(Error::Validation(
                json!({"pool": ["Select a valid choice. That choice is not one of the available choices."]}),
            ));
        }
        m.pool = pool.to_string();
    }
    if let Some(zone) = p.get("zone") {
        if !zones.iter().any(|x| x == zone) {
            return Err(Error::Validation(
                json!({"zone": ["Select a valid choice. That choice is not one of the available choices."]}),
            ));
        }
        m.zone = zone.to_string();
    }
    let m = m.clone();
    Ok(r.machine_json(&m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    fn region() -> Region {
        Region::new(&scenario::reference_architecture().maas)
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn allocate_rules_and_messages() {
        let mut r = region();
        let m = allocate(
            &mut r,
            &params(&[("tags", "vmo-worker"), ("pool", "spare")]),
            "admin",
        )
        .unwrap();
        assert_eq!(m["status_name"], "Allocated");
        assert_eq!(m["owner"], "admin");
        let err = allocate(
            &mut r,
            &params(&[("op", "allocate"), ("pool", "spare"), ("tags", "gpu")]),
            "admin",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "No available machine matches constraints: [('pool', ['spare']), ('tags', ['gpu'])] (resolved to \"pool=spare tags=gpu\")"
        );
        assert_eq!(err.status_code(), 409);
        let err = allocate(&mut r, &params(&[("tags", "nope")]), "admin").unwrap_err();
        assert!(matches!(&err, Error::Validation(v) if v["tags"][0] == "No such tag(s): 'nope'."));
        assert!(
            matches!(allocate(&mut r, &params(&[("pool", "x")]), "admin").unwrap_err(), Error::Validation(v) if v["pool"][0] == "No such pool: 'x'.")
        );
        assert_eq!(
            allocate(&mut r, &params(&[("system_id", "zzzzzz")]), "admin")
                .unwrap_err()
                .to_string(),
            "No machine with system ID zzzzzz available."
        );
        for _ in 0..3 {
            allocate(&mut r, &params(&[]), "admin").unwrap();
        }
        assert_eq!(
            allocate(&mut r, &params(&[]), "admin")
                .unwrap_err()
                .to_string(),
            "No machine available."
        );
    }

    #[test]
    fn deploy_durations_spread_around_the_median() {
        assert_eq!(jittered(720.0, 0.0), 720.0);
        let mut xs: Vec<f64> = (0..2001).map(|_| jittered(720.0, 0.25)).collect();
        xs.sort_by(f64::total_cmp);
        assert!((xs[1000] - 720.0).abs() < 72.0, "median {}", xs[1000]);
        assert!(xs[1900] > 900.0 && xs[1900] < 1400.0, "p95 {}", xs[1900]);
    }

    #[test]
    fn deploy_release_abort_transitions() {
        let mut r = region();
        let id = r
            .machines
            .iter()
            .find(|m| m.status == Status::Ready)
            .unwrap()
            .system_id
            .clone();
        let m = deploy(
            &mut r,
            &id,
            &params(&[
                ("distro_series", "jammy"),
                ("user_data", "I2Nsb3VkLWNvbmZpZw=="),
            ]),
            "admin",
            0.0,
            None,
        )
        .unwrap();
        assert_eq!(
            (m["status"].as_u64(), m["status_name"].as_str()),
            (Some(9), Some("Deploying"))
        );
        assert_eq!(r.machine(&id).unwrap().user_data, "#cloud-config");
        assert_eq!(
            deploy(&mut r, &id, &params(&[]), "admin", 0.0, None)
                .unwrap_err()
                .to_string(),
            "Can't deploy a machine that is in the 'Deploying' state"
        );
        assert_eq!(abort(&mut r, &id).unwrap()["status_name"], "Allocated");
        assert!(
            abort(&mut r, &id)
                .unwrap_err()
                .to_string()
                .starts_with("Cannot abort in current state: node")
        );
        r.machine_mut(&id).unwrap().status = Status::FailedDeployment;
        assert_eq!(
            deploy(&mut r, &id, &params(&[]), "admin", 0.0, None)
                .unwrap_err()
                .to_string(),
            "Can't deploy a machine that is in the 'Failed deployment' state"
        );
        assert_eq!(
            release(
                &mut r,
                &id,
                &params(&[("quick_erase", "true"), ("erase", "true")]),
                0.0
            )
            .unwrap()["status_name"],
            "Releasing"
        );
        r.machine_mut(&id).unwrap().status = Status::New;
        assert_eq!(
            release(&mut r, &id, &params(&[]), 0.0)
                .unwrap_err()
                .to_string(),
            "Machine cannot be released in its current state ('New')."
        );
        assert_eq!(
            mark_fixed(&mut r, &id).unwrap_err().to_string(),
            "Can't mark a non-broken node as 'Ready'."
        );
        r.machine_mut(&id).unwrap().owner = None;
        assert_eq!(
            power(&mut r, &id, "power_on").unwrap_err().to_string(),
            "Can't start node: it hasn't been allocated."
        );
    }
}
