//! The interruption engine: long-polls the queue `setup` made (EventBridge → SQS) and moves pods off instances
//! EC2 is about to take back, before it does. A handled message is deleted; one that does not parse is logged,
//! counted and deleted; one about an instance that is not ours is deleted; a failed handler leaves the message
//! to come back after its visibility timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::leader::Leadership;
use super::{Context, Error};
use crate::apis::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use crate::apis::nodeclaim::NodeClaim;
use crate::catalog::{CapacityType, OfferingKey};
use crate::cloud::error::CloudError;
use crate::cloud::instances::instance_id_from_provider_id;
use crate::cloud::interruption_message::{self, Interruption};

const WAIT_TIME_SECONDS: i32 = 20;
const MAX_MESSAGES: i32 = 10;
/// Receive loops run side by side: a burst (a spot reclaim of a whole pool) is drained in parallel, 10 at a time
/// each, rather than one receive after another.
const POLLERS: usize = 4;

/// What to do on a rebalance recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebalancePolicy {
    /// Record an Event on the node, nothing more (Karpenter's behaviour).
    Event,
    /// Treat it like a spot interruption: replace the node now.
    Replace,
}

/// The queue URL for a name or URL.
async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, CloudError> {
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return Ok(queue.to_string());
    }
    let answer = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("sqs:GetQueueUrl", Some(queue), e))?;
    answer
        .queue_url()
        .map(str::to_string)
        .ok_or_else(|| CloudError::Call { action: "sqs:GetQueueUrl", message: format!("no URL for queue {queue}") })
}

pub async fn run(ctx: Arc<Context>, leadership: Leadership, queue: String, rebalance: RebalancePolicy) {
    let url = loop {
        match queue_url(&ctx.sqs, &queue).await {
            Ok(url) => break url,
            Err(error) => {
                tracing::warn!(queue, "interruption queue not reachable, retrying: {error}");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };
    tracing::info!(queue = %url, pollers = POLLERS, "interruption engine reading its queue");
    let pollers = (0..POLLERS).map(|_| poll(&ctx, &leadership, &url, rebalance));
    futures::future::join_all(pollers).await;
}

async fn poll(ctx: &Context, leadership: &Leadership, url: &str, rebalance: RebalancePolicy) {
    loop {
        if !leadership.is_leader() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let received = ctx
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(MAX_MESSAGES)
            .wait_time_seconds(WAIT_TIME_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await;
        let messages = match received {
            Ok(answer) => answer.messages.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(
                    "sqs:ReceiveMessage failed, retrying: {}",
                    CloudError::from_sdk("sqs:ReceiveMessage", Some(url), error)
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        // One index per batch: instance id → NodeClaim, instead of a list per message.
        let index: HashMap<String, Arc<NodeClaim>> = ctx
            .state
            .nodeclaims
            .state()
            .into_iter()
            .filter_map(|c| {
                let id = instance_id_from_provider_id(c.status.as_ref()?.provider_id.as_deref()?)?.to_string();
                Some((id, c))
            })
            .collect();
        let handlers = messages.iter().map(|m| handle_message(ctx, m, &index, rebalance));
        let done: Vec<&str> = futures::future::join_all(handlers).await.into_iter().flatten().collect();
        delete_messages(ctx, url, &done).await;
    }
}

/// Deletes handled messages, ten per call.
async fn delete_messages(ctx: &Context, url: &str, receipts: &[&str]) {
    for chunk in receipts.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(*receipt).build().ok()
            })
            .collect();
        match ctx.sqs.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
            Ok(answer) => {
                for _ in answer.successful() {
                    ctx.metrics.interruption_deleted();
                }
                for failed in answer.failed() {
                    tracing::warn!(
                        code = failed.code(),
                        "sqs:DeleteMessageBatch left a message: {:?}",
                        failed.message()
                    );
                }
            }
            Err(error) => tracing::warn!(
                "sqs:DeleteMessageBatch failed (the messages come back): {}",
                CloudError::from_sdk("sqs:DeleteMessageBatch", Some(url), error)
            ),
        }
    }
}

/// Handles one message; returns its receipt handle when it may be deleted.
async fn handle_message<'m>(
    ctx: &Context,
    message: &'m Message,
    index: &HashMap<String, Arc<NodeClaim>>,
    rebalance: RebalancePolicy,
) -> Option<&'m str> {
    let body = message.body().unwrap_or_default();
    let outcome = match interruption_message::parse(body) {
        Ok(interruption) => {
            ctx.metrics.interruption_received(interruption.kind());
            handle(ctx, &interruption, index, rebalance).await
        }
        Err(error) => {
            ctx.metrics.interruption_received("parse_error");
            tracing::warn!(
                message_id = message.message_id().unwrap_or_default(),
                "deleting a message that does not parse: {error}"
            );
            Ok(())
        }
    };
    if let Err(error) = outcome {
        // Left in the queue: it comes back after the visibility timeout.
        tracing::warn!(message_id = message.message_id().unwrap_or_default(), "handling failed, will retry: {error}");
        return None;
    }
    if let Some(sent) = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|t| t.parse::<u64>().ok())
    {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        ctx.metrics.interruption_queue_duration(now.saturating_sub(sent) as f64 / 1000.0);
    }
    message.receipt_handle()
}

