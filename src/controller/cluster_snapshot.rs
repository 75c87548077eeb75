//! The cluster as the scheduler's input, read from the watch caches: which pods need a place (pending, or on a
//! node being taken away), which nodes are leaving, the room on every node and in-flight NodeClaim (with what is
//! nominated to it), the NodePools new nodes may come from, and the DaemonSet pods every new node carries.
//! Provisioning and disruption both plan from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::apis::pod::Pod;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::nominations::Nominations;
use super::volume_topology::pod_request_with_volumes;
use super::{Context, disrupted_taint, pods};
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;
use crate::apis::scheduling_input::{
    anti_affinity_terms, daemonset_pod, existing_node, host_ports, nodepool, pod_requests,
};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::resources::{ResourceName, Resources, parse_quantity};
use crate::catalog::{Catalog, OfferingKey};
use crate::names::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, REPLACES_ANNOTATION, ZONE_LABEL};
use crate::scheduling::{
    self, ExistingNode, NodePoolRefusal, Operator, PlacedPod, PodRequest, Requirement, SchedulingInput,
    UnschedulablePod,
};

/// Pods that need a place: those the scheduler found no node for, and those on nodes being taken away
/// (interrupted, drained), so their replacement capacity launches while the old node still drains.
pub fn pending_pods(ctx: &Context, nominations: &Nominations) -> Vec<Arc<Pod>> {
    let leaving = leaving_nodes(ctx);
    ctx.state
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            let on_leaving_node = p.node_name().is_some_and(|n| leaving.contains(n) && pods::is_evictable(p));
            (pods::is_provisionable(p) || on_leaving_node) && nominations.target_of(&pods::key(p)).is_none()
        })
        .collect()
}

/// Nodes being taken away: whose NodeClaim is being deleted, or tainted `karpenter.sh/disrupted` (by termination, by
/// hand, by a controller killed midway) unless a disruption's replacement for them is coming up. A
/// disruption taints its candidates when it starts so that no pod lands there, but their pods move only once the
/// replacements are up and the candidates deleted; until then the replacements hold the room planned for those
/// pods, and the provisioner must not plan it again.
pub fn leaving_nodes(ctx: &Context) -> HashSet<String> {
    let claims = ctx.state.nodeclaims.state();
    let node_of = |claim: &NodeClaim| claim.status.as_ref()?.node_name.clone();
    let mut leaving: HashSet<String> =
        claims.iter().filter(|c| c.metadata.deletion_timestamp.is_some()).filter_map(|c| node_of(c)).collect();
    let replaced: HashSet<&str> = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.annotations().get(REPLACES_ANNOTATION))
        .flat_map(|candidates| candidates.split(','))
        .collect();
    let awaiting_replacement: HashSet<String> =
        claims.iter().filter(|c| replaced.contains(c.name_any().as_str())).filter_map(|c| node_of(c)).collect();
    // Not cordoned nodes: a person cordoning a node has not asked for its pods to move.
    leaving.extend(
        ctx.state
            .nodes
            .state()
            .iter()
            .filter(|n| {
                n.metadata.deletion_timestamp.is_some()
                    || (disrupted_taint::is_tainted(n) && !awaiting_replacement.contains(&n.name_any()))
            })
            .map(|n| n.name_any()),
    );
    leaving
}

/// Tainted `karpenter.sh/disrupted`, or being deleted: no room for new pods.
fn is_disrupted(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_some() || disrupted_taint::is_tainted(node)
}

/// What these pods hold: finished pods and pods being deleted (their replacements are counted instead) hold nothing.
pub fn requests_of(pods: &[Arc<Pod>]) -> Resources {
    pods.iter()
        .filter(|p| !pods::is_terminal(p) && !pods::is_terminating(p))
        .filter_map(|p| p.spec.as_ref().and_then(|s| pod_requests(s).ok()))
        .fold(Resources::ZERO, |sum, r| sum + r)
}

