//! The decisions against the real catalog: examples for each method and budget, and properties over random
//! clusters (no pod left without a place, never dearer, never beyond a budget).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::budgets::Budget;
use super::model::*;
use super::{decide, still_valid};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::pricing::PriceTable;
use crate::catalog::resources::{ResourceName, Resources};
use crate::catalog::{CapacityType, OfferingKey, embedded_instance_types};
use crate::scheduling::{ExistingNode, NodePoolSpec, Operator, PodRequest, Requirement, solve};

const MI: i64 = 1 << 20;
const ZONE: &str = "us-east-1a";

fn now() -> Timestamp {
    "2026-12-02T12:00:00Z".parse().expect("time")
}

fn minutes_ago(minutes: i64) -> Timestamp {
    now().checked_sub(jiff::SignedDuration::from_mins(minutes)).expect("time")
}

struct Cluster {
    types: Vec<InstanceTypeInfo>,
    prices: PriceTable,
    pools: Vec<PoolPolicy>,
    specs: Vec<NodePoolSpec>,
    nodes: Vec<ManagedNode>,
    unavailable: HashSet<OfferingKey>,
    settings: Settings,
    in_flight: Vec<ExistingNode>,
    pending: Vec<PodRequest>,
}

fn pool_spec(name: &str, capacity_types: &[&str]) -> NodePoolSpec {
    NodePoolSpec {
        name: name.into(),
        weight: 0,
        requirements: vec![
            Requirement::new("kubernetes.io/arch", Operator::In, &["amd64"]),
            Requirement::new("karpenter.k8s.aws/instance-category", Operator::In, &["c", "m", "r"]),
            Requirement::new("karpenter.sh/capacity-type", Operator::In, capacity_types),
            Requirement::new("topology.kubernetes.io/zone", Operator::In, &[ZONE]),
        ],
        labels: BTreeMap::new(),
        taints: vec![],
        startup_taints: vec![],
        limits: None,
        max_pods: Default::default(),
        overhead: Default::default(),
        ephemeral_storage: Default::default(),
        min_values_policy: Default::default(),
    }
}

fn policy(name: &str, policy: Policy, after: Option<u64>, budgets: Vec<Budget>) -> PoolPolicy {
    PoolPolicy { name: name.into(), policy, consolidate_after: after.map(Duration::from_secs), budgets }
}

/// One always-active budget of `nodes`, for every reason.
fn budget(nodes: &str) -> Vec<Budget> {
    vec![Budget::parse(nodes, None, None, vec![]).expect("budget")]
}

fn pod(id: &str, cpu_millis: i64, memory_mib: i64) -> MovablePod {
    let requests = Resources::ZERO
        .with(ResourceName::Cpu, cpu_millis)
        .with(ResourceName::Memory, memory_mib * MI)
        .with(ResourceName::Pods, 1);
    MovablePod { request: PodRequest::new(id, requests), blocker: None, eviction_cost: 1.0 }
}

impl Cluster {
    fn new() -> Self {
        let types = embedded_instance_types()
            .iter()
            .filter(|t| ["c5", "m5", "r5", "c6i", "m6i"].contains(&t.family()))
            .cloned()
            .collect();
        Self {
            types,
            prices: PriceTable::embedded(),
            pools: vec![policy("default", Policy::WhenEmptyOrUnderutilized, Some(60), Budget::default_budgets())],
            specs: vec![pool_spec("default", &["on-demand"])],
            nodes: vec![],
            unavailable: HashSet::new(),
            settings: Settings::default(),
            in_flight: vec![],
            pending: vec![],
        }
    }

    /// A node of `instance_type` in `pool`, quiet for an hour, holding `pods`.
    fn node(
        &mut self,
        name: &str,
        pool: &str,
        instance_type: &str,
        capacity_type: CapacityType,
        pods: Vec<MovablePod>,
    ) -> &mut ManagedNode {
        let info = self.types.iter().find(|t| t.name == instance_type).expect("a type of the catalog").clone();
        let used = pods.iter().fold(Resources::ZERO, |sum, p| sum + p.request.requests);
        let mut labels: BTreeMap<String, String> = info.labels().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        labels.insert("topology.kubernetes.io/zone".into(), ZONE.into());
        labels.insert("karpenter.sh/capacity-type".into(), capacity_type.as_str().into());
        labels.insert("karpenter.sh/nodepool".into(), pool.into());
        labels.insert("kubernetes.io/hostname".into(), name.into());
        let price = match capacity_type {
            CapacityType::OnDemand => self.prices.on_demand(instance_type),
            CapacityType::Spot => self.prices.spot(instance_type, ZONE),
        }
        .expect("a price");
        self.nodes.push(ManagedNode {
            claim: name.into(),
            node: Some(name.into()),
            nodepool: pool.into(),
            instance_type: instance_type.into(),
            zone: ZONE.into(),
            capacity_type,
            price,
            created: minutes_ago(120),
            initialized_at: Some(minutes_ago(110)),
            last_pod_event: Some(minutes_ago(60)),
            last_pod_departure: None,
            deleting: false,
            ready: true,
            nominated: false,
            do_not_disrupt: false,
            consolidation_replacement: false,
            drifted: None,
            pods,
            room: ExistingNode {
                name: name.into(),
                labels,
                taints: vec![],
                available: info.allocatable(Default::default()) - used,
                capacity: info.capacity(Default::default()),
                nodepool: Some(pool.into()),
                pods: Vec::new(),
            },
        });
        self.nodes.last_mut().expect("just pushed")
    }

    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            now: now(),
            pools: &self.pools,
            nodes: &self.nodes,
            other_room: &[],
            in_flight: &self.in_flight,
            pending: &self.pending,
            nodepools: &self.specs,
            instance_types: &self.types,
            prices: &self.prices,
            daemonsets: &[],
            unavailable: &self.unavailable,
            settings: self.settings,
        }
    }

    fn decide(&self) -> Decision {
        decide(&self.snapshot())
    }
}

