//! The machine collection with MAAS's own rules and messages: `GET machines/` with the
//! `ReadNodesForm` filters, allocate with the `AcquireNodeForm` constraints (cheapest match
//! first, 409 texts, 400 for unknown tags/pools/zones and unknown constraints), bulk release,
//! and `PUT machines/{id}/`. Ops on one machine are in `ops.rs`.

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::maas::events::kinds;
use crate::maas::form::{Errors, Params};
use crate::maas::model::{Machine, Region, Status};
use crate::maas::ops;

/// `AcquireNodeForm`'s fields: everything else except `IGNORED` is "No such constraint.".
const ACQUIRE_FIELDS: &[&str] = &[
    "arch",
    "not_arch",
    "tags",
    "not_tags",
    "fabrics",
    "not_fabrics",
    "fabric_classes",
    "not_fabric_classes",
    "subnets",
    "not_subnets",
    "link_speed",
    "vlans",
    "not_vlans",
    "zone",
    "not_in_zone",
    "pool",
    "not_in_pool",
    "storage",
    "interfaces",
    "devices",
    "cpu_count",
    "cpu_speed",
    "mem",
    "pod",
    "not_pod",
    "pod_type",
    "not_pod_type",
    "owner",
    "not_owner",
    "power_state",
    "not_power_state",
    "name",
    "system_id",
];

/// Options of an allocate request that are not constraints (`IGNORED_FIELDS`).
const IGNORED: &[&str] = &[
    "comment",
    "bridge_all",
    "bridge_type",
    "bridge_stp",
    "bridge_fd",
    "dry_run",
    "verbose",
    "op",
    "agent_name",
];

/// Numeric constraints (floats: they read back as `cpu_count=16.0`).
const NUMERIC: &[(&str, &str)] = &[
    ("cpu_count", "Invalid CPU count: number required."),
    ("cpu_speed", "Invalid CPU speed: number required."),
    ("mem", "Invalid memory: number of MiB required."),
    ("link_speed", "Invalid link speed: number required."),
];

const POWER_STATES: &[&str] = &["on", "off", "unknown", "error"];

fn invalid_choice(v: &str) -> String {
    format!("Select a valid choice. {v} is not one of the available choices.")
}

/// Check names against the region's tags, zones, pools and users, with MAAS's texts.
fn check_names(r: &Region, p: &Params, user: &str, errors: &mut Errors) {
    let tags = p.all("tags");
    let unknown: Vec<String> = tags
        .iter()
        .filter(|t| !r.tags.iter().any(|x| &x.name == *t))
        .map(|t| format!("'{t}'"))
        .collect();
    if !unknown.is_empty() {
        errors.add("tags", format!("No such tag(s): {}.", unknown.join(", ")));
    }
    for (field, what, names) in [
        (
            "zone",
            "zone",
            r.zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
        ),
        (
            "not_in_zone",
            "zone",
            r.zones.iter().map(|z| z.name.as_str()).collect(),
        ),
        (
            "pool",
            "pool",
            r.pools.iter().map(|x| x.name.as_str()).collect(),
        ),
        (
            "not_in_pool",
            "pool",
            r.pools.iter().map(|x| x.name.as_str()).collect(),
        ),
    ] {
        let mut missing: Vec<String> = p
            .all(field)
            .into_iter()
            .filter(|v| !names.contains(&v.as_str()))
            .collect();
        missing.sort();
        missing.dedup();
        match missing.as_slice() {
            [] => {}
            [one] => errors.add(field, format!("No such {what}: '{one}'.")),
            many => errors.add(field, format!("No such {what}(s): {}.", many.join(", "))),
        }
    }
    if let Some(owner) = p.all("owner").into_iter().find(|o| o != user) {
        errors.add("owner", format!("No such owner: '{owner}'."));
    }
    for field in ["power_state", "not_power_state"] {
        for v in p.all(field) {
            if !POWER_STATES.contains(&v.as_str()) {
                errors.add(field, invalid_choice(&v));
            }
        }
    }
}

