//! What the cloud remembers between launches, owned by the cloud type (`CloudProvider::caches`): offerings that
//! just failed for lack of capacity (or were just interrupted), launches not yet visible in their subnet's free
//! addresses, the subnets' free addresses as last read, the launch templates launches used recently (and those
//! known to exist or being made), and the NodeClaims made here that no launch has been tried for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::OfferingKey;
use crate::cloud::nodeclass::SubnetInfo;

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
    /// Launch templates being made now, so that launches needing the same one make it once.
    pub templates_in_making: TemplatesInMaking,
    /// Free addresses per subnet as last read, so that a launch need not wait for DescribeSubnets.
    pub subnet_addresses: SubnetAddresses,
    /// NodeClaims this process made that no launch has been tried for yet.
    pub untried: UntriedNodeClaims,
}

/// Free addresses read this recently serve a launch without DescribeSubnets. Launches since the read are debited
/// (`InFlight` keeps them longer than this), and the provisioner reads afresh while a batch gathers.
pub const SUBNET_ADDRESSES_FOR: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct SubnetAddresses {
    read: Mutex<HashMap<String, (SubnetInfo, Instant)>>,
}

impl SubnetAddresses {
    pub fn store(&self, subnets: &[SubnetInfo]) {
        self.store_at(subnets, Instant::now());
    }

    fn store_at(&self, subnets: &[SubnetInfo], now: Instant) {
        if let Ok(mut read) = self.read.lock() {
            read.retain(|_, (_, at)| now.duration_since(*at) < SUBNET_ADDRESSES_FOR);
            for subnet in subnets {
                read.insert(subnet.id.clone(), (subnet.clone(), now));
            }
        }
    }

    /// Every one of `ids` as read recently, in that order; None if any was not (then ask EC2).
    pub fn recent(&self, ids: &[&str]) -> Option<Vec<SubnetInfo>> {
        self.recent_at(ids, Instant::now())
    }

    fn recent_at(&self, ids: &[&str], now: Instant) -> Option<Vec<SubnetInfo>> {
        let read = self.read.lock().ok()?;
        ids.iter()
            .map(|id| {
                let (subnet, at) = read.get(*id)?;
                (now.duration_since(*at) < SUBNET_ADDRESSES_FOR).then(|| subnet.clone())
            })
            .collect()
    }
}

/// A launch template made or found this recently is trusted to exist without a DescribeLaunchTemplates. Our own
/// garbage collection keeps templates used within the hour; one deleted by someone else fails its CreateFleet,
/// which forgets it, so the retry makes it again.
pub const TEMPLATE_KNOWN_FOR: Duration = Duration::from_secs(300);

/// Launch templates known to exist.
pub type KnownTemplates = RecentNames<{ TEMPLATE_KNOWN_FOR.as_secs() }>;

