//! The cloud port: every AWS call the controller makes, behind one narrow trait. `AwsCloud` makes the calls,
//! `Measured` records each one's duration and errors under Karpenter's metric names, and the tests' fake
//! (`cloud::fake`) lets the controller's loops run without AWS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::batch::Batcher;
use super::cluster::{self, ClusterFacts};
use super::error::CloudError;
use super::fleet::{self, FleetError, FleetRequest, LaunchedInstance};
use super::instances::{self, InstanceSummary};
use super::launch_caches::LaunchCaches;
use super::launch_template::{self, LaunchTemplateSpec};
use super::nodeclass::{self, ImageInfo, SecurityGroupInfo, SelectorTerm, SubnetInfo};
use super::pricing::{self, SpotPrice};
use super::queue::{self, QueueMessage};
use super::{instance_profile, instance_types};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::telemetry::Metrics;

/// What the controller asks of the cloud.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// What this cloud remembers between launches (not an AWS call).
    fn caches(&self) -> &LaunchCaches;
    /// The cluster's endpoint, CA and service range; `endpoint` overrides the reported endpoint.
    async fn describe_cluster(&self, name: &str, endpoint: Option<&str>) -> Result<ClusterFacts, CloudError>;
    /// The region's instance types with their zones.
    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, CloudError>;
    /// The region's Linux on-demand price of each instance type, from the Pricing API.
    async fn on_demand_prices(&self) -> Result<HashMap<String, f64>, CloudError>;
    /// The current spot price of each instance type in each zone of the region.
    async fn spot_prices(&self) -> Result<Vec<SpotPrice>, CloudError>;
    /// The image id an SSM parameter holds; None when there is no such parameter.
    async fn image_from_parameter(&self, parameter: &str) -> Result<Option<String>, CloudError>;
    async fn subnets(&self, terms: &[SelectorTerm]) -> Result<Vec<SubnetInfo>, CloudError>;
    async fn security_groups(&self, terms: &[SelectorTerm]) -> Result<Vec<SecurityGroupInfo>, CloudError>;
    async fn images(&self, terms: &[SelectorTerm]) -> Result<Vec<ImageInfo>, CloudError>;
    /// The name of an instance profile of this cluster holding `role`, made when there is none.
    async fn ensure_instance_profile(&self, cluster: &str, nodeclass: &str, role: &str) -> Result<String, CloudError>;
    /// The launch template for `spec`, made when missing; returns its name.
    async fn ensure_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, CloudError>;
    /// Deletes this cluster's launch templates not in `in_use` and older than `min_age`; returns their names.
    async fn delete_unused_launch_templates(
        &self,
        cluster: &str,
        in_use: &HashSet<String>,
        min_age: Duration,
    ) -> Result<Vec<String>, CloudError>;
    /// Launches one instance from the request's overrides.
    async fn create_fleet(&self, request: &FleetRequest) -> Result<LaunchedInstance, FleetError>;
    /// The instance; None when EC2 does not know it.
    async fn describe_instance(&self, instance_id: &str) -> Result<Option<InstanceSummary>, CloudError>;
    /// The live instance tagged for this NodeClaim of this cluster, if any.
    async fn find_instance_for_nodeclaim(
        &self,
        cluster: &str,
        nodeclaim: &str,
    ) -> Result<Option<InstanceSummary>, CloudError>;
    /// Every live instance of this cluster's NodePools.
    async fn node_pool_instances(&self, cluster: &str) -> Result<Vec<InstanceSummary>, CloudError>;
    /// Terminates the instances; ids EC2 no longer knows are not an error.
    async fn terminate_instances(&self, instance_ids: &[String]) -> Result<(), CloudError>;
    /// The interruption queue's URL, from its name or URL.
    async fn queue_url(&self, queue: &str) -> Result<String, CloudError>;
    /// Long-polls the queue for up to ten messages.
    async fn receive_messages(&self, url: &str) -> Result<Vec<QueueMessage>, CloudError>;
    /// Deletes handled messages by receipt handle; returns how many were deleted.
    async fn delete_messages(&self, url: &str, receipts: &[String]) -> Result<usize, CloudError>;
}

