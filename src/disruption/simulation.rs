//! Where would the candidates' pods go? The pure scheduler is asked, with the candidates taken out of the cluster:
//! the pending pods first, then the candidates' pods, against the free room of every other node (for consolidation,
//! not of nodes that lost pods within `consolidateAfter`) and new nodes of the ready NodePools. Then what a
//! replacement may be: only types cheaper, by the churn guard, than what it replaces, and spot → spot only when
//! allowed and diverse enough not to fight price-capacity-optimized.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::catalog::CapacityType;
use crate::catalog::resources::Resources;
use crate::scheduling::{self, ExistingNode, NewNode, PodRequest, Prepared, SchedulingInput};

use super::model::{ManagedNode, Snapshot};

/// Karpenter's rule: a spot node is replaced by spot only when at least this many cheaper types can be offered
/// to CreateFleet, so the replacement is not just the type price-capacity-optimized would avoid.
pub const MIN_SPOT_TO_SPOT_OPTIONS: usize = 15;

/// What a simulation found room for.
#[derive(Debug, Clone, Default)]
pub struct Simulated {
    /// The new nodes the candidates' pods need (empty: they all fit elsewhere).
    pub new_nodes: Vec<NewNode>,
    /// Pending pods the plan puts on new nodes: capacity the provisioner is about to launch, which consolidation
    /// waits for rather than plans around.
    pub pending_on_new_nodes: usize,
}

/// Asks the scheduler where candidates' pods would go. The room of every node is built once per pass; a
/// simulation empties the candidates' entries (no room, no capacity against limits) and puts them back after, so
/// evaluating thousands of candidates does not copy the cluster thousands of times.
pub struct Simulator<'s> {
    snapshot: &'s Snapshot<'s>,
    existing: RefCell<Vec<ExistingNode>>,
    /// The catalog and the existing nodes' domains, worked out once for every simulation of the pass.
    prepared: Prepared<'s>,
    /// NodeClaim name → its entry in `existing`.
    index: HashMap<&'s str, usize>,
    /// Entries of `existing` not initialized yet (in-flight NodeClaims, nodes still starting), by name and index.
    uninitialized: HashSet<String>,
    uninitialized_entries: Vec<usize>,
    /// Entries of `existing` that lost pods within `consolidateAfter` (`Snapshot::settling`): no room for
    /// consolidation.
    settling: Vec<usize>,
    /// The pending pods that have a place somewhere now (those that fit nowhere are left out of every simulation).
    pending: Vec<PodRequest>,
    /// How many of them need a new node even with every node still there.
    pending_needing_new_nodes: usize,
}

impl<'s> Simulator<'s> {
    pub fn new(snapshot: &'s Snapshot<'s>) -> Self {
        let mut existing: Vec<ExistingNode> = snapshot.other_room.to_vec();
        existing.extend_from_slice(snapshot.in_flight);
        let mut uninitialized: HashSet<String> = snapshot.in_flight.iter().map(|n| n.name.clone()).collect();
        let mut uninitialized_entries: Vec<usize> = (snapshot.other_room.len()..existing.len()).collect();
        let mut index = HashMap::new();
        let mut settling = Vec::new();
        for node in snapshot.nodes {
            if snapshot.settling(node) {
                settling.push(existing.len());
            }
            let mut room = node.room.clone();
            if node.deleting {
                // Going away: no room, but still counted against its NodePool's limits.
                room.available = Resources::ZERO;
            }
            if node.initialized_at.is_none() {
                uninitialized.insert(room.name.clone());
                uninitialized_entries.push(existing.len());
            }
            index.insert(node.claim.as_str(), existing.len());
            existing.push(room);
        }
        let prepared = Prepared::of(snapshot.instance_types, snapshot.prices, snapshot.unavailable, &existing);
        let (pending, pending_needing_new_nodes) = if snapshot.pending.is_empty() {
            (Vec::new(), 0)
        } else {
            let plan = scheduling::solve_prepared(&Self::input(snapshot, snapshot.pending, &existing), &prepared);
            let nowhere: HashSet<&str> = plan.unschedulable.iter().map(|u| u.pod.as_str()).collect();
            let pending = snapshot.pending.iter().filter(|p| !nowhere.contains(p.id.as_str())).cloned().collect();
            (pending, plan.new_nodes.iter().map(|n| n.pods.len()).sum())
        };
        Self {
            snapshot,
            existing: RefCell::new(existing),
            index,
            prepared,
            uninitialized,
            uninitialized_entries,
            settling,
            pending,
            pending_needing_new_nodes,
        }
    }

