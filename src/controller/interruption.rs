//! The interruption engine: long-polls the queue `setup` made (EventBridge → SQS) and moves pods off instances
//! EC2 is about to take back, before it does. A handled message is deleted; one that does not parse is logged,
//! counted and deleted; one about an instance that is not ours is deleted; a failed handler leaves the message
//! to come back after its visibility timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::leader::Leadership;
use super::{Context, Error, events};
use crate::apis::nodeclaim::NodeClaim;
use crate::catalog::{CapacityType, OfferingKey};
use crate::cloud::CloudProvider;
use crate::cloud::error::CloudError;
use crate::cloud::instances::instance_id_from_provider_id;
use crate::cloud::interruption_message::{self, Interruption};
use crate::cloud::queue::QueueMessage;
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};

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

/// The `controller` label of this module's cloud calls.
const CONTROLLER: &str = "interruption";

pub async fn run(ctx: Arc<Context>, leadership: Leadership, queue: String, rebalance: RebalancePolicy) {
    let cloud = ctx.cloud(CONTROLLER);
    let url = loop {
        match cloud.queue_url(&queue).await {
            Ok(url) => break url,
            Err(error) => {
                tracing::warn!(queue, "interruption queue not reachable, retrying: {error}");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };
    tracing::info!(queue = %url, pollers = POLLERS, "interruption engine reading its queue");
    let pollers = (0..POLLERS).map(|_| poll(&ctx, &cloud, &leadership, &url, rebalance));
    futures::future::join_all(pollers).await;
}

async fn poll(
    ctx: &Context,
    cloud: &dyn CloudProvider,
    leadership: &Leadership,
    url: &str,
    rebalance: RebalancePolicy,
) {
    loop {
        if !leadership.is_leader() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let origin = ctx.cluster.account_and_region();
        let received = receive_and_handle(cloud, &ctx.metrics, url, origin, |batch| {
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
            async move {
                let handlers = batch.iter().map(|interruption| handle(ctx, interruption, &index, rebalance));
                futures::future::join_all(handlers).await
            }
        })
        .await;
        if let Err(error) = received {
            tracing::warn!("{error}; retrying");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

/// One receive: messages are parsed (one that does not parse, or that comes from another account or region than
/// `origin`'s, is logged, counted and deleted), the parsed ones handed to `handle` as a batch, and those handled
/// (or refused) deleted. A message whose handling failed
/// stays, to come back after its visibility timeout. Returns how many messages were received.
async fn receive_and_handle<F, Fut>(
    cloud: &dyn CloudProvider,
    metrics: &crate::telemetry::Metrics,
    url: &str,
    origin: Option<(&str, &str)>,
    handle: F,
) -> Result<usize, CloudError>
where
    F: FnOnce(Vec<Interruption>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<(), Error>>>,
{
    let messages = cloud.receive_messages(url).await?;
    if messages.is_empty() {
        return Ok(0);
    }
    let mut done: Vec<String> = Vec::new();
    let mut parsed: Vec<(&QueueMessage, Interruption)> = Vec::new();
    for message in &messages {
        let interruption = match interruption_message::parse(&message.body) {
            Ok(interruption) => interruption,
            Err(error) => {
                metrics.interruption_received("parse_error");
                tracing::warn!(message_id = message.id, "deleting a message that does not parse: {error}");
                done.push(message.receipt.clone());
                continue;
            }
        };
        if let Some((account, region)) = origin
            && !interruption_message::is_from(&message.body, account, region)
        {
            metrics.interruption_refused("foreign_origin");
            tracing::warn!(
                message_id = message.id,
                "deleting an event not from this cluster's account {account} and region {region}: it is not acted on"
            );
            done.push(message.receipt.clone());
            continue;
        }
        metrics.interruption_received(interruption.kind());
        parsed.push((message, interruption));
    }
    let (handled, interruptions): (Vec<&QueueMessage>, Vec<Interruption>) = parsed.into_iter().unzip();
    let outcomes = handle(interruptions).await;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    for (message, outcome) in handled.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                if let Some(sent) = message.sent_at_millis {
                    metrics.interruption_queue_duration(now.saturating_sub(sent) as f64 / 1000.0);
                }
                done.push(message.receipt.clone());
            }
            // Left in the queue: it comes back after the visibility timeout.
            Err(error) => tracing::warn!(message_id = message.id, "handling failed, will retry: {error}"),
        }
    }
    if !done.is_empty() {
        match cloud.delete_messages(url, &done).await {
            Ok(deleted) => (0..deleted).for_each(|_| metrics.interruption_deleted()),
            Err(error) => tracing::warn!("handled messages not deleted (they come back): {error}"),
        }
    }
    Ok(messages.len())
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
                // The queue's senders are trusted less than EC2 itself: drain only an instance EC2 says is going.
                if !state_change_confirmed(&ctx.cloud(CONTROLLER), instance_id).await? {
                    tracing::warn!(
                        nodeclaim = %claim.name_any(),
                        instance_id,
                        state,
                        "a state change EC2 does not confirm (the instance is running): not acted on"
                    );
                    ctx.metrics.interruption_refused("unconfirmed_state_change");
                    continue;
                }
                let reason = if state == "stopping" || state == "stopped" { "Stopping" } else { "Terminating" };
                (reason, "the instance is stopping or terminating", true)
            }
            Interruption::CapacityReservationInterruption { .. } => {
                ("CapacityReservationInterrupted", "the capacity reservation is being reclaimed", true)
            }
            Interruption::Ignored { .. } => continue,
        };
        tracing::info!(nodeclaim = %claim.name_any(), instance_id, reason, "interruption");
        // The Events go beside the deletion, not before it: in a burst each API call is the wait of every message
        // behind it (three calls one after another made a burst of 1,000 take 23 s).
        let deleting = async {
            if !replace || claim.metadata.deletion_timestamp.is_some() {
                return Ok(());
            }
            let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
            match api.delete(&claim.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    // Karpenter's reason label for an interruption is the message's kind.
                    let label = |key: &str| claim.labels().get(key).cloned().unwrap_or_default();
                    let (pool, capacity) = (label(NODEPOOL_LABEL), label(CAPACITY_TYPE_LABEL));
                    ctx.metrics.nodeclaim_disrupted(interruption.kind(), &pool, &capacity);
                    Ok(())
                }
                Err(error) if super::is_not_found(&error) => Ok(()),
                Err(error) => Err(Error::from(error)),
            }
        };
        let ((), deleted) = tokio::join!(publish(ctx, claim, reason, note), deleting);
        deleted?;
    }
    Ok(())
}

