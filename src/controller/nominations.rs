//! The provisioner's nominations: where the last plans put each pending pod (a NodeClaim being launched, or a
//! Node), so that the next batch does not plan it again and counts it against its target's room, until the
//! scheduler has had time to bind it. Published for disruption, which leaves nominated targets alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::{Context, cluster_snapshot, conditions, pods};
use crate::apis::nodeclaim::NodeClaim;

/// How long a pod stays nominated after its node is ready, for the scheduler to bind it.
const NOMINATION_GRACE: Duration = Duration::from_secs(30);

/// Pod key → where the last plan put it (a NodeClaim being launched, or a Node), and since when. A nominated pod
/// is not planned again, and its requests are debited from its target's free capacity.
#[derive(Debug, Default)]
pub struct Nominations {
    by_pod: HashMap<String, (String, Instant)>,
}

impl Nominations {
    pub fn nominate(&mut self, pod: &str, target: &str) {
        self.by_pod.insert(pod.to_string(), (target.to_string(), Instant::now()));
    }

    /// Publishes the nodes and NodeClaims pods are nominated to, for disruption to leave them alone.
    pub fn publish(&self, ctx: &Context) {
        let targets: HashSet<String> = self.by_pod.values().map(|(target, _)| target.clone()).collect();
        if let Ok(mut nominated) = ctx.nominated.lock() {
            *nominated = targets;
        }
    }

    pub fn target_of(&self, pod: &str) -> Option<&str> {
        self.by_pod.get(pod).map(|(target, _)| target.as_str())
    }

    /// The pods nominated to `target`.
    pub fn pods_of<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.by_pod.iter().filter(move |(_, (t, _))| t == target).map(|(pod, _)| pod.as_str())
    }

    /// Forgets a nomination once its target is gone, or once the scheduler has had time to bind the pod: a
    /// NodeClaim's pods wait for its node to be initialized, a Node's for the grace period.
    pub fn prune(&mut self, ctx: &Context) {
        if self.by_pod.is_empty() {
            return;
        }
        // A nominated pod now running (not on a node being taken away, where it waits for its replacement) has
        // what it waited for: its nomination ends.
        let leaving = cluster_snapshot::leaving_nodes(ctx);
        let running: HashSet<String> = ctx
            .state
            .pods
            .state()
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| p.node_name().is_some_and(|n| !leaving.contains(n)))
            .map(|p| pods::key(&p))
            .collect();
        // A pod deleted while it waited wants nothing any more.
        self.by_pod.retain(|pod, _| {
            let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
            ctx.state.pods.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)).is_some()
        });
        self.by_pod.retain(|pod, _| !running.contains(pod));
        let claims: HashMap<String, Arc<NodeClaim>> =
            ctx.state.nodeclaims.state().into_iter().map(|c| (c.name_any(), c)).collect();
        self.by_pod.retain(|_, (target, since)| match claims.get(target.as_str()) {
            Some(c) if c.metadata.deletion_timestamp.is_some() => false,
            Some(c) => {
                let initialized = c.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, "Initialized"));
                !(initialized && since.elapsed() > NOMINATION_GRACE)
            }
            // A Node, or a NodeClaim just created and not yet in the cache: held for the grace period.
            None => since.elapsed() < NOMINATION_GRACE,
        });
    }
}
