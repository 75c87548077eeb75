//! Logging, the metrics registry (Karpenter's metric names, so existing dashboards keep working) and the metrics
//! and health servers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::catalog::Catalog;

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --log-level {filter:?}: {source}; use error, warn, info, debug, trace or a directive like nodesmith=debug"
)]
pub struct LogLevelError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Logs go to stderr so that stdout carries only the command's report; `json` for the controller.
pub fn init_logging(filter: &str) -> Result<(), LogLevelError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|source| LogLevelError { filter: filter.to_string(), source })?;
    tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr).init();
    Ok(())
}

pub fn init_json_logging(filter: &str) -> Result<(), LogLevelError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|source| LogLevelError { filter: filter.to_string(), source })?;
    tracing_subscriber::fmt().json().with_env_filter(env_filter).with_writer(std::io::stderr).init();
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodePoolLabels {
    nodepool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    method: String,
    provider: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudCallLabels {
    controller: String,
    method: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    message_type: String,
}

/// Where a node sits: the labels of every per-node gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node_name: String,
    pub nodepool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeResourceLabels {
    #[prometheus(flatten)]
    node: NodeLabels,
    resource_type: String,
}

/// One node's gauges: (resource, allocatable, requested by its pods) and its price.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSample {
    pub labels: NodeLabels,
    pub resources: Vec<(&'static str, f64, f64)>,
    pub price_per_hour: Option<f64>,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    reason: String,
    consolidation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DisruptedLabels {
    reason: String,
    nodepool: String,
    capacity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolReasonLabels {
    nodepool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsolidationTypeLabels {
    consolidation_type: String,
}

/// The price of every offering of the catalog, encoded from the catalog itself at each scrape: ten thousand
/// offerings held as metric series would cost the controller more memory than all its caches of nodes.
#[derive(Debug, Default)]
struct OfferingPriceCollector {
    catalog: std::sync::RwLock<Option<Arc<Catalog>>>,
}

impl Collector for OfferingPriceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(catalog) = self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone() else {
            return Ok(());
        };
        let mut by_source: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
        {
            let mut family = encoder.encode_descriptor(
                "karpenter_cloudprovider_instance_type_offering_price_estimate",
                "Estimated hourly price of each offering (instance type, zone, capacity type), in US dollars",
                None,
                MetricType::Gauge,
            )?;
            for (instance_type, zone, capacity_type, price) in catalog.offering_prices() {
                let labels =
                    [("instance_type", instance_type), ("capacity_type", capacity_type.as_str()), ("zone", zone)];
                ConstGauge::new(price.usd_per_hour).encode(family.encode_family(&labels)?)?;
                *by_source.entry((capacity_type.as_str(), price.source.as_str())).or_default() += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "nodesmith_offering_prices",
            "Offerings priced from each source: pricing-api, spot-price-history, or embedded data",
            None,
            MetricType::Gauge,
        )?;
        for ((capacity_type, source), offerings) in by_source {
            let labels = [("capacity_type", capacity_type), ("source", source)];
            ConstGauge::new(offerings).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The `provider` label of the cloud provider metrics, as Karpenter's AWS provider sets it.
const PROVIDER: &str = "aws";

/// The controller's metrics, registered once.
pub struct Metrics {
    registry: Registry,
    scheduling_duration: Histogram,
    nodeclaims_created: Family<NodePoolLabels, Counter>,
    nodeclaims_terminated: Family<NodePoolLabels, Counter>,
    cloudprovider_errors: Family<ErrorLabels, Counter>,
    cloudprovider_duration: Family<CloudCallLabels, Histogram>,
    pod_startup: Histogram,
    interruption_received: Family<MessageLabels, Counter>,
    interruption_deleted: Counter,
    interruption_refused: Family<ReasonLabels, Counter>,
    interruption_queue_duration: Histogram,
    nodes_allocatable: Family<NodeResourceLabels, FloatGauge>,
    nodes_requested: Family<NodeResourceLabels, FloatGauge>,
    nodes_price: Family<NodeLabels, FloatGauge>,
    disruption_decisions: Family<DecisionLabels, Counter>,
    disruption_eligible: Family<ReasonLabels, Gauge>,
    nodeclaims_disrupted: Family<DisruptedLabels, Counter>,
    allowed_disruptions: Family<PoolReasonLabels, Gauge>,
    consolidation_timeouts: Family<ConsolidationTypeLabels, Counter>,
    offering_prices: Arc<OfferingPriceCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let scheduling_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let nodeclaims_created = Family::default();
        let nodeclaims_terminated = Family::default();
        let cloudprovider_errors = Family::default();
        let cloudprovider_duration = Family::<CloudCallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let pod_startup = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        let interruption_received = Family::default();
        let interruption_deleted = Counter::default();
        let interruption_refused = Family::default();
        let interruption_queue_duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let nodes_allocatable = Family::default();
        let nodes_requested = Family::default();
        let nodes_price = Family::default();
        let disruption_decisions = Family::default();
        let disruption_eligible = Family::default();
        let nodeclaims_disrupted = Family::default();
        let allowed_disruptions = Family::default();
        let consolidation_timeouts = Family::default();
        let offering_prices = Arc::new(OfferingPriceCollector::default());
        registry.register_collector(Box::new(offering_prices.clone()));
        registry.register(
            "karpenter_voluntary_disruption_decisions",
            "Disruption commands carried out, by decision (delete, replace), reason and consolidation type",
            disruption_decisions.clone(),
        );
        registry.register(
            "karpenter_voluntary_disruption_eligible_nodes",
            "Nodes eligible for disruption, by reason (before budgets)",
            disruption_eligible.clone(),
        );
        registry.register(
            "karpenter_nodeclaims_disrupted",
            "NodeClaims disrupted, by reason (including expired and interruption), NodePool and capacity type",
            nodeclaims_disrupted.clone(),
        );
        registry.register(
            "karpenter_nodepools_allowed_disruptions",
            "Nodes each NodePool's budgets allow to be disrupted now, by reason",
            allowed_disruptions.clone(),
        );
        registry.register(
            "karpenter_voluntary_disruption_consolidation_timeouts",
            "Consolidation passes that ran out of time before every candidate was evaluated",
            consolidation_timeouts.clone(),
        );
        registry.register(
            "karpenter_nodes_allocatable",
            "Allocatable of each node nodesmith manages (cpu in cores, memory in bytes, pods)",
            nodes_allocatable.clone(),
        );
        registry.register(
            "karpenter_nodes_total_pod_requests",
            "Sum of the requests of the pods on each node nodesmith manages",
            nodes_requested.clone(),
        );
        registry.register(
            "nodesmith_nodes_price_per_hour_dollars",
            "What each node nodesmith manages costs per hour (spot or on-demand price of its type and zone)",
            nodes_price.clone(),
        );
        registry.register(
            "karpenter_interruption_message_queue_duration_seconds",
            "Time from a message's arrival in the interruption queue to its handling",
            interruption_queue_duration.clone(),
        );
        registry.register(
            "karpenter_scheduler_scheduling_duration_seconds",
            "Duration of one scheduling round (planning new nodes for pending pods)",
            scheduling_duration.clone(),
        );
        registry.register("karpenter_nodeclaims_created", "NodeClaims created", nodeclaims_created.clone());
        registry.register("karpenter_nodeclaims_terminated", "NodeClaims terminated", nodeclaims_terminated.clone());
        registry.register(
            "karpenter_cloudprovider_errors",
            "Errors returned by the cloud provider, by calling controller, method and error code",
            cloudprovider_errors.clone(),
        );
        registry.register(
            "karpenter_cloudprovider_duration_seconds",
            "Duration of cloud provider calls, by calling controller and method",
            cloudprovider_duration.clone(),
        );
        registry.register(
            "karpenter_pods_startup_duration_seconds",
            "Time from a pod's creation to its running, for pods nodesmith provisioned for",
            pod_startup.clone(),
        );
        registry.register(
            "karpenter_interruption_received_messages",
            "Interruption queue messages received, by kind",
            interruption_received.clone(),
        );
        registry.register(
            "karpenter_interruption_deleted_messages",
            "Interruption queue messages deleted",
            interruption_deleted.clone(),
        );
        registry.register(
            "nodesmith_interruption_refused_messages",
            "Interruption queue messages deleted without acting on them, as not to be trusted: from another account or \
             region (foreign_origin), or a state change EC2 does not confirm (unconfirmed_state_change)",
            interruption_refused.clone(),
        );
        Self {
            registry,
            scheduling_duration,
            nodeclaims_created,
            nodeclaims_terminated,
            cloudprovider_errors,
            cloudprovider_duration,
            pod_startup,
            interruption_received,
            interruption_deleted,
            interruption_refused,
            interruption_queue_duration,
            nodes_allocatable,
            nodes_requested,
            nodes_price,
            disruption_decisions,
            disruption_eligible,
            nodeclaims_disrupted,
            allowed_disruptions,
            consolidation_timeouts,
            offering_prices,
        }
    }
}

impl Metrics {
    pub fn scheduling_duration(&self, seconds: f64) {
        self.scheduling_duration.observe(seconds);
    }

    pub fn nodeclaim_created(&self, nodepool: &str) {
        self.nodeclaims_created.get_or_create(&NodePoolLabels { nodepool: nodepool.into() }).inc();
    }

    pub fn nodeclaim_terminated(&self, nodepool: &str) {
        self.nodeclaims_terminated.get_or_create(&NodePoolLabels { nodepool: nodepool.into() }).inc();
    }

    /// A cloud provider call `method` made for `controller` failed with `error` (an AWS error code).
    pub fn cloudprovider_error(&self, controller: &str, method: &str, error: &str) {
        let labels = ErrorLabels {
            controller: controller.into(),
            method: method.into(),
            provider: PROVIDER.into(),
            error: error.into(),
        };
        self.cloudprovider_errors.get_or_create(&labels).inc();
    }

    pub fn cloudprovider_call(&self, controller: &str, method: &str, seconds: f64) {
        let labels =
            CloudCallLabels { controller: controller.into(), method: method.into(), provider: PROVIDER.into() };
        self.cloudprovider_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn pod_started(&self, seconds: f64) {
        self.pod_startup.observe(seconds);
    }

    pub fn interruption_received(&self, message_type: &str) {
        self.interruption_received.get_or_create(&MessageLabels { message_type: message_type.into() }).inc();
    }

    pub fn interruption_refused(&self, reason: &str) {
        self.interruption_refused.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn interruption_deleted(&self) {
        self.interruption_deleted.inc();
    }

    pub fn interruption_queue_duration(&self, seconds: f64) {
        self.interruption_queue_duration.observe(seconds);
    }

    pub fn disruption_decision(&self, decision: &str, reason: &str, consolidation_type: &str) {
        let labels = DecisionLabels {
            decision: decision.into(),
            reason: reason.into(),
            consolidation_type: consolidation_type.into(),
        };
        self.disruption_decisions.get_or_create(&labels).inc();
    }

    pub fn disruption_eligible(&self, reason: &str, nodes: usize) {
        let nodes = i64::try_from(nodes).unwrap_or(i64::MAX);
        self.disruption_eligible.get_or_create(&ReasonLabels { reason: reason.into() }).set(nodes);
    }

    pub fn nodeclaim_disrupted(&self, reason: &str, nodepool: &str, capacity_type: &str) {
        let labels =
            DisruptedLabels { reason: reason.into(), nodepool: nodepool.into(), capacity_type: capacity_type.into() };
        self.nodeclaims_disrupted.get_or_create(&labels).inc();
    }

    /// Replaces every NodePool's allowed-disruptions gauge (pools that are gone stop being reported).
    pub fn set_allowed_disruptions(&self, allowed: &[(String, &str, usize)]) {
        self.allowed_disruptions.clear();
        for (nodepool, reason, nodes) in allowed {
            let labels = PoolReasonLabels { nodepool: nodepool.clone(), reason: reason.to_string() };
            self.allowed_disruptions.get_or_create(&labels).set(i64::try_from(*nodes).unwrap_or(i64::MAX));
        }
    }

    pub fn consolidation_timeout(&self, consolidation_type: &str) {
        let labels = ConsolidationTypeLabels { consolidation_type: consolidation_type.into() };
        self.consolidation_timeouts.get_or_create(&labels).inc();
    }

    /// The catalog whose offering prices are exported from now on (read at each scrape, never copied).
    pub fn price_offerings_of(&self, catalog: Arc<Catalog>) {
        *self.offering_prices.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(catalog);
    }

    /// Replaces every per-node gauge: nodes that are gone stop being reported.
    pub fn set_nodes(&self, samples: &[NodeSample]) {
        self.nodes_allocatable.clear();
        self.nodes_requested.clear();
        self.nodes_price.clear();
        for sample in samples {
            for &(resource, allocatable, requested) in &sample.resources {
                let labels = NodeResourceLabels { node: sample.labels.clone(), resource_type: resource.to_string() };
                self.nodes_allocatable.get_or_create(&labels).set(allocatable);
                self.nodes_requested.get_or_create(&labels).set(requested);
            }
            if let Some(price) = sample.price_per_hour {
                self.nodes_price.get_or_create(&sample.labels).set(price);
            }
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("could not encode metrics: {error}");
        }
        text
    }
}

/// Serves `/metrics` on one port and `/healthz`, `/readyz` on another (ready once the caches synced).
pub async fn serve(
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    metrics_port: u16,
    health_port: u16,
) -> std::io::Result<()> {
    use axum::routing::get;
    let metrics_app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
            }
        }),
    );
    let health_app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready.clone();
            async move {
                if ready.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }
        }),
    );
    let metrics_listener = tokio::net::TcpListener::bind(("0.0.0.0", metrics_port)).await?;
    let health_listener = tokio::net::TcpListener::bind(("0.0.0.0", health_port)).await?;
    tokio::try_join!(axum::serve(metrics_listener, metrics_app), axum::serve(health_listener, health_app))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_karpenters_names() {
        let metrics = Metrics::default();
        metrics.nodeclaim_created("default");
        metrics.cloudprovider_error("provisioner", "CreateFleet", "InsufficientInstanceCapacity");
        metrics.cloudprovider_call("provisioner", "CreateFleet", 0.2);
        let text = metrics.encode();
        assert!(text.contains(r#"karpenter_nodeclaims_created_total{nodepool="default"} 1"#), "{text}");
        assert!(text.contains(
            r#"karpenter_cloudprovider_errors_total{controller="provisioner",method="CreateFleet",provider="aws",error="InsufficientInstanceCapacity"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"karpenter_cloudprovider_duration_seconds_count{controller="provisioner",method="CreateFleet",provider="aws"} 1"#
        ), "{text}");
        assert!(text.contains("karpenter_scheduler_scheduling_duration_seconds_bucket"));
    }

    #[test]
    fn node_gauges_carry_their_labels_and_forget_nodes_that_are_gone() {
        let metrics = Metrics::default();
        let labels = NodeLabels {
            node_name: "ip-10-0-0-1".into(),
            nodepool: "default".into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: "spot".into(),
        };
        metrics.set_nodes(&[NodeSample { labels, resources: vec![("cpu", 1.93, 1.5)], price_per_hour: Some(0.04) }]);
        let text = metrics.encode();
        let node = r#"node_name="ip-10-0-0-1",nodepool="default",instance_type="m5.large",zone="us-east-1a",capacity_type="spot""#;
        assert!(text.contains(&format!("karpenter_nodes_allocatable{{{node},resource_type=\"cpu\"}} 1.93")), "{text}");
        assert!(text.contains(&format!("karpenter_nodes_total_pod_requests{{{node},resource_type=\"cpu\"}} 1.5")));
        assert!(text.contains(&format!("nodesmith_nodes_price_per_hour_dollars{{{node}}} 0.04")));
        metrics.set_nodes(&[]);
        assert!(!metrics.encode().contains("ip-10-0-0-1"));
    }
}
