//! An in-memory cloud for the controller's unit tests: instances launched by CreateFleet, terminated by
//! TerminateInstances, a queue of interruption messages, launch templates, and the selectors' answers. Every
//! call is logged (`calls`), and a method can be told to fail (`fail_next`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::cluster::ClusterFacts;
use super::error::CloudError;
use super::fleet::{FleetError, FleetRequest, LaunchedInstance};
use super::instances::InstanceSummary;
use super::launch_caches::LaunchCaches;
use super::launch_template::LaunchTemplateSpec;
use super::nodeclass::{ImageInfo, SecurityGroupInfo, SelectorTerm, SubnetInfo};
use super::pricing::SpotPrice;
use super::provider::CloudProvider;
use super::queue::QueueMessage;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::{CapacityType, OfferingKey};
use crate::names::{NODECLAIM_TAG, NODEPOOL_TAG};

#[derive(Default)]
pub struct FakeCloud {
    pub instances: Mutex<BTreeMap<String, InstanceSummary>>,
    pub templates: Mutex<BTreeSet<String>>,
    pub queue: Mutex<VecDeque<QueueMessage>>,
    /// Receipt handles of deleted messages, in order.
    pub deleted_messages: Mutex<Vec<String>>,
    pub subnets: Mutex<Vec<SubnetInfo>>,
    pub security_groups: Mutex<Vec<SecurityGroupInfo>>,
    pub images: Mutex<Vec<ImageInfo>>,
    /// What DescribeInstanceTypes answers; the embedded catalog when None.
    pub instance_types: Mutex<Option<Vec<InstanceTypeInfo>>>,
    /// What the Pricing API answers.
    pub on_demand_prices: Mutex<HashMap<String, f64>>,
    /// What the spot price history answers.
    pub spot_prices: Mutex<Vec<SpotPrice>>,
    /// Every call, as `Method arg`.
    pub calls: Mutex<Vec<String>>,
    /// Method name → the error its next call returns.
    failures: Mutex<HashMap<&'static str, CloudError>>,
    launched: Mutex<u64>,
    /// Offerings CreateFleet finds no capacity for.
    exhausted: Mutex<HashSet<OfferingKey>>,
    caches: LaunchCaches,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cluster `add_instance`'s instances are tagged for.
pub const FAKE_CLUSTER: &str = "demo";

/// A running m5.large in us-east-1a with no tags.
pub fn running_instance(id: &str) -> InstanceSummary {
    InstanceSummary {
        instance_id: id.into(),
        instance_type: "m5.large".into(),
        zone: "us-east-1a".into(),
        state: "running".into(),
        capacity_type: CapacityType::OnDemand,
        image_id: None,
        subnet_id: None,
        security_group_ids: vec![],
        private_dns_name: None,
        nodeclaim: None,
        nodepool: None,
        launch_time: None,
        owning_clusters: vec![],
        owner: None,
    }
}

/// What the fake's DescribeCluster answers for `name`.
pub fn cluster_facts(name: &str, endpoint: Option<&str>) -> ClusterFacts {
    ClusterFacts {
        name: name.into(),
        arn: format!("arn:aws:eks:us-east-1:123456789012:cluster/{name}"),
        endpoint: endpoint.unwrap_or("https://example.eks.amazonaws.com").into(),
        ca_bundle: String::new(),
        service_cidr: "10.100.0.0/16".into(),
        kubernetes_version: "1.31".into(),
    }
}

impl FakeCloud {
    /// Makes the next call of `method` (e.g. "TerminateInstances") fail with AWS error `code`.
    pub fn fail_next(&self, method: &'static str, code: &str) {
        let error = CloudError::Call { action: method, code: code.into(), message: format!("{code}: injected") };
        lock(&self.failures).insert(method, error);
    }

