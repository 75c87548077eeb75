//! Topology with pods already running: spread, affinity and anti-affinity count the pods on existing nodes (and
//! nominated to them) as kube-scheduler counts them, so a plan is one kube-scheduler then follows.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::model::{ExistingNode, HostPort, PlacedPod, PodRequest};
use super::requirements::{Operator, Requirement};
use super::solver_tests::{Fixture, GI, labelled, pod, pods_per, pool, types_of, zone_spread};
use super::topology::{CountedNodes, PodAffinityTerm, PreferredPodTerm, TopologyKey};
use crate::catalog::resources::{ResourceName, Resources};
use crate::names::{CAPACITY_TYPE_LABEL, ZONE_LABEL};
use crate::scheduling::NodePoolSpec;

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// A pool of m5 nodes in three zones.
fn three_zone_pool() -> NodePoolSpec {
    let mut pool = pool("default");
    pool.requirements.push(Requirement::new(ZONE_LABEL, Operator::In, &ZONES));
    pool
}

fn placed(app: &str) -> PlacedPod {
    PlacedPod {
        namespace: "ns".into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        anti_affinity: vec![],
        host_ports: vec![],
    }
}

/// A node in `zone` with `free_cpu` millicores free, running `pods`.
fn node(name: &str, zone: &str, free_cpu: i64, pods: Vec<PlacedPod>) -> ExistingNode {
    ExistingNode {
        name: name.into(),
        labels: BTreeMap::from([
            (ZONE_LABEL.to_string(), zone.to_string()),
            (CAPACITY_TYPE_LABEL.to_string(), "on-demand".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("kubernetes.io/hostname".to_string(), name.to_string()),
        ]),
        taints: vec![],
        available: Resources::ZERO
            .with(ResourceName::Cpu, free_cpu)
            .with(ResourceName::Memory, 8 * GI)
            .with(ResourceName::Pods, 20),
        capacity: Resources::ZERO,
        nodepool: None,
        pods,
    }
}

fn web_pods(count: usize, max_skew: u32) -> Vec<PodRequest> {
    (0..count)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/web-new-{i}"), 500, GI), "web");
            p.spreads = vec![zone_spread("web", max_skew)];
            p
        })
        .collect()
}

fn term(key: TopologyKey, app: &str) -> PodAffinityTerm {
    PodAffinityTerm { key, selector: vec![Requirement::equals("app", app)] }
}

/// New pods per zone, every zone listed.
fn new_per_zone(plan: &super::plan::Plan) -> [usize; 3] {
    let per_zone = pods_per(plan, |n| n.zone.clone());
    ZONES.map(|z| per_zone.get(z).copied().unwrap_or(0))
}

#[test]
fn a_zone_spread_counts_the_pods_already_running_and_evens_them_out() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    // Three web pods run in 1a and one in 1b, on full nodes; 1c has none.
    fixture.existing = vec![
        node("a", ZONES[0], 0, vec![placed("web"), placed("web"), placed("web")]),
        node("b", ZONES[1], 0, vec![placed("web"), placed("other")]),
    ];
    let plan = fixture.solve(&web_pods(5, 1), &[three_zone_pool()]);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(new_per_zone(&plan), [0, 2, 3], "3 + 0, 1 + 2, 0 + 3: even");
}

#[test]
fn pods_nominated_to_an_in_flight_node_count_in_its_zone() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    // A NodeClaim pinned to 1a, full, with two web pods nominated to it.
    fixture.existing = vec![node("nodeclaim-1", ZONES[0], 0, vec![placed("web"), placed("web")])];
    let plan = fixture.solve(&web_pods(4, 1), &[three_zone_pool()]);
    assert_eq!(new_per_zone(&plan), [0, 2, 2]);
}

#[test]
fn a_spread_counts_only_pods_on_nodes_the_pod_may_use_unless_the_policy_says_ignore() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    // Three web pods run in 1a on an arm64 node, which pods asking for amd64 cannot use.
    let mut arm = node("arm", ZONES[0], 0, vec![placed("web"), placed("web"), placed("web")]);
    arm.labels.insert("kubernetes.io/arch".into(), "arm64".into());
    fixture.existing = vec![arm];
    let amd64 = vec![vec![Requirement::equals("kubernetes.io/arch", "amd64")]];
    let pods = |counted_nodes: CountedNodes| -> Vec<PodRequest> {
        let mut pods = web_pods(3, 1);
        for p in &mut pods {
            p.requirements = amd64[0].clone();
            p.spreads[0].counted_nodes = counted_nodes.clone();
        }
        pods
    };
    let honour =
        fixture.solve(&pods(CountedNodes { affinity: Some(amd64.clone()), tolerations: None }), &[three_zone_pool()]);
    assert_eq!(new_per_zone(&honour), [1, 1, 1], "nodeAffinityPolicy Honor: the arm64 node's pods do not count");
    let ignore = fixture.solve(&pods(CountedNodes::default()), &[three_zone_pool()]);
    assert_eq!(new_per_zone(&ignore)[0], 0, "nodeAffinityPolicy Ignore: 1a already has three");
}

