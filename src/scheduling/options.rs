//! The instance-type options of a node: what a NodePool allows, what a pod's requirements leave of it, and how
//! a node's options narrow as pods join. Bitsets over the catalog keep this cheap.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::bitset::BitSet;
use super::model::{NodePoolSpec, tolerates_all};
use super::requirements::{Operator, Requirement};
use super::solver::SchedulingInput;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::pricing::PriceTable;
use crate::catalog::resources::{ResourceName, Resources};
use crate::catalog::{CapacityType, OfferingKey, offerings};
use crate::names::{CAPACITY_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};

/// Capacity types as bits: spot = 1, on-demand = 2.
pub(super) const SPOT: u8 = 1;
pub(super) const ON_DEMAND: u8 = 2;

pub(super) fn capacity_type_bit(ct: CapacityType) -> u8 {
    match ct {
        CapacityType::Spot => SPOT,
        CapacityType::OnDemand => ON_DEMAND,
    }
}

/// The catalog, prepared once per solve.
pub(super) struct Catalog<'a> {
    pub(super) types: &'a [InstanceTypeInfo],
    pub(super) labels: Vec<BTreeMap<&'static str, String>>,
    /// Per type: (zone bits where spot is offered, zone bits where on-demand is).
    pub(super) offered_zones: Vec<[u64; 2]>,
    /// Per type and zone: cheapest price per capacity type.
    pub(super) prices: Vec<Vec<(usize, CapacityType, f64)>>,
    pub(super) zones: Vec<String>,
}

impl<'a> Catalog<'a> {
    pub(super) fn new(
        types: &'a [InstanceTypeInfo],
        price_table: &PriceTable,
        unavailable: &HashSet<OfferingKey>,
    ) -> Self {
        let mut zones: Vec<String> = types.iter().flat_map(|t| t.zones.iter().cloned()).collect();
        zones.sort();
        zones.dedup();
        zones.truncate(64);
        let zone_index: HashMap<&str, usize> = zones.iter().enumerate().map(|(i, z)| (z.as_str(), i)).collect();
        let mut offered_zones = Vec::with_capacity(types.len());
        let mut prices = Vec::with_capacity(types.len());
        for t in types {
            let mut bits = [0u64; 2];
            let mut type_prices = Vec::new();
            for offering in offerings(t, price_table) {
                if !unavailable.is_empty()
                    && unavailable.contains(&OfferingKey {
                        instance_type: t.name.clone(),
                        zone: offering.zone.clone(),
                        capacity_type: offering.capacity_type,
                    })
                {
                    continue;
                }
                let Some(&zone) = zone_index.get(offering.zone.as_str()) else {
                    continue;
                };
                bits[usize::from(offering.capacity_type == CapacityType::OnDemand)] |= 1 << zone;
                type_prices.push((zone, offering.capacity_type, offering.price));
            }
            offered_zones.push(bits);
            prices.push(type_prices);
        }
        let labels = types.iter().map(InstanceTypeInfo::labels).collect();
        Self { types, labels, offered_zones, prices, zones }
    }

    pub(super) fn zone_index(&self, zone: &str) -> Option<usize> {
        self.zones.iter().position(|z| z == zone)
    }

    /// Bits of every zone the catalog knows.
    pub(super) fn all_zones(&self) -> u64 {
        if self.zones.len() >= 64 { u64::MAX } else { (1u64 << self.zones.len()) - 1 }
    }

    /// Zones where `t` is offered with one of `cts`.
    pub(super) fn offered_in(&self, t: usize, cts: u8) -> u64 {
        let [spot, on_demand] = self.offered_zones[t];
        (if cts & SPOT != 0 { spot } else { 0 }) | (if cts & ON_DEMAND != 0 { on_demand } else { 0 })
    }

