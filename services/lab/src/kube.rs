//! The lab's Kubernetes apiserver: path parsing and dispatch to discovery, the generic verbs,
//! watches, evictions and KubeVirt's subresources. Every error leaves as an apiserver `Status`.

pub mod discovery;
pub mod eviction;
pub mod patch;
pub mod rbac;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod subresources;
pub mod table;
pub mod upload;
pub mod verbs;
pub mod watch;

use axum::body::Body;
use axum::http::{Method, Response};

use crate::error::Error;
use crate::http::{self, Req};
use crate::state::Shared;
use resources::ResourceDef;

/// A request aimed at a resource.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: &'static ResourceDef,
    /// Namespace from the path (`None` for cluster-scoped or all-namespaces requests).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Serve one Kubernetes API request.
pub async fn handle(shared: &Shared, req: &Req) -> Response<Body> {
    if let Err(err) = authorize(shared, req) {
        return status::response(&err);
    }
    match route(shared, req).await {
        Ok(resp) => resp,
        Err(err) => status::response(&err),
    }
}

/// RBAC, when it is on: the caller from its bearer token, then its ServiceAccount's rules.
fn authorize(shared: &Shared, req: &Req) -> Result<(), Error> {
    if !shared.rbac.enforced() {
        return Ok(());
    }
    let token = req
        .header("authorization")
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let caller = token
        .as_deref()
        .and_then(|t| shared.rbac.caller(t))
        .ok_or_else(|| Error::Unauthorized("Unauthorized".into()))?;
    let rbac::Caller::ServiceAccount { namespace, name } = caller else {
        return Ok(());
    };
    let Some(attrs) = rbac::attributes(&req.method, &req.path, req.flag("watch")) else {
        return Ok(());
    };
    let all = |key: &str| shared.store.list(key, None, |_| true).0;
    use resources::keys;
    let objects = rbac::Objects {
        cluster_roles: all(keys::CLUSTER_ROLES),
        cluster_role_bindings: all(keys::CLUSTER_ROLE_BINDINGS),
        roles: all(keys::ROLES),
        role_bindings: all(keys::ROLE_BINDINGS),
    };
    if rbac::allowed(&objects, &namespace, &name, &attrs) {
        shared.rbac.grant(attrs);
        return Ok(());
    }
    let user = rbac::user(&namespace, &name);
    let message = rbac::forbidden(&user, &attrs);
    shared.rbac.deny(rbac::Denial {
        user,
        attributes: attrs,
    });
    Err(Error::Forbidden(message))
}

async fn route(shared: &Shared, req: &Req) -> Result<Response<Body>, Error> {
    let segs: Vec<&str> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = req.method == Method::GET;
    match segs.as_slice() {
        ["version"] if get => Ok(http::json(
            200,
            &discovery::version(&shared.scenario.kubernetes_version),
        )),
        ["api"] if get => Ok(http::json(200, &discovery::core_versions(&req.host))),
        ["apis"] if get => Ok(http::json(200, &discovery::groups())),
        ["healthz" | "livez" | "readyz"] if get => Ok(http::text(200, "ok")),
        // An empty OpenAPI v2 document (protobuf, as client-go asks for it): kubectl finds no
        // schemas, skips client-side validation and computes apply patches from its built-in types.
        ["openapi", "v2"] if get => Ok(http::bytes_response(
            200,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            bytes::Bytes::new(),
        )),
        ["api", "v1"] if get => discovery::resource_list("", "v1")
            .map(|v| http::json(200, &v))
            .ok_or(Error::NoRoute),
        ["apis", g] if get => discovery::group(g)
            .map(|v| http::json(200, &v))
            .ok_or(Error::NoRoute),
        ["apis", g, v] if get => discovery::resource_list(g, v)
            .map(|v| http::json(200, &v))
            .ok_or(Error::NoRoute),
        [
            "apis",
            "subresources.kubevirt.io",
            "v1",
            "namespaces",
            ns,
            plural,
            name,
            action,
        ] => subresources::handle(shared, req, ns, plural, name, action),
        ["api", "v1", rest @ ..] => resource_request(shared, req, "", "v1", rest).await,
        ["apis", g, v, rest @ ..] => resource_request(shared, req, g, v, rest).await,
        _ => Err(Error::NoRoute),
    }
}

