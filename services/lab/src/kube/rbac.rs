//! RBAC as the apiserver applies it, for ServiceAccount tokens the lab issued through the
//! TokenRequest API. Off by default (the lab's apiserver is open, as the other tests expect); on,
//! every Kubernetes request must carry a bearer token: the lab's admin token (the one in its
//! kubeconfig) may do anything, a ServiceAccount's token is authorized against the Roles,
//! ClusterRoles and bindings stored in the lab (created with `kubectl apply` like any object),
//! anything else is 401. The decision is pure (`attributes`, `allowed`, `forbidden`) and
//! table-tested; `Rbac` holds the switch, the issued tokens and the denials (for tests to read).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::Method;
use serde_json::Value;

/// The token in the lab's kubeconfig: the cluster admin.
pub const ADMIN_TOKEN: &str = "drover-lab";

/// What a resource request asks, as RBAC rules name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub user: String,
    pub attributes: Attributes,
}

/// The stored RBAC objects an authorization reads.
#[derive(Debug, Default)]
pub struct Objects {
    pub cluster_roles: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
    pub roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
}

/// The lab's RBAC state.
#[derive(Default)]
pub struct Rbac {
    enforced: AtomicBool,
    /// Issued token -> (namespace, service account).
    tokens: Mutex<HashMap<String, (String, String)>>,
    denials: Mutex<Vec<Denial>>,
    /// What ServiceAccounts were allowed to do (tests read which rules their flows used).
    granted: Mutex<Vec<Attributes>>,
}

/// Who a request's token says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    ServiceAccount { namespace: String, name: String },
}

impl Rbac {
    pub fn enforce(&self, on: bool) {
        self.enforced.store(on, Ordering::SeqCst);
    }

    pub fn enforced(&self) -> bool {
        self.enforced.load(Ordering::SeqCst)
    }

    /// Issues a token for `namespace/name`.
    pub fn issue(&self, namespace: &str, name: &str) -> String {
        let token = format!("lab-sa-{:032x}", rand::random::<u128>());
        lock(&self.tokens).insert(token.clone(), (namespace.to_string(), name.to_string()));
        token
    }

    /// Who `token` is, if anyone.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        if token == ADMIN_TOKEN {
            return Some(Caller::Admin);
        }
        lock(&self.tokens)
            .get(token)
            .map(|(namespace, name)| Caller::ServiceAccount {
                namespace: namespace.clone(),
                name: name.clone(),
            })
    }

    pub fn deny(&self, denial: Denial) {
        lock(&self.denials).push(denial);
    }

    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.denials).clone()
    }

    pub fn grant(&self, attributes: Attributes) {
        lock(&self.granted).push(attributes);
    }

    /// What ServiceAccounts were allowed since the last call (which empties the record).
    pub fn take_granted(&self) -> Vec<Attributes> {
        std::mem::take(&mut *lock(&self.granted))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A resource request's attributes from its method, path and `watch` flag; None for requests that
/// name no resource (discovery, version, health), which every authenticated caller may make.
pub fn attributes(method: &Method, path: &str, watch: bool) -> Option<Attributes> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        // The namespace object itself.
        ["namespaces", name] if group.is_empty() => (None, &["namespaces", *name][..]),
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let verb = match *method {
        Method::GET | Method::HEAD if name.is_none() && watch => "watch",
        Method::GET | Method::HEAD if name.is_none() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => return None,
    };
    // `POST .../pods/<name>/eviction` creates an eviction, not a pod.
    Some(Attributes {
        verb: verb.to_string(),
        group: group.to_string(),
        resource: resource.to_string(),
        subresource,
        namespace,
        name,
    })
}

/// The RBAC user name of a ServiceAccount.
pub fn user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn subject_matches(s: &Value, namespace: &str, name: &str) -> bool {
    match s["kind"].as_str() {
        Some("ServiceAccount") => s["name"] == name && s["namespace"] == namespace,
        Some("User") => s["name"].as_str() == Some(user(namespace, name).as_str()),
        Some("Group") => matches!(
            s["name"].as_str(),
            Some(g) if g == "system:serviceaccounts"
                || g == "system:authenticated"
                || g == format!("system:serviceaccounts:{namespace}")
        ),
        _ => false,
    }
}

