//! `nodesmith controller`: the reconcilers that turn pending pods into nodes and nodes back into nothing.
//!
//! Every component reads the cluster from the same watch caches (`state`), and only the leader writes.

pub mod batch_window;
pub mod catalog_refresh;
pub mod cluster_metrics;
pub mod cluster_snapshot;
pub mod conditions;
pub mod conflict_backoff;
pub mod disrupted_taint;
pub mod disruption;
pub mod events;
pub mod garbage_collection;
pub mod interruption;
pub mod launch;
pub mod leader;
pub mod nodeclaim_lifecycle;
pub mod nodeclass_status;
pub mod nodeclass_validation;
pub mod nodepool_status;
pub mod nominations;
pub mod object_metrics;
pub mod observe;
pub mod pod_clock;
pub mod pod_notes;
pub use crate::apis::pods;
pub mod provisioner;
pub mod slim;
pub mod state;
pub mod termination;
#[cfg(test)]
pub mod testing;
pub mod volume_topology;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};

use crate::catalog::Catalog;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::cloud::error::CloudError;
use crate::cloud::launch_caches::LaunchCaches;
use crate::cloud::{CloudProvider, Measured};
use state::ClusterState;

/// How the controller runs; from flags or the environment variables the Helm chart sets.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster_name: String,
    /// Overrides the endpoint DescribeCluster reports (nodes join through it).
    pub cluster_endpoint: Option<String>,
    pub interruption_queue: Option<String>,
    /// What a rebalance recommendation does.
    pub rebalance: interruption::RebalancePolicy,
    pub batch_idle: Duration,
    pub batch_max: Duration,
    pub metrics_port: u16,
    pub health_port: u16,
    /// Identifies this replica in the leader Lease and in Events.
    pub identity: String,
    pub namespace: String,
    /// How consolidation may act (spot-to-spot, the churn guard).
    pub disruption: crate::disruption::Settings,
    /// Whether NodePool `minValues` are a hard rule (Strict) or relaxed where pods need it (BestEffort).
    pub min_values_policy: crate::scheduling::MinValuesPolicy,
    /// How often instance types and prices are read again.
    pub catalog_refresh: catalog_refresh::Intervals,
    /// Shadow mode (`--observe`): plan and decide, publish what would be done, change nothing (`observe`).
    pub observe: bool,
}

pub use crate::cloud::cluster::ClusterFacts;

/// Everything a reconciler needs, shared.
pub struct Context {
    pub settings: Settings,
    pub cluster: ClusterFacts,
    pub kube: kube::Client,
    /// For evictions only: a client without kube's retry of 429. A PodDisruptionBudget answers an eviction with
    /// 429, and the drain must see that at once (to try the next pod, and to honour `terminationGracePeriod`)
    /// rather than sit in a backoff of up to 15 retries.
    pub kube_evictions: kube::Client,
    /// Every AWS call goes through this; reach it with `Context::cloud`, which records the call's metrics.
    cloud: Arc<dyn CloudProvider>,
    pub state: ClusterState,
    /// The region's instance types and prices; read with `catalog()`, replaced by `catalog_refresh`.
    catalog: std::sync::RwLock<Arc<Catalog>>,
    /// Where the provisioner has just planned pods (its nominations, as last published): disruption leaves those
    /// nodes and NodeClaims alone and counts the pods against their room.
    pub nominated: Mutex<nominations::Nominations>,
    /// When the provisioner saw, decided about and placed the pods it is dealing with (provisioning metrics).
    pub pod_clock: Mutex<pod_clock::PodClock>,
    /// When this process asked EC2 to terminate each NodeClaim's instance (NodeClaim name → then), until the
    /// instance is seen going: `karpenter_nodeclaims_instance_termination_duration_seconds`.
    pub instance_terminations: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// What the disruption loop's pod-event looks saw: each NodeClaim's pods, and when pods last left it.
    pub pod_activity: Mutex<disruption::pod_events::PodActivity>,
    pub recorder: Recorder,
    pub metrics: Arc<crate::telemetry::Metrics>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        cluster: ClusterFacts,
        kube: kube::Client,
        kube_evictions: kube::Client,
        cloud: Arc<dyn CloudProvider>,
        metrics: Arc<crate::telemetry::Metrics>,
        state: ClusterState,
        catalog: Catalog,
    ) -> Arc<Self> {
        let catalog = Arc::new(catalog);
        metrics.price_offerings_of(catalog.clone());
        let caches = Arc::downgrade(&cloud);
        metrics.unavailable_offerings_from(Arc::new(move || {
            caches.upgrade().map(|cloud| cloud.caches().unavailable.snapshot()).unwrap_or_default()
        }));
        Arc::new(Self {
            recorder: Recorder::new(kube.clone(), reporter(&settings)),
            settings,
            cluster,
            kube,
            kube_evictions,
            cloud,
            state,
            catalog: std::sync::RwLock::new(catalog),
            nominated: Mutex::default(),
            pod_clock: Mutex::default(),
            instance_terminations: Mutex::default(),
            pod_activity: Mutex::default(),
            metrics,
        })
    }

    /// The cloud, as `controller` calls it: each call is timed and its errors counted under that controller.
    pub fn cloud(&self, controller: &'static str) -> Measured {
        Measured::new(self.cloud.clone(), self.metrics.clone(), controller)
    }

    /// What the cloud remembers between launches (unavailable offerings, subnet debits, templates used).
    pub fn caches(&self) -> &LaunchCaches {
        self.cloud.caches()
    }

    /// A recorder with a cache of its own. The shared one folds an Event into an earlier one of the same reason
    /// on the same object for minutes, keeping the earlier note; a note that says what holds a node *now* must not
    /// be folded into what held it before.
    pub fn fresh_recorder(&self) -> Recorder {
        Recorder::new(self.kube.clone(), reporter(&self.settings))
    }

    /// The instance types and prices as last read; a caller keeps the `Arc` for as long as one plan needs them.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Swaps the catalog in whole (plans under way keep the one they started with), and its prices' metrics.
    pub fn replace_catalog(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        self.metrics.price_offerings_of(catalog.clone());
        *self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = catalog;
    }

    /// One instance type as the catalog knows it now.
    pub fn instance_type(&self, name: &str) -> Option<InstanceTypeInfo> {
        self.catalog().instance_type(name).cloned()
    }
}

