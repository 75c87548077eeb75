//! Offerings that just failed for lack of capacity (or were just interrupted): skipped for a while, so the next
//! round launches something else instead of failing the same way.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::OfferingKey;

/// How long an offering stays out after a capacity error (Karpenter's figure).
pub const UNAVAILABLE_FOR: Duration = Duration::from_secs(180);

#[derive(Debug, Default)]
pub struct UnavailableOfferings {
    until: Mutex<HashMap<OfferingKey, Instant>>,
}

impl UnavailableOfferings {
    pub fn mark(&self, offering: OfferingKey, reason: &str) {
        tracing::debug!(
            instance_type = %offering.instance_type,
            zone = %offering.zone,
            capacity_type = offering.capacity_type.as_str(),
            reason,
            "offering marked unavailable"
        );
        self.mark_at(offering, Instant::now());
    }

    fn mark_at(&self, offering: OfferingKey, now: Instant) {
        if let Ok(mut until) = self.until.lock() {
            until.insert(offering, now + UNAVAILABLE_FOR);
        }
    }

    /// The offerings still out now.
    pub fn snapshot(&self) -> HashSet<OfferingKey> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> HashSet<OfferingKey> {
        let Ok(mut until) = self.until.lock() else { return HashSet::new() };
        until.retain(|_, deadline| *deadline > now);
        until.keys().cloned().collect()
    }

    pub fn contains(&self, offering: &OfferingKey) -> bool {
        self.snapshot().contains(offering)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CapacityType;

    #[test]
    fn an_offering_comes_back_after_the_ttl() {
        let cache = UnavailableOfferings::default();
        let key = OfferingKey { instance_type: "m5.large".into(), zone: "z".into(), capacity_type: CapacityType::Spot };
        let start = Instant::now();
        cache.mark_at(key.clone(), start);
        assert!(cache.snapshot_at(start + Duration::from_secs(10)).contains(&key));
        assert!(!cache.snapshot_at(start + UNAVAILABLE_FOR + Duration::from_secs(1)).contains(&key));
    }
}