/// Whether EC2 agrees the instance is stopping or gone (an instance it no longer knows is gone).
async fn state_change_confirmed(cloud: &dyn CloudProvider, instance_id: &str) -> Result<bool, CloudError> {
    Ok(cloud
        .describe_instance(instance_id)
        .await?
        .is_none_or(|instance| interruption_message::GONE_STATES.contains(&instance.state.as_str())))
}

/// The next launch for these pods must not land in the same (type, zone) spot pool.
fn mark_spot_offering_unavailable(ctx: &Context, claim: &NodeClaim) {
    let labels = claim.labels();
    if labels.get(CAPACITY_TYPE_LABEL).map(String::as_str) != Some(CapacityType::Spot.as_str()) {
        return;
    }
    if let (Some(instance_type), Some(zone)) = (labels.get(INSTANCE_TYPE_LABEL), labels.get(ZONE_LABEL)) {
        ctx.caches().unavailable.mark(
            OfferingKey { instance_type: instance_type.clone(), zone: zone.clone(), capacity_type: CapacityType::Spot },
            "SpotInterruption",
        );
    }
}

/// The same Event on the NodeClaim and on its Node.
async fn publish(ctx: &Context, claim: &NodeClaim, reason: &str, note: &str) {
    let mut references = vec![claim.object_ref(&())];
    if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| ctx.state.node(n)) {
        references.push(Node::object_ref(&node, &()));
    }
    let publishing = references
        .iter()
        .map(|reference| events::publish(&ctx.recorder, reference, EventType::Warning, reason, "Interruption", note));
    futures::future::join_all(publishing).await;
}

