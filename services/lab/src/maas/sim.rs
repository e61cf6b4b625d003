//! The MAAS machine lifecycle over simulated time: deploys walk MAAS's status messages to Deployed
//! (or fail, or hang until `node_timeout` makes them Failed deployment), releases go through
//! Releasing and Disk erasing to Ready, and machines deployed with cluster-join user data become
//! Kubernetes Nodes that turn Ready after a delay (and go NotReady and away when released).

use serde_json::Value;

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::kube::resources::keys;
use crate::maas::model::{Activity, Machine, Status};
use crate::scenario::MaasSettings;
use crate::sim::nodes;
use crate::state::Shared;

/// MAAS's hard-coded timeout for RELEASING (`get_node_timeout`).
pub const RELEASE_TIMEOUT_SECS: f64 = 300.0;

/// Deployment status messages and the fraction of the deploy at which each starts.
pub const DEPLOY_STAGES: &[(f64, &str)] = &[
    (0.0, "Deploying"),
    (0.05, "Performing PXE boot"),
    (0.2, "Loading ephemeral"),
    (0.3, "Configuring storage"),
    (0.4, "Installing OS"),
    (0.75, "Configuring OS"),
    (0.9, "Rebooting"),
];

/// Where a deployment stands.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployStep {
    /// Still deploying, with this status message.
    Progress(&'static str),
    Deployed,
    /// Failed deployment, with the reason, and whether the machine is powered off.
    Failed(String, bool),
}

/// Pure: the state of a deploy that takes `secs`, `elapsed` seconds in.
pub fn deploy_step(
    elapsed: f64,
    secs: f64,
    s: &MaasSettings,
    fail: bool,
    hang: bool,
) -> DeployStep {
    let timeout = s.node_timeout_minutes * 60.0;
    let mut fraction = elapsed / secs.max(1e-9);
    if hang {
        if elapsed >= timeout {
            return DeployStep::Failed(
                format!(
                    "Node operation 'Deploying' timed out after {} minutes.",
                    s.node_timeout_minutes
                ),
                true,
            );
        }
        fraction = fraction.min(0.5);
    } else if fail && fraction >= 0.6 {
        return DeployStep::Failed(
            "Installation failed (refer to the installation log for more information).".into(),
            false,
        );
    } else if fraction >= 1.0 {
        return DeployStep::Deployed;
    }
    let msg = DEPLOY_STAGES
        .iter()
        .rev()
        .find(|(f, _)| fraction >= *f)
        .map_or("Deploying", |(_, m)| m);
    DeployStep::Progress(msg)
}

enum NodeAction {
    Create(Box<Machine>),
    Ready(String),
    NotReady(String),
    Delete(String),
}

fn finish_release(m: &mut Machine) {
    m.status = Status::Ready;
    m.status_message = "Released".into();
    m.owner = None;
    m.power_state = "off".into();
    m.osystem.clear();
    m.distro_series.clear();
    m.user_data.clear();
    m.agent_name.clear();
    m.activity = Activity::Idle;
}

