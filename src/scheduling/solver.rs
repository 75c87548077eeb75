//! First-fit decreasing: each pod, largest first, goes to the first existing node, then the first node planned
//! in this round, then a new node of the heaviest NodePool that can take it. A planned node keeps the set of
//! instance types that could still hold all its pods and narrows it as pods join; at the end it launches as the
//! cheapest of them.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::explain::why_unschedulable;
use super::model::{
    DaemonSetPod, ExistingNode, HostPort, MinValuesPolicy, NodePoolSpec, PodRequest, ports_conflict, tolerates_all,
};
use super::options::{
    Catalog, Compat, ON_DEMAND, Pool, SPOT, cached_compat, capacity_type_bit, max_allocatable, max_capacity,
    min_values_hold, narrow, narrow_ignoring_min_values, prepare_pool,
};
use super::plan::{NewNode, Plan, UnschedulablePod};
use super::repack::{repack_by_shape, right_size};
use super::requirements::Requirement;
use super::topology::{
    Honour, PlacedMembership, PlacedTopologyInput, PodTopology, PodTopologyInput, Topology, TopologyKey,
};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::pricing::PriceTable;
use crate::catalog::resources::{ResourceName, Resources};
use crate::catalog::{CapacityType, OfferingKey};
use crate::names::{CAPACITY_TYPE_LABEL, ZONE_LABEL};

/// A NodeClaim carries at most this many instance types to CreateFleet.
pub const MAX_INSTANCE_TYPE_OPTIONS: usize = 60;

pub struct SchedulingInput<'a> {
    pub pods: &'a [PodRequest],
    pub nodepools: &'a [NodePoolSpec],
    pub instance_types: &'a [InstanceTypeInfo],
    pub prices: &'a PriceTable,
    pub existing: &'a [ExistingNode],
    pub daemonsets: &'a [DaemonSetPod],
    /// Offerings known to be out of capacity (or just interrupted): not launched into.
    pub unavailable: &'a HashSet<OfferingKey>,
}

/// A node planned in this round.
pub(super) struct PlannedNode {
    pub(super) pool: usize,
    compat: Compat,
    used: Resources,
    /// Element-wise maximum allocatable of `compat.types`: a quick necessary test before the exact one.
    max_allocatable: Resources,
    /// Indices into the input's pods.
    pub(super) pods: Vec<usize>,
    host: HostState,
    /// The node group of a `Pass::Bins` solve; 0 otherwise.
    bin: usize,
    /// Its pool's `minValues` do not all hold (BestEffort).
    min_values_relaxed: bool,
}

/// What hostname topology needs of a node: pods per group on it, the anti-affinity groups of its pods, and the
/// host ports they take.
#[derive(Debug, Default, Clone)]
struct HostState {
    counts: Vec<(usize, u32)>,
    anti_affinity: Vec<usize>,
    ports: Vec<HostPort>,
}

impl HostState {
    fn add(&mut self, pod: &PodTopology, topology: &Topology) {
        let hostname_anti = pod.anti_affinity.iter().copied().filter(|&g| topology.key_of(g) == TopologyKey::Hostname);
        self.add_groups(&pod.member_of, hostname_anti);
    }

    /// A pod already on the node.
    fn add_placed(&mut self, placed: &PlacedMembership) {
        self.add_groups(&placed.member_of, placed.hostname_anti_affinity.iter().copied());
    }

    fn add_groups(&mut self, member_of: &[usize], hostname_anti_affinity: impl Iterator<Item = usize>) {
        for &g in member_of {
            match self.counts.iter_mut().find(|(group, _)| *group == g) {
                Some((_, n)) => *n += 1,
                None => self.counts.push((g, 1)),
            }
        }
        for g in hostname_anti_affinity {
            if !self.anti_affinity.contains(&g) {
                self.anti_affinity.push(g);
            }
        }
    }
}

/// One way to try a pod: a set of node requirements, and which soft topology constraints are still honoured.
struct Attempt {
    requirements: Vec<Requirement>,
    honour: Honour,
}

pub fn solve(input: &SchedulingInput<'_>) -> Plan {
    solve_with(input, Pass::Full)
}

