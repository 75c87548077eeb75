//! `status.lastPodEventTime`: the last time a pod arrived on a NodeClaim's node or left it (finished, or began
//! terminating). `consolidateAfter` counts from it, so a node is not consolidated while its pods still come and go.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::super::{Context, pods};
use crate::apis::nodeclaim::NodeClaim;

/// The pod set last seen on each NodeClaim's node, as a fingerprint.
#[derive(Default)]
pub struct PodEvents {
    seen: HashMap<String, u64>,
}

fn fingerprint<'a>(keys: impl Iterator<Item = &'a str>) -> (u64, bool) {
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    let mut hasher = DefaultHasher::new();
    keys.hash(&mut hasher);
    (hasher.finish(), !keys.is_empty())
}

impl PodEvents {
    /// Compares every node's pods with the last look; records a pod event on each NodeClaim whose set changed
    /// (and on one seen for the first time with pods and no event recorded yet).
    pub async fn update(&mut self, ctx: &Context) {
        // The time of this look, for every change it sees: the patches go one by one, and with a hundred nodes
        // changed at once (a scale-down) the last would otherwise be stamped seconds after the change.
        let seen_at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let pods_by_node = ctx.state.pods_by_node();
        let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
        let mut alive = HashSet::new();
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
            let (print, any) = fingerprint(keys.iter().map(String::as_str));
            alive.insert(name.clone());
            let changed = match self.seen.insert(name.clone(), print) {
                Some(before) => before != print,
                None => any && claim.status.as_ref().is_some_and(|s| s.last_pod_event_time.is_none()),
            };
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_order_and_sees_any_change() {
        let (a, any) = fingerprint(["x/1", "x/2"].into_iter());
        assert!(any);
        assert_eq!(a, fingerprint(["x/2", "x/1"].into_iter()).0);
        assert_ne!(a, fingerprint(["x/1"].into_iter()).0);
        assert!(!fingerprint(std::iter::empty()).1);
    }
}