    pub(super) fn viable(&self, t: usize, zones: u64, cts: u8) -> bool {
        let [spot, on_demand] = self.offered_zones[t];
        (cts & SPOT != 0 && spot & zones != 0) || (cts & ON_DEMAND != 0 && on_demand & zones != 0)
    }

    /// The cheapest offering of `t` within `zones` × `cts`; spot wins a tie.
    pub(super) fn cheapest(&self, t: usize, zones: u64, cts: u8) -> Option<(usize, CapacityType, f64)> {
        self.prices[t]
            .iter()
            .filter(|(zone, ct, _)| zones & (1 << zone) != 0 && cts & capacity_type_bit(*ct) != 0)
            .copied()
            .min_by(|a, b| a.2.total_cmp(&b.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)))
    }
}

/// A NodePool with its per-type allocatable (DaemonSet overhead taken off) and what its requirements allow.
pub(super) struct Pool<'a> {
    pub(super) spec: &'a NodePoolSpec,
    pub(super) allocatable: Vec<Resources>,
    pub(super) capacity: Vec<Resources>,
    /// Types its requirements allow, that are offered somewhere it allows, and that fit its DaemonSets.
    pub(super) base: Compat,
    pub(super) remaining_limits: Option<Resources>,
}

/// What a node of a pool may still become, given a set of requirements.
#[derive(Debug, Clone)]
pub(super) struct Compat {
    pub(super) types: BitSet,
    pub(super) zones: u64,
    pub(super) cts: u8,
    /// Labels not of the instance type (the pool's own), with the values still possible.
    pub(super) custom: BTreeMap<String, Vec<String>>,
    /// Of `types`, those within `EFFICIENCY_SLACK` of the best price per resource; empty where not computed.
    pub(super) efficient: BitSet,
}

/// How much more per resource than the best type a type may cost and still be one a new node grows into.
pub(super) const EFFICIENCY_SLACK: f64 = 0.15;

pub(super) fn prepare_pool<'a>(spec: &'a NodePoolSpec, catalog: &Catalog, input: &SchedulingInput) -> Pool<'a> {
    let n = catalog.types.len();
    // Each node is one of `nodes`, which the pool's limits may count.
    let capacity: Vec<Resources> = catalog
        .types
        .iter()
        .map(|t| t.capacity_with(spec.max_pods, &spec.overhead, spec.ephemeral_storage).with(ResourceName::Nodes, 1))
        .collect();
    let mut allocatable: Vec<Resources> = catalog
        .types
        .iter()
        .map(|t| t.allocatable_with(spec.max_pods, &spec.overhead, spec.ephemeral_storage))
        .collect();

    let mut custom: BTreeMap<String, Vec<String>> =
        spec.labels.iter().map(|(k, v)| (k.clone(), vec![v.clone()])).collect();
    for r in &spec.requirements {
        if r.operator == Operator::In && !is_catalog_key(&r.key, catalog) {
            custom.entry(r.key.clone()).or_insert_with(|| r.values.clone());
        }
    }
    custom.insert(NODEPOOL_LABEL.to_string(), vec![spec.name.clone()]);
    let unconstrained =
        Compat { types: BitSet::full(n), zones: u64::MAX, cts: SPOT | ON_DEMAND, custom, efficient: BitSet::empty(n) };
    let mut base = apply_requirements(&unconstrained, &spec.requirements, catalog)
        .unwrap_or(Compat { types: BitSet::empty(n), ..unconstrained });

    // DaemonSets that will run on the pool's nodes take their share of every type they fit.
    for ds in input.daemonsets {
        // Startup taints are meant to be tolerated or removed; only the pool's taints keep a DaemonSet off.
        if !tolerates_all(&ds.tolerations, &spec.taints) {
            continue;
        }
        if let Some(ds_compat) = apply_requirements(&base, &ds.requirements, catalog) {
            for t in ds_compat.types.iter() {
                allocatable[t] = allocatable[t] - ds.requests;
            }
        }
    }
    let zones = base.zones;
    let cts = base.cts;
    base.types.retain(|t| catalog.viable(t, zones, cts) && !allocatable[t].is_zero());
    Pool { spec, allocatable, capacity, base, remaining_limits: spec.limits.map(|l| l - existing_usage(spec, input)) }
}

