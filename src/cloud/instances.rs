//! The instances the controller launched: found by their tags (never by a state file), described, terminated.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};

use super::batch::BatchCall;
use super::error::CloudError;
use crate::catalog::CapacityType;
use crate::names::{CLUSTER_TAG_PREFIX, NODECLAIM_TAG, NODEPOOL_TAG, OWNER_TAG, cluster_tag_key};

/// Instances per DescribeInstances page when listing by filters.
const PAGE_SIZE: i32 = 100;
/// Instance ids per TerminateInstances or DescribeInstances call.
const TERMINATE_BATCH: usize = 500;

/// The clusters whose `kubernetes.io/cluster/<name>=owned` tag is among `tags` (the reverse of `cluster_tag_key`).
pub fn owning_clusters<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    tags.filter(|(_, value)| *value == "owned")
        .filter_map(|(key, _)| key.strip_prefix(CLUSTER_TAG_PREFIX).map(str::to_string))
        .collect()
}

/// What the controller needs to know of one of its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSummary {
    pub instance_id: String,
    pub instance_type: String,
    pub zone: String,
    pub state: String,
    pub capacity_type: CapacityType,
    pub image_id: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub private_dns_name: Option<String>,
    pub nodeclaim: Option<String>,
    pub nodepool: Option<String>,
    pub launch_time: Option<SystemTime>,
    /// The clusters whose `kubernetes.io/cluster/<name>=owned` tag it carries.
    pub owning_clusters: Vec<String>,
    /// Its `nodesmith.io/cluster` tag: the cluster whose nodesmith launched it (Karpenter's carry none).
    pub owner: Option<String>,
}

impl InstanceSummary {
    /// `aws:///<zone>/<instance id>`, as the kubelet's cloud provider writes it on the Node.
    pub fn provider_id(&self) -> String {
        provider_id(&self.zone, &self.instance_id)
    }

    /// Tagged as this cluster's own: the only instances the controller may terminate.
    pub fn is_owned_by(&self, cluster: &str) -> bool {
        self.owning_clusters.iter().any(|c| c == cluster)
    }

    /// Pending or running: it holds (or will hold) a node.
    pub fn is_alive(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The instance id at the end of `aws:///<zone>/<id>`; `None` for anything else.
pub fn instance_id_from_provider_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws:///")?;
    let (_, id) = rest.rsplit_once('/')?;
    id.starts_with("i-").then_some(id)
}

fn tag_value<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn summary(instance: &Instance) -> Option<InstanceSummary> {
    Some(InstanceSummary {
        instance_id: instance.instance_id()?.to_string(),
        instance_type: instance.instance_type()?.as_str().to_string(),
        zone: instance.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
        state: instance.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
        // EC2 reports a lifecycle only for spot (and scheduled) instances.
        capacity_type: instance
            .instance_lifecycle()
            .and_then(|l| l.as_str().parse().ok())
            .unwrap_or(CapacityType::OnDemand),
        image_id: instance.image_id().map(str::to_string),
        subnet_id: instance.subnet_id().map(str::to_string),
        security_group_ids: instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        private_dns_name: instance.private_dns_name().filter(|n| !n.is_empty()).map(str::to_string),
        nodeclaim: tag_value(instance, NODECLAIM_TAG).map(str::to_string),
        nodepool: tag_value(instance, NODEPOOL_TAG).map(str::to_string),
        launch_time: instance.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
        owning_clusters: owning_clusters(instance.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)))),
        owner: tag_value(instance, OWNER_TAG).map(str::to_string),
    })
}

async fn describe(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
    ids: Vec<String>,
) -> Result<Vec<InstanceSummary>, CloudError> {
    // By filters, in pages of `PAGE_SIZE` (EC2 refuses a page size beside instance ids).
    let page_size = ids.is_empty().then_some(PAGE_SIZE);
    let mut pages = ec2
        .describe_instances()
        .set_filters(Some(filters))
        .set_instance_ids(Some(ids))
        .set_max_results(page_size)
        .into_paginator()
        .send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeInstances", None, e))?;
        found.extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(summary));
    }
    Ok(found)
}

fn alive_states() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(vec![InstanceStateName::Pending.as_str().into(), InstanceStateName::Running.as_str().into()]))
        .build()
}

/// The live instance launched for this NodeClaim, if any: checked before every launch, since CreateFleet's client
/// token alone does not prevent a second launch (moto ignores it; a token also expires).
pub async fn find_for_nodeclaim(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
    nodeclaim: &str,
) -> Result<Option<InstanceSummary>, CloudError> {
    let filters = vec![
        Filter::builder().name(format!("tag:{}", cluster_tag_key(cluster))).values("owned").build(),
        Filter::builder().name(format!("tag:{NODECLAIM_TAG}")).values(nodeclaim).build(),
        alive_states(),
    ];
    let mut found = describe(ec2, filters, Vec::new()).await?;
    // Oldest first, so that if two ever existed the same one is always kept.
    found.sort_by(|a, b| a.launch_time.cmp(&b.launch_time).then(a.instance_id.cmp(&b.instance_id)));
    Ok(found.into_iter().next())
}

/// One-instance lookups, asked in batches (`batch`) by the `instance-id` filter rather than by ids: an instance EC2
/// no longer knows is then absent from the answer, where by ids it would fail the whole call.
pub struct Ec2Lookups(pub aws_sdk_ec2::Client);