    fn input<'i>(
        snapshot: &'s Snapshot<'s>,
        pods: &'i [PodRequest],
        existing: &'i [ExistingNode],
    ) -> SchedulingInput<'i>
    where
        's: 'i,
    {
        SchedulingInput {
            pods,
            nodepools: snapshot.nodepools,
            instance_types: snapshot.instance_types,
            prices: snapshot.prices,
            existing,
            daemonsets: snapshot.daemonsets,
            unavailable: snapshot.unavailable,
        }
    }

    /// Why consolidation waits this pass whatever the candidates: pending pods need new nodes even now, and the
    /// provisioner is about to launch them. None when nothing pending needs one.
    pub fn scale_out_in_progress(&self) -> Option<String> {
        (self.pending_needing_new_nodes > 0).then(|| {
            format!(
                "{} pending pods need new nodes; consolidation waits until they have them",
                self.pending_needing_new_nodes
            )
        })
    }

    /// Where the candidates' pods would go once the candidates are gone, after the pending pods have taken their
    /// room; or why some candidate's pod has nowhere to go, or would go only to capacity not initialized yet.
    pub fn simulate(&self, candidates: &[&ManagedNode]) -> Result<Simulated, String> {
        self.plan(candidates, false)
    }

    /// As `simulate`, for consolidation: nodes that lost pods within `consolidateAfter` are no place to move pods to.
    pub fn simulate_consolidation(&self, candidates: &[&ManagedNode]) -> Result<Simulated, String> {
        self.plan(candidates, true)
    }

    /// What consolidation left out of the room it counted, for a refusal a person reads; empty when nothing.
    pub fn settling_note(&self) -> String {
        if self.settling.is_empty() || !self.pending.is_empty() {
            return String::new();
        }
        format!(" ({} nodes that lost pods within consolidateAfter are not counted as room)", self.settling.len())
    }

    fn plan(&self, candidates: &[&ManagedNode], without_settling: bool) -> Result<Simulated, String> {
        let moving: Vec<&PodRequest> = candidates.iter().flat_map(|c| c.pods.iter().map(|p| &p.request)).collect();
        if moving.is_empty() {
            return Ok(Simulated::default());
        }
        let mut pods: Vec<PodRequest> = self.pending.clone();
        pods.extend(moving.iter().map(|p| (*p).clone()));
        let moving: HashSet<&str> = moving.iter().map(|p| p.id.as_str()).collect();
        let mut taken_out: Vec<usize> =
            candidates.iter().filter_map(|c| self.index.get(c.claim.as_str()).copied()).collect();
        // With pods pending, settling nodes keep their room for them (they are planned first, as the provisioner
        // will) and a candidate's pod planned onto one is refused below instead.
        let settling_out = without_settling && self.pending.is_empty();
        if settling_out {
            taken_out.extend(&self.settling);
        }
        let plan = self.solve_without(&pods, &taken_out, &[]);
        // A pending pod that finds no place now is the provisioner's to report, not a reason to keep a node.
        if let Some(stuck) = stuck_moving(&plan, &moving) {
            let note = if without_settling { self.settling_note() } else { String::new() };
            return Err(format!("pod {} would have nowhere to go: {}{note}", stuck.pod, stuck.reason));
        }
        let settling_names: HashSet<String> = if without_settling && !settling_out {
            let existing = self.existing.borrow();
            self.settling.iter().map(|&i| existing[i].name.clone()).collect()
        } else {
            HashSet::new()
        };
        let onto_launching = plan.existing_placements.iter().find_map(|(node, placed)| {
            let pod = placed.iter().find(|p| moving.contains(p.as_str()))?;
            self.uninitialized
                .contains(node)
                .then(|| format!("pod {pod} would go to {node}, which is not initialized yet"))
        });
        let plan = match onto_launching {
            None => plan,
            // Beyond Karpenter, which waits here: the same pods may fit on initialized nodes as well (the solver
            // may have filled the capacity still launching first), and then the move need not wait for it. Only
            // with nothing pending, for whom that capacity may have been launched.
            Some(refusal) if self.pending.is_empty() => {
                let elsewhere = self.solve_without(&pods, &taken_out, &self.uninitialized_entries);
                if !no_worse(&elsewhere, &plan, &moving) {
                    return Err(refusal);
                }
                elsewhere
            }
            Some(refusal) => return Err(refusal),
        };
        for (node, placed) in &plan.existing_placements {
            let Some(pod) = placed.iter().find(|p| moving.contains(p.as_str())) else { continue };
            if settling_names.contains(node) {
                return Err(format!("pod {pod} would go to {node}, which lost pods within consolidateAfter"));
            }
        }
        let (new_nodes, pending_only): (Vec<NewNode>, Vec<NewNode>) =
            plan.new_nodes.into_iter().partition(|n| carries_moving(n, &moving));
        let pending_on_new_nodes = pending_only.iter().map(|n| n.pods.len()).sum::<usize>()
            + new_nodes.iter().flat_map(|n| &n.pods).filter(|p| !moving.contains(p.as_str())).count();
        Ok(Simulated { new_nodes, pending_on_new_nodes })
    }

    /// The scheduler's plan for `pods` with the entries `taken_out` emptied (no room, no capacity against limits)
    /// and those of `no_room` without room (their capacity still counts against their NodePool's limits); put back
    /// after.
    fn solve_without(&self, pods: &[PodRequest], taken_out: &[usize], no_room: &[usize]) -> scheduling::Plan {
        let mut existing = self.existing.borrow_mut();
        let mut saved = Vec::with_capacity(taken_out.len() + no_room.len());
        for &i in no_room {
            saved.push((i, existing[i].available, existing[i].capacity));
            existing[i].available = Resources::ZERO;
        }
        for &i in taken_out {
            saved.push((i, existing[i].available, existing[i].capacity));
            existing[i].available = Resources::ZERO;
            existing[i].capacity = Resources::ZERO;
        }
        let plan = scheduling::solve_prepared(&Self::input(self.snapshot, pods, &existing), &self.prepared);
        // In reverse: an entry taken out twice (a candidate that is settling too) gets its own room back last.
        for (i, available, capacity) in saved.into_iter().rev() {
            existing[i].available = available;
            existing[i].capacity = capacity;
        }
        plan
    }
}

