//! One disruption pass over a snapshot: which nodes may go, and the one command to carry out. Methods run in
//! Karpenter's order — drift, emptiness, multi-node then single-node consolidation — and the first that finds
//! something wins; every node a method looked at and left alone is reported with why.

use std::collections::BTreeMap;

use super::budgets::allowed_disruptions;
use super::model::{Blocked, Command, Decision, ManagedNode, Method, Policy, Reason, Snapshot};
use super::simulation::{Simulator, cheaper_replacement};

/// Balanced consolidation approves an action whose savings share is at least this fraction of its disruption
/// share (Karpenter 1.14: 1/k with k = 2).
pub const BALANCED_MIN_SCORE: f64 = 0.5;

/// Budgets left in this pass, per NodePool and reason.
pub(super) struct Allowance(BTreeMap<(String, Reason), usize>);

impl Allowance {
    pub(super) fn left(&self, pool: &str, reason: Reason) -> usize {
        self.0.get(&(pool.to_string(), reason)).copied().unwrap_or(0)
    }
}

pub(super) fn allowance(snapshot: &Snapshot<'_>) -> Allowance {
    let totals = nodes_by_pool(snapshot);
    let mut allowed = BTreeMap::new();
    for pool in snapshot.pools {
        let (total, disrupting) = totals.get(pool.name.as_str()).copied().unwrap_or_default();
        for reason in Reason::ALL {
            let left = allowed_disruptions(&pool.budgets, reason, total, disrupting, snapshot.now);
            allowed.insert((pool.name.clone(), reason), left);
        }
    }
    Allowance(allowed)
}

/// Per NodePool: its nodes, and those of them counted against its budgets (being deleted or not ready).
fn nodes_by_pool<'a>(snapshot: &Snapshot<'a>) -> BTreeMap<&'a str, (usize, usize)> {
    let mut totals: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for node in snapshot.nodes {
        let (total, disrupting) = totals.entry(node.nodepool.as_str()).or_default();
        *total += 1;
        if node.deleting || !node.ready {
            *disrupting += 1;
        }
    }
    totals
}

/// Why this node may not be disrupted voluntarily by any method; None when it may. Nodes still starting or
/// already going are skipped without a word (`Err(None)`).
pub(super) fn disruptable(node: &ManagedNode) -> Result<(), Option<String>> {
    if node.deleting || node.initialized_at.is_none() {
        return Err(None);
    }
    if node.nominated {
        return Err(Some("pods were just planned onto it".into()));
    }
    if node.do_not_disrupt {
        return Err(Some("the node is annotated karpenter.sh/do-not-disrupt".into()));
    }
    if let Some((pod, why)) = node.pods.iter().find_map(|p| Some((&p.request.id, p.blocker.as_ref()?))) {
        return Err(Some(format!("pod {pod} cannot be moved: {why}")));
    }
    Ok(())
}

/// Whether `consolidateAfter` has passed since the node's last pod event (or its initialization).
pub fn is_consolidatable(snapshot: &Snapshot<'_>, node: &ManagedNode) -> bool {
    let Some(pool) = snapshot.pool(&node.nodepool) else { return false };
    let Some(after) = pool.consolidate_after else { return false };
    let Some(quiet_since) = node.quiet_since() else { return false };
    let Ok(after) = jiff::SignedDuration::try_from(after) else { return false };
    quiet_since.checked_add(after).is_ok_and(|t| t <= snapshot.now)
}

/// One method: spends budget from the allowance, reports what it left alone, maybe finds a command.
type MethodFn<'a> = dyn Fn(&mut Allowance, &mut Vec<Blocked>, &mut Vec<Method>) -> Option<Command> + 'a;

