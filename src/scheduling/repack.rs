//! Re-plans a finished first-fit plan where that is cheaper: a pool's unconstrained pods packed by shape onto the
//! types that buy them best, and half-empty large nodes moved to smaller types. Each re-plan is a solve of its own,
//! so every constraint still holds; a re-plan replaces nodes only when it costs less.

use std::collections::HashMap;

use super::model::PodRequest;
use super::options::{Catalog, Pool};
use super::plan::NewNode;
use super::solver::{Pass, PlannedNode, SchedulingInput, solve_with, solve_with_catalog};
use super::topology::PodTopology;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::resources::{RESOURCE_COUNT, ResourceName, Resources};

/// Re-plans only pools of this many pods or fewer: each try is a few solves of the pool's pods.
const REPACK_MAX_PODS: usize = 50_000;
const REPACK_MIN_PODS: usize = 8;

/// Split points the fractional search weighs: enough to land near the best, few enough to stay cheap.
const FRACTIONAL_SPLIT_CANDIDATES: usize = 512;

/// Node-by-node packing compares every distinct pod shape for every pod; past this many shapes it is skipped.
const NODE_BY_NODE_MAX_SHAPES: usize = 256;

/// Tail nodes whose score is within this share of the best count as equal; the largest of them is taken.
const TAIL_SCORE_TOLERANCE: f64 = 0.002;

/// One type the pool may launch: its index in the catalog, its place among the pool's types by name (ties go
/// by it, so the plan does not depend on the catalog's order), its cheapest price, and what it holds for pods.
#[derive(Debug, Clone, Copy)]
struct Supply {
    instance_type: usize,
    rank: usize,
    price: f64,
    allocatable: Resources,
}

impl Supply {
    /// Between equally good types: the larger (fewer nodes), then the first by name.
    fn preferred_over(&self, other: &Supply) -> std::cmp::Ordering {
        let cpu = |s: &Supply| s.allocatable.get(ResourceName::Cpu);
        cpu(other).cmp(&cpu(self)).then(self.rank.cmp(&other.rank))
    }
}

/// First-fit takes pods in a fixed order and its nodes grow into whichever type still holds them, so nodes end
/// up full in one resource and part-empty in another, and no instance family may have the batch's ratio (c is
/// 1:2, m 1:4, r 1:8 GiB per vCPU). For each pool whose nodes hold only pods without topology constraints or host
/// ports (and that has no limits, which separate re-plans could not share), the pods are planned again node by node
/// (`pack_node_by_node`): as one part, and split by memory per CPU where a CPU-heavy and a memory-heavy part are
/// cheapest to buy fractionally (the two parts also as first-fit plans them). The cheapest result replaces the
/// pool's nodes when it is cheaper.
pub(super) fn repack_by_shape(
    launched: Vec<(usize, NewNode)>,
    planned: &[PlannedNode],
    pools: &[Pool],
    catalog: &Catalog,
    shapes: &[PodTopology],
    input: &SchedulingInput,
) -> Vec<NewNode> {
    let mut replaced_pools: Vec<usize> = Vec::new();
    let mut repacked: Vec<NewNode> = Vec::new();
    for (pool_index, pool) in pools.iter().enumerate() {
        let pods: Vec<usize> =
            planned.iter().filter(|n| n.pool == pool_index).flat_map(|n| n.pods.iter().copied()).collect();
        let eligible = pool.spec.limits.is_none()
            && (REPACK_MIN_PODS..=REPACK_MAX_PODS).contains(&pods.len())
            && pods.iter().all(|&p| shapes[p].is_empty() && input.pods[p].host_ports.is_empty());
        if !eligible {
            continue;
        }
        let current: f64 = launched.iter().filter(|(p, _)| *p == pool_index).map(|(_, n)| n.price_per_hour).sum();
        let mut sorted: Vec<PodRequest> = pods.iter().map(|&p| input.pods[p].clone()).collect();
        sorted.sort_by(|a, b| memory_per_cpu(a).total_cmp(&memory_per_cpu(b)).then_with(|| a.id.cmp(&b.id)));
        let supply = supply_of(pool, catalog);

        // The whole pool as one part, and the split the fractional estimate likes best.
        let splits = std::iter::once(0).chain(cheapest_fractional_split(&sorted, &supply));
        let mut best: Option<(f64, Vec<NewNode>)> = None;
        for split in splits {
            let parts = [&sorted[..split], &sorted[split..]];
            // First-fit of the whole pool alone is the plan being improved on; only its parts are worth it.
            let with_first_fit = split > 0;
            let plans: Option<Vec<(f64, Vec<NewNode>)>> = parts
                .iter()
                .filter(|part| !part.is_empty())
                .map(|part| cheapest_plan_of_part(part, with_first_fit, pool, &supply, catalog, input))
                .collect();
            let Some(plans) = plans else { continue };
            let cost: f64 = plans.iter().map(|(c, _)| c).sum();
            if best.as_ref().is_none_or(|(c, _)| cost < *c - 1e-9) {
                best = Some((cost, plans.into_iter().flat_map(|(_, nodes)| nodes).collect()));
            }
        }
        if let Some((cost, nodes)) = best
            && cost < current - 1e-9
        {
            repacked.extend(nodes);
            replaced_pools.push(pool_index);
        }
    }
    launched
        .into_iter()
        .filter(|(pool, _)| !replaced_pools.contains(pool))
        .map(|(_, node)| node)
        .chain(repacked)
        .collect()
}

