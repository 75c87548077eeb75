//! The solver against the real catalog (the embedded snapshot): examples for each constraint, and properties
//! over random pods and NodePools.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::model::{DaemonSetPod, ExistingNode, NodePoolSpec, PodRequest, Taint, Toleration, tolerates_all};
use super::plan::Plan;
use super::requirements::{Operator, Requirement};
use super::solver::{
    MAX_INSTANCE_TYPE_OPTIONS, Pass, Prepared, PreparedCatalog, SchedulingInput, solve, solve_on, solve_prepared,
    solve_with,
};
use super::topology::{PodAffinityTerm, TopologyKey, TopologySpread};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::pricing::PriceTable;
use crate::catalog::resources::{ResourceName, Resources};
use crate::catalog::{CapacityType, OfferingKey, embedded_instance_types};
use crate::names::{CAPACITY_TYPE_LABEL, ZONE_LABEL};

pub(super) const GI: i64 = 1 << 30;

pub(super) fn types_of(families: &[&str]) -> Vec<InstanceTypeInfo> {
    embedded_instance_types().iter().filter(|t| families.contains(&t.family())).cloned().collect()
}

fn general_purpose() -> Vec<InstanceTypeInfo> {
    types_of(&["m5", "c5", "r5", "m6g", "t3"])
}

pub(super) fn pod(id: &str, cpu_millis: i64, memory: i64) -> PodRequest {
    PodRequest::new(
        id,
        Resources::ZERO
            .with(ResourceName::Cpu, cpu_millis)
            .with(ResourceName::Memory, memory)
            .with(ResourceName::Pods, 1),
    )
}

pub(super) fn pool(name: &str) -> NodePoolSpec {
    NodePoolSpec {
        name: name.to_string(),
        weight: 0,
        requirements: vec![Requirement::new("kubernetes.io/arch", Operator::In, &["amd64"])],
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

pub(super) struct Fixture {
    types: Vec<InstanceTypeInfo>,
    prices: PriceTable,
    pub(super) existing: Vec<ExistingNode>,
    daemonsets: Vec<DaemonSetPod>,
    unavailable: std::collections::HashSet<OfferingKey>,
}

impl Fixture {
    pub(super) fn new(types: Vec<InstanceTypeInfo>) -> Self {
        Self {
            types,
            prices: PriceTable::embedded(),
            existing: vec![],
            daemonsets: vec![],
            unavailable: Default::default(),
        }
    }

    pub(super) fn solve(&self, pods: &[PodRequest], pools: &[NodePoolSpec]) -> Plan {
        solve(&SchedulingInput {
            pods,
            nodepools: pools,
            instance_types: &self.types,
            prices: &self.prices,
            existing: &self.existing,
            daemonsets: &self.daemonsets,
            unavailable: &self.unavailable,
        })
    }

    pub(super) fn find(&self, name: &str) -> &InstanceTypeInfo {
        self.types.iter().find(|t| t.name == name).expect(name)
    }
}

#[test]
fn small_pods_share_cheap_nodes_whose_options_all_hold_them() {
    let fixture = Fixture::new(general_purpose());
    let pods: Vec<PodRequest> = (0..10).map(|i| pod(&format!("default/p{i}"), 250, GI / 2)).collect();
    let default = pool("default");
    let plan = fixture.solve(&pods, std::slice::from_ref(&default));
    assert!(plan.unschedulable.is_empty());
    assert_eq!(plan.new_nodes.iter().map(|n| n.pods.len()).sum::<usize>(), 10);
    // No dearer than first-fit, nor than the cheapest single node the pool allows that holds all ten.
    let first_fit = solve_with(
        &SchedulingInput {
            pods: &pods,
            nodepools: std::slice::from_ref(&default),
            instance_types: &fixture.types,
            prices: &fixture.prices,
            existing: &[],
            daemonsets: &[],
            unavailable: &fixture.unavailable,
        },
        Pass::Replan,
    );
    let total = pods.iter().fold(Resources::ZERO, |sum, p| sum + p.requests);
    let one_node = fixture
        .types
        .iter()
        .filter(|t| default.requirements.iter().all(|r| r.matches(t.labels().get(r.key.as_str()).map(String::as_str))))
        .filter(|t| total.fits_in(&t.allocatable(Default::default())))
        .filter_map(|t| t.zones.iter().filter_map(|z| fixture.prices.spot(&t.name, z)).reduce(f64::min))
        .fold(f64::INFINITY, f64::min);
    assert!(one_node.is_finite());
    let price = plan.total_price_per_hour();
    assert!(price <= one_node + 1e-9 && price <= first_fit.total_price_per_hour() + 1e-9, "{price} against {one_node}");
    for node in &plan.new_nodes {
        assert!(node.instance_type_options.len() <= MAX_INSTANCE_TYPE_OPTIONS);
        for option in &node.instance_type_options {
            assert!(node.requests.fits_in(&fixture.find(option).allocatable(Default::default())), "{option}");
        }
        // Both capacity types allowed: spot, the cheaper.
        assert_eq!(node.capacity_type, CapacityType::Spot);
    }
}

#[test]
fn options_are_ordered_by_price_and_the_node_launches_as_the_cheapest() {
    let fixture = Fixture::new(general_purpose());
    let plan = fixture.solve(&[pod("default/a", 1000, GI)], &[pool("default")]);
    let node = &plan.new_nodes[0];
    assert_eq!(node.instance_type, node.instance_type_options[0]);
    let prices: Vec<f64> =
        node.instance_type_options.iter().map(|t| fixture.prices.spot(t, &node.zone).unwrap_or(f64::MAX)).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
}

#[test]
fn unavailable_offerings_are_not_launched_into() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    let first = fixture.solve(&[pod("default/a", 1000, GI)], &[pool("default")]);
    let chosen = &first.new_nodes[0];
    fixture.unavailable.insert(OfferingKey {
        instance_type: chosen.instance_type.clone(),
        zone: chosen.zone.clone(),
        capacity_type: chosen.capacity_type,
    });
    let second = fixture.solve(&[pod("default/a", 1000, GI)], &[pool("default")]);
    let node = &second.new_nodes[0];
    assert_ne!(
        (&node.instance_type, &node.zone, node.capacity_type),
        (&chosen.instance_type, &chosen.zone, chosen.capacity_type)
    );
}

#[test]
fn existing_capacity_is_used_before_new_nodes() {
    let mut fixture = Fixture::new(general_purpose());
    fixture.existing.push(ExistingNode {
        name: "ip-10-0-1-1".into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_string(), "us-east-1a".to_string())]),
        taints: vec![],
        available: Resources::ZERO
            .with(ResourceName::Cpu, 1500)
            .with(ResourceName::Memory, 4 * GI)
            .with(ResourceName::Pods, 10),
        capacity: Resources::ZERO,
        nodepool: None,
        pods: Vec::new(),
    });
    let plan = fixture.solve(&[pod("default/a", 1000, GI), pod("default/b", 1000, GI)], &[pool("default")]);
    assert_eq!(plan.existing_placements["ip-10-0-1-1"], vec!["default/a"]);
    assert_eq!(plan.new_nodes.len(), 1);
    assert_eq!(plan.new_nodes[0].pods, vec!["default/b"]);
}