/// Runs every method in order; returns the first command found.
pub fn decide(snapshot: &Snapshot<'_>) -> Decision {
    let mut allowance = allowance(snapshot);
    let totals = nodes_by_pool(snapshot);
    let consuming = snapshot.pools.iter().flat_map(|pool| {
        let disrupting = totals.get(pool.name.as_str()).map_or(0, |(_, disrupting)| *disrupting);
        Reason::ALL.into_iter().map(move |reason| (pool.name.clone(), reason, disrupting))
    });
    let mut decision = Decision {
        allowed: allowance.0.iter().map(|((pool, reason), n)| (pool.clone(), *reason, *n)).collect(),
        consuming: consuming.collect(),
        ..Decision::default()
    };
    let mut disruptable_nodes: Vec<&ManagedNode> = Vec::new();
    for node in snapshot.nodes {
        match disruptable(node) {
            Ok(()) => disruptable_nodes.push(node),
            Err(Some(reason)) if node.drifted.is_some() || is_consolidatable(snapshot, node) => {
                decision.blocked.push(Blocked { claim: node.claim.clone(), reason });
            }
            Err(_) => {}
        }
    }
    let drifted: Vec<&ManagedNode> = disruptable_nodes.iter().copied().filter(|n| n.drifted.is_some()).collect();
    let consolidatable: Vec<&ManagedNode> =
        disruptable_nodes.iter().copied().filter(|n| is_consolidatable(snapshot, n)).collect();
    let empty: Vec<&ManagedNode> = consolidatable.iter().copied().filter(|n| n.pods.is_empty()).collect();
    let underutilized: Vec<&ManagedNode> = consolidatable
        .iter()
        .copied()
        .filter(|n| !n.pods.is_empty())
        .filter(|n| snapshot.pool(&n.nodepool).is_some_and(|p| p.policy != Policy::WhenEmpty))
        .collect();
    decision.eligible = vec![
        (Reason::Drifted, drifted.len()),
        (Reason::Empty, empty.len()),
        (Reason::Underutilized, underutilized.len()),
    ];

    let simulator = Simulator::new(snapshot);
    let methods: [(Method, &MethodFn); 4] = [
        (Method::Drift, &|a, b, _| drift(&simulator, &drifted, a, b)),
        (Method::Emptiness, &|a, b, _| emptiness(&empty, a, b)),
        (Method::MultiNodeConsolidation, &|a, _, t| multi_node(snapshot, &simulator, &underutilized, a, t)),
        (Method::SingleNodeConsolidation, &|a, b, t| single_node(snapshot, &simulator, &underutilized, a, b, t)),
    ];
    for (name, method) in methods {
        let started = std::time::Instant::now();
        let command = method(&mut allowance, &mut decision.blocked, &mut decision.timed_out);
        decision.evaluated.push((name, started.elapsed()));
        if let Some(command) = command {
            decision.command = Some(command);
            break;
        }
    }
    decision
}

/// Takes, in order, the nodes whose pool's budget for `reason` still has room, spending it; the others are
/// reported as blocked by the budget.
fn within_budget<'a>(
    nodes: &[&'a ManagedNode],
    reason: Reason,
    allowance: &mut Allowance,
    blocked: &mut Vec<Blocked>,
) -> Vec<&'a ManagedNode> {
    let mut taken = Vec::new();
    for node in nodes {
        let left = allowance.0.entry((node.nodepool.clone(), reason)).or_insert(0);
        if *left == 0 {
            blocked.push(Blocked { claim: node.claim.clone(), reason: budget_exhausted(&node.nodepool, reason) });
            continue;
        }
        *left -= 1;
        taken.push(*node);
    }
    taken
}

/// What a node held back by its pool's budget is told.
pub(super) fn budget_exhausted(pool: &str, reason: Reason) -> String {
    format!("the disruption budget of NodePool {pool} allows no more {} disruptions now", reason.as_str())
}

fn price_of(nodes: &[&ManagedNode]) -> f64 {
    nodes.iter().map(|n| n.price).sum()
}

pub(super) fn delete(method: Method, reason: Reason, nodes: &[&ManagedNode]) -> Command {
    Command {
        method,
        reason,
        candidates: nodes.iter().map(|n| n.claim.clone()).collect(),
        replacements: Vec::new(),
        candidates_price: price_of(nodes),
        replacements_price: 0.0,
    }
}

