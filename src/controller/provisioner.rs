//! Pending pods → NodeClaims. Pods the scheduler marked Unschedulable are batched (until no new one arrived for
//! `batch_idle`, at most `batch_max`), the cluster is snapshotted, `scheduling::solve` plans, and one NodeClaim is
//! created per planned node. Pods planned onto a NodeClaim are remembered ("nominated") until its node is up, so
//! the next batch does not plan them again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::{Context, Error, conditions, leader::Leadership, pods};
use crate::apis::drift_hash;
use crate::apis::ec2nodeclass::{EC2NodeClass, PrefixDelegation};
use crate::apis::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};
use crate::apis::nodeclaim::{NodeClaim, NodeClaimResources, NodeClaimSpec};
use crate::apis::nodepool::{NodePool, NodeSelectorRequirementWithMinValues};
use crate::apis::scheduling_input::{
    daemonset_pod, existing_node, nodepool, pod_request, pod_requests, resource_quantities,
};
use crate::catalog::max_pods::MaxPodsSettings;
use crate::catalog::resources::{ResourceName, Resources, parse_quantity};
use crate::scheduling::{self, ExistingNode, NewNode, Operator, Requirement, SchedulingInput};

/// How long a pod stays nominated after its node is ready, for the scheduler to bind it.
const NOMINATION_GRACE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// Pod key → where the last plan put it (a NodeClaim being launched, or a Node), and since when. A nominated pod
/// is not planned again, and its requests are debited from its target's free capacity.
#[derive(Debug, Default)]
pub struct Nominations {
    by_pod: HashMap<String, (String, Instant)>,
}

impl Nominations {
    fn nominate(&mut self, pod: &str, target: &str) {
        self.by_pod.insert(pod.to_string(), (target.to_string(), Instant::now()));
    }

    /// Publishes the nodes and NodeClaims pods are nominated to, for disruption to leave them alone.
    fn publish(&self, ctx: &Context) {
        let targets: HashSet<String> = self.by_pod.values().map(|(target, _)| target.clone()).collect();
        if let Ok(mut nominated) = ctx.nominated.lock() {
            *nominated = targets;
        }
    }

    fn target_of(&self, pod: &str) -> Option<&str> {
        self.by_pod.get(pod).map(|(target, _)| target.as_str())
    }

    /// The pods nominated to `target`.
    fn pods_of<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.by_pod.iter().filter(move |(_, (t, _))| t == target).map(|(pod, _)| pod.as_str())
    }

    /// Forgets a nomination once its target is gone, or once the scheduler has had time to bind the pod: a
    /// NodeClaim's pods wait for its node to be initialized, a Node's for the grace period.
    fn prune(&mut self, ctx: &Context) {
        if self.by_pod.is_empty() {
            return;
        }
        // A nominated pod now running (not on a node being taken away, where it waits for its replacement) has
        // what it waited for: its startup time is recorded, its nomination ends.
        let leaving = leaving_nodes(ctx);
        let running: HashMap<String, Arc<Pod>> = ctx
            .state
            .pods
            .state()
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !leaving.contains(n)))
            .map(|p| (pods::key(&p), p))
            .collect();
        // A pod deleted while it waited wants nothing any more.
        self.by_pod.retain(|pod, _| {
            let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
            ctx.state.pods.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)).is_some()
        });
        self.by_pod.retain(|pod, _| {
            let Some(started) = running.get(pod) else { return true };
            if let Some(created) = started.metadata.creation_timestamp.as_ref() {
                let waited = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
                ctx.metrics.pod_started(waited.as_secs_f64());
            }
            false
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
    }
}

/// Runs forever: batches pending pods and provisions for them while this replica leads.
pub async fn run(ctx: Arc<Context>, leadership: Leadership) {
    let mut nominations = Nominations::default();
    let mut batch: Option<(Instant, Instant, HashSet<String>)> = None;
    loop {
        tokio::time::sleep(POLL).await;
        if !leadership.is_leader() {
            batch = None;
            continue;
        }
        nominations.prune(&ctx);
        nominations.publish(&ctx);
        let pending: HashSet<String> = pending_pods(&ctx, &nominations).iter().map(|p| pods::key(p)).collect();
        if pending.is_empty() {
            batch = None;
            continue;
        }
        let now = Instant::now();
        let (started, last_change, seen) = batch.get_or_insert_with(|| (now, now, pending.clone()));
        if *seen != pending {
            *last_change = now;
            *seen = pending;
        }
        if now.duration_since(*last_change) < ctx.settings.batch_idle
            && now.duration_since(*started) < ctx.settings.batch_max
        {
            continue;
        }
        batch = None;
        let timer = Instant::now();
        let provisioned = provision(&ctx, &mut nominations).await;
        nominations.publish(&ctx);
        match provisioned {
            Ok(created) => {
                ctx.metrics.scheduling_duration(timer.elapsed().as_secs_f64());
                if created > 0 {
                    tracing::info!(nodeclaims = created, "provisioned");
                }
            }
            Err(error) => tracing::warn!("provisioning failed, retrying next batch: {error}"),
        }
    }
}

