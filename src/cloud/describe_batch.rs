//! One-instance lookups made at about the same time, asked of EC2 as one DescribeInstances call. Termination looks
//! up its NodeClaim's instance on every pass (every 2 s): scaling down 700 nodes made 350 DescribeInstances calls a
//! second, which EC2 would throttle, and which kept the sandbox's moto from answering. Karpenter batches the same
//! calls (its `batcher` package: DescribeInstances by instance-id filter).
//!
//! The first lookup of a batch opens it and spawns its call, made `window` later with every id asked meanwhile (a
//! full batch is asked at once). The call goes by the `instance-id` filter, not by instance ids: an id EC2 no
//! longer knows is then absent from the answer, where by ids it would fail the whole call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::error::CloudError;
use super::instances::InstanceSummary;

/// At most this many ids in one call (EC2 takes up to 200 values in one filter).
pub const MAX_IDS: usize = 200;

type Answer = Arc<Result<HashMap<String, InstanceSummary>, CloudError>>;

/// Describes many instances in one call: the real one asks EC2, the tests count calls.
pub trait DescribeMany: Send + Sync + 'static {
    fn describe_many(&self, ids: Vec<String>) -> impl Future<Output = Result<Vec<InstanceSummary>, CloudError>> + Send;
}

pub struct DescribeBatcher<D> {
    describe: Arc<D>,
    window: Duration,
    open: Arc<Mutex<Option<Pending>>>,
}

/// A batch still taking ids.
struct Pending {
    ids: Vec<String>,
    answer: watch::Sender<Option<Answer>>,
}

impl<D: DescribeMany> DescribeBatcher<D> {
    pub fn new(describe: D, window: Duration) -> Self {
        Self { describe: Arc::new(describe), window, open: Arc::default() }
    }

    /// One instance as EC2 describes it now; `None` when EC2 no longer knows it.
    pub async fn describe(&self, instance_id: &str) -> Result<Option<InstanceSummary>, CloudError> {
        let mut answer = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let pending = match open.as_mut() {
                Some(pending) => pending,
                None => {
                    self.ask_open_batch_after(self.window);
                    open.insert(Pending { ids: Vec::new(), answer: watch::channel(None).0 })
                }
            };
            if !pending.ids.iter().any(|id| id == instance_id) {
                pending.ids.push(instance_id.to_string());
            }
            let receiver = pending.answer.subscribe();
            if pending.ids.len() >= MAX_IDS
                && let Some(full) = open.take()
            {
                // Asked now, and closed to further ids. (Its timer, when it fires, asks whatever batch is open
                // then, a little early.)
                tokio::spawn(ask(self.describe.clone(), full));
            }
            receiver
        };
        let answered = answer.wait_for(Option::is_some).await.map(|a| a.clone());
        match answered {
            Ok(Some(answer)) => match answer.as_ref() {
                Ok(found) => Ok(found.get(instance_id).cloned()),
                Err(error) => Err(error.clone()),
            },
            // The call's task ended without answering (a panic): say so rather than wait forever.
            _ => Err(CloudError::call("ec2:DescribeInstances", "the batched lookup ended without an answer")),
        }
    }

    /// Asks for the batch open `delay` from now, if any.
    fn ask_open_batch_after(&self, delay: Duration) {
        let (open, describe) = (self.open.clone(), self.describe.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let pending = open.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(pending) = pending {
                ask(describe, pending).await;
            }
        });
    }
}

/// Makes a batch's call and gives its answer to every lookup waiting on it.
async fn ask<D: DescribeMany>(describe: Arc<D>, pending: Pending) {
    let found = describe.describe_many(pending.ids).await;
    let found = found.map(|instances| instances.into_iter().map(|i| (i.instance_id.clone(), i)).collect());
    pending.answer.send_replace(Some(Arc::new(found)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::running_instance;

    /// Knows every instance but those whose id ends in `gone`; records each call's ids.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<Vec<String>>>,
        fail: bool,
    }

    impl DescribeMany for Arc<Recording> {
        async fn describe_many(&self, ids: Vec<String>) -> Result<Vec<InstanceSummary>, CloudError> {
            self.calls.lock().expect("calls").push(ids.clone());
            if self.fail {
                return Err(CloudError::Call {
                    action: "ec2:DescribeInstances",
                    code: "RequestLimitExceeded".into(),
                    message: "slow down".into(),
                });
            }
            Ok(ids.into_iter().filter(|id| !id.ends_with("gone")).map(|id| running_instance(&id)).collect())
        }
    }

    #[tokio::test]
    async fn lookups_at_the_same_time_are_one_call_and_each_gets_its_own_instance() {
        let recording = Arc::new(Recording::default());
        let batcher = DescribeBatcher::new(recording.clone(), Duration::from_millis(20));
        let ids = ["i-1", "i-2", "i-2", "i-3-gone"];
        let found = futures::future::join_all(ids.iter().map(|id| batcher.describe(id))).await;
        let found: Vec<Option<String>> =
            found.into_iter().map(|f| f.expect("an answer").map(|i| i.instance_id)).collect();
        assert_eq!(found, [Some("i-1".into()), Some("i-2".into()), Some("i-2".into()), None]);
        let calls = recording.calls.lock().expect("calls").clone();
        assert_eq!(calls, [vec!["i-1", "i-2", "i-3-gone"]], "one call, each id once");

        // A later lookup is a batch of its own.
        assert!(batcher.describe("i-4").await.expect("an answer").is_some());
        assert_eq!(recording.calls.lock().expect("calls").len(), 2);
    }

    #[tokio::test]
    async fn a_full_batch_is_asked_at_once_and_the_rest_wait_for_the_next() {
        let recording = Arc::new(Recording::default());
        // A window far longer than the test: only a full batch can be asked before it.
        let batcher = DescribeBatcher::new(recording.clone(), Duration::from_secs(600));
        let ids: Vec<String> = (0..MAX_IDS).map(|i| format!("i-{i}")).collect();
        let found = futures::future::join_all(ids.iter().map(|id| batcher.describe(id))).await;
        assert!(found.iter().all(|f| f.as_ref().is_ok_and(Option::is_some)));
        let calls = recording.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].len(), MAX_IDS);

        // One id more than a batch holds: the first MAX_IDS are asked at once, the last waits for its own batch.
        let ids: Vec<String> = (0..=MAX_IDS).map(|i| format!("i-again-{i}")).collect();
        let lookups = futures::future::join_all(ids.iter().map(|id| batcher.describe(id)));
        assert!(tokio::time::timeout(Duration::from_millis(200), lookups).await.is_err(), "the last one waits");
        let calls = recording.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 2, "the full batch asked, the one left over not yet");
        assert_eq!(calls[1].len(), MAX_IDS);
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_lookup_of_its_batch_with_the_code() {
        let recording = Arc::new(Recording { fail: true, ..Default::default() });
        let batcher = DescribeBatcher::new(recording.clone(), Duration::from_millis(20));
        let found = futures::future::join_all(["i-1", "i-2"].map(|id| batcher.describe(id))).await;
        for answer in found {
            let error = answer.expect_err("the call failed");
            assert_eq!(error.code(), "RequestLimitExceeded");
            assert_eq!(error.action(), "ec2:DescribeInstances");
        }
        assert_eq!(recording.calls.lock().expect("calls").len(), 1);
    }
}