fn numbers(p: &Params, errors: &mut Errors) -> Vec<(&'static str, Option<f64>)> {
    NUMERIC
        .iter()
        .map(|(field, msg)| {
            let v = p.get(field).filter(|v| !v.is_empty());
            let parsed = v.and_then(|v| v.trim().parse::<f64>().ok());
            if v.is_some() && parsed.is_none() {
                errors.add(field, (*msg).to_string());
            }
            (*field, parsed)
        })
        .collect()
}

fn arch_ok(arches: &[String]) -> bool {
    arches.iter().all(|a| a == "amd64" || a == "amd64/generic")
}

/// The numeric constraints by field (`None` where absent).
struct Numbers(Vec<(&'static str, Option<f64>)>);

impl Numbers {
    fn get(&self, field: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .and_then(|(_, v)| *v)
    }
}

/// The checks filtering and allocation end with: the numbers and `arch`, then every form error
/// gathered so far answered at once.
fn finish_checks(p: &Params, mut errors: Errors) -> Result<Numbers> {
    let nums = numbers(p, &mut errors);
    if !arch_ok(&p.all("arch")) {
        errors.add("arch", "Architecture not recognised.");
    }
    errors.into_result()?;
    Ok(Numbers(nums))
}

/// `GET machines/` (and `nodes/`) with MAAS's filters: `id` (also `system_id`), `hostname`,
/// `status`, `owner`, `agent_name`, `tags`, `not_tags`, `zone`, `not_in_zone`, `pool`,
/// `not_in_pool`, `power_state`, `arch`, `cpu_count`, `mem` (minimums), `domain`,
/// `mac_address` and their `not_` forms where MAAS has them.
pub fn list(r: &Region, p: &Params, user: &str) -> Result<Value> {
    Ok(Value::Array(
        select(r, p, user)?
            .into_iter()
            .map(|m| r.machine_json(m))
            .collect(),
    ))
}

/// The machines `GET machines/` with these filters returns, in id order.
pub fn select<'a>(r: &'a Region, p: &Params, user: &str) -> Result<Vec<&'a Machine>> {
    let mut errors = Errors::default();
    check_names(r, p, user, &mut errors);
    let statuses = |field: &str, errors: &mut Errors| -> Vec<Status> {
        p.all(field)
            .iter()
            .filter_map(|s| {
                let st = Status::from_constant(s);
                if st.is_none() {
                    errors.add(field, invalid_choice(s));
                }
                st
            })
            .collect()
    };
    let status = statuses("status", &mut errors);
    let not_status = statuses("not_status", &mut errors);
    let num = finish_checks(p, errors)?;
    let (cpu, mem) = (num.get("cpu_count"), num.get("mem"));
    let any = |field: &str, value: &str| {
        let vs = p.all(field);
        vs.is_empty() || vs.iter().any(|v| v == value)
    };
    let none = |field: &str, value: &str| !p.all(field).iter().any(|v| v == value);
    let ids: Vec<String> = p.all("id").into_iter().chain(p.all("system_id")).collect();
    let domain = r.settings.domain.as_str();
    Ok(r.machines
        .iter()
        .filter(|m| ids.is_empty() || ids.contains(&m.system_id))
        .filter(|m| none("not_id", &m.system_id))
        .filter(|m| any("hostname", &m.hostname) && none("not_hostname", &m.hostname))
        .filter(|m| status.is_empty() || status.contains(&m.status))
        .filter(|m| !not_status.contains(&m.status))
        .filter(|m| {
            let owner = m.owner.as_deref().unwrap_or("");
            any("owner", owner) && none("not_owner", owner)
        })
        .filter(|m| any("agent_name", &m.agent_name) && none("not_agent_name", &m.agent_name))
        .filter(|m| p.all("tags").iter().all(|t| m.tags.contains(t)))
        .filter(|m| !p.all("not_tags").iter().any(|t| m.tags.contains(t)))
        .filter(|m| any("zone", &m.zone) && none("not_in_zone", &m.zone))
        .filter(|m| any("pool", &m.pool) && none("not_in_pool", &m.pool))
        .filter(|m| any("power_state", &m.power_state) && none("not_power_state", &m.power_state))
        .filter(|_| any("domain", domain) && none("not_domain", domain))
        .filter(|m| {
            let macs = p.all("mac_address");
            macs.is_empty()
                || m.interfaces
                    .iter()
                    .any(|i| macs.iter().any(|x| x.eq_ignore_ascii_case(&i.mac)))
        })
        .filter(|m| cpu.is_none_or(|c| f64::from(m.cpu_count) >= c))
        .filter(|m| mem.is_none_or(|x| m.memory as f64 >= x))
        .collect())
}