async fn resource_request(
    shared: &Shared,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, Error> {
    let target = parse_target(group, version, rest)?;
    match (
        &req.method,
        target.name.is_some(),
        target.subresource.as_deref(),
    ) {
        (&Method::GET, false, None) if req.flag("watch") => {
            watch::handle(shared, req, &target).await
        }
        (&Method::GET, false, None) => verbs::list(shared, req, &target),
        (&Method::GET, true, None | Some("status")) => verbs::get(shared, req, &target),
        (&Method::POST, false, None) => verbs::create(shared, req, &target),
        (&Method::POST, true, Some("eviction")) if target.def.plural == "pods" => {
            eviction::handle(shared, req, &target)
        }
        (&Method::POST, true, Some("token")) if target.def.plural == "serviceaccounts" => {
            token_request(shared, &target)
        }
        (&Method::PUT, true, None | Some("status")) => verbs::update(shared, req, &target),
        (&Method::PATCH, true, None | Some("status")) => verbs::patch(shared, req, &target),
        (&Method::DELETE, true, None) => verbs::delete(shared, req, &target),
        (&Method::DELETE, false, None) => verbs::delete_collection(shared, req, &target),
        (_, _, Some(sub)) if !target.def.subresources.contains(&sub) => Err(Error::NoRoute),
        _ => Err(Error::MethodNotAllowed),
    }
}

/// Parse the part of a path after the group version.
pub fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, Error> {
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or(Error::NoRoute);
    let owned = |s: &&str| s.to_string();
    match rest {
        // The namespace object itself (and its subresources) vs. objects inside a namespace.
        ["namespaces", name] if group.is_empty() => Ok(Target {
            def: lookup("namespaces")?,
            namespace: None,
            name: Some(name.to_string()),
            subresource: None,
        }),
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => Ok(Target {
            def: lookup("namespaces")?,
            namespace: None,
            name: Some(name.to_string()),
            subresource: Some(sub.to_string()),
        }),
        ["namespaces", ns, plural, more @ ..] if more.len() <= 2 => {
            let def = lookup(plural)?;
            if !def.namespaced {
                return Err(Error::NoRoute);
            }
            Ok(Target {
                def,
                namespace: Some(ns.to_string()),
                name: more.first().map(owned),
                subresource: more.get(1).map(owned),
            })
        }
        [plural, more @ ..] if more.len() <= 2 => {
            let def = lookup(plural)?;
            if def.namespaced && !more.is_empty() {
                return Err(Error::NoRoute);
            }
            Ok(Target {
                def,
                namespace: None,
                name: more.first().map(owned),
                subresource: more.get(1).map(owned),
            })
        }
        _ => Err(Error::NoRoute),
    }
}

/// The TokenRequest API: a token for a ServiceAccount that exists, valid for an hour of lab time
/// (the lab does not expire them), which RBAC then authorizes by the account's bindings.
fn token_request(shared: &Shared, target: &Target) -> Result<Response<Body>, Error> {
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    if shared
        .store
        .get(resources::keys::SERVICE_ACCOUNTS, &ns, &name)
        .is_none()
    {
        return Err(Error::NotFound {
            resource: "serviceaccounts".into(),
            name,
        });
    }
    let token = shared.rbac.issue(&ns, &name);
    Ok(http::json(
        201,
        &serde_json::json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": shared.clock.rfc3339()},
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
            "status": {"token": token, "expirationTimestamp": shared.clock.rfc3339()},
        }),
    ))
}