#[test]
fn node_selectors_narrow_zone_capacity_type_and_type() {
    let fixture = Fixture::new(general_purpose());
    let mut p = pod("default/a", 500, GI);
    p.requirements = vec![
        Requirement::equals(ZONE_LABEL, "us-east-1b"),
        Requirement::equals(CAPACITY_TYPE_LABEL, "on-demand"),
        Requirement::equals("karpenter.k8s.aws/instance-family", "c5"),
    ];
    let plan = fixture.solve(&[p], &[pool("default")]);
    let node = &plan.new_nodes[0];
    assert_eq!((node.zone.as_str(), node.capacity_type), ("us-east-1b", CapacityType::OnDemand));
    assert!(node.instance_type_options.iter().all(|t| t.starts_with("c5.")), "{:?}", node.instance_type_options);
}

#[test]
fn pods_with_conflicting_selectors_get_separate_nodes() {
    let fixture = Fixture::new(general_purpose());
    let mut a = pod("default/a", 500, GI);
    a.requirements = vec![Requirement::equals(ZONE_LABEL, "us-east-1a")];
    let mut b = pod("default/b", 500, GI);
    b.requirements = vec![Requirement::equals(ZONE_LABEL, "us-east-1c")];
    let plan = fixture.solve(&[a, b], &[pool("default")]);
    let mut zones: Vec<&str> = plan.new_nodes.iter().map(|n| n.zone.as_str()).collect();
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1c"]);
}

#[test]
fn a_pool_taint_keeps_out_pods_that_do_not_tolerate_it() {
    let fixture = Fixture::new(general_purpose());
    let mut tainted = pool("gpu-only");
    tainted.taints = vec![Taint { key: "dedicated".into(), value: Some("batch".into()), effect: "NoSchedule".into() }];
    let plan = fixture.solve(&[pod("default/a", 500, GI)], std::slice::from_ref(&tainted));
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(plan.unschedulable[0].reason.contains("does not tolerate its taint dedicated=batch:NoSchedule"));

    let mut tolerant = pod("default/b", 500, GI);
    tolerant.tolerations = vec![Toleration {
        key: Some("dedicated".into()),
        operator: "Equal".into(),
        value: Some("batch".into()),
        effect: Some("NoSchedule".into()),
    }];
    assert_eq!(fixture.solve(&[tolerant], &[tainted]).new_nodes.len(), 1);
}

#[test]
fn startup_taints_do_not_keep_pods_off() {
    let fixture = Fixture::new(general_purpose());
    let mut starting = pool("default");
    starting.startup_taints = vec![Taint { key: "cni-not-ready".into(), value: None, effect: "NoSchedule".into() }];
    assert!(fixture.solve(&[pod("default/a", 500, GI)], &[starting]).unschedulable.is_empty());
}

#[test]
fn the_heaviest_pool_that_fits_wins() {
    let fixture = Fixture::new(general_purpose());
    let mut heavy = pool("heavy");
    heavy.weight = 50;
    heavy.requirements.push(Requirement::equals("karpenter.k8s.aws/instance-family", "r5"));
    let plan = fixture.solve(&[pod("default/a", 500, GI)], &[pool("light"), heavy]);
    assert_eq!(plan.new_nodes[0].nodepool, "heavy");
    assert!(plan.new_nodes[0].instance_type.starts_with("r5."));
}

#[test]
fn limits_stop_new_nodes_and_say_so() {
    let fixture = Fixture::new(general_purpose());
    let mut limited = pool("default");
    limited.limits = Some(Resources::ZERO.with(ResourceName::Cpu, 8000).with(ResourceName::Memory, 1 << 40));
    let pods: Vec<PodRequest> = (0..6).map(|i| pod(&format!("default/p{i}"), 3000, GI)).collect();
    let plan = fixture.solve(&pods, &[limited]);
    let capacity_cpu: i64 = plan
        .new_nodes
        .iter()
        .map(|n| {
            n.instance_type_options
                .iter()
                .map(|t| fixture.find(t).capacity(Default::default()).get(ResourceName::Cpu))
                .max()
                .unwrap_or(0)
        })
        .sum();
    assert!(capacity_cpu <= 8000, "{capacity_cpu}m planned");
    assert!(!plan.unschedulable.is_empty());
    assert!(plan.unschedulable.iter().all(|u| u.reason.contains("limits")), "{:?}", plan.unschedulable);
}