fn memory_per_cpu(pod: &PodRequest) -> f64 {
    pod.requests.get(ResourceName::Memory) as f64 / pod.requests.get(ResourceName::Cpu).max(1) as f64
}

/// The cheaper of two plans of one part on its own: node by node, and (if `with_first_fit`) first-fit's. None
/// when some pod of the part finds no node either way.
fn cheapest_plan_of_part(
    part: &[PodRequest],
    with_first_fit: bool,
    pool: &Pool,
    supply: &[Supply],
    catalog: &Catalog,
    input: &SchedulingInput,
) -> Option<(f64, Vec<NewNode>)> {
    let solve_part = |pods: &[PodRequest], pass: Pass| {
        let plan = solve_with_catalog(
            &SchedulingInput { pods, nodepools: std::slice::from_ref(pool.spec), existing: &[], ..*input },
            pass,
            catalog,
        );
        plan.unschedulable.is_empty().then(|| (plan.total_price_per_hour(), plan.new_nodes))
    };
    let first_fit = if with_first_fit { solve_part(part, Pass::Replan) } else { None };
    let node_by_node = pack_node_by_node(part, supply).and_then(|(order, bins)| {
        let ordered: Vec<PodRequest> = order.iter().map(|&i| part[i].clone()).collect();
        solve_part(&ordered, Pass::Bins(&bins))
    });
    [first_fit, node_by_node].into_iter().flatten().min_by(|a, b| a.0.total_cmp(&b.0))
}

fn total_requests(pods: &[PodRequest]) -> Resources {
    pods.iter().fold(Resources::ZERO, |sum, p| sum + p.requests)
}

/// The types `pool` may launch, with their cheapest price where the pool may launch them, less those another
/// type beats outright (holds at least as much of every resource for no more money): a packing never needs
/// those, and the tail search weighs every type it keeps.
fn supply_of(pool: &Pool, catalog: &Catalog) -> Vec<Supply> {
    let mut by_name: Vec<usize> = pool.base.types.iter().collect();
    by_name.sort_by(|&a, &b| catalog.types[a].name.cmp(&catalog.types[b].name));
    let all: Vec<Supply> = by_name
        .into_iter()
        .enumerate()
        .filter_map(|(rank, t)| {
            let (_, _, price) = catalog.cheapest(t, pool.base.zones, pool.base.cts)?;
            Some(Supply { instance_type: t, rank, price, allocatable: pool.allocatable[t] })
        })
        .collect();
    without_beaten(all)
}

