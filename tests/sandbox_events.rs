//! The sandbox's AWS side: EventBridge rules in moto route `PutEvents` into SQS, as the interruption queue
//! receives them in AWS. Needs `make sandbox-up` (run by `make test`).

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};
use support::{Sandbox, unique_name, wait_until};

const SPOT_WARNING: &str = include_str!("data/events/spot-interruption-warning.json");

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn put_events_of_a_spot_interruption_warning_arrives_in_the_queue_through_a_rule() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let sqs = aws_sdk_sqs::Client::new(&sandbox.sdk);
    let events = aws_sdk_eventbridge::Client::new(&sandbox.sdk);
    let name = unique_name("interruption");

    let queue_url = sqs.create_queue().queue_name(&name).send().await?.queue_url.context("queue url")?;
    let attributes =
        sqs.get_queue_attributes().queue_url(&queue_url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    let queue_arn =
        attributes.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).context("queue arn")?.clone();
    let pattern = json!({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]});
    events.put_rule().name(&name).event_pattern(pattern.to_string()).send().await?;
    events.put_targets().rule(&name).targets(Target::builder().id("queue").arn(&queue_arn).build()?).send().await?;

    let sample: Value = serde_json::from_str(SPOT_WARNING)?;
    let text = |key: &str| sample[key].as_str().map(str::to_string);
    // An event the rule must not match goes first: only the warning may arrive.
    let unrelated = PutEventsRequestEntry::builder()
        .source("aws.ec2")
        .detail_type("EC2 Instance Rebalance Recommendation")
        .detail(json!({"instance-id": "i-0000000000000000"}).to_string())
        .build();
    let warning = PutEventsRequestEntry::builder()
        .set_source(text("source"))
        .set_detail_type(text("detail-type"))
        .detail(sample["detail"].to_string())
        .set_resources(
            sample["resources"].as_array().map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        )
        .build();
    let put = events.put_events().entries(unrelated).entries(warning).send().await?;
    assert_eq!(put.failed_entry_count(), 0);

    let bodies = wait_until("the warning in the queue", Duration::from_secs(30), || async {
        let received =
            sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(1).send().await?;
        let bodies: Vec<String> = received.messages().iter().filter_map(|m| m.body().map(str::to_string)).collect();
        Ok((!bodies.is_empty()).then_some(bodies))
    })
    .await?;
    assert_eq!(bodies.len(), 1, "only the matching event is routed: {bodies:?}");
    let envelope: Value = serde_json::from_str(&bodies[0])?;
    assert_eq!(envelope["source"], "aws.ec2");
    assert_eq!(envelope["detail-type"], "EC2 Spot Instance Interruption Warning");
    assert_eq!(envelope["detail"]["instance-id"], sample["detail"]["instance-id"]);
    assert_eq!(envelope["detail"]["instance-action"], "terminate");
    assert_eq!(envelope["resources"], sample["resources"]);
    // The origin the controller checks before acting (moto_server.py puts back the account moto drops).
    assert_eq!(envelope["account"], "123456789012");
    assert_eq!(envelope["region"], "us-east-1");

    events.remove_targets().rule(&name).ids("queue").send().await?;
    events.delete_rule().name(&name).send().await?;
    sqs.delete_queue().queue_url(&queue_url).send().await?;
    Ok(())
}
