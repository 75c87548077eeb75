//! `status.lastPodEventTime`: the last time a pod arrived on a NodeClaim's node or left it (finished, or began
//! terminating). `consolidateAfter` counts from it, so a node is not consolidated while its pods still come and go.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::super::{Context, pods};
use crate::apis::nodeclaim::NodeClaim;

/// The pods last seen on each NodeClaim's node, each as a hash of its key.
#[derive(Default)]
pub struct PodEvents {
    seen: HashMap<String, HashSet<u64>>,
}

/// When pods last left each NodeClaim's node, as this process saw it. Consolidation counts no node that lost pods
/// within `consolidateAfter` as room, and `lastPodEventTime` does not say whether a pod came or went.
#[derive(Default)]
pub struct PodDepartures {
    /// When this process first looked: a pod event before it may have been a departure it did not see.
    looking_since: Option<Timestamp>,
    last: HashMap<String, Timestamp>,
}

impl PodDepartures {
    /// The last departure from `claim`'s node: the last one seen, or the node's last pod event where that came
    /// before this process looked (or it does not look: observing, another autoscaler keeps the events).
    pub fn last(&self, claim: &str, last_pod_event: Option<Timestamp>) -> Option<Timestamp> {
        let seen = self.last.get(claim).copied();
        match (self.looking_since, last_pod_event) {
            (Some(since), Some(event)) if event >= since => seen,
            (_, event) => seen.max(event),
        }
    }

    /// Forgets what was seen, when this process stops looking (it is no longer the leader): what happens until it
    /// looks again is not seen.
    pub fn forget(&mut self) {
        self.looking_since = None;
        self.last.clear();
    }
}

/// How the pods on a node changed between two looks: any change, and whether any pod left.
fn compare(before: &HashSet<u64>, now: &HashSet<u64>) -> (bool, bool) {
    let left = before.iter().any(|pod| !now.contains(pod));
    (left || before.len() != now.len(), left)
}

fn hashed<'a>(keys: impl Iterator<Item = &'a str>) -> HashSet<u64> {
    keys.map(|key| {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish()
    })
    .collect()
}

impl PodEvents {
    /// Compares every node's pods with the last look; records a pod event on each NodeClaim whose set changed
    /// (and on one seen for the first time with pods and no event recorded yet), and in `ctx.pod_departures` when
    /// a pod left.
    pub async fn update(&mut self, ctx: &Context) {
        // The time of this look, for every change it sees: the patches go one by one, and with a hundred nodes
        // changed at once (a scale-down) the last would otherwise be stamped seconds after the change.
        let now = Timestamp::now();
        let seen_at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
        let pods_by_node = ctx.state.pods_by_node();
        let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
        let mut alive = HashSet::new();
        let mut departed = Vec::new();
        for claim in ctx.state.nodeclaims.state() {
            if claim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.clone()) else { continue };
            let name = claim.name_any();
            let on_node = pods_by_node.get(&node).map(Vec::as_slice).unwrap_or_default();
            let keys: Vec<String> = on_node
                .iter()
                .filter(|p| !pods::is_daemonset_pod(p) && !pods::is_terminal(p) && !pods::is_terminating(p))
                .map(|p| pods::key(p))
                .collect();
            let pods = hashed(keys.iter().map(String::as_str));
            alive.insert(name.clone());
            let any = !pods.is_empty();
            let (changed, left) = match self.seen.get(&name) {
                Some(before) => compare(before, &pods),
                None => (any && claim.status.as_ref().is_some_and(|s| s.last_pod_event_time.is_none()), false),
            };
            self.seen.insert(name.clone(), pods);
            if left {
                departed.push(name.clone());
            }
            if changed {
                let patch = json!({"status": {"lastPodEventTime": seen_at}});
                if let Err(error) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    tracing::debug!(nodeclaim = %name, "could not record a pod event: {error}");
                    // Try again next look.
                    self.seen.remove(&name);
                }
            }
        }
        self.seen.retain(|name, _| alive.contains(name));
        let mut departures = ctx.pod_departures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        departures.looking_since.get_or_insert(now);
        for name in departed {
            departures.last.insert(name, now);
        }
        departures.last.retain(|name, _| alive.contains(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_tells_a_change_and_a_departure_whatever_the_order() {
        let before = hashed(["x/1", "x/2"].into_iter());
        assert_eq!(compare(&before, &hashed(["x/2", "x/1"].into_iter())), (false, false));
        assert_eq!(compare(&before, &hashed(["x/1", "x/2", "x/3"].into_iter())), (true, false), "one arrived");
        assert_eq!(compare(&before, &hashed(["x/1"].into_iter())), (true, true), "one left");
        assert_eq!(compare(&before, &hashed(["x/1", "x/3"].into_iter())), (true, true), "one left, one came");
        assert_eq!(compare(&HashSet::new(), &HashSet::new()), (false, false));
    }

    #[test]
    fn a_departure_is_what_was_seen_or_any_event_from_before_the_looking_began() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("a time");
        let mut departures = PodDepartures::default();
        // Not looking (observing, or not the leader): every pod event may have been a departure.
        assert_eq!(departures.last("a", Some(at(5))), Some(at(5)));
        assert_eq!(departures.last("a", None), None);
        departures.looking_since = Some(at(10));
        departures.last.insert("a".into(), at(12));
        assert_eq!(departures.last("a", Some(at(20))), Some(at(12)), "the event at 20 was seen: an arrival");
        assert_eq!(departures.last("b", Some(at(20))), None, "seen, and nothing left b");
        assert_eq!(departures.last("b", Some(at(8))), Some(at(8)), "before the looking began");
        departures.forget();
        assert_eq!(departures.last("a", Some(at(20))), Some(at(20)));
    }
}
