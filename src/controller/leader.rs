//! Leader election on a `coordination.k8s.io/v1` Lease: every replica keeps its caches warm, only the holder of
//! the Lease writes. Optimistic concurrency (the Lease's resourceVersion) makes the take-over race-free.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

use crate::names::LEASE_NAME;
use crate::telemetry::Metrics;

const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Whether this replica leads now; cheap to clone and to ask.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// Leading without a Lease: for an observing controller (`--observe`), which writes nothing, so every
    /// replica may observe.
    pub fn without_lease() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, leading: bool, metrics: &Metrics) {
        let was = self.0.swap(leading, Ordering::Relaxed);
        if was != leading {
            tracing::info!(leading, "leadership changed");
        }
        metrics.leading(LEASE_NAME, leading);
    }
}

/// What to do with the Lease as found, for `identity` at `now`.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Renew,
    TakeOver,
    Follow,
}

fn decide(spec: &LeaseSpec, identity: &str, now: Timestamp) -> Decision {
    if spec.holder_identity.as_deref() == Some(identity) {
        return Decision::Renew;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let expired = match &spec.renew_time {
        Some(MicroTime(renewed)) => *renewed + SignedDuration::from_secs(duration) < now,
        None => true,
    };
    if expired || spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        Decision::TakeOver
    } else {
        Decision::Follow
    }
}

/// Leadership is given up once the last successful renewal is this old, well before the Lease (15 s) expires
/// and another replica may take it.
const STEP_DOWN_AFTER: Duration = Duration::from_secs(10);

/// Keeps trying to hold the Lease in `namespace`; never returns.
pub async fn run(
    client: kube::Client,
    namespace: String,
    identity: String,
    leadership: Leadership,
    metrics: Arc<Metrics>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut renewed = None::<std::time::Instant>;
    let mut namespace_missing = false;
    loop {
        // A renewal that hangs must not keep this replica leading while another takes over.
        let stepped = tokio::time::timeout(RENEW_EVERY, step(&api, &identity)).await;
        if namespace_missing && matches!(stepped, Ok(Ok(_))) {
            namespace_missing = false;
            tracing::info!(namespace, "the Lease namespace exists now");
        }
        match stepped {
            Ok(Ok(true)) => {
                renewed = Some(std::time::Instant::now());
                leadership.set(true, &metrics);
            }
            Ok(Ok(false)) => leadership.set(false, &metrics),
            // Said once, not at every attempt; the attempts go on, so creating the namespace is enough.
            Ok(Err(error)) if is_namespace_missing(&error) => {
                if !namespace_missing {
                    namespace_missing = true;
                    tracing::error!(namespace, "{}", namespace_missing_message(&namespace));
                }
            }
            Ok(Err(error)) => tracing::warn!("leader election: {error}"),
            Err(_) => tracing::warn!("leader election: the Lease did not answer within {RENEW_EVERY:?}"),
        }
        if renewed.is_none_or(|at| at.elapsed() > STEP_DOWN_AFTER) {
            leadership.set(false, &metrics);
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// The Lease could not be made because its namespace does not exist.
fn is_namespace_missing(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 404 && status.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
}

fn namespace_missing_message(namespace: &str) -> String {
    format!(
        "namespace {namespace:?}, where the leader-election Lease {LEASE_NAME} lives, does not exist, so this replica \
         cannot lead and will change nothing. Create it (`kubectl create namespace {namespace}`) or start the \
         controller with --namespace (SYSTEM_NAMESPACE) naming the namespace it runs in."
    )
}

async fn step(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
            spec: Some(held_by(identity, now, None, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    lease.spec = Some(match decide(&spec, identity, now) {
        Decision::Follow => return Ok(false),
        Decision::Renew => held_by(identity, now, spec.acquire_time, transitions),
        Decision::TakeOver => held_by(identity, now, None, transitions + 1),
    });
    // The resourceVersion in `lease` makes this fail with 409 if another replica wrote first.
    match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn held_by(identity: &str, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.into()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_namespace_is_told_from_other_refusals() {
        use kube::core::response::StatusDetails;
        let missing = |kind: &str| {
            let details = StatusDetails {
                name: "nodesmith".into(),
                group: String::new(),
                kind: kind.into(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            };
            let status = kube::core::Status::failure("namespaces \"nodesmith\" not found", "NotFound")
                .with_code(404)
                .with_details(details);
            kube::Error::Api(status.boxed())
        };
        assert!(is_namespace_missing(&missing("namespaces")));
        assert!(!is_namespace_missing(&missing("leases")));
        let message = namespace_missing_message("nodesmith");
        assert!(message.contains("kubectl create namespace nodesmith") && message.contains("--namespace"), "{message}");
    }

    #[test]
    fn the_holder_renews_others_follow_until_it_expires() {
        let now = Timestamp::now();
        assert_eq!(decide(&lease("a", 1), "a", now), Decision::Renew);
        assert_eq!(decide(&lease("a", 1), "b", now), Decision::Follow);
        assert_eq!(decide(&lease("a", 16), "b", now), Decision::TakeOver);
        assert_eq!(decide(&LeaseSpec::default(), "b", now), Decision::TakeOver);
    }
}