fn blocked_reason(decision: &Decision, claim: &str) -> String {
    decision.blocked.iter().filter(|b| b.claim == claim).map(|b| b.reason.clone()).collect::<Vec<_>>().join("; ")
}

#[test]
fn an_empty_node_goes_once_consolidate_after_has_passed() {
    let mut cluster = Cluster::new();
    cluster.node("empty", "default", "m5.large", CapacityType::OnDemand, vec![]);
    cluster.node("busy", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/p", 1500, 4096)]);
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.method, Method::Emptiness);
    assert_eq!(command.candidates, vec!["empty"]);
    assert_eq!(command.decision(), "delete");

    // A pod left ten minutes ago; consolidateAfter is an hour.
    cluster.pools[0].consolidate_after = Some(Duration::from_secs(3600));
    cluster.nodes[0].last_pod_event = Some(minutes_ago(10));
    cluster.nodes[1].last_pod_event = Some(minutes_ago(10));
    assert!(cluster.decide().command.is_none());

    // consolidateAfter: Never.
    cluster.pools[0].consolidate_after = None;
    cluster.nodes[0].last_pod_event = Some(minutes_ago(600));
    assert!(cluster.decide().command.is_none());
}

#[test]
fn daemonset_only_nodes_are_empty_and_when_empty_pools_keep_underutilized_nodes() {
    let mut cluster = Cluster::new();
    cluster.pools[0].policy = Policy::WhenEmpty;
    // The controller leaves DaemonSet and mirror pods out of `pods`: this node runs only those.
    cluster.node("daemons-only", "default", "m5.large", CapacityType::OnDemand, vec![]);
    cluster.node("light-1", "default", "m5.xlarge", CapacityType::OnDemand, vec![pod("a/p1", 100, 128)]);
    cluster.node("light-2", "default", "m5.xlarge", CapacityType::OnDemand, vec![pod("a/p2", 100, 128)]);
    let command = cluster.decide().command.expect("the empty node goes");
    assert_eq!(command.candidates, vec!["daemons-only"]);
    cluster.nodes.remove(0);
    assert!(cluster.decide().command.is_none(), "WhenEmpty never consolidates underutilized nodes");
}

#[test]
fn budgets_cap_how_many_go_at_once_and_zero_blocks_with_a_reason() {
    let mut cluster = Cluster::new();
    for i in 0..5 {
        cluster.node(&format!("empty-{i}"), "default", "m5.large", CapacityType::OnDemand, vec![]);
    }
    // 10% of 5 nodes rounds up to 1.
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.candidates.len(), 1);

    cluster.pools[0].budgets = budget("3");
    assert_eq!(cluster.decide().command.expect("a command").candidates.len(), 3);
    // Two already going count against the budget.
    cluster.nodes[0].deleting = true;
    cluster.nodes[1].ready = false;
    assert_eq!(cluster.decide().command.expect("a command").candidates.len(), 1);

    cluster.pools[0].budgets = budget("0");
    let decision = cluster.decide();
    assert!(decision.command.is_none());
    assert!(blocked_reason(&decision, "empty-4").contains("budget of NodePool default allows no more Empty"));
}

#[test]
fn a_budget_scoped_to_drift_leaves_emptiness_alone() {
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = vec![
        Budget::parse("0", None, None, vec![Reason::Drifted]).expect("budget"),
        Budget::parse("100%", None, None, vec![]).expect("budget"),
    ];
    cluster.node("empty", "default", "m5.large", CapacityType::OnDemand, vec![]);
    cluster.node("drifted", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/p", 1000, 1024)]).drifted =
        Some("NodePoolDrifted".into());
    let decision = cluster.decide();
    assert!(blocked_reason(&decision, "drifted").contains("allows no more Drifted"));
    assert_eq!(decision.command.expect("emptiness still acts").candidates, vec!["empty"]);
}

#[test]
fn pods_that_cannot_move_and_do_not_disrupt_nodes_block_consolidation_with_the_reason() {
    let mut cluster = Cluster::new();
    let mut pinned = pod("a/pinned", 100, 128);
    pinned.blocker = Some("annotated karpenter.sh/do-not-disrupt".into());
    cluster.node("pinned", "default", "m5.xlarge", CapacityType::OnDemand, vec![pinned]);
    cluster.node("marked", "default", "m5.xlarge", CapacityType::OnDemand, vec![]).do_not_disrupt = true;
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(blocked_reason(&decision, "pinned").contains("pod a/pinned cannot be moved: annotated"));
    assert!(blocked_reason(&decision, "marked").contains("karpenter.sh/do-not-disrupt"));
}

#[test]
fn six_lightly_used_nodes_are_consolidated_several_at_once() {
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = budget("100%");
    for i in 0..6 {
        cluster.node(
            &format!("light-{i}"),
            "default",
            "m5.xlarge",
            CapacityType::OnDemand,
            vec![pod(&format!("a/p{i}"), 250, 256)],
        );
    }
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.method, Method::MultiNodeConsolidation);
    assert!(command.candidates.len() >= 5, "{command:?}");
    assert!(command.replacements_price < command.candidates_price);
    assert!(command.replacements.len() <= 1);
    still_valid(&cluster.snapshot(), &command).expect("still valid on the same cluster");
}