/// `supply` less every type a no-dearer type holds at least as much of every resource as; cheapest first.
fn without_beaten(mut supply: Vec<Supply>) -> Vec<Supply> {
    supply.sort_by(|a, b| a.price.total_cmp(&b.price).then_with(|| a.preferred_over(b)));
    let mut kept: Vec<Supply> = Vec::with_capacity(supply.len());
    for s in supply {
        if !kept.iter().any(|k| s.allocatable.fits_in(&k.allocatable)) {
            kept.push(s);
        }
    }
    kept
}

/// How many nodes of `allocatable` hold `amount` if nodes could be bought in fractions; infinite when it lacks a
/// resource `amount` needs.
fn fractional_nodes(amount: &Resources, allocatable: &Resources) -> f64 {
    ResourceName::ALL
        .iter()
        .map(|&r| match (amount.get(r), allocatable.get(r)) {
            (want, _) if want <= 0 => 0.0,
            (_, have) if have <= 0 => f64::INFINITY,
            (want, have) => want as f64 / have as f64,
        })
        .fold(0.0, f64::max)
}

/// The type that buys `amount` cheapest, if nodes could be bought in fractions, and that price: a lower bound
/// for any packing of `amount` onto one type.
fn cheapest_fractional(amount: &Resources, supply: &[Supply]) -> Option<(Supply, f64)> {
    supply
        .iter()
        .map(|s| (*s, s.price * fractional_nodes(amount, &s.allocatable)))
        .filter(|(_, cost)| cost.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.preferred_over(&b.0)))
}

fn best_fractional_type(amount: &Resources, supply: &[Supply]) -> Option<Supply> {
    cheapest_fractional(amount, supply).map(|(s, _)| s)
}

/// How many pods to take from the front of `sorted` (ordered by memory per CPU) so that the two parts, each
/// bought fractionally from its own best type, cost the least. Running sums make each candidate O(types).
fn cheapest_fractional_split(sorted: &[PodRequest], supply: &[Supply]) -> Option<usize> {
    let total = total_requests(sorted);
    let step = (sorted.len() / FRACTIONAL_SPLIT_CANDIDATES).max(1);
    let mut prefix = Resources::ZERO;
    let mut best: Option<(f64, usize)> = None;
    for (i, pod) in sorted.iter().enumerate() {
        prefix += pod.requests;
        let split = i + 1;
        if split % step != 0 || split == sorted.len() {
            continue;
        }
        let (Some((_, low)), Some((_, high))) =
            (cheapest_fractional(&prefix, supply), cheapest_fractional(&(total - prefix), supply))
        else {
            continue;
        };
        if best.is_none_or(|(c, _)| low + high < c) {
            best = Some((low + high, split));
        }
    }
    best.map(|(_, split)| split)
}