/// One CreateLaunchTemplate per name at a time: the launches of one batch often need the same new template, and
/// all but the first would only be told that it exists (each a round trip before its CreateFleet).
#[derive(Debug, Default)]
pub struct TemplatesInMaking(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl TemplatesInMaking {
    /// The lock of the template `name`: whoever holds it makes the template, the others wait and find it known.
    pub fn lock_of(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A lock nobody holds or waits for any more is only the map's.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(name.to_string()).or_default().clone()
    }
}

/// How long a NodeClaim made here counts as untried: far longer than a batch takes to reach its launch, and short
/// enough that NodeClaims deleted before any launch do not pile up.
pub const UNTRIED_FOR: Duration = Duration::from_secs(300);

/// NodeClaims (by name) this process is creating or created and has not yet tried to launch. No instance can exist
/// for one unless another replica led in between and launched it; then CreateFleet's ClientToken (the same UID and
/// attempt) answers with that instance. So their first launch skips the lookup for an earlier instance, one round
/// trip. Named before the create is sent, so that a launch started by the watch event, which may come before the
/// create's answer, finds it.
pub type UntriedNodeClaims = RecentNames<{ UNTRIED_FOR.as_secs() }>;

/// Names remembered for `FOR_SECS` seconds, then forgotten.
#[derive(Debug, Default)]
pub struct RecentNames<const FOR_SECS: u64> {
    since: Mutex<HashMap<String, Instant>>,
}

impl<const FOR_SECS: u64> RecentNames<FOR_SECS> {
    const FOR: Duration = Duration::from_secs(FOR_SECS);

    pub fn remember(&self, name: &str) {
        self.remember_at(name, Instant::now());
    }

    fn remember_at(&self, name: &str, now: Instant) {
        if let Ok(mut since) = self.since.lock() {
            since.retain(|_, at| now.duration_since(*at) < Self::FOR);
            since.insert(name.to_string(), now);
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.contains_at(name, Instant::now())
    }

    fn contains_at(&self, name: &str, now: Instant) -> bool {
        let Ok(since) = self.since.lock() else { return false };
        since.get(name).is_some_and(|at| now.duration_since(*at) < Self::FOR)
    }

    /// Whether `name` was remembered; from now on it is not.
    pub fn take(&self, name: &str) -> bool {
        self.take_at(name, Instant::now())
    }

    fn take_at(&self, name: &str, now: Instant) -> bool {
        let Ok(mut since) = self.since.lock() else { return false };
        since.remove(name).is_some_and(|at| now.duration_since(at) < Self::FOR)
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
        assert!(known.contains_at("nodesmith/demo/a", start + Duration::from_secs(60)));
        assert!(!known.contains_at("nodesmith/demo/c", start));
        known.forget(["nodesmith/demo/b"]);
        assert!(!known.contains_at("nodesmith/demo/b", start + Duration::from_secs(1)));
        assert!(!known.contains_at("nodesmith/demo/a", start + TEMPLATE_KNOWN_FOR + Duration::from_secs(1)));
    }

    #[test]
    fn launches_needing_one_template_share_its_lock_while_any_holds_it() {
        let making = TemplatesInMaking::default();
        let first = making.lock_of("nodesmith/demo/a");
        assert!(Arc::ptr_eq(&first, &making.lock_of("nodesmith/demo/a")));
        assert!(!Arc::ptr_eq(&first, &making.lock_of("nodesmith/demo/b")));
        drop(first);
        // Locks nobody holds any more leave the map; the one asked for now is held by the map and its caller.
        let again = making.lock_of("nodesmith/demo/a");
        assert_eq!(Arc::strong_count(&again), 2);
        assert_eq!(making.0.lock().map(|l| l.len()).unwrap_or_default(), 1, "only a's lock is kept");
    }

    fn subnet(id: &str, available_ips: i64) -> SubnetInfo {
        SubnetInfo { id: id.into(), zone: "us-east-1a".into(), zone_id: String::new(), available_ips }
    }

    #[test]
    fn subnet_addresses_serve_only_when_every_subnet_was_read_recently() {
        let cache = SubnetAddresses::default();
        let start = Instant::now();
        cache.store_at(&[subnet("subnet-a", 10), subnet("subnet-b", 20)], start);
        let later = start + Duration::from_secs(5);
        let recent = cache.recent_at(&["subnet-b", "subnet-a"], later).expect("both read recently");
        assert_eq!(
            recent.iter().map(|s| (s.id.as_str(), s.available_ips)).collect::<Vec<_>>(),
            [("subnet-b", 20), ("subnet-a", 10)]
        );
        assert!(cache.recent_at(&["subnet-a", "subnet-c"], later).is_none(), "subnet-c was never read");
        assert!(cache.recent_at(&["subnet-a"], start + SUBNET_ADDRESSES_FOR).is_none(), "too old");
        cache.store_at(&[subnet("subnet-a", 9)], later);
        let reread = cache.recent_at(&["subnet-a"], later).expect("read again");
        assert_eq!(reread[0].available_ips, 9);
    }

    #[test]
    fn a_nodeclaim_is_untried_once_and_only_for_a_while() {
        let untried = UntriedNodeClaims::default();
        let start = Instant::now();
        untried.remember_at("default-b7x4k", start);
        untried.remember_at("default-q2m9z", start);
        untried.remember_at("default-zz5gh", start);
        assert!(untried.take_at("default-b7x4k", start + Duration::from_secs(1)));
        assert!(!untried.take_at("default-b7x4k", start + Duration::from_secs(2)), "its first launch was tried");
        assert!(!untried.take_at("default-c4f6n", start), "not made here");
        assert!(!untried.take_at("default-q2m9z", start + UNTRIED_FOR), "made long ago: forgotten");
        untried.forget(["default-zz5gh"]);
        assert!(!untried.take_at("default-zz5gh", start), "its create failed");
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