/// Pods that need a place: those the scheduler found no node for, and those on nodes being taken away
/// (interrupted, drained), so their replacement capacity launches while the old node still drains.
fn pending_pods(ctx: &Context, nominations: &Nominations) -> Vec<Arc<Pod>> {
    let leaving = leaving_nodes(ctx);
    ctx.state
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            let on_leaving_node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| leaving.contains(n) && pods::is_evictable(p));
            (pods::is_provisionable(p) || on_leaving_node) && nominations.target_of(&pods::key(p)).is_none()
        })
        .collect()
}

/// Nodes being taken away: tainted `karpenter.sh/disrupted`, or whose NodeClaim is being deleted.
fn leaving_nodes(ctx: &Context) -> HashSet<String> {
    let mut leaving: HashSet<String> = ctx
        .state
        .nodeclaims
        .state()
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_some())
        .filter_map(|c| c.status.as_ref()?.node_name.clone())
        .collect();
    // Not cordoned nodes: a person cordoning a node has not asked for its pods to move.
    leaving.extend(ctx.state.nodes.state().iter().filter(|n| is_disrupted(n)).map(|n| n.name_any()));
    leaving
}

fn is_disrupted(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_some()
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == crate::apis::labels::DISRUPTED_TAINT_KEY))
}

/// `ENABLE_PREFIX_DELEGATION` of the VPC CNI's DaemonSet (`kube-system/aws-node`).
pub fn cni_prefix_delegation(ctx: &Context) -> bool {
    ctx.state.daemonsets.state().iter().any(|ds| {
        ds.metadata.namespace.as_deref() == Some("kube-system")
            && ds.metadata.name.as_deref() == Some("aws-node")
            && ds
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .into_iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.env.iter().flatten())
                .any(|e| e.name == "ENABLE_PREFIX_DELEGATION" && e.value.as_deref() == Some("true"))
    })
}

/// The pod density settings an EC2NodeClass gives its nodes.
pub fn max_pods_settings(nodeclass: &EC2NodeClass, cni_prefix_delegation: bool) -> MaxPodsSettings {
    let kubelet = nodeclass.spec.kubelet.as_ref();
    MaxPodsSettings {
        prefix_delegation: match nodeclass.spec.prefix_delegation {
            Some(PrefixDelegation::Enabled) => true,
            Some(PrefixDelegation::Disabled) => false,
            None | Some(PrefixDelegation::Auto) => cni_prefix_delegation,
        },
        reserved_enis: 0,
        max_pods: kubelet.and_then(|k| k.max_pods),
        pods_per_core: kubelet.and_then(|k| k.pods_per_core),
    }
}

/// What these pods hold: finished pods and pods being deleted (their replacements are counted instead) hold nothing.
pub(super) fn requests_of(pods: &[Arc<Pod>]) -> Resources {
    pods.iter()
        .filter(|p| !pods::is_terminal(p) && !pods::is_terminating(p))
        .filter_map(|p| p.spec.as_ref().and_then(|s| pod_requests(s).ok()))
        .fold(Resources::ZERO, |sum, r| sum + r)
}

pub(super) fn quantities_to_resources(map: &BTreeMap<String, Quantity>) -> Resources {
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
pub(super) fn in_flight_capacity(ctx: &Context, claim: &NodeClaim, nominated: &Resources) -> Option<ExistingNode> {
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
        let settings = ctx
            .state
            .nodeclass(&claim.spec.node_class_ref.name)
            .map(|c| max_pods_settings(&c, cni_prefix_delegation(ctx)))
            .unwrap_or_default();
        let options: Vec<_> = super::launch::requirement_values(claim, INSTANCE_TYPE_LABEL)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| ctx.instance_type(t))
            .collect();
        let largest = options.iter().fold(Resources::ZERO, |max, t| max.max(&t.capacity(settings)));
        let smallest = options.iter().map(|t| t.allocatable(settings)).reduce(|a, b| a.min(&b));
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
        taints: claim.spec.taints.iter().map(crate::apis::scheduling_input::taint).collect(),
        available,
        capacity,
        labels,
    })
}