#[test]
fn a_limit_on_nodes_counts_existing_and_planned_nodes() {
    let mut fixture = Fixture::new(general_purpose());
    let mut limited = pool("default");
    limited.limits = Some(unlimited().with(ResourceName::Nodes, 3));
    fixture.existing.push(ExistingNode {
        name: "running".into(),
        labels: BTreeMap::new(),
        taints: vec![],
        available: Resources::ZERO,
        capacity: fixture.find("m5.large").capacity(Default::default()),
        nodepool: Some("default".into()),
        pods: vec![],
    });
    // Each pod needs a node of its own: two fit under the limit beside the running one.
    let pods: Vec<PodRequest> = (0..5).map(|i| pod(&format!("default/p{i}"), 60_000, GI)).collect();
    let plan = fixture.solve(&pods, &[limited]);
    assert_eq!(plan.new_nodes.len(), 2, "{:?}", plan.new_nodes);
    assert_eq!(plan.unschedulable.len(), 3);
    // The limit named, what is left of it, and the type that comes closest.
    let refusal = &plan.unschedulable[0].nodepools[0];
    assert_eq!(refusal.nodepool, "default");
    assert!(refusal.reason.starts_with("its limits are reached: 0 nodes left under them"), "{refusal:?}");
    assert_eq!(plan.unschedulable[0].reason, format!("NodePool default: {}", refusal.reason));
}

fn unlimited() -> Resources {
    ResourceName::ALL.into_iter().fold(Resources::ZERO, |r, name| r.with(name, i64::MAX / 2))
}

#[test]
fn extended_resources_go_only_to_types_that_offer_them() {
    let fixture = Fixture::new(types_of(&["m5", "c5n", "trn1", "inf2"]));
    let wants = |id: &str, resource: ResourceName, count: i64| {
        let mut p = pod(id, 1000, GI);
        p.requests.set(resource, count);
        p
    };
    let pods = [
        wants("default/efa", ResourceName::Efa, 1),
        wants("default/cores", ResourceName::NeuronCore, 4),
        wants("default/pod-eni", ResourceName::PodEni, 1),
    ];
    let mut any_arch = pool("default");
    any_arch.requirements.clear();
    let plan = fixture.solve(&pods, &[any_arch]);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    for node in &plan.new_nodes {
        for option in &node.instance_type_options {
            let capacity = fixture.find(option).capacity(Default::default());
            assert!(node.requests.fits_in(&capacity), "{option} lacks what {:?} ask", node.pods);
        }
    }
    let family_of = |id: &str| {
        let node = plan.new_nodes.iter().find(|n| n.pods.iter().any(|p| p == id)).expect("planned");
        node.instance_type.split('.').next().unwrap_or_default().to_string()
    };
    assert!(["c5n", "trn1"].contains(&family_of("default/efa").as_str()), "{}", family_of("default/efa"));
    assert!(["trn1", "inf2"].contains(&family_of("default/cores").as_str()));

    // A pool without EFA types cannot take the EFA pod, and says which resource is missing.
    let mut no_efa = pool("default");
    no_efa.requirements.push(Requirement::new("karpenter.k8s.aws/instance-family", Operator::In, &["m5"]));
    let plan = fixture.solve(&pods[..1], &[no_efa]);
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(
        plan.unschedulable[0]
            .reason
            .contains("the pod requests 1 vpc.amazonaws.com/efa, and no instance type it allows has any"),
        "{:?}",
        plan.unschedulable
    );
}

#[test]
fn pods_with_many_ebs_volumes_are_spread_over_nodes_that_can_attach_them() {
    let fixture = Fixture::new(types_of(&["m5", "m5d"]));
    let pods: Vec<PodRequest> = (0..6)
        .map(|i| {
            let mut p = pod(&format!("default/db-{i}"), 250, GI);
            p.requests.set(ResourceName::EbsVolumes, 10);
            p
        })
        .collect();
    let plan = fixture.solve(&pods, &[pool("default")]);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    // m5: 27 attachments less the root volume; m5d less its instance-store disks too: two such pods a node.
    assert!(plan.new_nodes.len() >= 3, "{:?}", plan.new_nodes);
    for node in &plan.new_nodes {
        assert!(node.pods.len() <= 2, "{:?}", node.pods);
        for option in &node.instance_type_options {
            let limit = fixture.find(option).capacity(Default::default()).get(ResourceName::EbsVolumes);
            assert!(node.requests.get(ResourceName::EbsVolumes) <= limit, "{option} attaches {limit}");
        }
    }
}

#[test]
fn best_effort_relaxes_min_values_only_for_a_pod_that_needs_it() {
    let fixture = Fixture::new(general_purpose());
    let mut diverse = pool("default");
    diverse.requirements.push(Requirement {
        min_values: Some(3),
        ..Requirement::new("karpenter.k8s.aws/instance-family", Operator::Exists, &[])
    });
    // Only r5 offers this much memory per CPU among these families at this size: one family.
    let mut big = pod("default/big", 2000, 600 * GI);
    big.requirements = vec![Requirement::new("karpenter.k8s.aws/instance-family", Operator::In, &["r5", "m5"])];
    let small = pod("default/small", 500, GI);
    let strict = fixture.solve(&[big.clone(), small.clone()], std::slice::from_ref(&diverse));
    assert_eq!(strict.unschedulable.len(), 1, "{:?}", strict.unschedulable);
    assert_eq!(strict.unschedulable[0].pod, "default/big");
    let reason = &strict.unschedulable[0].reason;
    assert!(reason.contains("fewer than minValues 3 distinct values of karpenter.k8s.aws/instance-family"), "{reason}");
    assert!(strict.new_nodes.iter().all(|n| !n.min_values_relaxed));

    diverse.min_values_policy = super::model::MinValuesPolicy::BestEffort;
    let relaxed = fixture.solve(&[big, small], &[diverse]);
    assert!(relaxed.unschedulable.is_empty(), "{:?}", relaxed.unschedulable);
    let node_of = |id: &str| relaxed.new_nodes.iter().find(|n| n.pods.iter().any(|p| p == id)).expect("planned");
    assert!(node_of("default/big").min_values_relaxed);
    let small_node = node_of("default/small");
    if !small_node.pods.iter().any(|p| p == "default/big") {
        assert!(!small_node.min_values_relaxed, "a pod that fits three families keeps them");
    }
}

