//! The interruption queue and the EventBridge rules that feed it.

use std::collections::HashMap;

use aws_sdk_eventbridge::types::{Tag as RuleTag, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use super::{Setup, SetupError};
use crate::bootstrap::ownership::{queue_is_ours, rule_is_ours};
use crate::bootstrap::report::Action;
use crate::cloud::error::CloudError;
use crate::names::OWNER_TAG;

/// Messages older than the spot warning's two minutes are of no use; five minutes leaves room for retries.
const RETENTION_SECONDS: &str = "300";
const TARGET_ID: &str = "nodesmith-interruption-queue";

/// (rule kind, source, detail type) of every event the controller handles.
pub const INTERRUPTION_EVENTS: [(&str, &str, &str); 5] = [
    ("scheduled-change", "aws.health", "AWS Health Event"),
    ("spot-interruption", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("rebalance", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
    ("instance-state-change", "aws.ec2", "EC2 Instance State-change Notification"),
    ("capacity-reservation-interruption", "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
];

/// Lets this cluster's interruption rules send, and nothing else (not another account's rules, which EventBridge
/// would also send as `events.amazonaws.com`); refuses anything not over TLS. `rule_arns` sorted, as Terraform's
/// module lists them.
pub fn queue_policy(queue_arn: &str, rule_arns: &[String]) -> Value {
    let mut rule_arns = rule_arns.to_vec();
    rule_arns.sort();
    json!({
        "Version": "2012-10-17",
        "Id": "nodesmith-interruption-queue",
        "Statement": [
            {
                "Sid": "AllowInterruptionRules",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}}
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}
            }
        ]
    })
}

pub fn event_pattern(source: &str, detail_type: &str) -> Value {
    json!({"source": [source], "detail-type": [detail_type]})
}

impl Setup<'_> {
    /// The ARNs of the interruption rules, known before they exist.
    fn rule_arns(&self) -> Vec<String> {
        let cluster = &self.cluster;
        INTERRUPTION_EVENTS
            .iter()
            .map(|(kind, _, _)| {
                let name = self.names.rule(kind);
                format!("arn:{}:events:{}:{}:rule/{name}", cluster.partition, cluster.region, cluster.account_id)
            })
            .collect()
    }

    fn queue_attributes(&self, queue_arn: &str) -> HashMap<QueueAttributeName, String> {
        HashMap::from([
            (QueueAttributeName::MessageRetentionPeriod, RETENTION_SECONDS.to_string()),
            (QueueAttributeName::SqsManagedSseEnabled, "true".to_string()),
            (QueueAttributeName::Policy, queue_policy(queue_arn, &self.rule_arns()).to_string()),
        ])
    }

    /// The report's view of exactly what CreateQueue/SetQueueAttributes send.
    fn queue_spec(&self, wanted: &HashMap<QueueAttributeName, String>) -> Value {
        let attributes: serde_json::Map<String, Value> = wanted
            .iter()
            .map(|(name, value)| {
                let value = match name {
                    QueueAttributeName::Policy => serde_json::from_str(value).unwrap_or_else(|_| json!(value)),
                    _ => json!(value),
                };
                (name.as_str().to_string(), value)
            })
            .collect();
        json!({"attributes": attributes, "tags": {OWNER_TAG: self.options.cluster}})
    }

    fn rule_spec(&self, kind: &str, pattern: &Value) -> Value {
        json!({"kind": kind, "event_pattern": pattern, "tags": {OWNER_TAG: self.options.cluster}})
    }

    /// Gets or creates the queue and brings its attributes to what they should be; returns its ARN.
    pub(super) async fn interruption_queue(&mut self) -> Result<String, SetupError> {
        let name = self.names.queue.clone();
        let arn =
            format!("arn:{}:sqs:{}:{}:{name}", self.cluster.partition, self.cluster.region, self.cluster.account_id);
        let wanted = self.queue_attributes(&arn);
        let spec = self.queue_spec(&wanted);
        let url = match self.sqs.get_queue_url().queue_name(&name).send().await {
            Ok(found) => found.queue_url,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => None,
            Err(error) => return Err(CloudError::from_sdk("sqs:GetQueueUrl", Some(&name), error).into()),
        };
        let Some(url) = url else {
            if self.ledger.may_mutate() {
                self.sqs
                    .create_queue()
                    .queue_name(&name)
                    .set_attributes(Some(wanted))
                    .tags(OWNER_TAG, &self.options.cluster)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("sqs:CreateQueue", Some(&name), e))?;
            }
            self.ledger.record("sqs-queue", &name, Action::Created, 1).spec(spec);
            return Ok(arn);
        };
        if !queue_is_ours(&self.sqs, &url, &name, &self.options.cluster).await? {
            return Err(SetupError::NotOurs { kind: "SQS queue", name, cluster: self.options.cluster.clone() });
        }
        let current = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("sqs:GetQueueAttributes", Some(&name), e))?
            .attributes
            .unwrap_or_default();
        let differs = wanted.iter().any(|(key, value)| match (key, current.get(key)) {
            // Policies are compared as JSON: the service may reformat them.
            (QueueAttributeName::Policy, Some(have)) => {
                serde_json::from_str::<Value>(have).ok() != serde_json::from_str::<Value>(value).ok()
            }
            (_, have) => have != Some(value),
        });
        if differs {
            if self.ledger.may_mutate() {
                self.sqs
                    .set_queue_attributes()
                    .queue_url(&url)
                    .set_attributes(Some(wanted))
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("sqs:SetQueueAttributes", Some(&name), e))?;
            }
            self.ledger.record("sqs-queue", &name, Action::Updated, 1).spec(spec);
        } else {
            self.ledger.record("sqs-queue", &name, Action::Unchanged, 0).spec(spec);
        }
        Ok(arn)
    }

    /// One rule per kind of interruption event, each targeting the queue.
    pub(super) async fn interruption_rules(&mut self, queue_arn: &str) -> Result<(), SetupError> {
        for (kind, source, detail_type) in INTERRUPTION_EVENTS {
            let name = self.names.rule(kind);
            let pattern = event_pattern(source, detail_type);
            let spec = self.rule_spec(kind, &pattern);
            let current = match self.events.describe_rule().name(&name).send().await {
                Ok(found) => Some(found),
                Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => None,
                Err(error) => return Err(CloudError::from_sdk("events:DescribeRule", Some(&name), error).into()),
            };
            match current {
                None => {
                    if self.ledger.may_mutate() {
                        self.events
                            .put_rule()
                            .name(&name)
                            .event_pattern(pattern.to_string())
                            .description(format!(
                                "nodesmith: {detail_type} to the interruption queue of {}",
                                self.options.cluster
                            ))
                            .tags(
                                RuleTag::builder()
                                    .key(OWNER_TAG)
                                    .value(&self.options.cluster)
                                    .build()
                                    .map_err(|e| CloudError::call("events:PutRule", e.to_string()))?,
                            )
                            .send()
                            .await
                            .map_err(|e| CloudError::from_sdk("events:PutRule", Some(&name), e))?;
                    }
                    self.ledger.record("eventbridge-rule", &name, Action::Created, 1).spec(spec);
                }
                Some(found) => {
                    let arn = found.arn().unwrap_or_default().to_string();
                    if !rule_is_ours(&self.events, &arn, &name, &self.options.cluster).await? {
                        return Err(SetupError::NotOurs {
                            kind: "EventBridge rule",
                            name,
                            cluster: self.options.cluster.clone(),
                        });
                    }
                    let have: Option<Value> = found.event_pattern().and_then(|p| serde_json::from_str(p).ok());
                    if have.as_ref() == Some(&pattern) {
                        self.ledger.record("eventbridge-rule", &name, Action::Unchanged, 0).spec(spec);
                    } else {
                        if self.ledger.may_mutate() {
                            self.events
                                .put_rule()
                                .name(&name)
                                .event_pattern(pattern.to_string())
                                .send()
                                .await
                                .map_err(|e| CloudError::from_sdk("events:PutRule", Some(&name), e))?;
                        }
                        self.ledger.record("eventbridge-rule", &name, Action::Updated, 1).spec(spec);
                    }
                }
            }
            self.rule_target(&name, queue_arn).await?;
        }
        Ok(())
    }

    async fn rule_target(&mut self, rule: &str, queue_arn: &str) -> Result<(), SetupError> {
        let planned_only = self.ledger.dry_run
            && self
                .ledger
                .resources
                .iter()
                .any(|r| r.kind == "eventbridge-rule" && r.id == rule && r.action == Action::Created);
        let targets = if planned_only {
            Vec::new()
        } else {
            self.events
                .list_targets_by_rule()
                .rule(rule)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("events:ListTargetsByRule", Some(rule), e))?
                .targets
                .unwrap_or_default()
        };
        let id = format!("{rule} -> {queue_arn}");
        if targets.iter().any(|t| t.id() == TARGET_ID && t.arn() == queue_arn) {
            self.ledger
                .record("eventbridge-target", id, Action::Unchanged, 0)
                .spec(json!({"id": TARGET_ID, "arn": queue_arn}));
            return Ok(());
        }
        if self.ledger.may_mutate() {
            let target = Target::builder()
                .id(TARGET_ID)
                .arn(queue_arn)
                .build()
                .map_err(|e| CloudError::call("events:PutTargets", e.to_string()))?;
            self.events
                .put_targets()
                .rule(rule)
                .targets(target)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("events:PutTargets", Some(rule), e))?;
        }
        self.ledger
            .record("eventbridge-target", id, Action::Created, 1)
            .spec(json!({"id": TARGET_ID, "arn": queue_arn}));
        Ok(())
    }
}
