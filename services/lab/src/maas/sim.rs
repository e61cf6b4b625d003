//! The MAAS machine lifecycle over simulated time: deploys walk MAAS's status messages to
//! Deployed (or fail: at install, at power on, or silent until `node_timeout`), releases go
//! through Releasing and Disk erasing to Ready (or Releasing failed after MAAS's 5-minute
//! release timeout, or Failed disk erasing), every step recorded as MAAS's events at the
//! simulated time it happened. Machines deployed with cluster-join user data become Kubernetes
//! Nodes, registered with the labels and taints the user data gives kubelet (`--node-labels`,
//! `--register-with-taints`), that turn Ready after a delay (and schedulable for VMs then, when
//! virt-handler runs), go NotReady while powered off, broken or released, and go away when the
//! machine is Ready again. A Node deleted through the API stays deleted until the machine is
//! deployed again. The decisions are `lifecycle.rs`'s.

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::kube::resources::keys;
use crate::maas::events::kinds;
use crate::maas::lifecycle::{
    self, DEPLOY_STAGES, DeployFault, End, Failure, RELEASE_TIMEOUT_SECS, deploy_progress,
};
use crate::maas::model::{Activity, Machine, Region, Status};
use crate::maas::ops;
use crate::scenario::MaasSettings;
use crate::sim::{kubelet, nodes};
use crate::state::Shared;

enum NodeAction {
    Create(Box<Machine>),
    /// Ready for the first time: virt-handler runs and labels the node schedulable for VMs.
    Joined(String),
    /// Ready again after a power cycle.
    Ready(String),
    NotReady(String),
    Delete(String),
}

/// One pass of the MAAS lifecycle.
pub fn tick(shared: &Shared, now: SimTime) {
    let mut actions = Vec::new();
    {
        let Ok(mut r) = shared.maas.lock() else {
            return;
        };
        let r = &mut *r;
        let s = r.settings.clone();
        let prev = r.last_tick.min(now);
        r.last_tick = now;
        for i in 0..r.machines.len() {
            advance(r, i, prev, now, &s);
            let broken = r.machines[i].status == Status::Deployed
                && shared.faults.maas_machine_broken((now - prev) / 3600.0);
            if broken {
                break_at(r, i, "simulated hardware failure", now);
            }
            if let Some(a) = node_action(&mut r.machines[i], now, &s) {
                actions.push(a);
            }
        }
    }
    for a in actions {
        apply(shared, a);
    }
}