/// What solves over one catalog and one set of existing nodes work out alike: the prepared catalog and each
/// existing node's zone and capacity type. A disruption pass simulates thousands of candidates against the same
/// cluster, changing only the pods and the free room of a few nodes; preparing this once per pass instead of per
/// solve is most of what makes the pass fast.
pub struct Prepared<'a> {
    catalog: PreparedCatalog<'a>,
    /// Per existing node: its zone (index into the catalog's zones) and capacity type (0 spot, 1 on-demand).
    domains: Vec<(Option<usize>, Option<usize>)>,
}

impl<'a> Prepared<'a> {
    /// Prepares `input`'s catalog and existing nodes; its pods play no part. Solves with other pods, and with
    /// other free room or capacity on the same existing nodes (same labels, same order), may use it.
    pub fn new(input: &SchedulingInput<'a>) -> Self {
        Self::of(input.instance_types, input.prices, input.unavailable, input.existing)
    }

    /// As `new`, from the parts of an input it reads.
    pub fn of(
        instance_types: &'a [InstanceTypeInfo],
        prices: &'a PriceTable,
        unavailable: &HashSet<OfferingKey>,
        existing: &[ExistingNode],
    ) -> Self {
        let catalog = PreparedCatalog::new(instance_types, prices, unavailable);
        let domains = domains_of(existing, &catalog.catalog);
        Self { catalog, domains }
    }

    /// Whether this was prepared for `input`'s catalog and existing nodes (as far as cheaply checked).
    fn fits(&self, input: &SchedulingInput<'_>) -> bool {
        std::ptr::eq(self.catalog.catalog.types, input.instance_types) && self.domains.len() == input.existing.len()
    }
}

/// A catalog prepared for solves that differ in everything else (pods, pools, existing nodes): the provisioner keeps
/// one between batches while the same offerings are out of capacity, rather than prepare a thousand instance types
/// for every batch of a few pods.
pub struct PreparedCatalog<'a> {
    catalog: Catalog<'a>,
    prices: &'a PriceTable,
    unavailable: HashSet<OfferingKey>,
}

impl<'a> PreparedCatalog<'a> {
    pub fn new(
        instance_types: &'a [InstanceTypeInfo],
        prices: &'a PriceTable,
        unavailable: &HashSet<OfferingKey>,
    ) -> Self {
        Self { catalog: Catalog::new(instance_types, prices, unavailable), prices, unavailable: unavailable.clone() }
    }

    /// Whether it was prepared from these instance types, prices and unavailable offerings.
    pub fn is_for(&self, input: &SchedulingInput<'_>) -> bool {
        std::ptr::eq(self.catalog.types, input.instance_types)
            && std::ptr::eq(self.prices, input.prices)
            && &self.unavailable == input.unavailable
    }
}

/// `solve`, on a catalog prepared beforehand (see `PreparedCatalog`); as `solve` if it was prepared for another.
pub fn solve_on(input: &SchedulingInput<'_>, prepared: &PreparedCatalog<'_>) -> Plan {
    if !prepared.is_for(input) {
        return solve(input);
    }
    solve_in(input, Pass::Full, &prepared.catalog, &domains_of(input.existing, &prepared.catalog))
}

/// Per existing node: its zone (index into the catalog's zones) and capacity type (0 spot, 1 on-demand).
fn domains_of(existing: &[ExistingNode], catalog: &Catalog) -> Vec<(Option<usize>, Option<usize>)> {
    existing
        .iter()
        .map(|n| {
            let zone = n.labels.get(ZONE_LABEL).and_then(|z| catalog.zone_index(z));
            let capacity_type = match n.labels.get(CAPACITY_TYPE_LABEL).map(|v| v.parse()) {
                Some(Ok(CapacityType::Spot)) => Some(0),
                Some(Ok(CapacityType::OnDemand)) => Some(1),
                _ => None,
            };
            (zone, capacity_type)
        })
        .collect()
}

/// `solve`, with the catalog and existing nodes prepared beforehand (see `Prepared`).
pub fn solve_prepared(input: &SchedulingInput<'_>, prepared: &Prepared<'_>) -> Plan {
    if !prepared.fits(input) {
        return solve(input);
    }
    solve_in(input, Pass::Full, &prepared.catalog.catalog, &prepared.domains)
}

