//! The EventBridge events the interruption queue receives, read into what the controller acts on. Pure: no
//! client; any input, however broken, gives an answer (never a panic).

use serde::Deserialize;

/// What an event means for the instances it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interruption {
    /// Spot reclaims the instance in two minutes.
    SpotInterruption { instance_id: String },
    /// EC2 recommends moving off a spot instance at elevated risk.
    RebalanceRecommendation { instance_id: String },
    /// AWS Health: scheduled maintenance (retirement, reboot) of these instances.
    ScheduledChange { instance_ids: Vec<String> },
    /// The instance is stopping, stopped, shutting down or terminated.
    StateChange { instance_id: String, state: String },
    /// The capacity reservation the instance runs in is being reclaimed.
    CapacityReservationInterruption { instance_id: String },
    /// A well-formed event that asks nothing of us (a `pending` state change, an ASG lifecycle hook, ...).
    Ignored { detail_type: String },
}

impl Interruption {
    /// The `message_type` label of `karpenter_interruption_received_messages_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SpotInterruption { .. } => "spot_interrupted",
            Self::RebalanceRecommendation { .. } => "rebalance_recommendation",
            Self::ScheduledChange { .. } => "scheduled_change",
            Self::StateChange { .. } => "instance_state_change",
            Self::CapacityReservationInterruption { .. } => "capacity_reservation_interrupted",
            Self::Ignored { .. } => "no_op",
        }
    }

    /// The instances the event is about.
    pub fn instance_ids(&self) -> Vec<&str> {
        match self {
            Self::SpotInterruption { instance_id }
            | Self::RebalanceRecommendation { instance_id }
            | Self::StateChange { instance_id, .. }
            | Self::CapacityReservationInterruption { instance_id } => vec![instance_id.as_str()],
            Self::ScheduledChange { instance_ids } => instance_ids.iter().map(String::as_str).collect(),
            Self::Ignored { .. } => Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an EventBridge event nodesmith understands: {0}")]
pub struct ParseError(pub String);

#[derive(Deserialize)]
struct Envelope {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    detail: serde_json::Value,
}

/// States after which the instance no longer holds a node.
pub const GONE_STATES: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];

fn instance_id(detail: &serde_json::Value) -> Result<String, ParseError> {
    detail
        .get("instance-id")
        .and_then(|v| v.as_str())
        .filter(|id| id.starts_with("i-"))
        .map(str::to_string)
        .ok_or_else(|| ParseError("detail.instance-id is missing or not an instance id".into()))
}

#[derive(Deserialize)]
struct Origin {
    #[serde(default)]
    account: String,
    #[serde(default)]
    region: String,
}

/// Whether the event was emitted for `account` and `region`, as EventBridge's envelope says. Anyone allowed to send
/// to the queue could forge an event about our instances; one from another account or region is not acted on.
pub fn is_from(body: &str, account: &str, region: &str) -> bool {
    serde_json::from_str::<Origin>(body).is_ok_and(|o| o.account == account && o.region == region)
}

/// Reads one SQS message body.
pub fn parse(body: &str) -> Result<Interruption, ParseError> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| ParseError(e.to_string()))?;
    let detail = &envelope.detail;
    match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            Ok(Interruption::SpotInterruption { instance_id: instance_id(detail)? })
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            Ok(Interruption::RebalanceRecommendation { instance_id: instance_id(detail)? })
        }
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning") => {
            Ok(Interruption::CapacityReservationInterruption { instance_id: instance_id(detail)? })
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = detail
                .get("state")
                .and_then(|v| v.as_str())
                .ok_or_else(|| ParseError("detail.state is missing".into()))?;
            if GONE_STATES.contains(&state) {
                Ok(Interruption::StateChange { instance_id: instance_id(detail)?, state: state.to_string() })
            } else {
                Ok(Interruption::Ignored { detail_type: format!("{} ({state})", envelope.detail_type) })
            }
        }
        ("aws.health", "AWS Health Event") => {
            let service = detail.get("service").and_then(|v| v.as_str());
            let category = detail.get("eventTypeCategory").and_then(|v| v.as_str());
            if service != Some("EC2") || category != Some("scheduledChange") {
                return Ok(Interruption::Ignored { detail_type: envelope.detail_type });
            }
            let instance_ids: Vec<String> = detail
                .get("affectedEntities")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("entityValue")?.as_str())
                .filter(|id| id.starts_with("i-"))
                .map(str::to_string)
                .collect();
            if instance_ids.is_empty() {
                return Err(ParseError("an EC2 scheduled change that names no instance".into()));
            }
            Ok(Interruption::ScheduledChange { instance_ids })
        }
        _ => Ok(Interruption::Ignored { detail_type: envelope.detail_type }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!("{}/tests/data/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn an_event_is_from_the_account_and_region_its_envelope_names() {
        let body = sample("spot-interruption-warning");
        assert!(is_from(&body, "123456789012", "us-east-1"));
        assert!(!is_from(&body, "210987654321", "us-east-1"), "another account");
        assert!(!is_from(&body, "123456789012", "eu-west-1"), "another region");
        assert!(!is_from(r#"{"detail-type": "x", "source": "aws.ec2"}"#, "123456789012", "us-east-1"), "no origin");
        assert!(!is_from("not json", "123456789012", "us-east-1"));
    }

    #[test]
    fn every_reference_sample_reads_as_its_kind() {
        assert_eq!(
            parse(&sample("spot-interruption-warning")),
            Ok(Interruption::SpotInterruption { instance_id: "i-0b662ef9931388ba0".into() })
        );
        assert_eq!(
            parse(&sample("rebalance-recommendation")),
            Ok(Interruption::RebalanceRecommendation { instance_id: "i-0b662ef9931388ba0".into() })
        );
        assert_eq!(
            parse(&sample("health-scheduled-change-ec2")),
            Ok(Interruption::ScheduledChange { instance_ids: vec!["i-12345678".into()] })
        );
        assert_eq!(
            parse(&sample("instance-state-change-stopping")),
            Ok(Interruption::StateChange { instance_id: "i-abcd1111".into(), state: "stopping".into() })
        );
        assert_eq!(
            parse(&sample("capacity-reservation-interruption-warning")),
            Ok(Interruption::CapacityReservationInterruption { instance_id: "i-0123456789abcdef0".into() })
        );
        assert!(matches!(parse(&sample("instance-state-change-pending-ignored")), Ok(Interruption::Ignored { .. })));
        assert!(matches!(parse(&sample("asg-lifecycle-terminate")), Ok(Interruption::Ignored { .. })));
    }

    #[test]
    fn health_events_of_other_services_or_categories_are_ignored() {
        let other = sample("health-scheduled-change-ec2").replace("\"service\": \"EC2\"", "\"service\": \"RDS\"");
        assert!(matches!(parse(&other), Ok(Interruption::Ignored { .. })));
        let issue = sample("health-scheduled-change-ec2").replace("scheduledChange", "issue");
        assert!(matches!(parse(&issue), Ok(Interruption::Ignored { .. })));
    }

    #[test]
    fn broken_messages_are_errors() {
        assert!(parse("").is_err());
        assert!(parse("{}").is_err());
        assert!(parse(r#"{"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning"}"#).is_err());
        let not_an_instance = sample("spot-interruption-warning").replace("i-0b662ef9931388ba0", "vol-1");
        assert!(parse(&not_an_instance).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_json_never_panics(source in "aws\\.(ec2|health)|[a-z.]{0,10}", detail in ".{0,40}") {
            let body = format!(r#"{{"source": "{source}", "detail-type": "EC2 Instance State-change Notification", "detail": {{"state": "{detail}", "instance-id": "{detail}"}}}}"#);
            let _ = parse(&body);
        }
    }
}
