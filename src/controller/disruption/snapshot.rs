//! The cluster as disruption sees it, gathered from the watch caches: each NodeClaim with its Node and the pods
//! that would have to move, each NodePool's disruption settings, and the room of every other node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::apis::pod::Pod;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;

use super::super::nominations::Nominations;
use super::super::volume_topology::pod_request_with_volumes;
use super::super::{Context, cluster_snapshot, conditions, pods};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::{ConsolidationPolicy, DisruptionReason, NodePool};
use crate::apis::scheduling_input::label_selector;
use crate::catalog::{CapacityType, Catalog, OfferingKey};
use crate::disruption::budgets::{Budget, Nodes};
use crate::disruption::{ManagedNode, MovablePod, Policy, PoolPolicy, Reason, Snapshot};
use crate::names::{
    CAPACITY_TYPE_LABEL, CAPACITY_TYPE_SPOT, DO_NOT_DISRUPT_ANNOTATION, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL,
    POD_DELETION_COST_ANNOTATION, REPLACES_ANNOTATION, ZONE_LABEL,
};
use crate::scheduling::{DaemonSetPod, ExistingNode, NodePoolSpec, PodRequest};

/// What a snapshot borrows from: gathered once per pass.
pub struct Gathered {
    /// The instance types and prices as they were when gathered.
    pub catalog: Arc<Catalog>,
    pub nodepools: Vec<NodePoolSpec>,
    pub pool_objects: HashMap<String, Arc<NodePool>>,
    pub daemonsets: Vec<DaemonSetPod>,
    pub unavailable: HashSet<OfferingKey>,
    pub pools: Vec<PoolPolicy>,
    /// NodePools whose disruption settings cannot be read, with why: nothing of theirs is disrupted.
    pub refused_pools: Vec<(Arc<NodePool>, String)>,
    pub nodes: Vec<ManagedNode>,
    pub other_room: Vec<ExistingNode>,
    pub in_flight: Vec<ExistingNode>,
    /// Pods waiting for a place and nominated nowhere, as the scheduler's requests.
    pub pending: Vec<PodRequest>,
}

impl Gathered {
    pub fn snapshot<'a>(&'a self, ctx: &'a Context) -> Snapshot<'a> {
        Snapshot {
            now: jiff::Timestamp::now(),
            pools: &self.pools,
            nodes: &self.nodes,
            other_room: &self.other_room,
            in_flight: &self.in_flight,
            pending: &self.pending,
            nodepools: &self.nodepools,
            instance_types: &self.catalog.instance_types,
            prices: &self.catalog.prices,
            daemonsets: &self.daemonsets,
            unavailable: &self.unavailable,
            settings: ctx.settings.disruption,
        }
    }
}

/// A NodePool's disruption settings, or why they cannot be read.
pub fn pool_policy(pool: &NodePool) -> Result<PoolPolicy, String> {
    let disruption = &pool.spec.disruption;
    // A static pool (replicas set) keeps its count: consolidation settings do not apply.
    let consolidate_after = if pool.spec.replicas.is_some() {
        None
    } else {
        crate::duration::parse_or_never(&disruption.consolidate_after)
            .map_err(|e| format!("spec.disruption.consolidateAfter: {e}"))?
    };
    let policy = match disruption.consolidation_policy {
        ConsolidationPolicy::WhenEmpty => Policy::WhenEmpty,
        ConsolidationPolicy::WhenEmptyOrUnderutilized => Policy::WhenEmptyOrUnderutilized,
        ConsolidationPolicy::Balanced => Policy::Balanced,
    };
    let mut budgets = Vec::new();
    for (i, budget) in disruption.budgets.iter().enumerate() {
        let duration = match budget.duration.as_deref() {
            Some(text) => Some(
                crate::duration::parse(text)
                    .ok_or_else(|| format!("spec.disruption.budgets[{i}].duration: {text:?} is not a duration"))?,
            ),
            None => None,
        };
        let reasons = budget
            .reasons
            .iter()
            .map(|r| match r {
                DisruptionReason::Empty => Reason::Empty,
                DisruptionReason::Underutilized => Reason::Underutilized,
                DisruptionReason::Drifted => Reason::Drifted,
            })
            .collect();
        let parsed = Budget::parse(&budget.nodes, budget.schedule.as_deref(), duration, reasons)
            .map_err(|e| format!("spec.disruption.budgets[{i}]: {e}"))?;
        budgets.push(parsed);
    }
    Ok(PoolPolicy { name: pool.name_any(), policy, consolidate_after, budgets })
}