/// How a solve runs: the whole plan, or one of the re-plans the whole plan makes of a part of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass<'b> {
    /// Pods largest first; unconstrained pools are then re-planned by shape where that is cheaper.
    Full,
    /// Pods largest first, nothing re-planned by shape.
    Replan,
    /// A packing already chosen: pod i belongs to node group `bins[i]` (groups in order, each one node's worth),
    /// pods are taken in the order given, and a pod joins only nodes of its own group. New nodes may become any
    /// type that holds them, so a group whose pods can share a node launches as the cheapest type that holds it.
    /// Nothing re-planned by shape.
    Bins(&'b [usize]),
}

pub(super) fn solve_with(input: &SchedulingInput<'_>, pass: Pass) -> Plan {
    let prepared = Prepared::new(input);
    solve_in(input, pass, &prepared.catalog.catalog, &prepared.domains)
}

/// `solve_with` on a catalog already prepared from `input`'s instance types, prices and unavailable offerings:
/// the re-plans of a part of a plan, which only change the pods and NodePools.
pub(super) fn solve_with_catalog(input: &SchedulingInput<'_>, pass: Pass, catalog: &Catalog) -> Plan {
    solve_in(input, pass, catalog, &domains_of(input.existing, catalog))
}

fn solve_in(
    input: &SchedulingInput<'_>,
    pass: Pass,
    catalog: &Catalog,
    domains: &[(Option<usize>, Option<usize>)],
) -> Plan {
    let bin_of = |pod: usize| match pass {
        Pass::Bins(bins) => bins.get(pod).copied().unwrap_or(usize::MAX),
        _ => 0,
    };
    let mut pools: Vec<Pool> = input.nodepools.iter().map(|spec| prepare_pool(spec, catalog, input)).collect();
    // Heaviest first; the name breaks ties so the plan does not depend on input order.
    pools.sort_by(|a, b| b.spec.weight.cmp(&a.spec.weight).then(a.spec.name.cmp(&b.spec.name)));

    let topology_inputs: Vec<PodTopologyInput> = input
        .pods
        .iter()
        .map(|p| PodTopologyInput {
            namespace: p.namespace(),
            labels: &p.labels,
            spreads: &p.spreads,
            affinity: &p.affinity,
            anti_affinity: &p.anti_affinity,
            preferred: &p.preferred_pod_terms,
        })
        .collect();
    let placed_inputs: Vec<PlacedTopologyInput> = input
        .existing
        .iter()
        .enumerate()
        .flat_map(|(n, node)| {
            node.pods.iter().map(move |p| PlacedTopologyInput {
                namespace: &p.namespace,
                labels: &p.labels,
                anti_affinity: &p.anti_affinity,
                node: n,
                node_labels: &node.labels,
                node_taints: &node.taints,
                zone: domains.get(n).and_then(|d| d.0),
                capacity_type: domains.get(n).and_then(|d| d.1),
            })
        })
        .collect();
    let (mut topology, pod_topology, placed) = Topology::new(&topology_inputs, &placed_inputs);

    let mut existing = ExistingState::new(input.existing, domains);
    for membership in placed {
        existing.hosts.entry(membership.node).or_default().add_placed(&membership);
    }
    for (n, node) in input.existing.iter().enumerate() {
        for pod in node.pods.iter().filter(|p| !p.host_ports.is_empty()) {
            existing.hosts.entry(n).or_default().ports.extend(pod.host_ports.iter().cloned());
        }
    }
    let mut planned: Vec<PlannedNode> = Vec::new();
    let mut compat_cache: HashMap<(usize, Vec<Requirement>), Option<Compat>> = HashMap::new();
    let mut unschedulable = Vec::new();

    // Pods with topology constraints first, largest (CPU, then memory) first: they decide how many nodes there
    // are. Then the rest, largest first by their dominant share of the batch's total CPU or memory, so that CPU-
    // and memory-heavy pods interleave and each node takes the batch's mix. The id breaks ties.
    let total = input.pods.iter().fold(Resources::ZERO, |sum, p| sum + p.requests);
    let dominant_share = |p: &PodRequest| {
        let share = |r: ResourceName| p.requests.get(r) as f64 / total.get(r).max(1) as f64;
        share(ResourceName::Cpu).max(share(ResourceName::Memory))
    };
    let mut order: Vec<usize> = (0..input.pods.len()).collect();
    if !matches!(pass, Pass::Bins(_)) {
        order.sort_by(|&a, &b| {
            let (pa, pb) = (&input.pods[a], &input.pods[b]);
            let (ta, tb) = (!pod_topology[a].is_empty(), !pod_topology[b].is_empty());
            let size = |p: &PodRequest| (p.requests.get(ResourceName::Cpu), p.requests.get(ResourceName::Memory));
            tb.cmp(&ta)
                .then_with(|| if ta && tb { size(pb).cmp(&size(pa)) } else { std::cmp::Ordering::Equal })
                .then_with(|| dominant_share(pb).total_cmp(&dominant_share(pa)))
                .then_with(|| pa.id.cmp(&pb.id))
        });
    }

    for pod_index in order {
        let pod = &input.pods[pod_index];
        let shape = &pod_topology[pod_index];
        let mut placed = false;
        // Groups come in order, so a pod's group is the run of nodes at the end (all nodes when not binned).
        let bin = bin_of(pod_index);
        let group_start = match pass {
            Pass::Bins(_) => planned.len() - planned.iter().rev().take_while(|node| node.bin == bin).count(),
            Pass::Full | Pass::Replan => 0,
        };
        let grow_efficiently = !matches!(pass, Pass::Bins(_));
        for attempt in attempts(pod) {
            let zones = if topology.constrains(shape, TopologyKey::Zone) {
                zones_to_weigh(pod, &attempt, &pools, catalog, &mut compat_cache, &mut existing)
            } else {
                catalog.all_zones()
            };
            if existing.place(pod, pod_index, shape, &attempt, zones, &mut topology) {
                placed = true;
                break;
            }
            let on_planned = planned[group_start..].iter_mut().any(|node| {
                place_on_planned(
                    node,
                    pod,
                    pod_index,
                    &pod_topology,
                    &attempt,
                    &pools,
                    catalog,
                    &mut topology,
                    &mut compat_cache,
                )
            });
            if on_planned {
                placed = true;
                break;
            }
            let new = new_node(
                pod,
                pod_index,
                shape,
                &attempt,
                grow_efficiently,
                &mut pools,
                catalog,
                &mut topology,
                &mut compat_cache,
            );
            if let Some(mut node) = new {
                node.bin = bin;
                planned.push(node);
                placed = true;
                break;
            }
        }
        if !placed {
            let refusals =
                why_unschedulable(pod, &pools, catalog, &mut compat_cache, topology.describe_constraints(shape));
            unschedulable.push(UnschedulablePod::new(pod.id.clone(), refusals));
        }
    }

    let launched: Vec<(usize, NewNode)> = planned
        .iter()
        .filter_map(|node| Some((node, finish(node, &pools, catalog, input.pods)?)))
        .flat_map(|(node, launched)| {
            right_size(launched, node, &pod_topology, input).into_iter().map(move |n| (node.pool, n))
        })
        .collect();
    let new_nodes = if pass == Pass::Full {
        repack_by_shape(launched, &planned, &pools, catalog, &pod_topology, input)
    } else {
        launched.into_iter().map(|(_, node)| node).collect()
    };
    let existing_placements = existing
        .pods
        .iter()
        .map(|(&n, pods)| (input.existing[n].name.clone(), pods.iter().map(|&p| input.pods[p].id.clone()).collect()))
        .collect();
    Plan { new_nodes, existing_placements, unschedulable }
}

