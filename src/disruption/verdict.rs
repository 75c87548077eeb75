//! One node, judged on its own: what disruption would do with it now, or the first thing that holds it. The same
//! checks as a pass (`decide`), in the same order, for a person asking about one node (`nodesmith explain node`).

use serde::Serialize;

use super::decide::{
    RECENTLY_REPLACED, allowance, budget_exhausted, consolidate, delete, disruptable, is_consolidatable,
    recently_replaced, replace_drifted,
};
use super::model::{Command, Method, Policy, Reason, Snapshot};
use super::simulation::Simulator;

/// What disruption would do with one node now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// A method would disrupt it now. Judged on its own: multi-node consolidation may also take it with others.
    Disrupt { command: Command },
    /// Nothing would; what holds it first.
    Stays { held_by: String },
}

/// The verdict on the node of NodeClaim `claim`; None when the snapshot has no such node.
pub fn verdict(snapshot: &Snapshot<'_>, claim: &str) -> Option<Verdict> {
    let node = snapshot.nodes.iter().find(|n| n.claim == claim)?;
    let stays = |held_by: String| Some(Verdict::Stays { held_by });
    let disrupt = |command: Command| Some(Verdict::Disrupt { command });
    if node.deleting {
        return stays("it is being deleted already".into());
    }
    if node.initialized_at.is_none() {
        return stays("it is not initialized yet".into());
    }
    if let Err(Some(why)) = disruptable(node) {
        return stays(why);
    }
    let allowance = allowance(snapshot);
    let pool = &node.nodepool;
    let simulator = Simulator::new(snapshot);
    if node.drifted.is_some() {
        if allowance.left(pool, Reason::Drifted) == 0 {
            return stays(budget_exhausted(pool, Reason::Drifted));
        }
        if node.pods.is_empty() {
            return disrupt(delete(Method::Drift, Reason::Drifted, &[node]));
        }
        return match replace_drifted(&simulator, node) {
            Ok(command) => disrupt(command),
            Err(why) => stays(why),
        };
    }
    let Some(policy) = snapshot.pool(pool) else {
        return stays(format!("its NodePool {pool} is gone"));
    };
    let Some(after) = policy.consolidate_after else {
        return stays(format!("NodePool {pool} has consolidateAfter: Never"));
    };
    if !is_consolidatable(snapshot, node) {
        let since = node.quiet_since().map_or_else(|| "its start".to_string(), |t| t.to_string());
        return stays(format!(
            "consolidateAfter ({}) has not passed since its last pod event ({since})",
            crate::duration::format(after)
        ));
    }
    if node.pods.is_empty() {
        if allowance.left(pool, Reason::Empty) == 0 {
            return stays(budget_exhausted(pool, Reason::Empty));
        }
        return disrupt(delete(Method::Emptiness, Reason::Empty, &[node]));
    }
    if policy.policy == Policy::WhenEmpty {
        return stays(format!(
            "NodePool {pool} consolidates only empty nodes (consolidationPolicy: WhenEmpty) and {} pod(s) run on it",
            node.pods.len()
        ));
    }
    if recently_replaced(snapshot, node) {
        return stays(RECENTLY_REPLACED.into());
    }
    if allowance.left(pool, Reason::Underutilized) == 0 {
        return stays(budget_exhausted(pool, Reason::Underutilized));
    }
    match consolidate(snapshot, &simulator, Method::SingleNodeConsolidation, &[node]) {
        Ok(command) => disrupt(command),
        Err(why) => stays(format!("not consolidated: {why}")),
    }
}