/// Acts on one event. Instances that are not ours are ignored (and their message deleted).
async fn handle(
    ctx: &Context,
    interruption: &Interruption,
    index: &HashMap<String, Arc<NodeClaim>>,
    rebalance: RebalancePolicy,
) -> Result<(), Error> {
    for instance_id in interruption.instance_ids() {
        let Some(claim) = index.get(instance_id) else {
            tracing::debug!(instance_id, kind = interruption.kind(), "not one of our instances");
            continue;
        };
        let (reason, note, replace) = match interruption {
            Interruption::SpotInterruption { .. } => {
                mark_spot_offering_unavailable(ctx, claim);
                ("SpotInterrupted", "EC2 reclaims this spot instance in 2 minutes", true)
            }
            Interruption::RebalanceRecommendation { .. } => (
                "RebalanceRecommendation",
                "EC2 recommends moving off this spot instance",
                rebalance == RebalancePolicy::Replace,
            ),
            Interruption::ScheduledChange { .. } => {
                ("ScheduledChange", "AWS scheduled maintenance of this instance", true)
            }
            Interruption::StateChange { state, .. } => {
                let reason = if state == "stopping" || state == "stopped" { "Stopping" } else { "Terminating" };
                (reason, "the instance is stopping or terminating", true)
            }
            Interruption::CapacityReservationInterruption { .. } => {
                ("CapacityReservationInterrupted", "the capacity reservation is being reclaimed", true)
            }
            Interruption::Ignored { .. } => continue,
        };
        tracing::info!(nodeclaim = %claim.name_any(), instance_id, reason, "interruption");
        publish(ctx, claim, reason, note).await;
        if replace && claim.metadata.deletion_timestamp.is_none() {
            let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
            match api.delete(&claim.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if super::is_not_found(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

/// The next launch for these pods must not land in the same (type, zone) spot pool.
fn mark_spot_offering_unavailable(ctx: &Context, claim: &NodeClaim) {
    let labels = claim.labels();
    if labels.get(CAPACITY_TYPE_LABEL).map(String::as_str) != Some(CapacityType::Spot.as_str()) {
        return;
    }
    if let (Some(instance_type), Some(zone)) = (labels.get(INSTANCE_TYPE_LABEL), labels.get(ZONE_LABEL)) {
        ctx.unavailable.mark(
            OfferingKey { instance_type: instance_type.clone(), zone: zone.clone(), capacity_type: CapacityType::Spot },
            "SpotInterruption",
        );
    }
}

/// The same Event on the NodeClaim and on its Node.
async fn publish(ctx: &Context, claim: &NodeClaim, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Interruption".into(),
        secondary: None,
    };
    let mut references = vec![claim.object_ref(&())];
    if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| ctx.state.node(n)) {
        references.push(Node::object_ref(&node, &()));
    }
    for reference in references {
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!("could not record an interruption event: {error}");
        }
    }
}