/// The ways to try a pod, in order, for each required term: with every preference (preferred pod terms, preferred
/// node terms, `ScheduleAnyway` spreads); then preferred pod terms dropped one at a time, lightest first; then
/// preferred node terms likewise; then without soft spreads. Karpenter relaxes in this order too.
fn attempts(pod: &PodRequest) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut preferences: Vec<&(i32, Vec<Requirement>)> = pod.preferences.iter().collect();
    preferences.sort_by_key(|p| std::cmp::Reverse(p.0));
    let has_soft_spreads = pod.spreads.iter().any(|s| !s.hard);
    let pod_terms = pod.preferred_pod_terms.len();
    for required in std::iter::once(&pod.requirements).chain(pod.alternative_requirements.iter()) {
        let with_preferences = |kept: usize| {
            let mut requirements = required.clone();
            requirements.extend(preferences[..kept].iter().flat_map(|(_, terms)| terms.iter().cloned()));
            requirements
        };
        for preferred in (1..=pod_terms).rev() {
            let honour = Honour { soft_spreads: true, preferred };
            attempts.push(Attempt { requirements: with_preferences(preferences.len()), honour });
        }
        for kept in (0..=preferences.len()).rev() {
            attempts.push(Attempt { requirements: with_preferences(kept), honour: Honour::SOFT_SPREADS });
        }
        if has_soft_spreads {
            attempts.push(Attempt { requirements: required.clone(), honour: Honour::REQUIRED });
        }
    }
    attempts
}

