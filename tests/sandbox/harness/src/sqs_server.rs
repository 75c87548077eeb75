//! A small SQS server speaking the AWS JSON 1.0 protocol that current SDKs use (Rust's aws-sdk-sqs, Go's
//! aws-sdk-go-v2), for benchmarks that must not be bound by the queue: moto took 38.8 s to accept 1,000 messages,
//! and goaws (the Go option) speaks only the older query protocol. It keeps standard queues in memory with what a
//! consumer sees of SQS: long polling, visibility timeouts (a received message comes back unless deleted),
//! receive counts and the MD5 digests the Go SDK checks. What it does not do it refuses by name (an unknown
//! action, message attributes, FIFO queues) rather than accept and ignore.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The account the queue URLs name (the sandbox's, as moto's).
const ACCOUNT: &str = "123456789012";
const DEFAULT_VISIBILITY_SECONDS: u64 = 30;
/// SQS's own bounds on a receive.
const MAX_RECEIVE: usize = 10;
const MAX_WAIT_SECONDS: u64 = 20;

/// A running server: its endpoint (for `AWS_ENDPOINT_URL_SQS`) and the counts a benchmark reports.
pub struct SqsServer {
    pub endpoint: String,
    state: Arc<Server>,
}

impl SqsServer {
    /// Messages sent, received (counting redeliveries) and deleted since the start, over every queue.
    pub fn counts(&self) -> Counts {
        self.state.queues.lock().map(|q| q.counts).unwrap_or_default()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub received: u64,
    pub deleted: u64,
}

/// Starts the server on `address` (port 0 for a free one) in the current runtime.
pub async fn start(address: &str, region: &str) -> Result<SqsServer> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound: SocketAddr = listener.local_addr()?;
    let endpoint = format!("http://{bound}");
    let state = Arc::new(Server { endpoint: endpoint.clone(), region: region.to_string(), queues: Mutex::default() });
    let app = axum::Router::new().fallback(handle).with_state(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!("sqs server stopped: {error}");
        }
    });
    Ok(SqsServer { endpoint, state })
}

struct Server {
    endpoint: String,
    region: String,
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    by_name: HashMap<String, Queue>,
    next_id: u64,
    counts: Counts,
}

struct Queue {
    visibility: Duration,
    /// When each message was sent, in order; a message returned by an expired receive goes to the back.
    visible: VecDeque<Message>,
    /// Received and not yet deleted, by receipt handle, with when it becomes visible again.
    in_flight: HashMap<String, (Message, Instant)>,
    arrived: Arc<Notify>,
}

#[derive(Clone)]
struct Message {
    id: String,
    body: String,
    md5: String,
    sent_millis: u128,
    receive_count: u32,
    first_received_millis: Option<u128>,
}

/// An SQS error as the JSON protocol gives it: the shape name in `__type`, the query-protocol code in
/// `x-amzn-query-error` (which SDKs prefer for the error code).
struct Failure {
    status: StatusCode,
    shape: &'static str,
    query_code: &'static str,
    message: String,
}

