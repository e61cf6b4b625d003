//! Fault injection: random rates from the scenario plus targeted faults set through the lab admin
//! endpoint (`POST /lab/faults`) or in-process. HTTP faults answer a request with an error before it
//! reaches a handler (or, for a proxy timeout that lets the request through, after it took
//! effect); simulation faults are consulted by the simulator (migration failures, unschedulable
//! targets, MAAS deploy, release and erase failures, machines losing power, watch disconnects).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::maas::lifecycle::DeployFault;
use crate::scenario::FaultRates;
use crate::sim::migration::Phase;

/// Which API a fault aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Kube,
    Maas,
}

/// A targeted fault. `count` is how many times it fires (default 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer matching requests with `status` (and `Retry-After` when given).
    Http {
        api: Api,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// Fail the next migration of a VMI (`namespace/name` or `name`; any VMI when omitted) on
    /// entering `phase` (default Running).
    MigrationFailure {
        #[serde(default)]
        vmi: Option<String>,
        #[serde(default)]
        phase: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next admitted migrations find no target node and time out unschedulable.
    UnschedulableTarget {
        #[serde(default = "one")]
        count: u32,
    },
    /// End the next watches after `after_ms` milliseconds.
    WatchDisconnect {
        #[serde(default)]
        after_ms: u64,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next deploy of a machine (hostname or system_id; any when omitted) fails.
    MaasDeployFailure {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next deploy of a machine hangs until `node_timeout` turns it into Failed deployment.
    MaasDeployHang {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next release of a machine hangs until MAAS's 5-minute release timeout makes it
    /// Releasing failed.
    MaasReleaseHang {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next deploy of a machine fails within a minute: its BMC never powers it on (Failed
    /// deployment, `power_state` `error`).
    MaasDeployPowerFailure {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// During the next deploy of a machine it loses power while installing; MAAS hears nothing
    /// more and fails the deployment `node_timeout` after the last message.
    MaasDeployPowerLoss {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next disk erase of a machine (a release with `erase`) fails: Failed disk erasing.
    MaasEraseFailure {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The proxy in front of the region times out matching MAAS requests: 504 with its HTML
    /// page. With `applied` the request reached MAAS and took effect first (the client cannot
    /// tell which happened).
    MaasProxyTimeout {
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
        #[serde(default)]
        applied: bool,
        #[serde(default = "one")]
        count: u32,
    },
    /// Applied at once: a node goes NotReady (kubelet stops posting status).
    NodeNotReady { node: String },
    /// Applied at once: a node becomes Ready again.
    NodeReady { node: String },
    /// Applied at once: a node reboots (what an operator's `systemctl reboot` does). It goes
    /// NotReady and virt-handler marks it `kubevirt.io/schedulable=false`; it is Ready again after
    /// the scenario's `reboot.boot_secs` and takes VMs again `reboot.virt_handler_start_secs` later.
    NodeReboot { node: String },
    /// Applied at once: a machine goes Broken.
    MaasMachineBroken { machine: String },
    /// Applied at once: a machine loses power (a deploying one stalls until `node_timeout`, a
    /// deployed one's Node goes NotReady until it is powered on again).
    MaasPowerLoss { machine: String },
}

fn one() -> u32 {
    1
}

/// The fault registry.
#[derive(Debug, Default)]
pub struct Faults {
    rates: Mutex<FaultRates>,
    targeted: Mutex<Vec<Fault>>,
    /// MAAS requests still to fail in the current random 503 burst.
    maas_burst: Mutex<u32>,
    /// Simulated seconds per real second: the Retry-After of random faults (MAAS's 10 s for a 503)
    /// is simulated time like every other duration of the lab. 0 or 1: unscaled.
    time_scale: f64,
}

/// What goes wrong with a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReleaseFault {
    /// The release hangs until the 5-minute timeout (Releasing failed).
    pub hang: bool,
    /// Its disk erasing fails (Failed disk erasing).
    pub erase: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

impl Faults {
    /// A registry with the scenario's rates.
    pub fn new(rates: FaultRates) -> Self {
        Faults {
            rates: Mutex::new(rates),
            targeted: Mutex::new(Vec::new()),
            maas_burst: Mutex::new(0),
            time_scale: 1.0,
        }
    }

    /// The same registry at a time scale (see [`Faults::retry_after`]).
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// A random fault's Retry-After of `secs` simulated seconds, in real seconds (at least 1, the
    /// header's least).
    fn retry_after(&self, secs: u64) -> Option<u64> {
        if self.time_scale > 1.0 {
            Some(((secs as f64 / self.time_scale).ceil() as u64).max(1))
        } else {
            Some(secs)
        }
    }

    /// Replace the random rates.
    pub fn set_rates(&self, rates: FaultRates) {
        *lock(&self.rates) = rates;
    }

    /// The random rates.
    pub fn rates(&self) -> FaultRates {
        lock(&self.rates).clone()
    }

    /// Queue a targeted fault (immediate ones are applied by the caller).
    pub fn add(&self, fault: Fault) {
        lock(&self.targeted).push(fault);
    }

    /// Targeted faults still armed.
    pub fn list(&self) -> Vec<Fault> {
        lock(&self.targeted).clone()
    }

    /// Disarm everything targeted and zero the rates.
    pub fn clear(&self) {
        lock(&self.targeted).clear();
        *lock(&self.rates) = FaultRates::default();
        *lock(&self.maas_burst) = 0;
    }

    /// Take the first armed fault `pick` accepts, decrementing its count.
    fn take<T>(&self, mut pick: impl FnMut(&Fault) -> Option<T>) -> Option<T> {
        let mut faults = lock(&self.targeted);
        let mut hit = None;
        for (i, f) in faults.iter_mut().enumerate() {
            if let Some(v) = pick(f) {
                hit = Some((i, v));
                break;
            }
        }
        let (i, v) = hit?;
        let spent = match &mut faults[i] {
            Fault::Http { count, .. }
            | Fault::MigrationFailure { count, .. }
            | Fault::UnschedulableTarget { count }
            | Fault::WatchDisconnect { count, .. }
            | Fault::MaasDeployFailure { count, .. }
            | Fault::MaasDeployHang { count, .. }
            | Fault::MaasReleaseHang { count, .. }
            | Fault::MaasDeployPowerFailure { count, .. }
            | Fault::MaasDeployPowerLoss { count, .. }
            | Fault::MaasEraseFailure { count, .. }
            | Fault::MaasProxyTimeout { count, .. } => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            _ => true,
        };
        if spent {
            faults.remove(i);
        }
        Some(v)
    }

    /// Latency to add to a request (uniform jitter up to the configured maximum).
    /// The upload proxy's bandwidth per upload in bytes/s, when limited.
    pub fn upload_rate(&self) -> Option<f64> {
        let r = lock(&self.rates).upload_mb_per_s;
        (r > 0.0).then_some(r * 1e6)
    }

    pub fn latency(&self) -> Option<Duration> {
        let max = lock(&self.rates).latency_jitter_ms;
        (max > 0).then(|| Duration::from_millis(rand::random_range(0..=max)))
    }

    /// An error to answer an HTTP request with before it reaches a handler, if a fault fires.
    pub fn http(&self, api: Api, method: &str, path: &str) -> Option<Error> {
        let targeted = self.take(|f| match f {
            Fault::Http {
                api: a,
                method: m,
                path_contains,
                status,
                retry_after,
                message,
                ..
            } if *a == api
                && m.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path_contains.as_deref().is_none_or(|p| path.contains(p)) =>
            {
                Some(injected(api, *status, *retry_after, message.clone()))
            }
            Fault::MaasProxyTimeout {
                method: m,
                path_contains,
                applied: false,
                ..
            } if api == Api::Maas
                && m.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path_contains.as_deref().is_none_or(|p| path.contains(p)) =>
            {
                Some(injected(api, 504, None, None))
            }
            _ => None,
        });
        if targeted.is_some() {
            return targeted;
        }
        let r = lock(&self.rates).clone();
        let writes = matches!(method, "POST" | "PUT" | "PATCH" | "DELETE");
        match api {
            Api::Kube => {
                if roll(r.kube_429) {
                    return Some(injected(api, 429, Some(1), None));
                }
                if roll(r.kube_500) {
                    return Some(injected(api, 500, None, None));
                }
                if roll(r.kube_503) {
                    return Some(injected(api, 503, Some(1), None));
                }
                if writes && roll(r.kube_409) {
                    return Some(injected(api, 409, None, None));
                }
            }
            Api::Maas => {
                {
                    let mut burst = lock(&self.maas_burst);
                    if *burst > 0 {
                        *burst -= 1;
                        return Some(injected(api, 503, self.retry_after(10), None));
                    }
                    if roll(r.maas_503) {
                        *burst = r.maas_503_burst.saturating_sub(1);
                        return Some(injected(api, 503, self.retry_after(10), None));
                    }
                }
                if writes && roll(r.maas_409) {
                    return Some(injected(api, 409, self.retry_after(5), None));
                }
                if roll(r.maas_504) {
                    return Some(injected(api, 504, None, None));
                }
            }
        }
        None
    }

    /// An error to answer an HTTP request with after its handler ran and took effect (a proxy
    /// that timed out waiting for the answer), if a fault fires.
    pub fn http_after(&self, api: Api, method: &str, path: &str) -> Option<Error> {
        if api != Api::Maas {
            return None;
        }
        let targeted = self.take(|f| match f {
            Fault::MaasProxyTimeout {
                method: m,
                path_contains,
                applied: true,
                ..
            } if m.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path_contains.as_deref().is_none_or(|p| path.contains(p)) =>
            {
                Some(injected(api, 504, None, None))
            }
            _ => None,
        });
        if targeted.is_some() {
            return targeted;
        }
        roll(lock(&self.rates).maas_504_applied).then(|| injected(api, 504, None, None))
    }

    /// A watch disconnect: how long the next watch may live.
    pub fn watch_disconnect(&self) -> Option<Duration> {
        let targeted = self.take(|f| match f {
            Fault::WatchDisconnect { after_ms, .. } => Some(Duration::from_millis(*after_ms)),
            _ => None,
        });
        if targeted.is_some() {
            return targeted;
        }
        roll(lock(&self.rates).watch_disconnect)
            .then(|| Duration::from_millis(rand::random_range(100..5000)))
    }

    /// Whether (and in which phase) a new migration of `ns/vmi` fails.
    pub fn migration_failure(&self, ns: &str, vmi: &str) -> Option<Phase> {
        let full = format!("{ns}/{vmi}");
        let targeted = self.take(|f| match f {
            Fault::MigrationFailure { vmi: v, phase, .. }
                if v.as_deref().is_none_or(|v| v == vmi || v == full) =>
            {
                Some(
                    phase
                        .as_deref()
                        .and_then(Phase::parse)
                        .unwrap_or(Phase::Running),
                )
            }
            _ => None,
        });
        if targeted.is_some() {
            return targeted;
        }
        if roll(lock(&self.rates).migration_failure) {
            let phases = [Phase::Scheduling, Phase::PreparingTarget, Phase::Running];
            return Some(phases[rand::random_range(0..phases.len())]);
        }
        None
    }

    /// Whether the next admitted migration finds no target.
    pub fn take_unschedulable_target(&self) -> bool {
        self.take(|f| matches!(f, Fault::UnschedulableTarget { .. }).then_some(()))
            .is_some()
    }

    /// What goes wrong with the deploy of this machine that is starting.
    pub fn maas_deploy(&self, hostname: &str, system_id: &str) -> DeployFault {
        let matches =
            |m: &Option<String>| m.as_deref().is_none_or(|m| m == hostname || m == system_id);
        let targeted = self.take(|f| match f {
            Fault::MaasDeployFailure { machine, .. } if matches(machine) => {
                Some(DeployFault::Install)
            }
            Fault::MaasDeployHang { machine, .. } if matches(machine) => Some(DeployFault::Hang),
            Fault::MaasDeployPowerFailure { machine, .. } if matches(machine) => {
                Some(DeployFault::PowerOn)
            }
            Fault::MaasDeployPowerLoss { machine, .. } if matches(machine) => {
                Some(DeployFault::PowerLoss)
            }
            _ => None,
        });
        if let Some(fault) = targeted {
            return fault;
        }
        let r = lock(&self.rates).clone();
        [
            (r.maas_deploy_failure, DeployFault::Install),
            (r.maas_deploy_power_failure, DeployFault::PowerOn),
            (r.maas_deploy_hang, DeployFault::Hang),
            (r.maas_deploy_power_loss, DeployFault::PowerLoss),
        ]
        .into_iter()
        .find(|(rate, _)| roll(*rate))
        .map_or(DeployFault::None, |(_, fault)| fault)
    }

    /// What goes wrong with the release of this machine that is starting (`erasing`: with disk
    /// erasing, the only kind an erase failure can hit).
    pub fn maas_release(&self, hostname: &str, system_id: &str, erasing: bool) -> ReleaseFault {
        let matches =
            |m: &Option<String>| m.as_deref().is_none_or(|m| m == hostname || m == system_id);
        let hang = self
            .take(|f| match f {
                Fault::MaasReleaseHang { machine, .. } if matches(machine) => Some(()),
                _ => None,
            })
            .is_some();
        let erase = erasing
            && self
                .take(|f| match f {
                    Fault::MaasEraseFailure { machine, .. } if matches(machine) => Some(()),
                    _ => None,
                })
                .is_some();
        let r = lock(&self.rates).clone();
        ReleaseFault {
            hang: hang || roll(r.maas_release_failure),
            erase: erase || (erasing && roll(r.maas_erase_failure)),
        }
    }

    /// Whether a machine goes Broken now (random rate, per deployed machine per pass).
    pub fn maas_machine_broken(&self, per_pass_scale: f64) -> bool {
        roll(lock(&self.rates).maas_machine_broken * per_pass_scale)
    }
}

/// What a proxy in front of the MAAS region (HAProxy's default page) answers when MAAS is slow.
pub const PROXY_TIMEOUT_PAGE: &str = "<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>\n";

fn injected(api: Api, code: u16, retry_after: Option<u64>, message: Option<String>) -> Error {
    let default = match (api, code) {
        (Api::Maas, 503) => "Unable to connect to any rack controller; no connections available.",
        (Api::Maas, 409) => "Conflict error. Please try again.",
        (Api::Maas, 504) => PROXY_TIMEOUT_PAGE,
        (_, 429) => "Too many requests, please try again later.",
        (_, 409) => {
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again"
        }
        (_, 503) => "the server is currently unable to handle the request",
        _ => "Internal error occurred: injected fault",
    };
    Error::Injected {
        code,
        message: message.unwrap_or_else(|| default.to_string()),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targeted_faults_fire_count_times() {
        let f = Faults::default();
        f.add(Fault::Http {
            api: Api::Maas,
            method: Some("POST".into()),
            path_contains: Some("op=deploy".into()),
            status: 503,
            retry_after: Some(10),
            message: None,
            count: 2,
        });
        assert!(f.http(Api::Kube, "POST", "/x?op=deploy").is_none());
        assert!(f.http(Api::Maas, "GET", "/x?op=deploy").is_none());
        assert!(matches!(
            f.http(Api::Maas, "POST", "/x?op=deploy"),
            Some(Error::Injected {
                code: 503,
                retry_after: Some(10),
                ..
            })
        ));
        assert!(f.http(Api::Maas, "POST", "/x?op=deploy").is_some());
        assert!(f.http(Api::Maas, "POST", "/x?op=deploy").is_none());
        f.add(Fault::MigrationFailure {
            vmi: Some("ns/a".into()),
            phase: Some("Scheduling".into()),
            count: 1,
        });
        assert_eq!(f.migration_failure("ns", "b"), None);
        assert_eq!(f.migration_failure("ns", "a"), Some(Phase::Scheduling));
        assert_eq!(f.migration_failure("ns", "a"), None);
    }

    #[test]
    fn maas_bursts_proxy_timeouts_and_lifecycle_faults() {
        let f = Faults::new(FaultRates {
            maas_503: 1.0,
            maas_503_burst: 3,
            ..FaultRates::default()
        });
        for _ in 0..3 {
            assert!(matches!(
                f.http(Api::Maas, "GET", "/MAAS/api/2.0/machines/"),
                Some(Error::Injected {
                    code: 503,
                    retry_after: Some(10),
                    ..
                })
            ));
        }
        f.clear();
        assert!(
            f.http(Api::Maas, "GET", "/MAAS/api/2.0/machines/")
                .is_none()
        );
        f.add(Fault::MaasProxyTimeout {
            method: None,
            path_contains: Some("op=allocate".into()),
            applied: true,
            count: 1,
        });
        assert!(f.http(Api::Maas, "POST", "/x?op=allocate").is_none());
        match f.http_after(Api::Maas, "POST", "/x?op=allocate") {
            Some(Error::Injected { code, message, .. }) => {
                assert_eq!((code, message.as_str()), (504, PROXY_TIMEOUT_PAGE));
            }
            other => panic!("{other:?}"),
        }
        assert!(f.http_after(Api::Maas, "POST", "/x?op=allocate").is_none());
        f.add(Fault::MaasEraseFailure {
            machine: Some("m1".into()),
            count: 1,
        });
        assert_eq!(f.maas_release("m1", "abc", false), ReleaseFault::default());
        assert!(f.maas_release("m1", "abc", true).erase);
        f.add(Fault::MaasDeployPowerLoss {
            machine: None,
            count: 1,
        });
        assert_eq!(f.maas_deploy("m2", "def"), DeployFault::PowerLoss);
        assert_eq!(f.maas_deploy("m2", "def"), DeployFault::None);
    }
}
