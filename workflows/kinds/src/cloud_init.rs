//! The cloud-init user data that makes a freshly deployed machine join the Kubernetes cluster, pure:
//! `provision-node` renders it at deploy time (the join command is a secret, resolved then and never
//! stored) and MAAS hands it to the machine. The node registers under the machine's hostname with the
//! input's labels and taints from its first moment (kubelet's `--node-labels` and
//! `--register-with-taints`), so no workload lands on it before it is what it should be.
//!
//! Labels and taints are checked against Kubernetes' syntax before anything is rendered, and every
//! value is single-quoted in the shell, so nothing in an input can become a command.

use std::collections::BTreeMap;

use drover_workflows::ports::secrets::Secret;
use serde::{Deserialize, Serialize};

/// A taint the node registers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: Effect,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::PreferNoSchedule => "PreferNoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }
}

/// What the joining node needs.
pub struct Join<'a> {
    /// The cluster's join command (`kubeadm join <endpoint> --token ... --discovery-token-ca-cert-hash
    /// ...`), resolved from its secret reference just before deploying.
    pub command: &'a Secret,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
}

/// Checks labels and taints against Kubernetes' syntax; the error names the first bad one.
pub fn check(labels: &BTreeMap<String, String>, taints: &[Taint]) -> Result<(), String> {
    for (k, v) in labels {
        if !qualified_name(k) {
            return Err(format!(
                "label key {k:?} is not a Kubernetes qualified name ([prefix/]name: name 1-63 \
                 alphanumerics, '-', '_', '.', starting and ending alphanumeric; prefix a DNS subdomain)"
            ));
        }
        if !label_value(v) {
            return Err(format!(
                "label {k}={v:?}: values are at most 63 alphanumerics, '-', '_', '.', starting and \
                 ending alphanumeric (or empty)"
            ));
        }
    }
    for t in taints {
        if !qualified_name(&t.key) || !label_value(&t.value) {
            return Err(format!(
                "taint {:?}={:?}: the key is a qualified name and the value a label value",
                t.key, t.value
            ));
        }
    }
    Ok(())
}

/// The `#cloud-config` document. Call [`check`] first: `render` does not validate again.
pub fn render(join: &Join<'_>) -> String {
    let labels: Vec<String> = join
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let taints: Vec<String> = join
        .taints
        .iter()
        .map(|t| {
            if t.value.is_empty() {
                format!("{}:{}", t.key, t.effect.as_str())
            } else {
                format!("{}={}:{}", t.key, t.value, t.effect.as_str())
            }
        })
        .collect();
    let mut kubelet_args = Vec::new();
    if !labels.is_empty() {
        kubelet_args.push(format!("--node-labels={}", labels.join(",")));
    }
    if !taints.is_empty() {
        kubelet_args.push(format!("--register-with-taints={}", taints.join(",")));
    }
    let mut out = String::from("#cloud-config\n");
    out.push_str("write_files:\n");
    out.push_str("  - path: /etc/default/kubelet\n");
    out.push_str("    permissions: '0644'\n");
    out.push_str("    content: |\n");
    out.push_str(&format!(
        "      KUBELET_EXTRA_ARGS={}\n",
        shell_quote(&kubelet_args.join(" "))
    ));
    out.push_str("runcmd:\n");
    out.push_str("  - [sh, -c, ");
    out.push_str(&yaml_single(&format!(
        "{} --node-name \"$(hostname)\"",
        join.command.expose()
    )));
    out.push_str("]\n");
    out
}

/// `s` in POSIX shell single quotes.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as a YAML single-quoted scalar (one line; a quote is doubled).
fn yaml_single(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''").replace(['\n', '\r'], " "))
}

fn name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Kubernetes' qualified name: `[prefix/]name`.
fn qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && name_part(name),
        None => name_part(s),
    }
}

fn label_value(s: &str) -> bool {
    s.is_empty() || name_part(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_and_taints_follow_kubernetes_syntax() {
        let ok = labels(&[
            ("node-role.kubernetes.io/worker", ""),
            ("kubevirt.io/schedulable", "true"),
            ("rack", "r12"),
        ]);
        assert!(check(&ok, &[]).is_ok());
        for (k, v) in [
            ("bad key", "x"),
            ("-lead", "x"),
            ("UPPER.example.com/x", "y"),
            ("a/b/c", "x"),
            ("rack", "r12; reboot"),
            ("rack", "'quoted'"),
            ("rack", &"x".repeat(64)),
        ] {
            assert!(check(&labels(&[(k, v)]), &[]).is_err(), "{k}={v}");
        }
        let bad_taint = Taint {
            key: "$(id)".into(),
            value: String::new(),
            effect: Effect::NoSchedule,
        };
        assert!(
            check(&BTreeMap::new(), &[bad_taint])
                .unwrap_err()
                .contains("taint")
        );
    }

    #[test]
    fn the_document_joins_with_labels_and_taints_and_quotes_the_command() {
        let secret = Secret::new(
            "kubeadm join 10.0.0.1:6443 --token abc.def --discovery-token-ca-cert-hash sha256:00",
        );
        let labels = labels(&[("rack", "r12"), ("vmo.io/pool", "gpu")]);
        let taints = [
            Taint {
                key: "vmo.io/provisioning".into(),
                value: String::new(),
                effect: Effect::NoSchedule,
            },
            Taint {
                key: "dedicated".into(),
                value: "vm".into(),
                effect: Effect::NoExecute,
            },
        ];
        let doc = render(&Join {
            command: &secret,
            labels: &labels,
            taints: &taints,
        });
        assert!(doc.starts_with("#cloud-config\n"), "{doc}");
        assert!(
            doc.contains("KUBELET_EXTRA_ARGS='--node-labels=rack=r12,vmo.io/pool=gpu --register-with-taints=vmo.io/provisioning:NoSchedule,dedicated=vm:NoExecute'"),
            "{doc}"
        );
        assert!(
            doc.contains("- [sh, -c, 'kubeadm join 10.0.0.1:6443 --token abc.def --discovery-token-ca-cert-hash sha256:00 --node-name \"$(hostname)\"']"),
            "{doc}"
        );
        // No labels, no taints: no kubelet flags at all.
        let bare = render(&Join {
            command: &secret,
            labels: &BTreeMap::new(),
            taints: &[],
        });
        assert!(bare.contains("KUBELET_EXTRA_ARGS=''"), "{bare}");
    }

    #[test]
    fn quotes_in_the_command_cannot_break_out() {
        let secret = Secret::new("kubeadm join x --token 'a'b\nrm -rf /");
        let doc = render(&Join {
            command: &secret,
            labels: &BTreeMap::new(),
            taints: &[],
        });
        let runcmd = doc.lines().find(|l| l.contains("[sh, -c,")).unwrap();
        assert_eq!(
            runcmd,
            "  - [sh, -c, 'kubeadm join x --token ''a''b rm -rf / --node-name \"$(hostname)\"']"
        );
        assert_eq!(doc.lines().count(), 8, "{doc}");
    }
}