#[test]
fn a_pod_too_large_for_every_type_says_how_large_the_largest_is() {
    let fixture = Fixture::new(types_of(&["m5"]));
    let plan = fixture.solve(&[pod("default/huge", 128_000, GI)], &[pool("default")]);
    assert_eq!(plan.unschedulable.len(), 1);
    let reason = &plan.unschedulable[0].reason;
    // m5.24xlarge: 96 vCPUs less kube-reserved (60m + 10m + 2 × 5m + 92 × 2.5m = 310m).
    assert!(
        reason.contains("the pod requests 128 CPU; the largest instance type it allows has 95.69 allocatable"),
        "{reason}"
    );
}

#[test]
fn a_requirement_no_type_meets_is_named() {
    let fixture = Fixture::new(general_purpose());
    let mut p = pod("default/a", 500, GI);
    p.requirements = vec![Requirement::equals("karpenter.k8s.aws/instance-family", "z9")];
    let plan = fixture.solve(&[p], &[pool("default")]);
    assert!(plan.unschedulable[0].reason.contains("karpenter.k8s.aws/instance-family=z9"), "{:?}", plan.unschedulable);

    // A label of the pool's own is not an instance type's: the refusal says what its nodes get.
    let mut p = pod("default/b", 500, GI);
    p.requirements = vec![Requirement::equals("team", "checkout")];
    let mut labelled = pool("default");
    labelled.labels.insert("team".into(), "search".into());
    let plan = fixture.solve(&[p], &[labelled]);
    assert_eq!(
        plan.unschedulable[0].nodepools[0].reason, "its nodes get team=search, and the pod requires team=checkout",
        "{:?}",
        plan.unschedulable
    );
}

#[test]
fn preferences_are_followed_when_possible_and_relaxed_when_not() {
    let fixture = Fixture::new(general_purpose());
    let mut prefers_b = pod("default/a", 500, GI);
    prefers_b.preferences = vec![(10, vec![Requirement::equals(ZONE_LABEL, "us-east-1b")])];
    assert_eq!(fixture.solve(&[prefers_b], &[pool("default")]).new_nodes[0].zone, "us-east-1b");

    let mut prefers_nowhere = pod("default/b", 500, GI);
    prefers_nowhere.preferences = vec![(10, vec![Requirement::equals(ZONE_LABEL, "mars-1a")])];
    let plan = fixture.solve(&[prefers_nowhere], &[pool("default")]);
    assert!(plan.unschedulable.is_empty());
    assert_eq!(plan.new_nodes.len(), 1);
}

#[test]
fn daemonset_overhead_is_reserved_on_every_node() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    let without = fixture.solve(&[pod("default/a", 1800, GI)], &[pool("default")]);
    assert_eq!(without.new_nodes[0].instance_type, "m5.large");
    fixture.daemonsets.push(DaemonSetPod {
        requests: Resources::ZERO.with(ResourceName::Cpu, 200).with(ResourceName::Pods, 1),
        requirements: vec![],
        tolerations: vec![],
    });
    // 1930m allocatable − 200m DaemonSet < 1800m: the next size up.
    let with = fixture.solve(&[pod("default/a", 1800, GI)], &[pool("default")]);
    assert_eq!(with.new_nodes[0].instance_type, "m5.xlarge");
}

#[test]
fn min_values_keeps_enough_families_among_the_options() {
    let fixture = Fixture::new(general_purpose());
    let mut diverse = pool("default");
    diverse.requirements.push(Requirement {
        min_values: Some(3),
        ..Requirement::new("karpenter.k8s.aws/instance-family", Operator::Exists, &[])
    });
    let plan = fixture.solve(&[pod("default/a", 500, GI)], &[diverse]);
    let mut families: Vec<&str> =
        plan.new_nodes[0].instance_type_options.iter().map(|t| t.split('.').next().unwrap_or("")).collect();
    families.sort();
    families.dedup();
    assert!(families.len() >= 3, "{families:?}");
}

#[test]
fn pool_labels_reach_the_node_and_select_pods() {
    let fixture = Fixture::new(general_purpose());
    let mut team = pool("team-a");
    team.labels.insert("team".into(), "a".into());
    let mut p = pod("default/a", 500, GI);
    p.requirements = vec![Requirement::equals("team", "a")];
    let plan = fixture.solve(std::slice::from_ref(&p), &[pool("default"), team]);
    assert_eq!(plan.new_nodes[0].nodepool, "team-a");
    assert_eq!(plan.new_nodes[0].labels["team"], "a");
    p.requirements = vec![Requirement::equals("team", "b")];
    assert_eq!(fixture.solve(&[p], &[pool("default")]).unschedulable.len(), 1);
}

// ------------------------------------------------------------------------------------------------- properties