/// Who publishes the controller's Events: nodesmith, this replica.
fn reporter(settings: &Settings) -> Reporter {
    Reporter { controller: "nodesmith".into(), instance: Some(settings.identity.clone()) }
}

/// Errors of one reconcile; each is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    #[error("{0}")]
    Invalid(String),
    #[error("the finalizers of {0} changed since they were read")]
    StaleFinalizers(String),
}

impl Error {
    /// Another writer changed the object after it was read (409 Conflict, or its finalizers for a finalizer's
    /// removal): expected now and then, and the retry works from the fresh copy.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(status)) if status.code == 409)
            || matches!(self, Self::StaleFinalizers(_))
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no Kubernetes configuration (in-cluster service account or KUBECONFIG): {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("could not build a Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not read cluster {cluster}: {source}")]
    Cluster { cluster: String, source: CloudError },
    #[error("could not serve metrics and health on ports {metrics_port} and {health_port}: {source}")]
    Serve { metrics_port: u16, health_port: u16, source: std::io::Error },
}

/// Starts every component and runs until SIGINT/SIGTERM.
pub async fn run(settings: Settings, aws: Arc<dyn CloudProvider>) -> Result<(), StartError> {
    let kube_config = kube::Config::infer().await?;
    let metrics = Arc::new(crate::telemetry::Metrics::default());
    let mut eviction_config = kube_config.clone();
    eviction_config.default_retry = false;
    let (kube, kube_evictions) = if settings.observe {
        let read_only = observe::read_only::kube_client(kube_config, metrics.clone())?;
        (read_only.clone(), read_only)
    } else {
        let counted = crate::telemetry::api_requests::ApiRequestsLayer::new(metrics.clone());
        let client =
            |config| Ok::<_, kube::Error>(kube::client::ClientBuilder::try_from(config)?.with_layer(&counted).build());
        (client(kube_config)?, client(eviction_config)?)
    };
    let startup = Measured::new(aws.clone(), metrics.clone(), "startup");
    let cluster = startup
        .describe_cluster(&settings.cluster_name, settings.cluster_endpoint.as_deref())
        .await
        .map_err(|source| StartError::Cluster { cluster: settings.cluster_name.clone(), source })?;
    let region = cluster.account_and_region().map_or(crate::catalog::pricing::HOME_REGION, |(_, region)| region);
    let catalog = catalog_refresh::initial(&startup, region).await;
    let aws: Arc<dyn CloudProvider> = if settings.observe {
        Arc::new(observe::read_only::ReadOnlyCloud::new(aws, region, metrics.clone()))
    } else {
        aws
    };
    // Made before the watches, which count object transitions only while this replica leads.
    let leadership = if settings.observe { leader::Leadership::without_lease() } else { leader::Leadership::default() };
    let transitions = object_metrics::ObjectTransitions::new(metrics.clone(), leadership.clone());
    let (state, subscriptions) = state::ClusterState::start(&kube, transitions);
    let ctx = Context::new(settings.clone(), cluster, kube.clone(), kube_evictions, aws, metrics, state, catalog);

    let ready = Arc::new(AtomicBool::new(false));
    let (metrics_port, health_port) = (settings.metrics_port, settings.health_port);
    let server = crate::telemetry::serve(ctx.metrics.clone(), ready.clone(), metrics_port, health_port);
    let server = tokio::spawn(server);

    ctx.state.wait_synced().await;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(cluster = %settings.cluster_name, identity = %settings.identity, "caches synced; starting");

    if settings.observe {
        return observe_until_stopped(ctx, leadership, subscriptions, server, metrics_port, health_port).await;
    }
    let (namespace, identity) = (settings.namespace.clone(), settings.identity.clone());
    tokio::spawn(leader::run(kube, namespace, identity, leadership.clone(), ctx.metrics.clone()));
    cluster_metrics::report(&ctx, leadership.clone());
    match settings.interruption_queue.clone() {
        Some(queue) => {
            tokio::spawn(interruption::run(ctx.clone(), leadership.clone(), queue, settings.rebalance));
        }
        None => tracing::info!("no interruption queue configured (INTERRUPTION_QUEUE): interruption handling is off"),
    }
    tokio::select! {
        () = provisioner::run(ctx.clone(), leadership.clone(), subscriptions.provisioner) => tracing::error!("the provisioner stopped"),
        () = nodeclaim_lifecycle::run(ctx.clone(), leadership.clone(), subscriptions.nodeclaims, subscriptions.nodes) => tracing::error!("the NodeClaim controller stopped"),
        () = nodeclass_status::run(ctx.clone(), leadership.clone(), subscriptions.nodeclasses) => tracing::error!("the EC2NodeClass controller stopped"),
        () = garbage_collection::run(ctx.clone(), leadership.clone()) => tracing::error!("garbage collection stopped"),
        () = disruption::run(ctx.clone(), leadership.clone()) => tracing::error!("disruption stopped"),
        () = catalog_refresh::run(ctx.clone()) => tracing::error!("the catalog refresh stopped"),
        served = server => {
            if let Ok(Err(source)) = served {
                return Err(StartError::Serve { metrics_port, health_port, source });
            }
        }
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// Shadow mode: only the parts that read, plan and decide (see `observe`), under a leadership without a Lease.
async fn observe_until_stopped(
    ctx: Arc<Context>,
    leadership: leader::Leadership,
    subscriptions: state::Subscriptions,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    metrics_port: u16,
    health_port: u16,
) -> Result<(), StartError> {
    tracing::info!("observing: planning and deciding as usual, changing nothing in AWS or Kubernetes");
    cluster_metrics::report(&ctx, leadership.clone());
    // The NodeClaim and Node streams of the shared watches drive nothing here, but must be read (`Subscriptions`).
    let drain = async {
        let nodeclaims = futures::StreamExt::for_each(subscriptions.nodeclaims, |_| async {});
        let nodes = futures::StreamExt::for_each(subscriptions.nodes, |_| async {});
        tokio::join!(nodeclaims, nodes);
    };
    tokio::select! {
        () = provisioner::run(ctx.clone(), leadership.clone(), subscriptions.provisioner) => tracing::error!("the provisioner stopped"),
        () = nodeclass_status::run(ctx.clone(), leadership.clone(), subscriptions.nodeclasses) => tracing::error!("the EC2NodeClass controller stopped"),
        () = disruption::run(ctx.clone(), leadership.clone()) => tracing::error!("disruption stopped"),
        () = catalog_refresh::run(ctx.clone()) => tracing::error!("the catalog refresh stopped"),
        () = drain => tracing::error!("the watches stopped"),
        served = server => {
            if let Ok(Err(source)) = served {
                return Err(StartError::Serve { metrics_port, health_port, source });
            }
        }
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Runs one reconcile of `controller` and records it as controller-runtime does (count by result, errors,
/// duration), so Karpenter's performance dashboard shows nodesmith's controllers.
pub async fn measured<E>(
    metrics: Arc<crate::telemetry::Metrics>,
    controller: &'static str,
    reconcile: impl std::future::Future<Output = Result<kube::runtime::controller::Action, E>>,
) -> Result<kube::runtime::controller::Action, E> {
    use crate::telemetry::ReconcileResult;
    let started = std::time::Instant::now();
    let result = reconcile.await;
    let outcome = match &result {
        Ok(action) if *action == kube::runtime::controller::Action::await_change() => ReconcileResult::Success,
        Ok(_) => ReconcileResult::RequeueAfter,
        Err(_) => ReconcileResult::Error,
    };
    metrics.reconciled(controller, outcome, started.elapsed().as_secs_f64());
    result
}

/// The object is already gone (HTTP 404).
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The cluster DNS address kubelets use by default: the tenth address of the service range.
pub fn cluster_dns_ip(service_cidr: &str) -> Option<String> {
    let (base, _) = service_cidr.split_once('/')?;
    let address: std::net::Ipv4Addr = base.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(address) + 10).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dns_is_the_tenth_service_address() {
        assert_eq!(cluster_dns_ip("10.100.0.0/16").as_deref(), Some("10.100.0.10"));
        assert_eq!(cluster_dns_ip("172.20.0.0/16").as_deref(), Some("172.20.0.10"));
        assert_eq!(cluster_dns_ip("not a cidr"), None);
    }

    #[test]
    fn only_a_409_is_a_conflict() {
        let api_error = |code: u16, reason: &str| {
            Error::Kube(kube::Error::Api(kube::core::Status::failure("refused", reason).with_code(code).boxed()))
        };
        assert!(api_error(409, "Conflict").is_conflict());
        assert!(!api_error(404, "NotFound").is_conflict());
        assert!(!api_error(422, "Invalid").is_conflict());
        assert!(!Error::Invalid("bad".into()).is_conflict());
    }
}