/// Existing nodes (and in-flight NodeClaims): what is free on each, and their fixed domains.
struct ExistingState<'a> {
    nodes: &'a [ExistingNode],
    available: Vec<Resources>,
    /// Per node: (zone, capacity type), from `Prepared`.
    domains: &'a [(Option<usize>, Option<usize>)],
    /// Per block of `BLOCK` nodes, the element-wise maximum of their free room when the solve began: a pod that
    /// does not fit it skips the block. Placing pods only shrinks room, so it stays an upper bound. In a cluster
    /// of thousands of mostly full nodes this keeps a pod from testing every node.
    block_room: Vec<Resources>,
    /// Only the nodes that took pods in this solve (a few of thousands): their hostname topology, their pods.
    hosts: HashMap<usize, HostState>,
    pods: BTreeMap<usize, Vec<usize>>,
    /// `zones_usable_with`'s answers.
    zones_usable: HashMap<Vec<Requirement>, u64>,
}

/// Nodes per entry of `ExistingState::block_room`.
const BLOCK: usize = 32;

impl<'a> ExistingState<'a> {
    fn new(nodes: &'a [ExistingNode], domains: &'a [(Option<usize>, Option<usize>)]) -> Self {
        let available: Vec<Resources> = nodes.iter().map(|n| n.available).collect();
        Self {
            block_room: available
                .chunks(BLOCK)
                .map(|block| block.iter().fold(Resources::ZERO, |max, room| max.max(room)))
                .collect(),
            available,
            domains,
            hosts: HashMap::new(),
            pods: BTreeMap::new(),
            zones_usable: HashMap::new(),
            nodes,
        }
    }

    /// The zones of the nodes a pod with `requirements` may use (taints aside: kube-scheduler's spreads count
    /// tainted nodes' zones unless told otherwise), once per set of requirements in a solve.
    fn zones_usable_with(&mut self, requirements: &[Requirement]) -> u64 {
        if let Some(&zones) = self.zones_usable.get(requirements) {
            return zones;
        }
        let zones = self
            .nodes
            .iter()
            .zip(self.domains)
            .filter(|(node, _)| requirements.iter().all(|r| r.matches(node.labels.get(&r.key).map(String::as_str))))
            .filter_map(|(_, (zone, _))| *zone)
            .fold(0u64, |zones, z| zones | (1 << z));
        self.zones_usable.insert(requirements.to_vec(), zones);
        zones
    }