#[cfg(test)]
mod receive_tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::telemetry::Metrics;

    fn sample(name: &str) -> String {
        let path = format!("{}/tests/data/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const ORIGIN: Option<(&str, &str)> = Some(("123456789012", "us-east-1"));

    fn message(id: &str, body: String) -> QueueMessage {
        QueueMessage { id: id.into(), receipt: format!("receipt-{id}"), body, sent_at_millis: Some(0) }
    }

    #[tokio::test]
    async fn handled_and_unreadable_messages_are_deleted_and_a_failed_one_comes_back() {
        let cloud = FakeCloud::default();
        cloud.queue.lock().expect("queue").extend([
            message("spot", sample("spot-interruption-warning")),
            message("garbage", "not an event".into()),
            message("rebalance", sample("rebalance-recommendation")),
        ]);
        let metrics = Metrics::default();
        let mut seen = Vec::new();
        let received = receive_and_handle(&cloud, &metrics, "https://sqs.example/q", ORIGIN, |batch| {
            seen = batch.iter().map(|i| i.kind().to_string()).collect();
            // The spot interruption is handled; the rebalance recommendation's handling fails.
            async { vec![Ok(()), Err(Error::Invalid("the API server is away".into()))] }
        })
        .await
        .expect("a receive");
        assert_eq!(received, 3);
        assert_eq!(seen, ["spot_interrupted", "rebalance_recommendation"]);
        assert_eq!(*cloud.deleted_messages.lock().expect("deleted"), ["receipt-garbage", "receipt-spot"]);
        let text = metrics.encode();
        assert!(
            text.contains(r#"karpenter_interruption_received_messages_total{message_type="parse_error"} 1"#),
            "{text}"
        );
        assert!(text.contains("karpenter_interruption_deleted_messages_total 2"), "{text}");
        assert!(text.contains("karpenter_interruption_message_queue_duration_seconds_count 1"), "{text}");
    }

    #[tokio::test]
    async fn an_event_from_another_account_or_region_is_deleted_unhandled_and_counted() {
        let cloud = FakeCloud::default();
        let ours = sample("spot-interruption-warning");
        let other_account = ours.replace("123456789012", "210987654321");
        let other_region = ours.replace("\"us-east-1\"", "\"eu-west-1\"");
        assert_ne!(ours, other_account);
        assert_ne!(ours, other_region);
        cloud.queue.lock().expect("queue").extend([
            message("forged-account", other_account),
            message("forged-region", other_region),
            message("ours", ours),
        ]);
        let metrics = Metrics::default();
        let mut handled = 0;
        receive_and_handle(&cloud, &metrics, "https://sqs.example/q", ORIGIN, |batch| {
            handled = batch.len();
            async move { batch.iter().map(|_| Ok(())).collect() }
        })
        .await
        .expect("a receive");
        assert_eq!(handled, 1, "only the event from this cluster's account and region is acted on");
        let deleted = cloud.deleted_messages.lock().expect("deleted").clone();
        assert_eq!(deleted, ["receipt-forged-account", "receipt-forged-region", "receipt-ours"]);
        let text = metrics.encode();
        assert!(text.contains(r#"nodesmith_interruption_refused_messages_total{reason="foreign_origin"} 2"#), "{text}");
    }

    #[tokio::test]
    async fn a_state_change_is_believed_only_when_ec2_confirms_it() {
        let cloud = FakeCloud::default();
        cloud.add_instance("i-running", Some("claim"), std::time::Duration::ZERO);
        assert!(!state_change_confirmed(&cloud, "i-running").await.expect("described"), "a forged stop");
        cloud.terminate_instances(&["i-running".into()]).await.expect("terminated");
        assert!(state_change_confirmed(&cloud, "i-running").await.expect("described"));
        assert!(state_change_confirmed(&cloud, "i-unknown").await.expect("described"), "EC2 no longer knows it");
        cloud.fail_next("DescribeInstance", "RequestLimitExceeded");
        assert!(state_change_confirmed(&cloud, "i-running").await.is_err(), "an error is not a confirmation");
    }

    #[tokio::test]
    async fn a_failed_receive_is_an_error_and_deletes_nothing() {
        let cloud = FakeCloud::default();
        cloud.queue.lock().expect("queue").push_back(message("spot", sample("spot-interruption-warning")));
        cloud.fail_next("ReceiveMessage", "AWS.SimpleQueueService.NonExistentQueue");
        let metrics = Metrics::default();
        let error = receive_and_handle(&cloud, &metrics, "https://sqs.example/q", ORIGIN, |_| async { Vec::new() })
            .await
            .expect_err("the receive fails");
        assert_eq!(error.code(), "AWS.SimpleQueueService.NonExistentQueue");
        assert!(cloud.deleted_messages.lock().expect("deleted").is_empty());
        assert_eq!(cloud.queue.lock().expect("queue").len(), 1, "the message stays queued");
    }
}
