//! `status.lastPodEventTime`: the last time a pod arrived on a NodeClaim's node or left it (finished, or began
//! terminating). `consolidateAfter` counts from it, so a node is not consolidated while its pods still come and go.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::super::{Context, pods};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::pod::Pod;

/// What the pod-event looks saw: each NodeClaim's pods at the last look, and when pods last left it.
/// `lastPodEventTime` does not say whether a pod came or went, and consolidation counts no node that lost pods
/// within `consolidateAfter` as room; and a change since the last look is a pod event the status does not show yet.
#[derive(Default)]
pub struct PodActivity {
    /// When this process first looked: a pod event before it may have been a departure it did not see.
    looking_since: Option<Timestamp>,
    /// The pods on each NodeClaim's node at the last look, each as a hash of its key.
    seen: HashMap<String, HashSet<u64>>,
    departed: HashMap<String, Timestamp>,
    /// When a look last saw each NodeClaim's pods change: a look patches `lastPodEventTime` one NodeClaim at a
    /// time, and a pass in between must not read the old time beside the new pod set.
    changed: HashMap<String, Timestamp>,
}

/// A NodeClaim's pod events as a pass should count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodEventTimes {
    pub last_event: Option<Timestamp>,
    pub last_departure: Option<Timestamp>,
}

impl PodActivity {
    /// `claim`'s last pod event and departure, given its `lastPodEventTime` and the pods on its node now. A change
    /// since the last look counts from now: the next look records it, but a pass in between (an emptiness command
    /// validated just after the last pod of a scale-down left) must not take the node as quiet. A departure is the
    /// last one seen, or the node's last pod event where that came before this process looked (or it does not
    /// look: observing, another autoscaler keeps the events).
    pub fn times(
        &self,
        claim: &str,
        last_pod_event: Option<Timestamp>,
        pods_now: &[Arc<Pod>],
        now: Timestamp,
    ) -> PodEventTimes {
        let departed = self.departed.get(claim).copied();
        let last_pod_event = last_pod_event.max(self.changed.get(claim).copied());
        let mut times = match (self.looking_since, last_pod_event) {
            (Some(since), Some(event)) if event >= since => {
                PodEventTimes { last_event: Some(event), last_departure: departed }
            }
            (_, event) => PodEventTimes { last_event: event, last_departure: departed.max(event) },
        };
        if let Some(before) = self.seen.get(claim) {
            let (changed, left) = compare(before, &pod_set(pods_now));
            if changed {
                times.last_event = Some(now);
            }
            if left {
                times.last_departure = Some(now);
            }
        }
        times
    }

    /// Forgets what was seen, when this process stops looking (it is no longer the leader): what happens until it
    /// looks again is not seen.
    pub fn forget(&mut self) {
        *self = Self::default();
    }
}

