//! The Events written on an object (by nodesmith, the scheduler, anyone), newest last: what `kubectl describe`
//! shows under Events.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde::Serialize;

/// How many of an object's Events are shown.
const SHOWN: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    /// When it last happened (RFC 3339).
    pub time: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    /// Who wrote it.
    pub from: String,
    pub message: String,
}

/// The Events on `kind` `name` (cluster-scoped objects' Events live in `default`). Events are a help, not the
/// answer: when they cannot be read, the explanation says so with none listed rather than failing.
pub async fn of(kube: &kube::Client, kind: &str, namespace: Option<&str>, name: &str) -> Vec<EventLine> {
    let api: Api<Event> = Api::namespaced(kube.clone(), namespace.unwrap_or("default"));
    let params = ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={name}"));
    match api.list(&params).await {
        Ok(list) => latest(list.items.iter().map(line).collect()),
        Err(error) => {
            tracing::warn!("could not read the Events of {kind} {name}: {error}");
            Vec::new()
        }
    }
}

/// The newest `SHOWN`, oldest first.
pub fn latest(mut lines: Vec<EventLine>) -> Vec<EventLine> {
    lines.sort_by(|a, b| a.time.cmp(&b.time));
    let skip = lines.len().saturating_sub(SHOWN);
    lines.split_off(skip)
}

fn line(event: &Event) -> EventLine {
    let time = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let from = event
        .reporting_component
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| event.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default();
    EventLine {
        time: time.map(super::rfc3339).unwrap_or_default(),
        type_: event.type_.clone().unwrap_or_default(),
        reason: event.reason.clone().unwrap_or_default(),
        from,
        message: event.message.clone().unwrap_or_default(),
    }
}

/// The Events as indented lines for the human form.
pub fn human(lines: &[EventLine]) -> String {
    if lines.is_empty() {
        return "Events: none\n".into();
    }
    let mut out = String::from("Events (newest last):\n");
    for line in lines {
        out += &format!("  {}  {} {} ({}): {}\n", line.time, line.type_, line.reason, line.from, line.message);
    }
    out
}
