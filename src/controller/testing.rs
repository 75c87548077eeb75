//! A `Context` for the controller's unit tests: the in-memory cloud (`cloud::fake`), caches filled from plain
//! objects, and a Kubernetes client that points nowhere (a test that reaches the API server fails at once,
//! so only code that acts through the cloud and reads the caches is tested this way).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use super::state::ClusterState;
pub use super::state::{Objects, store};
use super::{Context, Settings, interruption};
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::pod::Pod;
use crate::cloud::fake::{FAKE_CLUSTER, FakeCloud};

/// Caches with these NodeClaims and EC2NodeClasses, and nothing else.
pub fn state(nodeclaims: Vec<NodeClaim>, nodeclasses: Vec<EC2NodeClass>) -> ClusterState {
    Objects { nodeclaims, nodeclasses, ..Objects::default() }.into_state()
}

/// Any object from JSON (tests' fixtures).
pub fn object<K: serde::de::DeserializeOwned>(json: serde_json::Value) -> K {
    serde_json::from_value(json).expect("a valid object")
}

/// A Node in us-east-1a with 4 CPU, 16 GiB and 58 pods allocatable, with these taints, cordoned or not.
pub fn node(name: &str, taints: serde_json::Value, unschedulable: bool) -> Node {
    object(json!({
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "us-east-1a"}},
        "spec": {"taints": taints, "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "58"},
                   "capacity": {"cpu": "4", "memory": "16Gi", "pods": "58"}},
    }))
}

/// A pod in `shop` requesting `cpu`: Running on `node`, or Pending and unschedulable without one.
pub fn pod(name: &str, node: Option<&str>, cpu: &str) -> Pod {
    let scheduled = match node {
        Some(_) => json!([{"type": "PodScheduled", "status": "True"}]),
        None => json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]),
    };
    object(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"name": name}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }, "conditions": scheduled},
    }))
}

pub fn settings() -> Settings {
    Settings {
        cluster_name: FAKE_CLUSTER.into(),
        cluster_endpoint: None,
        interruption_queue: None,
        rebalance: interruption::RebalancePolicy::Event,
        batch_idle: Duration::from_secs(1),
        batch_max: Duration::from_secs(10),
        metrics_port: 0,
        health_port: 0,
        identity: "unit-test".into(),
        namespace: "nodesmith".into(),
        disruption: crate::disruption::Settings::default(),
        min_values_policy: Default::default(),
        catalog_refresh: Default::default(),
        observe: false,
    }
}

/// A context over `cloud` and `state`, with the embedded instance catalog.
pub fn context(cloud: Arc<FakeCloud>, state: ClusterState) -> Arc<Context> {
    context_with(settings(), cloud, state)
}

/// The same for a controller that observes (`--observe`): what it would write to an EC2NodeClass's status is kept in
/// `state` (`ClusterState::nodeclass` reads it), where a test can look at it.
pub fn observing_context(cloud: Arc<FakeCloud>, state: ClusterState) -> Arc<Context> {
    context_with(Settings { observe: true, ..settings() }, cloud, state)
}

fn context_with(settings: Settings, cloud: Arc<FakeCloud>, state: ClusterState) -> Arc<Context> {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
    let kube = kube::Client::try_from(config).expect("a client that points nowhere");
    let cluster = crate::cloud::fake::cluster_facts(FAKE_CLUSTER, None);
    let catalog = crate::catalog::Catalog {
        instance_types: crate::catalog::embedded_instance_types().to_vec(),
        prices: crate::catalog::pricing::PriceTable::embedded(),
    };
    let metrics = Arc::new(crate::telemetry::Metrics::default());
    Context::new(settings, cluster, kube.clone(), kube, cloud, metrics, state, catalog)
}