/// One batch: snapshot, plan, create NodeClaims. Returns how many were created.
async fn provision(ctx: &Context, nominations: &mut Nominations) -> Result<usize, Error> {
    let pending = pending_pods(ctx, nominations);
    let mut requests = Vec::with_capacity(pending.len());
    for pod in &pending {
        let Some(spec) = pod.spec.as_ref() else { continue };
        match pod_request(&pods::key(pod), pod.labels(), spec) {
            Ok(request) => requests.push(request),
            Err(error) => publish_pod_event(ctx, pod, "FailedProvisioning", &error.0).await,
        }
    }

    let (pools, pool_objects) = ready_nodepools(ctx);
    if pools.is_empty() {
        // Said once a minute, not once a batch: the EC2NodeClass status says why.
        static LAST_SAID: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
        if let Ok(mut last) = LAST_SAID.lock()
            && last.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            *last = Some(Instant::now());
            tracing::warn!(
                pods = requests.len(),
                "pods are pending but no NodePool is ready (see the EC2NodeClass status)"
            );
        }
        return Ok(0);
    }

    let pods_by_node = ctx.state.pods_by_node();
    let all_pods: HashMap<String, Arc<Pod>> = ctx.state.pods.state().into_iter().map(|p| (pods::key(&p), p)).collect();
    let nominated_to = |target: &str| -> Resources {
        let pods: Vec<Arc<Pod>> = nominations.pods_of(target).filter_map(|p| all_pods.get(p).cloned()).collect();
        requests_of(&pods)
    };
    let mut existing: Vec<ExistingNode> = Vec::new();
    for node in ctx.state.nodes.state() {
        let bound = pods_by_node.get(&node.name_any()).map(Vec::as_slice).unwrap_or_default();
        let Some(mut capacity) = node_room(&node, bound) else { continue };
        if usable(&node) {
            capacity.available = capacity.available - nominated_to(&capacity.name);
        }
        existing.push(capacity);
    }
    for claim in ctx.state.nodeclaims.state() {
        if let Some(capacity) = in_flight_capacity(ctx, &claim, &nominated_to(&claim.name_any())) {
            existing.push(capacity);
        }
    }
    let daemonsets = daemonset_pods(ctx);

    let unavailable = ctx.unavailable.snapshot();
    tracing::debug!(
        pods = requests.len(),
        existing = existing.len(),
        with_room = existing.iter().filter(|n| !n.available.is_zero()).count(),
        "planning"
    );
    let plan = scheduling::solve(&SchedulingInput {
        pods: &requests,
        nodepools: &pools,
        instance_types: &ctx.instance_types,
        prices: &ctx.prices,
        existing: &existing,
        daemonsets: &daemonsets,
        unavailable: &unavailable,
    });

    for (target, planned) in &plan.existing_placements {
        for pod in planned {
            nominations.nominate(pod, target);
        }
    }

    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let creations = plan.new_nodes.iter().filter_map(|node| {
        let pool = pool_objects.get(&node.nodepool)?;
        let api = api.clone();
        let class = ctx.state.nodeclass(&pool.spec.template.spec.node_class_ref.name);
        let claim = nodeclaim_for(node, pool, class.as_deref());
        Some(async move { (node, api.create(&PostParams::default(), &claim).await) })
    });
    let mut created = 0;
    for (node, result) in futures::future::join_all(creations).await {
        match result {
            Ok(claim) => {
                created += 1;
                ctx.metrics.nodeclaim_created(&node.nodepool);
                let name = claim.name_any();
                tracing::info!(
                    nodeclaim = %name,
                    instance_type = %node.instance_type,
                    zone = %node.zone,
                    capacity_type = node.capacity_type.as_str(),
                    pods = node.pods.len(),
                    "created NodeClaim"
                );
                for pod in &node.pods {
                    nominations.nominate(pod, &name);
                }
            }
            Err(error) => tracing::warn!(nodepool = %node.nodepool, "could not create a NodeClaim: {error}"),
        }
    }
    // After the NodeClaims: Events never hold up a launch.
    let events = plan.unschedulable.iter().filter_map(|unschedulable| {
        let pod = all_pods.get(&unschedulable.pod)?;
        Some(publish_pod_event(ctx, pod, "FailedProvisioning", &unschedulable.reason))
    });
    futures::future::join_all(events).await;
    Ok(created)
}