/// A packing of `pods` into nodes, built one node at a time: which pods each node takes (as indices into `pods`,
/// node by node) and the node each belongs to. While more than a node's worth is left, each node is of the
/// workhorse, the type that buys what is left cheapest; the last node's worth goes to `TailSearch`, so the tail
/// lands on types its size, not on a part-empty large one. Each node is filled by `fill_node`. Pods that fit no
/// type come last, in a group of their own. None when the pods have too many distinct shapes for this to stay
/// cheap.
fn pack_node_by_node(pods: &[PodRequest], supply: &[Supply]) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut shape_index: HashMap<Resources, usize> = HashMap::new();
    // Per shape: its requests and its pods, last first so that pop() keeps the given order.
    let mut shapes: Vec<(Resources, Vec<usize>)> = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let s = *shape_index.entry(pod.requests).or_insert_with(|| {
            shapes.push((pod.requests, Vec::new()));
            shapes.len() - 1
        });
        shapes[s].1.push(i);
    }
    if shapes.len() > NODE_BY_NODE_MAX_SHAPES {
        return None;
    }
    for (_, members) in &mut shapes {
        members.reverse();
    }
    let requests: Vec<Resources> = shapes.iter().map(|(r, _)| *r).collect();
    let mut left: Vec<usize> = shapes.iter().map(|(_, members)| members.len()).collect();
    let mut remaining = total_requests(pods);
    let tail = TailSearch::new(supply, &requests);
    let mut workhorse = best_fractional_type(&remaining, supply);

    let mut order: Vec<usize> = Vec::with_capacity(pods.len());
    let mut bins: Vec<usize> = Vec::with_capacity(pods.len());
    loop {
        let mut picks = Vec::new();
        if let Some(w) = workhorse.filter(|w| fractional_nodes(&remaining, &w.allocatable) > 1.0) {
            picks = fill_node(&w.allocatable, &requests, &left);
            if picks.is_empty() {
                // It holds none of what is left (say, GPU pods after the CPU ones): choose again for the rest.
                let again = best_fractional_type(&remaining, supply);
                if again.is_some_and(|a| a.instance_type != w.instance_type) {
                    workhorse = again;
                    continue;
                }
            }
        }
        if picks.is_empty() {
            picks = tail.next_node(&left, remaining);
        }
        let node = bins.last().map_or(0, |last| last + 1);
        if picks.is_empty() {
            // What is left fits no type; the solve will say why.
            let rest: Vec<usize> = shapes.iter_mut().flat_map(|(_, members)| members.drain(..).rev()).collect();
            bins.extend(std::iter::repeat_n(node, rest.len()));
            order.extend(rest);
            return Some((order, bins));
        }
        for s in picks {
            if let Some(pod) = shapes[s].1.pop() {
                order.push(pod);
                bins.push(node);
                left[s] -= 1;
                remaining = remaining - requests[s];
            }
        }
        if left.iter().all(|&n| n == 0) {
            return Some((order, bins));
        }
    }
}

/// Chooses each node of the last node's worth of pods, where the size of each node matters. Every type (cheapest
/// first) fills a node, and is weighed by its price plus the cheapest type that holds all it leaves (or, when
/// none does, what it leaves bought fractionally); the cheapest pair wins, the larger type among near-equals.
/// One fill per type per node, so the tail costs at most (its nodes × types) fills.
struct TailSearch<'a> {
    /// Cheapest first: a type dearer than the best pair so far ends the search, as its pair costs more still.
    by_price: Vec<Supply>,
    requests: &'a [Resources],
}

impl<'a> TailSearch<'a> {
    fn new(supply: &[Supply], requests: &'a [Resources]) -> Self {
        let mut by_price = supply.to_vec();
        by_price.sort_by(|a, b| a.price.total_cmp(&b.price).then_with(|| a.preferred_over(b)));
        Self { by_price, requests }
    }

    fn next_node(&self, left: &[usize], remaining: Resources) -> Vec<usize> {
        // (cost with the rest, type, picks) of every type that takes something.
        let mut weighed: Vec<(f64, Supply, Vec<usize>)> = Vec::new();
        let mut least = f64::INFINITY;
        for candidate in &self.by_price {
            if candidate.price > least * (1.0 + TAIL_SCORE_TOLERANCE) {
                break;
            }
            let picks = fill_node(&candidate.allocatable, self.requests, left);
            if picks.is_empty() {
                continue;
            }
            let rest = picks.iter().fold(remaining, |rest, &s| rest - self.requests[s]);
            let cost = candidate.price + self.cost_of_rest(&rest);
            least = least.min(cost);
            weighed.push((cost, *candidate, picks));
        }
        weighed
            .into_iter()
            .filter(|(cost, _, _)| *cost <= least * (1.0 + TAIL_SCORE_TOLERANCE))
            .min_by(|a, b| a.1.preferred_over(&b.1))
            .map(|(_, _, picks)| picks)
            .unwrap_or_default()
    }