/// Whether `elsewhere` places every moving pod and needs no more new nodes for them than `plan` did.
fn no_worse(elsewhere: &scheduling::Plan, plan: &scheduling::Plan, moving: &HashSet<&str>) -> bool {
    let new_for_moving = |p: &scheduling::Plan| p.new_nodes.iter().filter(|n| carries_moving(n, moving)).count();
    stuck_moving(elsewhere, moving).is_none() && new_for_moving(elsewhere) <= new_for_moving(plan)
}

/// The first of the moving pods `plan` found no place for.
fn stuck_moving<'p>(plan: &'p scheduling::Plan, moving: &HashSet<&str>) -> Option<&'p scheduling::UnschedulablePod> {
    plan.unschedulable.iter().find(|u| moving.contains(u.pod.as_str()))
}

/// Whether a new node of a plan carries any of the moving pods.
fn carries_moving(node: &NewNode, moving: &HashSet<&str>) -> bool {
    node.pods.iter().any(|p| moving.contains(p.as_str()))
}

/// The cheapest price of `instance_type` in any of `zones` with any of `capacity_types`.
fn option_price(
    snapshot: &Snapshot<'_>,
    instance_type: &str,
    zones: &[String],
    capacity_types: &[CapacityType],
) -> Option<f64> {
    let offered = snapshot.instance_types.iter().find(|t| t.name == instance_type)?;
    let mut best: Option<f64> = None;
    for zone in zones.iter().filter(|z| offered.zones.contains(z)) {
        for &capacity_type in capacity_types {
            let key = crate::catalog::OfferingKey {
                instance_type: instance_type.to_string(),
                zone: zone.clone(),
                capacity_type,
            };
            if snapshot.unavailable.contains(&key) {
                continue;
            }
            let price = match capacity_type {
                CapacityType::OnDemand => snapshot.prices.on_demand(instance_type),
                CapacityType::Spot => snapshot.prices.spot(instance_type, zone),
            };
            if let Some(price) = price {
                best = Some(best.map_or(price, |b: f64| b.min(price)));
            }
        }
    }
    best
}

