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
use tokio::sync::Semaphore;

use super::leader::Leadership;
use super::{Context, Error, events};
use crate::apis::nodeclaim::NodeClaim;
use crate::catalog::{CapacityType, OfferingKey};
use crate::cloud::CloudProvider;
use crate::cloud::error::CloudError;
use crate::cloud::instances::instance_id_from_provider_id;
use crate::cloud::interruption_message::{self, Interruption};
use crate::cloud::queue::{MAX_MESSAGES, QueueMessage};
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};

/// Receive loops run side by side: a burst (a spot reclaim of a whole pool) is drained in parallel, 10 at a time
/// each, rather than one receive after another.
const POLLERS: usize = 4;

/// Messages being handled at once, across the pollers. A poller hands its batch to a task of its own and receives
/// the next at once, while there is room: a burst's handling waits on the API server (which is also busy with
/// the terminations the burst starts), and a poller waiting for its ten before receiving again made 1,000 messages
/// take 18 s at 4 x 10 per round.
const IN_FLIGHT: usize = 200;

/// Interruption Events being recorded at once (each is a request, and a connection, to the API server).
static EVENTS_IN_FLIGHT: Semaphore = Semaphore::const_new(100);

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
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let pollers = (0..POLLERS).map(|_| poll(&ctx, &leadership, &url, rebalance, &in_flight));
    futures::future::join_all(pollers).await;
}

