//! Whether a resource is this cluster's: it carries `nodesmith.io/cluster=<cluster>`. Setup refuses to adopt what
//! is not; teardown leaves it alone.

use crate::cloud::error::CloudError;
use crate::names::OWNER_TAG;

pub async fn queue_is_ours(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: &str,
    cluster: &str,
) -> Result<bool, CloudError> {
    let tags = sqs
        .list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("sqs:ListQueueTags", Some(name), e))?;
    Ok(tags.tags().and_then(|t| t.get(OWNER_TAG)).is_some_and(|owner| owner == cluster))
}

pub async fn rule_is_ours(
    events: &aws_sdk_eventbridge::Client,
    arn: &str,
    name: &str,
    cluster: &str,
) -> Result<bool, CloudError> {
    let tags = events
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("events:ListTagsForResource", Some(name), e))?;
    Ok(tags.tags().iter().any(|t| t.key() == OWNER_TAG && t.value() == cluster))
}
