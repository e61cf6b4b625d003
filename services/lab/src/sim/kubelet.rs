//! What a joining machine's kubelet registers its Node with, read from the machine's cloud-init
//! user data: the labels of `--node-labels=k=v,k2=v2` and the taints of
//! `--register-with-taints=key=value:Effect,key2:Effect`, wherever the flags appear (Drover writes
//! them into `/etc/default/kubelet` as `KUBELET_EXTRA_ARGS='...'`), quoted or not, `--flag=value`
//! or `--flag value`. Pure.

use serde_json::{Value, json};

/// A taint as kubelet registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    /// Empty for `key:Effect`.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl Taint {
    /// The taint as it appears in a Node's `spec.taints`.
    pub fn to_json(&self) -> Value {
        if self.value.is_empty() {
            json!({"key": self.key, "effect": self.effect})
        } else {
            json!({"key": self.key, "value": self.value, "effect": self.effect})
        }
    }
}

/// The labels and taints a Node registers with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// In flag order; a key given again replaces the earlier value, as kubelet's map flag does.
    pub labels: Vec<(String, String)>,
    /// In flag order; a (key, effect) given again replaces the earlier taint.
    pub taints: Vec<Taint>,
}

/// Reads the registration flags out of `user_data`. Malformed items (a label without `=`, a taint
/// without a known effect, an empty key) are skipped: the lab registers what it can read.
pub fn registration(user_data: &str) -> Registration {
    let mut reg = Registration::default();
    for value in flag_values(user_data, "--node-labels") {
        for item in value.split(',') {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                continue;
            }
            match reg.labels.iter_mut().find(|(key, _)| key == k) {
                Some(l) => l.1 = v.to_string(),
                None => reg.labels.push((k.to_string(), v.to_string())),
            }
        }
    }
    for value in flag_values(user_data, "--register-with-taints") {
        for item in value.split(',') {
            let Some(t) = taint(item.trim()) else {
                continue;
            };
            match reg
                .taints
                .iter_mut()
                .find(|o| o.key == t.key && o.effect == t.effect)
            {
                Some(old) => *old = t,
                None => reg.taints.push(t),
            }
        }
    }
    reg
}

/// `key=value:Effect` or `key:Effect`.
fn taint(item: &str) -> Option<Taint> {
    let (kv, effect) = item.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    (!key.is_empty()).then(|| Taint {
        key: key.to_string(),
        value: value.to_string(),
        effect: effect.to_string(),
    })
}

/// The value of every occurrence of `flag` in `text`, in order: after `=` or blanks, up to the next
/// blank or quote, or inside the quotes that open it.
fn flag_values<'a>(text: &'a str, flag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(flag) {
        let after = &rest[at + flag.len()..];
        rest = after;
        // `--node-labels-extra` is another flag; `--node-labels=` and `--node-labels v` are this one.
        let value = if let Some(v) = after.strip_prefix('=') {
            v
        } else if after.starts_with([' ', '\t']) {
            after.trim_start_matches([' ', '\t'])
        } else {
            continue;
        };
        let value = match value.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let inner = &value[1..];
                &inner[..inner.find(q).unwrap_or(inner.len())]
            }
            _ => {
                let end = value
                    .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
                    .unwrap_or(value.len());
                &value[..end]
            }
        };
        out.push(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn t(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        }
    }

    /// User data as Drover's `cloud_init::render` writes it.
    const RENDERED: &str = "#cloud-config\n\
        write_files:\n  \
        - path: /etc/default/kubelet\n    \
        permissions: '0644'\n    \
        content: |\n      \
        KUBELET_EXTRA_ARGS='--node-labels=drover.dev/pool=vmo,node-role.kubernetes.io/worker= \
        --register-with-taints=drover.dev/provisioning=true:NoSchedule,dedicated:NoExecute'\n\
        runcmd:\n  \
        - [sh, -c, 'kubeadm join 10.0.0.1:6443 --token abc --node-name \"$(hostname)\"']\n";

    #[test]
    fn reads_the_flags_drover_renders() {
        let reg = registration(RENDERED);
        assert_eq!(
            reg.labels,
            labels(&[
                ("drover.dev/pool", "vmo"),
                ("node-role.kubernetes.io/worker", "")
            ])
        );
        assert_eq!(
            reg.taints,
            [
                t("drover.dev/provisioning", "true", "NoSchedule"),
                t("dedicated", "", "NoExecute")
            ]
        );
        assert_eq!(
            reg.taints[1].to_json(),
            json!({"key": "dedicated", "effect": "NoExecute"})
        );
    }

    #[test]
    fn reads_the_flags_anywhere_quoted_or_not() {
        let cases: &[(&str, Registration)] = &[
            ("", Registration::default()),
            (
                "#cloud-config\nruncmd: [kubeadm join x]",
                Registration::default(),
            ),
            (
                "--node-labels a=1,b=2",
                Registration {
                    labels: labels(&[("a", "1"), ("b", "2")]),
                    taints: Vec::new(),
                },
            ),
            (
                "ExecStart=/usr/bin/kubelet --node-labels=\"a=1\" --register-with-taints='k=v:NoSchedule'",
                Registration {
                    labels: labels(&[("a", "1")]),
                    taints: vec![t("k", "v", "NoSchedule")],
                },
            ),
            (
                // At the end of the text, and an item kubelet would refuse next to good ones.
                "x --register-with-taints=bad:Sometimes,=v:NoSchedule,ok:PreferNoSchedule",
                Registration {
                    labels: Vec::new(),
                    taints: vec![t("ok", "", "PreferNoSchedule")],
                },
            ),
            (
                // Given twice: the later value of a key wins; another flag is not this one.
                "--node-labels=a=1,noequals --node-labels-extra=z=9 --node-labels=a=2,b=",
                Registration {
                    labels: labels(&[("a", "2"), ("b", "")]),
                    taints: Vec::new(),
                },
            ),
            (
                "--register-with-taints=k=1:NoSchedule --register-with-taints=k=2:NoSchedule,k:NoExecute",
                Registration {
                    labels: Vec::new(),
                    taints: vec![t("k", "2", "NoSchedule"), t("k", "", "NoExecute")],
                },
            ),
            // A flag without a value.
            ("--node-labels", Registration::default()),
            ("--node-labels=", Registration::default()),
        ];
        for (text, want) in cases {
            assert_eq!(&registration(text), want, "{text}");
        }
    }
}
