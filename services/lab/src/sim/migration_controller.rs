//! KubeVirt's migration controller, with virt-handler's side of a migration. Each pass takes new
//! VirtualMachineInstanceMigrations in (failing at once those whose VMI is missing, already
//! migrating, not Running or not live-migratable), admits them under the parallelism limits
//! (`migration::admit`), places target pods (`placement::choose`), advances every migration as far
//! as the simulated clock allows (`migration::advance`), and writes phases, `migrationState`, pods,
//! Events and the audit's completion record back. It aborts migrations whose object was deleted,
//! keeps at most five finished migrations per VMI and records the concurrency counters in the
//! audit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::kube::resources::keys;
use crate::sim::memory::{Entry, Key, SimState};
use crate::sim::migration::{self, Phase, Run, Step};
use crate::sim::{placement, vms};
use crate::state::Shared;

/// One pass: take new migrations in, admit, place and advance them, forget finished ones.
pub fn reconcile(shared: &Shared, st: &mut SimState, now: SimTime) {
    let settings = &shared.scenario.migrations;
    let wall = shared.clock.rfc3339();
    let (vmims, _) = shared.store.list_shared(keys::VMIMS, None, |_| true);
    let present: HashSet<Key> = vmims
        .iter()
        .map(|m| {
            (
                s(m, "/metadata/namespace").to_string(),
                s(m, "/metadata/name").to_string(),
            )
        })
        .collect();

    // Deleted migrations: abort what was in flight.
    let gone: Vec<Key> = st
        .runs
        .keys()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(e) = st.runs.remove(&key)
            && !e.run.phase.is_final()
        {
            abort(shared, &key.0, &e, &wall);
        }
    }

    // New migrations: validate and queue.
    for m in &vmims {
        let key = (
            s(m, "/metadata/namespace").to_string(),
            s(m, "/metadata/name").to_string(),
        );
        if st.runs.contains_key(&key) {
            continue;
        }
        let phase = s(m, "/status/phase");
        if Phase::parse(phase).is_some_and(Phase::is_final) {
            continue;
        }
        let vmi_name = s(m, "/spec/vmiName").to_string();
        let vmi = shared.store.get(keys::VMIS, &key.0, &vmi_name);
        let busy_vmi = st
            .runs
            .iter()
            .any(|((n, _), e)| *n == key.0 && e.vmi == vmi_name && !e.run.phase.is_final());
        let failure = match &vmi {
            None => Some(format!("VMI {vmi_name} does not exist")),
            Some(_) if busy_vmi => Some(
                "VMI is not eligible for migration because another migration job is in progress."
                    .to_string(),
            ),
            Some(v) if s(v, "/status/phase") != "Running" => {
                Some(format!("VMI {vmi_name} is not running"))
            }
            Some(v) if vms::condition(v, "LiveMigratable") == Some(false) => {
                Some(format!("VMI {vmi_name} is not live-migratable"))
            }
            _ => None,
        };
        let vmi = vmi.unwrap_or(Value::Null);
        let priority =
            migration::priority_rank(m.pointer("/spec/priority").and_then(Value::as_str).or_else(
                || {
                    (!s(m, "/metadata/annotations/kubevirt.io~1evacuationMigration").is_empty())
                        .then_some("system-critical")
                },
            ));
        let (cpu, memory) = vms::vmi_demand(&vmi);
        let mut e = Entry {
            run: Run {
                phase: Phase::Pending,
                since: now,
                created: now,
                priority,
                source: s(&vmi, "/status/nodeName").to_string(),
                target: None,
                memory,
                transfer_secs: 0.0,
                fail_in: shared.faults.migration_failure(&key.0, &vmi_name),
            },
            vmi: vmi_name.clone(),
            uid: s(m, "/metadata/uid").to_string(),
            source_pod: String::new(),
            target_pod: None,
            no_target: false,
            cpu,
            transitions: vec![json!({"phase": "Pending", "phaseTransitionTimestamp": wall})],
        };
        st.evacuation_retry
            .remove(&(key.0.clone(), vmi_name.clone()));
        if let Some(reason) = failure {
            e.run.phase = Phase::Failed;
            e.transitions
                .push(json!({"phase": "Failed", "phaseTransitionTimestamp": wall}));
            status_patch(shared, &key.0, &key.1, &e, |m| {
                m["status"]["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "FailedMigration", "message": reason}]);
            });
            event(
                shared,
                &key.0,
                &key.1,
                &e.uid,
                "Warning",
                "FailedMigration",
                &reason,
            );
            st.runs.insert(key, e);
            continue;
        }
        let (pods, _) = shared.store.list(keys::PODS, Some(&key.0), |p| {
            s(p, "/metadata/labels/kubevirt.io~1created-by") == s(&vmi, "/metadata/uid")
                && s(p, "/spec/nodeName") == s(&vmi, "/status/nodeName")
        });
        e.source_pod = pods
            .first()
            .map(|p| s(p, "/metadata/name").to_string())
            .unwrap_or_default();
        status_patch(shared, &key.0, &key.1, &e, |_| {});
        st.runs.insert(key, e);
    }

    // Admission under the parallelism limits.
    let admitted = {
        let ids: Vec<(Key, &Run)> = st.runs.iter().map(|(k, e)| (k.clone(), &e.run)).collect();
        migration::admit(&ids, settings)
    };
    for key in admitted {
        if let Some(e) = st.runs.get_mut(&key) {
            e.run.phase = Phase::Scheduling;
            e.run.since = now;
            e.no_target = shared.faults.take_unschedulable_target();
            e.transitions
                .push(json!({"phase": "Scheduling", "phaseTransitionTimestamp": wall}));
            let snapshot = e.clone();
            status_patch(shared, &key.0, &key.1, &snapshot, |_| {});
        }
    }

    // Targets for admitted migrations still without one.
    let waiting: Vec<Key> = st
        .runs
        .iter()
        .filter(|(_, e)| e.run.phase == Phase::Scheduling && e.run.target.is_none() && !e.no_target)
        .map(|(k, _)| k.clone())
        .collect();
    if !waiting.is_empty() {
        let (all_vmis, _) = shared.store.list_shared(keys::VMIS, None, |_| true);
        for key in waiting {
            let reserved: Vec<(String, f64, f64)> = st
                .runs
                .values()
                .filter(|e| e.run.phase.is_active())
                .filter_map(|e| e.run.target.clone().map(|t| (t, e.cpu, e.run.memory)))
                .collect();
            let views = vms::node_views(shared, &all_vmis, &reserved);
            let Some(e) = st.runs.get_mut(&key) else {
                continue;
            };
            let Some(vmi) = all_vmis
                .iter()
                .find(|v| s(v, "/metadata/namespace") == key.0 && s(v, "/metadata/name") == e.vmi)
            else {
                continue;
            };
            let (cpu, memory) = vms::vmi_demand(vmi);
            let mut selector: BTreeMap<String, String> = BTreeMap::new();
            let vmim = vmims
                .iter()
                .find(|m| s(m, "/metadata/namespace") == key.0 && s(m, "/metadata/name") == key.1);
            for src in [
                vmi.pointer("/spec/nodeSelector"),
                vmim.and_then(|m| m.pointer("/spec/addedNodeSelector")),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(o) = src.as_object() {
                    for (k, v) in o {
                        selector.insert(k.clone(), v.as_str().unwrap_or("").to_string());
                    }
                }
            }
            let demand = placement::Demand {
                cpu,
                memory,
                node_selector: selector,
                exclude: Some(e.run.source.clone()),
            };
            if let Some(target) = placement::choose(&views, &demand) {
                let ip = vms::pod_ip(shared.store.resource_version() + 7919);
                if let Ok(pod) = shared.store.create(
                    keys::PODS,
                    vms::launcher_pod(vmi, &target, &ip, false, true),
                ) {
                    e.target_pod = Some(s(&pod, "/metadata/name").to_string());
                }
                e.run.target = Some(target);
            }
        }
    }

    // Advance every admitted migration as far as the clock allows.
    let keys_now: Vec<Key> = st.runs.keys().cloned().collect();
    for key in keys_now {
        while let Some(e) = st.runs.get(&key) {
            let step = migration::advance(&e.run, now, settings);
            let sharing = st
                .runs
                .values()
                .filter(|o| o.run.phase.is_active() && o.run.source == e.run.source)
                .count();
            let Some(e) = st.runs.get_mut(&key) else {
                break;
            };
            match step {
                Step::Stay => break,
                Step::To(next) => {
                    e.run.phase = next;
                    e.run.since = now;
                    e.transitions
                        .push(json!({"phase": next.as_str(), "phaseTransitionTimestamp": wall}));
                    if next == Phase::Running {
                        e.run.transfer_secs =
                            migration::transfer_secs(e.run.memory, sharing, settings);
                    }
                    let snapshot = e.clone();
                    enter(shared, &key, &snapshot, &wall);
                    if next.is_final() {
                        st.evacuation_retry
                            .remove(&(key.0.clone(), snapshot.vmi.clone()));
                        break;
                    }
                }
                Step::Fail(reason) => {
                    e.run.phase = Phase::Failed;
                    e.run.since = now;
                    e.transitions
                        .push(json!({"phase": "Failed", "phaseTransitionTimestamp": wall}));
                    let snapshot = e.clone();
                    fail(shared, &key, &snapshot, &reason, &wall);
                    let vmi_key = (key.0.clone(), snapshot.vmi.clone());
                    st.evacuation_retry
                        .insert(vmi_key, now + settings.evacuation_retry_secs);
                    break;
                }
            }
        }
    }

    // Forget finished runs (their objects keep the record) and garbage-collect old VMIMs.
    st.runs.retain(|_, e| !e.run.phase.is_final());
    gc_finalized(shared, &vmims);
    record_counters(shared, st, now);
}

