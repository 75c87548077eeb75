//! What keeps an observing controller from changing anything, whatever a code path tries: a Kubernetes client
//! that sends only reads and Events, and a cloud that refuses every AWS call that would change something. The
//! components an observing controller runs are chosen not to write (see `observe`); these are the guard rail, and
//! every refusal is logged and counted (`nodesmith_observe_refused_total`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Request};

use crate::catalog::instance_type::InstanceTypeInfo;
use crate::cloud::cluster::ClusterFacts;
use crate::cloud::error::CloudError;
use crate::cloud::fleet::{FleetError, FleetRequest, LaunchedInstance};
use crate::cloud::instances::InstanceSummary;
use crate::cloud::launch_caches::LaunchCaches;
use crate::cloud::launch_template::LaunchTemplateSpec;
use crate::cloud::nodeclass::{ImageInfo, SecurityGroupInfo, SelectorTerm, SubnetInfo};
use crate::cloud::pricing::SpotPrice;
use crate::cloud::queue::QueueMessage;
use crate::cloud::{CloudProvider, instance_profile};
use crate::telemetry::Metrics;

/// Whether an observing controller may send this request to the API server: reads (watches are GETs), and Events
/// (the core and the events.k8s.io APIs), which change no object.
pub fn allowed(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD) || is_event(path)
}

/// `/api/v1/namespaces/NS/events[/NAME]` or `/apis/events.k8s.io/v1/namespaces/NS/events[/NAME]`.
fn is_event(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/api/v1/").or_else(|| path.strip_prefix("/apis/events.k8s.io/v1/"));
    let segments: Vec<&str> = rest.map(|r| r.split('/').collect()).unwrap_or_default();
    matches!(segments.as_slice(), ["namespaces", _, "events"] | ["namespaces", _, "events", _])
}

/// Why a request was not sent.
#[derive(Debug, thiserror::Error)]
#[error("not sent while observing: {method} {path} would change the cluster")]
pub struct Refused {
    method: Method,
    path: String,
}

/// A Kubernetes client over `config` that sends only what `allowed` lets through; anything else fails with
/// `Refused` before it leaves the process.
pub fn kube_client(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let metrics_for_requests = metrics.clone();
    let filter = tower::filter::FilterLayer::new(move |request: Request<kube::client::Body>| {
        if allowed(request.method(), request.uri().path()) {
            return Ok(request);
        }
        let refused = Refused { method: request.method().clone(), path: request.uri().path().to_string() };
        tracing::warn!("{refused}");
        metrics.observe_refused("kubernetes");
        Err(refused)
    });
    let counted = crate::telemetry::api_requests::ApiRequestsLayer::new(metrics_for_requests);
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&counted).with_layer(&filter).build())
}

/// The cloud for an observing controller: every read goes to `inner`; a call that would change something is
/// refused. An instance profile is not made but named: the one nodesmith would make for the class.
pub struct ReadOnlyCloud {
    inner: Arc<dyn CloudProvider>,
    region: String,
    metrics: Arc<Metrics>,
}

impl ReadOnlyCloud {
    pub fn new(inner: Arc<dyn CloudProvider>, region: &str, metrics: Arc<Metrics>) -> Self {
        Self { inner, region: region.to_string(), metrics }
    }

    fn refuse(&self, action: &'static str) -> CloudError {
        tracing::warn!("not called while observing: {action} would change the account");
        self.metrics.observe_refused("aws");
        CloudError::call(action, "not called while observing (--observe)")
    }
}

#[async_trait]
impl CloudProvider for ReadOnlyCloud {
    fn caches(&self) -> &LaunchCaches {
        self.inner.caches()
    }

    async fn describe_cluster(&self, name: &str, endpoint: Option<&str>) -> Result<ClusterFacts, CloudError> {
        self.inner.describe_cluster(name, endpoint).await
    }

    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, CloudError> {
        self.inner.instance_types().await
    }

    async fn on_demand_prices(&self) -> Result<HashMap<String, f64>, CloudError> {
        self.inner.on_demand_prices().await
    }

    async fn spot_prices(&self) -> Result<Vec<SpotPrice>, CloudError> {
        self.inner.spot_prices().await
    }

    async fn image_from_parameter(&self, parameter: &str) -> Result<Option<String>, CloudError> {
        self.inner.image_from_parameter(parameter).await
    }

    async fn subnets(&self, terms: &[SelectorTerm]) -> Result<Vec<SubnetInfo>, CloudError> {
        self.inner.subnets(terms).await
    }

    async fn security_groups(&self, terms: &[SelectorTerm]) -> Result<Vec<SecurityGroupInfo>, CloudError> {
        self.inner.security_groups(terms).await
    }

    async fn images(&self, terms: &[SelectorTerm]) -> Result<Vec<ImageInfo>, CloudError> {
        self.inner.images(terms).await
    }

