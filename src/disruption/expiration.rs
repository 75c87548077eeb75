//! Expiration: a NodeClaim lives at most `expireAfter` from its creation. Forceful, as Karpenter's is: no budget,
//! no do-not-disrupt, no replacement launched first; the drain that follows still honours PodDisruptionBudgets
//! until `terminationGracePeriod` runs out.

use std::time::Duration;

use jiff::Timestamp;

/// When a NodeClaim created at `created` expires; None for `expireAfter: Never`.
pub fn expires_at(created: Timestamp, expire_after: Option<Duration>) -> Option<Timestamp> {
    let after = jiff::SignedDuration::try_from(expire_after?).ok()?;
    created.checked_add(after).ok()
}

pub fn is_expired(created: Timestamp, expire_after: Option<Duration>, now: Timestamp) -> bool {
    expires_at(created, expire_after).is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_expires_at_creation_plus_expire_after_and_never_with_never() {
        let created: Timestamp = "2026-12-02T10:00:00Z".parse().expect("time");
        let two_minutes = Some(Duration::from_secs(120));
        assert!(!is_expired(created, two_minutes, "2026-12-02T10:01:59Z".parse().expect("time")));
        assert!(is_expired(created, two_minutes, "2026-12-02T10:02:00Z".parse().expect("time")));
        assert!(!is_expired(created, None, "2036-12-02T10:02:00Z".parse().expect("time")));
        assert_eq!(
            expires_at(created, Some(Duration::from_secs(720 * 3600))),
            Some("2027-01-01T10:00:00Z".parse().expect("time"))
        );
    }
}