/// The NodePools new nodes may come from, as the scheduler sees them (those whose EC2NodeClass is Ready, limited
/// to the zones of its subnets), and the objects by name.
pub(super) fn ready_nodepools(ctx: &Context) -> (Vec<scheduling::NodePoolSpec>, HashMap<String, Arc<NodePool>>) {
    let cni_pd = cni_prefix_delegation(ctx);
    let mut pools = Vec::new();
    let mut pool_objects: HashMap<String, Arc<NodePool>> = HashMap::new();
    for pool in ctx.state.nodepools.state() {
        if pool.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let class_name = &pool.spec.template.spec.node_class_ref.name;
        let Some(class) = ctx.state.nodeclass(class_name) else {
            tracing::warn!(nodepool = %pool.name_any(), nodeclass = %class_name, "NodePool refers to a missing EC2NodeClass");
            continue;
        };
        if !class.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, "Ready")) {
            tracing::debug!(nodepool = %pool.name_any(), nodeclass = %class_name, "EC2NodeClass not ready yet");
            continue;
        }
        match nodepool(&pool.name_any(), &pool.spec, max_pods_settings(&class, cni_pd)) {
            Ok(mut spec) => {
                // Only zones where the EC2NodeClass has a subnet can be launched into.
                let zones: Vec<&str> = class.status.iter().flat_map(|s| &s.subnets).map(|s| s.zone.as_str()).collect();
                spec.requirements.push(Requirement::new(ZONE_LABEL, Operator::In, &zones));
                pools.push(spec);
                pool_objects.insert(pool.name_any(), pool);
            }
            Err(error) => tracing::warn!("skipping NodePool: {error}"),
        }
    }
    (pools, pool_objects)
}

/// The pod every DaemonSet would put on a new node.
pub(super) fn daemonset_pods(ctx: &Context) -> Vec<scheduling::DaemonSetPod> {
    ctx.state
        .daemonsets
        .state()
        .iter()
        .filter_map(|ds| daemonset_pod(ds.spec.as_ref()?.template.spec.as_ref()?).ok())
        .collect()
}

/// A Node as room for pods: its allocatable minus what the pods bound to it request. Going away or cordoned: no
/// room, but its capacity still counts against its NodePool's limits.
pub(super) fn node_room(node: &Node, bound: &[Arc<Pod>]) -> Option<ExistingNode> {
    let mut room = existing_node(node).ok()?;
    room.available = if usable(node) { room.available - requests_of(bound) } else { Resources::ZERO };
    Some(room)
}

/// A node the scheduler may place pods on: not going away, not cordoned.
pub(super) fn usable(node: &Node) -> bool {
    !is_disrupted(node) && !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

/// The NodeClaim for one planned node: the NodePool's template, narrowed to the instance types, zones and capacity
/// types the plan allows, and the plan's requests; stamped with the NodePool's and EC2NodeClass's hashes, so
/// that drift can tell when either changes.
pub fn nodeclaim_for(node: &NewNode, pool: &NodePool, class: Option<&EC2NodeClass>) -> NodeClaim {
    let template = &pool.spec.template;
    let narrowed = [INSTANCE_TYPE_LABEL, ZONE_LABEL, CAPACITY_TYPE_LABEL];
    let mut requirements: Vec<NodeSelectorRequirementWithMinValues> =
        template.spec.requirements.iter().filter(|r| !narrowed.contains(&r.key.as_str())).cloned().collect();
    let min_values = |key: &str| template.spec.requirements.iter().find(|r| r.key == key).and_then(|r| r.min_values);
    requirements.push(NodeSelectorRequirementWithMinValues {
        key: INSTANCE_TYPE_LABEL.into(),
        operator: "In".into(),
        values: node.instance_type_options.clone(),
        min_values: min_values(INSTANCE_TYPE_LABEL),
    });
    requirements.push(NodeSelectorRequirementWithMinValues {
        key: ZONE_LABEL.into(),
        operator: "In".into(),
        values: node.zones.clone(),
        min_values: None,
    });
    requirements.push(NodeSelectorRequirementWithMinValues {
        key: CAPACITY_TYPE_LABEL.into(),
        operator: "In".into(),
        values: node.capacity_types.iter().map(|c| c.as_str().to_string()).collect(),
        min_values: None,
    });
    let mut labels = template.metadata.labels.clone();
    labels.insert(NODEPOOL_LABEL.into(), pool.name_any());
    let owner = OwnerReference {
        api_version: NodePool::api_version(&()).into_owned(),
        kind: NodePool::kind(&()).into_owned(),
        name: pool.name_any(),
        uid: pool.metadata.uid.clone().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: None,
    };
    let mut annotations = template.metadata.annotations.clone();
    let stamps = class.into_iter().flat_map(|c| drift_hash::nodeclass_annotations(&c.spec));
    for (key, value) in drift_hash::nodepool_annotations(&pool.spec).into_iter().chain(stamps) {
        annotations.insert(key.into(), value);
    }
    NodeClaim {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", pool.name_any())),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: NodeClaimSpec {
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            requirements,
            resources: NodeClaimResources { requests: resource_quantities(&node.requests) },
            node_class_ref: template.spec.node_class_ref.clone(),
            termination_grace_period: template.spec.termination_grace_period.clone(),
            expire_after: template.spec.expire_after.clone(),
        },
        status: None,
    }
}

async fn publish_pod_event(ctx: &Context, pod: &Pod, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Provisioning".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &pod.object_ref(&())).await {
        tracing::debug!("could not record an event on {}: {error}", pods::key(pod));
    }
}
