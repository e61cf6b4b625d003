//! Admission of provisioning inputs: before a submission is written, the API asks MAAS whether the
//! constraints it gives name a pool, zone and tags MAAS has, and whether any machine, in any state,
//! matches them. `provision-node`'s `preflight` finds the same out, but only once the workflow runs;
//! here the client gets a 422 that says what to fix, and nothing is written.
//!
//! Where the constraints are: `provision-node` and `deploy-machine` `constraints`, `scale-out`
//! `node.constraints`, `replace-node` `with.constraints`, `rolling-maintenance`
//! `surge_node.constraints` when it has a `surge_node`. Other kinds pass untouched, and so do
//! constraints with nothing in them (there is nothing to ask).
//!
//! One read when the constraints are fine: the machines in the pool and zone carrying the tags (MAAS
//! answers 400 naming an unknown pool, zone or tag), then not_tags, cpu_count and memory_mib applied
//! here, as `preflight` applies them; when none is left, the refusal says which constraint left
//! none. `not_tags` names are not checked: MAAS itself accepts unknown ones (excluding a tag no
//! machine has excludes nothing). After a refusal from MAAS, one more read that matches no machine
//! and has no constraint tells the input's fault from MAAS's: if MAAS refuses that too (a wrong API
//! key, an answer that does not decode), the check is [`Refusal::Unavailable`], not the client's to
//! fix. Transient errors (MAAS down, 503, timeouts) are `Unavailable` at once, with MAAS's
//! Retry-After when it gave one.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_workflows::ports::BoxFuture;
use drover_workflows::ports::maas::{Maas, MaasError, Machine, MachineFilter};
use drover_workflows::registry::{Admission, Refusal};
use drover_workflows::sdk::{Kind, parse};
use serde_json::Value;

use crate::deploy_machine::DeployMachine;
use crate::machines::Constraints;
use crate::provision_node::ProvisionNode;
use crate::replace_node::ReplaceNode;
use crate::rolling_maintenance::RollingMaintenance;
use crate::scale_out::ScaleOut;

/// A system id no machine has (MAAS's are six lowercase letters and digits): a listing filtered on
/// it matches nothing, so MAAS answers it cheaply, and refuses it only when MAAS itself is at fault.
const NO_MACHINE: &str = "drover-admission-probe";

/// The admission check the API makes with a MAAS port: [`admit`] for every submission.
pub struct MaasAdmission {
    maas: Arc<dyn Maas>,
}

impl MaasAdmission {
    pub fn new(maas: Arc<dyn Maas>) -> MaasAdmission {
        MaasAdmission { maas }
    }
}

impl Admission for MaasAdmission {
    fn admit<'a>(&'a self, kind: &'a str, input: &'a Value) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(admit(self.maas.as_ref(), kind, input))
    }
}

/// Checks the MAAS constraints of an input of `kind` (one the registry accepted) against MAAS.
pub async fn admit(maas: &dyn Maas, kind: &str, input: &Value) -> Result<(), Refusal> {
    let Some((at, constraints)) = constraints_of(kind, input)? else {
        return Ok(());
    };
    if constraints == Constraints::default() {
        return Ok(());
    }
    let filter = MachineFilter {
        pool: constraints.pool.clone(),
        zone: constraints.zone.clone(),
        tags: constraints.tags.clone(),
        ..MachineFilter::default()
    };
    let listed = match maas.list_machines(&filter).await {
        Ok(listed) => listed,
        Err(e) => return Err(refused_by_maas(maas, at, e).await),
    };
    match unmatched(at, &constraints, &listed) {
        Some(reason) => Err(Refusal::Invalid(reason)),
        None => Ok(()),
    }
}

/// Where an input of `kind` gives MAAS constraints, and what they are; `None` for kinds without.
fn constraints_of(
    kind: &str,
    input: &Value,
) -> Result<Option<(&'static str, Constraints)>, Refusal> {
    fn typed<K: Kind>(input: &Value) -> Result<K::Input, Refusal> {
        parse::<K>(input).map_err(Refusal::Invalid)
    }
    Ok(match kind {
        ProvisionNode::NAME => Some(("constraints", typed::<ProvisionNode>(input)?.constraints)),
        DeployMachine::NAME => Some(("constraints", typed::<DeployMachine>(input)?.constraints)),
        ScaleOut::NAME => Some((
            "node.constraints",
            typed::<ScaleOut>(input)?.node.constraints,
        )),
        ReplaceNode::NAME => Some((
            "with.constraints",
            typed::<ReplaceNode>(input)?.with.constraints,
        )),
        RollingMaintenance::NAME => typed::<RollingMaintenance>(input)?
            .surge_node
            .map(|n| ("surge_node.constraints", n.constraints)),
        _ => None,
    })
}

