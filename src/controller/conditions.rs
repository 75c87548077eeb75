//! Status conditions as Karpenter writes them: one per type, the transition time kept while the status holds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status does not change.
/// Returns whether anything changed.
pub fn set(conditions: &mut Vec<Condition>, type_: &str, status: bool, reason: &str, message: &str) -> bool {
    let status = if status { "True" } else { "False" };
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status == status && existing.reason == reason && existing.message == message {
            return false;
        }
        if existing.status != status {
            existing.last_transition_time = Time(k8s_openapi::jiff::Timestamp::now());
        }
        existing.status = status.into();
        existing.reason = reason.into();
        existing.message = message.into();
        return true;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: None,
    });
    true
}

/// Adds each of `types` that is not there yet as Unknown (reason `AwaitingReconciliation`), as Karpenter's
/// NodeClaims carry the conditions still to come; each turns True later with how long it waited.
pub fn awaiting(conditions: &mut Vec<Condition>, types: &[&str]) {
    for type_ in types {
        if conditions.iter().any(|c| c.type_ == *type_) {
            continue;
        }
        conditions.push(Condition {
            type_: (*type_).into(),
            status: "Unknown".into(),
            reason: "AwaitingReconciliation".into(),
            message: "object is awaiting reconciliation".into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            observed_generation: None,
        });
    }
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_still_to_come_wait_as_unknown_and_turn_true_with_a_new_transition_time() {
        let mut conditions = Vec::new();
        set(&mut conditions, "Launched", true, "Launched", "");
        awaiting(&mut conditions, &["Launched", "Registered"]);
        assert_eq!(conditions.len(), 2, "Launched kept as it was");
        assert_eq!(conditions[1].status, "Unknown");
        assert!(!is_true(&conditions, "Registered"));
        let waited_from = conditions[1].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(set(&mut conditions, "Registered", true, "Registered", ""));
        assert!(conditions[1].last_transition_time.0 > waited_from.0);
        awaiting(&mut conditions, &["Registered"]);
        assert!(is_true(&conditions, "Registered"), "a condition there is never set back to Unknown");
    }

    #[test]
    fn setting_the_same_condition_twice_changes_nothing() {
        let mut conditions = Vec::new();
        assert!(set(&mut conditions, "Launched", true, "Launched", ""));
        let first = conditions[0].last_transition_time.clone();
        assert!(!set(&mut conditions, "Launched", true, "Launched", ""));
        assert_eq!(conditions[0].last_transition_time, first);
        assert!(is_true(&conditions, "Launched"));
        assert!(set(&mut conditions, "Launched", false, "LaunchFailed", "no capacity"));
        assert!(!is_true(&conditions, "Launched"));
        assert_eq!(conditions.len(), 1);
    }
}