    /// Places the pod on the first node that takes it; `zones` are those its zone constraints weigh.
    fn place(
        &mut self,
        pod: &PodRequest,
        pod_index: usize,
        shape: &PodTopology,
        attempt: &Attempt,
        zones: u64,
        topology: &mut Topology,
    ) -> bool {
        let blocks = (0..self.block_room.len()).filter(|&b| pod.requests.fits_in(&self.block_room[b]));
        for n in blocks.flat_map(|b| b * BLOCK..((b + 1) * BLOCK).min(self.nodes.len())) {
            let node = &self.nodes[n];
            let host = self.hosts.get(&n);
            if !pod.requests.fits_in(&self.available[n])
                || host.is_some_and(|h| ports_conflict(&pod.host_ports, &h.ports))
                || !tolerates_all(&pod.tolerations, &node.taints)
                || !attempt.requirements.iter().all(|r| r.matches(node.labels.get(&r.key).map(String::as_str)))
                || !topology.hostname_allows(
                    shape,
                    host.map_or(&[][..], |h| &h.counts),
                    host.map_or(&[][..], |h| &h.anti_affinity),
                    attempt.honour,
                )
            {
                continue;
            }
            // The node's domains are fixed: it must be among those the pod's constraints allow.
            let (zone, capacity_type) = self.domains[n];
            let zone_ok = !topology.constrains(shape, TopologyKey::Zone)
                || zone.is_some_and(|z| topology.allowed_zones(shape, zones, attempt.honour) & (1 << z) != 0);
            let ct_ok = !topology.constrains(shape, TopologyKey::CapacityType)
                || capacity_type.is_some_and(|c| {
                    topology.allowed_capacity_types(shape, SPOT | ON_DEMAND, attempt.honour) & (1 << c) != 0
                });
            if !zone_ok || !ct_ok {
                continue;
            }
            self.available[n] = self.available[n] - pod.requests;
            let host = self.hosts.entry(n).or_default();
            host.add(shape, topology);
            host.ports.extend(pod.host_ports.iter().cloned());
            topology.record(shape, zone, capacity_type);
            topology.record_total(&shape.member_of);
            self.pods.entry(n).or_default().push(pod_index);
            return true;
        }
        false
    }
}

/// The zones a pod's zone constraints weigh as it tries an existing node: those where a pool could launch a node
/// for it (which a new node weighs too) and those of the nodes it may use (kube-scheduler's domains). Every zone
/// the catalog knows would hold the least crowded at none and keep the pod off every zone that has one already,
/// launching nodes beside room kube-scheduler then fills.
fn zones_to_weigh(
    pod: &PodRequest,
    attempt: &Attempt,
    pools: &[Pool],
    catalog: &Catalog,
    compat_cache: &mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
    existing: &mut ExistingState<'_>,
) -> u64 {
    let launchable = pools
        .iter()
        .enumerate()
        .filter(|(_, pool)| tolerates_all(&pod.tolerations, &pool.spec.taints))
        .filter_map(|(p, pool)| cached_compat(compat_cache, p, &attempt.requirements, pool, catalog).map(|c| c.zones))
        .fold(0, |zones, more| zones | more);
    launchable | existing.zones_usable_with(&attempt.requirements)
}

/// The zones and capacity types the pod's topology lets it use, out of `zones` × `cts`; pinned to one of each
/// where its constraints (or its counting in a group) need the domain known.
fn topology_domains(
    shape: &PodTopology,
    topology: &Topology,
    eligible_zones: u64,
    eligible_cts: u8,
    node_zones: u64,
    node_cts: u8,
    honour: Honour,
) -> Option<(u64, u8)> {
    let mut zones = node_zones & eligible_zones;
    let mut cts = node_cts & eligible_cts;
    if topology.constrains(shape, TopologyKey::Zone) || topology.counted_on(shape, TopologyKey::Zone) {
        zones &= topology.allowed_zones(shape, eligible_zones, honour);
        zones = 1u64 << topology.pick_domain(shape, TopologyKey::Zone, zones)?;
    }
    if topology.constrains(shape, TopologyKey::CapacityType) || topology.counted_on(shape, TopologyKey::CapacityType) {
        cts &= topology.allowed_capacity_types(shape, eligible_cts, honour);
        cts = 1u8 << topology.pick_domain(shape, TopologyKey::CapacityType, u64::from(cts))?;
    }
    (zones != 0 && cts != 0).then_some((zones, cts))
}