/// Python's `str()` of a float (`16.0`, `1.5`).
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// Python's `repr()` of a string.
fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// `str(list(request.data.lists()))` without `op`: `[('pool', ['vmo']), ('tags', ['gpu'])]`.
fn request_repr(p: &Params) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for (k, _) in &p.0 {
        if k != "op" && !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    let lists: Vec<String> = keys
        .iter()
        .map(|k| {
            let vals: Vec<String> =
                p.0.iter()
                    .filter(|(x, _)| x == k)
                    .map(|(_, v)| py_repr(v))
                    .collect();
            format!("({}, [{}])", py_repr(k), vals.join(", "))
        })
        .collect();
    format!("[{}]", lists.join(", "))
}

/// `describe_constraints()`: Juju-style `name=value` of the set constraints, sorted by name.
fn describe_constraints(p: &Params) -> String {
    let mut fields: Vec<&str> = ACQUIRE_FIELDS.to_vec();
    fields.sort();
    fields
        .into_iter()
        .filter_map(|f| {
            let mut values = p.all(f);
            if values.is_empty() {
                return None;
            }
            if NUMERIC.iter().any(|(n, _)| *n == f) {
                values = values
                    .iter()
                    .filter_map(|v| v.trim().parse::<f64>().ok())
                    .map(py_float)
                    .collect();
            } else if f == "tags" {
                values.sort();
                values.dedup();
            }
            Some(format!("{f}={}", values.join(",")))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `POST machines/?op=allocate`: the cheapest Ready machine (`cpu_count + memory / 1024`) that
/// matches every constraint becomes Allocated to `user`.
pub fn allocate(r: &mut Region, p: &Params, user: &str, now: SimTime) -> Result<Value> {
    let mut errors = Errors::default();
    for (k, _) in &p.0 {
        if !ACQUIRE_FIELDS.contains(&k.as_str()) && !IGNORED.contains(&k.as_str()) && !errors.has(k)
        {
            errors.add(k, "No such constraint.");
        }
    }
    check_names(r, p, user, &mut errors);
    let num = finish_checks(p, errors)?;
    let (cpu, mem, cpu_speed) = (num.get("cpu_count"), num.get("mem"), num.get("cpu_speed"));
    let names = p.all("name");
    let system_ids = p.all("system_id");
    let domain = r.settings.domain.clone();
    let any = |field: &str, value: &str| {
        let vs = p.all(field);
        vs.is_empty() || vs.iter().any(|v| v == value)
    };
    let none = |field: &str, value: &str| !p.all(field).iter().any(|v| v == value);
    let mut candidates: Vec<usize> = (0..r.machines.len())
        .filter(|&i| {
            let m = &r.machines[i];
            m.status == Status::Ready
                && m.owner.is_none()
                && !m.locked
                && (names.is_empty()
                    || names
                        .iter()
                        .any(|n| *n == m.hostname || *n == format!("{}.{domain}", m.hostname)))
                && (system_ids.is_empty() || system_ids.contains(&m.system_id))
                && p.all("tags").iter().all(|t| m.tags.contains(t))
                && !p.all("not_tags").iter().any(|t| m.tags.contains(t))
                && any("zone", &m.zone)
                && none("not_in_zone", &m.zone)
                && any("pool", &m.pool)
                && none("not_in_pool", &m.pool)
                && any("power_state", &m.power_state)
                && none("not_power_state", &m.power_state)
                && cpu.is_none_or(|c| f64::from(m.cpu_count) >= c)
                && mem.is_none_or(|x| m.memory as f64 >= x)
                && cpu_speed.is_none_or(|x| x <= 2600.0)
        })
        .collect();
    let cost = |m: &Machine| f64::from(m.cpu_count) + m.memory as f64 / 1024.0;
    candidates.sort_by(|a, b| cost(&r.machines[*a]).total_cmp(&cost(&r.machines[*b])));
    let Some(&i) = candidates.first() else {
        let described = describe_constraints(p);
        let msg = if let Some(s) = system_ids.first() {
            format!("No machine with system ID {s} available.")
        } else if described.is_empty() {
            "No machine available.".to_string()
        } else {
            format!(
                "No available machine matches constraints: {} (resolved to \"{described}\")",
                request_repr(p)
            )
        };
        return Err(Error::StateConflict(msg));
    };
    if !p.flag("dry_run") {
        r.request(i, kinds::REQUEST_NODE_ACQUIRE, user, p.get("comment"), now);
        let m = &mut r.machines[i];
        m.owner = Some(user.to_string());
        m.agent_name = p.get("agent_name").unwrap_or("").to_string();
        r.set_status(i, Status::Allocated, now);
        let audit = format!("Acquired '{}'.", r.machines[i].hostname);
        r.event(i, kinds::NODE, &audit, Some(user), now);
    }
    let mut out = r.machine_json(&r.machines[i]);
    out["constraints_by_type"] = json!({});
    Ok(out)
}

/// `POST machines/?op=release` with repeated `machines=<id>`: all or nothing.
pub fn release_many(
    r: &mut Region,
    p: &Params,
    user: &str,
    now: SimTime,
    faults: ops::ReleaseFaults<'_>,
) -> Result<Value> {
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
    let options = Params(
        p.0.iter()
            .filter(|(k, _)| k != "machines")
            .cloned()
            .collect(),
    );
    for id in &ids {
        ops::release(r, id, &options, user, now, faults)?;
    }
    Ok(json!(ids))
}

/// `PUT machines/{id}/`: hostname, swap_size, pool, zone.
pub fn update(r: &mut Region, id: &str, p: &Params) -> Result<Value> {
    let pools: Vec<String> = r.pools.iter().map(|x| x.name.clone()).collect();
    let zones: Vec<String> = r.zones.iter().map(|x| x.name.clone()).collect();
    let i = r.index(id)?;
    let mut errors = Errors::default();
    let swap = p.get("swap_size").map(|s| s.trim().parse::<u64>());
    if let Some(Err(_)) = swap {
        errors.add("swap_size", "Enter a whole number.");
    }
    for (field, names) in [("pool", &pools), ("zone", &zones)] {
        if p.get(field).is_some_and(|v| !names.iter().any(|x| x == v)) {
            errors.add(
                field,
                "Select a valid choice. That choice is not one of the available choices.",
            );
        }
    }
    if p.get("hostname").is_some_and(|h| h.is_empty()) {
        errors.add("hostname", "This field cannot be blank.");
    }
    errors.into_result()?;
    let m = &mut r.machines[i];
    if let Some(h) = p.get("hostname") {
        m.hostname = h.to_string();
    }
    if let Some(Ok(s)) = swap {
        m.swap_size = Some(s);
    }
    if let Some(pool) = p.get("pool") {
        m.pool = pool.to_string();
    }
    if let Some(zone) = p.get("zone") {
        m.zone = zone.to_string();
    }
    Ok(r.machine_json(&r.machines[i]))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `POST machines/?op=allocate` as admin at time zero, with literal parameters.
    fn allocate_with(r: &mut Region, pairs: &[(&str, &str)]) -> Result<Value> {
        allocate(r, &Params::of(pairs), "admin", 0.0)
    }

    #[test]
    fn allocate_rules_and_messages() {
        let mut r = Region::reference();
        let m = allocate_with(
            &mut r,
            &[
                ("tags", "vmo-worker"),
                ("pool", "spare"),
                ("agent_name", "drover"),
            ],
        )
        .unwrap();
        assert_eq!(m["status_name"], "Allocated");
        assert_eq!(m["owner"], "admin");
        let err = allocate_with(
            &mut r,
            &[("op", "allocate"), ("pool", "spare"), ("tags", "gpu")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "No available machine matches constraints: [('pool', ['spare']), ('tags', ['gpu'])] (resolved to \"pool=spare tags=gpu\")"
        );
        assert_eq!(err.status_code(), 409);
        let err = allocate_with(
            &mut r,
            &[("cpu_count", "128"), ("mem", "4096"), ("agent_name", "a")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "No available machine matches constraints: [('cpu_count', ['128']), ('mem', ['4096']), ('agent_name', ['a'])] (resolved to \"cpu_count=128.0 mem=4096.0\")"
        );
        let err = allocate_with(&mut r, &[("tags", "nope")]).unwrap_err();
        assert!(matches!(&err, Error::Validation(v) if v["tags"][0] == "No such tag(s): 'nope'."));
        assert!(
            matches!(allocate_with(&mut r, &[("pool", "x")]).unwrap_err(), Error::Validation(v) if v["pool"][0] == "No such pool: 'x'.")
        );
        assert!(
            matches!(allocate_with(&mut r, &[("zone", "x")]).unwrap_err(), Error::Validation(v) if v["zone"][0] == "No such zone: 'x'.")
        );
        assert!(
            matches!(allocate_with(&mut r, &[("memory", "1")]).unwrap_err(), Error::Validation(v) if v == json!({"memory": ["No such constraint."]}))
        );
        assert!(
            matches!(allocate_with(&mut r, &[("cpu_count", "many")]).unwrap_err(), Error::Validation(v) if v["cpu_count"][0] == "Invalid CPU count: number required.")
        );
        assert_eq!(
            allocate_with(&mut r, &[("system_id", "zzzzzz")])
                .unwrap_err()
                .to_string(),
            "No machine with system ID zzzzzz available."
        );
        for _ in 0..3 {
            allocate_with(&mut r, &[]).unwrap();
        }
        assert_eq!(
            allocate_with(&mut r, &[("comment", "x")])
                .unwrap_err()
                .to_string(),
            "No machine available."
        );
    }

    #[test]
    fn list_filters_and_validation() {
        let mut r = Region::reference();
        let m = allocate_with(&mut r, &[("pool", "spare"), ("agent_name", "drover")]).unwrap();
        let sid = m["system_id"].as_str().unwrap().to_string();
        let count = |r: &Region, pairs: &[(&str, &str)]| {
            select(r, &Params::of(pairs), "admin").unwrap().len()
        };
        assert_eq!(count(&r, &[]), 15);
        assert_eq!(count(&r, &[("agent_name", "drover")]), 1);
        assert_eq!(count(&r, &[("id", &sid)]), 1);
        assert_eq!(count(&r, &[("system_id", &sid)]), 1);
        assert_eq!(count(&r, &[("status", "allocated")]), 1);
        assert_eq!(count(&r, &[("status", "ready"), ("pool", "spare")]), 3);
        assert_eq!(count(&r, &[("pool", "spare"), ("not_id", &sid)]), 3);
        assert_eq!(
            count(
                &r,
                &[("tags", "vmo-worker"), ("zone", "az2"), ("pool", "spare")]
            ),
            2
        );
        assert_eq!(
            count(&r, &[("hostname", "spare-01"), ("hostname", "spare-02")]),
            2
        );
        assert_eq!(count(&r, &[("power_state", "on")]), 11);
        let err = |pairs: &[(&str, &str)]| match select(&r, &Params::of(pairs), "admin") {
            Err(Error::Validation(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(&[("status", "bogus"), ("zone", "nowhere")]),
            json!({"zone": ["No such zone: 'nowhere'."], "status": ["Select a valid choice. bogus is not one of the available choices."]})
        );
        assert_eq!(
            err(&[("owner", "mallory")]),
            json!({"owner": ["No such owner: 'mallory'."]})
        );
    }

    #[test]
    fn python_reprs() {
        assert_eq!(py_float(16.0), "16.0");
        assert_eq!(py_float(1.5), "1.5");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a"), "'a'");
    }

    #[test]
    fn deploy_durations_spread_around_the_median() {
        assert_eq!(jittered(720.0, 0.0), 720.0);
        let mut xs: Vec<f64> = (0..2001).map(|_| jittered(720.0, 0.25)).collect();
        xs.sort_by(f64::total_cmp);
        assert!((xs[1000] - 720.0).abs() < 72.0, "median {}", xs[1000]);
        assert!(xs[1900] > 900.0 && xs[1900] < 1400.0, "p95 {}", xs[1900]);
    }
}