/// Drifted nodes are replaced whatever the price: empty ones deleted together, then one at a time with whatever
/// new nodes its pods need.
fn drift(
    simulator: &Simulator<'_>,
    drifted: &[&ManagedNode],
    allowance: &mut Allowance,
    blocked: &mut Vec<Blocked>,
) -> Option<Command> {
    let (empty, busy): (Vec<&ManagedNode>, Vec<&ManagedNode>) = drifted.iter().partition(|n| n.pods.is_empty());
    let empty = within_budget(&empty, Reason::Drifted, allowance, blocked);
    if !empty.is_empty() {
        return Some(delete(Method::Drift, Reason::Drifted, &empty));
    }
    for node in busy {
        if allowance.left(&node.nodepool, Reason::Drifted) == 0 {
            within_budget(&[node], Reason::Drifted, allowance, blocked);
            continue;
        }
        match replace_drifted(simulator, node) {
            Ok(command) => {
                within_budget(&[node], Reason::Drifted, allowance, blocked);
                return Some(command);
            }
            Err(why) => blocked.push(Blocked { claim: node.claim.clone(), reason: why }),
        }
    }
    None
}

/// A drifted node with pods: replaced by whatever new nodes its pods need, or why it cannot be.
pub(super) fn replace_drifted(simulator: &Simulator<'_>, node: &ManagedNode) -> Result<Command, String> {
    // New nodes only pending pods need are the provisioner's to launch, not this command's.
    let replacements = simulator.simulate(&[node]).map_err(|why| format!("drifted, but {why}"))?.new_nodes;
    let replacements_price = replacements.iter().map(|r| r.price_per_hour).sum();
    Ok(Command {
        method: Method::Drift,
        reason: Reason::Drifted,
        candidates: vec![node.claim.clone()],
        replacements,
        candidates_price: node.price,
        replacements_price,
    })
}

fn emptiness(empty: &[&ManagedNode], allowance: &mut Allowance, blocked: &mut Vec<Blocked>) -> Option<Command> {
    let taken = within_budget(empty, Reason::Empty, allowance, blocked);
    (!taken.is_empty()).then(|| delete(Method::Emptiness, Reason::Empty, &taken))
}

/// What evicting a node's pods costs, Karpenter's way: the sum of its pods' eviction costs.
fn disruption_cost(node: &ManagedNode) -> f64 {
    node.pods.iter().map(|p| p.eviction_cost).sum()
}

/// Candidates for consolidation, cheapest to disrupt first (ties: the dearer node first, then by name).
fn ordered<'a>(nodes: &[&'a ManagedNode]) -> Vec<&'a ManagedNode> {
    let mut nodes = nodes.to_vec();
    nodes.sort_by(|a, b| {
        disruption_cost(a)
            .total_cmp(&disruption_cost(b))
            .then(b.price.total_cmp(&a.price))
            .then_with(|| a.claim.cmp(&b.claim))
    });
    nodes
}

pub(super) const RECENTLY_REPLACED: &str = "it replaced other nodes recently; held for consolidateAfter";

/// Whether a replacement launched by consolidation is still too young to be consolidated itself: it is held for
/// its pool's `consolidateAfter` from its creation, so consolidation never chases its own tail.
pub(super) fn recently_replaced(snapshot: &Snapshot<'_>, node: &ManagedNode) -> bool {
    if !node.consolidation_replacement {
        return false;
    }
    let after = snapshot.pool(&node.nodepool).and_then(|p| p.consolidate_after).unwrap_or_default();
    let Ok(after) = jiff::SignedDuration::try_from(after) else { return true };
    node.created.checked_add(after).is_ok_and(|t| t > snapshot.now)
}

/// Checks a consolidation of `candidates`: all their pods fit elsewhere plus at most one new node that is
/// cheaper by the churn guard, and no pending pod loses the room it would have had; Balanced pools also weigh
/// savings against disruption.
pub(super) fn consolidate(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    method: Method,
    candidates: &[&ManagedNode],
) -> Result<Command, String> {
    if let Some(why) = simulator.scale_out_in_progress() {
        return Err(why);
    }
    let simulated = simulator.simulate(candidates)?;
    if simulated.pending_on_new_nodes > 0 {
        return Err(format!(
            "{} pending pods would then need a new node (they have room while it stays)",
            simulated.pending_on_new_nodes
        ));
    }
    let mut new_nodes = simulated.new_nodes;
    if new_nodes.len() > 1 {
        return Err(format!("its pods would need {} new nodes", new_nodes.len()));
    }
    let candidates_price = price_of(candidates);
    let replacement = match new_nodes.pop() {
        Some(node) => Some(cheaper_replacement(snapshot, candidates, node)?),
        None => None,
    };
    let replacements_price = replacement.as_ref().map_or(0.0, |r| r.price_per_hour);
    balanced_approves(snapshot, candidates, candidates_price - replacements_price)?;
    Ok(Command {
        method,
        reason: Reason::Underutilized,
        candidates: candidates.iter().map(|n| n.claim.clone()).collect(),
        replacements: replacement.into_iter().collect(),
        candidates_price,
        replacements_price,
    })
}