#[allow(clippy::too_many_arguments)]
fn place_on_planned(
    node: &mut PlannedNode,
    pod: &PodRequest,
    pod_index: usize,
    shapes: &[PodTopology],
    attempt: &Attempt,
    pools: &[Pool],
    catalog: &Catalog,
    topology: &mut Topology,
    compat_cache: &mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
) -> bool {
    let pool = &pools[node.pool];
    let shape = &shapes[pod_index];
    let used = node.used + pod.requests;
    if !used.fits_in(&node.max_allocatable)
        || !tolerates_all(&pod.tolerations, &pool.spec.taints)
        || ports_conflict(&pod.host_ports, &node.host.ports)
    {
        return false;
    }
    if !shape.is_empty()
        && !topology.hostname_allows(shape, &node.host.counts, &node.host.anti_affinity, attempt.honour)
    {
        return false;
    }
    let Some(compat) = cached_compat(compat_cache, node.pool, &attempt.requirements, pool, catalog) else {
        return false;
    };
    let Some((zones, cts)) =
        topology_domains(shape, topology, compat.zones, compat.cts, node.compat.zones, node.compat.cts, attempt.honour)
    else {
        return false;
    };
    let was_pinned = (pinned(node.compat.zones), pinned_ct(node.compat.cts));
    let Some(narrowed) = narrow(&node.compat, compat, &used, zones, cts, pool, catalog) else {
        return false;
    };
    node.max_allocatable = max_allocatable(&narrowed.types, pool);
    node.compat = narrowed;
    node.used = used;
    // A node just pinned to a zone or capacity type now counts its earlier pods there.
    let now_pinned = (pinned(node.compat.zones), pinned_ct(node.compat.cts));
    if was_pinned != now_pinned {
        // Earlier pods joined without a domain; record them in the newly known one.
        let zone = if was_pinned.0.is_none() { now_pinned.0 } else { None };
        let ct = if was_pinned.1.is_none() { now_pinned.1 } else { None };
        for &earlier in &node.pods {
            topology.record(&shapes[earlier], zone, ct);
        }
    }
    node.host.add(shape, topology);
    node.host.ports.extend(pod.host_ports.iter().cloned());
    topology.record(shape, now_pinned.0, now_pinned.1);
    topology.record_total(&shape.member_of);
    node.pods.push(pod_index);
    true
}

#[allow(clippy::too_many_arguments)]
fn new_node(
    pod: &PodRequest,
    pod_index: usize,
    shape: &PodTopology,
    attempt: &Attempt,
    grow_efficiently: bool,
    pools: &mut [Pool],
    catalog: &Catalog,
    topology: &mut Topology,
    compat_cache: &mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
) -> Option<PlannedNode> {
    // A new node holds no pod yet: hostname affinity to pods that run (or are planned) elsewhere rules it out.
    if !shape.is_empty() && !topology.hostname_allows(shape, &[], &[], attempt.honour) {
        return None;
    }
    for (p, pool) in pools.iter_mut().enumerate() {
        if !tolerates_all(&pod.tolerations, &pool.spec.taints) {
            continue;
        }
        let Some(compat) = cached_compat(compat_cache, p, &attempt.requirements, pool, catalog) else {
            continue;
        };
        let mut start = compat.clone();
        if let Some(remaining) = pool.remaining_limits {
            start.types.retain(|t| pool.capacity[t].fits_in(&remaining));
        }
        let Some((zones, cts)) =
            topology_domains(shape, topology, compat.zones, compat.cts, u64::MAX, SPOT | ON_DEMAND, attempt.honour)
        else {
            continue;
        };
        // A new node may grow only into the types that give the most per dollar, so it never swells into a
        // family that costs more per resource than the workload needs; a pod that only fits the others still
        // gets them.
        let mut efficient = start.clone();
        efficient.types = start.types.and(&compat.efficient);
        // A new node starts with every `minValues` met; a BestEffort pool relaxes them only where the pod fits no
        // node that meets them.
        let meets_min_values = |c: Option<Compat>| c.filter(|c| min_values_hold(&c.types, pool, catalog));
        let efficient = if grow_efficiently {
            meets_min_values(narrow(&efficient, &pool.base, &pod.requests, zones, cts, pool, catalog))
        } else {
            None
        };
        let narrowed = efficient
            .or_else(|| meets_min_values(narrow(&start, &pool.base, &pod.requests, zones, cts, pool, catalog)));
        let (narrowed, min_values_relaxed) = match narrowed {
            Some(narrowed) => (narrowed, false),
            None if pool.spec.min_values_policy == MinValuesPolicy::BestEffort => {
                match narrow_ignoring_min_values(&start, &pool.base, &pod.requests, zones, cts, pool, catalog) {
                    Some(narrowed) => (narrowed, true),
                    None => continue,
                }
            }
            None => continue,
        };
        // Count the largest type it may become against the limits, as it may become it.
        let largest = max_capacity(&narrowed.types, pool);
        if let Some(remaining) = pool.remaining_limits.as_mut() {
            *remaining = *remaining - largest;
        }
        let mut host = HostState { ports: pod.host_ports.clone(), ..HostState::default() };
        host.add(shape, topology);
        topology.record(shape, pinned(narrowed.zones), pinned_ct(narrowed.cts));
        topology.record_total(&shape.member_of);
        return Some(PlannedNode {
            pool: p,
            max_allocatable: max_allocatable(&narrowed.types, pool),
            compat: narrowed,
            used: pod.requests,
            pods: vec![pod_index],
            host,
            bin: 0,
            min_values_relaxed,
        });
    }
    None
}