fn arb_pod(index: usize) -> impl Strategy<Value = PodRequest> {
    let cpu = prop::sample::select(vec![100i64, 250, 500, 1000, 1500, 4000]);
    let memory = prop::sample::select(vec![100i64 << 20, 256 << 20, 512 << 20, GI, 2 * GI, 4 * GI]);
    let zone = prop::option::weighted(0.2, prop::sample::select(vec!["us-east-1a", "us-east-1b", "us-east-1c"]));
    let capacity = prop::option::weighted(0.2, prop::sample::select(vec!["spot", "on-demand"]));
    let tolerates = prop::bool::weighted(0.3);
    (cpu, memory, zone, capacity, tolerates).prop_map(move |(cpu, memory, zone, capacity, tolerates)| {
        let mut p = pod(&format!("ns/p{index:03}"), cpu, memory);
        if let Some(zone) = zone {
            p.requirements.push(Requirement::equals(ZONE_LABEL, zone));
        }
        if let Some(capacity) = capacity {
            p.requirements.push(Requirement::equals(CAPACITY_TYPE_LABEL, capacity));
        }
        if tolerates {
            p.tolerations.push(Toleration {
                key: Some("dedicated".into()),
                operator: "Exists".into(),
                value: None,
                effect: None,
            });
        }
        p
    })
}

fn arb_pool(index: usize) -> impl Strategy<Value = NodePoolSpec> {
    let family = prop::option::weighted(0.5, prop::sample::select(vec!["m5", "c5", "r5", "t3"]));
    let tainted = prop::bool::weighted(0.3);
    let limit = prop::option::weighted(0.3, 4i64..64);
    (family, tainted, limit, 0i32..3).prop_map(move |(family, tainted, limit, weight)| {
        let mut p = pool(&format!("pool-{index}"));
        p.weight = weight;
        if let Some(family) = family {
            p.requirements.push(Requirement::equals("karpenter.k8s.aws/instance-family", family));
        }
        if tainted {
            p.taints.push(Taint { key: "dedicated".into(), value: None, effect: "NoSchedule".into() });
        }
        p.limits = limit.map(|cores| {
            Resources::ZERO
                .with(ResourceName::Cpu, cores * 1000)
                .with(ResourceName::Memory, 1 << 40)
                .with(ResourceName::Pods, 1 << 20)
        });
        p
    })
}

fn arb_input() -> impl Strategy<Value = (Vec<PodRequest>, Vec<NodePoolSpec>)> {
    let pods = (1usize..60).prop_flat_map(|n| (0..n).map(arb_pod).collect::<Vec<_>>());
    let pools = (1usize..4).prop_flat_map(|n| (0..n).map(arb_pool).collect::<Vec<_>>());
    (pods, pools)
}

fn fixture_for_properties() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::new(types_of(&["m5", "c5", "r5", "t3"])))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_constraint_holds_in_the_plan((pods, pools) in arb_input()) {
        let fixture = fixture_for_properties();
        let plan = fixture.solve(&pods, &pools);
        let by_id: BTreeMap<&str, &PodRequest> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut placed = plan.unschedulable.len();
        for node in &plan.new_nodes {
            let pool = pools.iter().find(|p| p.name == node.nodepool).expect("known pool");
            prop_assert!(!node.instance_type_options.is_empty());
            for option in &node.instance_type_options {
                let t = fixture.find(option);
                // Resources: the pods fit every option, not only the cheapest.
                prop_assert!(node.requests.fits_in(&t.allocatable(pool.max_pods)), "{} on {}", node.requests, option);
                let mut labels: BTreeMap<String, String> = t.labels().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                labels.extend(node.labels.clone());
                for pod_id in &node.pods {
                    let pod = by_id[pod_id.as_str()];
                    for r in &pod.requirements {
                        if r.key == ZONE_LABEL {
                            prop_assert!(node.zones.iter().all(|z| r.matches(Some(z))), "{r} vs zones {:?}", node.zones);
                        } else if r.key == CAPACITY_TYPE_LABEL {
                            prop_assert!(node.capacity_types.iter().all(|c| r.matches(Some(c.as_str()))));
                        } else {
                            prop_assert!(r.matches(labels.get(&r.key).map(String::as_str)), "{r} on {option}");
                        }
                    }
                }
            }
            for pod_id in &node.pods {
                prop_assert!(tolerates_all(&by_id[pod_id.as_str()].tolerations, &pool.taints));
            }
            placed += node.pods.len();
        }
        prop_assert_eq!(placed, pods.len(), "every pod is placed or reported");
        // Limits: the largest each node may become, summed per pool.
        for pool in &pools {
            if let Some(limits) = pool.limits {
                let planned: i64 = plan.new_nodes.iter().filter(|n| n.nodepool == pool.name).map(|n| {
                    n.instance_type_options.iter().map(|t| fixture.find(t).capacity(pool.max_pods).get(ResourceName::Cpu)).max().unwrap_or(0)
                }).sum();
                prop_assert!(planned <= limits.get(ResourceName::Cpu), "{} planned {planned}m", pool.name);
            }
        }
    }

    #[test]
    /// Re-planning split by pod shape only ever replaces nodes with cheaper ones, and loses no pod.
    fn repacking_by_shape_never_costs_more_or_loses_a_pod((pods, pools) in arb_input()) {
        let fixture = fixture_for_properties();
        let input = SchedulingInput {
            pods: &pods,
            nodepools: &pools,
            instance_types: &fixture.types,
            prices: &fixture.prices,
            existing: &fixture.existing,
            daemonsets: &fixture.daemonsets,
            unavailable: &fixture.unavailable,
        };
        let first_fit = solve_with(&input, Pass::Replan);
        let repacked = solve(&input);
        prop_assert!(repacked.total_price_per_hour() <= first_fit.total_price_per_hour() + 1e-9);
        let placed = |plan: &Plan| plan.new_nodes.iter().map(|n| n.pods.len()).sum::<usize>()
            + plan.existing_placements.values().map(Vec::len).sum::<usize>();
        prop_assert_eq!(placed(&repacked), placed(&first_fit));
        prop_assert_eq!(repacked.unschedulable.len(), first_fit.unschedulable.len());
        for node in &repacked.new_nodes {
            prop_assert!(node.requests.fits_in(&node.allocatable), "{} overfull", node.instance_type);
        }
    }

    #[test]
    fn the_same_input_in_any_order_gives_the_same_plan((pods, pools) in arb_input(), seed in any::<u64>()) {
        let fixture = fixture_for_properties();
        let first = fixture.solve(&pods, &pools);
        let mut shuffled = pods.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut reversed_pools = pools.clone();
        reversed_pools.reverse();
        prop_assert_eq!(&first, &fixture.solve(&shuffled, &reversed_pools));
        // Nor does the catalog's order (DescribeInstanceTypes promises none).
        let mut reversed_types = Fixture::new(fixture.types.iter().rev().cloned().collect());
        reversed_types.existing = fixture.existing.clone();
        reversed_types.daemonsets = fixture.daemonsets.clone();
        reversed_types.unavailable = fixture.unavailable.clone();
        prop_assert_eq!(&first, &reversed_types.solve(&pods, &pools));
    }

    #[test]
    fn a_pod_that_fits_an_allowed_type_alone_is_never_unschedulable((pods, mut pools) in arb_input()) {
        for pool in &mut pools {
            pool.limits = None;
        }
        let fixture = fixture_for_properties();
        let plan = fixture.solve(&pods, &pools);
        for unschedulable in &plan.unschedulable {
            let pod = pods.iter().find(|p| p.id == unschedulable.pod).expect("known pod");
            let alone = fixture.solve(std::slice::from_ref(pod), &pools);
            prop_assert!(!alone.unschedulable.is_empty(), "{} fits alone but was reported: {}", pod.id, unschedulable.reason);
        }
    }
}