fn contains(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
}

/// Whether one rule of a role allows `a`.
pub fn rule_matches(rule: &Value, a: &Attributes) -> bool {
    if !contains(&rule["verbs"], &a.verb) || !contains(&rule["apiGroups"], &a.group) {
        return false;
    }
    let resource_ok = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter()
            .filter_map(Value::as_str)
            .any(|r| match &a.subresource {
                None => r == "*" || r == a.resource,
                Some(sub) => {
                    r == "*" || r == format!("{}/{sub}", a.resource) || r == format!("*/{sub}")
                }
            })
    });
    if !resource_ok {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => a
            .name
            .as_ref()
            .is_some_and(|n| names.iter().any(|v| v == n.as_str())),
        _ => true,
    }
}

fn role_rules<'a>(
    objects: &'a Objects,
    role_ref: &Value,
    namespace: Option<&str>,
) -> Vec<&'a Value> {
    let name = &role_ref["name"];
    let role = match role_ref["kind"].as_str() {
        Some("ClusterRole") => objects
            .cluster_roles
            .iter()
            .find(|r| r["metadata"]["name"] == *name),
        Some("Role") => objects.roles.iter().find(|r| {
            r["metadata"]["name"] == *name && r["metadata"]["namespace"].as_str() == namespace
        }),
        _ => None,
    };
    role.and_then(|r| r["rules"].as_array())
        .map(|rules| rules.iter().collect())
        .unwrap_or_default()
}

/// Whether the ServiceAccount `namespace/name` may do `a`: some rule of a role bound to it
/// (cluster-wide by a ClusterRoleBinding, in the request's namespace by a RoleBinding) matches.
pub fn allowed(objects: &Objects, namespace: &str, name: &str, a: &Attributes) -> bool {
    let bound = |b: &Value| {
        b["subjects"]
            .as_array()
            .is_some_and(|ss| ss.iter().any(|s| subject_matches(s, namespace, name)))
    };
    let cluster = objects
        .cluster_role_bindings
        .iter()
        .filter(|b| bound(b))
        .flat_map(|b| role_rules(objects, &b["roleRef"], None));
    let local = objects
        .role_bindings
        .iter()
        .filter(|b| {
            bound(b)
                && a.namespace.is_some()
                && b["metadata"]["namespace"].as_str() == a.namespace.as_deref()
        })
        .flat_map(|b| role_rules(objects, &b["roleRef"], b["metadata"]["namespace"].as_str()));
    cluster.chain(local).any(|r| rule_matches(r, a))
}

