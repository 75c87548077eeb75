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

/// What a run reports as it goes: the step it starts, and each resource once decided.
pub enum ProgressEvent<'a> {
    Step(&'a str),
    Resource(&'a ResourceChange),
}

/// Receives [`ProgressEvent`]s (the command line draws a spinner, or prints plain lines).
#[derive(Clone)]
pub struct ProgressObserver(pub std::sync::Arc<dyn Fn(ProgressEvent<'_>) + Send + Sync>);

impl std::fmt::Debug for ProgressObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressObserver")
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
    #[serde(skip)]
    pub observer: Option<ProgressObserver>,
}

impl Ledger {
    pub fn new(dry_run: bool) -> Self {
        Self { dry_run, ..Self::default() }
    }

    pub fn with_observer(dry_run: bool, observer: Option<ProgressObserver>) -> Self {
        Self { dry_run, observer, ..Self::default() }
    }

    /// Announces the next step to the observer, if any.
    pub fn step(&self, name: &str) {
        if let Some(observer) = &self.observer {
            (observer.0)(ProgressEvent::Step(name));
        }
    }

    fn observe_last(&self) {
        if let (Some(observer), Some(last)) = (&self.observer, self.resources.last()) {
            (observer.0)(ProgressEvent::Resource(last));
        }
    }

    /// Records a resource; counts `calls` mutating calls for it. The record is returned for its spec.
    pub fn record(
        &mut self,
        kind: &'static str,
        id: impl Into<String>,
        action: Action,
        calls: u32,
    ) -> &mut ResourceChange {
        self.push(kind, id.into(), action, calls, None)
    }

    /// `record`, with a note that the progress shows too.
    pub fn record_noted(
        &mut self,
        kind: &'static str,
        id: impl Into<String>,
        action: Action,
        calls: u32,
        note: impl Into<String>,
    ) -> &mut ResourceChange {
        self.push(kind, id.into(), action, calls, Some(note.into()))
    }

    fn push(
        &mut self,
        kind: &'static str,
        id: String,
        action: Action,
        calls: u32,
        note: Option<String>,
    ) -> &mut ResourceChange {
        self.changes += calls;
        tracing::info!(kind, action = ?action, "{id}");
        self.resources.push(ResourceChange { kind, id, action, note, spec: None });
        self.observe_last();
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
        self.observe_last();
    }

    /// Whether a mutating call should really be made now.
    pub fn may_mutate(&self) -> bool {
        !self.dry_run
    }
}