pub(super) fn existing_usage(spec: &NodePoolSpec, input: &SchedulingInput) -> Resources {
    input
        .existing
        .iter()
        .filter(|n| n.nodepool.as_deref() == Some(spec.name.as_str()))
        .fold(Resources::ZERO, |sum, n| sum + n.capacity.with(ResourceName::Nodes, 1))
}

/// Keys whose value comes from the instance type or its offering.
pub(super) fn is_catalog_key(key: &str, catalog: &Catalog) -> bool {
    key == ZONE_LABEL || key == CAPACITY_TYPE_LABEL || catalog.labels.iter().any(|labels| labels.contains_key(key))
}

/// Narrows `start` by `requirements`; None when nothing is left.
pub(super) fn apply_requirements(start: &Compat, requirements: &[Requirement], catalog: &Catalog) -> Option<Compat> {
    let mut compat = start.clone();
    for r in requirements {
        if r.key == ZONE_LABEL {
            for (i, zone) in catalog.zones.iter().enumerate() {
                if !r.matches(Some(zone)) {
                    compat.zones &= !(1 << i);
                }
            }
        } else if r.key == CAPACITY_TYPE_LABEL {
            for ct in [CapacityType::Spot, CapacityType::OnDemand] {
                if !r.matches(Some(ct.as_str())) {
                    compat.cts &= !capacity_type_bit(ct);
                }
            }
        } else if let Some(values) = compat.custom.get_mut(&r.key) {
            values.retain(|v| r.matches(Some(v)));
            if values.is_empty() {
                return None;
            }
        } else {
            compat.types.retain(|t| r.matches(catalog.labels[t].get(r.key.as_str()).map(String::as_str)));
        }
    }
    let (zones, cts) = (compat.zones, compat.cts);
    if zones == 0 || cts == 0 {
        return None;
    }
    compat.types.retain(|t| catalog.viable(t, zones, cts));
    // Only zones where some remaining type is offered are domains: topology spreads count over these.
    compat.zones &= compat.types.iter().fold(0, |offered, t| offered | catalog.offered_in(t, cts));
    (!compat.types.is_empty()).then_some(compat)
}

pub(super) fn cached_compat<'c>(
    cache: &'c mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
    pool_index: usize,
    requirements: &[Requirement],
    pool: &Pool,
    catalog: &Catalog,
) -> Option<&'c Compat> {
    cache
        .entry((pool_index, requirements.to_vec()))
        .or_insert_with(|| {
            let mut compat = apply_requirements(&pool.base, requirements, catalog)?;
            compat.efficient = efficient_types(&compat, pool, catalog);
            Some(compat)
        })
        .as_ref()
}

/// The types whose price per unit of what they hold is within `EFFICIENCY_SLACK` of the best among `compat`'s.
/// A type's worth is its allocatable CPU or memory (whichever is larger) at the best price per unit of each.
fn efficient_types(compat: &Compat, pool: &Pool, catalog: &Catalog) -> BitSet {
    let price = |t: usize| catalog.cheapest(t, compat.zones, compat.cts).map(|(_, _, p)| p);
    let per_unit = |t: usize, resource: ResourceName| {
        let amount = pool.allocatable[t].get(resource);
        price(t).filter(|_| amount > 0).map(|p| p / amount as f64)
    };
    let best = |resource| compat.types.iter().filter_map(|t| per_unit(t, resource)).fold(f64::INFINITY, f64::min);
    let (best_cpu, best_memory) = (best(ResourceName::Cpu), best(ResourceName::Memory));
    let cost_ratio = |t: usize| {
        let worth = (pool.allocatable[t].get(ResourceName::Cpu) as f64 * best_cpu)
            .max(pool.allocatable[t].get(ResourceName::Memory) as f64 * best_memory);
        price(t).map(|p| p / worth)
    };
    let best_ratio = compat.types.iter().filter_map(cost_ratio).fold(f64::INFINITY, f64::min);
    let mut efficient = compat.types.clone();
    efficient.retain(|t| cost_ratio(t).is_some_and(|r| r <= best_ratio * (1.0 + EFFICIENCY_SLACK)));
    efficient
}