fn pinned(zones: u64) -> Option<usize> {
    (zones.count_ones() == 1).then(|| zones.trailing_zeros() as usize)
}

fn pinned_ct(cts: u8) -> Option<usize> {
    (cts.count_ones() == 1).then(|| cts.trailing_zeros() as usize)
}

/// The planned node as it will launch: its options, cheapest first, cut to the CreateFleet limit.
fn finish(node: &PlannedNode, pools: &[Pool], catalog: &Catalog, pods: &[PodRequest]) -> Option<NewNode> {
    let pool = &pools[node.pool];
    let mut options: Vec<(usize, (usize, CapacityType, f64))> = node
        .compat
        .types
        .iter()
        .filter_map(|t| Some((t, catalog.cheapest(t, node.compat.zones, node.compat.cts)?)))
        .collect();
    options.sort_by(|a, b| a.1.2.total_cmp(&b.1.2).then(catalog.types[a.0].name.cmp(&catalog.types[b.0].name)));
    let keep = options_to_keep(&options, pool, catalog);
    options.truncate(keep);
    let &(cheapest, (zone, capacity_type, price)) = options.first()?;
    let mut labels: BTreeMap<String, String> =
        node.compat.custom.iter().filter_map(|(k, v)| Some((k.clone(), v.first()?.clone()))).collect();
    labels.insert(CAPACITY_TYPE_LABEL.to_string(), capacity_type.as_str().to_string());
    labels.insert(ZONE_LABEL.to_string(), catalog.zones[zone].clone());
    Some(NewNode {
        nodepool: pool.spec.name.clone(),
        instance_type: catalog.types[cheapest].name.clone(),
        zone: catalog.zones[zone].clone(),
        capacity_type,
        price_per_hour: price,
        pods: node.pods.iter().map(|&p| pods[p].id.clone()).collect(),
        requests: node.used,
        allocatable: pool.allocatable[cheapest],
        instance_type_options: options.iter().map(|(t, _)| catalog.types[*t].name.clone()).collect(),
        zones: (0..catalog.zones.len())
            .filter(|z| node.compat.zones & (1 << z) != 0)
            .map(|z| catalog.zones[z].clone())
            .collect(),
        capacity_types: [CapacityType::Spot, CapacityType::OnDemand]
            .into_iter()
            .filter(|ct| node.compat.cts & capacity_type_bit(*ct) != 0)
            .collect(),
        labels,
        min_values_relaxed: node.min_values_relaxed,
    })
}

/// The 60 cheapest, or more where the pool's `minValues` need more distinct values than 60 give.
fn options_to_keep(options: &[(usize, (usize, CapacityType, f64))], pool: &Pool, catalog: &Catalog) -> usize {
    let mut keep = options.len().min(MAX_INSTANCE_TYPE_OPTIONS);
    for r in pool.spec.requirements.iter().filter(|r| r.min_values.is_some()) {
        let min = r.min_values.unwrap_or(0) as usize;
        let mut seen: Vec<&str> = Vec::new();
        for (i, (t, _)) in options.iter().enumerate() {
            if let Some(value) = catalog.labels[*t].get(r.key.as_str())
                && !seen.contains(&value.as_str())
            {
                seen.push(value);
                if seen.len() == min {
                    keep = keep.max(i + 1);
                    break;
                }
            }
        }
    }
    keep
}
