//! Events the controller records on the objects it acts on (NodeClaims, Nodes, pods, NodePools). Recording is
//! best effort: an Event that cannot be written is logged at debug level and never fails the caller's work.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::apis::nodeclaim::NodeClaim;

/// The API server refuses notes past 1 KiB.
const NOTE_LIMIT: usize = 1000;

/// Records one Event on `object`.
pub async fn publish(
    recorder: &Recorder,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(NOTE_LIMIT).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, object).await {
        let name = object.name.as_deref().unwrap_or_default();
        let kind = object.kind.as_deref().unwrap_or_default();
        tracing::debug!("could not record a {reason} Event on {kind} {name}: {error}");
    }
}

/// An Event on a NodeClaim, its reason also its action.
pub async fn on_nodeclaim(recorder: &Recorder, claim: &NodeClaim, type_: EventType, reason: &str, note: &str) {
    publish(recorder, &claim.object_ref(&()), type_, reason, reason, note).await;
}