/// Move machine `i`'s ongoing operation forward from `prev` to `now`.
fn advance(r: &mut Region, i: usize, prev: SimTime, now: SimTime, s: &MaasSettings) {
    match r.machines[i].activity.clone() {
        Activity::Idle => {}
        Activity::Deploying {
            started,
            plan,
            stages,
        } => {
            let progress = deploy_progress(now - started, &plan, s.node_timeout_minutes * 60.0);
            for (k, (_, kind)) in DEPLOY_STAGES
                .iter()
                .enumerate()
                .take(progress.stages)
                .skip(stages)
            {
                let at = started + plan.stage_at(k);
                r.event(i, *kind, "", None, at);
                if k == 0 && plan.fault != DeployFault::PowerOn {
                    r.set_power(i, "on", at);
                }
            }
            if let Some(t) = plan.power_loss_at()
                && started + t > prev
                && started + t <= now
            {
                r.set_power(i, "off", started + t);
            }
            match progress.end {
                None => {
                    r.machines[i].activity = Activity::Deploying {
                        started,
                        plan,
                        stages: progress.stages.max(stages),
                    };
                }
                Some((t, End::Deployed)) => {
                    let at = started + t;
                    r.machines[i].activity = Activity::Idle;
                    r.machines[i].deployed_at = Some(at);
                    r.set_status(i, Status::Deployed, at);
                    r.event(i, kinds::DEPLOYED, "", None, at);
                }
                Some((t, End::Failed(why))) => {
                    let at = started + t;
                    let sid = r.machines[i].system_id.clone();
                    let reason = why.reason(&sid, s.node_timeout_minutes);
                    r.machines[i].activity = Activity::Idle;
                    if why == Failure::Install {
                        r.event(
                            i,
                            kinds::NODE_INSTALL_EVENT_FAILED,
                            "curtin command install",
                            None,
                            at,
                        );
                    }
                    r.event(i, kinds::REQUEST_NODE_MARK_FAILED_SYSTEM, &reason, None, at);
                    r.set_status(i, Status::FailedDeployment, at);
                    r.machines[i].error_description = reason.clone();
                    match why {
                        Failure::PowerOn => {
                            r.event(i, kinds::NODE_POWER_ON_FAILED, &reason, None, at);
                            r.set_power(i, "error", at);
                        }
                        // MAAS powers a machine off when its operation times out.
                        Failure::Timeout => r.set_power(i, "off", at),
                        Failure::Install => {}
                    }
                }
            }
        }
        Activity::Releasing {
            started,
            hang: true,
            ..
        } if now - started >= RELEASE_TIMEOUT_SECS => {
            let at = started + RELEASE_TIMEOUT_SECS;
            let reason = "Node operation 'Releasing' timed out after 5 minutes.";
            r.machines[i].activity = Activity::Idle;
            r.event(i, kinds::REQUEST_NODE_MARK_FAILED_SYSTEM, reason, None, at);
            r.set_status(i, Status::FailedReleasing, at);
            r.machines[i].error_description = reason.into();
        }
        Activity::Releasing {
            started,
            erase_secs,
            erase_fails,
            hang: false,
        } if now - started >= s.release_secs => {
            let at = started + s.release_secs;
            r.set_power(i, "off", at);
            match erase_secs {
                Some(secs) => {
                    // Disk erasing boots the machine into the ephemeral environment.
                    r.machines[i].activity = Activity::DiskErasing {
                        started: at,
                        secs,
                        fails: erase_fails,
                    };
                    r.set_status(i, Status::DiskErasing, at);
                    r.set_power(i, "on", at);
                    r.event(i, kinds::PERFORMING_PXE_BOOT, "", None, at);
                    r.event(i, kinds::LOADING_EPHEMERAL, "", None, at);
                }
                None => finish_release(r, i, at),
            }
        }
        Activity::DiskErasing {
            started,
            secs,
            fails: true,
        } if now - started >= lifecycle::ERASE_FAILURE_AT * secs => {
            let at = started + lifecycle::ERASE_FAILURE_AT * secs;
            let reason = "Failed to erase disks.";
            r.machines[i].activity = Activity::Idle;
            r.event(i, kinds::REQUEST_NODE_MARK_FAILED_SYSTEM, reason, None, at);
            r.set_status(i, Status::FailedDiskErasing, at);
            r.machines[i].error_description = reason.into();
            r.set_power(i, "off", at);
        }
        Activity::DiskErasing {
            started,
            secs,
            fails: false,
        } if now - started >= secs => {
            let at = started + secs;
            r.event(i, kinds::DISKS_ERASED, "", None, at);
            finish_release(r, i, at);
        }
        Activity::Releasing { .. } | Activity::DiskErasing { .. } => {}
    }
}

/// Release done: powered off, Ready, no owner, no owner data, no OS.
fn finish_release(r: &mut Region, i: usize, at: SimTime) {
    r.set_power(i, "off", at);
    r.set_status(i, Status::Ready, at);
    r.event(i, kinds::RELEASED, "", None, at);
    r.disown(i);
    let m = &mut r.machines[i];
    m.osystem.clear();
    m.distro_series.clear();
    m.hwe_kernel.clear();
    m.user_data.clear();
    m.error_description.clear();
    m.activity = Activity::Idle;
}