impl BatchCall for Ec2Lookups {
    type Answer = InstanceSummary;
    const ACTION: &'static str = "ec2:DescribeInstances";
    /// EC2 takes up to 200 values in one filter.
    const MAX_IDS: usize = 200;

    async fn call(&self, ids: Vec<String>) -> Result<HashMap<String, InstanceSummary>, CloudError> {
        let filters = vec![Filter::builder().name("instance-id").set_values(Some(ids)).build()];
        let found = describe(&self.0, filters, Vec::new()).await?;
        Ok(found.into_iter().map(|i| (i.instance_id.clone(), i)).collect())
    }
}

/// One-instance terminations, asked in batches (`batch`). Ids EC2 no longer knows count as done (see `terminate`);
/// when the policy denies the call (one instance tagged otherwise, say), each id is tried alone, so that one
/// instance's denial is its own.
pub struct Ec2Terminations(pub aws_sdk_ec2::Client);

impl BatchCall for Ec2Terminations {
    type Answer = Result<(), CloudError>;
    const ACTION: &'static str = "ec2:TerminateInstances";
    const MAX_IDS: usize = TERMINATE_BATCH;

    async fn call(&self, ids: Vec<String>) -> Result<HashMap<String, Result<(), CloudError>>, CloudError> {
        match terminate(&self.0, &ids).await {
            Ok(()) => Ok(ids.into_iter().map(|id| (id, Ok(()))).collect()),
            // Throttling or an outage is every id's answer: asking each alone would only add calls.
            Err(error) if ids.len() == 1 || !matches!(error, CloudError::AccessDenied { .. }) => Err(error),
            Err(_) => {
                let alone = ids.iter().map(|id| terminate(&self.0, std::slice::from_ref(id)));
                let outcomes = futures::future::join_all(alone).await;
                Ok(ids.into_iter().zip(outcomes).collect())
            }
        }
    }
}

/// Every live instance of the cluster's node pools (what garbage collection compares with the NodeClaims).
pub async fn node_pool_instances(ec2: &aws_sdk_ec2::Client, cluster: &str) -> Result<Vec<InstanceSummary>, CloudError> {
    let filters = vec![
        Filter::builder().name(format!("tag:{}", cluster_tag_key(cluster))).values("owned").build(),
        Filter::builder().name("tag-key").values(NODEPOOL_TAG).build(),
        alive_states(),
    ];
    describe(ec2, filters, Vec::new()).await
}

/// Every instance of the cluster's node pools that is not terminated or on its way (what teardown terminates),
/// whoever launched it: `owner` tells nodesmith's from another controller's.
pub async fn cluster_node_pool_instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
) -> Result<Vec<InstanceSummary>, CloudError> {
    let states = [
        InstanceStateName::Pending,
        InstanceStateName::Running,
        InstanceStateName::Stopping,
        InstanceStateName::Stopped,
    ];
    let filters = vec![
        Filter::builder().name(format!("tag:{}", cluster_tag_key(cluster))).values("owned").build(),
        Filter::builder().name("tag-key").values(NODEPOOL_TAG).build(),
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(states.iter().map(|s| s.as_str().into()).collect()))
            .build(),
    ];
    describe(ec2, filters, Vec::new()).await
}

/// These instances as EC2 describes them now, in batches of `TERMINATE_BATCH`; one it no longer knows is absent.
pub async fn describe_many(ec2: &aws_sdk_ec2::Client, ids: &[String]) -> Result<Vec<InstanceSummary>, CloudError> {
    let mut found = Vec::with_capacity(ids.len());
    for batch in ids.chunks(TERMINATE_BATCH) {
        found.extend(describe(ec2, Vec::new(), batch.to_vec()).await?);
    }
    Ok(found)
}

/// Terminates these instances, in batches of `TERMINATE_BATCH`; ids EC2 no longer knows count as done.
pub async fn terminate_all(ec2: &aws_sdk_ec2::Client, instance_ids: &[String]) -> Result<(), CloudError> {
    for batch in instance_ids.chunks(TERMINATE_BATCH) {
        terminate(ec2, batch).await?;
    }
    Ok(())
}

/// Terminates these instances; ids EC2 no longer knows count as done.
pub async fn terminate(ec2: &aws_sdk_ec2::Client, instance_ids: &[String]) -> Result<(), CloudError> {
    if instance_ids.is_empty() {
        return Ok(());
    }
    match ec2.terminate_instances().set_instance_ids(Some(instance_ids.to_vec())).send().await {
        Ok(_) => Ok(()),
        Err(error) => {
            match CloudError::from_sdk("ec2:TerminateInstances", instance_ids.first().map(String::as_str), error) {
                // One unknown id fails the whole call: the others are terminated one by one.
                error if error.is_not_found() => {
                    if instance_ids.len() > 1 {
                        for id in instance_ids {
                            Box::pin(terminate(ec2, std::slice::from_ref(id))).await?;
                        }
                    }
                    Ok(())
                }
                other => Err(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("us-east-1a", "i-0123456789abcdef0");
        assert_eq!(id, "aws:///us-east-1a/i-0123456789abcdef0");
        assert_eq!(instance_id_from_provider_id(&id), Some("i-0123456789abcdef0"));
        assert_eq!(instance_id_from_provider_id("kwok://node-1"), None);
        assert_eq!(instance_id_from_provider_id("aws:///us-east-1a/"), None);
    }
}