/// The real thing: the AWS SDK clients of one region.
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    eks: aws_sdk_eks::Client,
    iam: aws_sdk_iam::Client,
    ssm: aws_sdk_ssm::Client,
    sqs: aws_sdk_sqs::Client,
    /// In the Pricing API's region nearest to `region` (it answers in three only).
    pricing: aws_sdk_pricing::Client,
    /// The region the controller works in (IAM's client has one too, but IAM itself is global).
    region: String,
    caches: LaunchCaches,
    /// One-instance lookups (termination's, every pass) asked together.
    lookups: Batcher<instances::Ec2Lookups>,
    /// One-instance terminations (a burst of interruptions, a consolidation) asked together.
    terminations: Batcher<instances::Ec2Terminations>,
}

/// How long a lookup waits for others to join its DescribeInstances call.
const LOOKUP_WINDOW: Duration = Duration::from_millis(25);
/// How long a termination waits for others to join its TerminateInstances call (Karpenter's batcher waits 100 ms
/// for the next one, up to 1 s).
const TERMINATE_WINDOW: Duration = Duration::from_millis(100);

impl AwsCloud {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        let pricing_config = aws_sdk_pricing::config::Builder::from(sdk)
            .region(aws_config::Region::new(pricing::pricing_api_region(&region)))
            .build();
        Self {
            pricing: aws_sdk_pricing::Client::from_conf(pricing_config),
            ec2: aws_sdk_ec2::Client::new(sdk),
            eks: aws_sdk_eks::Client::new(sdk),
            iam: aws_sdk_iam::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            region,
            caches: LaunchCaches::default(),
            lookups: Batcher::new(instances::Ec2Lookups(aws_sdk_ec2::Client::new(sdk)), LOOKUP_WINDOW),
            terminations: Batcher::new(instances::Ec2Terminations(aws_sdk_ec2::Client::new(sdk)), TERMINATE_WINDOW),
        }
    }
}

#[async_trait]
impl CloudProvider for AwsCloud {
    fn caches(&self) -> &LaunchCaches {
        &self.caches
    }

    async fn describe_cluster(&self, name: &str, endpoint: Option<&str>) -> Result<ClusterFacts, CloudError> {
        cluster::describe_cluster(&self.eks, name, endpoint).await
    }

    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, CloudError> {
        instance_types::describe_instance_types(&self.ec2).await
    }

    async fn on_demand_prices(&self) -> Result<HashMap<String, f64>, CloudError> {
        pricing::on_demand_prices(&self.pricing, &self.region).await
    }

    async fn spot_prices(&self) -> Result<Vec<SpotPrice>, CloudError> {
        pricing::spot_prices(&self.ec2).await
    }

    async fn image_from_parameter(&self, parameter: &str) -> Result<Option<String>, CloudError> {
        nodeclass::image_id_from_parameter(&self.ssm, parameter).await
    }

    async fn subnets(&self, terms: &[SelectorTerm]) -> Result<Vec<SubnetInfo>, CloudError> {
        nodeclass::subnets(&self.ec2, terms).await
    }

    async fn security_groups(&self, terms: &[SelectorTerm]) -> Result<Vec<SecurityGroupInfo>, CloudError> {
        nodeclass::security_groups(&self.ec2, terms).await
    }

    async fn images(&self, terms: &[SelectorTerm]) -> Result<Vec<ImageInfo>, CloudError> {
        nodeclass::images(&self.ec2, terms).await
    }

    async fn ensure_instance_profile(&self, cluster: &str, nodeclass: &str, role: &str) -> Result<String, CloudError> {
        instance_profile::ensure_for_role(&self.iam, cluster, &self.region, nodeclass, role).await
    }

    async fn ensure_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, CloudError> {
        let name = spec.name();
        if self.caches.templates_known.contains(&name) {
            return Ok(name);
        }
        let lock = self.caches.templates_in_making.lock_of(&name);
        let _making = lock.lock().await;
        // Made by the launch that held the lock before.
        if self.caches.templates_known.contains(&name) {
            return Ok(name);
        }
        let name = launch_template::ensure(&self.ec2, spec).await?;
        self.caches.templates_known.remember(&name);
        Ok(name)
    }

    async fn delete_unused_launch_templates(
        &self,
        cluster: &str,
        in_use: &HashSet<String>,
        min_age: Duration,
    ) -> Result<Vec<String>, CloudError> {
        launch_template::delete_unused(&self.ec2, cluster, in_use, min_age).await
    }

