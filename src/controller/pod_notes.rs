//! `FailedProvisioning` Events on pods that wait, rate-limited: a pod is told again only when why it waits
//! changes, or every `REPEAT_AFTER` while it keeps waiting, so that a batch every second does not write an Event
//! per pending pod each time. A repeat counts on the pod's last Event (an Event series); a new reason is a new
//! Event. The note is what `nodesmith explain pod` says.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{EventType, Recorder};

use super::{Context, events, pods};
use crate::apis::pod::Pod;

/// A pod that keeps waiting for the same reason is told again this often (well within the recorder's 6 minutes
/// of memory, so the repeat joins the series).
const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// The type, reason and action of the Events a `PodNotes` writes.
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
}

const FAILED_PROVISIONING: Note =
    Note { type_: EventType::Warning, reason: "FailedProvisioning", action: "Provisioning" };

#[derive(Default)]
pub struct PodNotes {
    /// Pod key → the last note, when it was written, and the recorder that wrote it (whose memory of that Event
    /// turns a repeat into a count on it).
    said: HashMap<String, (String, Instant, Option<Recorder>)>,
}

/// Whether a note is to be written.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    No,
    /// A new reason (or the first): a new Event.
    New,
    /// The same reason, again: a count on the last Event.
    Repeat,
}

impl PodNotes {
    fn due(&mut self, key: &str, note: &str, now: Instant) -> Due {
        match self.said.get_mut(key) {
            Some((said, at, _)) if said == note => {
                if now.duration_since(*at) < REPEAT_AFTER {
                    return Due::No;
                }
                *at = now;
                Due::Repeat
            }
            _ => {
                self.said.insert(key.to_string(), (note.to_string(), now, None));
                Due::New
            }
        }
    }

    /// Writes each due note as a `FailedProvisioning` Warning Event on its pod.
    pub async fn warn(&mut self, ctx: &Context, notes: &[(&Pod, &str)]) {
        let notes: Vec<(String, ObjectReference, &str)> =
            notes.iter().map(|(pod, note)| (pods::key(pod), pod.object_ref(&()), *note)).collect();
        self.tell(ctx, &FAILED_PROVISIONING, &notes).await;
    }

    /// Writes each due note (keyed by its object, e.g. a pod's `namespace/name`) as a `kind` Event on the object.
    pub async fn tell(&mut self, ctx: &Context, kind: &Note, notes: &[(String, ObjectReference, &str)]) {
        let now = Instant::now();
        let mut writes = Vec::new();
        for (key, object, note) in notes {
            let due = self.due(key, note, now);
            if due == Due::No {
                continue;
            }
            let Some((_, _, recorder)) = self.said.get_mut(key) else { continue };
            let recorder = match (due, recorder.as_ref()) {
                (Due::Repeat, Some(recorder)) => recorder.clone(),
                _ => recorder.insert(ctx.fresh_recorder()).clone(),
            };
            writes.push(async move {
                events::publish(&recorder, object, kind.type_, kind.reason, kind.action, note).await;
            });
        }
        futures::future::join_all(writes).await;
    }

    /// Forgets objects no longer waiting (pods, or the keys given to `tell`), so one that waits again is told at once.
    pub fn keep_only(&mut self, waiting: &HashSet<String>) {
        self.said.retain(|key, _| waiting.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_told_again_only_when_why_changes_or_after_a_while() {
        let mut notes = PodNotes::default();
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(notes.due("shop/web", "NodePool a: limits", start), Due::New);
        assert_eq!(notes.due("shop/web", "NodePool a: limits", at(1)), Due::No);
        assert_eq!(notes.due("shop/other", "NodePool a: limits", at(1)), Due::New, "per pod");
        assert_eq!(notes.due("shop/web", "NodePool a: taint", at(2)), Due::New, "a new reason");
        assert_eq!(notes.due("shop/web", "NodePool a: taint", at(50)), Due::No);
        assert_eq!(notes.due("shop/web", "NodePool a: taint", at(63)), Due::Repeat, "again after a minute");
        assert_eq!(notes.due("shop/web", "NodePool a: taint", at(100)), Due::No, "a minute from the repeat");
        notes.keep_only(&HashSet::from(["shop/other".to_string()]));
        assert_eq!(notes.due("shop/web", "NodePool a: taint", at(101)), Due::New, "forgotten once gone");
    }
}
