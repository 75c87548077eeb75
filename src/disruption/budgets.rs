//! Disruption budgets: how many of a NodePool's nodes may be voluntarily disrupted at once, as Karpenter v1 counts
//! them. A budget is a count or a percentage of the pool's nodes (rounded up), optionally active only in a cron
//! window (UTC) and optionally scoped to some reasons. The allowed number is the minimum over the active budgets
//! that apply, minus the pool's nodes already being disrupted (deleting, or NotReady).

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::model::Reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    Count(usize),
    /// 0–100.
    Percent(usize),
}

#[derive(Debug, Clone)]
pub struct Window {
    schedule: Cron,
    duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Budget {
    pub nodes: Nodes,
    /// None: always active.
    pub window: Option<Window>,
    /// Empty: applies to every reason.
    pub reasons: Vec<Reason>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error("budgets: nodes {0:?} is neither a count (\"5\") nor a percentage (\"10%\")")]
    Nodes(String),
    #[error("budgets: schedule {schedule:?} is not a cron expression: {message}")]
    Schedule { schedule: String, message: String },
    #[error("budgets: schedule and duration must be set together")]
    HalfWindow,
}

impl Nodes {
    pub fn parse(text: &str) -> Result<Self, BudgetError> {
        let bad = || BudgetError::Nodes(text.to_string());
        match text.strip_suffix('%') {
            Some(percent) => {
                let value: usize = percent.parse().map_err(|_| bad())?;
                if value > 100 {
                    return Err(bad());
                }
                Ok(Self::Percent(value))
            }
            None => text.parse().map(Self::Count).map_err(|_| bad()),
        }
    }

    /// Of `total` nodes, how many this allows (a percentage rounds up, as Karpenter's does).
    pub fn of(self, total: usize) -> usize {
        match self {
            Self::Count(count) => count,
            Self::Percent(percent) => (total * percent).div_ceil(100),
        }
    }
}

impl Window {
    /// A Kubernetes CronJob schedule (five fields or an `@` macro, UTC) and how long each hit lasts.
    pub fn parse(schedule: &str, duration: Duration) -> Result<Self, BudgetError> {
        // Kubernetes accepts `@midnight` (robfig/cron); croner knows it as `@daily`.
        let pattern = if schedule.trim().eq_ignore_ascii_case("@midnight") { "@daily" } else { schedule };
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        let schedule = parser
            .parse(pattern)
            .map_err(|e| BudgetError::Schedule { schedule: schedule.to_string(), message: e.to_string() })?;
        Ok(Self { schedule, duration })
    }

    /// Whether the schedule hit within the last `duration`: the first hit after `now - duration` is not after
    /// `now` (Karpenter's definition, so a window that started before midnight stays active past it).
    pub fn is_active(&self, now: Timestamp) -> bool {
        let Ok(duration) = jiff::SignedDuration::try_from(self.duration) else { return false };
        let Ok(start) = now.checked_sub(duration) else { return false };
        let start = start.to_zoned(TimeZone::UTC);
        match self.schedule.find_next_occurrence(&start, false) {
            Ok(next) => next.timestamp() <= now,
            Err(_) => false,
        }
    }
}

impl Budget {
    pub fn parse(
        nodes: &str,
        schedule: Option<&str>,
        duration: Option<Duration>,
        reasons: Vec<Reason>,
    ) -> Result<Self, BudgetError> {
        let window = match (schedule, duration) {
            (Some(schedule), Some(duration)) => Some(Window::parse(schedule, duration)?),
            (None, None) => None,
            _ => return Err(BudgetError::HalfWindow),
        };
        Ok(Self { nodes: Nodes::parse(nodes)?, window, reasons })
    }

    /// Karpenter's default: one budget of 10%.
    pub fn default_budgets() -> Vec<Budget> {
        vec![Budget { nodes: Nodes::Percent(10), window: None, reasons: Vec::new() }]
    }

    pub fn applies_to(&self, reason: Reason) -> bool {
        self.reasons.is_empty() || self.reasons.contains(&reason)
    }

    pub fn is_active(&self, now: Timestamp) -> bool {
        self.window.as_ref().is_none_or(|w| w.is_active(now))
    }
}

