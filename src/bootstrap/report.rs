//! What setup and teardown did (or, with `--dry-run`, would do), resource by resource.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Deleted,
    /// Left in place: not ours, or still in use (the note says which).
    Kept,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    pub kind: &'static str,
    pub id: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the resource is made to hold (documents, attributes, tags), whatever the action: what a dry run shows,
    /// and what the Terraform module is compared against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

impl ResourceChange {
    pub fn spec(&mut self, spec: serde_json::Value) {
        self.spec = Some(spec);
    }
}

/// The record of one run.
#[derive(Debug, Default, Serialize)]
pub struct Ledger {
    /// Mutating AWS and Kubernetes calls made (with `--dry-run`: that would have been made).
    pub changes: u32,
    pub dry_run: bool,
    pub resources: Vec<ResourceChange>,
    /// What the next steps need (role ARNs, queue name, endpoint...), by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<&'static str, String>,
}

impl Ledger {
    pub fn new(dry_run: bool) -> Self {
        Self { dry_run, ..Self::default() }
    }

    /// Records a resource; counts `calls` mutating calls for it. The record is returned for its spec.
    pub fn record(
        &mut self,
        kind: &'static str,
        id: impl Into<String>,
        action: Action,
        calls: u32,
    ) -> &mut ResourceChange {
        self.changes += calls;
        let id = id.into();
        tracing::info!(kind, action = ?action, "{id}");
        self.resources.push(ResourceChange { kind, id, action, note: None, spec: None });
        let last = self.resources.len() - 1;
        &mut self.resources[last]
    }

    pub fn keep(&mut self, kind: &'static str, id: impl Into<String>, note: impl Into<String>) {
        self.resources.push(ResourceChange {
            kind,
            id: id.into(),
            action: Action::Kept,
            note: Some(note.into()),
            spec: None,
        });
    }

    /// Whether a mutating call should really be made now.
    pub fn may_mutate(&self) -> bool {
        !self.dry_run
    }
}