pub fn quantities_to_resources(map: &BTreeMap<String, Quantity>) -> Resources {
    let mut resources = Resources::ZERO;
    for (key, quantity) in map {
        if let Some(name) = ResourceName::from_kubernetes(key)
            && let Ok(value) = parse_quantity(&quantity.0, name)
        {
            resources.set(name, value);
        }
    }
    resources
}

/// A NodeClaim whose node has not registered yet, as capacity: once launched, its allocatable minus the pods
/// nominated to it; before that, the room the smallest type it may become leaves after what it was made for
/// (which holds even when the nominations were lost in a restart), and the largest type it may become counts
/// against its NodePool's limits.
pub fn in_flight_capacity(ctx: &Context, claim: &NodeClaim, nominated: &Resources) -> Option<ExistingNode> {
    let status = claim.status.clone().unwrap_or_default();
    if status.node_name.is_some() {
        return None;
    }
    let mut labels = claim.labels().clone();
    // Single-valued requirements are labels the node will carry.
    for r in &claim.spec.requirements {
        if r.operator == "In" && r.values.len() == 1 {
            labels.entry(r.key.clone()).or_insert_with(|| r.values[0].clone());
        }
    }
    let launched = !status.allocatable.is_empty() && claim.metadata.deletion_timestamp.is_none();
    let (available, capacity) = if launched {
        (quantities_to_resources(&status.allocatable) - *nominated, quantities_to_resources(&status.capacity))
    } else {
        let class = ctx.state.nodeclass(&claim.spec.node_class_ref.name);
        let resources = |t: &InstanceTypeInfo| node_resources(ctx, class.as_deref(), t);
        let options: Vec<(Resources, Resources)> = claim
            .requirement_values(INSTANCE_TYPE_LABEL)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| ctx.instance_type(t))
            .map(|t| resources(&t))
            .collect();
        let largest = options.iter().fold(Resources::ZERO, |max, (capacity, _)| max.max(capacity));
        let smallest = options.iter().map(|(_, allocatable)| *allocatable).reduce(|a, b| a.min(&b));
        // What it was made for, or what has been planned onto it since, whichever is more.
        let held = quantities_to_resources(&claim.spec.resources.requests).max(nominated);
        let room = match smallest {
            Some(smallest) if claim.metadata.deletion_timestamp.is_none() && held.fits_in(&smallest) => smallest - held,
            _ => Resources::ZERO,
        };
        (room, largest)
    };
    Some(ExistingNode {
        name: claim.name_any(),
        nodepool: labels.get(NODEPOOL_LABEL).cloned(),
        pods: Vec::new(),
        taints: claim.spec.taints.iter().map(crate::apis::scheduling_input::taint).collect(),
        available,
        capacity,
        labels,
    })
}

/// What a node of `instance_type` from `class` reports: (capacity, allocatable); EKS defaults where the class is
/// gone.
pub fn node_resources(
    ctx: &Context,
    class: Option<&EC2NodeClass>,
    instance_type: &InstanceTypeInfo,
) -> (Resources, Resources) {
    match class {
        Some(class) => class.node_resources(instance_type, ctx.state.cni_prefix_delegation()),
        None => (instance_type.capacity(Default::default()), instance_type.allocatable(Default::default())),
    }
}

/// The NodePools new nodes may come from, as the scheduler sees them (those whose EC2NodeClass is Ready, limited
/// to the zones of its subnets), and the objects by name.
pub fn ready_nodepools(ctx: &Context) -> (Vec<scheduling::NodePoolSpec>, HashMap<String, Arc<NodePool>>) {
    let (pools, objects, _) = nodepools_for_planning(ctx);
    (pools, objects)
}