/// What the machine's Kubernetes Node should do now, if anything. A Node is created once per
/// deployment (`node_created`), so one deleted through the API is not created again until the
/// machine is deployed again; the actions on a Node that is not there do nothing.
fn node_action(m: &mut Machine, now: SimTime, s: &MaasSettings) -> Option<NodeAction> {
    let has_node = m.joined || m.node_created.is_some();
    let on = m.power_state == "on";
    match m.status {
        Status::Deployed if !m.joined && on && m.user_data.contains(&s.join_marker) => {
            let deployed_at = m.deployed_at.unwrap_or(now);
            match m.node_created {
                None if now >= deployed_at + s.join_delay_secs => {
                    m.node_created = Some(now);
                    m.node_down = false;
                    Some(NodeAction::Create(Box::new(m.clone())))
                }
                Some(t) if now >= t + s.node_ready_delay_secs => {
                    m.joined = true;
                    Some(NodeAction::Joined(m.hostname.clone()))
                }
                _ => None,
            }
        }
        // Powered off: the kubelet stops posting status.
        Status::Deployed if m.joined && !on && !m.node_down => {
            m.node_down = true;
            Some(NodeAction::NotReady(m.hostname.clone()))
        }
        // Powered on again: Ready once it has booted.
        Status::Deployed
            if m.joined
                && on
                && m.node_down
                && now >= m.power_changed + s.node_ready_delay_secs =>
        {
            m.node_down = false;
            Some(NodeAction::Ready(m.hostname.clone()))
        }
        Status::Releasing
        | Status::DiskErasing
        | Status::Broken
        | Status::FailedReleasing
        | Status::FailedDiskErasing
            if has_node && !m.node_down =>
        {
            m.node_down = true;
            Some(NodeAction::NotReady(m.hostname.clone()))
        }
        Status::Ready | Status::New if has_node => {
            m.joined = false;
            m.node_created = None;
            m.node_down = false;
            Some(NodeAction::Delete(m.hostname.clone()))
        }
        _ => None,
    }
}

/// The region marks machine `i` Broken on its own (owner kept, as MAAS's system path does).
fn break_at(r: &mut Region, i: usize, reason: &str, now: SimTime) {
    r.machines[i].activity = Activity::Idle;
    r.event(i, kinds::REQUEST_NODE_MARK_BROKEN_SYSTEM, reason, None, now);
    r.set_status(i, Status::Broken, now);
    r.machines[i].error_description = reason.into();
}

fn apply(shared: &Shared, action: NodeAction) {
    match action {
        NodeAction::Create(m) => {
            let reg = kubelet::registration(&m.user_data);
            let mut labels = vec![("topology.kubernetes.io/zone".into(), m.zone.clone())];
            labels.extend(reg.labels);
            let params = nodes::NodeParams {
                name: &m.hostname,
                cpu: m.cpu_count,
                memory_gib: m.memory / 1024,
                role: "worker",
                ip: &m.ip,
                labels,
                taints: reg.taints,
                ready: false,
                provider_id: format!("maas:///{}", m.system_id),
            };
            if shared.store.get(keys::NODES, "", &m.hostname).is_none() {
                let _ = shared.store.create(
                    keys::NODES,
                    nodes::node_object(
                        &params,
                        &shared.scenario.kubernetes_version,
                        &shared.clock.rfc3339(),
                    ),
                );
                let _ = shared
                    .store
                    .create(keys::PODS, nodes::virt_handler_pod(&m.hostname));
            }
        }
        NodeAction::Joined(name) => {
            let _ = nodes::set_joined(shared, &name);
        }
        NodeAction::Ready(name) => {
            let _ = nodes::set_ready(shared, &name, true);
        }
        NodeAction::NotReady(name) => {
            let _ = nodes::set_ready(shared, &name, false);
        }
        NodeAction::Delete(name) => {
            let _ = shared.store.delete(keys::NODES, "", &name);
            nodes::delete_daemon_pods(shared, &name);
        }
    }
}

fn by_name(r: &Region, machine: &str) -> Result<usize> {
    r.machines
        .iter()
        .position(|m| m.hostname == machine || m.system_id == machine)
        .ok_or_else(|| Error::NotFound {
            resource: "Machine".into(),
            name: machine.into(),
        })
}

/// Mark a machine (hostname or system_id) Broken now.
pub fn break_machine(shared: &Shared, machine: &str) -> Result<()> {
    change_now(shared, machine, |r, i, now| {
        break_at(r, i, "injected fault", now)
    })
}

/// A machine (hostname or system_id) loses power now.
pub fn lose_power(shared: &Shared, machine: &str) -> Result<()> {
    change_now(shared, machine, ops::power_loss)
}

