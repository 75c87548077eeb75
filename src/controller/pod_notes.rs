//! `FailedProvisioning` Events on pods that wait, rate-limited: a pod is told again only when why it waits
//! changes, or every `REPEAT_AFTER` while it keeps waiting, so that a batch every second does not write an Event
//! per pending pod each time. The note is what `nodesmith explain pod` says.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::events::EventType;

use super::{Context, events, pods};
use crate::apis::pod::Pod;

/// A pod that keeps waiting for the same reason is told again this often.
const REPEAT_AFTER: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct PodNotes {
    /// Pod key → the last note and when it was written.
    said: HashMap<String, (String, Instant)>,
}

impl PodNotes {
    /// Whether `note` is to be written on pod `key` at `now`; if so, remembered as written.
    fn due(&mut self, key: &str, note: &str, now: Instant) -> bool {
        match self.said.get(key) {
            Some((said, at)) if said == note && now.duration_since(*at) < REPEAT_AFTER => false,
            _ => {
                self.said.insert(key.to_string(), (note.to_string(), now));
                true
            }
        }
    }

    /// Writes each due note as a Warning Event on its pod (a new Event each time: the recorder's own folding
    /// would keep the first note of a reason).
    pub async fn warn(&mut self, ctx: &Context, notes: &[(&Pod, &str)]) {
        let now = Instant::now();
        let due: Vec<&(&Pod, &str)> = notes.iter().filter(|(pod, note)| self.due(&pods::key(pod), note, now)).collect();
        if due.is_empty() {
            return;
        }
        let recorder = ctx.fresh_recorder();
        let writes = due.into_iter().map(|(pod, note)| {
            let object = pod.object_ref(&());
            let recorder = &recorder;
            async move {
                events::publish(recorder, &object, EventType::Warning, "FailedProvisioning", "Provisioning", note)
                    .await;
            }
        });
        futures::future::join_all(writes).await;
    }

    /// Forgets pods no longer waiting, so one that waits again is told at once.
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
        assert!(notes.due("shop/web", "NodePool a: limits", start));
        assert!(!notes.due("shop/web", "NodePool a: limits", start + Duration::from_secs(1)));
        assert!(notes.due("shop/other", "NodePool a: limits", start + Duration::from_secs(1)), "per pod");
        assert!(notes.due("shop/web", "NodePool a: taint", start + Duration::from_secs(2)), "a new reason");
        assert!(!notes.due("shop/web", "NodePool a: taint", start + Duration::from_secs(200)));
        assert!(notes.due("shop/web", "NodePool a: taint", start + Duration::from_secs(303)), "repeated after 5 min");
        notes.keep_only(&HashSet::from(["shop/other".to_string()]));
        assert!(notes.due("shop/web", "NodePool a: taint", start + Duration::from_secs(304)), "forgotten once gone");
    }
}