async fn poll(
    ctx: &Arc<Context>,
    leadership: &Leadership,
    url: &str,
    rebalance: RebalancePolicy,
    in_flight: &Arc<Semaphore>,
) {
    let cloud = ctx.cloud(CONTROLLER);
    loop {
        if !leadership.is_leader() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        // Room for a whole receive's messages before receiving them.
        let Ok(room) = in_flight.clone().acquire_many_owned(MAX_MESSAGES as u32).await else { return };
        let received = match receive(&cloud, &ctx.metrics, url, ctx.cluster.account_and_region()).await {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!("{error}; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if received.parsed.is_empty() && received.done.is_empty() {
            // The long poll ended with nothing.
            continue;
        }
        let (ctx, url) = (ctx.clone(), url.to_string());
        tokio::spawn(async move {
            let cloud = ctx.cloud(CONTROLLER);
            let outcomes = handle_batch(&ctx, received.interruptions(), rebalance).await;
            settle(&cloud, &ctx.metrics, &url, received, outcomes).await;
            drop(room);
        });
    }
}

/// Acts on one receive's events. One index per batch: instance id → NodeClaim, instead of a list per message.
async fn handle_batch(ctx: &Context, batch: Vec<&Interruption>, rebalance: RebalancePolicy) -> Vec<Result<(), Error>> {
    if batch.is_empty() {
        return Vec::new();
    }
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
    let handlers = batch.into_iter().map(|interruption| handle(ctx, interruption, &index, rebalance));
    futures::future::join_all(handlers).await
}

/// One receive's messages: those to act on, parsed, and the receipts of those already done with (a message that
/// does not parse, or that comes from another account or region than the cluster's, is logged, counted and done).
struct Received {
    parsed: Vec<(QueueMessage, Interruption)>,
    done: Vec<String>,
}

impl Received {
    fn interruptions(&self) -> Vec<&Interruption> {
        self.parsed.iter().map(|(_, interruption)| interruption).collect()
    }
}

/// One receive from the queue, its messages sorted into those to act on and those done with.
async fn receive(
    cloud: &dyn CloudProvider,
    metrics: &crate::telemetry::Metrics,
    url: &str,
    origin: Option<(&str, &str)>,
) -> Result<Received, CloudError> {
    let messages = cloud.receive_messages(url).await?;
    let mut received = Received { parsed: Vec::new(), done: Vec::new() };
    for message in messages {
        let interruption = match interruption_message::parse(&message.body) {
            Ok(interruption) => interruption,
            Err(error) => {
                metrics.interruption_received("parse_error");
                tracing::warn!(message_id = message.id, "deleting a message that does not parse: {error}");
                received.done.push(message.receipt);
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
            received.done.push(message.receipt);
            continue;
        }
        metrics.interruption_received(interruption.kind());
        received.parsed.push((message, interruption));
    }
    Ok(received)
}

/// Deletes the messages done with: those handled (`outcomes`, one per parsed message) and those refused. A message
/// whose handling failed stays, to come back after its visibility timeout.
async fn settle(
    cloud: &dyn CloudProvider,
    metrics: &crate::telemetry::Metrics,
    url: &str,
    received: Received,
    outcomes: Vec<Result<(), Error>>,
) {
    let Received { parsed, mut done } = received;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    for ((message, _), outcome) in parsed.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                if let Some(sent) = message.sent_at_millis {
                    metrics.interruption_queue_duration(now.saturating_sub(sent) as f64 / 1000.0);
                }
                done.push(message.receipt);
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
        // The Events are recorded on their own time, as client-go's recorder does for Karpenter: in a burst each
        // API call the handler waits for is the wait of every message behind it.
        publish(ctx, claim, reason, note);
        if !replace || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
        match api.delete(&claim.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                // Karpenter's reason label for an interruption is the message's kind.
                let label = |key: &str| claim.labels().get(key).cloned().unwrap_or_default();
                let (pool, capacity) = (label(NODEPOOL_LABEL), label(CAPACITY_TYPE_LABEL));
                ctx.metrics.nodeclaim_disrupted(interruption.kind(), &pool, &capacity);
            }
            Err(error) if super::is_not_found(&error) => {}
            Err(error) => return Err(Error::from(error)),
        }
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

/// The same Event on the NodeClaim and on its Node, recorded by a task of its own.
fn publish(ctx: &Context, claim: &NodeClaim, reason: &'static str, note: &'static str) {
    let mut references = vec![claim.object_ref(&())];
    if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| ctx.state.node(n)) {
        references.push(Node::object_ref(&node, &()));
    }
    let recorder = ctx.recorder.clone();
    tokio::spawn(async move {
        // Waits its turn rather than open a connection per Event when a burst of thousands comes.
        let Ok(_turn) = EVENTS_IN_FLIGHT.acquire().await else { return };
        let publishing = references
            .iter()
            .map(|reference| events::publish(&recorder, reference, EventType::Warning, reason, "Interruption", note));
        futures::future::join_all(publishing).await;
    });
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
        let received = receive(&cloud, &metrics, "https://sqs.example/q", ORIGIN).await.expect("a receive");
        assert_eq!(received.parsed.len() + received.done.len(), 3, "every message received is to act on or done");
        let seen: Vec<&str> = received.interruptions().iter().map(|i| i.kind()).collect();
        assert_eq!(seen, ["spot_interrupted", "rebalance_recommendation"]);
        // The spot interruption is handled; the rebalance recommendation's handling fails.
        let outcomes = vec![Ok(()), Err(Error::Invalid("the API server is away".into()))];
        settle(&cloud, &metrics, "https://sqs.example/q", received, outcomes).await;
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
        let received = receive(&cloud, &metrics, "https://sqs.example/q", ORIGIN).await.expect("a receive");
        let handled = received.interruptions().len();
        settle(&cloud, &metrics, "https://sqs.example/q", received, vec![Ok(())]).await;
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
        let Err(error) = receive(&cloud, &metrics, "https://sqs.example/q", ORIGIN).await else {
            panic!("the receive fails")
        };
        assert_eq!(error.code(), "AWS.SimpleQueueService.NonExistentQueue");
        assert!(cloud.deleted_messages.lock().expect("deleted").is_empty());
        assert_eq!(cloud.queue.lock().expect("queue").len(), 1, "the message stays queued");
    }
}
