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

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

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