/// Record a core/v1 Event about a migration, as virt-controller does.
pub fn event(
    shared: &Shared,
    ns: &str,
    name: &str,
    uid: &str,
    kind_of: &str,
    reason: &str,
    message: &str,
) {
    let wall = shared.clock.rfc3339();
    let (kind, api_version) = ("VirtualMachineInstanceMigration", "kubevirt.io/v1");
    let _ = shared.store.create(keys::EVENTS, json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": if ns.is_empty() { "default" } else { ns }},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name, "uid": uid, "apiVersion": api_version},
        "reason": reason,
        "message": message,
        "type": kind_of,
        "source": {"component": "virt-controller"},
        "reportingComponent": "virt-controller",
        "firstTimestamp": wall,
        "lastTimestamp": wall,
        "count": 1
    }));
}

fn status_patch(shared: &Shared, ns: &str, name: &str, e: &Entry, extra: impl FnOnce(&mut Value)) {
    let _ = shared.store.modify(keys::VMIMS, ns, name, |m| {
        m["status"]["phase"] = json!(e.run.phase.as_str());
        m["status"]["phaseTransitionTimestamps"] = Value::Array(e.transitions.clone());
        m["metadata"]["labels"]["kubevirt.io/vmi-name"] = json!(e.vmi);
        extra(m);
        Ok(())
    });
}