/// Only general purpose types, so that a candidate's own type is among the cheapest a replacement could be.
fn general_purpose_only(cluster: &mut Cluster) {
    for requirement in &mut cluster.specs[0].requirements {
        if requirement.key == "karpenter.k8s.aws/instance-category" {
            *requirement = Requirement::new("karpenter.k8s.aws/instance-category", Operator::In, &["m"]);
        }
    }
}

#[test]
fn several_nodes_are_not_replaced_by_one_of_their_own_type_when_keeping_it_moves_fewer_pods() {
    // Three pods, one per node: all three fit one m5.large, which is what the smallest candidate is. Replacing all
    // three by a new m5.large moves three pods; deleting the two m5.2xlarge into the m5.large that stays moves two
    // and saves as much (Karpenter's filterOutSameInstanceType).
    let mut cluster = Cluster::new();
    general_purpose_only(&mut cluster);
    cluster.pools[0].budgets = budget("100%");
    cluster.node("big-a", "default", "m5.2xlarge", CapacityType::OnDemand, vec![pod("a/a", 100, 128)]);
    cluster.node("big-b", "default", "m5.2xlarge", CapacityType::OnDemand, vec![pod("a/b", 100, 128)]);
    cluster.node("small", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/c", 100, 128)]);
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.method, Method::MultiNodeConsolidation);
    assert_eq!(command.decision(), "delete", "{command:?}");
    assert_eq!(command.candidates, vec!["big-a", "big-b"]);

    // Where the replacement can be a type cheaper than any candidate of its own type, several go for one.
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = budget("100%");
    for name in ["a", "b", "c"] {
        cluster.node(name, "default", "m5.2xlarge", CapacityType::OnDemand, vec![pod(&format!("a/{name}"), 100, 128)]);
    }
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.candidates.len(), 3, "{command:?}");
    assert_eq!(command.decision(), "replace");
    assert_ne!(command.replacements[0].instance_type, "m5.2xlarge");
}

