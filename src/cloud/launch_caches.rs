//! What the cloud remembers between launches, owned by the cloud type (`CloudProvider::caches`): offerings that
//! just failed for lack of capacity (or were just interrupted), launches not yet visible in their subnet's free
//! addresses, and the launch templates launches used recently.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::OfferingKey;

/// A launch counts against its subnet's free addresses until DescribeSubnets has caught up.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct LaunchCaches {
    pub unavailable: UnavailableOfferings,
    /// Launches per subnet not yet visible in its free-address count (debited when picking a subnet).
    pub in_flight: Mutex<InFlight>,
    /// Launch templates used by a launch, and when: garbage collection keeps those used recently.
    pub templates_used: Mutex<HashMap<String, Instant>>,
    /// Launch templates known to exist, so that a launch need not ask EC2 again.
    pub templates_known: KnownTemplates,
}

/// A launch template made or found this recently is trusted to exist without a DescribeLaunchTemplates. Our own
/// garbage collection keeps templates used within the hour; one deleted by someone else fails its CreateFleet,
/// which forgets it, so the retry makes it again.
pub const TEMPLATE_KNOWN_FOR: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct KnownTemplates {
    since: Mutex<HashMap<String, Instant>>,
}

impl KnownTemplates {
    pub fn remember(&self, name: &str) {
        self.remember_at(name, Instant::now());
    }

    fn remember_at(&self, name: &str, now: Instant) {
        if let Ok(mut since) = self.since.lock() {
            since.insert(name.to_string(), now);
        }
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.is_known_at(name, Instant::now())
    }

    fn is_known_at(&self, name: &str, now: Instant) -> bool {
        let Ok(mut since) = self.since.lock() else { return false };
        since.retain(|_, at| now.duration_since(*at) < TEMPLATE_KNOWN_FOR);
        since.contains_key(name)
    }

    pub fn forget<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut since) = self.since.lock() {
            for name in names {
                since.remove(name);
            }
        }
    }
}

/// Launches per subnet in the last minute.
#[derive(Debug, Default)]
pub struct InFlight {
    launches: HashMap<String, Vec<Instant>>,
}

impl InFlight {
    pub fn debit(&mut self, subnet: &str) {
        self.launches.entry(subnet.to_string()).or_default().push(Instant::now());
    }

    pub fn counts(&mut self) -> BTreeMap<String, i64> {
        let now = Instant::now();
        self.launches.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < IN_FLIGHT_FOR);
            !times.is_empty()
        });
        self.launches.iter().map(|(subnet, times)| (subnet.clone(), times.len() as i64)).collect()
    }
}

/// How long an offering stays out after a capacity error (Karpenter's figure).
pub const UNAVAILABLE_FOR: Duration = Duration::from_secs(180);

/// Offerings that just failed for lack of capacity (or were just interrupted): skipped for a while, so the next
/// round launches something else instead of failing the same way.
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
    fn in_flight_launches_are_counted_per_subnet() {
        let mut in_flight = InFlight::default();
        in_flight.debit("subnet-a");
        in_flight.debit("subnet-a");
        in_flight.debit("subnet-b");
        let counts = in_flight.counts();
        assert_eq!(counts.get("subnet-a"), Some(&2));
        assert_eq!(counts.get("subnet-b"), Some(&1));
    }

    #[test]
    fn a_template_is_known_for_a_while_unless_a_launch_from_it_failed() {
        let known = KnownTemplates::default();
        let start = Instant::now();
        known.remember_at("nodesmith/demo/a", start);
        known.remember_at("nodesmith/demo/b", start);
        assert!(known.is_known_at("nodesmith/demo/a", start + Duration::from_secs(60)));
        assert!(!known.is_known_at("nodesmith/demo/c", start));
        known.forget(["nodesmith/demo/b"]);
        assert!(!known.is_known_at("nodesmith/demo/b", start + Duration::from_secs(1)));
        assert!(!known.is_known_at("nodesmith/demo/a", start + TEMPLATE_KNOWN_FOR + Duration::from_secs(1)));
    }

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