/// [`ready_nodepools`], and the others with why each is left out (what a pod that waits is told).
pub fn nodepools_for_planning(
    ctx: &Context,
) -> (Vec<scheduling::NodePoolSpec>, HashMap<String, Arc<NodePool>>, Vec<NodePoolRefusal>) {
    let cni_pd = ctx.state.cni_prefix_delegation();
    let mut pools = Vec::new();
    let mut pool_objects: HashMap<String, Arc<NodePool>> = HashMap::new();
    let mut unready = Vec::new();
    for pool in ctx.state.nodepools.state() {
        let name = pool.name_any();
        let mut left_out = |reason: String| unready.push(NodePoolRefusal { nodepool: name.clone(), reason });
        if pool.metadata.deletion_timestamp.is_some() {
            left_out("it is being deleted".into());
            continue;
        }
        let class_name = &pool.spec.template.spec.node_class_ref.name;
        let Some(class) = ctx.state.nodeclass(class_name) else {
            tracing::warn!(nodepool = %name, nodeclass = %class_name, "NodePool refers to a missing EC2NodeClass");
            left_out(format!("its EC2NodeClass {class_name} does not exist"));
            continue;
        };
        let ready = class.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => {
                tracing::debug!(nodepool = %name, nodeclass = %class_name, "EC2NodeClass not ready yet");
                left_out(format!("its EC2NodeClass {class_name} is not Ready: {}", c.message));
                continue;
            }
            None => {
                left_out(format!("its EC2NodeClass {class_name} has not been checked yet"));
                continue;
            }
        }
        let overhead = match class.node_overhead() {
            Ok(overhead) => overhead,
            Err(error) => {
                tracing::warn!(nodepool = %name, nodeclass = %class_name, "skipping NodePool: {error}");
                left_out(format!("its EC2NodeClass {class_name}: {error}"));
                continue;
            }
        };
        match nodepool(&name, &pool.spec, class.max_pods_settings(cni_pd)) {
            Ok(mut spec) => {
                spec.ephemeral_storage = class.ephemeral_storage();
                spec.overhead = overhead;
                spec.min_values_policy = ctx.settings.min_values_policy;
                // Only zones where the EC2NodeClass has a subnet can be launched into.
                let zones: Vec<&str> = class.status.iter().flat_map(|s| &s.subnets).map(|s| s.zone.as_str()).collect();
                spec.requirements.push(Requirement::new(ZONE_LABEL, Operator::In, &zones));
                pools.push(spec);
                pool_objects.insert(name, pool);
            }
            Err(error) => {
                tracing::warn!("skipping NodePool: {error}");
                left_out(error.to_string());
            }
        }
    }
    (pools, pool_objects, unready)
}

/// The pod every DaemonSet would put on a new node.
pub fn daemonset_pods(ctx: &Context) -> Vec<scheduling::DaemonSetPod> {
    ctx.state
        .daemonsets
        .state()
        .iter()
        .filter_map(|ds| daemonset_pod(ds.spec.as_ref()?.template.spec.as_ref()?).ok())
        .collect()
}

/// A Node as room for pods: its allocatable minus what the pods bound to it request, and those pods for topology.
/// Going away or cordoned: no room, but its capacity still counts against its NodePool's limits. Its pods count
/// where they are, as kube-scheduler sees them; a plan uses `planning_room`.
pub fn node_room(node: &Node, bound: &[Arc<Pod>]) -> Option<ExistingNode> {
    let mut room = existing_node(node).ok()?;
    room.available = if usable(node) { room.available - requests_of(bound) } else { Resources::ZERO };
    room.pods = placed_pods(bound);
    Some(room)
}

/// A Node as room for a plan: `node_room`, where the pods of a node in `leaving` (`leaving_nodes`) no longer count:
/// they are being planned elsewhere.
pub fn planning_room(node: &Node, bound: &[Arc<Pod>], leaving: &HashSet<String>) -> Option<ExistingNode> {
    let mut room = node_room(node, bound)?;
    if leaving.contains(&room.name) {
        room.pods.clear();
    }
    Some(room)
}