#[test]
fn consolidation_looks_first_at_the_nodes_that_save_most_per_pod_moved() {
    // Budget for one node: single-node consolidation takes the first candidate that can go. Both can (their pods
    // fit in `room`); the r5.2xlarge saves $0.504/h for 3 pods moved, the m5.large $0.096/h for 1 (Karpenter 1.14
    // orders by price over reschedule cost; the order before, fewest pods first, took the m5.large).
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = budget("1");
    let pods = (0..3).map(|i| pod(&format!("a/x{i}"), 200, 256)).collect();
    cluster.node("dear", "default", "r5.2xlarge", CapacityType::OnDemand, pods);
    cluster.node("cheap", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/y", 200, 256)]);
    cluster
        .node("room", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/z", 1000, 1024)])
        .do_not_disrupt = true;
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.candidates, vec!["dear"], "{command:?}");
    assert_eq!(command.decision(), "delete");
}

#[test]
fn pods_are_not_moved_onto_a_node_that_lost_pods_within_consolidate_after() {
    // Just after a scale-down: `holey` lost pods a moment ago and has room; `quiet` lost none and is a candidate.
    // Moving quiet's two pods into the hole would evict two pods for what removing holey, once it has settled,
    // does with one. No cheaper type holds 2 CPU and 8 GiB, so quiet has nowhere else to go.
    let mut cluster = Cluster::new();
    let pods = (0..2).map(|i| pod(&format!("a/q{i}"), 1000, 4096)).collect();
    cluster.node("quiet", "default", "m5.xlarge", CapacityType::OnDemand, pods);
    let holey = cluster.node("holey", "default", "m5.xlarge", CapacityType::OnDemand, vec![pod("a/h", 1000, 4096)]);
    (holey.last_pod_event, holey.last_pod_departure) = (Some(now()), Some(now()));
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    let why = blocked_reason(&decision, "quiet");
    assert!(why.contains("1 nodes that lost pods within consolidateAfter are not counted as room"), "{why}");

    // With a pod pending, the settling node keeps its room for it; a candidate's pod planned there is refused.
    cluster.pending = vec![pod("a/pending", 100, 128).request];
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    let why = blocked_reason(&decision, "quiet");
    assert!(why.contains("would go to holey, which lost pods within consolidateAfter"), "{why}");
    cluster.pending.clear();

    // A node whose pods only came (another command's moved pods, say) is room at once: quiet's pods go there.
    cluster.nodes[1].last_pod_departure = Some(minutes_ago(2));
    let command = cluster.decide().command.expect("a command");
    assert_eq!((command.candidates.as_slice(), command.decision()), (["quiet".to_string()].as_slice(), "delete"));

    // Settled (consolidateAfter is a minute): the node cheapest to disrupt goes first, moving one pod.
    cluster.nodes[1].last_pod_event = Some(minutes_ago(2));
    let command = cluster.decide().command.expect("a command");
    assert_eq!((command.candidates.as_slice(), command.decision()), (["holey".to_string()].as_slice(), "delete"));
}

#[test]
fn a_single_node_move_is_joined_by_the_candidates_after_it_that_could_move_on_their_own() {
    // `stuck` saves most per pod moved, so it heads every prefix multi-node consolidation tries, but its 15.5 CPU
    // pod fits nowhere that stays and no cheaper general-purpose type holds it: the prefix search finds nothing.
    // Single-node consolidation then finds `light-1`'s pod a place in `room`, and `light-2`'s fits there as well:
    // both go in one command rather than one after the other. `rider`'s 12 GiB pod fits in no node that stays and
    // in no type cheaper than its own, so it would not be moved on its own, and it does not join (with the two it
    // could: one new m5.xlarge for its pod costs less than the three).
    let mut cluster = Cluster::new();
    general_purpose_only(&mut cluster);
    cluster.pools[0].budgets = budget("100%");
    cluster.node("stuck", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/big", 15500, 1024)]);
    cluster.node("light-1", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/l1", 500, 512)]);
    cluster.node("light-2", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/l2", 500, 512)]);
    cluster
        .node("room", "default", "m5.2xlarge", CapacityType::OnDemand, vec![pod("a/r", 1000, 28 * 1024)])
        .do_not_disrupt = true;
    let rider_pods = vec![pod("a/rider", 1000, 12 * 1024), pod("a/small", 100, 128)];
    cluster.node("rider", "default", "r5.large", CapacityType::OnDemand, rider_pods);
    let decision = cluster.decide();
    assert!(blocked_reason(&decision, "stuck").starts_with("not consolidated"), "{:?}", decision.blocked);
    let rider = held_by(&cluster, "rider");
    assert!(rider.starts_with("not consolidated: no replacement costs at most"), "{rider}");
    let command = decision.command.expect("a command");
    assert_eq!(command.method, Method::MultiNodeConsolidation);
    assert_eq!(
        (command.candidates.as_slice(), command.decision()),
        (["light-1", "light-2"].map(String::from).as_slice(), "delete")
    );
    assert_eq!(command.joined, 1, "light-2 joined light-1's move");
    still_valid(&cluster.snapshot(), &command).expect("still valid on the same cluster");

    // Room for one of them only (the other would need a new node of their own type): the first goes alone.
    let roomy = cluster.nodes[3].room.available;
    cluster.nodes[3].room.available = roomy - pod("a/filler", 6000, 1024).request.requests;
    let command = cluster.decide().command.expect("a command");
    assert_eq!(
        (command.method, command.candidates.as_slice()),
        (Method::SingleNodeConsolidation, ["light-1".to_string()].as_slice())
    );
    assert_eq!(command.joined, 0);

    // Nor beyond the budget.
    cluster.nodes[3].room.available = roomy;
    cluster.pools[0].budgets = budget("1");
    assert_eq!(cluster.decide().command.expect("a command").candidates, ["light-1"]);
}

#[test]
fn a_node_that_can_simply_go_is_taken_before_a_replacement_found_earlier_in_the_order() {
    // `half` (an r5.4xlarge with 44 GiB of pods) saves the most per pod moved, so single-node consolidation looks
    // at it first: its pods fit no room that stays but fit an r5.2xlarge, a replacement at half the price.
    // `small`'s 18 GiB fit in the room `half` has: deleting it saves a whole node and launches nothing. Together
    // they would need an r5.4xlarge, `half`'s own type, so multi-node consolidation finds nothing.
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = budget("100%");
    let pods = |name: &str, count: usize, gib: i64| -> Vec<MovablePod> {
        (0..count).map(|i| pod(&format!("{name}/p{i}"), 500, gib * 1024)).collect()
    };
    cluster.node("half", "default", "r5.4xlarge", CapacityType::OnDemand, pods("half", 4, 11));
    cluster.node("small", "default", "r5.2xlarge", CapacityType::OnDemand, pods("small", 3, 6));
    let command = cluster.decide().command.expect("a command");
    assert_eq!(
        (command.method, command.decision(), command.candidates.as_slice()),
        (Method::SingleNodeConsolidation, "delete", ["small".to_string()].as_slice())
    );

    // Without the room, `half`'s replacement is the move.
    cluster.nodes[0].room.available = Resources::ZERO;
    let command = cluster.decide().command.expect("a command");
    assert_eq!((command.decision(), command.candidates.as_slice()), ("replace", ["half".to_string()].as_slice()));
}

#[test]
fn every_move_weighed_is_reported_with_the_balanced_score_where_the_pool_is_balanced() {
    // A lone oversized node: single-node consolidation replaces it. The default policy approves without a score.
    let mut cluster = Cluster::new();
    cluster.node("big", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/small", 500, 1024)]);
    let decision = cluster.decide();
    assert!(decision.command.is_some());
    let approved = WeighedMove {
        nodepool: "default".into(),
        policy: Policy::WhenEmptyOrUnderutilized,
        approved: true,
        score: None,
    };
    assert_eq!(decision.moves, vec![approved]);

    // Balanced: most of the pool's cost saved (all but the replacement's) for all its disruption.
    cluster.pools[0].policy = Policy::Balanced;
    let decision = cluster.decide();
    assert!(decision.command.is_some());
    let [only] = decision.moves.as_slice() else { panic!("one move: {:?}", decision.moves) };
    assert_eq!((only.policy, only.approved), (Policy::Balanced, true));
    let (score, pool_approved) = only.score.expect("scored");
    assert!(score > 0.8 && score < 1.0 && pool_approved, "{score}");

    // Balanced, beside a dear node kept by do-not-disrupt: deleting `big` would pass (half the pool's cost for 7 of
    // its 9 units of disruption: 0.64), but its six pods need a c5.2xlarge, which leaves 0.36: weighed, refused.
    let mut cluster = Cluster::new();
    cluster.pools[0].policy = Policy::Balanced;
    let pods = (0..6).map(|i| pod(&format!("a/s{i}"), 1000, 1024)).collect();
    cluster.node("big", "default", "m5.4xlarge", CapacityType::OnDemand, pods);
    cluster
        .node("kept", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/k", 15_800, 50_000)])
        .do_not_disrupt = true;
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    let [refused] = decision.moves.as_slice() else { panic!("one move: {:?}", decision.moves) };
    assert!(!refused.approved);
    let (score, pool_approved) = refused.score.expect("scored");
    assert!(score < 0.5 && score > 0.3 && !pool_approved, "{score}");
    assert!(blocked_reason(&decision, "big").contains("is Balanced"), "{:?}", decision.blocked);
}

#[test]
fn a_node_whose_pods_fit_a_cheaper_type_is_replaced_and_the_guard_refuses_pennies() {
    let mut cluster = Cluster::new();
    cluster.node("big", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/small", 500, 1024)]);
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.method, Method::SingleNodeConsolidation);
    assert_eq!(command.decision(), "replace");
    let replacement = &command.replacements[0];
    assert!(replacement.price_per_hour < 0.768 * 0.95, "{}", replacement.price_per_hour);
    // Every option offered to CreateFleet is cheaper by the guard, not just the first.
    for option in &replacement.instance_type_options {
        let price = cluster.prices.on_demand(option).expect("price");
        assert!(price < command.candidates_price * 0.95, "{option} at {price}");
    }

    // A node already of the cheapest type that holds its pod is left alone, with why.
    let mut cluster = Cluster::new();
    cluster.node("right-sized", "default", "c5.large", CapacityType::OnDemand, vec![pod("a/p", 1500, 1024)]);
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(blocked_reason(&decision, "right-sized").contains("no replacement costs at most 95%"));
}

#[test]
fn spot_is_replaced_by_spot_only_behind_the_flag() {
    let mut cluster = Cluster::new();
    // Spot priced at one discount everywhere, so that enough types are as efficient as the cheapest to make the 15
    // options the flag asks for (each market's own price leaves fewer types within the solver's efficiency slack).
    cluster.prices = cluster.prices.with_spot_estimated();
    // The pool allows on-demand too; still the spot node is not moved to on-demand (a later pass would move it
    // back to spot: churn), as Karpenter does.
    cluster.specs = vec![pool_spec("default", &["spot", "on-demand"])];
    cluster.node("spot-big", "default", "m5.4xlarge", CapacityType::Spot, vec![pod("a/small", 500, 1024)]);
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(blocked_reason(&decision, "spot-big").contains("--spot-to-spot-consolidation"));
    cluster.settings.spot_to_spot = true;
    let command = cluster.decide().command.expect("spot to spot with the flag");
    assert!(command.replacements[0].capacity_types.contains(&CapacityType::Spot));
    assert!(command.replacements[0].instance_type_options.len() >= 15);
}

#[test]
fn on_demand_is_replaced_by_spot_where_the_pool_allows_it() {
    let mut cluster = Cluster::new();
    cluster.specs = vec![pool_spec("default", &["spot", "on-demand"])];
    cluster.node("od", "default", "m5.xlarge", CapacityType::OnDemand, vec![pod("a/p", 1000, 2048)]);
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.replacements[0].capacity_type, CapacityType::Spot);
}

/// `light` (an m5.large whose pod needs 6 GiB, so no cheaper type holds it) and `roomy` (an m5.xlarge kept by
/// do-not-disrupt, with about 1.9 CPUs free): `light`'s pod fits in `roomy`'s room, so `light` may go.
fn light_and_roomy() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.node("light", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/light", 1200, 6144)]);
    cluster
        .node("roomy", "default", "m5.xlarge", CapacityType::OnDemand, vec![pod("a/busy", 2000, 1024)])
        .do_not_disrupt = true;
    cluster
}

#[test]
fn a_consolidation_that_would_take_the_room_a_pending_pod_needs_waits() {
    let mut cluster = light_and_roomy();
    let command = cluster.decide().command.expect("light's pod fits in roomy's room");
    assert_eq!((command.candidates.as_slice(), command.decision()), (&["light".to_string()][..], "delete"));

    // A pod waiting for a place fits in roomy's room now; with light gone it and light's pod would not both fit.
    cluster.pending = vec![pod("a/waiting", 1000, 512).request];
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(blocked_reason(&decision, "light").contains("1 pending pods would then need a new node"), "{decision:?}");

    // A pending pod small enough for what is left beside light's pod changes nothing.
    cluster.pending = vec![pod("a/waiting", 300, 512).request];
    assert_eq!(cluster.decide().command.expect("still a command").candidates, vec!["light"]);
}

#[test]
fn consolidation_waits_while_pending_pods_need_new_nodes_and_ignores_those_that_fit_nowhere() {
    let mut cluster = light_and_roomy();
    cluster.pending = vec![pod("a/big-1", 3000, 1024).request, pod("a/big-2", 3000, 1024).request];
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(
        blocked_reason(&decision, "light").contains("2 pending pods need new nodes; consolidation waits"),
        "{decision:?}"
    );

    // A pod no NodePool can hold is the provisioner's to report; it does not hold consolidation back.
    cluster.pending = vec![pod("a/huge", 1_000_000, 1024).request];
    assert_eq!(cluster.decide().command.expect("a command").candidates, vec!["light"]);
}

#[test]
fn a_candidates_pods_are_not_moved_onto_capacity_still_launching() {
    let mut cluster = Cluster::new();
    cluster.node("light", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/light", 1200, 6144)]);
    cluster.node("launching", "default", "m5.xlarge", CapacityType::OnDemand, vec![]);
    let launching = cluster.nodes.pop().expect("just added").room;
    cluster.in_flight = vec![launching];
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(
        blocked_reason(&decision, "light").contains("pod a/light would go to launching, which is not initialized yet"),
        "{decision:?}"
    );

    // Nor onto a node that has registered but is not initialized.
    cluster.in_flight.clear();
    cluster.node("starting", "default", "m5.xlarge", CapacityType::OnDemand, vec![]).initialized_at = None;
    let decision = cluster.decide();
    assert!(decision.command.is_none(), "{:?}", decision.command);
    assert!(blocked_reason(&decision, "light").contains("which is not initialized yet"), "{decision:?}");

    // Beyond Karpenter: with room for the same pods on an initialized node as well (one too busy to be a candidate
    // itself), the move does not wait for the node still starting.
    cluster.node("busy", "default", "m5.xlarge", CapacityType::OnDemand, vec![pod("a/busy", 2500, 1024)]);
    let command = cluster.decide().command.expect("light's pod goes to busy");
    assert_eq!((command.candidates, command.replacements.len()), (vec!["light".to_string()], 0));
}

#[test]
fn a_drifted_node_is_replaced_by_what_its_own_pods_need_not_what_pending_pods_need() {
    let category = |pod: MovablePod, category: &str| {
        let mut pod = pod;
        pod.request.requirements.push(Requirement::new(
            "karpenter.k8s.aws/instance-category",
            Operator::In,
            &[category],
        ));
        pod
    };
    let mut cluster = Cluster::new();
    cluster.pools[0].consolidate_after = None;
    cluster
        .node("old", "default", "c5.large", CapacityType::OnDemand, vec![category(pod("a/p", 1500, 1024), "c")])
        .drifted = Some("AMIDrift".into());
    cluster.pending = vec![category(pod("a/waiting", 1000, 1024), "r").request];
    let command = cluster.decide().command.expect("drift does not wait for a scale-out");
    assert_eq!(command.method, Method::Drift);
    assert_eq!(command.replacements.len(), 1, "{command:?}");
    assert_eq!(command.replacements[0].pods, vec!["a/p"]);
}

#[test]
fn drifted_nodes_are_replaced_even_when_the_replacement_costs_more() {
    let mut cluster = Cluster::new();
    cluster.pools[0].consolidate_after = None;
    cluster.node("old", "default", "c5.large", CapacityType::OnDemand, vec![pod("a/p", 1500, 1024)]).drifted =
        Some("AMIDrift".into());
    let command = cluster.decide().command.expect("a command");
    assert_eq!(command.method, Method::Drift);
    assert_eq!(command.candidates, vec!["old"]);
    assert_eq!(command.replacements.len(), 1);
}

#[test]
fn a_recent_consolidation_replacement_is_held() {
    let mut cluster = Cluster::new();
    cluster.pools[0].consolidate_after = Some(Duration::from_secs(30 * 60));
    let node = cluster.node("fresh", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/p", 500, 512)]);
    node.consolidation_replacement = true;
    node.created = minutes_ago(20);
    node.initialized_at = Some(minutes_ago(40));
    node.last_pod_event = Some(minutes_ago(40));
    let decision = cluster.decide();
    assert!(decision.command.is_none());
    assert!(blocked_reason(&decision, "fresh").contains("replaced other nodes recently"));
}

#[test]
fn balanced_skips_a_replacement_that_saves_little_for_much_disruption() {
    let mut cluster = Cluster::new();
    cluster.pools[0].policy = Policy::Balanced;
    cluster.pools[0].budgets = budget("100%");
    // A busy, slightly oversized node beside a large cheap-to-disrupt pool: little saving, most of the evictions.
    let pods: Vec<MovablePod> = (0..14).map(|i| pod(&format!("a/busy-{i}"), 250, 256)).collect();
    cluster.node("busy", "default", "m5.xlarge", CapacityType::OnDemand, pods);
    for i in 0..4 {
        cluster.node(
            &format!("full-{i}"),
            "default",
            "m5.4xlarge",
            CapacityType::OnDemand,
            vec![pod(&format!("a/f{i}"), 15_000, 50_000)],
        );
    }
    let decision = cluster.decide();
    assert!(blocked_reason(&decision, "busy").contains("Balanced"), "{:?}", decision);
    cluster.pools[0].policy = Policy::WhenEmptyOrUnderutilized;
    assert!(cluster.decide().command.is_some(), "the default policy takes the same replacement");
}

#[test]
fn a_pass_that_runs_out_of_time_says_so_and_decides_nothing_it_did_not_check() {
    let mut cluster = Cluster::new();
    cluster.settings.consolidation_timeout = Duration::ZERO;
    cluster.pools[0].budgets = budget("100%");
    for i in 0..3 {
        cluster.node(
            &format!("light-{i}"),
            "default",
            "m5.xlarge",
            CapacityType::OnDemand,
            vec![pod(&format!("a/p{i}"), 250, 256)],
        );
    }
    let decision = cluster.decide();
    assert!(decision.command.is_none());
    assert_eq!(decision.timed_out, vec![Method::MultiNodeConsolidation, Method::SingleNodeConsolidation]);
}

#[test]
fn a_command_is_no_longer_valid_once_its_node_got_new_pods() {
    let mut cluster = Cluster::new();
    cluster.node("empty", "default", "m5.large", CapacityType::OnDemand, vec![]);
    let command = cluster.decide().command.expect("a command");
    cluster.nodes[0].pods.push(pod("a/new", 100, 100));
    cluster.nodes[0].last_pod_event = Some(now());
    let error = still_valid(&cluster.snapshot(), &command).expect_err("no longer empty");
    assert!(error.contains("no longer empty"), "{error}");
}

#[test]
fn emptiness_goes_ahead_with_the_nodes_still_empty_when_one_got_a_pod() {
    // As Karpenter's emptiness validation: the others are not held back for the one that changed.
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = budget("100%");
    for name in ["e1", "e2", "e3"] {
        cluster.node(name, "default", "m5.large", CapacityType::OnDemand, vec![]);
    }
    let command = cluster.decide().command.expect("a command");
    assert_eq!((command.method, command.candidates.len()), (Method::Emptiness, 3));
    cluster.nodes[1].pods.push(pod("a/new", 100, 100));
    cluster.nodes[1].last_pod_event = Some(now());
    let valid = still_valid(&cluster.snapshot(), &command).expect("two still empty");
    assert_eq!(valid.candidates, ["e1", "e3"]);
    assert!((valid.candidates_price - 2.0 * cluster.nodes[0].price).abs() < 1e-9, "{}", valid.candidates_price);

    // Within the budget of now: one node.
    cluster.pools[0].budgets = budget("1");
    let valid = still_valid(&cluster.snapshot(), &command).expect("one still empty within budget");
    assert_eq!(valid.candidates, ["e1"]);
}

#[test]
fn emptiness_validation_takes_in_the_nodes_that_became_empty_and_quiet_meanwhile() {
    // A scale to zero: `e1` was quiet first; by the time its command is checked again, `e2` is too. A node that
    // is still settling, one with pods, and a drifted one (drift's to delete) stay out.
    let mut cluster = Cluster::new();
    cluster.pools[0].budgets = budget("100%");
    cluster.node("e1", "default", "m5.large", CapacityType::OnDemand, vec![]);
    for name in ["e2", "settling"] {
        cluster.node(name, "default", "m5.large", CapacityType::OnDemand, vec![]).last_pod_event = Some(now());
    }
    cluster.node("busy", "default", "m5.large", CapacityType::OnDemand, vec![pod("a/b", 1000, 1024)]);
    let command = cluster.decide().command.expect("a command");
    assert_eq!((command.method, command.candidates.as_slice()), (Method::Emptiness, ["e1".to_string()].as_slice()));
    cluster.nodes[1].last_pod_event = Some(minutes_ago(2));
    cluster.node("drifted", "default", "m5.large", CapacityType::OnDemand, vec![]).drifted =
        Some("NodePoolDrifted".into());
    let valid = still_valid(&cluster.snapshot(), &command).expect("still valid");
    assert_eq!(valid.candidates, ["e1", "e2"]);
    assert!((valid.candidates_price - 2.0 * cluster.nodes[0].price).abs() < 1e-9, "{}", valid.candidates_price);

    // The budget counts those that joined; the command's own candidates come first.
    cluster.pools[0].budgets = budget("1");
    assert_eq!(still_valid(&cluster.snapshot(), &command).expect("still valid").candidates, ["e1"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the cluster, a command leaves every pod a place (the replacements and the remaining nodes hold
    /// them), never costs more than what it removes when consolidating, and stays within every budget.
    #[test]
    fn a_command_places_every_pod_costs_less_and_respects_budgets(
        shapes in proptest::collection::vec(
            (0usize..4, proptest::collection::vec((100i64..2000, 128i64..4096), 0..4)),
            1..8,
        ),
        budget in 0usize..4,
    ) {
        let types = ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.xlarge"];
        let mut cluster = Cluster::new();
        cluster.pools[0].budgets = vec![Budget::parse(&budget.to_string(), None, None, vec![]).expect("budget")];
        for (i, (t, pods)) in shapes.iter().enumerate() {
            let info = cluster.types.iter().find(|x| x.name == types[*t]).expect("type").clone();
            let mut room = info.allocatable(Default::default());
            let mut kept = Vec::new();
            for (j, (cpu, mem)) in pods.iter().enumerate() {
                let p = pod(&format!("a/p{i}-{j}"), *cpu, *mem);
                if p.request.requests.fits_in(&room) {
                    room = room - p.request.requests;
                    kept.push(p);
                }
            }
            cluster.node(&format!("n{i}"), "default", types[*t], CapacityType::OnDemand, kept);
        }
        let snapshot = cluster.snapshot();
        let decision = decide(&snapshot);
        let Some(command) = decision.command else { return Ok(()) };
        prop_assert!(command.candidates.len() <= budget);
        if command.reason == Reason::Underutilized {
            prop_assert!(command.replacements_price < command.candidates_price);
        }
        // Place the candidates' pods on what is left plus the replacements, as nodes.
        let leaving: Vec<&ManagedNode> = snapshot.nodes.iter().filter(|n| command.candidates.contains(&n.claim)).collect();
        let pods: Vec<PodRequest> = leaving.iter().flat_map(|n| n.pods.iter().map(|p| p.request.clone())).collect();
        let mut existing: Vec<ExistingNode> = snapshot.nodes.iter().filter(|n| !command.candidates.contains(&n.claim)).map(|n| n.room.clone()).collect();
        for (k, r) in command.replacements.iter().enumerate() {
            let mut labels = r.labels.clone();
            labels.insert("kubernetes.io/hostname".into(), format!("replacement-{k}"));
            labels.insert("kubernetes.io/arch".into(), "amd64".into());
            labels.insert("karpenter.k8s.aws/instance-category".into(), r.instance_type[..1].into());
            labels.insert("karpenter.sh/capacity-type".into(), r.capacity_type.as_str().into());
            labels.insert("topology.kubernetes.io/zone".into(), ZONE.into());
            let allocatable = cluster.types.iter().find(|t| t.name == r.instance_type).expect("type").allocatable(Default::default());
            existing.push(ExistingNode { name: format!("replacement-{k}"), labels, taints: vec![], available: allocatable, capacity: allocatable, nodepool: Some("default".into()) , pods: Vec::new() });
        }
        let plan = solve(&crate::scheduling::SchedulingInput {
            pods: &pods, nodepools: &[], instance_types: &cluster.types, prices: &cluster.prices,
            existing: &existing, daemonsets: &[], unavailable: &cluster.unavailable,
        });
        prop_assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    }
}

fn held_by(cluster: &Cluster, claim: &str) -> String {
    match super::verdict(&cluster.snapshot(), claim).expect("a node of the snapshot") {
        super::Verdict::Stays { held_by } => held_by,
        super::Verdict::Disrupt { command } => panic!("{claim} would be disrupted: {command:?}"),
    }
}

fn disrupted_by(cluster: &Cluster, claim: &str) -> Command {
    match super::verdict(&cluster.snapshot(), claim).expect("a node of the snapshot") {
        super::Verdict::Disrupt { command } => command,
        super::Verdict::Stays { held_by } => panic!("{claim} stays: {held_by}"),
    }
}

#[test]
fn one_node_is_told_what_a_pass_would_do_with_it_or_what_holds_it() {
    let mut cluster = Cluster::new();
    let mut pinned = pod("shop/pinned", 100, 128);
    pinned.blocker = Some("it is annotated karpenter.sh/do-not-disrupt".into());
    cluster.node("pinned", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("shop/free", 100, 128), pinned]);
    cluster.node("big", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/small", 500, 1024)]);
    cluster.node("empty", "default", "m5.large", CapacityType::OnDemand, vec![]);
    assert_eq!(
        held_by(&cluster, "pinned"),
        "pod shop/pinned cannot be moved: it is annotated karpenter.sh/do-not-disrupt"
    );
    // Its pod fits in the room of the others: judged on its own, it goes.
    let delete = disrupted_by(&cluster, "big");
    assert_eq!((delete.method, delete.decision()), (Method::SingleNodeConsolidation, "delete"));
    let mut alone = Cluster::new();
    alone.node("big", "default", "m5.4xlarge", CapacityType::OnDemand, vec![pod("a/small", 500, 1024)]);
    let replace = disrupted_by(&alone, "big");
    assert_eq!((replace.method, replace.decision()), (Method::SingleNodeConsolidation, "replace"));
    let delete = disrupted_by(&cluster, "empty");
    assert_eq!((delete.method, delete.decision()), (Method::Emptiness, "delete"));
    alone = Cluster::new();
    alone.node("right-sized", "default", "c5.large", CapacityType::OnDemand, vec![pod("a/p", 1500, 1024)]);
    assert!(held_by(&alone, "right-sized").starts_with("not consolidated: no replacement costs at most 95%"));
    assert!(super::verdict(&cluster.snapshot(), "unknown").is_none());

    // Each thing that holds a node, in the order a pass meets them.
    cluster.pools[0].budgets = budget("0");
    assert_eq!(
        held_by(&cluster, "big"),
        "the disruption budget of NodePool default allows no more Underutilized disruptions now"
    );
    assert!(held_by(&cluster, "empty").contains("allows no more Empty disruptions"));
    cluster.pools[0].budgets = budget("100%");
    cluster.pools[0].policy = Policy::WhenEmpty;
    assert!(held_by(&cluster, "big").contains("consolidationPolicy: WhenEmpty) and 1 pod(s) run on it"));
    cluster.pools[0].consolidate_after = Some(Duration::from_secs(7200));
    assert!(held_by(&cluster, "big").starts_with("consolidateAfter (2h) has not passed since its last pod event"));
    cluster.pools[0].consolidate_after = None;
    assert_eq!(held_by(&cluster, "big"), "NodePool default has consolidateAfter: Never");
    // Drift does not wait for consolidateAfter.
    cluster.nodes[1].drifted = Some("AMIDrift".into());
    assert_eq!(disrupted_by(&cluster, "big").method, Method::Drift);
    cluster.nodes[1].initialized_at = None;
    assert_eq!(held_by(&cluster, "big"), "it is not initialized yet");
    cluster.nodes[1].deleting = true;
    assert_eq!(held_by(&cluster, "big"), "it is being deleted already");
}

#[test]
fn only_consolidation_waits_before_its_commands_run() {
    assert!(!Method::Drift.waits_before_it_runs());
    for method in [Method::Emptiness, Method::SingleNodeConsolidation, Method::MultiNodeConsolidation] {
        assert!(method.waits_before_it_runs(), "{method:?}");
    }
}