#[test]
fn anti_affinity_to_a_running_pod_never_nominates_its_node() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    fixture.existing = vec![node("n1", ZONES[0], 4000, vec![placed("db")])];
    let mut db = labelled(pod("ns/db-new", 500, GI), "db");
    db.anti_affinity = vec![term(TopologyKey::Hostname, "db")];
    let other = labelled(pod("ns/other", 500, GI), "other");
    let plan = fixture.solve(&[db, other], &[three_zone_pool()]);
    assert_eq!(plan.existing_placements.get("n1"), Some(&vec!["ns/other".to_string()]), "{plan:?}");
    assert_eq!(plan.new_nodes.len(), 1);
    assert_eq!(plan.new_nodes[0].pods, ["ns/db-new"]);
}

#[test]
fn a_running_pods_anti_affinity_keeps_the_pods_it_selects_off_its_node_and_zone() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    let mut loner = placed("loner");
    loner.anti_affinity = vec![term(TopologyKey::Hostname, "web")];
    let mut zonal = placed("zonal");
    zonal.anti_affinity = vec![term(TopologyKey::Zone, "batch")];
    fixture.existing = vec![node("n1", ZONES[0], 4000, vec![loner]), node("n2", ZONES[1], 4000, vec![zonal])];
    let web = labelled(pod("ns/web", 500, GI), "web");
    let batch = labelled(pod("ns/batch", 500, GI), "batch");
    let plan = fixture.solve(&[web, batch], &[three_zone_pool()]);
    // web may not join n1 (symmetry), so it takes n2; batch may not be in 1b at all, so not n2, and n1 is 1a.
    assert_eq!(plan.existing_placements.get("n2"), Some(&vec!["ns/web".to_string()]), "{plan:?}");
    assert_eq!(plan.existing_placements.get("n1"), Some(&vec!["ns/batch".to_string()]), "{plan:?}");

    // With n1 full, batch needs a new node, and not in 1b.
    fixture.existing[0].available = Resources::ZERO;
    let batch = labelled(pod("ns/batch", 500, GI), "batch");
    let plan = fixture.solve(&[batch], &[three_zone_pool()]);
    assert_eq!(plan.new_nodes.len(), 1);
    assert_ne!(plan.new_nodes[0].zone, ZONES[1]);
}

#[test]
fn zone_anti_affinity_to_running_pods_avoids_their_zones() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    fixture.existing = vec![node("a", ZONES[0], 0, vec![placed("db")]), node("b", ZONES[1], 0, vec![placed("db")])];
    let mut p = labelled(pod("ns/db-new", 500, GI), "db");
    p.anti_affinity = vec![term(TopologyKey::Zone, "db")];
    let plan = fixture.solve(&[p], &[three_zone_pool()]);
    assert_eq!(plan.new_nodes.len(), 1);
    assert_eq!(plan.new_nodes[0].zone, ZONES[2]);
}

#[test]
fn affinity_to_a_running_pod_follows_it_to_its_node_or_zone() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    fixture.existing = vec![node("cache-node", ZONES[1], 1000, vec![placed("cache")])];
    let mut beside = labelled(pod("ns/beside", 500, GI), "app");
    beside.affinity = vec![term(TopologyKey::Hostname, "cache")];
    let plan = fixture.solve(&[beside.clone()], &[three_zone_pool()]);
    assert_eq!(plan.existing_placements.get("cache-node"), Some(&vec!["ns/beside".to_string()]), "{plan:?}");

    // No room beside it: no new node can hold the cache pod, so the pod waits.
    fixture.existing[0].available = Resources::ZERO;
    let plan = fixture.solve(&[beside.clone()], &[three_zone_pool()]);
    assert!(plan.new_nodes.is_empty(), "{plan:?}");
    assert_eq!(plan.unschedulable.len(), 1);
    let reason = &plan.unschedulable[0].reason;
    assert!(reason.contains("affinity to kubernetes.io/hostname of pods app=cache"), "{reason}");

    // Affinity to a pod that runs nowhere: said as such.
    beside.affinity = vec![term(TopologyKey::Hostname, "absent")];
    let plan = fixture.solve(&[beside], &[three_zone_pool()]);
    let reason = &plan.unschedulable[0].reason;
    assert!(reason.contains("selects no pod that runs or is planned"), "{reason}");

    // Zone affinity: a new node, in the cache pod's zone.
    let mut near = labelled(pod("ns/near", 500, GI), "app");
    near.affinity = vec![term(TopologyKey::Zone, "cache")];
    let plan = fixture.solve(&[near], &[three_zone_pool()]);
    assert_eq!(plan.new_nodes.len(), 1);
    assert_eq!(plan.new_nodes[0].zone, ZONES[1]);
}