/// Applies `change` to a machine (hostname or system_id) at the current simulated time.
fn change_now(
    shared: &Shared,
    machine: &str,
    change: impl FnOnce(&mut Region, usize, SimTime),
) -> Result<()> {
    let mut r = shared
        .maas
        .lock()
        .map_err(|_| Error::Internal("maas state poisoned".into()))?;
    let i = by_name(&r, machine)?;
    change(&mut r, i, shared.clock.now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::ReleaseFault;
    use crate::maas::form::Params;
    use crate::scenario;

    /// A region with one Ready machine deploying with `fault` (deploys take exactly 720 s).
    fn deploying(fault: DeployFault) -> (Region, usize) {
        let mut s = scenario::reference_architecture().maas;
        s.deploy_jitter = 0.0;
        let mut r = Region::new(&s);
        let i = r
            .machines
            .iter()
            .position(|m| m.status == Status::Ready)
            .unwrap();
        let id = r.machines[i].system_id.clone();
        ops::deploy(&mut r, &id, &Params::of(&[]), "admin", 0.0, fault).unwrap();
        (r, i)
    }

    fn run(r: &mut Region, i: usize, until: f64) {
        let s = r.settings.clone();
        let mut t = r.last_tick;
        while t < until {
            let next = (t + 7.0_f64).min(until);
            advance(r, i, t, next, &s);
            t = next;
        }
        r.last_tick = until;
    }

    fn info_messages(r: &Region) -> Vec<String> {
        r.events.iter().filter_map(|e| e.status_message()).collect()
    }

    #[test]
    fn deploy_walks_maas_status_messages() {
        let (mut r, i) = deploying(DeployFault::None);
        run(&mut r, i, 100.0);
        assert_eq!(r.machines[i].status_message, "Performing PXE boot");
        assert_eq!(r.machines[i].power_state, "on");
        run(&mut r, i, 800.0);
        let m = &r.machines[i];
        assert_eq!(
            (m.status, m.status_message.as_str()),
            (Status::Deployed, "Deployed")
        );
        assert_eq!(m.deployed_at, Some(720.0));
        assert_eq!(
            info_messages(&r),
            [
                "Deploying",
                "Powering on",
                "Performing PXE boot",
                "Loading ephemeral",
                "Configuring storage",
                "Installing OS",
                "Configuring OS",
                "Rebooting",
                "Deployed"
            ]
        );
    }

    #[test]
    fn failed_deployments_record_the_reason() {
        let cases = [
            (
                DeployFault::Install,
                500.0,
                "Installation failed (refer to the installation log for more information).",
                "on",
            ),
            (
                DeployFault::PowerOn,
                60.0,
                "Power on for the node failed: Failed talking to node's BMC: Failed to power aaaaaa. BMC never transitioned from off to on.",
                "error",
            ),
            (
                DeployFault::Hang,
                1801.0,
                "Node operation 'Deploying' timed out after 30 minutes.",
                "off",
            ),
            (
                DeployFault::PowerLoss,
                2100.0,
                "Node operation 'Deploying' timed out after 30 minutes.",
                "off",
            ),
        ];
        for (fault, until, reason, power) in cases {
            let (mut r, i) = deploying(fault);
            r.machines[i].system_id = "aaaaaa".into();
            run(&mut r, i, until);
            let m = &r.machines[i];
            assert_eq!(m.status, Status::FailedDeployment, "{fault:?}");
            assert_eq!(m.error_description, reason, "{fault:?}");
            assert_eq!(m.power_state, power, "{fault:?}");
            let failed = r
                .events
                .iter()
                .find(|e| e.kind == kinds::REQUEST_NODE_MARK_FAILED_SYSTEM)
                .expect("a Marking node failed event");
            assert_eq!(failed.description, reason);
        }
        // A user's power_off stalls a deployment until node_timeout after its last message.
        let (mut r, i) = deploying(DeployFault::None);
        run(&mut r, i, 400.0);
        ops::power_loss(&mut r, i, 400.0);
        let s = r.settings.clone();
        advance(&mut r, i, 400.0, 2087.0, &s);
        assert_eq!(r.machines[i].status, Status::Deploying);
        advance(&mut r, i, 2087.0, 2089.0, &s);
        assert_eq!(r.machines[i].status, Status::FailedDeployment);
    }

    #[test]
    fn releases_erase_and_fail_as_maas_does() {
        let s = scenario::reference_architecture().maas;
        let cases = [
            (None, ReleaseFault::default(), Status::Ready, "Released"),
            (
                Some(90.0),
                ReleaseFault::default(),
                Status::Ready,
                "Released",
            ),
            (
                Some(90.0),
                ReleaseFault {
                    erase: true,
                    hang: false,
                },
                Status::FailedDiskErasing,
                "Marking node failed - Failed to erase disks.",
            ),
            (
                None,
                ReleaseFault {
                    erase: false,
                    hang: true,
                },
                Status::FailedReleasing,
                "Marking node failed - Node operation 'Releasing' timed out after 5 minutes.",
            ),
        ];
        for (erase, fault, want, message) in cases {
            let mut r = Region::new(&s);
            let i = by_name(&r, "worker-01").unwrap();
            ops::start_release(&mut r, i, 0.0, erase, fault);
            assert_eq!(r.machines[i].status_message, "Releasing");
            advance(&mut r, i, 0.0, s.release_secs, &s);
            if erase.is_some() && !fault.hang {
                assert_eq!(r.machines[i].status, Status::DiskErasing);
                assert_eq!(r.machines[i].power_state, "on");
            }
            advance(&mut r, i, s.release_secs, 400.0, &s);
            let m = &r.machines[i];
            assert_eq!(
                (m.status, m.status_message.as_str()),
                (want, message),
                "{erase:?} {fault:?}"
            );
            if want == Status::Ready {
                assert_eq!((m.owner.as_deref(), m.power_state.as_str()), (None, "off"));
            } else {
                assert_eq!(
                    m.owner.as_deref(),
                    Some("admin"),
                    "a failed release keeps its owner"
                );
            }
        }
    }

    /// A `Shared` over `scenario`'s MAAS region, with no Kubernetes objects loaded.
    fn shared(scenario: scenario::Scenario) -> Shared {
        let clock = crate::clock::Clock::new(1.0);
        Shared {
            stopping: tokio::sync::watch::channel(false).1,
            maas: std::sync::Mutex::new(Region::new(&scenario.maas)),
            store: crate::store::Store::new(clock.clone(), 100),
            faults: crate::faults::Faults::new(scenario.faults.clone()),
            audit: crate::audit::Audit::default(),
            sim: std::sync::Mutex::new(Default::default()),
            cdi: Default::default(),
            clock,
            scenario,
            rbac: Default::default(),
            ticketing: crate::ticketing::Ticketing::new(
                Default::default(),
                String::new(),
                String::new(),
                tokio::sync::watch::channel(false).1,
            )
            .expect("ticketing"),
        }
    }

    /// Runs machine `i`'s node action at `now`, if any, and says which it was.
    fn step(shared: &Shared, i: usize, now: SimTime) -> Option<&'static str> {
        let action = {
            let mut r = shared.maas.lock().unwrap();
            let s = r.settings.clone();
            node_action(&mut r.machines[i], now, &s)
        }?;
        let kind = match &action {
            NodeAction::Create(_) => "create",
            NodeAction::Joined(_) => "joined",
            NodeAction::Ready(_) => "ready",
            NodeAction::NotReady(_) => "not-ready",
            NodeAction::Delete(_) => "delete",
        };
        apply(shared, action);
        Some(kind)
    }

    fn delete_node(shared: &Shared, name: &str) -> u16 {
        let req = crate::http::Req {
            method: axum::http::Method::DELETE,
            path: format!("/api/v1/nodes/{name}"),
            query: Vec::new(),
            headers: Default::default(),
            body: Default::default(),
            client: "test".into(),
            host: "127.0.0.1".into(),
        };
        futures::executor::block_on(crate::kube::handle(shared, &req))
            .status()
            .as_u16()
    }

    fn virt_handlers(shared: &Shared, node: &str) -> usize {
        let (pods, _) = shared.store.list(keys::PODS, Some("kubevirt"), |p| {
            p.pointer("/spec/nodeName")
                .and_then(serde_json::Value::as_str)
                == Some(node)
        });
        pods.len()
    }

    #[test]
    fn a_joined_node_registers_as_its_user_data_asks_and_stays_deleted() {
        let shared = shared(scenario::reference_architecture());
        let s = shared.scenario.maas.clone();
        let user_data = "#cloud-config\nwrite_files:\n  - path: /etc/default/kubelet\n    \
            content: |\n      KUBELET_EXTRA_ARGS='--node-labels=drover.dev/pool=vmo,tier=gold \
            --register-with-taints=drover.dev/provisioning=true:NoSchedule'\n\
            runcmd:\n  - [sh, -c, 'kubeadm join 10.0.0.1:6443 --token t']\n";
        let (i, name) = {
            let mut r = shared.maas.lock().unwrap();
            let i = by_name(&r, "spare-01").unwrap();
            let m = &mut r.machines[i];
            m.status = Status::Deployed;
            m.power_state = "on".into();
            m.user_data = user_data.into();
            m.deployed_at = Some(0.0);
            (i, m.hostname.clone())
        };
        let zone = shared.maas.lock().unwrap().machines[i].zone.clone();
        let node = || shared.store.get(keys::NODES, "", &name);
        let t0 = s.join_delay_secs;
        assert_eq!(step(&shared, i, t0 - 1.0), None);
        assert_eq!(step(&shared, i, t0), Some("create"));
        let n = node().expect("the Node registered");
        let labels = &n["metadata"]["labels"];
        assert_eq!(labels["drover.dev/pool"], "vmo");
        assert_eq!(labels["tier"], "gold");
        assert_eq!(labels["topology.kubernetes.io/zone"], zone.as_str());
        assert_eq!(labels["kubernetes.io/hostname"], name.as_str());
        assert!(
            labels.get("kubevirt.io/schedulable").is_none(),
            "no virt-handler before Ready: {labels}"
        );
        let taints = n["spec"]["taints"].as_array().unwrap();
        assert!(taints.contains(&serde_json::json!(
            {"key": "drover.dev/provisioning", "value": "true", "effect": "NoSchedule"}
        )));
        assert_eq!(virt_handlers(&shared, &name), 1);

        assert_eq!(
            step(&shared, i, t0 + s.node_ready_delay_secs),
            Some("joined")
        );
        let n = node().unwrap();
        assert_eq!(n["metadata"]["labels"]["kubevirt.io/schedulable"], "true");
        assert_eq!(crate::sim::vms::condition(&n, "Ready"), Some(true));
        let taints = n["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 1, "the registered taint stays: {taints:?}");
        // VMs tolerate none of it: no VM lands there until the taint is gone.
        let views = crate::sim::vms::node_views(&shared, &[], &[]);
        let view = views.iter().find(|v| v.name == name).unwrap();
        assert!(view.ready && view.kubevirt_schedulable && view.unschedulable);

        // `kubectl delete node`: the Node and its virt-handler go, and stay gone through a power
        // cycle of the machine, which is still Deployed.
        assert_eq!(delete_node(&shared, &name), 200);
        assert!(node().is_none());
        assert_eq!(virt_handlers(&shared, &name), 0);
        assert_eq!(delete_node(&shared, &name), 404);
        ops::power_loss(&mut shared.maas.lock().unwrap(), i, 1000.0);
        assert_eq!(step(&shared, i, 1001.0), Some("not-ready"));
        shared.maas.lock().unwrap().set_power(i, "on", 1002.0);
        assert_eq!(
            step(&shared, i, 1002.0 + s.node_ready_delay_secs),
            Some("ready")
        );
        for t in [5000.0, 50_000.0] {
            assert_eq!(step(&shared, i, t), None);
        }
        assert!(node().is_none(), "the lab made the deleted Node again");

        // Released, then deployed again: the Node registers again.
        shared.maas.lock().unwrap().machines[i].status = Status::Ready;
        assert_eq!(step(&shared, i, 60_000.0), Some("delete"));
        {
            let mut r = shared.maas.lock().unwrap();
            r.machines[i].status = Status::Deployed;
            r.machines[i].deployed_at = Some(60_000.0);
        }
        assert_eq!(step(&shared, i, 60_000.0 + t0), Some("create"));
        assert!(node().is_some());
    }

    #[test]
    fn nodes_follow_power() {
        let s = scenario::reference_architecture().maas;
        let mut r = Region::new(&s);
        let i = by_name(&r, "worker-01").unwrap();
        assert!(node_action(&mut r.machines[i], 10.0, &s).is_none());
        ops::power_loss(&mut r, i, 10.0);
        assert!(
            matches!(node_action(&mut r.machines[i], 11.0, &s), Some(NodeAction::NotReady(n)) if n == "worker-01")
        );
        r.set_power(i, "on", 20.0);
        assert!(node_action(&mut r.machines[i], 21.0, &s).is_none());
        let ready_at = 20.0 + s.node_ready_delay_secs;
        assert!(
            matches!(node_action(&mut r.machines[i], ready_at, &s), Some(NodeAction::Ready(n)) if n == "worker-01")
        );
    }
}