/// What MAAS's refusal of the listing means: the input's fault (MAAS still answers a listing with
/// no constraint) or MAAS's.
async fn refused_by_maas(maas: &dyn Maas, at: &str, error: MaasError) -> Refusal {
    if let MaasError::Transient {
        message,
        retry_after,
    } = error
    {
        return Refusal::Unavailable {
            message,
            retry_after,
        };
    }
    let probe = MachineFilter {
        system_ids: vec![NO_MACHINE.to_string()],
        ..MachineFilter::default()
    };
    match maas.list_machines(&probe).await {
        Ok(_) => Refusal::Invalid(maas_says(at, &error.to_string())),
        Err(MaasError::Transient {
            message,
            retry_after,
        }) => Refusal::Unavailable {
            message,
            retry_after,
        },
        Err(other) => Refusal::Unavailable {
            message: format!("MAAS refuses even a listing without constraints: {other}"),
            retry_after: None,
        },
    }
}

/// MAAS's refusal of the constraints at `at`, by field where MAAS answered with its form errors
/// (`list machines: 400 {"pool": ["No such pool: 'x'."]}` -> `constraints.pool: MAAS says: No
/// such pool: 'x'.`), else whole.
pub fn maas_says(at: &str, message: &str) -> String {
    let fields = message
        .find('{')
        .and_then(|i| serde_json::from_str::<BTreeMap<String, Vec<String>>>(&message[i..]).ok())
        .filter(|f| !f.is_empty());
    match fields {
        Some(fields) => fields
            .iter()
            .map(|(field, says)| format!("{at}.{field}: MAAS says: {}", says.join(" ")))
            .collect::<Vec<_>>()
            .join("; "),
        None => format!("{at}: MAAS refuses them: {message}"),
    }
}

