//! The set of workflow kinds a process knows, looked up by name at submission and at claim.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::kind::Workflow;
use crate::model::{Phase, Task};

/// Workflow kinds by name.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn Workflow>>,
    max_descendants: u64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            kinds: BTreeMap::new(),
            max_descendants: crate::model::DEFAULT_MAX_DESCENDANTS,
        }
    }
}

/// Why a submission was refused before anything was written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("unknown workflow kind {kind:?}; known kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("invalid input for {kind}: {reason}")]
    InvalidInput { kind: String, reason: String },
}

impl Registry {
    /// Every kind Drover ships.
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        registry.register(Arc::new(crate::synthetic::Synthetic));
        registry.register(Arc::new(crate::drain_node::DrainNode));
        registry.register(Arc::new(crate::migrate_vmi::MigrateVmi));
        registry.register(Arc::new(crate::rolling_maintenance::RollingMaintenance));
        registry
    }

    /// Sets the most workflows one top-level workflow may create (0: no limit).
    pub fn with_max_descendants(mut self, max: u64) -> Registry {
        self.max_descendants = max;
        self
    }

    /// The most workflows one top-level workflow may create (0: no limit).
    pub fn max_descendants(&self) -> u64 {
        self.max_descendants
    }

    pub fn register(&mut self, workflow: Arc<dyn Workflow>) {
        self.kinds.insert(workflow.kind(), workflow);
    }

    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Workflow>, Error> {
        self.kinds.get(kind).ok_or_else(|| Error::UnknownKind {
            kind: kind.to_string(),
            known: self.kinds.keys().copied().collect::<Vec<_>>().join(", "),
        })
    }

    /// Validates a submission and returns its first task.
    pub fn first_task(&self, kind: &str, input: &Value, now_ms: u64) -> Result<Task, Error> {
        let workflow = self.get(kind)?;
        workflow
            .validate(input)
            .map_err(|reason| Error::InvalidInput {
                kind: kind.to_string(),
                reason,
            })?;
        let descendants = workflow.descendants(input);
        if self.max_descendants > 0 && descendants > self.max_descendants {
            return Err(Error::InvalidInput {
                kind: kind.to_string(),
                reason: format!(
                    "the input creates {descendants} workflows (children and their children); \
                     at most {} are allowed per workflow",
                    self.max_descendants
                ),
            });
        }
        if workflow.steps(input).is_empty() {
            return Err(Error::InvalidInput {
                kind: kind.to_string(),
                reason: "the input yields no steps".to_string(),
            });
        }
        Ok(crate::decide::first_task(
            now_ms,
            workflow.permits(0, Phase::Forward, input),
        ))
    }
}
