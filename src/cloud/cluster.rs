//! The EKS cluster as its nodes need to know it.

use super::error::CloudError;

/// What the cluster's nodes need to join it, from DescribeCluster.
#[derive(Debug, Clone)]
pub struct ClusterFacts {
    pub name: String,
    /// `arn:<partition>:eks:<region>:<account>:cluster/<name>`.
    pub arn: String,
    pub endpoint: String,
    pub ca_bundle: String,
    pub service_cidr: String,
    pub kubernetes_version: String,
}

impl ClusterFacts {
    /// The account and region the cluster is in, from its ARN (None when EKS gave no ARN).
    pub fn account_and_region(&self) -> Option<(&str, &str)> {
        let parts: Vec<&str> = self.arn.split(':').collect();
        match parts.as_slice() {
            ["arn", _, "eks", region, account, _] if !region.is_empty() && !account.is_empty() => {
                Some((account, region))
            }
            _ => None,
        }
    }
}

/// Reads what nodes need from DescribeCluster; `endpoint` overrides the reported endpoint.
pub async fn describe_cluster(
    eks: &aws_sdk_eks::Client,
    name: &str,
    endpoint: Option<&str>,
) -> Result<ClusterFacts, CloudError> {
    let answer = eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("eks:DescribeCluster", Some(name), e))?;
    let cluster =
        answer.cluster().ok_or_else(|| CloudError::call("eks:DescribeCluster", format!("no cluster {name}")))?;
    Ok(ClusterFacts {
        name: name.to_string(),
        arn: cluster.arn().unwrap_or_default().to_string(),
        endpoint: endpoint.map(str::to_string).or_else(|| cluster.endpoint().map(str::to_string)).unwrap_or_default(),
        ca_bundle: cluster.certificate_authority().and_then(|c| c.data()).unwrap_or_default().to_string(),
        service_cidr: cluster
            .kubernetes_network_config()
            .and_then(|n| n.service_ipv4_cidr())
            .unwrap_or("10.100.0.0/16")
            .to_string(),
        kubernetes_version: cluster.version().unwrap_or_default().to_string(),
    })
}