/// The pods that make a node's pod events (not DaemonSet pods, not finished, not terminating), as hashes.
fn pod_set(on_node: &[Arc<Pod>]) -> HashSet<u64> {
    on_node
        .iter()
        .filter(|p| !pods::is_daemonset_pod(p) && !pods::is_terminal(p) && !pods::is_terminating(p))
        .map(|p| {
            let mut hasher = DefaultHasher::new();
            pods::key(p).hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

/// How the pods on a node changed between two looks: any change, and whether any pod left.
fn compare(before: &HashSet<u64>, now: &HashSet<u64>) -> (bool, bool) {
    let left = before.iter().any(|pod| !now.contains(pod));
    (left || before.len() != now.len(), left)
}

/// Compares every node's pods with the last look (`ctx.pod_activity`); records a pod event on each NodeClaim whose
/// pods changed (and on one seen for the first time with pods and no event recorded yet), and a departure where a
/// pod left.
pub async fn look(ctx: &Context) {
    // The time of this look, for every change it sees: the patches go one by one, and with a hundred nodes
    // changed at once (a scale-down) the last would otherwise be stamped seconds after the change.
    let now = Timestamp::now();
    let seen_at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
    let pods_by_node = ctx.state.pods_by_node();
    let mut changes = Vec::new();
    {
        let mut activity = ctx.pod_activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut alive = HashSet::new();
        for claim in ctx.state.nodeclaims.state() {
            if claim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.clone()) else { continue };
            let name = claim.name_any();
            let pods = pod_set(pods_by_node.get(&node).map(Vec::as_slice).unwrap_or_default());
            let unrecorded = claim.status.as_ref().is_some_and(|s| s.last_pod_event_time.is_none());
            let (changed, left) = match activity.seen.get(&name) {
                Some(before) => compare(before, &pods),
                None => (!pods.is_empty() && unrecorded, false),
            };
            activity.seen.insert(name.clone(), pods);
            if left {
                activity.departed.insert(name.clone(), now);
            }
            if changed {
                activity.changed.insert(name.clone(), now);
                changes.push(name.clone());
            }
            alive.insert(name);
        }
        activity.seen.retain(|name, _| alive.contains(name));
        activity.departed.retain(|name, _| alive.contains(name));
        activity.changed.retain(|name, _| alive.contains(name));
        activity.looking_since.get_or_insert(now);
    }
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    for name in changes {
        let patch = json!({"status": {"lastPodEventTime": seen_at}});
        if let Err(error) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            tracing::debug!(nodeclaim = %name, "could not record a pod event: {error}");
            // Seen as new next look, so the change is recorded then (if the status still has no event).
            ctx.pod_activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner).seen.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("a".into());
        pod.metadata.name = Some(name.into());
        Arc::new(pod)
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("a time")
    }

    #[test]
    fn a_look_tells_a_change_and_a_departure_whatever_the_order() {
        let set = |names: &[&str]| pod_set(&names.iter().map(|n| pod(n)).collect::<Vec<_>>());
        let before = set(&["1", "2"]);
        assert_eq!(compare(&before, &set(&["2", "1"])), (false, false));
        assert_eq!(compare(&before, &set(&["1", "2", "3"])), (true, false), "one arrived");
        assert_eq!(compare(&before, &set(&["1"])), (true, true), "one left");
        assert_eq!(compare(&before, &set(&["1", "3"])), (true, true), "one left, one came");
        assert_eq!(compare(&HashSet::new(), &HashSet::new()), (false, false));
    }

    #[test]
    fn departures_are_those_seen_or_any_event_from_before_the_looking_began() {
        let mut activity = PodActivity::default();
        let times = |event, departure| PodEventTimes { last_event: event, last_departure: departure };
        // Not looking (observing, or not the leader): every pod event may have been a departure.
        assert_eq!(activity.times("a", Some(at(5)), &[], at(30)), times(Some(at(5)), Some(at(5))));
        assert_eq!(activity.times("a", None, &[], at(30)), times(None, None));
        activity.looking_since = Some(at(10));
        activity.departed.insert("a".into(), at(12));
        let seen = activity.times("a", Some(at(20)), &[], at(30));
        assert_eq!(seen, times(Some(at(20)), Some(at(12))), "the event at 20 was seen: an arrival");
        assert_eq!(activity.times("b", Some(at(20)), &[], at(30)), times(Some(at(20)), None), "nothing left b");
        assert_eq!(activity.times("b", Some(at(8)), &[], at(30)), times(Some(at(8)), Some(at(8))), "before looking");
        activity.forget();
        assert_eq!(activity.times("a", Some(at(20)), &[], at(30)), times(Some(at(20)), Some(at(20))));
    }

    #[test]
    fn a_change_since_the_last_look_is_an_event_now() {
        let mut activity = PodActivity { looking_since: Some(at(0)), ..PodActivity::default() };
        activity.seen.insert("a".into(), pod_set(&[pod("1"), pod("2")]));
        let unchanged = activity.times("a", Some(at(5)), &[pod("2"), pod("1")], at(30));
        assert_eq!((unchanged.last_event, unchanged.last_departure), (Some(at(5)), None));
        let came = activity.times("a", Some(at(5)), &[pod("1"), pod("2"), pod("3")], at(30));
        assert_eq!((came.last_event, came.last_departure), (Some(at(30)), None));
        // The last pod of a scale-down left between two looks: the node is not quiet since its last recorded event.
        let left = activity.times("a", Some(at(5)), &[], at(30));
        assert_eq!((left.last_event, left.last_departure), (Some(at(30)), Some(at(30))));
    }

    #[test]
    fn a_change_a_look_saw_counts_before_its_patch_lands() {
        let mut activity = PodActivity { looking_since: Some(at(0)), ..PodActivity::default() };
        // The look at 20 saw a pod leave and is still patching other NodeClaims: the status says 5.
        activity.seen.insert("a".into(), pod_set(&[pod("1")]));
        activity.changed.insert("a".into(), at(20));
        activity.departed.insert("a".into(), at(20));
        let times = activity.times("a", Some(at(5)), &[pod("1")], at(22));
        assert_eq!((times.last_event, times.last_departure), (Some(at(20)), Some(at(20))));
        // Once it lands, the status is as late or later.
        let landed = activity.times("a", Some(at(21)), &[pod("1")], at(22));
        assert_eq!(landed.last_event, Some(at(21)));
    }
}