impl Failure {
    fn sender(shape: &'static str, query_code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, shape, query_code, message: message.into() }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::sender("InvalidParameterValue", "InvalidParameterValue", message)
    }
    fn no_queue() -> Self {
        Self::sender(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({"__type": format!("com.amazonaws.sqs#{}", self.shape), "message": self.message});
        (
            self.status,
            [
                ("content-type", "application/x-amz-json-1.0".to_string()),
                ("x-amzn-query-error", format!("{};Sender", self.query_code)),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

async fn handle(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = match headers.get("x-amz-target").and_then(|t| t.to_str().ok()) {
        Some(target) => match target.strip_prefix("AmazonSQS.") {
            Some(action) => match serde_json::from_slice::<Value>(&body) {
                Ok(input) => server.act(action, &input).await,
                Err(error) => {
                    Err(Failure::sender("InvalidRequest", "InvalidRequest", format!("body is not JSON: {error}")))
                }
            },
            None => Err(Failure::sender("InvalidAction", "InvalidAction", format!("unknown target {target}"))),
        },
        // The query protocol (Action=... form bodies) is not spoken here; say so rather than answer wrongly.
        None => Err(Failure::sender(
            "InvalidAction",
            "InvalidAction",
            "this server speaks only the AWS JSON 1.0 protocol (an X-Amz-Target header)",
        )),
    };
    match answer {
        Ok(output) => ([("content-type", "application/x-amz-json-1.0")], output.to_string()).into_response(),
        Err(failure) => failure.into_response(),
    }
}

impl Server {
    async fn act(&self, action: &str, input: &Value) -> Result<Value, Failure> {
        match action {
            "CreateQueue" => self.create_queue(input),
            "GetQueueUrl" => {
                let name = required(input, "QueueName")?;
                self.with_queue(name, |_| ())?;
                Ok(json!({"QueueUrl": self.url(name)}))
            }
            "DeleteQueue" => {
                let name = self.queue_name(input)?;
                let mut queues = self.lock();
                queues.by_name.remove(&name).ok_or_else(Failure::no_queue)?;
                Ok(json!({}))
            }
            "GetQueueAttributes" => {
                let name = self.queue_name(input)?;
                let arn = format!("arn:aws:sqs:{}:{ACCOUNT}:{name}", self.region);
                self.with_queue(&name, |queue| {
                    json!({"Attributes": {
                        "QueueArn": arn,
                        "VisibilityTimeout": queue.visibility.as_secs().to_string(),
                        "ApproximateNumberOfMessages": queue.visible.len().to_string(),
                        "ApproximateNumberOfMessagesNotVisible": queue.in_flight.len().to_string(),
                    }})
                })
            }
            "SendMessage" => {
                refuse_attributes(input)?;
                let name = self.queue_name(input)?;
                let body = required(input, "MessageBody")?;
                let sent = self.send(&name, [body.to_string()])?;
                let (id, md5) = &sent[0];
                Ok(json!({"MessageId": id, "MD5OfMessageBody": md5}))
            }
            "SendMessageBatch" => {
                let name = self.queue_name(input)?;
                let entries = input.get("Entries").and_then(Value::as_array).cloned().unwrap_or_default();
                if entries.is_empty() || entries.len() > MAX_RECEIVE {
                    return Err(Failure::invalid("a batch holds 1 to 10 entries"));
                }
                let mut ids = Vec::new();
                let mut bodies = Vec::new();
                for entry in &entries {
                    refuse_attributes(entry)?;
                    ids.push(required(entry, "Id")?.to_string());
                    bodies.push(required(entry, "MessageBody")?.to_string());
                }
                let sent = self.send(&name, bodies)?;
                let successful: Vec<Value> = ids
                    .iter()
                    .zip(sent)
                    .map(|(entry, (id, md5))| json!({"Id": entry, "MessageId": id, "MD5OfMessageBody": md5}))
                    .collect();
                Ok(json!({"Successful": successful, "Failed": []}))
            }
            "ReceiveMessage" => self.receive(input).await,
            "DeleteMessage" => {
                let name = self.queue_name(input)?;
                let receipt = required(input, "ReceiptHandle")?;
                self.delete(&name, receipt)?
                    .map_err(|message| Failure::sender("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", message))?;
                Ok(json!({}))
            }
            "DeleteMessageBatch" => {
                let name = self.queue_name(input)?;
                let entries = input.get("Entries").and_then(Value::as_array).cloned().unwrap_or_default();
                if entries.is_empty() || entries.len() > MAX_RECEIVE {
                    return Err(Failure::invalid("a batch holds 1 to 10 entries"));
                }
                let (mut successful, mut failed) = (Vec::new(), Vec::new());
                for entry in &entries {
                    let id = required(entry, "Id")?;
                    match self.delete(&name, required(entry, "ReceiptHandle")?)? {
                        Ok(()) => successful.push(json!({"Id": id})),
                        Err(message) => failed.push(
                            json!({"Id": id, "Code": "ReceiptHandleIsInvalid", "Message": message, "SenderFault": true}),
                        ),
                    }
                }
                Ok(json!({"Successful": successful, "Failed": failed}))
            }
            other => Err(Failure::sender(
                "UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation",
                format!("{other} is not implemented by the sandbox's SQS server"),
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A panic while holding the lock is a bug in this file; the data is still usable.
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{ACCOUNT}/{name}", self.endpoint)
    }

    /// The queue a request's `QueueUrl` names (its last path segment, as SQS reads it).
    fn queue_name(&self, input: &Value) -> Result<String, Failure> {
        let url = required(input, "QueueUrl")?;
        url.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_string).ok_or_else(Failure::no_queue)
    }

    fn with_queue<T>(&self, name: &str, read: impl FnOnce(&Queue) -> T) -> Result<T, Failure> {
        self.lock().by_name.get(name).map(read).ok_or_else(Failure::no_queue)
    }

    fn create_queue(&self, input: &Value) -> Result<Value, Failure> {
        let name = required(input, "QueueName")?;
        if name.ends_with(".fifo") {
            return Err(Failure::invalid("FIFO queues are not implemented by the sandbox's SQS server"));
        }
        let mut visibility = DEFAULT_VISIBILITY_SECONDS;
        if let Some(attributes) = input.get("Attributes").and_then(Value::as_object) {
            for (key, value) in attributes {
                let value = value.as_str().unwrap_or_default();
                match key.as_str() {
                    "VisibilityTimeout" => {
                        visibility =
                            value.parse().map_err(|_| Failure::invalid(format!("VisibilityTimeout {value:?}")))?
                    }
                    // Kept by SQS for days; a benchmark's queue lives minutes, so there is nothing to expire.
                    "MessageRetentionPeriod" | "Policy" | "SqsManagedSseEnabled" => {}
                    other => {
                        return Err(Failure::invalid(format!(
                            "attribute {other} is not implemented by the sandbox's SQS server"
                        )));
                    }
                }
            }
        }
        let mut queues = self.lock();
        queues.by_name.entry(name.to_string()).or_insert_with(|| Queue {
            visibility: Duration::from_secs(visibility),
            visible: VecDeque::new(),
            in_flight: HashMap::new(),
            arrived: Arc::new(Notify::new()),
        });
        Ok(json!({"QueueUrl": self.url(name)}))
    }

    /// Appends messages; returns each one's id and body digest.
    fn send(&self, name: &str, bodies: impl IntoIterator<Item = String>) -> Result<Vec<(String, String)>, Failure> {
        let mut queues = self.lock();
        let Queues { by_name, next_id, counts } = &mut *queues;
        let queue = by_name.get_mut(name).ok_or_else(Failure::no_queue)?;
        let now = epoch_millis();
        let mut sent = Vec::new();
        for body in bodies {
            *next_id += 1;
            counts.sent += 1;
            let message = Message {
                id: format!("00000000-0000-4000-8000-{:012x}", *next_id),
                md5: md5_hex(&body),
                body,
                sent_millis: now,
                receive_count: 0,
                first_received_millis: None,
            };
            sent.push((message.id.clone(), message.md5.clone()));
            queue.visible.push_back(message);
        }
        queue.arrived.notify_waiters();
        Ok(sent)
    }

    async fn receive(&self, input: &Value) -> Result<Value, Failure> {
        let name = self.queue_name(input)?;
        let max = input.get("MaxNumberOfMessages").and_then(Value::as_u64).unwrap_or(1) as usize;
        if !(1..=MAX_RECEIVE).contains(&max) {
            return Err(Failure::invalid(format!("MaxNumberOfMessages {max} is not between 1 and 10")));
        }
        let wait = input.get("WaitTimeSeconds").and_then(Value::as_u64).unwrap_or(0);
        if wait > MAX_WAIT_SECONDS {
            return Err(Failure::invalid(format!("WaitTimeSeconds {wait} is over 20")));
        }
        // MessageAttributeNames may be asked for (Karpenter asks for All): sends refuse message attributes, so
        // there are none to give.
        let visibility = input.get("VisibilityTimeout").and_then(Value::as_u64).map(Duration::from_secs);
        let deadline = Instant::now() + Duration::from_secs(wait);
        let arrived = self.with_queue(&name, |queue| queue.arrived.clone())?;
        loop {
            // Made before the queue is read: a message sent after that read wakes it (`notify_waiters` reaches
            // every `Notified` that exists, polled or not).
            let notified = arrived.notified();
            let (taken, next_return) = {
                let mut queues = self.lock();
                let Queues { by_name, counts, .. } = &mut *queues;
                let queue = by_name.get_mut(&name).ok_or_else(Failure::no_queue)?;
                let now = Instant::now();
                queue.return_expired(now);
                let taken = queue.take(max, now + visibility.unwrap_or(queue.visibility));
                counts.received += taken.len() as u64;
                (taken, queue.in_flight.values().map(|(_, at)| *at).min())
            };
            if !taken.is_empty() || Instant::now() >= deadline {
                let asked = asked_attributes(input);
                let messages: Vec<Value> = taken.into_iter().map(|(receipt, m)| m.as_json(&receipt, &asked)).collect();
                return Ok(json!({"Messages": messages}));
            }
            // Wake for a new message, a message whose visibility ran out, or the end of the wait.
            let until = next_return.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Deletes a received message; the inner error is a receipt SQS would not know.
    fn delete(&self, name: &str, receipt: &str) -> Result<Result<(), String>, Failure> {
        let mut queues = self.lock();
        let Queues { by_name, counts, .. } = &mut *queues;
        let queue = by_name.get_mut(name).ok_or_else(Failure::no_queue)?;
        // SQS accepts a receipt whose visibility ran out as long as the message was not received again.
        if queue.in_flight.remove(receipt).is_some() {
            counts.deleted += 1;
            return Ok(Ok(()));
        }
        Ok(Err(format!("receipt handle {receipt:?} is not one of a message in flight")))
    }
}

impl Queue {
    fn return_expired(&mut self, now: Instant) {
        let expired: Vec<String> =
            self.in_flight.iter().filter(|(_, (_, at))| *at <= now).map(|(receipt, _)| receipt.clone()).collect();
        for receipt in expired {
            if let Some((message, _)) = self.in_flight.remove(&receipt) {
                self.visible.push_back(message);
            }
        }
    }

    fn take(&mut self, max: usize, visible_again: Instant) -> Vec<(String, Message)> {
        let now = epoch_millis();
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(mut message) = self.visible.pop_front() else { break };
            message.receive_count += 1;
            message.first_received_millis.get_or_insert(now);
            let receipt = format!("{}-{}", message.id, message.receive_count);
            self.in_flight.insert(receipt.clone(), (message.clone(), visible_again));
            taken.push((receipt, message));
        }
        taken
    }
}

impl Message {
    /// The message as a receive gives it, with the attributes asked for (none unless asked, as SQS).
    fn as_json(&self, receipt: &str, asked: &[String]) -> Value {
        let all = [
            ("SentTimestamp", self.sent_millis.to_string()),
            ("ApproximateReceiveCount", self.receive_count.to_string()),
            ("ApproximateFirstReceiveTimestamp", self.first_received_millis.unwrap_or(self.sent_millis).to_string()),
            ("SenderId", ACCOUNT.to_string()),
        ];
        let attributes: serde_json::Map<String, Value> = all
            .into_iter()
            .filter(|(name, _)| asked.iter().any(|a| a == "All" || a == name))
            .map(|(name, value)| (name.to_string(), Value::String(value)))
            .collect();
        let mut message =
            json!({"MessageId": self.id, "ReceiptHandle": receipt, "MD5OfBody": self.md5, "Body": self.body});
        if !attributes.is_empty() {
            message["Attributes"] = Value::Object(attributes);
        }
        message
    }
}

fn required<'a>(input: &'a Value, field: &str) -> Result<&'a str, Failure> {
    input
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::sender("MissingParameter", "MissingParameter", format!("{field} is required")))
}

fn refuse_attributes(input: &Value) -> Result<(), Failure> {
    for field in ["MessageAttributes", "MessageSystemAttributes"] {
        if input.get(field).and_then(Value::as_object).is_some_and(|a| !a.is_empty()) {
            return Err(Failure::invalid(format!("{field} is not implemented by the sandbox's SQS server")));
        }
    }
    // Go's SDK sends a zero delay as 0.
    if input.get("DelaySeconds").and_then(Value::as_u64).is_some_and(|d| d > 0) {
        return Err(Failure::invalid("DelaySeconds is not implemented by the sandbox's SQS server"));
    }
    Ok(())
}

/// The message attributes a receive asked for (`All`, or names), from either of the two fields SQS reads.
fn asked_attributes(input: &Value) -> Vec<String> {
    ["AttributeNames", "MessageSystemAttributeNames"]
        .iter()
        .filter_map(|field| input.get(*field).and_then(Value::as_array))
        .flatten()
        .filter_map(|name| name.as_str().map(str::to_string))
        .collect()
}

fn md5_hex(body: &str) -> String {
    Md5::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn epoch_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::{
        DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
    };

    async fn client_and_queue(visibility_seconds: u32) -> (SqsServer, aws_sdk_sqs::Client, String) {
        let server = start("127.0.0.1:0", "us-east-1").await.expect("the server starts");
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(&server.endpoint)
            .build();
        let sqs = aws_sdk_sqs::Client::from_conf(config);
        let url = sqs
            .create_queue()
            .queue_name("bench")
            .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, visibility_seconds.to_string())
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("a URL");
        (server, sqs, url)
    }

    async fn send_batch(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[&str]) {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(*body).build())
            .collect::<Result<Vec<_>, _>>()
            .expect("entries");
        let sent = sqs.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await.expect("sent");
        assert_eq!(sent.successful().len(), bodies.len());
        // What the Go SDK checks on every send.
        assert_eq!(sent.successful()[0].md5_of_message_body(), md5_hex(bodies[0]));
    }

    #[tokio::test]
    async fn messages_are_received_once_each_and_deleted_by_receipt() {
        let (server, sqs, url) = client_and_queue(30).await;
        let bodies: Vec<String> = (0..12).map(|i| format!("{{\"n\":{i}}}")).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        send_batch(&sqs, &url, &refs[..10]).await;
        send_batch(&sqs, &url, &refs[10..]).await;

        let mut seen = Vec::new();
        for _ in 0..2 {
            let got = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await
                .expect("received");
            let receipts: Vec<DeleteMessageBatchRequestEntry> = got
                .messages()
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    assert_eq!(m.md5_of_body(), Some(md5_hex(m.body().unwrap_or_default()).as_str()));
                    let attributes = m.attributes().expect("the attribute asked for");
                    assert!(attributes.contains_key(&MessageSystemAttributeName::SentTimestamp));
                    assert!(!attributes.contains_key(&MessageSystemAttributeName::ApproximateReceiveCount));
                    seen.push(m.body().unwrap_or_default().to_string());
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("entry")
                })
                .collect();
            let deleted =
                sqs.delete_message_batch().queue_url(&url).set_entries(Some(receipts)).send().await.expect("deleted");
            assert!(deleted.failed().is_empty());
        }
        assert_eq!(seen, bodies, "each message once, in the order sent");
        let empty = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.expect("received");
        assert!(empty.messages().is_empty());
        assert_eq!(server.counts(), Counts { sent: 12, received: 12, deleted: 12 });
    }

    #[tokio::test]
    async fn a_long_poll_returns_when_a_message_arrives() {
        let (_server, sqs, url) = client_and_queue(30).await;
        let poll = {
            let (sqs, url) = (sqs.clone(), url.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let got = sqs.receive_message().queue_url(&url).wait_time_seconds(20).send().await.expect("received");
                (got.messages().len(), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqs.send_message().queue_url(&url).message_body("late").send().await.expect("sent");
        let (count, waited) = poll.await.expect("the poll");
        assert_eq!(count, 1);
        assert!(waited < Duration::from_secs(20), "woken by the message, not by the end of the wait ({waited:?})");
    }

    #[tokio::test]
    async fn a_message_not_deleted_comes_back_after_its_visibility_timeout() {
        let (_server, sqs, url) = client_and_queue(1).await;
        sqs.send_message().queue_url(&url).message_body("again").send().await.expect("sent");
        let first = sqs.receive_message().queue_url(&url).send().await.expect("received");
        let first_receipt = first.messages()[0].receipt_handle().unwrap_or_default().to_string();
        let hidden = sqs.receive_message().queue_url(&url).send().await.expect("received");
        assert!(hidden.messages().is_empty(), "in flight, so not visible");
        let again = sqs
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(5)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("received");
        let message = &again.messages()[0];
        assert_eq!(message.body(), Some("again"));
        let count = message.attributes().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount));
        assert_eq!(count.map(String::as_str), Some("2"));
        // The first receipt is stale once the message was received again.
        let stale = sqs.delete_message().queue_url(&url).receipt_handle(first_receipt).send().await;
        assert!(stale.is_err(), "a receipt of an earlier receive");
    }

    #[tokio::test]
    async fn unknown_queues_and_actions_are_refused_by_name() {
        let (_server, sqs, url) = client_and_queue(30).await;
        let missing = sqs.get_queue_url().queue_name("nowhere").send().await.expect_err("no such queue");
        assert!(missing.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()), "{missing:?}");
        let purge = sqs.purge_queue().queue_url(&url).send().await.expect_err("not implemented");
        let text = format!("{:?}", aws_smithy_types::error::display::DisplayErrorContext(&purge));
        assert!(text.contains("PurgeQueue is not implemented"), "{text}");
    }
}
