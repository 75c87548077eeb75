//! One disruption pass over a snapshot: which nodes may go, and the one command to carry out. Methods run in
//! Karpenter's order — drift, emptiness, multi-node then single-node consolidation — and the first that finds
//! something wins; every node a method looked at and left alone is reported with why.

use std::collections::BTreeMap;

use super::balanced::{self, Weighed};
use super::budgets::allowed_disruptions;
use super::model::{Blocked, Command, Decision, ManagedNode, Method, Policy, Reason, Snapshot};
use super::simulation::{Simulator, cheaper_replacement, without_candidates_own_types};

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
    snapshot.consolidatable_from(node).is_some_and(|from| from <= snapshot.now)
}

/// One method: spends budget from the allowance, reports in the decision what it left alone and weighed, maybe
/// finds a command.
type MethodFn<'a> = dyn Fn(&mut Allowance, &mut Decision) -> Option<Command> + 'a;

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
        (Method::Drift, &|a, d| drift(&simulator, &drifted, a, &mut d.blocked)),
        (Method::Emptiness, &|a, d| emptiness(&empty, a, &mut d.blocked)),
        (Method::MultiNodeConsolidation, &|a, d| multi_node(snapshot, &simulator, &underutilized, a, d)),
        (Method::SingleNodeConsolidation, &|a, d| single_node(snapshot, &simulator, &underutilized, a, d)),
    ];
    for (name, method) in methods {
        let started = std::time::Instant::now();
        let command = method(&mut allowance, &mut decision);
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
        joined: 0,
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
        joined: 0,
    })
}

fn emptiness(empty: &[&ManagedNode], allowance: &mut Allowance, blocked: &mut Vec<Blocked>) -> Option<Command> {
    let taken = within_budget(empty, Reason::Empty, allowance, blocked);
    (!taken.is_empty()).then(|| delete(Method::Emptiness, Reason::Empty, &taken))
}

/// Candidates for consolidation, most savings per unit of disruption first (Karpenter 1.14: price over
/// reschedule cost), so that a multi-node search over a prefix weighs the moves most worth their evictions.
fn ordered<'a>(nodes: &[&'a ManagedNode]) -> Vec<&'a ManagedNode> {
    let mut nodes = nodes.to_vec();
    nodes.sort_by(|a, b| b.savings_ratio().total_cmp(&a.savings_ratio()).then_with(|| a.claim.cmp(&b.claim)));
    nodes
}

/// The ordered candidates taken one NodePool at a time in turn, so that one large pool does not keep single-node
/// consolidation from ever reaching the others' candidates before it runs out of time.
fn interleaved_by_pool<'a>(nodes: &[&'a ManagedNode]) -> Vec<&'a ManagedNode> {
    let mut pools: Vec<(&str, Vec<&'a ManagedNode>)> = Vec::new();
    for node in ordered(nodes) {
        match pools.iter_mut().find(|(pool, _)| *pool == node.nodepool) {
            Some((_, nodes)) => nodes.push(node),
            None => pools.push((node.nodepool.as_str(), vec![node])),
        }
    }
    let longest = pools.iter().map(|(_, nodes)| nodes.len()).max().unwrap_or(0);
    (0..longest).flat_map(|i| pools.iter().filter_map(move |(_, nodes)| nodes.get(i).copied())).collect()
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
    consolidate_and_weigh(snapshot, simulator, method, candidates).0
}

/// As `consolidate`, with how the move was weighed when it got that far (it fits and saves).
fn consolidate_and_weigh(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    method: Method,
    candidates: &[&ManagedNode],
) -> (Result<Command, String>, Option<Weighed>) {
    let command = match fitting_move(snapshot, simulator, method, candidates) {
        Ok(command) => command,
        Err(why) => return (Err(why), None),
    };
    let weighed = balanced::weigh(snapshot, candidates, command.candidates_price - command.replacements_price);
    match weighed.refusal() {
        Some(why) => (Err(why), Some(weighed)),
        None => (Ok(command), Some(weighed)),
    }
}

/// The move of `candidates`, if their pods fit and it saves, before any policy weighs it.
fn fitting_move(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    method: Method,
    candidates: &[&ManagedNode],
) -> Result<Command, String> {
    if let Some(why) = simulator.scale_out_in_progress() {
        return Err(why);
    }
    let simulated = simulator.simulate_consolidation(candidates)?;
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
        Some(node) => {
            let cheaper = cheaper_replacement(snapshot, candidates, node).and_then(|cheaper| {
                if candidates.len() > 1 {
                    without_candidates_own_types(snapshot, candidates, cheaper)
                } else {
                    Ok(cheaper)
                }
            });
            Some(cheaper.map_err(|why| format!("{why}{}", simulator.settling_note()))?)
        }
        None => None,
    };
    let replacements_price = replacement.as_ref().map_or(0.0, |r| r.price_per_hour);
    Ok(Command {
        method,
        reason: Reason::Underutilized,
        candidates: candidates.iter().map(|n| n.claim.clone()).collect(),
        replacements: replacement.into_iter().collect(),
        candidates_price,
        replacements_price,
        joined: 0,
    })
}

