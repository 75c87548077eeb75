//! The interruption queue's SQS calls: find it, long-poll it, delete what was handled.

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use super::error::CloudError;

/// Messages per receive (SQS's maximum) and the long-poll wait.
pub const MAX_MESSAGES: i32 = 10;
const WAIT_TIME_SECONDS: i32 = 20;

/// One message as the interruption engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// When SQS received it (milliseconds since the epoch), for the queue-duration metric.
    pub sent_at_millis: Option<u64>,
}

/// The queue URL for a name or URL.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, CloudError> {
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
        .ok_or_else(|| CloudError::call("sqs:GetQueueUrl", format!("no URL for queue {queue}")))
}

/// Long-polls for up to ten messages.
pub async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Vec<QueueMessage>, CloudError> {
    let answer = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(MAX_MESSAGES)
        .wait_time_seconds(WAIT_TIME_SECONDS)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("sqs:ReceiveMessage", Some(url), e))?;
    Ok(answer
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| QueueMessage {
            sent_at_millis: m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|t| t.parse().ok()),
            id: m.message_id.unwrap_or_default(),
            receipt: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
        })
        .collect())
}

/// Deletes messages by receipt handle, ten per call; returns how many SQS deleted. A message SQS leaves is
/// logged: it comes back after its visibility timeout. A failed call does not stop the next ten; the first
/// failure is returned once all were tried.
pub async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, receipts: &[String]) -> Result<usize, CloudError> {
    let mut deleted = 0;
    let mut first_error = None;
    for chunk in receipts.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(receipt).build().ok()
            })
            .collect();
        let answer = match sqs.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
            Ok(answer) => answer,
            Err(error) => {
                first_error.get_or_insert(CloudError::from_sdk("sqs:DeleteMessageBatch", Some(url), error));
                continue;
            }
        };
        deleted += answer.successful().len();
        for failed in answer.failed() {
            tracing::warn!(code = failed.code(), "sqs:DeleteMessageBatch left a message: {:?}", failed.message());
        }
    }
    match first_error {
        Some(error) if deleted == 0 => Err(error),
        Some(error) => {
            tracing::warn!("some handled messages were not deleted (they come back): {error}");
            Ok(deleted)
        }
        None => Ok(deleted),
    }
}