    fn cost_of_rest(&self, rest: &Resources) -> f64 {
        if ResourceName::ALL.iter().all(|&r| rest.get(r) <= 0) {
            return 0.0;
        }
        match self.by_price.iter().find(|s| rest.fits_in(&s.allocatable)) {
            Some(one_node) => one_node.price,
            None => cheapest_fractional(rest, &self.by_price).map_or(f64::INFINITY, |(_, cost)| cost),
        }
    }
}

/// The shapes (indices into `requests`, one per pod, with repeats) one node of `capacity` takes from `left`:
/// while any fits, the one whose requests point most nearly the way the node's free room does (the smallest
/// angle, in shares of the node), the largest among equals. Free room that has tilted towards memory draws
/// memory-heavy pods, so CPU- and memory-heavy pods share the node in its own proportion and it fills in every
/// resource at once. (Ranking by the plain dot product instead takes the largest pods first and left a third of
/// the CPU of the first nodes idle.)
fn fill_node(capacity: &Resources, requests: &[Resources], left: &[usize]) -> Vec<usize> {
    let shares = |amount: &Resources| {
        ResourceName::ALL.map(|r| match capacity.get(r) {
            c if c <= 0 => 0.0,
            c => amount.get(r) as f64 / c as f64,
        })
    };
    let norm = |v: &[f64; RESOURCE_COUNT]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    // Each shape's share of the node, and its length, once per node.
    let shape_shares: Vec<([f64; RESOURCE_COUNT], f64)> = requests
        .iter()
        .map(|r| {
            let v = shares(r);
            (v, norm(&v))
        })
        .collect();
    let mut left = left.to_vec();
    let mut free = *capacity;
    let mut picks = Vec::new();
    loop {
        let free_shares = shares(&free);
        let next = (0..requests.len())
            .filter(|&s| left[s] > 0 && requests[s].fits_in(&free))
            .map(|s| {
                let (pod, length) = &shape_shares[s];
                let along: f64 = pod.iter().zip(&free_shares).map(|(a, b)| a * b).sum();
                // The free room's length is the same for every shape, so it does not change the ranking.
                (s, along / length.max(f64::MIN_POSITIVE), *length)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)).then(b.0.cmp(&a.0)));
        let Some((s, _, _)) = next else { return picks };
        left[s] -= 1;
        free = free - requests[s];
        picks.push(s);
    }
}

/// A node launched below this share of its type (in its most used resource) is worth re-packing on smaller types.
const RIGHT_SIZE_BELOW: f64 = 0.9;