/// Pods on a node (or nominated to it) as topology sees them; finished and terminating pods are not there.
pub fn placed_pods(pods: &[Arc<Pod>]) -> Vec<PlacedPod> {
    pods.iter()
        .filter(|p| !pods::is_terminal(p) && !pods::is_terminating(p))
        .map(|p| {
            let labels = p.labels().to_map();
            PlacedPod {
                namespace: p.namespace().unwrap_or_default(),
                anti_affinity: p.spec.as_ref().map(|s| anti_affinity_terms(s, &labels)).unwrap_or_default(),
                labels,
                host_ports: p.spec.as_ref().map(host_ports).unwrap_or_default(),
            }
        })
        .collect()
}

/// A node the scheduler may place pods on: not going away, not cordoned.
pub fn usable(node: &Node) -> bool {
    !is_disrupted(node) && !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

/// Room for pods on every Node and every NodeClaim not yet registered, less what the pods `nominated_to` each
/// (a Node by its name or its NodeClaim's) still wait for; the pods there and nominated there count in topology.
pub fn existing_capacity(ctx: &Context, nominated_to: &dyn Fn(&str) -> Vec<Arc<Pod>>) -> Vec<ExistingNode> {
    let pods_by_node = ctx.state.pods_by_node();
    // Also those whose NodeClaim is being deleted before the Node is tainted: their pods are in the batch
    // (`pending_pods`), so they must not count where they are too.
    let leaving = leaving_nodes(ctx);
    let claims = ctx.state.nodeclaims.state();
    let claim_of_node: HashMap<&str, String> =
        claims.iter().filter_map(|c| Some((c.status.as_ref()?.node_name.as_deref()?, c.name_any()))).collect();
    let mut existing: Vec<ExistingNode> = Vec::new();
    for node in ctx.state.nodes.state() {
        let bound = pods_by_node.get(&node.name_any()).map(Vec::as_slice).unwrap_or_default();
        let Some(mut capacity) = planning_room(&node, bound, &leaving) else { continue };
        if usable(&node) {
            // Pods planned onto a NodeClaim wait for its Node once it registers.
            let mut nominated = nominated_to(&capacity.name);
            if let Some(claim) = claim_of_node.get(capacity.name.as_str()) {
                nominated.extend(nominated_to(claim));
            }
            hold_room_for(&mut capacity, &nominated, &leaving);
        }
        existing.push(capacity);
    }
    for claim in &claims {
        existing.extend(in_flight_room(ctx, claim, &nominated_to(&claim.name_any()), &leaving));
    }
    existing
}

/// The pods planned onto some node that still wait for room there: not bound yet, or bound to a node being taken
/// away. One kube-scheduler has bound, to its target or elsewhere, is counted where it is bound and nowhere else.
fn still_waiting(nominated: &[Arc<Pod>], leaving: &HashSet<String>) -> Vec<Arc<Pod>> {
    nominated.iter().filter(|p| p.node_name().is_none_or(|node| leaving.contains(node))).cloned().collect()
}

/// Debits the pods `nominated` to `room` that still wait for it from its free room; they count in its topology
/// too.
pub fn hold_room_for(room: &mut ExistingNode, nominated: &[Arc<Pod>], leaving: &HashSet<String>) {
    let waiting = still_waiting(nominated, leaving);
    room.available = room.available - requests_of(&waiting);
    room.pods.extend(placed_pods(&waiting));
}

/// A NodeClaim not registered yet as room (`in_flight_capacity`), holding the pods `nominated` to it that still
/// wait for it.
pub fn in_flight_room(
    ctx: &Context,
    claim: &NodeClaim,
    nominated: &[Arc<Pod>],
    leaving: &HashSet<String>,
) -> Option<ExistingNode> {
    let waiting = still_waiting(nominated, leaving);
    let mut room = in_flight_capacity(ctx, claim, &requests_of(&waiting))?;
    room.pods = placed_pods(&waiting);
    Some(room)
}

/// What the provisioner plans from: the pods as scheduler requests (those that cannot be read, with why), the
/// ready NodePools, the room of every node and in-flight NodeClaim, the DaemonSet pods and the offerings out of
/// capacity. The provisioner gathers it each batch; `nodesmith explain pod` gathers the same from a one-off read.
pub struct Planning {
    pub requests: Vec<PodRequest>,
    /// Pods that cannot be planned, with why (a volume that pins them nowhere, a spec that cannot be read).
    pub refused: Vec<(Arc<Pod>, String)>,
    pub pools: Vec<scheduling::NodePoolSpec>,
    pub pool_objects: HashMap<String, Arc<NodePool>>,
    pub existing: Vec<ExistingNode>,
    pub daemonsets: Vec<scheduling::DaemonSetPod>,
    pub unavailable: HashSet<OfferingKey>,
    /// NodePools left out of the plan, with why (their EC2NodeClass missing or not Ready, the pool unreadable).
    pub unready: Vec<NodePoolRefusal>,
}

impl Planning {
    /// `pods` planned against the cluster as the caches hold it; `nominated_to` gives the pods already planned
    /// onto each node or NodeClaim.
    pub fn gather(ctx: &Context, pods: &[Arc<Pod>], nominated_to: &dyn Fn(&str) -> Vec<Arc<Pod>>) -> Self {
        let mut requests = Vec::with_capacity(pods.len());
        let mut refused = Vec::new();
        for pod in pods.iter().filter(|p| p.spec.is_some()) {
            match pod_request_with_volumes(&pods::key(pod), pod, &ctx.state) {
                Ok(request) => requests.push(request),
                Err(error) => refused.push((pod.clone(), error)),
            }
        }
        let (pools, pool_objects, unready) = nodepools_for_planning(ctx);
        Self {
            requests,
            refused,
            pools,
            pool_objects,
            unready,
            existing: existing_capacity(ctx, nominated_to),
            daemonsets: daemonset_pods(ctx),
            unavailable: ctx.caches().unavailable.snapshot(),
        }
    }

    /// A pod no ready NodePool takes, with the NodePools left out of the plan and why added to its refusals.
    pub fn with_unready(&self, unschedulable: &UnschedulablePod) -> UnschedulablePod {
        let mut refusals = unschedulable.nodepools.clone();
        refusals.extend(self.unready.iter().cloned());
        UnschedulablePod::new(unschedulable.pod.clone(), refusals)
    }

    pub fn input<'a>(&'a self, catalog: &'a Catalog) -> SchedulingInput<'a> {
        SchedulingInput {
            pods: &self.requests,
            nodepools: &self.pools,
            instance_types: &catalog.instance_types,
            prices: &catalog.prices,
            existing: &self.existing,
            daemonsets: &self.daemonsets,
            unavailable: &self.unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::catalog::resources::ResourceName;
    use crate::cloud::fake::FakeCloud;
    use crate::controller::testing::{self, Objects, node, object, pod};

    fn claim(name: &str, status: serde_json::Value) -> NodeClaim {
        object(json!({
            "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": "default"}},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                  "values": ["m5.large", "m5.xlarge"]}],
                "resources": {"requests": {"cpu": "1"}},
            },
            "status": status,
        }))
    }

    fn cpu(resources: &Resources) -> i64 {
        resources.get(ResourceName::Cpu)
    }

    fn context(objects: Objects) -> Arc<Context> {
        testing::context(Arc::new(FakeCloud::default()), objects.into_state())
    }

    #[test]
    fn a_node_has_the_room_its_pods_leave_and_a_cordoned_or_leaving_one_none() {
        let bound = [Arc::new(pod("a", Some("n1"), "1")), Arc::new(pod("b", Some("n1"), "500m"))];
        let open = node_room(&node("n1", json!([]), false), &bound).expect("room");
        assert_eq!(cpu(&open.available), 2500);
        assert_eq!(cpu(&open.capacity), 4000);
        let cordoned = node_room(&node("n2", json!([]), true), &[]).expect("room");
        assert!(cordoned.available.is_zero());
        assert_eq!(cpu(&cordoned.capacity), 4000, "its capacity still counts against its pool's limits");
        let leaving =
            node_room(&node("n3", json!([{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]), false), &[]);
        assert!(leaving.expect("room").available.is_zero());
    }

    #[tokio::test]
    async fn a_nodeclaim_in_flight_offers_the_room_of_the_smallest_type_it_may_become() {
        let ctx = context(Objects::default());
        let m5_large = ctx.instance_type("m5.large").expect("m5.large").allocatable(Default::default());
        let m5_xlarge = ctx.instance_type("m5.xlarge").expect("m5.xlarge").capacity(Default::default());
        let unlaunched = in_flight_capacity(&ctx, &claim("c1", json!({})), &Resources::ZERO).expect("in flight");
        assert_eq!(cpu(&unlaunched.available), cpu(&m5_large) - 1000, "what it was made for is taken");
        assert_eq!(cpu(&unlaunched.capacity), cpu(&m5_xlarge), "the largest counts against the limits");
        assert_eq!(unlaunched.nodepool.as_deref(), Some("default"));

        // Launched: its own allocatable, less what was nominated to it since.
        let launched = claim("c2", json!({"providerID": "aws:///us-east-1a/i-1", "allocatable": {"cpu": "1930m"}}));
        let mut nominated = Resources::ZERO;
        nominated.set(ResourceName::Cpu, 1000);
        assert_eq!(cpu(&in_flight_capacity(&ctx, &launched, &nominated).expect("in flight").available), 930);

        // Registered: its Node stands for it.
        assert!(in_flight_capacity(&ctx, &claim("c3", json!({"nodeName": "n1"})), &Resources::ZERO).is_none());
    }

    #[tokio::test]
    async fn unschedulable_pods_and_pods_of_leaving_nodes_need_a_place_unless_nominated() {
        let disrupted = json!([{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]);
        let ctx = context(Objects {
            pods: vec![
                pod("unschedulable", None, "1"),
                pod("nominated", None, "1"),
                pod("on-leaving-node", Some("leaving"), "1"),
                pod("on-cordoned-node", Some("cordoned"), "1"),
                pod("running", Some("n1"), "1"),
            ],
            nodes: vec![
                node("leaving", disrupted, false),
                node("cordoned", json!([]), true),
                node("n1", json!([]), false),
            ],
            ..Objects::default()
        });
        let mut nominations = Nominations::default();
        nominations.nominate("shop/nominated", "some-nodeclaim");
        let mut pending: Vec<String> = pending_pods(&ctx, &nominations).iter().map(|p| pods::key(p)).collect();
        pending.sort();
        assert_eq!(pending, ["shop/on-leaving-node", "shop/unschedulable"]);
        assert_eq!(leaving_nodes(&ctx), HashSet::from(["leaving".to_string()]), "a cordon is not a request to move");
    }

    #[tokio::test]
    async fn a_disruption_candidate_leaves_only_once_its_replacement_is_gone_or_it_is_deleted() {
        let disrupted = json!([{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]);
        let mut replacement = claim("new", json!({}));
        replacement.annotations_mut().insert(REPLACES_ANNOTATION.into(), "old,other".into());
        let objects = |replacement: Option<NodeClaim>| Objects {
            pods: vec![pod("moving-later", Some("n-old"), "1")],
            nodes: vec![node("n-old", disrupted.clone(), false), node("n-stray", disrupted.clone(), false)],
            nodeclaims: [claim("old", json!({"nodeName": "n-old"})), claim("stray", json!({"nodeName": "n-stray"}))]
                .into_iter()
                .chain(replacement)
                .collect(),
            ..Objects::default()
        };
        // Its replacement is coming up: its pods stay where they are until it is deleted; a tainted node no
        // replacement names is leaving.
        let ctx = context(objects(Some(replacement.clone())));
        assert_eq!(leaving_nodes(&ctx), HashSet::from(["n-stray".to_string()]));
        assert!(pending_pods(&ctx, &Nominations::default()).is_empty());
        let existing = existing_capacity(&ctx, &|_: &str| Vec::new());
        let old = existing.iter().find(|e| e.name == "n-old").expect("n-old");
        assert_eq!(old.pods.len(), 1, "its pod still counts there");
        assert!(old.available.is_zero(), "tainted: no room for new pods");
        // The replacement went (its launch failed, the command ended): the taint alone says it is leaving.
        replacement.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let ctx = context(objects(Some(replacement)));
        assert_eq!(leaving_nodes(&ctx), HashSet::from(["n-old".to_string(), "n-stray".to_string()]));
        assert_eq!(pending_pods(&ctx, &Nominations::default()).len(), 1);
        let existing = existing_capacity(&ctx, &|_: &str| Vec::new());
        assert_eq!(existing.iter().find(|e| e.name == "n-old").map(|e| e.pods.len()), Some(0));
    }

    #[tokio::test]
    async fn pods_of_a_node_whose_nodeclaim_is_being_deleted_do_not_count_there() {
        let mut deleting = claim("c1", json!({"nodeName": "n1"}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let ctx = context(Objects {
            pods: vec![pod("a", Some("n1"), "1"), pod("b", Some("n2"), "1")],
            nodes: vec![node("n1", json!([]), false), node("n2", json!([]), false)],
            nodeclaims: vec![deleting],
            ..Objects::default()
        });
        // Not tainted yet, but leaving: its pod is in the batch instead.
        assert!(pending_pods(&ctx, &Nominations::default()).iter().any(|p| p.name_any() == "a"));
        let existing = existing_capacity(&ctx, &|_: &str| Vec::new());
        let pods_on = |name: &str| existing.iter().find(|e| e.name == name).map(|e| e.pods.len());
        assert_eq!(pods_on("n1"), Some(0));
        assert_eq!(pods_on("n2"), Some(1));
    }

    #[tokio::test]
    async fn nominations_are_taken_from_the_room_of_their_node_or_nodeclaim() {
        let ctx = context(Objects {
            pods: vec![pod("a", Some("n1"), "1")],
            nodes: vec![node("n1", json!([]), false)],
            nodeclaims: vec![claim("c1", json!({})), claim("c2", json!({"nodeName": "n1"}))],
            ..Objects::default()
        });
        let nominated = Arc::new(pod("nominated", None, "2"));
        let nominated_to = |target: &str| if target == "n1" { vec![nominated.clone()] } else { vec![] };
        let existing = existing_capacity(&ctx, &nominated_to);
        let names: Vec<&str> = existing.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["n1", "c1"], "a registered NodeClaim is its Node");
        assert_eq!(cpu(&existing[0].available), 1000, "4 CPUs, 1 bound, 2 nominated");
        let placed: Vec<&str> =
            existing[0].pods.iter().filter_map(|p| p.labels.get("name").map(String::as_str)).collect();
        assert_eq!(placed, ["a", "nominated"], "the bound pod and the nominated one count in topology there");
    }

    #[tokio::test]
    async fn a_nominated_pod_holds_room_on_its_nodeclaims_node_only_while_it_waits() {
        // n1 is NodeClaim c1's Node. Planned onto c1: `bound-here` (kube-scheduler bound it to n1: counted once, as
        // bound) and `waiting` (not bound yet: holds its room on n1). Planned onto n1, `bound-elsewhere` went to
        // n2: it holds nothing on n1.
        let ctx = context(Objects {
            pods: vec![
                pod("bound-here", Some("n1"), "1"),
                pod("bound-elsewhere", Some("n2"), "1"),
                pod("waiting", None, "2"),
            ],
            nodes: vec![node("n1", json!([]), false), node("n2", json!([]), false)],
            nodeclaims: vec![claim("c1", json!({"nodeName": "n1"}))],
            ..Objects::default()
        });
        let pod_named = |name: &str| ctx.state.pods.state().into_iter().find(|p| p.name_any() == name).expect("pod");
        let nominated_to = |target: &str| match target {
            "c1" => vec![pod_named("bound-here"), pod_named("waiting")],
            "n1" => vec![pod_named("bound-elsewhere")],
            _ => vec![],
        };
        let existing = existing_capacity(&ctx, &nominated_to);
        let n1 = existing.iter().find(|e| e.name == "n1").expect("n1");
        assert_eq!(cpu(&n1.available), 1000, "4 CPUs, 1 bound, 2 waiting for it");
        let n2 = existing.iter().find(|e| e.name == "n2").expect("n2");
        assert_eq!(cpu(&n2.available), 3000, "4 CPUs, 1 bound");
    }

    #[test]
    fn pods_count_where_they_run_unless_finished_terminating_or_on_a_leaving_node() {
        let mut finished = pod("finished", Some("n1"), "1");
        finished.status.get_or_insert_default().phase = Some("Succeeded".into());
        let mut terminating = pod("terminating", Some("n1"), "1");
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let mut anti = pod("db", Some("n1"), "1");
        anti.spec.get_or_insert_default().affinity = Some(object(json!({"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "db"}}}
        ]}})));
        let bound =
            [Arc::new(pod("running", Some("n1"), "1")), Arc::new(finished), Arc::new(terminating), Arc::new(anti)];
        let room = node_room(&node("n1", json!([]), false), &bound).expect("room");
        let names: Vec<&str> = room.pods.iter().filter_map(|p| p.labels.get("name").map(String::as_str)).collect();
        assert_eq!(names, ["running", "db"]);
        assert_eq!(room.pods[0].namespace, "shop");
        assert_eq!(room.pods[1].anti_affinity.len(), 1, "its anti-affinity keeps db pods off this node");
        assert!(room.pods[0].anti_affinity.is_empty());

        let cordoned = node_room(&node("n3", json!([]), true), &bound).expect("room");
        assert_eq!(cordoned.pods.len(), 2, "a cordon moves no pod: they still count there");
    }

    #[tokio::test]
    async fn only_pools_of_ready_classes_are_planned_and_only_in_their_subnets_zones() {
        let class = |name: &str, ready: &str| -> crate::apis::ec2nodeclass::EC2NodeClass {
            object(json!({
                "metadata": {"name": name},
                "spec": {"amiSelectorTerms": [{"alias": "al2023@latest"}], "role": "r",
                         "subnetSelectorTerms": [{"id": "subnet-b"}], "securityGroupSelectorTerms": [{"id": "sg-1"}]},
                "status": {"subnets": [{"id": "subnet-b", "zone": "us-east-1b"}],
                           "conditions": [{"type": "Ready", "status": ready, "reason": "R",
                                           "message": if ready == "True" { "" } else { "no subnet matches" },
                                           "lastTransitionTime": "2026-12-02T00:00:00Z"}]},
            }))
        };
        let pool = |name: &str, class: &str| -> NodePool {
            object(json!({
                "metadata": {"name": name},
                "spec": {"template": {"spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": class},
                    "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}}},
            }))
        };
        let ctx = context(Objects {
            nodepools: vec![pool("ready", "ready"), pool("waiting", "waiting"), pool("orphan", "missing")],
            nodeclasses: vec![class("ready", "True"), class("waiting", "False")],
            ..Objects::default()
        });
        let (pools, objects) = ready_nodepools(&ctx);
        assert_eq!(pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["ready"]);
        assert!(objects.contains_key("ready") && objects.len() == 1);
        let zone = pools[0].requirements.iter().find(|r| r.key == ZONE_LABEL).expect("a zone requirement");
        assert!(zone.matches(Some("us-east-1b")) && !zone.matches(Some("us-east-1a")), "{zone:?}");
        // The others, with why: what a pod that waits is told.
        let (_, _, unready) = nodepools_for_planning(&ctx);
        let mut told: Vec<(String, String)> = unready.into_iter().map(|r| (r.nodepool, r.reason)).collect();
        told.sort();
        assert_eq!(
            told,
            [
                ("orphan".to_string(), "its EC2NodeClass missing does not exist".to_string()),
                ("waiting".to_string(), "its EC2NodeClass waiting is not Ready: no subnet matches".to_string()),
            ]
        );
    }
}
