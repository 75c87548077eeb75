//! The provisioner's nominations: where the last plans put each pending pod (a NodeClaim being launched, or a
//! Node), so that the next batch does not plan it again and counts it against its target's room, until the
//! scheduler has had time to bind it. Published for disruption, which leaves nominated targets alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::{Context, cluster_snapshot, conditions};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::scheduling_input::pod_request;
use crate::scheduling::ExistingNode;

/// How long a pod stays nominated after its node is ready, for the scheduler to bind it.
const NOMINATION_GRACE: Duration = Duration::from_secs(30);

/// Pod key → where the last plan put it (a NodeClaim being launched, or a Node), and since when. A nominated pod
/// is not planned again, and its requests are debited from its target's free capacity.
#[derive(Debug, Default, Clone)]
pub struct Nominations {
    by_pod: HashMap<String, (String, Instant)>,
}

impl Nominations {
    pub fn nominate(&mut self, pod: &str, target: &str) {
        self.by_pod.insert(pod.to_string(), (target.to_string(), Instant::now()));
    }

    /// Publishes where pods are nominated, for disruption (which leaves those targets alone, counts the pods
    /// against their room and the rest of the pending pods as waiting) and for the NodeClaim lifecycle.
    pub fn publish(&self, ctx: &Context) {
        if let Ok(mut nominated) = ctx.nominated.lock() {
            nominated.clone_from(self);
        }
    }

    /// Whether any pod is nominated to `target`.
    pub fn is_target(&self, target: &str) -> bool {
        self.by_pod.values().any(|(t, _)| t == target)
    }

    /// Every target with the pods nominated to it.
    pub fn by_target(&self) -> HashMap<&str, Vec<&str>> {
        let mut by_target: HashMap<&str, Vec<&str>> = HashMap::new();
        for (pod, (target, _)) in &self.by_pod {
            by_target.entry(target.as_str()).or_default().push(pod.as_str());
        }
        by_target
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
        // Each nominated pod looked up, not every pod of the cluster scanned: this runs on every batch pass.
        self.by_pod.retain(|pod, _| {
            // A pod deleted while it waited wants nothing any more.
            let Some(pod) = ctx.state.pod(pod) else { return false };
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            !(running && pod.node_name().is_some_and(|n| !leaving.contains(n)))
        });
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
        self.forget_those_that_no_longer_fit(ctx, &claims);
    }