/// The apiserver's message for a refused request.
pub fn forbidden(user: &str, a: &Attributes) -> String {
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let subject = match &a.name {
        Some(n) => format!("{qualified} \"{n}\" is forbidden"),
        None => format!("{qualified} is forbidden"),
    };
    let resource = match &a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.clone(),
    };
    let scope = match &a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "{subject}: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        a.verb, a.group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(method: Method, path: &str, watch: bool) -> Attributes {
        attributes(&method, path, watch).unwrap()
    }

    #[test]
    fn requests_map_to_verbs_resources_and_scopes() {
        let a = attrs(Method::GET, "/api/v1/nodes", false);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace),
            ("list", "nodes", None)
        );
        let a = attrs(Method::PATCH, "/api/v1/nodes/n1", false);
        assert_eq!((a.verb.as_str(), a.name.as_deref()), ("patch", Some("n1")));
        let a = attrs(Method::POST, "/api/v1/namespaces/ns/pods/p/eviction", false);
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource.as_str(),
                a.subresource.as_deref(),
                a.namespace.as_deref()
            ),
            ("create", "pods", Some("eviction"), Some("ns"))
        );
        let a = attrs(
            Method::GET,
            "/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstancemigrations",
            true,
        );
        assert_eq!(
            (a.verb.as_str(), a.group.as_str()),
            ("watch", "kubevirt.io")
        );
        let a = attrs(
            Method::PUT,
            "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm/stop",
            false,
        );
        assert_eq!(
            (a.verb.as_str(), a.group.as_str(), a.subresource.as_deref()),
            ("update", "subresources.kubevirt.io", Some("stop"))
        );
        let a = attrs(Method::DELETE, "/api/v1/namespaces/ns/pods", false);
        assert_eq!(a.verb, "deletecollection");
        let a = attrs(Method::GET, "/api/v1/namespaces/drover", false);
        assert_eq!(
            (a.resource.as_str(), a.name.as_deref()),
            ("namespaces", Some("drover"))
        );
        for discovery in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/kubevirt.io/v1",
            "/version",
        ] {
            assert!(
                attributes(&Method::GET, discovery, false).is_none(),
                "{discovery}"
            );
        }
    }

    fn objects(rules: Value) -> Objects {
        Objects {
            cluster_roles: vec![json!({"metadata": {"name": "worker"}, "rules": rules})],
            cluster_role_bindings: vec![json!({
                "metadata": {"name": "worker"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "worker"},
                "subjects": [{"kind": "ServiceAccount", "name": "w", "namespace": "drover"}],
            })],
            ..Objects::default()
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let o = objects(json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["join"]},
            {"apiGroups": ["kubevirt.io"], "resources": ["*"], "verbs": ["watch"]},
        ]));
        let can = |m: Method, p: &str, w: bool| allowed(&o, "drover", "w", &attrs(m, p, w));
        assert!(can(Method::GET, "/api/v1/nodes", false));
        assert!(can(Method::GET, "/api/v1/nodes/n1", false));
        assert!(
            !can(Method::PATCH, "/api/v1/nodes/n1", false),
            "no patch verb"
        );
        assert!(can(
            Method::POST,
            "/api/v1/namespaces/a/pods/p/eviction",
            false
        ));
        assert!(
            !can(Method::POST, "/api/v1/namespaces/a/pods", false),
            "eviction is not pods"
        );
        assert!(!can(Method::GET, "/api/v1/namespaces/a/pods", false));
        assert!(can(Method::GET, "/api/v1/namespaces/a/secrets/join", false));
        assert!(!can(
            Method::GET,
            "/api/v1/namespaces/a/secrets/other",
            false
        ));
        assert!(
            !can(Method::GET, "/api/v1/namespaces/a/secrets", false),
            "names bind gets only"
        );
        assert!(can(
            Method::GET,
            "/apis/kubevirt.io/v1/virtualmachineinstances",
            true
        ));
        assert!(!can(
            Method::GET,
            "/apis/cdi.kubevirt.io/v1beta1/datavolumes",
            true
        ));
        // Another service account, or the same name elsewhere, is bound to nothing.
        let a = attrs(Method::GET, "/api/v1/nodes", false);
        assert!(!allowed(&o, "drover", "api", &a));
        assert!(!allowed(&o, "default", "w", &a));
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace() {
        let o = Objects {
            roles: vec![json!({"metadata": {"name": "r", "namespace": "vmo"},
                "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["*"]}]})],
            role_bindings: vec![json!({"metadata": {"name": "b", "namespace": "vmo"},
                "roleRef": {"kind": "Role", "name": "r"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:drover"}]})],
            ..Objects::default()
        };
        let pvc = |ns: &str| {
            attrs(
                Method::POST,
                &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
                false,
            )
        };
        assert!(allowed(&o, "drover", "w", &pvc("vmo")));
        assert!(!allowed(&o, "drover", "w", &pvc("other")));
        assert!(!allowed(&o, "elsewhere", "w", &pvc("vmo")));
    }

    #[test]
    fn refusals_read_as_the_apiservers() {
        let u = user("drover", "drover-worker");
        assert_eq!(
            forbidden(
                &u,
                &attrs(
                    Method::POST,
                    "/api/v1/namespaces/vmo/pods/p1/eviction",
                    false
                )
            ),
            "pods \"p1\" is forbidden: User \"system:serviceaccount:drover:drover-worker\" cannot \
             create resource \"pods/eviction\" in API group \"\" in the namespace \"vmo\""
        );
        assert_eq!(
            forbidden(
                &u,
                &attrs(
                    Method::GET,
                    "/apis/kubevirt.io/v1/virtualmachineinstances",
                    false
                )
            ),
            "virtualmachineinstances.kubevirt.io is forbidden: User \
             \"system:serviceaccount:drover:drover-worker\" cannot list resource \
             \"virtualmachineinstances\" in API group \"kubevirt.io\" at the cluster scope"
        );
    }
}