/// Why a pod may not be moved voluntarily, or None.
fn blocker(pod: &Pod, budgets: &[&PodDisruptionBudget]) -> Option<String> {
    if pods::is_do_not_disrupt(pod) {
        return Some(format!("it is annotated {DO_NOT_DISRUPT_ANNOTATION}"));
    }
    if !pod.owner_references().iter().any(|o| o.controller == Some(true)) {
        return Some("it has no controller to recreate it elsewhere".into());
    }
    let namespace = pod.namespace().unwrap_or_default();
    let labels = pod.labels();
    let matching: Vec<&&PodDisruptionBudget> = budgets
        .iter()
        .filter(|b| b.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|b| {
            let selector = b.spec.as_ref().and_then(|s| s.selector.as_ref());
            selector
                .and_then(|s| label_selector(s).ok())
                .is_some_and(|reqs| reqs.iter().all(|r| r.matches(labels.get(&r.key).map(String::as_str))))
        })
        .collect();
    if matching.len() > 1 {
        return Some("more than one PodDisruptionBudget selects it (the Eviction API refuses such pods)".into());
    }
    if let Some(budget) = matching.first()
        && budget.status.as_ref().is_some_and(|s| s.disruptions_allowed == Some(0))
    {
        return Some(format!("PodDisruptionBudget {namespace}/{} allows no eviction now", budget.name_any()));
    }
    None
}

/// Karpenter's eviction cost: 1, raised or lowered by the pod-deletion-cost annotation and the priority,
/// clamped to [-10, 10].
fn eviction_cost(pod: &Pod) -> f64 {
    let mut cost = 1.0;
    if let Some(deletion_cost) = pod.annotations().get(POD_DELETION_COST_ANNOTATION).and_then(|v| v.parse::<f64>().ok())
    {
        cost += deletion_cost / 2f64.powi(27);
    }
    if let Some(priority) = pod.spec.as_ref().and_then(|s| s.priority) {
        cost += f64::from(priority) / 2f64.powi(25);
    }
    cost.clamp(-10.0, 10.0)
}

fn capacity_type(labels: &BTreeMap<String, String>) -> CapacityType {
    if labels.get(CAPACITY_TYPE_LABEL).map(String::as_str) == Some(CAPACITY_TYPE_SPOT) {
        CapacityType::Spot
    } else {
        CapacityType::OnDemand
    }
}

fn node_ready(node: &Node) -> bool {
    node.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == "Ready" && c.status == "True")
}