/// Several nodes at once: the longest prefix of the ordered candidates (at least two, within budgets) whose pods
/// fit elsewhere plus at most one cheaper new node, found by binary search as Karpenter does. The move found is
/// reported as weighed; when none is found, the last one a Balanced pool refused is.
fn multi_node(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    underutilized: &[&ManagedNode],
    allowance: &mut Allowance,
    decision: &mut Decision,
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
    let mut last_refused = None;
    while low <= high {
        if started.elapsed() > snapshot.settings.consolidation_timeout {
            decision.timed_out.push(Method::MultiNodeConsolidation);
            break;
        }
        let mid = (low + high) / 2;
        match consolidate_and_weigh(snapshot, simulator, Method::MultiNodeConsolidation, &candidates[..mid]) {
            (Ok(command), weighed) => {
                best = Some((mid, command, weighed));
                low = mid + 1;
            }
            (Err(_), weighed) => {
                last_refused = weighed.or(last_refused);
                high = mid - 1;
            }
        }
    }
    let Some((count, command, weighed)) = best else {
        decision.moves.extend(last_refused.iter().flat_map(|w| w.moves(false)));
        return None;
    };
    decision.moves.extend(weighed.iter().flat_map(|w| w.moves(true)));
    within_budget(&candidates[..count], Reason::Underutilized, allowance, &mut Vec::new());
    Some(command)
}

/// One node at a time: the first candidate whose pods fit elsewhere (delete) or, when no candidate can simply be
/// deleted, the first whose pods fit on one cheaper node (replace). Karpenter takes the first move of either kind;
/// a delete later in the order saves the whole node and launches nothing, where the replace before it often only
/// halves a node (half-empty r5.4xlarges each replaced by an r5.2xlarge one after the other, when one could take
/// the other's pods). Every move weighed is reported.
fn single_node(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    underutilized: &[&ManagedNode],
    allowance: &mut Allowance,
    decision: &mut Decision,
) -> Option<Command> {
    let started = std::time::Instant::now();
    let blocked = |decision: &mut Decision, node: &ManagedNode, reason: String| {
        decision.blocked.push(Blocked { claim: node.claim.clone(), reason });
    };
    let order = interleaved_by_pool(underutilized);
    let mut first_replace = None;
    let mut taken = None;
    for (at, &node) in order.iter().enumerate() {
        if started.elapsed() > snapshot.settings.consolidation_timeout * 3 {
            decision.timed_out.push(Method::SingleNodeConsolidation);
            break;
        }
        if let Some(why) = held_before_simulating(snapshot, allowance, node) {
            blocked(decision, node, why);
            continue;
        }
        let (found, weighed) = consolidate_and_weigh(snapshot, simulator, Method::SingleNodeConsolidation, &[node]);
        if let Some(weighed) = weighed {
            decision.moves.extend(weighed.moves(weighed.approved()));
        }
        match found {
            Ok(command) if command.replacements.is_empty() => {
                taken = Some((at, command));
                break;
            }
            Ok(command) => {
                first_replace.get_or_insert((at, command));
            }
            Err(why) => blocked(decision, node, format!("not consolidated: {why}")),
        }
    }
    let (at, command) = taken.or(first_replace)?;
    within_budget(&[order[at]], Reason::Underutilized, allowance, &mut decision.blocked);
    let deadline = started + snapshot.settings.consolidation_timeout * 3;
    let (command, weighed) =
        joined_by_others(snapshot, simulator, command, order[at], &order[at + 1..], allowance, deadline);
    decision.moves.extend(weighed.iter().flat_map(|w| w.moves(true)));
    Some(command)
}

/// What holds a candidate from a single-node move before any simulation: held as a recent replacement, its pool's
/// budget spent, or (Balanced) not worth even deleting it outright, the best any move of it can do.
fn held_before_simulating(snapshot: &Snapshot<'_>, allowance: &Allowance, node: &ManagedNode) -> Option<String> {
    if recently_replaced(snapshot, node) {
        return Some(RECENTLY_REPLACED.into());
    }
    if allowance.left(&node.nodepool, Reason::Underutilized) == 0 {
        return Some(budget_exhausted(&node.nodepool, Reason::Underutilized));
    }
    if !balanced::could_pass(snapshot, node) {
        return Some(format!("not consolidated: {}", balanced::not_worth_it(node)));
    }
    None
}