/// Existing nodes across the zones and capacity types, each with `free` of room, for the prepared-solve property.
fn existing_nodes(free: &[(i64, i64)]) -> Vec<ExistingNode> {
    free.iter()
        .enumerate()
        .map(|(i, &(cpu, memory))| ExistingNode {
            name: format!("node-{i}"),
            labels: BTreeMap::from([
                (ZONE_LABEL.to_string(), ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3].to_string()),
                (CAPACITY_TYPE_LABEL.to_string(), ["spot", "on-demand"][i % 2].to_string()),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("kubernetes.io/hostname".to_string(), format!("node-{i}")),
            ]),
            taints: vec![],
            available: Resources::ZERO
                .with(ResourceName::Cpu, cpu)
                .with(ResourceName::Memory, memory)
                .with(ResourceName::Pods, 20),
            capacity: Resources::ZERO.with(ResourceName::Cpu, 4000).with(ResourceName::Memory, 16 * GI),
            nodepool: Some("pool-0".into()),
            pods: Vec::new(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A solve prepared once (as a disruption pass does) plans what a fresh solve plans, also after the room of
    /// existing nodes changed since the preparation: the candidate's own node emptied, as a simulation does.
    #[test]
    fn a_prepared_solve_plans_what_a_fresh_one_does(
        (pods, pools) in arb_input(),
        free in prop::collection::vec((0i64..4000, 0i64..(16 * GI)), 0..12),
        emptied in any::<prop::sample::Index>(),
    ) {
        let fixture = fixture_for_properties();
        let mut existing = existing_nodes(&free);
        let base = SchedulingInput {
            pods: &pods,
            nodepools: &pools,
            instance_types: &fixture.types,
            prices: &fixture.prices,
            existing: &[],
            daemonsets: &fixture.daemonsets,
            unavailable: &fixture.unavailable,
        };
        let prepared = Prepared::of(&fixture.types, &fixture.prices, &fixture.unavailable, &existing);
        let input = SchedulingInput { existing: &existing, ..base };
        prop_assert_eq!(solve_prepared(&input, &prepared), solve(&input));
        if !existing.is_empty() {
            let i = emptied.index(existing.len());
            existing[i].available = Resources::ZERO;
            existing[i].capacity = Resources::ZERO;
            let input = SchedulingInput { existing: &existing, ..base };
            prop_assert_eq!(solve_prepared(&input, &prepared), solve(&input));
        }
    }

    /// A catalog kept between batches plans what a fresh solve plans, whatever the batch and the existing nodes;
    /// once offerings go out of capacity, the kept catalog no longer serves and the solve sees them gone.
    #[test]
    fn a_kept_catalog_plans_what_a_fresh_solve_does(
        (pods, pools) in arb_input(),
        free in prop::collection::vec((0i64..4000, 0i64..(16 * GI)), 0..12),
    ) {
        let fixture = fixture_for_properties();
        let existing = existing_nodes(&free);
        let input = SchedulingInput {
            pods: &pods,
            nodepools: &pools,
            instance_types: &fixture.types,
            prices: &fixture.prices,
            existing: &existing,
            daemonsets: &fixture.daemonsets,
            unavailable: &fixture.unavailable,
        };
        let kept = PreparedCatalog::new(&fixture.types, &fixture.prices, &fixture.unavailable);
        prop_assert!(kept.is_for(&input));
        let plan = solve_on(&input, &kept);
        prop_assert_eq!(&plan, &solve(&input));
        let out: std::collections::HashSet<OfferingKey> = plan
            .new_nodes
            .iter()
            .map(|n| OfferingKey { instance_type: n.instance_type.clone(), zone: n.zone.clone(), capacity_type: n.capacity_type })
            .collect();
        let later = SchedulingInput { unavailable: &out, ..input };
        prop_assert!(out.is_empty() || !kept.is_for(&later));
        prop_assert_eq!(solve_on(&later, &kept), solve(&later));
    }
}

// --------------------------------------------------------------------------------------------------- topology

pub(super) fn labelled(mut p: PodRequest, app: &str) -> PodRequest {
    p.labels.insert("app".into(), app.into());
    p
}

pub(super) fn zone_spread(app: &str, max_skew: u32) -> TopologySpread {
    TopologySpread {
        key: TopologyKey::Zone,
        max_skew,
        min_domains: None,
        hard: true,
        selector: vec![Requirement::equals("app", app)],
        counted_nodes: Default::default(),
    }
}

pub(super) fn pods_per(plan: &Plan, by: impl Fn(&super::plan::NewNode) -> String) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in &plan.new_nodes {
        *counts.entry(by(node)).or_insert(0) += node.pods.len();
    }
    counts
}

#[test]
fn zone_spread_puts_pods_evenly_across_the_zones_offered() {
    let fixture = Fixture::new(types_of(&["m5"]));
    let pods: Vec<PodRequest> = (0..9)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/web-{i}"), 500, GI), "web");
            p.spreads = vec![zone_spread("web", 1)];
            p
        })
        .collect();
    let plan = fixture.solve(&pods, &[pool("default")]);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let per_zone = pods_per(&plan, |n| n.zone.clone());
    let zones_offered = fixture.find("m5.large").zones.len();
    assert_eq!(per_zone.len(), zones_offered.min(9), "{per_zone:?}");
    let (min, max) = (per_zone.values().min(), per_zone.values().max());
    assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "{per_zone:?}");
}