fn timestamp(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<jiff::Timestamp> {
    time.map(|t| t.0)
}

/// Reads everything a pass needs. `drifted` gives the drift reason of a NodeClaim (computed by the caller).
pub fn gather(ctx: &Context, drifted: &dyn Fn(&NodeClaim, &Node) -> Option<String>) -> Gathered {
    let catalog = ctx.catalog();
    let activity = ctx.pod_activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = jiff::Timestamp::now();
    let (nodepools, pool_objects) = cluster_snapshot::ready_nodepools(ctx);
    let mut pools = Vec::new();
    let mut refused_pools = Vec::new();
    for pool in ctx.state.nodepools.state() {
        match pool_policy(&pool) {
            Ok(policy) => pools.push(policy),
            Err(why) => {
                // Nothing of an unreadable pool is disrupted voluntarily.
                pools.push(PoolPolicy {
                    name: pool.name_any(),
                    policy: Policy::WhenEmpty,
                    consolidate_after: None,
                    budgets: vec![Budget { nodes: Nodes::Count(0), window: None, reasons: Vec::new() }],
                });
                refused_pools.push((pool, why));
            }
        }
    }
    let pdbs = ctx.state.pdbs.state();
    let pdb_refs: Vec<&PodDisruptionBudget> = pdbs.iter().map(AsRef::as_ref).collect();
    let pods_by_node = ctx.state.pods_by_node();
    let nominations = ctx.nominated.lock().map(|n| n.clone()).unwrap_or_default();
    let by_target = nominations.by_target();
    let nominated_to = |targets: &[&str]| -> Vec<Arc<Pod>> {
        targets.iter().flat_map(|t| by_target.get(t).into_iter().flatten()).filter_map(|p| ctx.state.pod(p)).collect()
    };
    let leaving = cluster_snapshot::leaving_nodes(ctx);
    let claims = ctx.state.nodeclaims.state();
    let claimed_nodes: HashSet<String> = claims.iter().filter_map(|c| c.status.as_ref()?.node_name.clone()).collect();

    let mut nodes = Vec::new();
    let mut in_flight = Vec::new();
    for claim in &claims {
        let status = claim.status.clone().unwrap_or_default();
        let claim_name = claim.name_any();
        let Some(node) = status.node_name.as_deref().and_then(|n| ctx.state.node(n)) else {
            // Still launching: room for pods (less what is planned onto it), not a candidate.
            in_flight.extend(cluster_snapshot::in_flight_room(ctx, claim, &nominated_to(&[&claim_name]), &leaving));
            continue;
        };
        let node_name = node.name_any();
        let bound = pods_by_node.get(&node_name).map(Vec::as_slice).unwrap_or_default();
        let Some(mut room) = cluster_snapshot::planning_room(&node, bound, &leaving) else { continue };
        let nominated = nominated_to(&[&node_name, &claim_name]);
        let just_planned_onto = !nominated.is_empty();
        cluster_snapshot::hold_room_for(&mut room, &nominated, &leaving);
        let mut movable_pods = Vec::new();
        for pod in bound.iter().filter(|p| pods::is_evictable(p)) {
            if pod.spec.is_none() {
                continue;
            }
            let key = pods::key(pod);
            // A pod moves only where its volumes can follow (an EBS volume stays in its zone).
            match pod_request_with_volumes(&key, pod, &ctx.state) {
                Ok(request) => movable_pods.push(MovablePod {
                    request,
                    blocker: blocker(pod, &pdb_refs),
                    eviction_cost: eviction_cost(pod),
                }),
                Err(error) => movable_pods.push(MovablePod {
                    request: crate::scheduling::PodRequest::new(&key, Default::default()),
                    blocker: Some(format!("it cannot be placed again: {error}")),
                    eviction_cost: eviction_cost(pod),
                }),
            }
        }
        // A pod that began terminating is a pod event from that moment, before `lastPodEventTime` (written every
        // 2 s, one NodeClaim at a time) shows it: a node a scale-down is emptying settles from the first pass.
        let began_terminating =
            bound.iter().filter(|p| !pods::is_daemonset_pod(p)).filter_map(|p| pods::terminating_since(p)).max();
        let events = activity.times(&claim_name, timestamp(status.last_pod_event_time.as_ref()), bound, now);
        let labels = node.labels();
        let label = |key: &str| labels.get(key).or_else(|| claim.labels().get(key)).cloned().unwrap_or_default();
        let instance_type = label(INSTANCE_TYPE_LABEL);
        let zone = label(ZONE_LABEL);
        let capacity = capacity_type(if labels.contains_key(CAPACITY_TYPE_LABEL) { labels } else { claim.labels() });
        let price = match capacity {
            CapacityType::OnDemand => catalog.prices.on_demand(&instance_type),
            CapacityType::Spot => catalog.prices.spot(&instance_type, &zone),
        }
        .unwrap_or(0.0);
        let initialized_at = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Initialized" && c.status == "True")
            .map(|c| c.last_transition_time.0);
        let annotated = |key: &str| {
            node.annotations().get(key).is_some_and(|v| v == "true")
                || claim.annotations().get(key).is_some_and(|v| v == "true")
        };
        nodes.push(ManagedNode {
            claim: claim.name_any(),
            node: Some(node_name.clone()),
            nodepool: label(NODEPOOL_LABEL),
            instance_type,
            zone,
            capacity_type: capacity,
            price,
            created: timestamp(claim.metadata.creation_timestamp.as_ref()).unwrap_or_else(jiff::Timestamp::now),
            initialized_at: initialized_at.filter(|_| conditions::is_true(&status.conditions, "Initialized")),
            last_pod_event: events.last_event.max(began_terminating),
            last_pod_departure: events.last_departure.max(began_terminating),
            // A candidate of a command in progress is tainted but not leaving yet: `InProgress` marks it.
            deleting: claim.metadata.deletion_timestamp.is_some() || leaving.contains(&node_name),
            ready: node_ready(&node),
            nominated: just_planned_onto,
            do_not_disrupt: annotated(DO_NOT_DISRUPT_ANNOTATION),
            consolidation_replacement: claim.annotations().contains_key(REPLACES_ANNOTATION),
            drifted: drifted(claim, &node),
            pods: movable_pods,
            room,
        });
    }
    // Nodes nodesmith does not manage: room for pods to move to, needed only when there is something to move (with
    // thousands of pods, it is the largest part of a pass).
    let others = if nodes.is_empty() { Vec::new() } else { ctx.state.nodes.state() };
    let mut other_room = Vec::new();
    for node in others.iter().filter(|n| !claimed_nodes.contains(&n.name_any())) {
        let bound = pods_by_node.get(&node.name_any()).map(Vec::as_slice).unwrap_or_default();
        let Some(mut room) = cluster_snapshot::planning_room(node, bound, &leaving) else { continue };
        let nominated = nominated_to(&[&room.name]);
        cluster_snapshot::hold_room_for(&mut room, &nominated, &leaving);
        other_room.push(room);
    }
    // Likewise only with something to move: the pods the provisioner has yet to place, planned first in every
    // simulation.
    let pending = if nodes.is_empty() { Vec::new() } else { pending_requests(ctx, &nominations) };
    Gathered {
        catalog,
        nodepools,
        pool_objects,
        daemonsets: cluster_snapshot::daemonset_pods(ctx),
        unavailable: ctx.caches().unavailable.snapshot(),
        pools,
        refused_pools,
        nodes,
        other_room,
        in_flight,
        pending,
    }
}

/// The pods waiting for a place and nominated nowhere (pending, or on a node being taken away), as the scheduler's
/// requests; those that cannot be read are the provisioner's to report and are left out.
fn pending_requests(ctx: &Context, nominations: &Nominations) -> Vec<PodRequest> {
    cluster_snapshot::pending_pods(ctx, nominations)
        .iter()
        .filter(|p| p.spec.is_some())
        .filter_map(|p| pod_request_with_volumes(&pods::key(p), p, &ctx.state).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("a pod")
    }

    fn pdb(yaml: &str) -> PodDisruptionBudget {
        serde_yaml_ng::from_str(yaml).expect("a PodDisruptionBudget")
    }

    const OWNED: &str = r#"
metadata:
  name: web-1
  namespace: shop
  labels: {app: web}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: u, controller: true}]