    async fn ensure_instance_profile(&self, cluster: &str, nodeclass: &str, _role: &str) -> Result<String, CloudError> {
        Ok(instance_profile::profile_name(cluster, &self.region, nodeclass))
    }

    async fn ensure_launch_template(&self, _spec: &LaunchTemplateSpec) -> Result<String, CloudError> {
        Err(self.refuse("ec2:CreateLaunchTemplate"))
    }

    async fn delete_unused_launch_templates(
        &self,
        _cluster: &str,
        _in_use: &HashSet<String>,
        _min_age: Duration,
    ) -> Result<Vec<String>, CloudError> {
        Err(self.refuse("ec2:DeleteLaunchTemplate"))
    }

    async fn create_fleet(&self, _request: &FleetRequest) -> Result<LaunchedInstance, FleetError> {
        Err(FleetError::Cloud(self.refuse("ec2:CreateFleet")))
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Option<InstanceSummary>, CloudError> {
        self.inner.describe_instance(instance_id).await
    }

    async fn find_instance_for_nodeclaim(
        &self,
        cluster: &str,
        nodeclaim: &str,
    ) -> Result<Option<InstanceSummary>, CloudError> {
        self.inner.find_instance_for_nodeclaim(cluster, nodeclaim).await
    }

    async fn node_pool_instances(&self, cluster: &str) -> Result<Vec<InstanceSummary>, CloudError> {
        self.inner.node_pool_instances(cluster).await
    }

    async fn terminate_instances(&self, _instance_ids: &[String]) -> Result<(), CloudError> {
        Err(self.refuse("ec2:TerminateInstances"))
    }

    async fn queue_url(&self, queue: &str) -> Result<String, CloudError> {
        self.inner.queue_url(queue).await
    }

    /// Receiving hides a message from its real consumer for the visibility timeout: refused too.
    async fn receive_messages(&self, _url: &str) -> Result<Vec<QueueMessage>, CloudError> {
        Err(self.refuse("sqs:ReceiveMessage"))
    }

    async fn delete_messages(&self, _url: &str, _receipts: &[String]) -> Result<usize, CloudError> {
        Err(self.refuse("sqs:DeleteMessage"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;

    #[test]
    fn only_reads_and_events_reach_the_api_server() {
        assert!(allowed(&Method::GET, "/api/v1/pods?watch=true&resourceVersion=1"));
        assert!(allowed(&Method::GET, "/apis/karpenter.sh/v1/nodeclaims"));
        assert!(allowed(&Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events"));
        assert!(allowed(&Method::PATCH, "/apis/events.k8s.io/v1/namespaces/shop/events/web.1"));
        assert!(allowed(&Method::POST, "/api/v1/namespaces/default/events"));
        assert!(!allowed(&Method::POST, "/apis/karpenter.sh/v1/nodeclaims"));
        assert!(!allowed(&Method::PATCH, "/api/v1/nodes/ip-10-0-4-4.ec2.internal"));
        assert!(!allowed(&Method::DELETE, "/apis/karpenter.sh/v1/nodeclaims/default-abcde"));
        assert!(!allowed(&Method::POST, "/api/v1/namespaces/shop/pods/web/eviction"));
        assert!(!allowed(&Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/nodesmith/leases/nodesmith"));
        // A pod named "events" is not an Event.
        assert!(!allowed(&Method::DELETE, "/api/v1/namespaces/events/pods/events"));
        assert!(!allowed(&Method::PATCH, "/apis/karpenter.sh/v1/namespaces/x/events"));
    }

    #[tokio::test]
    async fn the_cloud_refuses_what_would_change_the_account_and_answers_reads() {
        let fake = Arc::new(FakeCloud::default());
        let metrics = Arc::new(Metrics::default());
        let cloud = ReadOnlyCloud::new(fake.clone(), "us-east-1", metrics.clone());
        assert!(cloud.terminate_instances(&["i-1".to_string()]).await.is_err());
        assert!(cloud.receive_messages("https://queue").await.is_err());
        assert!(cloud.delete_unused_launch_templates("demo", &HashSet::new(), Duration::ZERO).await.is_err());
        let profile = cloud.ensure_instance_profile("demo", "default", "role").await;
        assert_eq!(profile.ok(), Some(instance_profile::profile_name("demo", "us-east-1", "default")));
        assert!(cloud.node_pool_instances("demo").await.is_ok(), "reads pass");
        assert!(
            fake.calls().iter().all(|c| !c.starts_with("terminate") && !c.starts_with("ensure")),
            "{:?}",
            fake.calls()
        );
        assert!(metrics.encode().contains(r#"nodesmith_observe_refused_total{api="aws"} 3"#), "{}", metrics.encode());
    }
}