fn migration_state(e: &Entry, shared: &Shared) -> Value {
    let target = e.run.target.clone().unwrap_or_default();
    let target_ip = shared
        .store
        .get(keys::NODES, "", &target)
        .and_then(|n| {
            n["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .map(|a| a["address"].clone())
        })
        .unwrap_or(Value::Null);
    json!({
        "migrationUid": e.uid,
        "sourceNode": e.run.source,
        "sourcePod": e.source_pod,
        "targetNode": target,
        "targetPod": e.target_pod,
        "targetNodeAddress": target_ip,
        "mode": "PreCopy",
        "migrationNetworkType": "pod"
    })
}

fn enter(shared: &Shared, key: &Key, e: &Entry, wall: &str) {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    match e.run.phase {
        Phase::Scheduled => {
            if let Some(pod) = &e.target_pod {
                let _ = shared.store.modify(keys::PODS, ns, pod, |p| {
                    p["status"]["phase"] = json!("Running");
                    p["status"]["podIP"] = json!(vms::pod_ip(
                        p["metadata"]["name"]
                            .as_str()
                            .map_or(0, |n| n.len() as u64 * 31)
                    ));
                    p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
                    if let Some(cs) = p
                        .pointer_mut("/status/containerStatuses/0")
                        .filter(|c| c.is_object())
                    {
                        cs["ready"] = json!(true);
                        cs["state"] = json!({"running": {"startedAt": wall}});
                    }
                    Ok(())
                });
            }
            status_patch(shared, ns, name, e, |_| {});
        }
        Phase::TargetReady | Phase::PreparingTarget => {
            let mut ms = migration_state(e, shared);
            if e.run.phase == Phase::PreparingTarget {
                ms["targetNodeAddress"] = Value::Null;
            } else {
                ms["targetNodeDomainDetected"] = json!(true);
                ms["targetNodeDomainReadyTimestamp"] = json!(wall);
            }
            set_vmi_migration_state(shared, ns, &e.vmi, ms.clone(), |_| {});
            status_patch(shared, ns, name, e, |m| m["status"]["migrationState"] = ms);
        }
        Phase::Running => {
            let mut ms = migration_state(e, shared);
            ms["startTimestamp"] = json!(wall);
            ms["targetNodeDomainDetected"] = json!(true);
            set_vmi_migration_state(shared, ns, &e.vmi, ms.clone(), |_| {});
            status_patch(shared, ns, name, e, |m| m["status"]["migrationState"] = ms);
        }
        Phase::Succeeded => {
            let target = e.run.target.clone().unwrap_or_default();
            let mut ms = migration_state(e, shared);
            ms["startTimestamp"] = json!(wall);
            ms["endTimestamp"] = json!(wall);
            ms["completed"] = json!(true);
            ms["targetNodeDomainDetected"] = json!(true);
            let target_pod_uid = e
                .target_pod
                .as_ref()
                .and_then(|p| shared.store.get(keys::PODS, ns, p))
                .map(|p| s(&p, "/metadata/uid").to_string())
                .unwrap_or_default();
            set_vmi_migration_state(shared, ns, &e.vmi, ms.clone(), |v| {
                v["status"]["nodeName"] = json!(target);
                v["metadata"]["labels"]["kubevirt.io/nodeName"] = json!(target);
                v["status"]["activePods"] = json!({target_pod_uid: target});
                if let Some(st) = v["status"].as_object_mut() {
                    st.remove("evacuationNodeName");
                }
            });
            if let Some(pod) = &e.target_pod {
                let _ = shared.store.modify(keys::PODS, ns, pod, |p| {
                    if let Some(l) = p["metadata"]["labels"].as_object_mut() {
                        l.remove("kubevirt.io/migrationTarget");
                    }
                    Ok(())
                });
            }
            if !e.source_pod.is_empty() {
                let _ = shared.store.delete(keys::PODS, ns, &e.source_pod);
            }
            shared.audit.record(crate::audit::Entry {
                seq: 0,
                time: wall.to_string(),
                sim_time: shared.clock.now(),
                client: "virt-handler@kubevirt".into(),
                api: "kube".into(),
                verb: "update".into(),
                object: format!("virtualmachineinstances.kubevirt.io/{ns}/{}/status", e.vmi),
                outcome: 200,
                request_object: Some(json!({
                    "status": {"nodeName": target, "migrationState": {
                        "migrationUid": e.uid, "sourceNode": e.run.source, "targetNode": target,
                        "completed": true,
                    }},
                    "migration": name,
                })),
            });
            status_patch(shared, ns, name, e, |m| m["status"]["migrationState"] = ms);
            event(
                shared,
                ns,
                name,
                &e.uid,
                "Normal",
                "SuccessfulMigration",
                "Source node reported migration succeeded",
            );
            tracing::debug!(migration = name, vmi = %e.vmi, target = %target, "Migration succeeded.");
        }
        _ => status_patch(shared, ns, name, e, |_| {}),
    }
}

fn fail(shared: &Shared, key: &Key, e: &Entry, reason: &str, wall: &str) {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    if let Some(pod) = &e.target_pod {
        let _ = shared.store.delete(keys::PODS, ns, pod);
    }
    let mut ms = migration_state(e, shared);
    ms["endTimestamp"] = json!(wall);
    ms["failed"] = json!(true);
    ms["failureReason"] = json!(reason);
    ms["completed"] = json!(e.run.phase == Phase::Running);
    set_vmi_migration_state(shared, ns, &e.vmi, ms.clone(), |_| {});
    status_patch(shared, ns, name, e, |m| {
        m["status"]["migrationState"] = ms;
        m["status"]["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "FailedMigration", "message": reason}]);
    });
    event(
        shared,
        ns,
        name,
        &e.uid,
        "Warning",
        "FailedMigration",
        reason,
    );
}

fn abort(shared: &Shared, ns: &str, e: &Entry, wall: &str) {
    if let Some(pod) = &e.target_pod {
        let _ = shared.store.delete(keys::PODS, ns, pod);
    }
    let mut ms = migration_state(e, shared);
    ms["endTimestamp"] = json!(wall);
    ms["failed"] = json!(true);
    ms["abortRequested"] = json!(true);
    ms["abortStatus"] = json!("Succeeded");
    set_vmi_migration_state(shared, ns, &e.vmi, ms, |_| {});
}

fn set_vmi_migration_state(
    shared: &Shared,
    ns: &str,
    vmi: &str,
    ms: Value,
    extra: impl FnOnce(&mut Value),
) {
    let _ = shared.store.modify(keys::VMIS, ns, vmi, |v| {
        v["status"]["migrationState"] = ms;
        extra(v);
        Ok(())
    });
}

/// KubeVirt keeps at most five finalized migrations per VMI.
fn gc_finalized(shared: &Shared, vmims: &[Arc<Value>]) {
    let mut per_vmi: HashMap<(String, String), Vec<(u64, String)>> = HashMap::new();
    for m in vmims {
        if Phase::parse(s(m, "/status/phase")).is_some_and(Phase::is_final) {
            let ns = s(m, "/metadata/namespace").to_string();
            per_vmi
                .entry((ns, s(m, "/spec/vmiName").to_string()))
                .or_default()
                .push((crate::store::obj_rv(m), s(m, "/metadata/name").to_string()));
        }
    }
    for ((ns, _), mut list) in per_vmi {
        if list.len() <= 5 {
            continue;
        }
        list.sort();
        for (_, name) in &list[..list.len() - 5] {
            let _ = shared.store.delete(keys::VMIMS, &ns, name);
        }
    }
}

fn record_counters(shared: &Shared, st: &mut SimState, now: SimTime) {
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut cluster = 0;
    for e in st.runs.values().filter(|e| e.run.phase.is_active()) {
        cluster += 1;
        *per_node.entry(e.run.source.clone()).or_default() += 1;
    }
    let current = (cluster, per_node);
    if st.last_counts.as_ref() != Some(&current) {
        shared
            .audit
            .record_counters(shared.clock.rfc3339(), now, current.0, current.1.clone());
        st.last_counts = Some(current);
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