spec: {containers: [{name: app}]}
"#;

    #[test]
    fn pods_block_their_node_for_do_not_disrupt_no_controller_and_exhausted_budgets() {
        assert_eq!(blocker(&pod(OWNED), &[]), None);
        let pinned = pod(&OWNED.replace(
            "labels: {app: web}",
            "labels: {app: web}\n  annotations: {karpenter.sh/do-not-disrupt: \"true\"}",
        ));
        assert!(blocker(&pinned, &[]).expect("blocked").contains("do-not-disrupt"));
        let bare = pod("metadata: {name: bare, namespace: shop}\nspec: {containers: [{name: app}]}");
        assert!(blocker(&bare, &[]).expect("blocked").contains("no controller"));

        let exhausted = pdb(
            "metadata: {name: web, namespace: shop}\nspec: {selector: {matchLabels: {app: web}}}\nstatus: {disruptionsAllowed: 0, currentHealthy: 1, desiredHealthy: 1, expectedPods: 1}",
        );
        let other_namespace = pdb(
            "metadata: {name: web, namespace: other}\nspec: {selector: {matchLabels: {app: web}}}\nstatus: {disruptionsAllowed: 0, currentHealthy: 1, desiredHealthy: 1, expectedPods: 1}",
        );
        let roomy = pdb(
            "metadata: {name: roomy, namespace: shop}\nspec: {selector: {matchLabels: {app: web}}}\nstatus: {disruptionsAllowed: 1, currentHealthy: 2, desiredHealthy: 1, expectedPods: 2}",
        );
        assert!(
            blocker(&pod(OWNED), &[&exhausted])
                .expect("blocked")
                .contains("PodDisruptionBudget shop/web allows no eviction")
        );
        assert_eq!(blocker(&pod(OWNED), &[&other_namespace]), None);
        assert_eq!(blocker(&pod(OWNED), &[&roomy]), None);
        assert!(blocker(&pod(OWNED), &[&roomy, &exhausted]).expect("blocked").contains("more than one"));
    }

    #[test]
    fn priority_and_deletion_cost_weigh_on_eviction_cost() {
        assert_eq!(eviction_cost(&pod(OWNED)), 1.0);
        let critical = pod(&OWNED
            .replace("spec: {containers: [{name: app}]}", "spec: {priority: 2000000000, containers: [{name: app}]}"));
        assert_eq!(eviction_cost(&critical), 10.0, "clamped");
        let cheap = pod(&OWNED.replace(
            "labels: {app: web}",
            "labels: {app: web}\n  annotations: {controller.kubernetes.io/pod-deletion-cost: \"-134217728\"}",
        ));
        assert_eq!(eviction_cost(&cheap), 0.0);
    }

    #[test]
    fn nodepool_disruption_settings_are_read_or_refused_with_the_field_named() {
        let pool: NodePool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "default"},
            "spec": {
                "template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"}, "requirements": []}},
                "disruption": {"consolidateAfter": "Never", "consolidationPolicy": "WhenEmpty",
                    "budgets": [{"nodes": "0", "reasons": ["Drifted"]}, {"nodes": "20%", "schedule": "0 9 * * 1-5", "duration": "8h"}]},
            }
        }))
        .expect("a NodePool");
        let policy = pool_policy(&pool).expect("readable");
        assert_eq!(policy.consolidate_after, None);
        assert_eq!(policy.policy, Policy::WhenEmpty);
        assert_eq!(policy.budgets.len(), 2);
        assert_eq!(policy.budgets[0].reasons, vec![Reason::Drifted]);

        let mut bad = pool.clone();
        bad.spec.disruption.budgets[1].schedule = Some("every weekday".into());
        let error = pool_policy(&bad).expect_err("refused");
        assert!(error.starts_with("spec.disruption.budgets[1]: budgets: schedule \"every weekday\""), "{error}");
        let mut bad = pool;
        bad.spec.disruption.consolidate_after = "soon".into();
        assert!(pool_policy(&bad).expect_err("refused").contains("consolidateAfter"));
    }
}

