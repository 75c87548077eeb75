//! The controller's metrics under Karpenter's names, types and labels, so its dashboards and alerts keep working.
//! The chart README lists those of Karpenter's that nodesmith does not export, and why.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::cluster::{ClusterCollector, GaugeSource};
use super::objects::ObjectKind;
use super::summary::SummaryFamily;
use crate::catalog::{Catalog, OfferingKey};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodePoolLabels {
    nodepool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CreatedLabels {
    reason: String,
    nodepool: String,
    min_values_relaxed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TerminatedLabels {
    nodepool: String,
    capacity_type: String,
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolZoneLabels {
    nodepool: String,
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    method: String,
    provider: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudCallLabels {
    controller: String,
    method: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    message_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MoveLabels {
    decision: String,
    nodepool: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    reason: String,
    consolidation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DisruptedLabels {
    reason: String,
    nodepool: String,
    capacity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolReasonLabels {
    nodepool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsolidationTypeLabels {
    consolidation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfferingLabels {
    nodepool: String,
    instance_type: String,
    capacity_type: String,
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolDecisionReasonLabels {
    nodepool: String,
    decision: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestTargetLabels {
    verb: String,
    group: String,
    version: String,
    kind: String,
    subresource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonConsolidationLabels {
    reason: String,
    consolidation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerZoneLabels {
    controller: String,
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaunchFailureLabels {
    zone: String,
    zone_id: String,
    capacity_type: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
    zone_id: String,
}

/// Where an offering is, for the launch failure metrics.
#[derive(Clone, Copy, Debug)]
pub struct OfferingPlace<'a> {
    pub zone: &'a str,
    pub zone_id: &'a str,
    pub capacity_type: &'a str,
}

/// One node an observing controller's last plan would launch.
pub struct ObservedLaunch<'a> {
    pub nodepool: &'a str,
    pub instance_type: &'a str,
    pub capacity_type: &'a str,
    pub zone: &'a str,
    pub usd_per_hour: f64,
}

/// What the catalog says of each instance type and offering, encoded from the catalog itself at each scrape: ten
/// thousand offerings held as metric series would cost the controller more memory than all its caches of nodes.
#[derive(Default)]
struct CatalogCollector {
    catalog: std::sync::RwLock<Option<Arc<Catalog>>>,
    /// The offerings out of capacity now (those a launch just failed for), asked at each scrape.
    unavailable: std::sync::RwLock<Option<UnavailableSource>>,
}

/// Gives the offerings that are out of capacity now.
pub type UnavailableSource = Arc<dyn Fn() -> HashSet<OfferingKey> + Send + Sync>;

impl std::fmt::Debug for CatalogCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCollector").finish_non_exhaustive()
    }
}

impl Collector for CatalogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(catalog) = self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone() else {
            return Ok(());
        };
        let mut by_source: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
        let unavailable = self.unavailable.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let unavailable = unavailable.map(|source| source()).unwrap_or_default();
        {
            let mut family = encoder.encode_descriptor(
                "karpenter_cloudprovider_instance_type_offering_available",
                "1 for each offering (instance type, zone, capacity type) launches may use now, 0 for one out of \
                 capacity (a launch just failed for it)",
                None,
                MetricType::Gauge,
            )?;
            for (instance_type, zone, capacity_type, _) in catalog.offering_prices() {
                let key =
                    OfferingKey { instance_type: instance_type.to_string(), zone: zone.to_string(), capacity_type };
                let labels =
                    [("instance_type", instance_type), ("capacity_type", capacity_type.as_str()), ("zone", zone)];
                ConstGauge::new(i64::from(!unavailable.contains(&key))).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "karpenter_cloudprovider_instance_type_offering_price_estimate",
                "Estimated hourly price of each offering (instance type, zone, capacity type), in US dollars",
                None,
                MetricType::Gauge,
            )?;
            for (instance_type, zone, capacity_type, price) in catalog.offering_prices() {
                let labels =
                    [("instance_type", instance_type), ("capacity_type", capacity_type.as_str()), ("zone", zone)];
                ConstGauge::new(price.usd_per_hour).encode(family.encode_family(&labels)?)?;
                *by_source.entry((capacity_type.as_str(), price.source.as_str())).or_default() += 1;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "karpenter_cloudprovider_instance_type_cpu_cores",
                "vCPUs of each instance type",
                None,
                MetricType::Gauge,
            )?;
            for info in &catalog.instance_types {
                ConstGauge::new(i64::from(info.vcpus))
                    .encode(family.encode_family(&[("instance_type", info.name.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "karpenter_cloudprovider_instance_type_memory_bytes",
                "Memory of each instance type, in bytes",
                None,
                MetricType::Gauge,
            )?;
            for info in &catalog.instance_types {
                let bytes = info.memory_mib as f64 * 1024.0 * 1024.0;
                ConstGauge::new(bytes).encode(family.encode_family(&[("instance_type", info.name.as_str())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "nodesmith_offering_prices",
            "Offerings priced from each source: pricing-api, spot-price-history, or embedded data",
            None,
            MetricType::Gauge,
        )?;
        for ((capacity_type, source), offerings) in by_source {
            let labels = [("capacity_type", capacity_type), ("source", source)];
            ConstGauge::new(offerings).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The `provider` label of the cloud provider metrics, as Karpenter's AWS provider sets it.
const PROVIDER: &str = "aws";

/// The controller's metrics, registered once.
pub struct Metrics {
    registry: Registry,
    scheduling_duration: Family<ControllerLabels, Histogram>,
    leader: Family<NameLabels, Gauge>,
    nodeclaims_created: Family<CreatedLabels, Counter>,
    nodeclaims_terminated: Family<TerminatedLabels, Counter>,
    nodeclaims_termination_duration: Family<NodePoolLabels, Histogram>,
    nodes_created: Family<PoolZoneLabels, Counter>,
    nodes_terminated: Family<PoolZoneLabels, Counter>,
    nodes_drained: Family<NodePoolLabels, Counter>,
    nodes_lifetime: Family<NodePoolLabels, Histogram>,
    nodes_termination: SummaryFamily,
    pods_startup: SummaryFamily,
    eviction_requests: Family<CodeLabels, Counter>,
    cloudprovider_errors: Family<ErrorLabels, Counter>,
    cloudprovider_duration: Family<CloudCallLabels, Histogram>,
    interruption_received: Family<MessageLabels, Counter>,
    interruption_deleted: Counter,
    interruption_refused: Family<ReasonLabels, Counter>,
    interruption_queue_duration: Histogram,
    disruption_decisions: Family<DecisionLabels, Counter>,
    disruption_decisions_by_nodepool: Family<PoolDecisionLabels, Counter>,
    disruption_eligible: Family<ReasonLabels, Gauge>,
    nodeclaims_disrupted: Family<DisruptedLabels, Counter>,
    allowed_disruptions: Family<PoolReasonLabels, Gauge>,
    consolidation_timeouts: Family<ConsolidationTypeLabels, Counter>,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    unschedulable_pods: Family<ControllerLabels, Gauge>,
    observe_refused: Family<ApiLabels, Counter>,
    observe_launches: Family<OfferingLabels, Gauge>,
    observe_launch_price: Family<NodePoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    observe_disruption_candidates: Family<PoolDecisionReasonLabels, Gauge>,
    api_requests: Family<RequestLabels, Counter>,
    api_request_duration: Family<RequestTargetLabels, Histogram>,
    pods_bound: Histogram,
    pods_scheduling_decision: Histogram,
    pods_provisioning_bound: Histogram,
    pods_provisioning_startup: Histogram,
    pods_drained: Family<ReasonLabels, Counter>,
    cost_tracker_errors: Family<NodePoolLabels, Counter>,
    nodes_consuming_budgets: Family<PoolReasonLabels, Gauge>,
    instance_termination_duration: Family<NodePoolLabels, Histogram>,
    disruption_queue_failures: Family<DecisionLabels, Counter>,
    disruption_failed_validations: Family<ConsolidationTypeLabels, Counter>,
    disruption_evaluation: Family<ReasonConsolidationLabels, Histogram>,
    consolidation_moves: Family<MoveLabels, Counter>,
    consolidation_score: Family<MoveLabels, Histogram>,
    pending_by_zone: Family<ControllerZoneLabels, Gauge>,
    ignored_pods: Gauge,
    launch_failures: Family<LaunchFailureLabels, Counter>,
    termination_failures: Family<ZoneLabels, Counter>,
    /// Per `ObjectKind` (`ObjectKind::index`): condition transitions, how long the status before held, and how
    /// long deletions took.
    condition_transitions: [Family<ObjectLabelSet, Counter>; 4],
    condition_transition_seconds: [Family<ObjectLabelSet, Histogram>; 4],
    object_termination: [Family<ObjectLabelSet, Histogram>; 4],
    catalog: Arc<CatalogCollector>,
    cluster: Arc<ClusterCollector>,
    rounds: Arc<RoundCollector>,
}

type ObjectLabelSet = Vec<(&'static str, String)>;

/// The scheduling round under way, if any: its queue depth and how long it has run are read at each scrape.
#[derive(Debug, Default)]
struct RoundCollector {
    round: std::sync::Mutex<Option<Round>>,
}

#[derive(Debug)]
struct Round {
    controller: &'static str,
    id: u64,
    started: Instant,
    pods: usize,
}

/// A gauge of the round under way: its name, help, and value.
type RoundGauge = (&'static str, &'static str, fn(&Round) -> f64);

impl Collector for RoundCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let round = self.round.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let families: [RoundGauge; 2] = [
            ("karpenter_scheduler_queue_depth", "Pods in the scheduling round under way", |r| r.pods as f64),
            ("karpenter_scheduler_unfinished_work_seconds", "How long the scheduling round under way has run", |r| {
                r.started.elapsed().as_secs_f64()
            }),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            if let Some(round) = round.as_ref() {
                let id = round.id.to_string();
                let labels = [("controller", round.controller), ("scheduling_id", id.as_str())];
                ConstGauge::new(value(round)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolDecisionLabels {
    nodepool: String,
    decision: String,
    reason: String,
    consolidation_type: String,
}

/// Seconds from 5 ms to about 40 s: API and cloud calls, reconciles.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Seconds from 1 s to about 1.5 years: how long nodes live.
fn lifetime_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            scheduling_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            leader: Family::default(),
            nodeclaims_created: Family::default(),
            nodeclaims_terminated: Family::default(),
            nodeclaims_termination_duration: Family::new_with_constructor(lifetime_buckets),
            nodes_created: Family::default(),
            nodes_terminated: Family::default(),
            nodes_drained: Family::default(),
            nodes_lifetime: Family::new_with_constructor(lifetime_buckets),
            nodes_termination: SummaryFamily::new(
                "karpenter_nodes_termination_duration_seconds",
                "Time from a node's deletion to its finalizer's removal (drained and instance terminated)",
                &["nodepool"],
            ),
            pods_startup: SummaryFamily::new(
                "karpenter_pods_startup_duration_seconds",
                "Time from the creation of a pod nodesmith provisioned for to its running",
                &[],
            ),
            eviction_requests: Family::default(),
            cloudprovider_errors: Family::default(),
            cloudprovider_duration: Family::new_with_constructor(call_buckets),
            interruption_received: Family::default(),
            interruption_deleted: Counter::default(),
            interruption_refused: Family::default(),
            interruption_queue_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            disruption_decisions: Family::default(),
            disruption_decisions_by_nodepool: Family::default(),
            disruption_eligible: Family::default(),
            nodeclaims_disrupted: Family::default(),
            allowed_disruptions: Family::default(),
            consolidation_timeouts: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_time: Family::new_with_constructor(call_buckets),
            unschedulable_pods: Family::default(),
            observe_refused: Family::default(),
            observe_launches: Family::default(),
            observe_launch_price: Family::default(),
            observe_disruption_candidates: Family::default(),
            api_requests: Family::default(),
            api_request_duration: Family::new_with_constructor(call_buckets),
            pods_bound: call_buckets(),
            pods_scheduling_decision: call_buckets(),
            pods_provisioning_bound: lifetime_buckets(),
            pods_provisioning_startup: lifetime_buckets(),
            pods_drained: Family::default(),
            cost_tracker_errors: Family::default(),
            nodes_consuming_budgets: Family::default(),
            instance_termination_duration: Family::new_with_constructor(lifetime_buckets),
            disruption_queue_failures: Family::default(),
            disruption_failed_validations: Family::default(),
            disruption_evaluation: Family::new_with_constructor(call_buckets),
            consolidation_moves: Family::default(),
            // Karpenter's buckets, around the Balanced threshold of 0.5.
            consolidation_score: Family::new_with_constructor(|| {
                Histogram::new([0.1, 0.25, 0.33, 0.5, 1.0, 2.0, 5.0, 10.0])
            }),
            pending_by_zone: Family::default(),
            ignored_pods: Gauge::default(),
            launch_failures: Family::default(),
            termination_failures: Family::default(),
            condition_transitions: std::array::from_fn(|_| Family::default()),
            condition_transition_seconds: std::array::from_fn(|_| {
                Family::new_with_constructor(lifetime_buckets as fn() -> Histogram)
            }),
            object_termination: std::array::from_fn(|_| {
                Family::new_with_constructor(lifetime_buckets as fn() -> Histogram)
            }),
            catalog: Arc::new(CatalogCollector::default()),
            cluster: Arc::new(ClusterCollector::default()),
            rounds: Arc::new(RoundCollector::default()),
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(metrics.catalog.clone()));
        registry.register_collector(Box::new(metrics.cluster.clone()));
        registry.register_collector(Box::new(metrics.rounds.clone()));
        let r = &mut registry;
        for kind in ObjectKind::ALL {
            let (prefix, i) = (kind.prefix(), kind.index());
            r.register(
                format!("{prefix}_status_condition_transitions"),
                kind.help("Status condition transitions, by type and the status and reason transitioned to"),
                metrics.condition_transitions[i].clone(),
            );
            r.register(
                format!("{prefix}_status_condition_transition_seconds"),
                kind.help("How long a status condition held its status before it changed, by type and that status"),
                metrics.condition_transition_seconds[i].clone(),
            );
            r.register(
                format!("{prefix}_termination_duration_seconds"),
                kind.help("Time from deletion to the object's removal"),
                metrics.object_termination[i].clone(),
            );
        }
        r.register(
            "client_go_request",
            "Requests to the Kubernetes API server, by HTTP status code and method",
            metrics.api_requests.clone(),
        );
        r.register(
            "client_go_request_duration_seconds",
            "Time until the API server's response to a request, by verb, group, version, resource and subresource",
            metrics.api_request_duration.clone(),
        );
        r.register(
            "karpenter_pods_bound_duration_seconds",
            "Time from a pod's creation to its binding to a node",
            metrics.pods_bound.clone(),
        );
        r.register(
            "karpenter_pods_scheduling_decision_duration_seconds",
            "Time from the provisioner first seeing a pending pod to its deciding where the pod goes (or that it can go \
             nowhere)",
            metrics.pods_scheduling_decision.clone(),
        );
        r.register(
            "karpenter_pods_provisioning_bound_duration_seconds",
            "Time from the provisioner placing a pod to the pod's binding",
            metrics.pods_provisioning_bound.clone(),
        );
        r.register(
            "karpenter_pods_provisioning_startup_duration_seconds",
            "Time from the provisioner placing a pod to the pod's running",
            metrics.pods_provisioning_startup.clone(),
        );
        r.register(
            "karpenter_pods_drained",
            "Pods evicted or deleted by node drains, by the disruption reason of the node (empty when none)",
            metrics.pods_drained.clone(),
        );
        r.register(
            "karpenter_nodepools_cost_tracker_errors",
            "Nodes whose price could not be found when a NodePool's cost was computed",
            metrics.cost_tracker_errors.clone(),
        );
        r.register(
            "karpenter_nodepools_nodes_consuming_budgets",
            "Nodes of each NodePool counted against its disruption budgets now (being deleted or not ready), by reason",
            metrics.nodes_consuming_budgets.clone(),
        );
        r.register(
            "karpenter_nodeclaims_instance_termination_duration_seconds",
            "Time from the termination call for a NodeClaim's instance to EC2 reporting it gone",
            metrics.instance_termination_duration.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_queue_failures",
            "Disruption commands given up while being carried out (a replacement did not come up)",
            metrics.disruption_queue_failures.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_failed_validations",
            "Disruption commands that no longer held when checked again before being carried out",
            metrics.disruption_failed_validations.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_decision_evaluation_duration_seconds",
            "Time one disruption method took to evaluate its candidates, by reason and consolidation type",
            metrics.disruption_evaluation.clone(),
        );
        r.register(
            "karpenter_consolidation_moves",
            "Consolidation moves weighed, by whether they were approved, NodePool and consolidation policy",
            metrics.consolidation_moves.clone(),
        );
        r.register(
            "karpenter_consolidation_score",
            "Scores of the moves a Balanced NodePool weighed (savings share over disruption share; approved from 0.5)",
            metrics.consolidation_score.clone(),
        );
        r.register(
            "karpenter_scheduler_pending_pods_by_effective_zone_count",
            "Pending pods of the last scheduling round by the zone they are held to: one zone, `flexible` (several) or \
             `none` (no zone satisfies them)",
            metrics.pending_by_zone.clone(),
        );
        r.register(
            "karpenter_scheduler_ignored_pods_count",
            "Pending pods the last scheduling round could not read (an unreadable spec, a volume that pins them nowhere)",
            metrics.ignored_pods.clone(),
        );
        r.register(
            "karpenter_cloudprovider_instance_launch_failures",
            "Offerings a launch failed for, by zone, capacity type and AWS error code",
            metrics.launch_failures.clone(),
        );
        r.register(
            "karpenter_cloudprovider_instance_termination_failures",
            "Instance terminations that failed, by zone",
            metrics.termination_failures.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_decisions",
            "Disruption commands carried out, by decision (delete, replace), reason and consolidation type",
            metrics.disruption_decisions.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_decisions_by_nodepool",
            "Disruption commands carried out, by NodePool, decision, reason and consolidation type",
            metrics.disruption_decisions_by_nodepool.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_eligible_nodes",
            "Nodes eligible for disruption, by reason (before budgets)",
            metrics.disruption_eligible.clone(),
        );
        r.register(
            "karpenter_nodeclaims_disrupted",
            "NodeClaims disrupted, by reason (including expired and interruption), NodePool and capacity type",
            metrics.nodeclaims_disrupted.clone(),
        );
        r.register(
            "karpenter_nodepools_allowed_disruptions",
            "Nodes each NodePool's budgets allow to be disrupted now, by reason",
            metrics.allowed_disruptions.clone(),
        );
        r.register(
            "karpenter_voluntary_disruption_consolidation_timeouts",
            "Consolidation passes that ran out of time before every candidate was evaluated",
            metrics.consolidation_timeouts.clone(),
        );
        r.register(
            "karpenter_interruption_message_queue_duration_seconds",
            "Time from a message's arrival in the interruption queue to its handling",
            metrics.interruption_queue_duration.clone(),
        );
        r.register(
            "karpenter_scheduler_scheduling_duration_seconds",
            "Duration of one scheduling round (planning new nodes for pending pods)",
            metrics.scheduling_duration.clone(),
        );
        r.register(
            "leader_election_master_status",
            "1 while this replica holds the leader-election Lease `name`, else 0",
            metrics.leader.clone(),
        );
        r.register(
            "karpenter_scheduler_unschedulable_pods_count",
            "Pods the last scheduling round could place on no existing or new node",
            metrics.unschedulable_pods.clone(),
        );
        r.register(
            "karpenter_nodeclaims_created",
            "NodeClaims created, by reason (provisioning, or the disruption reason of a replacement) and NodePool",
            metrics.nodeclaims_created.clone(),
        );
        r.register(
            "karpenter_nodeclaims_terminated",
            "NodeClaims terminated (instance gone, finalizer removed), by NodePool, capacity type and zone",
            metrics.nodeclaims_terminated.clone(),
        );
        r.register(
            "karpenter_nodeclaims_termination_duration_seconds",
            "Time from a NodeClaim's deletion to its finalizer's removal",
            metrics.nodeclaims_termination_duration.clone(),
        );
        r.register("karpenter_nodes_created", "Nodes registered, by NodePool and zone", metrics.nodes_created.clone());
        r.register(
            "karpenter_nodes_terminated",
            "Nodes deleted after their drain and termination, by NodePool and zone",
            metrics.nodes_terminated.clone(),
        );
        r.register("karpenter_nodes_drained", "Nodes drained, by NodePool", metrics.nodes_drained.clone());
        r.register(
            "karpenter_nodes_lifetime_duration_seconds",
            "How long nodes lived, from creation to termination, by NodePool",
            metrics.nodes_lifetime.clone(),
        );
        r.register(
            "karpenter_pods_eviction_requests",
            "Eviction requests made while draining, by HTTP response code (429: a PodDisruptionBudget refused)",
            metrics.eviction_requests.clone(),
        );
        r.register(
            "karpenter_cloudprovider_errors",
            "Errors returned by the cloud provider, by calling controller, method and error code",
            metrics.cloudprovider_errors.clone(),
        );
        r.register(
            "karpenter_cloudprovider_duration_seconds",
            "Duration of cloud provider calls, by calling controller and method",
            metrics.cloudprovider_duration.clone(),
        );
        r.register(
            "karpenter_interruption_received_messages",
            "Interruption queue messages received, by kind",
            metrics.interruption_received.clone(),
        );
        r.register(
            "karpenter_interruption_deleted_messages",
            "Interruption queue messages deleted",
            metrics.interruption_deleted.clone(),
        );
        r.register(
            "nodesmith_interruption_refused_messages",
            "Interruption queue messages deleted without acting on them, as not to be trusted: from another account or \
             region (foreign_origin), or a state change EC2 does not confirm (unconfirmed_state_change)",
            metrics.interruption_refused.clone(),
        );
        r.register(
            "controller_runtime_reconcile",
            "Reconciles of each controller, by result (success, requeue_after, error)",
            metrics.reconciles.clone(),
        );
        r.register(
            "controller_runtime_reconcile_errors",
            "Reconciles of each controller that failed",
            metrics.reconcile_errors.clone(),
        );
        r.register(
            "controller_runtime_reconcile_time_seconds",
            "Duration of each controller's reconciles",
            metrics.reconcile_time.clone(),
        );
        r.register(
            "nodesmith_observe_refused",
            "Calls an observing controller (--observe) did not make because they would change something, by API",
            metrics.observe_refused.clone(),
        );
        r.register(
            "nodesmith_observe_launches",
            "Nodes an observing controller would launch now for the pending pods, by NodePool and offering",
            metrics.observe_launches.clone(),
        );
        r.register(
            "nodesmith_observe_launch_price_dollars_per_hour",
            "Hourly price of the nodes an observing controller would launch now, by NodePool, in US dollars",
            metrics.observe_launch_price.clone(),
        );
        r.register(
            "nodesmith_observe_disruption_candidates",
            "Nodes an observing controller's last disruption pass would disrupt, by NodePool, decision and reason",
            metrics.observe_disruption_candidates.clone(),
        );
        Self { registry, ..metrics }
    }
}

/// Replaces every series of a (nodepool, reason) gauge: pools that are gone stop being reported.
fn replace_per_pool_and_reason(family: &Family<PoolReasonLabels, Gauge>, values: &[(String, &str, usize)]) {
    family.clear();
    for (nodepool, reason, nodes) in values {
        let labels = PoolReasonLabels { nodepool: nodepool.clone(), reason: reason.to_string() };
        family.get_or_create(&labels).set(i64::try_from(*nodes).unwrap_or(i64::MAX));
    }
}

/// How a reconcile ended, as controller-runtime labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Done until something changes.
    Success,
    /// Done for now, to be looked at again after a while.
    RequeueAfter,
    Error,
}

impl ReconcileResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RequeueAfter => "requeue_after",
            Self::Error => "error",
        }
    }
}

impl Metrics {
    /// One scheduling round of `controller` (the provisioner, or a disruption pass's simulation) took `seconds`.
    pub fn scheduling_duration(&self, controller: &str, seconds: f64) {
        self.scheduling_duration.get_or_create(&ControllerLabels { controller: controller.into() }).observe(seconds);
    }

    /// Whether this replica holds the Lease `lease`.
    pub fn leading(&self, lease: &str, leading: bool) {
        self.leader.get_or_create(&NameLabels { name: lease.into() }).set(i64::from(leading));
    }

    /// An observing controller did not send a call to `api` (`kubernetes`, `aws`) that would change something.
    pub fn observe_refused(&self, api: &str) {
        self.observe_refused.get_or_create(&ApiLabels { api: api.into() }).inc();
    }

    /// What an observing controller's last plan would launch: replaces the previous plan's figures.
    pub fn observe_plan(&self, launches: &[ObservedLaunch<'_>]) {
        self.observe_launches.clear();
        self.observe_launch_price.clear();
        for launch in launches {
            let labels = OfferingLabels {
                nodepool: launch.nodepool.into(),
                instance_type: launch.instance_type.into(),
                capacity_type: launch.capacity_type.into(),
                zone: launch.zone.into(),
            };
            self.observe_launches.get_or_create(&labels).inc();
            self.observe_launch_price
                .get_or_create(&NodePoolLabels { nodepool: launch.nodepool.into() })
                .inc_by(launch.usd_per_hour);
        }
    }

    /// The candidates of an observing controller's last disruption pass (nodepool, decision, reason), each once.
    pub fn observe_disruption(&self, candidates: &[(&str, &str, &str)]) {
        self.observe_disruption_candidates.clear();
        for (nodepool, decision, reason) in candidates {
            let labels = PoolDecisionReasonLabels {
                nodepool: (*nodepool).into(),
                decision: (*decision).into(),
                reason: (*reason).into(),
            };
            self.observe_disruption_candidates.get_or_create(&labels).inc();
        }
    }

    /// Pods the last round of `controller` could place nowhere.
    pub fn unschedulable_pods(&self, controller: &str, pods: usize) {
        let labels = ControllerLabels { controller: controller.into() };
        self.unschedulable_pods.get_or_create(&labels).set(i64::try_from(pods).unwrap_or(i64::MAX));
    }

    /// A NodeClaim was created for `reason` (`provisioning`, or the disruption reason of a replacement).
    pub fn nodeclaim_created(&self, reason: &str, nodepool: &str, min_values_relaxed: bool) {
        let labels = CreatedLabels {
            reason: reason.into(),
            nodepool: nodepool.into(),
            min_values_relaxed: min_values_relaxed.to_string(),
        };
        self.nodeclaims_created.get_or_create(&labels).inc();
    }

    /// A NodeClaim's finalizer came off `seconds` after its deletion.
    pub fn nodeclaim_terminated(&self, nodepool: &str, capacity_type: &str, zone: &str, seconds: f64) {
        let labels =
            TerminatedLabels { nodepool: nodepool.into(), capacity_type: capacity_type.into(), zone: zone.into() };
        self.nodeclaims_terminated.get_or_create(&labels).inc();
        self.nodeclaims_termination_duration
            .get_or_create(&NodePoolLabels { nodepool: nodepool.into() })
            .observe(seconds);
    }

    /// A Node registered for one of nodesmith's NodeClaims.
    pub fn node_created(&self, nodepool: &str, zone: &str) {
        self.nodes_created.get_or_create(&PoolZoneLabels { nodepool: nodepool.into(), zone: zone.into() }).inc();
    }

    /// A Node went, `termination_seconds` after its deletion began, having lived `lifetime_seconds`.
    pub fn node_terminated(&self, nodepool: &str, zone: &str, termination_seconds: f64, lifetime_seconds: f64) {
        self.nodes_terminated.get_or_create(&PoolZoneLabels { nodepool: nodepool.into(), zone: zone.into() }).inc();
        self.nodes_termination.observe(&[nodepool], termination_seconds);
        self.nodes_lifetime.get_or_create(&NodePoolLabels { nodepool: nodepool.into() }).observe(lifetime_seconds);
    }

    /// A node's pods are all gone (evicted or deleted) and its instance can be terminated.
    pub fn node_drained(&self, nodepool: &str) {
        self.nodes_drained.get_or_create(&NodePoolLabels { nodepool: nodepool.into() }).inc();
    }

    /// An eviction answered with HTTP `code`.
    pub fn eviction_requested(&self, code: u16) {
        self.eviction_requests.get_or_create(&CodeLabels { code: code.to_string() }).inc();
    }

    /// A cloud provider call `method` made for `controller` failed with `error` (an AWS error code).
    pub fn cloudprovider_error(&self, controller: &str, method: &str, error: &str) {
        let labels = ErrorLabels {
            controller: controller.into(),
            method: method.into(),
            provider: PROVIDER.into(),
            error: error.into(),
        };
        self.cloudprovider_errors.get_or_create(&labels).inc();
    }

    pub fn cloudprovider_call(&self, controller: &str, method: &str, seconds: f64) {
        let labels =
            CloudCallLabels { controller: controller.into(), method: method.into(), provider: PROVIDER.into() };
        self.cloudprovider_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn pod_started(&self, seconds: f64) {
        self.pods_startup.observe(&[], seconds);
    }

    /// One reconcile of `controller` took `seconds` and ended with `result`.
    pub fn reconciled(&self, controller: &str, result: ReconcileResult, seconds: f64) {
        let labels = ReconcileLabels { controller: controller.into(), result: result.as_str().into() };
        self.reconciles.get_or_create(&labels).inc();
        let controller = ControllerLabels { controller: controller.into() };
        // Shown from the first reconcile on, at 0 until one fails, as controller-runtime does.
        let errors = self.reconcile_errors.get_or_create(&controller);
        if result == ReconcileResult::Error {
            errors.inc();
        }
        self.reconcile_time.get_or_create(&controller).observe(seconds);
    }

    pub fn interruption_received(&self, message_type: &str) {
        self.interruption_received.get_or_create(&MessageLabels { message_type: message_type.into() }).inc();
    }

    pub fn interruption_refused(&self, reason: &str) {
        self.interruption_refused.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn interruption_deleted(&self) {
        self.interruption_deleted.inc();
    }

    pub fn interruption_queue_duration(&self, seconds: f64) {
        self.interruption_queue_duration.observe(seconds);
    }

    /// A disruption command was carried out on nodes of `nodepools`: counted once, and once for each pool.
    pub fn disruption_decision(&self, nodepools: &[&str], decision: &str, reason: &str, consolidation_type: &str) {
        let labels = DecisionLabels {
            decision: decision.into(),
            reason: reason.into(),
            consolidation_type: consolidation_type.into(),
        };
        self.disruption_decisions.get_or_create(&labels).inc();
        for nodepool in nodepools {
            let by_pool = PoolDecisionLabels {
                nodepool: (*nodepool).into(),
                decision: decision.into(),
                reason: reason.into(),
                consolidation_type: consolidation_type.into(),
            };
            self.disruption_decisions_by_nodepool.get_or_create(&by_pool).inc();
        }
    }

    pub fn disruption_eligible(&self, reason: &str, nodes: usize) {
        let nodes = i64::try_from(nodes).unwrap_or(i64::MAX);
        self.disruption_eligible.get_or_create(&ReasonLabels { reason: reason.into() }).set(nodes);
    }

    pub fn nodeclaim_disrupted(&self, reason: &str, nodepool: &str, capacity_type: &str) {
        let labels =
            DisruptedLabels { reason: reason.into(), nodepool: nodepool.into(), capacity_type: capacity_type.into() };
        self.nodeclaims_disrupted.get_or_create(&labels).inc();
    }

    /// Replaces every NodePool's allowed-disruptions gauge (pools that are gone stop being reported).
    pub fn set_allowed_disruptions(&self, allowed: &[(String, &str, usize)]) {
        replace_per_pool_and_reason(&self.allowed_disruptions, allowed);
    }

    pub fn consolidation_timeout(&self, consolidation_type: &str) {
        let labels = ConsolidationTypeLabels { consolidation_type: consolidation_type.into() };
        self.consolidation_timeouts.get_or_create(&labels).inc();
    }

    /// A status condition of a `kind` object changed: to `status` with `reason`; `held` is the status before and
    /// how long it held, when known. `own` are the kind's own labels (its NodePool, EC2NodeClass, …).
    pub fn condition_transition(
        &self,
        kind: ObjectKind,
        type_: &str,
        status: &str,
        reason: &str,
        own: &[(&'static str, String)],
        held: Option<(&str, f64)>,
    ) {
        let mut labels: ObjectLabelSet =
            vec![("type", type_.to_string()), ("status", status.to_string()), ("reason", reason.to_string())];
        labels.extend(own.iter().cloned());
        self.condition_transitions[kind.index()].get_or_create(&labels).inc();
        if let Some((before, seconds)) = held {
            let mut labels: ObjectLabelSet = vec![("type", type_.to_string()), ("status", before.to_string())];
            labels.extend(own.iter().cloned());
            self.condition_transition_seconds[kind.index()].get_or_create(&labels).observe(seconds);
        }
    }

    /// A `kind` object went, `seconds` after its deletion began.
    pub fn object_terminated(&self, kind: ObjectKind, own: &[(&'static str, String)], seconds: f64) {
        self.object_termination[kind.index()].get_or_create(&own.to_vec()).observe(seconds);
    }

    /// A request to the Kubernetes API server with HTTP `method` was answered with `code` after `seconds`.
    pub fn api_request(&self, method: &str, code: &str, target: &super::api_requests::ApiTarget, seconds: f64) {
        self.api_requests.get_or_create(&RequestLabels { code: code.into(), method: method.into() }).inc();
        let labels = RequestTargetLabels {
            verb: target.verb.clone(),
            group: target.group.clone(),
            version: target.version.clone(),
            kind: target.kind.clone(),
            subresource: target.subresource.clone(),
        };
        self.api_request_duration.get_or_create(&labels).observe(seconds);
    }

    /// A pod was bound to a node `seconds` after its creation.
    pub fn pod_bound(&self, seconds: f64) {
        self.pods_bound.observe(seconds);
    }

    /// The provisioner decided where a pod goes (or that it can go nowhere) `seconds` after first seeing it.
    pub fn pod_scheduling_decided(&self, seconds: f64) {
        self.pods_scheduling_decision.observe(seconds);
    }

    /// A pod the provisioner placed was bound `seconds` after it was placed.
    pub fn pod_provisioning_bound(&self, seconds: f64) {
        self.pods_provisioning_bound.observe(seconds);
    }

    /// A pod the provisioner placed runs, `seconds` after it was placed.
    pub fn pod_provisioning_started(&self, seconds: f64) {
        self.pods_provisioning_startup.observe(seconds);
    }

    /// A drain evicted or deleted a pod of a node disrupted for `reason` (empty when none is recorded).
    pub fn pod_drained(&self, reason: &str) {
        self.pods_drained.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// A node of `nodepool` had no known price when the pool's cost was computed.
    pub fn cost_tracker_error(&self, nodepool: &str) {
        self.cost_tracker_errors.get_or_create(&NodePoolLabels { nodepool: nodepool.into() }).inc();
    }

    /// Replaces every NodePool's count of nodes consuming its budgets, per reason.
    pub fn set_nodes_consuming_budgets(&self, consuming: &[(String, &str, usize)]) {
        replace_per_pool_and_reason(&self.nodes_consuming_budgets, consuming);
    }

    /// A NodeClaim's instance was reported gone `seconds` after its termination was asked for.
    pub fn instance_terminated(&self, nodepool: &str, seconds: f64) {
        self.instance_termination_duration
            .get_or_create(&NodePoolLabels { nodepool: nodepool.into() })
            .observe(seconds);
    }

    /// A disruption command was given up while being carried out.
    pub fn disruption_queue_failure(&self, decision: &str, reason: &str, consolidation_type: &str) {
        let labels = DecisionLabels {
            decision: decision.into(),
            reason: reason.into(),
            consolidation_type: consolidation_type.into(),
        };
        self.disruption_queue_failures.get_or_create(&labels).inc();
    }

    /// A disruption command no longer held when checked again.
    pub fn disruption_failed_validation(&self, consolidation_type: &str) {
        let labels = ConsolidationTypeLabels { consolidation_type: consolidation_type.into() };
        self.disruption_failed_validations.get_or_create(&labels).inc();
    }

    /// One disruption method's evaluation took `seconds`.
    pub fn disruption_evaluated(&self, reason: &str, consolidation_type: &str, seconds: f64) {
        let labels = ReasonConsolidationLabels { reason: reason.into(), consolidation_type: consolidation_type.into() };
        self.disruption_evaluation.get_or_create(&labels).observe(seconds);
    }

    /// Consolidation weighed a move for `nodepool`: counted as approved or rejected, and where the pool is Balanced
    /// its score observed with the pool's own verdict.
    pub fn consolidation_move(&self, nodepool: &str, policy: &str, approved: bool, score: Option<(f64, bool)>) {
        let verdict = |approved: bool| if approved { "approved" } else { "rejected" };
        let labels = |approved| MoveLabels {
            decision: verdict(approved).into(),
            nodepool: nodepool.into(),
            policy: policy.into(),
        };
        self.consolidation_moves.get_or_create(&labels(approved)).inc();
        if let Some((score, pool_approved)) = score {
            self.consolidation_score.get_or_create(&labels(pool_approved)).observe(score);
        }
    }

    /// A scheduling round of `controller` starts with `pods` pods; its queue depth and running time are reported
    /// until `scheduling_round_ended`.
    pub fn scheduling_round_started(&self, controller: &'static str, pods: usize) {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut round = self.rounds.round.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *round = Some(Round { controller, id, started: Instant::now(), pods });
    }

    pub fn scheduling_round_ended(&self) {
        *self.rounds.round.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The pending pods of `controller`'s last round by effective zone (replaces the last round's), and the pods
    /// it could not read.
    pub fn pending_pods(&self, controller: &str, by_zone: &BTreeMap<String, usize>, ignored: usize) {
        self.pending_by_zone.clear();
        for (zone, pods) in by_zone {
            let labels = ControllerZoneLabels { controller: controller.into(), zone: zone.clone() };
            self.pending_by_zone.get_or_create(&labels).set(i64::try_from(*pods).unwrap_or(i64::MAX));
        }
        self.ignored_pods.set(i64::try_from(ignored).unwrap_or(i64::MAX));
    }

    /// A launch failed for an offering at `place` with the AWS error code `reason`.
    pub fn launch_failed(&self, place: OfferingPlace<'_>, reason: &str) {
        let labels = LaunchFailureLabels {
            zone: place.zone.into(),
            zone_id: place.zone_id.into(),
            capacity_type: place.capacity_type.into(),
            reason: reason.into(),
        };
        self.launch_failures.get_or_create(&labels).inc();
    }

    /// Terminating an instance in `zone` failed.
    pub fn termination_failed(&self, zone: &str, zone_id: &str) {
        self.termination_failures.get_or_create(&ZoneLabels { zone: zone.into(), zone_id: zone_id.into() }).inc();
    }

    /// Where the offerings out of capacity are read from at each scrape (`karpenter_cloudprovider_instance_type_
    /// offering_available`).
    pub fn unavailable_offerings_from(&self, source: UnavailableSource) {
        *self.catalog.unavailable.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(source);
    }

    /// The catalog whose instance types and offering prices are exported from now on (read at each scrape,
    /// never copied).
    pub fn price_offerings_of(&self, catalog: Arc<Catalog>) {
        *self.catalog.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(catalog);
    }

    /// Where the node, pod and NodePool gauges are read from at each scrape.
    pub fn gauge_cluster_from(&self, source: std::sync::Arc<dyn GaugeSource>) {
        self.cluster.read_from(source);
    }

    /// The OpenMetrics text of every metric; the summaries, which the registry cannot hold, before its end.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry) {
            tracing::warn!("could not encode metrics: {error}");
        }
        for summary in [&self.nodes_termination, &self.pods_startup] {
            if let Err(error) = summary.encode(&mut text) {
                tracing::warn!("could not encode metrics: {error}");
            }
        }
        if let Err(error) = prometheus_client::encoding::text::encode_eof(&mut text) {
            tracing::warn!("could not encode metrics: {error}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_karpenters_names_types_and_labels() {
        let metrics = Metrics::default();
        metrics.nodeclaim_created("provisioning", "default", false);
        metrics.cloudprovider_error("provisioner", "CreateFleet", "InsufficientInstanceCapacity");
        metrics.cloudprovider_call("provisioner", "CreateFleet", 0.2);
        metrics.nodeclaim_terminated("default", "spot", "us-east-1a", 30.0);
        metrics.node_terminated("default", "us-east-1a", 25.0, 3600.0);
        metrics.pod_started(40.0);
        metrics.reconciled("nodeclaim.lifecycle", ReconcileResult::Error, 0.01);
        let text = metrics.encode();
        for expected in [
            r#"karpenter_nodeclaims_created_total{reason="provisioning",nodepool="default",min_values_relaxed="false"} 1"#,
            r#"karpenter_cloudprovider_errors_total{controller="provisioner",method="CreateFleet",provider="aws",error="InsufficientInstanceCapacity"} 1"#,
            r#"karpenter_cloudprovider_duration_seconds_count{controller="provisioner",method="CreateFleet",provider="aws"} 1"#,
            r#"karpenter_nodeclaims_terminated_total{nodepool="default",capacity_type="spot",zone="us-east-1a"} 1"#,
            r#"karpenter_nodes_terminated_total{nodepool="default",zone="us-east-1a"} 1"#,
            r#"karpenter_nodes_termination_duration_seconds{nodepool="default",quantile="0.5"} 25"#,
            r#"karpenter_pods_startup_duration_seconds{quantile="0.99"} 40"#,
            r#"controller_runtime_reconcile_total{controller="nodeclaim.lifecycle",result="error"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="nodeclaim.lifecycle"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="nodeclaim.lifecycle"} 1"#,
            "# TYPE karpenter_pods_startup_duration_seconds summary",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
        metrics.scheduling_duration("provisioner", 0.01);
        let text = metrics.encode();
        assert!(
            text.contains(r#"karpenter_scheduler_scheduling_duration_seconds_count{controller="provisioner"} 1"#),
            "{text}"
        );
        assert_eq!(text.lines().last(), Some("# EOF"), "the summaries come before the end");
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
