//! ResourceQuota (core v1) for storage, as the apiserver's quota admission and the quota controller
//! compute it: `requests.storage`, `persistentvolumeclaims` (also `count/persistentvolumeclaims`)
//! and their per-class forms `<class>.storageclass.storage.k8s.io/requests.storage` and
//! `<class>.storageclass.storage.k8s.io/persistentvolumeclaims`, from the namespace's claims. Other
//! keys of `spec.hard` are copied to `status.hard` and not counted. A claim that would exceed a
//! quota is refused with the apiserver's `exceeded quota: <name>, requested: ..., used: ...,
//! limited: ...`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::kube::resources::keys;
use crate::sim::quantity;
use crate::state::Shared;

const CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// What a claim (or the claims of a namespace) asks for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Usage {
    pub storage: u128,
    pub claims: u64,
    pub class_storage: BTreeMap<String, u128>,
    pub class_claims: BTreeMap<String, u64>,
}

impl Usage {
    fn add(&mut self, class: &str, bytes: u128) {
        self.storage += bytes;
        self.claims += 1;
        *self.class_storage.entry(class.to_string()).or_default() += bytes;
        *self.class_claims.entry(class.to_string()).or_default() += 1;
    }

    /// The amount of a quota key, `None` for keys not counted.
    fn amount(&self, key: &str) -> Option<Amount> {
        match key {
            "requests.storage" => Some(Amount::Bytes(self.storage)),
            "persistentvolumeclaims" | "count/persistentvolumeclaims" => {
                Some(Amount::Count(self.claims))
            }
            _ => {
                let (class, what) = key.split_once(CLASS_SUFFIX)?;
                match what {
                    "requests.storage" => Some(Amount::Bytes(
                        self.class_storage.get(class).copied().unwrap_or(0),
                    )),
                    "persistentvolumeclaims" => Some(Amount::Count(
                        self.class_claims.get(class).copied().unwrap_or(0),
                    )),
                    _ => None,
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Amount {
    Bytes(u128),
    Count(u64),
}

impl Amount {
    fn value(self) -> u128 {
        match self {
            Amount::Bytes(b) => b,
            Amount::Count(c) => c as u128,
        }
    }
    fn render(self) -> String {
        match self {
            Amount::Bytes(b) => format_bytes(b),
            Amount::Count(c) => c.to_string(),
        }
    }
}

/// A byte count as the apiserver prints a quantity: with the largest binary suffix it divides
/// exactly (`30Gi`, `1536Mi`) or the largest decimal one (`10G`), whichever is shorter (the
/// apiserver keeps the format the quantities were written in, which is usually the shorter).
pub fn format_bytes(n: u128) -> String {
    if n == 0 {
        return "0".into();
    }
    let exact = |base: u128, suffixes: [&str; 6]| {
        (1..=6u32)
            .rev()
            .find(|p| n.is_multiple_of(base.pow(*p)))
            .map(|p| format!("{}{}", n / base.pow(p), suffixes[p as usize - 1]))
    };
    let candidates = [
        exact(1024, ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
        exact(1000, ["k", "M", "G", "T", "P", "E"]),
        Some(n.to_string()),
    ];
    candidates
        .into_iter()
        .flatten()
        .min_by_key(String::len)
        .unwrap_or_default()
}

/// The cluster's default StorageClass, if one is marked.
fn default_class(shared: &Shared) -> String {
    let (classes, _) = shared.store.list_shared(keys::STORAGE_CLASSES, None, |c| {
        s(
            c,
            "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
        ) == "true"
    });
    classes
        .first()
        .map(|c| s(c, "/metadata/name").to_string())
        .unwrap_or_default()
}

/// A claim's class (its own, or the default one the DefaultStorageClass admission gives it) and
/// requested bytes.
fn claim_request(claim: &Value, default: &str) -> (String, u128) {
    let class = match claim.pointer("/spec/storageClassName") {
        Some(Value::String(c)) => c.clone(),
        _ => default.to_string(),
    };
    let bytes = quantity::from_json(claim.pointer("/spec/resources/requests/storage"))
        .unwrap_or(0.0)
        .max(0.0)
        .round() as u128;
    (class, bytes)
}

/// The namespace's claims; with `pending_dvs`, also the claims DataVolumes are about to create
/// (but not `except`'s).
fn usage(shared: &Shared, ns: &str, default: &str, pending_dvs: bool, except: &str) -> Usage {
    let mut u = Usage::default();
    let (claims, _) = shared.store.list_shared(keys::PVCS, Some(ns), |_| true);
    for c in &claims {
        let (class, bytes) = claim_request(c, default);
        u.add(&class, bytes);
    }
    if pending_dvs {
        let (dvs, _) = shared.store.list_shared(keys::DATAVOLUMES, Some(ns), |d| {
            let name = s(d, "/metadata/name");
            name != except && !claims.iter().any(|c| s(c, "/metadata/name") == name)
        });
        for dv in dvs {
            let (class, bytes) = claim_request(&crate::sim::storage::pvc_for_dv(&dv), default);
            u.add(&class, bytes);
        }
    }
    u
}

/// Admission of a new claim: `Err` is the apiserver's reason (`exceeded quota: ...`), to follow
/// `persistentvolumeclaims "<name>" is forbidden: `.
pub fn admit(shared: &Shared, claim: &Value) -> Result<(), String> {
    let ns = s(claim, "/metadata/namespace");
    let (quotas, _) = shared.store.list_shared(keys::QUOTAS, Some(ns), |_| true);
    if quotas.is_empty() {
        return Ok(());
    }
    let default = default_class(shared);
    let (class, bytes) = claim_request(claim, &default);
    let mut request = Usage::default();
    request.add(&class, bytes);
    let used = usage(shared, ns, &default, true, s(claim, "/metadata/name"));
    for q in &quotas {
        let Some(hard) = q.pointer("/spec/hard").and_then(Value::as_object) else {
            continue;
        };
        let mut exceeded: BTreeMap<&str, (String, String, String)> = BTreeMap::new();
        for (key, limit) in hard {
            let (Some(req), Some(now)) = (request.amount(key), used.amount(key)) else {
                continue;
            };
            if req.value() == 0 {
                continue;
            }
            let Some(lim) = quantity::from_json(Some(limit)) else {
                continue;
            };
            if (now.value() + req.value()) as f64 > lim {
                let shown = limit
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| limit.to_string());
                exceeded.insert(key, (req.render(), now.render(), shown));
            }
        }
        if !exceeded.is_empty() {
            let list = |f: &dyn Fn(&(String, String, String)) -> &String| {
                exceeded
                    .iter()
                    .map(|(k, v)| format!("{k}={}", f(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                s(q, "/metadata/name"),
                list(&|v| &v.0),
                list(&|v| &v.1),
                list(&|v| &v.2)
            ));
        }
    }
    Ok(())
}

/// The quota controller: `status.hard` = `spec.hard`, `status.used` from the claims.
pub fn refresh(shared: &Shared) {
    let (quotas, _) = shared.store.list_shared(keys::QUOTAS, None, |_| true);
    if quotas.is_empty() {
        return;
    }
    let default = default_class(shared);
    for q in quotas {
        let ns = s(&q, "/metadata/namespace").to_string();
        let name = s(&q, "/metadata/name").to_string();
        let hard = q
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let u = usage(shared, &ns, &default, false, "");
        let used: Map<String, Value> = hard
            .keys()
            .filter_map(|k| u.amount(k).map(|a| (k.clone(), json!(a.render()))))
            .collect();
        let status = json!({"hard": hard, "used": used});
        if q.get("status") != Some(&status) {
            let _ = shared.store.modify(keys::QUOTAS, &ns, &name, |o| {
                o["status"] = status;
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_the_apiserver_does() {
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(30 << 30), "30Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(10_000_000_000), "10G");
        assert_eq!(format_bytes(1023), "1023");
    }

    #[test]
    fn usage_by_key() {
        let mut u = Usage::default();
        u.add("px-rwx", 10 << 30);
        u.add("px-rwo", 5 << 30);
        assert_eq!(u.amount("requests.storage"), Some(Amount::Bytes(15 << 30)));
        assert_eq!(u.amount("persistentvolumeclaims"), Some(Amount::Count(2)));
        assert_eq!(
            u.amount("px-rwo.storageclass.storage.k8s.io/requests.storage"),
            Some(Amount::Bytes(5 << 30))
        );
        assert_eq!(
            u.amount("gold.storageclass.storage.k8s.io/persistentvolumeclaims"),
            Some(Amount::Count(0))
        );
        assert_eq!(u.amount("pods"), None);
    }
}