    /// An instance as if launched `age` ago for `nodeclaim` (None: untagged) of pool `default` of cluster
    /// [`FAKE_CLUSTER`].
    pub fn add_instance(&self, id: &str, nodeclaim: Option<&str>, age: Duration) {
        let instance = InstanceSummary {
            nodeclaim: nodeclaim.map(str::to_string),
            nodepool: Some("default".into()),
            launch_time: Some(SystemTime::now() - age),
            owning_clusters: vec![FAKE_CLUSTER.into()],
            owner: Some(FAKE_CLUSTER.into()),
            ..running_instance(id)
        };
        lock(&self.instances).insert(id.to_string(), instance);
    }

    /// CreateFleet finds no capacity for this offering from now on.
    pub fn exhaust(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        let key = OfferingKey { instance_type: instance_type.into(), zone: zone.into(), capacity_type };
        lock(&self.exhausted).insert(key);
    }

    pub fn state_of(&self, id: &str) -> Option<String> {
        lock(&self.instances).get(id).map(|i| i.state.clone())
    }

    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    fn call(&self, method: &'static str, argument: impl std::fmt::Display) -> Result<(), CloudError> {
        lock(&self.calls).push(format!("{method} {argument}"));
        match lock(&self.failures).remove(method) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl CloudProvider for FakeCloud {
    fn caches(&self) -> &LaunchCaches {
        &self.caches
    }

    async fn describe_cluster(&self, name: &str, endpoint: Option<&str>) -> Result<ClusterFacts, CloudError> {
        self.call("DescribeCluster", name)?;
        Ok(cluster_facts(name, endpoint))
    }

    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, CloudError> {
        self.call("DescribeInstanceTypes", "")?;
        Ok(lock(&self.instance_types).clone().unwrap_or_else(|| crate::catalog::embedded_instance_types().to_vec()))
    }

    async fn on_demand_prices(&self) -> Result<HashMap<String, f64>, CloudError> {
        self.call("GetProducts", "")?;
        Ok(lock(&self.on_demand_prices).clone())
    }

    async fn spot_prices(&self) -> Result<Vec<SpotPrice>, CloudError> {
        self.call("DescribeSpotPriceHistory", "")?;
        Ok(lock(&self.spot_prices).clone())
    }

    async fn image_from_parameter(&self, parameter: &str) -> Result<Option<String>, CloudError> {
        self.call("GetParameter", parameter)?;
        Ok(lock(&self.images).first().map(|i| i.id.clone()))
    }

    async fn subnets(&self, _terms: &[SelectorTerm]) -> Result<Vec<SubnetInfo>, CloudError> {
        self.call("DescribeSubnets", "")?;
        Ok(lock(&self.subnets).clone())
    }

    async fn security_groups(&self, _terms: &[SelectorTerm]) -> Result<Vec<SecurityGroupInfo>, CloudError> {
        self.call("DescribeSecurityGroups", "")?;
        Ok(lock(&self.security_groups).clone())
    }

    async fn images(&self, _terms: &[SelectorTerm]) -> Result<Vec<ImageInfo>, CloudError> {
        self.call("DescribeImages", "")?;
        Ok(lock(&self.images).clone())
    }

    async fn ensure_instance_profile(&self, cluster: &str, nodeclass: &str, role: &str) -> Result<String, CloudError> {
        self.call("EnsureInstanceProfile", role)?;
        Ok(format!("{cluster}_{nodeclass}"))
    }

    async fn ensure_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, CloudError> {
        let name = spec.name();
        self.call("EnsureLaunchTemplate", &name)?;
        lock(&self.templates).insert(name.clone());
        Ok(name)
    }

    async fn delete_unused_launch_templates(
        &self,
        _cluster: &str,
        in_use: &HashSet<String>,
        _min_age: Duration,
    ) -> Result<Vec<String>, CloudError> {
        self.call("DeleteLaunchTemplates", "")?;
        let mut templates = lock(&self.templates);
        let unused: Vec<String> = templates.iter().filter(|t| !in_use.contains(*t)).cloned().collect();
        templates.retain(|t| in_use.contains(t));
        Ok(unused)
    }

    async fn create_fleet(&self, request: &FleetRequest) -> Result<LaunchedInstance, FleetError> {
        self.call("CreateFleet", &request.client_token)?;
        let offering = |o: &super::fleet::FleetOverride| OfferingKey {
            instance_type: o.instance_type.clone(),
            zone: o.zone.clone(),
            capacity_type: request.capacity_type,
        };
        let overrides: Vec<_> = request.configs.iter().flat_map(|c| &c.overrides).collect();
        if overrides.is_empty() {
            return Err(FleetError::NothingLaunched { codes: String::new(), detail: "no overrides".into() });
        }
        let exhausted = lock(&self.exhausted).clone();
        let Some(chosen) = overrides.iter().copied().find(|o| !exhausted.contains(&offering(o))) else {
            let offerings = overrides.iter().map(|o| offering(o)).collect();
            return Err(FleetError::InsufficientCapacity { offerings, codes: "InsufficientInstanceCapacity".into() });
        };
        let id = {
            let mut launched = lock(&self.launched);
            *launched += 1;
            format!("i-{:017x}", *launched)
        };
        let tag = |key: &str| request.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        lock(&self.instances).insert(
            id.clone(),
            InstanceSummary {
                instance_id: id.clone(),
                instance_type: chosen.instance_type.clone(),
                zone: chosen.zone.clone(),
                state: "running".into(),
                capacity_type: request.capacity_type,
                image_id: None,
                subnet_id: Some(chosen.subnet_id.clone()),
                security_group_ids: vec![],
                private_dns_name: None,
                nodeclaim: tag(NODECLAIM_TAG),
                nodepool: tag(NODEPOOL_TAG),
                launch_time: Some(SystemTime::now()),
                owning_clusters: super::instances::owning_clusters(
                    request.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
                owner: tag(crate::names::OWNER_TAG),
            },
        );
        Ok(LaunchedInstance {
            instance_id: id,
            instance_type: chosen.instance_type.clone(),
            zone: chosen.zone.clone(),
            capacity_type: request.capacity_type,
        })
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Option<InstanceSummary>, CloudError> {
        self.call("DescribeInstance", instance_id)?;
        Ok(lock(&self.instances).get(instance_id).cloned())
    }

    async fn find_instance_for_nodeclaim(
        &self,
        _cluster: &str,
        nodeclaim: &str,
    ) -> Result<Option<InstanceSummary>, CloudError> {
        self.call("FindInstanceForNodeClaim", nodeclaim)?;
        Ok(lock(&self.instances).values().find(|i| i.is_alive() && i.nodeclaim.as_deref() == Some(nodeclaim)).cloned())
    }

    async fn node_pool_instances(&self, cluster: &str) -> Result<Vec<InstanceSummary>, CloudError> {
        self.call("ListInstances", cluster)?;
        Ok(lock(&self.instances).values().filter(|i| i.is_alive() && i.nodepool.is_some()).cloned().collect())
    }

    async fn terminate_instances(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        self.call("TerminateInstances", instance_ids.join(","))?;
        for id in instance_ids {
            if let Some(instance) = lock(&self.instances).get_mut(id) {
                instance.state = "shutting-down".into();
            }
        }
        Ok(())
    }

    async fn queue_url(&self, queue: &str) -> Result<String, CloudError> {
        self.call("GetQueueUrl", queue)?;
        Ok(format!("https://sqs.example/{queue}"))
    }

    async fn receive_messages(&self, url: &str) -> Result<Vec<QueueMessage>, CloudError> {
        self.call("ReceiveMessage", url)?;
        let mut queue = lock(&self.queue);
        let take = queue.len().min(10);
        Ok(queue.drain(..take).collect())
    }

    async fn delete_messages(&self, url: &str, receipts: &[String]) -> Result<usize, CloudError> {
        self.call("DeleteMessageBatch", url)?;
        lock(&self.deleted_messages).extend(receipts.iter().cloned());
        Ok(receipts.len())
    }
}
