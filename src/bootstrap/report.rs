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

    /// Records a resource; counts `calls` mutating calls for it.
    pub fn record(&mut self, kind: &'static str, id: impl Into<String>, action: Action, calls: u32) {
        self.changes += calls;
        self.resources.push(ResourceChange { kind, id: id.into(), action, note: None });
        tracing::info!(kind, action = ?action, "{}", self.resources.last().map_or("", |r| r.id.as_str()));
    }

    pub fn keep(&mut self, kind: &'static str, id: impl Into<String>, note: impl Into<String>) {
        self.resources.push(ResourceChange { kind, id: id.into(), action: Action::Kept, note: Some(note.into()) });
    }

    /// Whether a mutating call should really be made now.
    pub fn may_mutate(&self) -> bool {
        !self.dry_run
    }
}