#[cfg(test)]
mod gather_tests {
    use std::sync::Arc;

    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::controller::testing::{self, Objects};

    fn node(name: &str) -> Node {
        testing::object(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
    }

    fn claim_on(node: &str) -> NodeClaim {
        testing::object(serde_json::json!({
            "metadata": {"name": format!("default-{node}"), "labels": {"karpenter.sh/nodepool": "default"}},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                     "requirements": []},
            "status": {"nodeName": node},
        }))
    }

    #[tokio::test]
    async fn other_nodes_are_read_as_room_only_when_some_node_could_be_disrupted() {
        let gathered = |objects: Objects| {
            gather(&testing::context(Arc::new(FakeCloud::default()), objects.into_state()), &|_, _| None)
        };
        let unmanaged = Objects { nodes: vec![node("other-1"), node("other-2")], ..Objects::default() };
        let nothing_to_move = gathered(unmanaged);
        assert!(nothing_to_move.nodes.is_empty() && nothing_to_move.other_room.is_empty());
        let with_a_candidate = Objects {
            nodes: vec![node("other-1"), node("other-2"), node("ours")],
            nodeclaims: vec![claim_on("ours")],
            ..Objects::default()
        };
        let gathered = gathered(with_a_candidate);
        assert_eq!(gathered.nodes.len(), 1);
        assert_eq!(gathered.other_room.len(), 2, "both other nodes are room for the candidate's pods");
    }

    #[tokio::test]
    async fn pods_the_provisioner_planned_hold_their_room_and_the_others_are_pending() {
        use crate::catalog::resources::ResourceName;
        let launching: NodeClaim = testing::object(serde_json::json!({
            "metadata": {"name": "launching", "labels": {"karpenter.sh/nodepool": "default"}},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                     "requirements": []},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "58"},
                       "capacity": {"cpu": "4", "memory": "16Gi", "pods": "58"}},
        }));
        let objects = Objects {
            nodes: vec![node("ours")],
            nodeclaims: vec![claim_on("ours"), launching],
            pods: vec![
                testing::pod("running", Some("ours"), "1"),
                testing::pod("planned-here", None, "1"),
                testing::pod("planned-there", None, "3"),
                testing::pod("waiting", None, "500m"),
            ],
            ..Objects::default()
        };
        let ctx = testing::context(Arc::new(FakeCloud::default()), objects.into_state());
        if let Ok(mut nominated) = ctx.nominated.lock() {
            nominated.nominate("shop/planned-here", "ours");
            nominated.nominate("shop/planned-there", "launching");
        }
        let gathered = gather(&ctx, &|_, _| None);
        let cpu = |room: &ExistingNode| room.available.get(ResourceName::Cpu);
        let ours = &gathered.nodes[0];
        assert!(ours.nominated);
        assert_eq!(cpu(&ours.room), 2000, "4 CPUs less the running pod and the one planned onto it");
        assert_eq!(ours.room.pods.len(), 2, "the planned pod counts in topology too");
        assert_eq!(gathered.in_flight.len(), 1);
        assert_eq!(cpu(&gathered.in_flight[0]), 1000, "the in-flight NodeClaim less the pod planned onto it");
        let pending: Vec<&str> = gathered.pending.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(pending, vec!["shop/waiting"], "planned pods are not pending");
    }
}