    async fn create_fleet(&self, request: &FleetRequest) -> Result<LaunchedInstance, FleetError> {
        let launched = fleet::create_fleet(&self.ec2, request).await;
        if let Err(error) = &launched
            && !matches!(error, FleetError::InsufficientCapacity { .. })
        {
            // A template deleted behind our back is one cause: the retry asks EC2 again.
            self.caches.templates_known.forget(request.configs.iter().map(|c| c.launch_template_name.as_str()));
        }
        launched
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Option<InstanceSummary>, CloudError> {
        self.lookups.ask(instance_id).await
    }

    async fn find_instance_for_nodeclaim(
        &self,
        cluster: &str,
        nodeclaim: &str,
    ) -> Result<Option<InstanceSummary>, CloudError> {
        instances::find_for_nodeclaim(&self.ec2, cluster, nodeclaim).await
    }

    async fn node_pool_instances(&self, cluster: &str) -> Result<Vec<InstanceSummary>, CloudError> {
        instances::node_pool_instances(&self.ec2, cluster).await
    }

    async fn terminate_instances(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        match instance_ids {
            [one] => self.terminations.ask(one).await?.unwrap_or(Ok(())),
            // A caller's own batch (garbage collection's leaked instances) goes as it is.
            many => instances::terminate_all(&self.ec2, many).await,
        }
    }

    async fn queue_url(&self, queue: &str) -> Result<String, CloudError> {
        queue::queue_url(&self.sqs, queue).await
    }

    async fn receive_messages(&self, url: &str) -> Result<Vec<QueueMessage>, CloudError> {
        queue::receive(&self.sqs, url).await
    }

    async fn delete_messages(&self, url: &str, receipts: &[String]) -> Result<usize, CloudError> {
        queue::delete(&self.sqs, url, receipts).await
    }
}

/// Records every call of the wrapped provider for one controller: `karpenter_cloudprovider_duration_seconds`
/// and, on failure, `karpenter_cloudprovider_errors_total` with the AWS error code.
#[derive(Clone)]
pub struct Measured {
    inner: Arc<dyn CloudProvider>,
    metrics: Arc<Metrics>,
    controller: &'static str,
}

impl Measured {
    pub fn new(inner: Arc<dyn CloudProvider>, metrics: Arc<Metrics>, controller: &'static str) -> Self {
        Self { inner, metrics, controller }
    }

    fn record<T, E: ErrorCode>(&self, method: &str, started: Instant, result: &Result<T, E>) {
        self.metrics.cloudprovider_call(self.controller, method, started.elapsed().as_secs_f64());
        if let Err(error) = result {
            self.metrics.cloudprovider_error(self.controller, method, &error.error_code());
        }
    }
}

/// The `error` label of a failed call.
trait ErrorCode {
    fn error_code(&self) -> String;
}

impl ErrorCode for CloudError {
    fn error_code(&self) -> String {
        match self.code() {
            "" => "Unknown".to_string(),
            code => code.to_string(),
        }
    }
}

impl ErrorCode for FleetError {
    fn error_code(&self) -> String {
        match self {
            FleetError::InsufficientCapacity { codes, .. } => codes.clone(),
            // The codes AWS gave (a quota, a permission, a bad parameter): what an alert is written against.
            FleetError::NothingLaunched { codes, .. } if !codes.is_empty() => codes.clone(),
            FleetError::NothingLaunched { .. } => "NothingLaunched".to_string(),
            FleetError::Cloud(error) => error.error_code(),
        }
    }
}

/// Calls `$call` on the inner provider and records it as `$method`.
macro_rules! measured {
    ($self:ident, $method:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($method, started, &result);
        result
    }};
}

#[async_trait]
impl CloudProvider for Measured {
    fn caches(&self) -> &LaunchCaches {
        self.inner.caches()
    }

    async fn describe_cluster(&self, name: &str, endpoint: Option<&str>) -> Result<ClusterFacts, CloudError> {
        measured!(self, "DescribeCluster", self.inner.describe_cluster(name, endpoint))
    }

    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, CloudError> {
        measured!(self, "GetInstanceTypes", self.inner.instance_types())
    }

    async fn on_demand_prices(&self) -> Result<HashMap<String, f64>, CloudError> {
        measured!(self, "GetOnDemandPrices", self.inner.on_demand_prices())
    }