#[test]
fn pods_of_other_namespaces_do_not_count() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    let mut elsewhere = placed("web");
    elsewhere.namespace = "other".into();
    fixture.existing = vec![node("a", ZONES[0], 0, vec![elsewhere.clone(), elsewhere.clone(), elsewhere])];
    let plan = fixture.solve(&web_pods(3, 1), &[three_zone_pool()]);
    assert_eq!(new_per_zone(&plan), [1, 1, 1]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever runs already, every zone that takes new pods ends within maxSkew of the least crowded zone: each
    /// pod went where kube-scheduler's spread allowed it when it went.
    #[test]
    fn a_zone_spread_over_running_pods_is_planned_within_max_skew(
        running in prop::array::uniform3(0usize..7),
        pending in 1usize..13,
        max_skew in 1u32..3,
    ) {
        let mut fixture = Fixture::new(types_of(&["m5"]));
        fixture.existing = ZONES
            .iter()
            .zip(running)
            .map(|(zone, count)| node(zone, zone, 0, (0..count).map(|_| placed("web")).collect()))
            .collect();
        let plan = fixture.solve(&web_pods(pending, max_skew), &[three_zone_pool()]);
        prop_assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
        let added = new_per_zone(&plan);
        prop_assert_eq!(added.iter().sum::<usize>(), pending);
        let total: Vec<usize> = (0..3).map(|z| running[z] + added[z]).collect();
        let least = total.iter().copied().min().unwrap_or(0);
        for z in 0..3 {
            if added[z] > 0 {
                prop_assert!(total[z] <= least + max_skew as usize, "running {running:?}, added {added:?}");
            }
        }
    }

    /// Hostname anti-affinity against running pods: no pending pod it covers is ever nominated onto a node
    /// running a pod it selects, whichever nodes run them.
    #[test]
    fn anti_affinity_never_nominates_a_node_running_a_selected_pod(
        running_db in prop::collection::vec(any::<bool>(), 1..8),
        pending in 1usize..6,
    ) {
        let mut fixture = Fixture::new(types_of(&["m5"]));
        fixture.existing = running_db
            .iter()
            .enumerate()
            .map(|(i, &db)| node(&format!("n{i}"), ZONES[i % 3], 4000, vec![placed(if db { "db" } else { "web" })]))
            .collect();
        let pods: Vec<PodRequest> = (0..pending)
            .map(|i| {
                let mut p = labelled(pod(&format!("ns/db-new-{i}"), 250, GI / 2), "db");
                p.anti_affinity = vec![term(TopologyKey::Hostname, "db")];
                p
            })
            .collect();
        let plan = fixture.solve(&pods, &[three_zone_pool()]);
        prop_assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
        for (node, placed) in &plan.existing_placements {
            let i: usize = node.trim_start_matches('n').parse().unwrap_or(usize::MAX);
            prop_assert!(!running_db.get(i).copied().unwrap_or(true), "{node} runs a db pod and got {placed:?}");
            prop_assert!(placed.len() <= 1, "two db pods on {node}: {placed:?}");
        }
    }
}

fn preferred(weight: i32, anti: bool, key: TopologyKey, app: &str) -> PreferredPodTerm {
    PreferredPodTerm { weight, anti, term: term(key, app) }
}

#[test]
fn preferred_anti_affinity_is_honoured_while_it_can_be() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    // Room for the new pod beside a running web pod; the preference sends it elsewhere.
    fixture.existing = vec![node("n1", ZONES[0], 4000, vec![placed("web")])];
    let pods: Vec<PodRequest> = (0..3)
        .map(|i| {
            let mut p = labelled(pod(&format!("ns/web-new-{i}"), 500, GI), "web");
            p.preferred_pod_terms = vec![preferred(100, true, TopologyKey::Hostname, "web")];
            p
        })
        .collect();
    let plan = fixture.solve(&pods, &[three_zone_pool()]);
    assert!(plan.existing_placements.is_empty(), "{plan:?}");
    assert_eq!(plan.new_nodes.len(), 3, "one web pod per node: {plan:?}");
}