/// Why no machine matches the constraints at `at`, given the machines MAAS listed for their pool,
/// zone and tags; `None` when some machine does. Names the constraint that left none.
pub fn unmatched(at: &str, c: &Constraints, listed: &[Machine]) -> Option<String> {
    let mut scope = Vec::new();
    if let Some(p) = &c.pool {
        scope.push(format!("in pool {p:?}"));
    }
    if let Some(z) = &c.zone {
        scope.push(format!("in zone {z:?}"));
    }
    if !c.tags.is_empty() {
        scope.push(format!("with tags {:?}", c.tags));
    }
    let unscoped = scope.is_empty();
    let mut scope = if unscoped {
        "in MAAS".to_string()
    } else {
        scope.join(", ")
    };
    let none = |why: String| Some(format!("{at}: no machine matches, in any state: {why}"));
    if listed.is_empty() {
        return none(if unscoped {
            "MAAS has no machine at all".to_string()
        } else {
            format!("MAAS has no machine {scope}; change the pool, zone or tags")
        });
    }
    let left: Vec<&Machine> = listed
        .iter()
        .filter(|m| !m.tags.iter().any(|t| c.not_tags.contains(t)))
        .collect();
    if left.is_empty() {
        return none(format!(
            "every machine {scope} ({}) has one of not_tags {:?}; drop some of them",
            listed.len(),
            c.not_tags
        ));
    }
    if !c.not_tags.is_empty() {
        scope = format!("{scope}, without not_tags {:?}", c.not_tags);
    }
    if let Some(n) = c.cpu_count {
        let most = left.iter().map(|m| m.cpu_count).max().unwrap_or(0);
        if most < n {
            return none(format!(
                "cpu_count {n} is more than any machine {scope} has (at most {most}, among {}); \
                 lower it",
                left.len()
            ));
        }
    }
    let left: Vec<&Machine> = left
        .into_iter()
        .filter(|m| c.cpu_count.is_none_or(|n| m.cpu_count >= n))
        .collect();
    if let Some(n) = c.memory_mib {
        let most = left.iter().map(|m| m.memory_mib).max().unwrap_or(0);
        if most < n {
            let with_cpus = c
                .cpu_count
                .map(|cpus| format!(" with cpu_count {cpus} or more"))
                .unwrap_or_default();
            return none(format!(
                "memory_mib {n} is more than any machine {scope}{with_cpus} has (at most {most}, \
                 among {}); lower it",
                left.len()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(tags: &[&str], cpu_count: u32, memory_mib: u64) -> Machine {
        Machine {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            cpu_count,
            memory_mib,
            ..Machine::default()
        }
    }

    #[test]
    fn constraints_are_found_where_each_kind_keeps_them() {
        let node = json!({"constraints": {"pool": "spare"}, "join": {"secret": "join"}});
        let cases = [
            ("provision-node", node.clone(), Some("constraints")),
            (
                "scale-out",
                json!({"count": 2, "node": node.clone()}),
                Some("node.constraints"),
            ),
            (
                "replace-node",
                json!({"node": "w1", "with": node.clone()}),
                Some("with.constraints"),
            ),
            (
                "rolling-maintenance",
                json!({"nodes": ["w1"], "surge": 1, "surge_node": node.clone()}),
                Some("surge_node.constraints"),
            ),
            ("rolling-maintenance", json!({"nodes": ["w1"]}), None),
            ("drain-node", json!({"node": "w1"}), None),
            ("synthetic", json!({"steps": 1}), None),
        ];
        for (kind, input, at) in cases {
            let found = constraints_of(kind, &input).unwrap();
            assert_eq!(found.as_ref().map(|(a, _)| *a), at, "{kind}");
            if let Some((_, c)) = found {
                assert_eq!(c.pool.as_deref(), Some("spare"), "{kind}");
            }
        }
        // Inputs the registry would refuse are refused here too, never sent to MAAS.
        let bad = constraints_of("scale-out", &json!({"count": 0, "node": node})).unwrap_err();
        assert!(matches!(bad, Refusal::Invalid(m) if m.contains("count")));
    }

    #[test]
    fn maas_refusals_name_the_field() {
        let m = maas_says(
            "node.constraints",
            r#"list machines: 400 {"pool": ["No such pool: 'nope'."], "tags": ["No such tag(s): 'x'."]}"#,
        );
        assert_eq!(
            m,
            "node.constraints.pool: MAAS says: No such pool: 'nope'.; \
             node.constraints.tags: MAAS says: No such tag(s): 'x'."
        );
        let m = maas_says("constraints", "list machines: 414 URI too long");
        assert_eq!(
            m,
            "constraints: MAAS refuses them: list machines: 414 URI too long"
        );
    }

    #[test]
    fn the_constraint_that_leaves_no_machine_is_named() {
        let c = |v: Value| -> Constraints { serde_json::from_value(v).unwrap() };
        let listed = [
            machine(&["vmo-worker"], 16, 65_536),
            machine(&["vmo-worker", "gpu"], 64, 262_144),
        ];
        let table: [(Value, &[Machine], Option<&str>); 7] = [
            (json!({"pool": "spare"}), &listed, None),
            (
                json!({"pool": "spare", "tags": ["gpu"]}),
                &[],
                Some("MAAS has no machine in pool \"spare\", with tags [\"gpu\"]; change"),
            ),
            (
                json!({"not_tags": ["vmo-worker"]}),
                &listed,
                Some("every machine in MAAS (2) has one of not_tags"),
            ),
            (
                json!({"cpu_count": 4096}),
                &listed,
                Some("cpu_count 4096 is more than any machine in MAAS has (at most 64, among 2)"),
            ),
            (
                json!({"not_tags": ["gpu"], "cpu_count": 32}),
                &listed,
                Some(
                    "cpu_count 32 is more than any machine in MAAS, without not_tags [\"gpu\"] has (at most 16, among 1)",
                ),
            ),
            (
                json!({"cpu_count": 32, "memory_mib": 300000}),
                &listed,
                Some(
                    "memory_mib 300000 is more than any machine in MAAS with cpu_count 32 or more has (at most 262144, among 1)",
                ),
            ),
            (
                json!({"cpu_count": 16, "memory_mib": 200000}),
                &listed,
                None,
            ),
        ];
        for (constraints, listed, want) in table {
            let got = unmatched("constraints", &c(constraints.clone()), listed);
            match want {
                None => assert_eq!(got, None, "{constraints}"),
                Some(w) => {
                    let got = got.unwrap_or_default();
                    assert!(got.starts_with("constraints: no machine matches"), "{got}");
                    assert!(got.contains(w), "{constraints}: {got}");
                }
            }
        }
    }
}
