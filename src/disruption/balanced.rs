//! Karpenter 1.14's Balanced consolidation policy: a move is made only when the share of its NodePool's cost it
//! saves is at least half the share of the pool's disruption it causes. Every move consolidation weighs is also
//! reported per NodePool (`karpenter_consolidation_moves_total`, and the score where the pool is Balanced).

use super::model::{ManagedNode, Policy, Snapshot, WeighedMove};

/// A Balanced move is approved at this score or more (Karpenter: 1/k with k = 2).
pub const BALANCED_MIN_SCORE: f64 = 0.5;

/// A NodePool's whole cost ($/h) and disruption cost (every node's, candidates or not), the denominators of a score.
struct PoolTotals {
    cost: f64,
    disruption: f64,
}

fn totals(snapshot: &Snapshot<'_>, pool: &str) -> PoolTotals {
    let nodes = snapshot.nodes.iter().filter(|n| n.nodepool == pool);
    let (cost, disruption) = nodes.fold((0.0, 0.0), |(c, d), n| (c + n.price, d + n.reschedule_cost()));
    PoolTotals { cost, disruption }
}

/// (savings / pool cost) / (disruption / pool disruption); 0 when nothing is saved or nothing is known to
/// normalize against, infinite when nothing is disrupted.
fn score(savings: f64, disruption: f64, totals: &PoolTotals) -> f64 {
    if totals.cost <= 0.0 || totals.disruption <= 0.0 {
        return 0.0;
    }
    let savings_share = savings / totals.cost;
    if savings_share <= 0.0 {
        return 0.0;
    }
    let disruption_share = disruption / totals.disruption;
    if disruption_share == 0.0 { f64::INFINITY } else { savings_share / disruption_share }
}

/// One NodePool's part in a move: what it saves and disrupts and, if Balanced, its score.
#[derive(Debug, Clone)]
struct PoolPart {
    pool: String,
    policy: Policy,
    savings: f64,
    disruption: f64,
    score: Option<f64>,
}

impl PoolPart {
    fn refuses(&self) -> bool {
        self.score.is_some_and(|s| s < BALANCED_MIN_SCORE)
    }
}

/// How one move was weighed, per NodePool among its candidates (in order of first appearance).
#[derive(Debug, Clone)]
pub struct Weighed(Vec<PoolPart>);

impl Weighed {
    /// Approved when every Balanced pool among the candidates approves.
    pub fn approved(&self) -> bool {
        !self.0.iter().any(PoolPart::refuses)
    }

    /// Why the move is refused, naming the first pool that refuses it; None when approved.
    pub fn refusal(&self) -> Option<String> {
        let part = self.0.iter().find(|p| p.refuses())?;
        Some(format!(
            "NodePool {} is Balanced: saving ${:.4}/h is not worth evicting {:.0} pods' worth (score {:.2} < {BALANCED_MIN_SCORE})",
            part.pool,
            part.savings,
            part.disruption,
            part.score.unwrap_or_default()
        ))
    }

    /// The move as Karpenter's metrics count it: one entry per NodePool.
    pub fn moves(&self, approved: bool) -> impl Iterator<Item = WeighedMove> + '_ {
        self.0.iter().map(move |part| WeighedMove {
            nodepool: part.pool.clone(),
            policy: part.policy,
            approved,
            score: part.score.map(|s| (s, s >= BALANCED_MIN_SCORE)),
        })
    }
}

/// Weighs a move of `candidates` that saves `savings` $/h. Where candidates of several pools move together, each
/// pool is credited with the savings in proportion to its share of the candidates' price.
pub fn weigh(snapshot: &Snapshot<'_>, candidates: &[&ManagedNode], savings: f64) -> Weighed {
    let mut parts: Vec<PoolPart> = Vec::new();
    let candidates_price: f64 = candidates.iter().map(|c| c.price).sum();
    for candidate in candidates {
        let pool = candidate.nodepool.as_str();
        if parts.iter().any(|p| p.pool == pool) {
            continue;
        }
        let ours: Vec<&&ManagedNode> = candidates.iter().filter(|c| c.nodepool == pool).collect();
        let price: f64 = ours.iter().map(|c| c.price).sum();
        let share = if candidates_price > 0.0 { price / candidates_price } else { 1.0 };
        let policy = snapshot.pool(pool).map_or(Policy::WhenEmptyOrUnderutilized, |p| p.policy);
        let mut part = PoolPart {
            pool: pool.to_string(),
            policy,
            savings: savings * share,
            disruption: ours.iter().map(|c| c.reschedule_cost()).sum(),
            score: None,
        };
        if policy == Policy::Balanced {
            part.score = Some(score(part.savings, part.disruption, &totals(snapshot, pool)));
        }
        parts.push(part);
    }
    Weighed(parts)
}

/// Whether deleting `node` outright — the best any move of it alone can do — would pass its pool's policy.
pub fn could_pass(snapshot: &Snapshot<'_>, node: &ManagedNode) -> bool {
    let balanced = snapshot.pool(&node.nodepool).is_some_and(|p| p.policy == Policy::Balanced);
    !balanced || score(node.price, node.reschedule_cost(), &totals(snapshot, &node.nodepool)) >= BALANCED_MIN_SCORE
}

/// What `node` is told when even deleting it would not pass.
pub fn not_worth_it(node: &ManagedNode) -> String {
    format!(
        "NodePool {} is Balanced: even deleting it (${:.4}/h) is not worth moving its {} pods",
        node.nodepool,
        node.price,
        node.pods.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_the_savings_share_over_the_disruption_share() {
        let totals = PoolTotals { cost: 10.0, disruption: 20.0 };
        assert_eq!(score(1.0, 2.0, &totals), 1.0);
        assert_eq!(score(1.0, 4.0, &totals), 0.5);
        assert_eq!(score(0.0, 4.0, &totals), 0.0, "nothing saved");
        assert_eq!(score(-1.0, 4.0, &totals), 0.0, "dearer");
        assert_eq!(score(1.0, 0.0, &totals), f64::INFINITY, "nothing disrupted");
        assert_eq!(score(1.0, 2.0, &PoolTotals { cost: 0.0, disruption: 20.0 }), 0.0, "no price known");
    }
}