#[test]
fn a_preference_that_cannot_be_met_is_dropped_and_the_heavier_one_kept() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    fixture.existing =
        vec![node("a", ZONES[0], 0, vec![placed("light")]), node("b", ZONES[1], 0, vec![placed("heavy")])];
    // Near `light` (1a) weighs 10, near `heavy` (1b) weighs 50: both cannot hold, so the lighter goes.
    let mut p = labelled(pod("ns/p", 500, GI), "p");
    p.preferred_pod_terms =
        vec![preferred(10, false, TopologyKey::Zone, "light"), preferred(50, false, TopologyKey::Zone, "heavy")];
    let plan = fixture.solve(&[p.clone()], &[three_zone_pool()]);
    assert_eq!(plan.new_nodes.len(), 1);
    assert_eq!(plan.new_nodes[0].zone, ZONES[1]);

    // Near `absent`, which runs nowhere: the pod still gets a node.
    p.preferred_pod_terms = vec![preferred(100, false, TopologyKey::Zone, "absent")];
    let plan = fixture.solve(&[p], &[three_zone_pool()]);
    assert!(plan.unschedulable.is_empty(), "{plan:?}");
    assert_eq!(plan.new_nodes.len(), 1);
}

#[test]
fn preferred_affinity_to_a_running_pod_puts_the_pod_beside_it() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    fixture.existing =
        vec![node("far", ZONES[0], 4000, vec![placed("web")]), node("near", ZONES[2], 4000, vec![placed("cache")])];
    let mut p = labelled(pod("ns/p", 500, GI), "p");
    p.preferred_pod_terms = vec![preferred(100, false, TopologyKey::Hostname, "cache")];
    let plan = fixture.solve(&[p], &[three_zone_pool()]);
    assert_eq!(plan.existing_placements.get("near"), Some(&vec!["ns/p".to_string()]), "{plan:?}");
}

fn taking_port(mut p: PodRequest, port: i32) -> PodRequest {
    p.host_ports = vec![HostPort { port, protocol: "TCP".into(), ip: "0.0.0.0".into() }];
    p
}

#[test]
fn two_pods_taking_one_host_port_never_share_a_node() {
    let mut fixture = Fixture::new(types_of(&["m5"]));
    let mut running = placed("ingress");
    running.host_ports = vec![HostPort { port: 443, protocol: "TCP".into(), ip: "0.0.0.0".into() }];
    fixture.existing = vec![node("n1", ZONES[0], 4000, vec![running])];
    let pods = [
        taking_port(labelled(pod("ns/ingress-1", 250, GI / 2), "ingress"), 443),
        taking_port(labelled(pod("ns/ingress-2", 250, GI / 2), "ingress"), 443),
        taking_port(labelled(pod("ns/metrics", 250, GI / 2), "metrics"), 9100),
    ];
    let plan = fixture.solve(&pods, &[three_zone_pool()]);
    assert!(plan.unschedulable.is_empty(), "{plan:?}");
    // Port 443 is taken on n1, and each new node holds one of the two: only the other port joins n1.
    assert_eq!(plan.existing_placements.get("n1"), Some(&vec!["ns/metrics".to_string()]), "{plan:?}");
    assert_eq!(plan.new_nodes.len(), 2, "{plan:?}");
    assert!(plan.new_nodes.iter().all(|n| n.pods.len() == 1));
}

#[test]
fn a_zone_spread_fills_room_already_there_before_it_launches_in_that_zone() {
    // The sandbox's story (tests/sandbox_scheduling.rs) before its third wave: 1a holds two web pods, 1b one (on a
    // node with 430m left) beside a node whose `apart` pods keep web pods off it, 1c two on a node with room for one
    // more.
    let mut fixture = Fixture::new(types_of(&["m5"]));
    let mut apart = placed("apart");
    apart.anti_affinity = vec![term(TopologyKey::Hostname, "web")];
    fixture.existing = vec![
        node("a", ZONES[0], 430, vec![placed("web"), placed("web"), placed("near")]),
        node("b-apart", ZONES[1], 920, vec![apart.clone(), apart, placed("zonal"), placed("ports")]),
        node("b", ZONES[1], 430, vec![placed("alone"), placed("ports"), placed("web")]),
        node("c", ZONES[2], 930, vec![placed("web"), placed("web")]),
    ];
    let mut pods = web_pods(6, 1);
    for p in &mut pods {
        p.spreads[0].min_domains = Some(3);
    }
    let plan = fixture.solve(&pods, &[three_zone_pool()]);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let on_c = plan.existing_placements.get("c").map_or(0, Vec::len);
    let new = new_per_zone(&plan);
    // 1a and 1c hold two web pods, 1b one: the first new pod must go to 1b, where no node takes it, so it opens one
    // there; the next may go to any zone, and c's room takes it rather than a node of its own in 1c.
    assert_eq!((on_c, new), (1, [2, 3, 0]), "c's room before a node in 1c: {plan:?}");
    assert_eq!(plan.new_nodes.len(), 2, "{plan:?}");
}