#[test]
fn hostname_anti_affinity_gives_each_pod_its_own_node_and_others_may_share() {
    let fixture = Fixture::new(types_of(&["m5"]));
    let mut pods: Vec<PodRequest> = (0..4)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/db-{i}"), 250, GI), "db");
            p.anti_affinity =
                vec![PodAffinityTerm { key: TopologyKey::Hostname, selector: vec![Requirement::equals("app", "db")] }];
            p
        })
        .collect();
    pods.push(labelled(pod("ns/cache", 250, GI), "cache"));
    let plan = fixture.solve(&pods, &[pool("default")]);
    assert_eq!(plan.new_nodes.len(), 4);
    assert!(plan.new_nodes.iter().all(|n| n.pods.iter().filter(|p| p.starts_with("ns/db")).count() == 1));
}

#[test]
fn hostname_spread_caps_matching_pods_per_node_at_the_skew() {
    let fixture = Fixture::new(types_of(&["m5"]));
    let pods: Vec<PodRequest> = (0..6)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/api-{i}"), 100, GI / 4), "api");
            p.spreads = vec![TopologySpread { key: TopologyKey::Hostname, ..zone_spread("api", 2) }];
            p
        })
        .collect();
    let plan = fixture.solve(&pods, &[pool("default")]);
    assert_eq!(plan.new_nodes.len(), 3);
    assert!(plan.new_nodes.iter().all(|n| n.pods.len() == 2));
}

#[test]
fn zone_affinity_keeps_a_group_in_one_zone() {
    let fixture = Fixture::new(types_of(&["m5"]));
    let pods: Vec<PodRequest> = (0..6)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/batch-{i}"), 1500, GI), "batch");
            p.affinity =
                vec![PodAffinityTerm { key: TopologyKey::Zone, selector: vec![Requirement::equals("app", "batch")] }];
            p
        })
        .collect();
    let plan = fixture.solve(&pods, &[pool("default")]);
    assert!(plan.unschedulable.is_empty());
    assert_eq!(pods_per(&plan, |n| n.zone.clone()).len(), 1);
}