    async fn spot_prices(&self) -> Result<Vec<SpotPrice>, CloudError> {
        measured!(self, "GetSpotPrices", self.inner.spot_prices())
    }

    async fn image_from_parameter(&self, parameter: &str) -> Result<Option<String>, CloudError> {
        measured!(self, "GetImageParameter", self.inner.image_from_parameter(parameter))
    }

    async fn subnets(&self, terms: &[SelectorTerm]) -> Result<Vec<SubnetInfo>, CloudError> {
        measured!(self, "ListSubnets", self.inner.subnets(terms))
    }

    async fn security_groups(&self, terms: &[SelectorTerm]) -> Result<Vec<SecurityGroupInfo>, CloudError> {
        measured!(self, "ListSecurityGroups", self.inner.security_groups(terms))
    }

    async fn images(&self, terms: &[SelectorTerm]) -> Result<Vec<ImageInfo>, CloudError> {
        measured!(self, "ListImages", self.inner.images(terms))
    }

    async fn ensure_instance_profile(&self, cluster: &str, nodeclass: &str, role: &str) -> Result<String, CloudError> {
        measured!(self, "EnsureInstanceProfile", self.inner.ensure_instance_profile(cluster, nodeclass, role))
    }

    async fn ensure_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, CloudError> {
        measured!(self, "EnsureLaunchTemplate", self.inner.ensure_launch_template(spec))
    }

    async fn delete_unused_launch_templates(
        &self,
        cluster: &str,
        in_use: &HashSet<String>,
        min_age: Duration,
    ) -> Result<Vec<String>, CloudError> {
        measured!(self, "DeleteLaunchTemplates", self.inner.delete_unused_launch_templates(cluster, in_use, min_age))
    }

    async fn create_fleet(&self, request: &FleetRequest) -> Result<LaunchedInstance, FleetError> {
        measured!(self, "Create", self.inner.create_fleet(request))
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Option<InstanceSummary>, CloudError> {
        measured!(self, "Get", self.inner.describe_instance(instance_id))
    }

    async fn find_instance_for_nodeclaim(
        &self,
        cluster: &str,
        nodeclaim: &str,
    ) -> Result<Option<InstanceSummary>, CloudError> {
        measured!(self, "GetByNodeClaim", self.inner.find_instance_for_nodeclaim(cluster, nodeclaim))
    }

    async fn node_pool_instances(&self, cluster: &str) -> Result<Vec<InstanceSummary>, CloudError> {
        measured!(self, "List", self.inner.node_pool_instances(cluster))
    }

    async fn terminate_instances(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        measured!(self, "Delete", self.inner.terminate_instances(instance_ids))
    }

    async fn queue_url(&self, queue: &str) -> Result<String, CloudError> {
        measured!(self, "GetQueueUrl", self.inner.queue_url(queue))
    }

    async fn receive_messages(&self, url: &str) -> Result<Vec<QueueMessage>, CloudError> {
        measured!(self, "ReceiveMessages", self.inner.receive_messages(url))
    }

    async fn delete_messages(&self, url: &str, receipts: &[String]) -> Result<usize, CloudError> {
        measured!(self, "DeleteMessages", self.inner.delete_messages(url, receipts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;

    #[tokio::test]
    async fn every_call_is_timed_and_every_failure_counted_under_its_controller() {
        let fake = Arc::new(FakeCloud::default());
        fake.add_instance("i-1", None, Duration::from_secs(60));
        let metrics = Arc::new(Metrics::default());
        let cloud = Measured::new(fake.clone(), metrics.clone(), "nodeclaim.garbagecollection");
        assert_eq!(cloud.node_pool_instances("demo").await.expect("a list").len(), 1);
        fake.fail_next("TerminateInstances", "UnauthorizedOperation");
        assert!(cloud.terminate_instances(&["i-1".to_string()]).await.is_err());
        let text = metrics.encode();
        for method in ["List", "Delete"] {
            let series = format!(
                r#"karpenter_cloudprovider_duration_seconds_count{{controller="nodeclaim.garbagecollection",method="{method}",provider="aws"}} 1"#
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
        assert!(
            text.contains(r#"karpenter_cloudprovider_errors_total{controller="nodeclaim.garbagecollection",method="Delete",provider="aws",error="UnauthorizedOperation"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"method="List",provider="aws",error"#), "a success is no error: {text}");
    }
}