/// One pass of the MAAS lifecycle.
pub fn tick(shared: &Shared, now: SimTime) {
    let mut actions = Vec::new();
    {
        let Ok(mut r) = shared.maas.lock() else {
            return;
        };
        let s = r.settings.clone();
        let dt = (now - r.last_tick).max(0.0);
        r.last_tick = now;
        for m in r.machines.iter_mut() {
            match m.activity.clone() {
                Activity::Deploying {
                    started,
                    secs,
                    fail,
                    hang,
                } => match deploy_step(now - started, secs, &s, fail, hang) {
                    DeployStep::Progress(msg) => m.status_message = msg.into(),
                    DeployStep::Deployed => {
                        m.status = Status::Deployed;
                        m.status_message = "Deployed".into();
                        m.activity = Activity::Idle;
                        m.deployed_at = Some(now);
                    }
                    DeployStep::Failed(reason, off) => {
                        m.status = Status::FailedDeployment;
                        m.status_message = format!("Marking node failed - {reason}");
                        m.error_description = reason;
                        m.activity = Activity::Idle;
                        if off {
                            m.power_state = "off".into();
                        }
                    }
                },
                Activity::Releasing {
                    started,
                    hang: true,
                    ..
                } if now - started >= RELEASE_TIMEOUT_SECS => {
                    m.status = Status::FailedReleasing;
                    m.status_message = "Marking node failed - Node operation 'Releasing' timed out after 5 minutes.".into();
                    m.error_description =
                        "Node operation 'Releasing' timed out after 5 minutes.".into();
                    m.activity = Activity::Idle;
                }
                Activity::Releasing {
                    started,
                    erase_secs,
                    hang: false,
                } if now - started >= s.release_secs => {
                    if erase_secs > 0.0 {
                        m.status = Status::DiskErasing;
                        m.status_message = "Disk erasing".into();
                        m.activity = Activity::DiskErasing {
                            started: now,
                            secs: erase_secs,
                        };
                    } else {
                        finish_release(m);
                    }
                }
                Activity::DiskErasing { started, secs } if now - started >= secs => {
                    finish_release(m)
                }
                _ => {}
            }
            let has_node = m.joined || m.node_created.is_some();
            match m.status {
                Status::Deployed if !m.joined && m.user_data.contains(&s.join_marker) => {
                    let deployed_at = m.deployed_at.unwrap_or(now);
                    match m.node_created {
                        None if now >= deployed_at + s.join_delay_secs => {
                            m.node_created = Some(now);
                            m.node_down = false;
                            actions.push(NodeAction::Create(Box::new(m.clone())));
                        }
                        Some(t) if now >= t + s.node_ready_delay_secs => {
                            m.joined = true;
                            actions.push(NodeAction::Ready(m.hostname.clone()));
                        }
                        _ => {}
                    }
                }
                Status::Releasing | Status::DiskErasing | Status::Broken
                    if has_node && !m.node_down =>
                {
                    m.node_down = true;
                    actions.push(NodeAction::NotReady(m.hostname.clone()));
                }
                Status::Ready | Status::New if has_node => {
                    m.joined = false;
                    m.node_created = None;
                    m.node_down = false;
                    actions.push(NodeAction::Delete(m.hostname.clone()));
                }
                Status::Deployed if shared.faults.maas_machine_broken(dt / 3600.0) => {
                    m.previous_status = m.status;
                    m.status = Status::Broken;
                    m.status_message = "Marking node broken - simulated hardware failure".into();
                    m.error_description = "simulated hardware failure".into();
                }
                _ => {}
            }
        }
    }
    for a in actions {
        apply(shared, a);
    }
}

fn apply(shared: &Shared, action: NodeAction) {
    match action {
        NodeAction::Create(m) => {
            let params = nodes::NodeParams {
                name: &m.hostname,
                cpu: m.cpu_count,
                memory_gib: m.memory / 1024,
                role: "worker",
                ip: &m.ip,
                labels: vec![("topology.kubernetes.io/zone".into(), m.zone.clone())],
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
        NodeAction::Ready(name) => {
            let _ = nodes::set_ready(shared, &name, true);
        }
        NodeAction::NotReady(name) => {
            let _ = nodes::set_ready(shared, &name, false);
        }
        NodeAction::Delete(name) => {
            let _ = shared.store.delete(keys::NODES, "", &name);
            let (pods, _) = shared.store.list(keys::PODS, Some("kubevirt"), |p| {
                p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(&name)
            });
            for p in pods {
                if let Some(n) = p.pointer("/metadata/name").and_then(Value::as_str) {
                    let _ = shared.store.delete(keys::PODS, "kubevirt", n);
                }
            }
        }
    }
}

/// Mark a machine (hostname or system_id) Broken now.
pub fn break_machine(shared: &Shared, machine: &str) -> Result<()> {
    let mut r = shared
        .maas
        .lock()
        .map_err(|_| Error::Internal("maas state poisoned".into()))?;
    let m = r
        .machines
        .iter_mut()
        .find(|m| m.hostname == machine || m.system_id == machine)
        .ok_or_else(|| Error::NotFound {
            resource: "Machine".into(),
            name: machine.into(),
        })?;
    m.previous_status = m.status;
    m.status = Status::Broken;
    m.status_message = "Marking node broken - injected fault".into();
    m.error_description = "injected fault".into();
    m.activity = Activity::Idle;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_progression_table() {
        let s = MaasSettings::default();
        let cases = [
            (0.0, false, false, DeployStep::Progress("Deploying")),
            (
                40.0,
                false,
                false,
                DeployStep::Progress("Performing PXE boot"),
            ),
            (300.0, false, false, DeployStep::Progress("Installing OS")),
            (700.0, false, false, DeployStep::Progress("Rebooting")),
            (720.0, false, false, DeployStep::Deployed),
            (
                440.0,
                true,
                false,
                DeployStep::Failed(
                    "Installation failed (refer to the installation log for more information)."
                        .into(),
                    false,
                ),
            ),
            (720.0, false, true, DeployStep::Progress("Installing OS")),
            (
                1800.0,
                false,
                true,
                DeployStep::Failed(
                    "Node operation 'Deploying' timed out after 30 minutes.".into(),
                    true,
                ),
            ),
        ];
        for (t, fail, hang, want) in cases {
            assert_eq!(
                deploy_step(t, s.deploy_secs, &s, fail, hang),
                want,
                "t={t} fail={fail} hang={hang}"
            );
        }
    }
}
