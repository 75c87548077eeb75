//! Per-instance calls made at about the same time, sent to EC2 as one call. Termination looks up its NodeClaim's
//! instance on every pass (every 2 s) and terminates it once drained: scaling down 700 nodes made 350
//! DescribeInstances calls a second, and a burst of 1,000 interruptions as many TerminateInstances calls, which EC2
//! would throttle, and which kept the sandbox's moto from answering. Karpenter batches the same calls (its
//! `batcher` package: DescribeInstances by instance-id filter, TerminateInstances).
//!
//! The first id of a batch opens it and spawns its call, made `window` later with every id asked meanwhile (a full
//! batch is asked at once). Each id gets its own answer from the call's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::error::CloudError;

/// One EC2 call made for many instance ids at once.
pub trait BatchCall: Send + Sync + 'static {
    /// What one id gets back.
    type Answer: Clone + Send + Sync + 'static;
    /// The IAM action, named in the error when a batch's task ends without an answer.
    const ACTION: &'static str;
    /// At most this many ids in one call.
    const MAX_IDS: usize;
    /// Makes the call; an id missing from the answer gets `None`.
    fn call(&self, ids: Vec<String>) -> impl Future<Output = Result<HashMap<String, Self::Answer>, CloudError>> + Send;
}

type Answers<A> = Arc<Result<HashMap<String, A>, CloudError>>;

pub struct Batcher<C: BatchCall> {
    call: Arc<C>,
    window: Duration,
    open: Arc<Mutex<Option<Pending<C::Answer>>>>,
}

/// A batch still taking ids.
struct Pending<A> {
    ids: Vec<String>,
    answers: watch::Sender<Option<Answers<A>>>,
}

impl<C: BatchCall> Batcher<C> {
    pub fn new(call: C, window: Duration) -> Self {
        Self { call: Arc::new(call), window, open: Arc::default() }
    }

    /// This id's answer from the next call; `None` when the call's answer leaves it out. A failed call fails every
    /// id of its batch with the call's error.
    pub async fn ask(&self, instance_id: &str) -> Result<Option<C::Answer>, CloudError> {
        let mut answers = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let pending = match open.as_mut() {
                Some(pending) => pending,
                None => {
                    self.call_open_batch_after(self.window);
                    open.insert(Pending { ids: Vec::new(), answers: watch::channel(None).0 })
                }
            };
            if !pending.ids.iter().any(|id| id == instance_id) {
                pending.ids.push(instance_id.to_string());
            }
            let receiver = pending.answers.subscribe();
            if pending.ids.len() >= C::MAX_IDS
                && let Some(full) = open.take()
            {
                // Called now, and closed to further ids. (Its timer, when it fires, calls whatever batch is open
                // then, a little early.)
                tokio::spawn(call(self.call.clone(), full));
            }
            receiver
        };
        let answered = answers.wait_for(Option::is_some).await.map(|a| a.clone());
        match answered {
            Ok(Some(answers)) => match answers.as_ref() {
                Ok(answers) => Ok(answers.get(instance_id).cloned()),
                Err(error) => Err(error.clone()),
            },
            // The call's task ended without answering (a panic): say so rather than wait forever.
            _ => Err(CloudError::call(C::ACTION, "the batched call ended without an answer")),
        }
    }

    /// Calls for the batch open `delay` from now, if any.
    fn call_open_batch_after(&self, delay: Duration) {
        let (open, batch_call) = (self.open.clone(), self.call.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let pending = open.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(pending) = pending {
                call(batch_call, pending).await;
            }
        });
    }
}

/// Makes a batch's call and gives its answer to every id waiting on it.
async fn call<C: BatchCall>(batch_call: Arc<C>, pending: Pending<C::Answer>) {
    let answers = batch_call.call(pending.ids).await;
    pending.answers.send_replace(Some(Arc::new(answers)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::running_instance;
    use crate::cloud::instances::InstanceSummary;

    /// Knows every instance but those whose id ends in `gone`; records each call's ids.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<Vec<String>>>,
        fail: bool,
    }

    impl BatchCall for Arc<Recording> {
        type Answer = InstanceSummary;
        const ACTION: &'static str = "ec2:DescribeInstances";
        const MAX_IDS: usize = 200;

        async fn call(&self, ids: Vec<String>) -> Result<HashMap<String, InstanceSummary>, CloudError> {
            self.calls.lock().expect("calls").push(ids.clone());
            if self.fail {
                return Err(CloudError::Call {
                    action: "ec2:DescribeInstances",
                    code: "RequestLimitExceeded".into(),
                    message: "slow down".into(),
                });
            }
            Ok(ids
                .into_iter()
                .filter(|id| !id.ends_with("gone"))
                .map(|id| (id.clone(), running_instance(&id)))
                .collect())
        }
    }

    const MAX_IDS: usize = <Arc<Recording> as BatchCall>::MAX_IDS;

    #[tokio::test]
    async fn ids_asked_at_the_same_time_are_one_call_and_each_gets_its_own_answer() {
        let recording = Arc::new(Recording::default());
        let batcher = Batcher::new(recording.clone(), Duration::from_millis(20));
        let ids = ["i-1", "i-2", "i-2", "i-3-gone"];
        let found = futures::future::join_all(ids.iter().map(|id| batcher.ask(id))).await;
        let found: Vec<Option<String>> =
            found.into_iter().map(|f| f.expect("an answer").map(|i| i.instance_id)).collect();
        assert_eq!(found, [Some("i-1".into()), Some("i-2".into()), Some("i-2".into()), None]);
        let calls = recording.calls.lock().expect("calls").clone();
        assert_eq!(calls, [vec!["i-1", "i-2", "i-3-gone"]], "one call, each id once");

        // A later id is a batch of its own.
        assert!(batcher.ask("i-4").await.expect("an answer").is_some());
        assert_eq!(recording.calls.lock().expect("calls").len(), 2);
    }

    #[tokio::test]
    async fn a_full_batch_is_called_at_once_and_the_rest_wait_for_the_next() {
        let recording = Arc::new(Recording::default());
        // A window far longer than the test: only a full batch can be called before it.
        let batcher = Batcher::new(recording.clone(), Duration::from_secs(600));
        let ids: Vec<String> = (0..MAX_IDS).map(|i| format!("i-{i}")).collect();
        let found = futures::future::join_all(ids.iter().map(|id| batcher.ask(id))).await;
        assert!(found.iter().all(|f| f.as_ref().is_ok_and(Option::is_some)));
        let calls = recording.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].len(), MAX_IDS);

        // One id more than a batch holds: the first MAX_IDS are called at once, the last waits for its own batch.
        let ids: Vec<String> = (0..=MAX_IDS).map(|i| format!("i-again-{i}")).collect();
        let asked = futures::future::join_all(ids.iter().map(|id| batcher.ask(id)));
        assert!(tokio::time::timeout(Duration::from_millis(200), asked).await.is_err(), "the last one waits");
        let calls = recording.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 2, "the full batch called, the one left over not yet");
        assert_eq!(calls[1].len(), MAX_IDS);
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_id_of_its_batch_with_the_code() {
        let recording = Arc::new(Recording { fail: true, ..Default::default() });
        let batcher = Batcher::new(recording.clone(), Duration::from_millis(20));
        let found = futures::future::join_all(["i-1", "i-2"].map(|id| batcher.ask(id))).await;
        for answer in found {
            let error = answer.expect_err("the call failed");
            assert_eq!(error.code(), "RequestLimitExceeded");
            assert_eq!(error.action(), "ec2:DescribeInstances");
        }
        assert_eq!(recording.calls.lock().expect("calls").len(), 1);
    }
}