/// Karpenter 1.14's Balanced policy: score = (savings / pool cost) / (disruption cost / pool disruption cost),
/// approved at `BALANCED_MIN_SCORE` or more. Pools of other policies always approve.
fn balanced_approves(snapshot: &Snapshot<'_>, candidates: &[&ManagedNode], savings: f64) -> Result<(), String> {
    let balanced = |pool: &str| snapshot.pool(pool).is_some_and(|p| p.policy == Policy::Balanced);
    if !candidates.iter().any(|c| balanced(&c.nodepool)) {
        return Ok(());
    }
    let in_pools = |n: &&ManagedNode| candidates.iter().any(|c| c.nodepool == n.nodepool);
    let pool_nodes: Vec<&ManagedNode> = snapshot.nodes.iter().filter(in_pools).collect();
    let pool_cost = price_of(&pool_nodes);
    let pool_disruption: f64 = pool_nodes.iter().map(|n| disruption_cost(n)).sum();
    let disruption: f64 = candidates.iter().map(|n| disruption_cost(n)).sum();
    if pool_cost <= 0.0 || pool_disruption <= 0.0 || disruption <= 0.0 {
        return Ok(());
    }
    let score = (savings / pool_cost) / (disruption / pool_disruption);
    if score >= BALANCED_MIN_SCORE {
        Ok(())
    } else {
        Err(format!(
            "Balanced: saving ${savings:.4}/h is not worth evicting {disruption:.0} pods' worth (score {score:.2} < {BALANCED_MIN_SCORE})"
        ))
    }
}

/// Several nodes at once: the longest prefix of the ordered candidates (at least two, within budgets) whose pods
/// fit elsewhere plus at most one cheaper new node, found by binary search as Karpenter does.
fn multi_node(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    underutilized: &[&ManagedNode],
    allowance: &mut Allowance,
    timed_out: &mut Vec<Method>,
) -> Option<Command> {
    let started = std::time::Instant::now();
    let eligible: Vec<&ManagedNode> =
        ordered(underutilized).into_iter().filter(|n| !recently_replaced(snapshot, n)).collect();
    // Budgets first, on a copy: a pass that finds nothing spends nothing.
    let mut trial = Allowance(allowance.0.clone());
    let mut ignored = Vec::new();
    let mut candidates = within_budget(&eligible, Reason::Underutilized, &mut trial, &mut ignored);
    candidates.truncate(snapshot.settings.max_multi_node_candidates);
    if candidates.len() < 2 {
        return None;
    }
    let (mut low, mut high) = (2, candidates.len());
    let mut best = None;
    while low <= high {
        if started.elapsed() > snapshot.settings.consolidation_timeout {
            timed_out.push(Method::MultiNodeConsolidation);
            break;
        }
        let mid = (low + high) / 2;
        match consolidate(snapshot, simulator, Method::MultiNodeConsolidation, &candidates[..mid]) {
            Ok(command) => {
                best = Some((mid, command));
                low = mid + 1;
            }
            Err(_) => high = mid - 1,
        }
    }
    let (count, command) = best?;
    within_budget(&candidates[..count], Reason::Underutilized, allowance, &mut Vec::new());
    Some(command)
}