/// Beyond Karpenter, which carries out one single-node command per pass: once one candidate's move is found, each
/// candidate after it that could be moved on its own (within its NodePool's budget) is tried together with it, and
/// kept while all their pods still fit on the nodes that stay plus at most one cheaper new node — the multi-node
/// command that multi-node consolidation's prefix search missed because a candidate before them in its order did
/// not fit. The nodes go in one command and one validation instead of one after the other. Returns the command
/// and, when others joined, how the joined move was weighed.
fn joined_by_others(
    snapshot: &Snapshot<'_>,
    simulator: &Simulator<'_>,
    found: Command,
    first: &ManagedNode,
    rest: &[&ManagedNode],
    allowance: &mut Allowance,
    deadline: std::time::Instant,
) -> (Command, Option<Weighed>) {
    let mut together = vec![first];
    let mut command = found;
    let mut weighed_last = None;
    for node in rest {
        if together.len() >= snapshot.settings.max_multi_node_candidates || std::time::Instant::now() > deadline {
            break;
        }
        // Only a node single-node consolidation would move on its own joins: the command then moves no pod that
        // the single-node commands after it would not have moved.
        if held_before_simulating(snapshot, allowance, node).is_some()
            || consolidate(snapshot, simulator, Method::SingleNodeConsolidation, &[node]).is_err()
        {
            continue;
        }
        together.push(node);
        match consolidate_and_weigh(snapshot, simulator, Method::MultiNodeConsolidation, &together) {
            (Ok(joined), weighed) => {
                within_budget(&[node], Reason::Underutilized, allowance, &mut Vec::new());
                command = Command { joined: together.len() - 1, ..joined };
                weighed_last = weighed;
            }
            (Err(_), _) => {
                together.pop();
            }
        }
    }
    (command, weighed_last)
}

/// The command to carry out after the validation delay (Karpenter waits 15 s and checks again before it acts; so
/// does the controller), checked on a fresh snapshot: the same command when every candidate is still there and
/// disruptable for the same reason, within budgets, and (for consolidation) the move still fits and saves at least
/// as much; for emptiness, those candidates still empty and within budget (Karpenter's emptiness validation keeps
/// them, so a scale-down still settling does not hold back every empty node for one that got a pod) joined by the
/// nodes that have become empty and consolidatable since; or why nothing holds.
pub fn still_valid(snapshot: &Snapshot<'_>, command: &Command) -> Result<Command, String> {
    if command.reason == Reason::Empty {
        return still_empty(snapshot, command);
    }
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
        Reason::Empty => {}
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
    Ok(command.clone())
}

fn still_empty(snapshot: &Snapshot<'_>, command: &Command) -> Result<Command, String> {
    let mut refusals = Vec::new();
    let mut empty = Vec::new();
    for name in &command.candidates {
        let Some(node) = snapshot.nodes.iter().find(|n| &n.claim == name) else {
            refusals.push(format!("{name} is gone"));
            continue;
        };
        if let Err(why) = disruptable(node) {
            refusals.push(why.unwrap_or_else(|| format!("{name} is being deleted")));
        } else if !node.pods.is_empty() {
            refusals.push(format!("{name} is no longer empty"));
        } else if !is_consolidatable(snapshot, node) {
            refusals.push(format!("{name} had pod activity since"));
        } else {
            empty.push(node);
        }
    }
    // Beyond Karpenter: nodes that became empty and quiet for consolidateAfter while the command waited go with it,
    // where a new pass would find them only to wait out another validation delay (in a scale to zero, the nodes
    // quiet a few seconds after the first would otherwise take two more commands).
    empty.extend(snapshot.nodes.iter().filter(|n| {
        !command.candidates.contains(&n.claim)
            && n.drifted.is_none()
            && n.pods.is_empty()
            && disruptable(n).is_ok()
            && is_consolidatable(snapshot, n)
    }));
    let mut blocked = Vec::new();
    let going = within_budget(&empty, Reason::Empty, &mut allowance(snapshot), &mut blocked);
    refusals.extend(blocked.into_iter().map(|b| b.reason));
    if going.is_empty() {
        return Err(refusals.into_iter().next().unwrap_or_default());
    }
    Ok(Command {
        candidates: going.iter().map(|n| n.claim.clone()).collect(),
        candidates_price: price_of(&going),
        ..command.clone()
    })
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
    let multi = multi_node(snapshot, &simulator, &underutilized, &mut allowance, &mut Decision::default());
    let each = interleaved_by_pool(&underutilized)
        .into_iter()
        .map(|node| (node.claim.clone(), consolidate(snapshot, &simulator, Method::SingleNodeConsolidation, &[node])))
        .collect();
    (multi, each)
}