/// First-fit fills nodes to the largest type that holds them; the last node of a run is often left half empty on
/// a type far larger than its pods need. Such a node's pods are planned again on strictly smaller types, and the
/// result replaces the node when it is cheaper (e.g. 137 CPUs: a 128-vCPU and a 16-vCPU node, not a 192-vCPU one).
/// Only for nodes whose pods have no topology constraints and whose NodePool has no limits, which a re-plan in
/// isolation could not see.
pub(super) fn right_size(
    node: NewNode,
    planned: &PlannedNode,
    shapes: &[PodTopology],
    input: &SchedulingInput,
) -> Vec<NewNode> {
    let Some(spec) = input.nodepools.iter().find(|p| p.name == node.nodepool) else { return vec![node] };
    let Some(chosen) = input.instance_types.iter().find(|t| t.name == node.instance_type) else { return vec![node] };
    let share = |r: ResourceName| node.requests.get(r) as f64 / node.allocatable.get(r).max(1) as f64;
    let utilisation = share(ResourceName::Cpu).max(share(ResourceName::Memory));
    let unconstrained = planned.pods.iter().all(|&p| shapes[p].is_empty() && input.pods[p].host_ports.is_empty());
    if utilisation >= RIGHT_SIZE_BELOW || spec.limits.is_some() || !unconstrained {
        return vec![node];
    }
    let smaller: Vec<InstanceTypeInfo> =
        input.instance_types.iter().filter(|t| t.vcpus < chosen.vcpus).cloned().collect();
    if smaller.is_empty() {
        return vec![node];
    }
    let pods: Vec<PodRequest> = planned.pods.iter().map(|&p| input.pods[p].clone()).collect();
    let replan = solve_with(
        &SchedulingInput {
            pods: &pods,
            nodepools: std::slice::from_ref(spec),
            instance_types: &smaller,
            existing: &[],
            ..*input
        },
        Pass::Replan,
    );
    if replan.unschedulable.is_empty() && replan.total_price_per_hour() < node.price_per_hour - 1e-9 {
        replan.new_nodes
    } else {
        vec![node]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GI: i64 = 1 << 30;

    fn resources(cpu_millis: i64, memory: i64, pods: i64) -> Resources {
        Resources::ZERO
            .with(ResourceName::Cpu, cpu_millis)
            .with(ResourceName::Memory, memory)
            .with(ResourceName::Pods, pods)
    }

    fn pod(id: usize, cpu_millis: i64, memory: i64) -> PodRequest {
        PodRequest::new(&format!("ns/p{id:04}"), resources(cpu_millis, memory, 1))
    }

    fn supply(instance_type: usize, price: f64, cpu_millis: i64, memory: i64, pods: i64) -> Supply {
        Supply { instance_type, rank: instance_type, price, allocatable: resources(cpu_millis, memory, pods) }
    }

    /// The requests of each node of a packing, in node order.
    fn nodes_of(pods: &[PodRequest], order: &[usize], bins: &[usize]) -> Vec<Resources> {
        let mut nodes: Vec<Resources> = Vec::new();
        for (&pod, &bin) in order.iter().zip(bins) {
            if bin == nodes.len() {
                nodes.push(Resources::ZERO);
            }
            nodes[bin] += pods[pod].requests;
        }
        nodes
    }

    #[test]
    fn a_node_fills_in_every_resource_at_once() {
        // CPU-heavy and memory-heavy pods, 20 of each: taking the largest first would fill the CPU with ten
        // CPU-heavy pods and leave three quarters of the memory idle.
        let requests = [resources(1000, GI / 2, 1), resources(100, 4 * GI, 1)];
        let capacity = resources(10_000, 20 * GI, 100);
        let picks = fill_node(&capacity, &requests, &[20, 20]);
        let used = picks.iter().fold(Resources::ZERO, |sum, &s| sum + requests[s]);
        assert!(used.fits_in(&capacity));
        let share = |r| used.get(r) as f64 / capacity.get(r) as f64;
        assert!(share(ResourceName::Cpu) >= 0.8 && share(ResourceName::Memory) >= 0.8, "{used} of {capacity}");
    }

    #[test]
    fn a_node_takes_nothing_when_no_pod_fits() {
        let requests = [resources(4000, GI, 1)];
        assert!(fill_node(&resources(2000, 8 * GI, 10), &requests, &[3]).is_empty());
        assert!(fill_node(&resources(8000, 8 * GI, 10), &requests, &[0]).is_empty());
    }

    #[test]
    fn the_fractional_split_is_within_a_step_of_the_cheapest_of_all_splits() {
        // A compute type (2 GiB per CPU) and a memory type (8 GiB per CPU). The memory-heavy pods leave CPU free
        // on the memory type, so the best split also moves some CPU-heavy pods there. 2,000 pods: only every
        // third split point is weighed.
        let types = [supply(0, 1.0, 16_000, 32 * GI, 1000), supply(1, 1.5, 16_000, 128 * GI, 1000)];
        let mut pods: Vec<PodRequest> = (0..1200).map(|i| pod(i, 1000, GI)).collect();
        pods.extend((1200..2000).map(|i| pod(i, 250, 6 * GI)));
        let mut prefix = vec![Resources::ZERO];
        for p in &pods {
            prefix.push(*prefix.last().expect("starts with zero") + p.requests);
        }
        let total = prefix[pods.len()];
        let cost_of = |split: usize| {
            let part = |amount: Resources| cheapest_fractional(&amount, &types).map_or(0.0, |c| c.1);
            part(prefix[split]) + part(total - prefix[split])
        };
        let split = cheapest_fractional_split(&pods, &types).expect("a split");
        let best = (1..pods.len()).map(cost_of).fold(f64::INFINITY, f64::min);
        // Three pods more or less on one side move the cost by at most three pods' worth (under 0.2 here).
        assert!(cost_of(split) <= best + 0.2, "split {split} costs {}, the best {best}", cost_of(split));
        assert!(cost_of(split) < cost_of(0) - 5.0, "splitting saves little: {} against {}", cost_of(split), cost_of(0));
    }

    #[test]
    fn a_type_that_is_dearer_and_holds_no_more_is_dropped() {
        let kept = without_beaten(vec![
            supply(0, 1.0, 8000, 16 * GI, 50),
            supply(1, 1.2, 8000, 16 * GI, 50), // same room, dearer
            supply(2, 1.1, 4000, 32 * GI, 50), // less CPU but more memory: kept
            supply(3, 0.9, 2000, 4 * GI, 20),  // cheaper: kept
        ]);
        let mut kept_types: Vec<usize> = kept.iter().map(|s| s.instance_type).collect();
        kept_types.sort_unstable();
        assert_eq!(kept_types, vec![0, 2, 3]);
    }

    #[test]
    fn the_last_node_is_sized_to_the_pods_left() {
        // One family at one price per CPU: 18 one-CPU pods are a 16-CPU node and a 2-CPU one, not two 16s nor
        // nine 2s.
        let family: Vec<Supply> = [2, 4, 8, 16]
            .iter()
            .enumerate()
            .map(|(i, &cpus)| supply(i, f64::from(cpus), i64::from(cpus) * 1000, i64::from(cpus) * 2 * GI, 100))
            .collect();
        let pods: Vec<PodRequest> = (0..18).map(|i| pod(i, 1000, GI)).collect();
        let (order, bins) = pack_node_by_node(&pods, &family).expect("few shapes");
        let nodes = nodes_of(&pods, &order, &bins);
        let cpus: Vec<i64> = nodes.iter().map(|n| n.get(ResourceName::Cpu) / 1000).collect();
        assert_eq!(cpus, vec![16, 2]);
    }

    fn arb_pods() -> impl Strategy<Value = Vec<PodRequest>> {
        prop::collection::vec((prop::sample::select(vec![100i64, 250, 500, 1000, 1500, 3000]), 0usize..6), 1..120)
            .prop_map(|shapes| {
                shapes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cpu, memory))| pod(i, cpu, [128 << 20, GI / 2, GI, 2 * GI, 4 * GI, 8 * GI][memory]))
                    .collect()
            })
    }

    proptest! {
        #[test]
        /// Every pod is packed exactly once, nodes come one after another, and each node's pods fit a type.
        fn node_by_node_packing_places_every_pod_once_in_nodes_that_hold_them(pods in arb_pods()) {
            let types = [
                supply(0, 0.1, 2000, 4 * GI, 29),
                supply(1, 0.4, 8000, 16 * GI, 58),
                supply(2, 0.5, 8000, 64 * GI, 58),
                supply(3, 1.6, 32_000, 64 * GI, 234),
            ];
            let (order, bins) = pack_node_by_node(&pods, &types).expect("few shapes");
            let mut seen = order.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..pods.len()).collect::<Vec<_>>());
            prop_assert_eq!(bins.len(), order.len());
            prop_assert!(bins.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "{:?}", bins);
            for node in nodes_of(&pods, &order, &bins) {
                prop_assert!(types.iter().any(|t| node.fits_in(&t.allocatable)), "{} fits no type", node);
            }
        }
    }
}