    /// Once its target has a Node, a pod stays nominated only while that Node can still take it: the room the bound
    /// pods leave holds it, and none of them keeps it out (a host port, a hostname anti-affinity either way).
    /// kube-scheduler places pods where it likes, and one shut out of its target is planned again now rather than
    /// left Pending for the rest of the grace period. A hostname spread is not a reason: a pod kept off its target
    /// by one is most often swapped with another pod planned elsewhere, which kube-scheduler settles itself when that
    /// node comes, while planning it again launches a node more (drift:600's scale-out, one run each: 374 nodes with
    /// that rule, 333 without).
    fn forget_those_that_no_longer_fit(&mut self, ctx: &Context, claims: &HashMap<String, Arc<NodeClaim>>) {
        if self.by_pod.is_empty() {
            return;
        }
        let node_of = |target: &str| -> Option<Arc<Node>> {
            match claims.get(target) {
                Some(claim) => ctx.state.node(claim.status.as_ref()?.node_name.as_deref()?),
                None => ctx.state.node(target),
            }
        };
        if !self.by_pod.values().any(|(target, _)| node_of(target).is_some()) {
            return;
        }
        let pods_by_node = ctx.state.pods_by_node();
        let mut rooms: HashMap<String, Option<ExistingNode>> = HashMap::new();
        self.by_pod.retain(|key, (target, _)| {
            let Some(node) = node_of(target) else { return true };
            let Some(pod) = ctx.state.pod(key) else { return true };
            if pod.node_name().is_some() {
                return true; // bound already: it waits for nothing from its target
            }
            let name = node.name_any();
            let room = rooms.entry(name.clone()).or_insert_with(|| {
                let bound = pods_by_node.get(&name).map(Vec::as_slice).unwrap_or_default();
                cluster_snapshot::node_room(&node, bound)
            });
            // A Node that does not say what it can hold yet is waited for.
            let Some(room) = room else { return true };
            let Some(spec) = pod.spec.as_ref() else { return true };
            let labels = pod.labels().to_map();
            let Ok(request) = pod_request(key, &labels, spec) else { return true };
            let fits = request.requests.fits_in(&room.available);
            let may_join = request.may_join(&room.pods);
            if !fits || !may_join {
                let why = if fits { "a pod bound there keeps it out" } else { "the pods bound there leave it no room" };
                tracing::debug!(pod = key.as_str(), target = %target, node = %name, available = ?room.available, "nomination dropped: {why}");
            }
            fits && may_join
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apis::pod::Pod;
    use crate::cloud::fake::FakeCloud;
    use crate::controller::state::Objects;
    use crate::controller::testing::{self, node, object, pod};

    /// A NodeClaim whose Node `n1` has registered and is initialized.
    fn initialized_claim() -> NodeClaim {
        object(json!({
            "metadata": {"name": "claim-1", "labels": {"karpenter.sh/nodepool": "default"}},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
            "status": {"nodeName": "n1", "conditions": [
                {"type": "Initialized", "status": "True", "reason": "Initialized", "message": "",
                 "lastTransitionTime": "2026-12-05T00:00:00Z"}]},
        }))
    }

    fn context(pods: Vec<Pod>) -> Arc<Context> {
        let objects = Objects {
            pods,
            nodes: vec![node("n1", json!([]), false)],
            nodeclaims: vec![initialized_claim()],
            ..Default::default()
        };
        testing::context(Arc::new(FakeCloud::default()), objects.into_state())
    }

    #[tokio::test]
    async fn a_pod_crowded_out_of_its_initialized_target_is_planned_again_at_once() {
        // The scheduler put `other` (3 CPU) on n1; `big` (2 CPU) no longer fits there, `small` (500m) still does.
        let ctx = context(vec![pod("other", Some("n1"), "3"), pod("big", None, "2"), pod("small", None, "500m")]);
        let mut nominations = Nominations::default();
        nominations.nominate("shop/big", "claim-1");
        nominations.nominate("shop/small", "claim-1");
        nominations.prune(&ctx);
        assert_eq!(nominations.target_of("shop/big"), None, "crowded out: planned again before the grace ends");
        assert_eq!(nominations.target_of("shop/small"), Some("claim-1"), "still fits: left for the scheduler");
    }

    #[tokio::test]
    async fn a_pod_crowded_out_of_a_node_it_was_nominated_to_is_planned_again_at_once() {
        let ctx = context(vec![pod("other", Some("n1"), "3500m"), pod("big", None, "1"), pod("fits", None, "250m")]);
        let mut nominations = Nominations::default();
        nominations.nominate("shop/big", "n1");
        nominations.nominate("shop/fits", "n1");
        nominations.prune(&ctx);
        assert_eq!(nominations.target_of("shop/big"), None);
        assert_eq!(nominations.target_of("shop/fits"), Some("n1"));
    }

    #[tokio::test]
    async fn a_pod_shut_out_of_its_target_by_a_pod_bound_there_is_planned_again_at_once() {
        // kube-scheduler put `apart` on n1, and `apart` keeps pods named `web` off its node: `web` can never join
        // it, though the room is there. `other` may.
        let mut apart = pod("apart", Some("n1"), "500m");
        let mut spec = apart.spec.take().unwrap_or_default();
        spec.affinity = Some(object(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"name": "web"}}}]}})));
        apart.spec = Some(spec);
        let ctx = context(vec![apart, pod("web", None, "500m"), pod("other", None, "500m")]);
        let mut nominations = Nominations::default();
        nominations.nominate("shop/web", "claim-1");
        nominations.nominate("shop/other", "n1");
        nominations.prune(&ctx);
        assert_eq!(nominations.target_of("shop/web"), None, "shut out: planned again before the grace ends");
        assert_eq!(nominations.target_of("shop/other"), Some("n1"));
    }

    #[tokio::test]
    async fn a_pod_waits_for_its_target_while_the_node_has_room_or_is_not_there_yet() {
        let ctx = context(vec![pod("waits", None, "2"), pod("in-flight", None, "8")]);
        let mut nominations = Nominations::default();
        nominations.nominate("shop/waits", "claim-1");
        // A NodeClaim not in the cache yet (just created) has no Node: its pods are held for the grace period.
        nominations.nominate("shop/in-flight", "claim-just-created");
        nominations.prune(&ctx);
        assert_eq!(nominations.target_of("shop/waits"), Some("claim-1"));
        assert_eq!(nominations.target_of("shop/in-flight"), Some("claim-just-created"));
    }
}
