//! Disruption decisions: which nodes go away on their own, and how (emptiness, consolidation, drift, expiration),
//! within each NodePool's budgets. Pure, like `scheduling`: a snapshot of plain data in, one command out; the
//! controller gathers the snapshot and carries the command out (`controller::disruption`).

pub mod balanced;
pub mod budgets;
pub mod decide;
pub mod drift;
pub mod expiration;
pub mod model;
pub mod simulation;
pub mod verdict;

pub use decide::{decide, evaluate_every_candidate, is_consolidatable, still_valid};
pub use model::{
    Blocked, Command, Decision, ManagedNode, Method, MovablePod, Policy, PoolPolicy, Reason, Settings, Snapshot,
    WeighedMove,
};
pub use verdict::{Verdict, verdict};

#[cfg(test)]
mod tests;