/// `node` ∧ `pod` within `zone_mask` × `ct_mask`, keeping only types that hold `used` and keep the pool's
/// `minValues` as far as `node` keeps them (all of it, unless a BestEffort pool relaxed it for `node`).
pub(super) fn narrow(
    node: &Compat,
    pod: &Compat,
    used: &Resources,
    zone_mask: u64,
    ct_mask: u8,
    pool: &Pool,
    catalog: &Catalog,
) -> Option<Compat> {
    narrow_ignoring_min_values(node, pod, used, zone_mask, ct_mask, pool, catalog)
        .filter(|narrowed| min_values_kept(&narrowed.types, &node.types, pool, catalog))
}

/// `narrow` without the `minValues` check: where a BestEffort pool relaxes them.
pub(super) fn narrow_ignoring_min_values(
    node: &Compat,
    pod: &Compat,
    used: &Resources,
    zone_mask: u64,
    ct_mask: u8,
    pool: &Pool,
    catalog: &Catalog,
) -> Option<Compat> {
    let zones = node.zones & pod.zones & zone_mask;
    let cts = node.cts & pod.cts & ct_mask;
    if zones == 0 || cts == 0 {
        return None;
    }
    let mut custom = node.custom.clone();
    for (key, values) in &mut custom {
        if let Some(allowed) = pod.custom.get(key) {
            values.retain(|v| allowed.contains(v));
            if values.is_empty() {
                return None;
            }
        }
    }
    let mut types = node.types.and(&pod.types);
    types.retain(|t| used.fits_in(&pool.allocatable[t]) && catalog.viable(t, zones, cts));
    if types.is_empty() {
        return None;
    }
    Some(Compat { efficient: BitSet::empty(types.len_bits()), types, zones, cts, custom })
}

/// Every `minValues` of the pool holds among `types`.
pub(super) fn min_values_hold(types: &BitSet, pool: &Pool, catalog: &Catalog) -> bool {
    pool.spec
        .requirements
        .iter()
        .all(|r| r.min_values.is_none_or(|min| distinct_values(types, &r.key, catalog) >= min as usize))
}

/// Narrowing `before` to `after` leaves every `minValues` of the pool as met as it was: met, or (relaxed) no
/// fewer distinct values than before.
fn min_values_kept(after: &BitSet, before: &BitSet, pool: &Pool, catalog: &Catalog) -> bool {
    pool.spec.requirements.iter().all(|r| {
        let Some(min) = r.min_values else { return true };
        let left = distinct_values(after, &r.key, catalog);
        left >= min as usize || left >= distinct_values(before, &r.key, catalog)
    })
}

/// How many distinct values of `key` the types carry.
pub(super) fn distinct_values(types: &BitSet, key: &str, catalog: &Catalog) -> usize {
    let mut values: Vec<&str> = types.iter().filter_map(|t| catalog.labels[t].get(key).map(String::as_str)).collect();
    values.sort_unstable();
    values.dedup();
    values.len()
}

pub(super) fn max_allocatable(types: &BitSet, pool: &Pool) -> Resources {
    types.iter().fold(Resources::ZERO, |max, t| max.max(&pool.allocatable[t]))
}

pub(super) fn max_capacity(types: &BitSet, pool: &Pool) -> Resources {
    types.iter().fold(Resources::ZERO, |max, t| max.max(&pool.capacity[t]))
}