/// How many more of a pool's `total` nodes may be disrupted for `reason` now, with `disrupting` of them already
/// going (deleting or NotReady). No active budget that applies: no limit.
pub fn allowed_disruptions(
    budgets: &[Budget],
    reason: Reason,
    total: usize,
    disrupting: usize,
    now: Timestamp,
) -> usize {
    let limit = budgets
        .iter()
        .filter(|b| b.applies_to(reason) && b.is_active(now))
        .map(|b| b.nodes.of(total))
        .min()
        .unwrap_or(usize::MAX);
    limit.saturating_sub(disrupting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn window(schedule: &str, minutes: u64) -> Window {
        Window::parse(schedule, Duration::from_secs(minutes * 60)).expect("a schedule")
    }

    #[test]
    fn counts_and_percentages_round_up_as_karpenter_does() {
        assert_eq!(Nodes::parse("5"), Ok(Nodes::Count(5)));
        assert_eq!(Nodes::parse("10%"), Ok(Nodes::Percent(10)));
        assert_eq!(Nodes::Percent(10).of(3), 1, "10% of 3 nodes rounds up to 1");
        assert_eq!(Nodes::Percent(10).of(0), 0);
        assert_eq!(Nodes::Percent(50).of(5), 3);
        assert_eq!(Nodes::Percent(100).of(7), 7);
        assert_eq!(Nodes::Count(0).of(100), 0);
        assert!(Nodes::parse("101%").is_err());
        assert!(Nodes::parse("ten").is_err());
        assert!(Nodes::parse("-1").is_err());
    }

    #[test]
    fn a_window_is_active_from_each_hit_for_its_duration() {
        // Weekdays 09:00 for 8 hours.
        let business = window("0 9 * * 1-5", 8 * 60);
        assert!(business.is_active(at("2026-12-02T09:00:00Z")), "a Wednesday at the hit");
        assert!(business.is_active(at("2026-12-02T16:59:59Z")));
        assert!(!business.is_active(at("2026-12-02T17:00:01Z")));
        assert!(!business.is_active(at("2026-12-02T08:59:59Z")));
        assert!(!business.is_active(at("2026-12-05T10:00:00Z")), "a Saturday");
    }

    #[test]
    fn a_window_that_starts_before_midnight_is_active_after_it() {
        let nightly = window("0 22 * * *", 4 * 60);
        assert!(nightly.is_active(at("2026-12-02T23:30:00Z")));
        assert!(nightly.is_active(at("2026-12-03T01:59:00Z")), "past midnight, still within 4h of 22:00");
        assert!(!nightly.is_active(at("2026-12-03T02:00:01Z")));
        // Across a month and a year end too.
        assert!(nightly.is_active(at("2027-01-01T00:30:00Z")));
    }

    #[test]
    fn macros_are_read_as_kubernetes_reads_them() {
        assert!(window("@daily", 10).is_active(at("2026-12-02T00:05:00Z")));
        assert!(window("@midnight", 10).is_active(at("2026-12-02T00:05:00Z")));
        assert!(!window("@daily", 10).is_active(at("2026-12-02T00:15:00Z")));
        assert!(window("@hourly", 1).is_active(at("2026-12-02T13:00:30Z")));
        assert!(Window::parse("not a schedule", Duration::from_secs(60)).is_err());
        assert!(Window::parse("0 0 * * * *", Duration::from_secs(60)).is_err(), "no seconds field");
    }

    #[test]
    fn the_tightest_active_budget_for_the_reason_wins_minus_what_is_already_going() {
        let now = at("2026-12-02T12:00:00Z");
        let budgets = vec![
            Budget::parse("50%", None, None, vec![]).expect("budget"),
            Budget::parse("0", None, None, vec![Reason::Drifted]).expect("budget"),
            Budget::parse("1", Some("0 0 * * *"), Some(Duration::from_secs(3600)), vec![]).expect("budget"),
        ];
        assert_eq!(allowed_disruptions(&budgets, Reason::Empty, 10, 0, now), 5);
        assert_eq!(allowed_disruptions(&budgets, Reason::Empty, 10, 2, now), 3);
        assert_eq!(allowed_disruptions(&budgets, Reason::Drifted, 10, 0, now), 0);
        let midnight = at("2026-12-02T00:30:00Z");
        assert_eq!(allowed_disruptions(&budgets, Reason::Underutilized, 10, 0, midnight), 1);
        assert_eq!(allowed_disruptions(&budgets, Reason::Underutilized, 10, 3, midnight), 0);
        assert_eq!(allowed_disruptions(&[], Reason::Empty, 10, 0, now), usize::MAX);
        assert!(Budget::parse("1", Some("@daily"), None, vec![]).is_err());
    }

    proptest! {
        #[test]
        fn allowed_never_exceeds_any_active_budget(
            counts in proptest::collection::vec(0usize..20, 1..4),
            percents in proptest::collection::vec(0usize..=100, 0..3),
            total in 0usize..200,
            disrupting in 0usize..20,
        ) {
            let now = at("2026-12-02T12:00:00Z");
            let mut budgets: Vec<Budget> =
                counts.iter().map(|&c| Budget { nodes: Nodes::Count(c), window: None, reasons: vec![] }).collect();
            budgets.extend(percents.iter().map(|&p| Budget { nodes: Nodes::Percent(p), window: None, reasons: vec![] }));
            let allowed = allowed_disruptions(&budgets, Reason::Underutilized, total, disrupting, now);
            for budget in &budgets {
                prop_assert!(allowed + disrupting <= budget.nodes.of(total).max(disrupting));
            }
        }
    }
}