/// One node at a time: the first candidate whose pods fit elsewhere (delete) or on one cheaper node (replace).
fn single_node(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    underutilized: &[&ManagedNode],
    allowance: &mut Allowance,
    blocked: &mut Vec<Blocked>,
    timed_out: &mut Vec<Method>,
) -> Option<Command> {
    let started = std::time::Instant::now();
    for node in ordered(underutilized) {
        if started.elapsed() > snapshot.settings.consolidation_timeout * 3 {
            timed_out.push(Method::SingleNodeConsolidation);
            break;
        }
        if recently_replaced(snapshot, node) {
            blocked.push(Blocked { claim: node.claim.clone(), reason: RECENTLY_REPLACED.into() });
            continue;
        }
        if allowance.left(&node.nodepool, Reason::Underutilized) == 0 {
            within_budget(&[node], Reason::Underutilized, allowance, blocked);
            continue;
        }
        match consolidate(snapshot, simulator, Method::SingleNodeConsolidation, &[node]) {
            Ok(command) => {
                within_budget(&[node], Reason::Underutilized, allowance, blocked);
                return Some(command);
            }
            Err(why) => blocked.push(Blocked { claim: node.claim.clone(), reason: format!("not consolidated: {why}") }),
        }
    }
    None
}

/// Whether `command`, decided on an earlier snapshot, still holds on this one: every candidate still there and
/// disruptable for the same reason, within budgets, and (for consolidation) the move still fits and saves at
/// least as much. Karpenter waits 15 s and checks again before it acts; so does the controller.
pub fn still_valid(snapshot: &Snapshot<'_>, command: &Command) -> Result<(), String> {
    let mut candidates = Vec::new();
    for name in &command.candidates {
        let node = snapshot.nodes.iter().find(|n| &n.claim == name).ok_or_else(|| format!("{name} is gone"))?;
        disruptable(node).map_err(|why| why.unwrap_or_else(|| format!("{name} is being deleted")))?;
        candidates.push(node);
    }
    let mut allowance = allowance(snapshot);
    let mut blocked = Vec::new();
    if within_budget(&candidates, command.reason, &mut allowance, &mut blocked).len() != candidates.len() {
        return Err(blocked.first().map(|b| b.reason.clone()).unwrap_or_default());
    }
    match command.reason {
        Reason::Drifted => {
            if let Some(node) = candidates.iter().find(|n| n.drifted.is_none()) {
                return Err(format!("{} is no longer drifted", node.claim));
            }
            let needed = Simulator::new(snapshot).simulate(&candidates)?.new_nodes;
            if needed.len() > command.replacements.len() {
                return Err(format!("its pods now need {} new nodes", needed.len()));
            }
        }
        Reason::Empty => {
            if let Some(node) = candidates.iter().find(|n| !n.pods.is_empty() || !is_consolidatable(snapshot, n)) {
                return Err(format!("{} is no longer empty", node.claim));
            }
        }
        Reason::Underutilized => {
            if let Some(node) = candidates.iter().find(|n| !is_consolidatable(snapshot, n)) {
                return Err(format!("{} had pod activity since", node.claim));
            }
            let again = consolidate(snapshot, &Simulator::new(snapshot), command.method, &candidates)?;
            if again.replacements.len() > command.replacements.len() {
                return Err("its pods now need a replacement node".into());
            }
        }
    }
    Ok(())
}

/// What a full pass found: the multi-node command, and each candidate's single-node verdict.
pub type FullPass = (Option<Command>, Vec<(String, Result<Command, String>)>);

/// Every consolidation candidate judged on its own (single-node: delete, replace, or why not), and the multi-node
/// search over them all: what a full pass would consider if it did not stop at the first command. For the
/// benchmark, and for telling a person why a node stays.
pub fn evaluate_every_candidate(snapshot: &Snapshot<'_>) -> FullPass {
    let simulator = Simulator::new(snapshot);
    let underutilized: Vec<&ManagedNode> = snapshot
        .nodes
        .iter()
        .filter(|n| disruptable(n).is_ok() && is_consolidatable(snapshot, n) && !n.pods.is_empty())
        .filter(|n| snapshot.pool(&n.nodepool).is_some_and(|p| p.policy != Policy::WhenEmpty))
        .collect();
    let mut allowance = allowance(snapshot);
    let mut timed_out = Vec::new();
    let multi = multi_node(snapshot, &simulator, &underutilized, &mut allowance, &mut timed_out);
    let each = ordered(&underutilized)
        .into_iter()
        .map(|node| (node.claim.clone(), consolidate(snapshot, &simulator, Method::SingleNodeConsolidation, &[node])))
        .collect();
    (multi, each)
}