/// Narrows a planned replacement to what consolidation may launch for candidates costing `candidates_price`:
/// instance types at least `min_savings` cheaper; and spot candidates are replaced by a node that may be spot
/// only with `--spot-to-spot-consolidation` (as Karpenter: not by forcing on-demand, which a later pass would
/// replace by spot again). Returns the replacement with its options cheapest first, or why there is none.
pub fn cheaper_replacement(
    snapshot: &Snapshot<'_>,
    candidates: &[&ManagedNode],
    mut replacement: NewNode,
) -> Result<NewNode, String> {
    let candidates_price: f64 = candidates.iter().map(|c| c.price).sum();
    let all_spot = candidates.iter().all(|c| c.capacity_type == CapacityType::Spot);
    if all_spot && !snapshot.settings.spot_to_spot && replacement.capacity_types.contains(&CapacityType::Spot) {
        return Err("replacing a spot node with a spot node is off (--spot-to-spot-consolidation)".into());
    }
    let ceiling = candidates_price * (1.0 - snapshot.settings.min_savings);
    let mut options: Vec<(String, f64)> = replacement
        .instance_type_options
        .iter()
        .filter_map(|t| {
            let price = option_price(snapshot, t, &replacement.zones, &replacement.capacity_types)?;
            (price < ceiling).then(|| (t.clone(), price))
        })
        .collect();
    options.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    if options.is_empty() {
        return Err(format!(
            "no replacement costs at most {:.0}% of ${candidates_price:.4}/h",
            (1.0 - snapshot.settings.min_savings) * 100.0
        ));
    }
    if all_spot && replacement.capacity_types.contains(&CapacityType::Spot) && options.len() < MIN_SPOT_TO_SPOT_OPTIONS
    {
        return Err(format!(
            "only {} cheaper instance types for a spot replacement (at least {MIN_SPOT_TO_SPOT_OPTIONS} needed)",
            options.len()
        ));
    }
    replacement.instance_type = options[0].0.clone();
    replacement.price_per_hour = options[0].1;
    replacement.instance_type_options = options.into_iter().map(|(t, _)| t).collect();
    Ok(replacement)
}

/// Karpenter's rule for a replacement of several nodes (`filterOutSameInstanceType`): where it could be one of
/// the candidates' own types, it must cost less than the cheapest candidate of that type; otherwise keeping that
/// candidate and deleting the others saves as much and moves fewer pods.
pub fn without_candidates_own_types(
    snapshot: &Snapshot<'_>,
    candidates: &[&ManagedNode],
    mut replacement: NewNode,
) -> Result<NewNode, String> {
    let mut cheapest_of_type: HashMap<&str, (f64, &str)> = HashMap::new();
    for candidate in candidates {
        let entry = cheapest_of_type.entry(candidate.instance_type.as_str()).or_insert((f64::INFINITY, ""));
        if candidate.price < entry.0 {
            *entry = (candidate.price, candidate.claim.as_str());
        }
    }
    let Some((ceiling, kept)) = replacement
        .instance_type_options
        .iter()
        .filter_map(|t| cheapest_of_type.get(t.as_str()).copied())
        .min_by(|a, b| a.0.total_cmp(&b.0))
    else {
        return Ok(replacement);
    };
    let options: Vec<(String, f64)> = replacement
        .instance_type_options
        .iter()
        .filter_map(|t| Some((t.clone(), option_price(snapshot, t, &replacement.zones, &replacement.capacity_types)?)))
        .filter(|(_, price)| *price < ceiling)
        .collect();
    let Some((cheapest, price)) = options.first().cloned() else {
        return Err(format!(
            "the replacement would cost as much as {kept} (${ceiling:.4}/h), which could stay while the others go"
        ));
    };
    replacement.instance_type = cheapest;
    replacement.price_per_hour = price;
    replacement.instance_type_options = options.into_iter().map(|(t, _)| t).collect();
    Ok(replacement)
}