#[test]
fn capacity_type_spread_uses_both_capacity_types() {
    let fixture = Fixture::new(types_of(&["m5"]));
    let pods: Vec<PodRequest> = (0..4)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/w-{i}"), 1500, GI), "w");
            p.spreads = vec![TopologySpread { key: TopologyKey::CapacityType, ..zone_spread("w", 1) }];
            p
        })
        .collect();
    let plan = fixture.solve(&pods, &[pool("default")]);
    let per_type = pods_per(&plan, |n| n.capacity_type.as_str().to_string());
    assert_eq!(per_type.get("spot"), Some(&2), "{per_type:?}");
    assert_eq!(per_type.get("on-demand"), Some(&2), "{per_type:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn topology_constraints_hold_in_the_plan(
        groups in prop::collection::vec((1usize..12, 0u8..3, prop::sample::select(vec![250i64, 1000, 1500])), 1..5),
    ) {
        let fixture = fixture_for_properties();
        let mut pods = Vec::new();
        for (g, (count, kind, cpu)) in groups.iter().enumerate() {
            let app = format!("g{g}");
            for i in 0..*count {
                let mut p = labelled(pod(&format!("ns/{app}-{i:02}"), *cpu, GI), &app);
                match kind {
                    0 => p.spreads = vec![zone_spread(&app, 1)],
                    1 => p.anti_affinity = vec![PodAffinityTerm { key: TopologyKey::Hostname, selector: vec![Requirement::equals("app", &app)] }],
                    _ => p.spreads = vec![TopologySpread { key: TopologyKey::Hostname, ..zone_spread(&app, 2) }],
                }
                pods.push(p);
            }
        }
        let plan = fixture.solve(&pods, &[pool("default")]);
        prop_assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
        for (g, (_, kind, _)) in groups.iter().enumerate() {
            let prefix = format!("ns/g{g}-");
            let on = |n: &super::plan::NewNode| n.pods.iter().filter(|p| p.starts_with(&prefix)).count();
            match kind {
                0 => {
                    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
                    for n in &plan.new_nodes {
                        *per_zone.entry(n.zone.as_str()).or_default() += on(n);
                    }
                    let offered = fixture.find("m5.large").zones.len();
                    let counts: Vec<usize> = per_zone.values().copied().filter(|c| *c > 0).collect();
                    let min = if counts.len() < offered { 0 } else { counts.iter().copied().min().unwrap_or(0) };
                    prop_assert!(counts.iter().all(|c| c - min <= 1), "group {g}: {per_zone:?}");
                }
                1 => prop_assert!(plan.new_nodes.iter().all(|n| on(n) <= 1), "group {g} shares a node"),
                _ => prop_assert!(plan.new_nodes.iter().all(|n| on(n) <= 2), "group {g} over skew"),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ packing cost

#[test]
fn a_half_empty_giant_node_is_re_planned_on_smaller_types_when_cheaper() {
    let fixture = Fixture::new(types_of(&["c6a"]));
    // 137 CPUs of pods: first-fit alone would take one 192-vCPU node.
    let pods: Vec<PodRequest> = (0..137).map(|i| pod(&format!("ns/p{i:03}"), 1000, GI)).collect();
    let plan = fixture.solve(&pods, &[pool("default")]);
    assert!(plan.unschedulable.is_empty());
    let giant = fixture.prices.spot("c6a.48xlarge", &plan.new_nodes[0].zone).expect("price");
    assert!(plan.total_price_per_hour() < giant, "{} nodes at {}", plan.new_nodes.len(), plan.total_price_per_hour());
    assert!(plan.new_nodes.iter().all(|n| n.instance_type != "c6a.48xlarge"), "{:?}", plan.new_nodes);
    assert_eq!(plan.new_nodes.iter().map(|n| n.pods.len()).sum::<usize>(), 137);
}

#[test]
fn nodes_do_not_grow_into_types_that_cost_more_per_resource() {
    // On-demand, c8i is dearer per vCPU than c6a but has a larger size; growing into it would cost more than more
    // c6a nodes. (Spot prices follow each market, where either may be cheaper.)
    let fixture = Fixture::new(types_of(&["c6a", "c8i"]));
    let pods: Vec<PodRequest> = (0..400).map(|i| pod(&format!("ns/p{i:03}"), 1000, GI)).collect();
    let mut on_demand = pool("default");
    on_demand.requirements.push(Requirement::equals(CAPACITY_TYPE_LABEL, "on-demand"));
    let plan = fixture.solve(&pods, &[on_demand]);
    assert!(
        plan.new_nodes.iter().all(|n| n.instance_type.starts_with("c6a.")),
        "{:?}",
        plan.new_nodes.iter().map(|n| &n.instance_type).collect::<Vec<_>>()
    );
}

#[test]
fn mixed_pods_cost_within_a_few_percent_of_buying_each_resource_at_its_best_price() {
    // The issue's bound: the batch's CPU and memory each bought at the best price per unit any allowed type
    // offers, as if nodes came in fractions. No plan can beat it; first-fit alone is 6.4% above it here.
    let fixture = Fixture::new(embedded_instance_types().to_vec());
    let mut general = pool("general");
    general.requirements.extend([
        Requirement::equals(CAPACITY_TYPE_LABEL, "on-demand"),
        Requirement::new("karpenter.k8s.aws/instance-category", Operator::In, &["c", "m", "r"]),
        Requirement::new("karpenter.k8s.aws/instance-generation", Operator::Gt, &["4"]),
    ]);
    let (cpus, memories) = ([100, 250, 500, 1000, 1500], [100 << 20, 256 << 20, GI / 2, GI, 2 * GI, 4 * GI]);
    let pods: Vec<PodRequest> = (0..600)
        .map(|i| pod(&format!("ns/p{i:03}"), cpus[i % cpus.len()], memories[(i / cpus.len()) % memories.len()]))
        .collect();
    let plan = fixture.solve(&pods, std::slice::from_ref(&general));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);

    let allowed: Vec<&InstanceTypeInfo> = fixture
        .types
        .iter()
        .filter(|t| {
            let labels = t.labels();
            general
                .requirements
                .iter()
                .filter(|r| r.key != CAPACITY_TYPE_LABEL)
                .all(|r| r.matches(labels.get(r.key.as_str()).map(String::as_str)))
        })
        .collect();
    let best_per_unit = |resource: ResourceName| {
        allowed
            .iter()
            .filter_map(|t| {
                Some(fixture.prices.on_demand(&t.name)? / t.allocatable(Default::default()).get(resource) as f64)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let total = pods.iter().fold(Resources::ZERO, |sum, p| sum + p.requests);
    let bound = (total.get(ResourceName::Cpu) as f64 * best_per_unit(ResourceName::Cpu))
        .max(total.get(ResourceName::Memory) as f64 * best_per_unit(ResourceName::Memory));
    let price = plan.total_price_per_hour();
    assert!(price >= bound, "the bound is not a bound: {price} < {bound}");
    assert!(price <= bound * 1.05, "{price:.4} USD/hour is {:.1}% above {bound:.4}", (price / bound - 1.0) * 100.0);
}

#[test]
fn a_pool_may_bound_instance_sizes_with_gte_and_lte() {
    let fixture = Fixture::new(general_purpose());
    let mut bounded = pool("default");
    bounded.requirements.push(Requirement::new("karpenter.k8s.aws/instance-cpu", Operator::Gte, &["8"]));
    bounded.requirements.push(Requirement::new("karpenter.k8s.aws/instance-cpu", Operator::Lte, &["16"]));
    let plan = fixture.solve(&[pod("default/a", 500, GI)], &[bounded]);
    assert!(plan.unschedulable.is_empty(), "the pool is not dropped: {:?}", plan.unschedulable);
    for name in &plan.new_nodes[0].instance_type_options {
        let vcpus = fixture.find(name).vcpus;
        assert!((8..=16).contains(&vcpus), "{name} has {vcpus} vCPUs");
    }
}
