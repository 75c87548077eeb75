//! The parts of teardown that live in the cluster: its NodePools (the controller drains and terminates their
//! nodes), the node role's aws-auth mapping or access entry, and the controller's Pod Identity association. A
//! cluster already deleted took all of these with it.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};

use super::{Teardown, TeardownError};
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::finalizers;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;
use crate::bootstrap::aws_auth;
use crate::bootstrap::report::Action;
use crate::cloud::error::CloudError;
use crate::names::OWNER_TAG;
use crate::names::{NODEPOOL_LABEL, TERMINATION_FINALIZER};

/// How long teardown lets the controller drain and terminate the NodePools' nodes before it terminates what is
/// left itself.
const NODECLAIM_WAIT: Duration = Duration::from_secs(300);

/// Whether an EKS error means "no such thing": ResourceNotFoundException, or any HTTP 404 (an EKS look-alike that
/// does not serve the API at all has nothing of ours there either).
fn is_not_found<E>(error: &aws_sdk_eks::error::SdkError<E, aws_sdk_eks::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_eks::error::ProvideErrorMetadata,
{
    use aws_sdk_eks::error::ProvideErrorMetadata;
    error.code() == Some("ResourceNotFoundException")
        || error.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

impl Teardown<'_> {
    /// The cluster's API endpoint, if the cluster still exists.
    pub(super) async fn cluster_endpoint(&self) -> Result<Option<String>, CloudError> {
        Ok(self.described_cluster().await?.and_then(|c| c.endpoint))
    }

    /// The cluster's OIDC issuer, if the cluster still exists.
    pub(super) async fn cluster_issuer(&self) -> Result<Option<String>, CloudError> {
        Ok(self.described_cluster().await?.and_then(|c| c.identity?.oidc?.issuer))
    }

    /// DescribeCluster's answer; `None` once the cluster is deleted.
    async fn described_cluster(&self) -> Result<Option<aws_sdk_eks::types::Cluster>, CloudError> {
        match self.eks.describe_cluster().name(&self.options.cluster).send().await {
            Ok(found) => Ok(found.cluster),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(None),
            Err(error) => Err(CloudError::from_sdk("eks:DescribeCluster", Some(&self.options.cluster), error)),
        }
    }

    /// A client for the cluster, when the kubeconfig context is the cluster's; otherwise why not, for the report.
    fn kube_client(&self, endpoint: &str) -> Result<kube::Client, String> {
        let target = self.options.kube.as_ref().map_err(|why| format!("no kubeconfig: {why}"))?;
        target.for_cluster(&self.options.cluster, endpoint).cloned().map_err(|e| e.to_string())
    }

    /// Deletes this cluster's NodePools: labelled for it, or launching with its node role through their
    /// EC2NodeClass. With a live controller, waits (bounded) while it drains their nodes. Returns their names.
    /// NodePools of others are reported and left.
    pub(super) async fn nodepools(&mut self, client: &kube::Client) -> Result<BTreeSet<String>, CloudError> {
        let classes: Api<EC2NodeClass> = Api::all(client.clone());
        let our_classes: BTreeSet<String> = match classes.list(&ListParams::default()).await {
            Ok(listed) => listed
                .items
                .into_iter()
                .filter(|c| {
                    c.spec.role.as_deref() == Some(self.names.node_role.as_str())
                        || c.spec.instance_profile.as_deref() == Some(self.names.instance_profile.as_str())
                })
                .map(|c| c.name_any())
                .collect(),
            // No CRD, no NodePools.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(BTreeSet::new()),
            Err(error) => return Err(kube_error("listing EC2NodeClasses", error)),
        };
        let pools: Api<NodePool> = Api::all(client.clone());
        let all = pools.list(&ListParams::default()).await.map_err(|e| kube_error("listing NodePools", e))?.items;
        let cluster = self.options.cluster.clone();
        let (ours, others): (Vec<NodePool>, Vec<NodePool>) = all.into_iter().partition(|p| {
            p.labels().get(OWNER_TAG) == Some(&cluster)
                || our_classes.contains(&p.spec.template.spec.node_class_ref.name)
        });
        for pool in others {
            let class = pool.spec.template.spec.node_class_ref.name.clone();
            let note = format!(
                "not labelled for {cluster}, and its EC2NodeClass {class} does not use the node role {}",
                self.names.node_role
            );
            self.ledger.keep("nodepool", pool.name_any(), note);
        }
        let names: BTreeSet<String> = ours.iter().map(|p| p.name_any()).collect();
        for pool in &ours {
            // A NodePool already being deleted costs no call (and a re-run reports no change for it).
            let deleting = pool.meta().deletion_timestamp.is_some();
            if self.ledger.may_mutate() && !deleting {
                match pools.delete(&pool.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(kube_error("deleting a NodePool", error)),
                }
            }
            self.ledger.record("nodepool", pool.name_any(), Action::Deleted, u32::from(!deleting));
        }
        if names.is_empty() || !self.ledger.may_mutate() {
            return Ok(names);
        }
        if !controller_alive(client).await? {
            self.ledger.keep(
                "nodeclaim",
                "*",
                "no live nodesmith controller (no Lease renewed in the last 30 s): nothing drains the nodes; their \
                 instances are terminated and their finalizers removed",
            );
            return Ok(names);
        }
        let claims: Api<NodeClaim> = Api::all(client.clone());
        let deadline = tokio::time::Instant::now() + NODECLAIM_WAIT;
        loop {
            let left = self.nodeclaims_of(&claims, &names).await?;
            if left.is_empty() {
                return Ok(names);
            }
            if tokio::time::Instant::now() >= deadline {
                let listed: Vec<String> = left.iter().map(|c| c.name_any()).collect();
                self.ledger.keep(
                    "nodeclaim",
                    listed.join(", "),
                    format!("still draining after {NODECLAIM_WAIT:?}; their instances are terminated below"),
                );
                return Ok(names);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn nodeclaims_of(
        &self,
        claims: &Api<NodeClaim>,
        pools: &BTreeSet<String>,
    ) -> Result<Vec<NodeClaim>, CloudError> {
        let all = claims.list(&ListParams::default()).await.map_err(|e| kube_error("listing NodeClaims", e))?;
        Ok(all
            .items
            .into_iter()
            .filter(|c| c.labels().get(NODEPOOL_LABEL).is_some_and(|p| pools.contains(p)))
            .collect())
    }

    /// Once their instances are terminated: the termination finalizers of the NodeClaims (and their Nodes) of
    /// `pools` that nothing else will remove, so that they go.
    pub(super) async fn release_finalizers(
        &mut self,
        client: &kube::Client,
        pools: &BTreeSet<String>,
    ) -> Result<(), CloudError> {
        let claims: Api<NodeClaim> = Api::all(client.clone());
        let nodes: Api<Node> = Api::all(client.clone());
        for claim in self.nodeclaims_of(&claims, pools).await? {
            if !finalizers::has(&claim, TERMINATION_FINALIZER) {
                continue;
            }
            if self.ledger.may_mutate() {
                // Only nodesmith's own finalizer: another one is someone else's to lift.
                if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.clone()) {
                    finalizers::remove(&nodes, &node, TERMINATION_FINALIZER)
                        .await
                        .map_err(|error| kube_error("releasing a Node", error))?;
                }
                finalizers::remove(&claims, &claim.name_any(), TERMINATION_FINALIZER)
                    .await
                    .map_err(|error| kube_error("releasing a NodeClaim", error))?;
            }
            self.ledger.record("nodeclaim-finalizer", claim.name_any(), Action::Deleted, 1);
        }
        Ok(())
    }

    /// The node role's mapping in kube-system/aws-auth, if setup wrote one.
    pub(super) async fn aws_auth_mapping(
        &mut self,
        client: &kube::Client,
        node_role_arn: &str,
    ) -> Result<(), CloudError> {
        let edited = aws_auth::edit_map_roles(client, self.ledger.may_mutate(), |map_roles| {
            aws_auth::without_role(map_roles, node_role_arn)
        })
        .await;
        match edited {
            Ok(aws_auth::Edit::Unchanged) => {}
            Ok(aws_auth::Edit::Written) => {
                self.ledger.record("aws-auth-mapping", node_role_arn, Action::Deleted, 1);
            }
            // A mapRoles nodesmith cannot read is left as it is, and said so.
            Err(aws_auth::EditError::MapRoles(error)) => {
                self.ledger.keep("aws-auth-mapping", node_role_arn, error.to_string());
            }
            Err(error) => {
                return Err(CloudError::call("kubernetes:aws-auth", error.to_string()));
            }
        }
        Ok(())
    }

    /// The node role's access entry, if it carries this cluster's ownership tag.
    pub(super) async fn access_entry(&mut self, node_role_arn: &str) -> Result<(), CloudError> {
        let cluster = self.options.cluster.clone();
        let found = self.eks.describe_access_entry().cluster_name(&cluster).principal_arn(node_role_arn).send().await;
        let entry = match found {
            Ok(found) => found.access_entry,
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => return Err(CloudError::from_sdk("eks:DescribeAccessEntry", Some(node_role_arn), error)),
        };
        let Some(entry) = entry else { return Ok(()) };
        let id = format!("{cluster} <- {node_role_arn}");
        if entry.tags().and_then(|t| t.get(OWNER_TAG)) != Some(&cluster) {
            self.ledger.keep("eks-access-entry", id, format!("no {OWNER_TAG}={cluster} tag: not made by nodesmith"));
            return Ok(());
        }
        if self.ledger.may_mutate() {
            match self.eks.delete_access_entry().cluster_name(&cluster).principal_arn(node_role_arn).send().await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(CloudError::from_sdk("eks:DeleteAccessEntry", Some(node_role_arn), error)),
            }
        }
        self.ledger.record("eks-access-entry", id, Action::Deleted, 1);
        Ok(())
    }

    /// Pod Identity associations that give the controller role and carry this cluster's ownership tag.
    pub(super) async fn pod_identity_associations(&mut self, controller_role_arn: &str) -> Result<(), CloudError> {
        let cluster = self.options.cluster.clone();
        let mut listed = Vec::new();
        let mut pages = self.eks.list_pod_identity_associations().cluster_name(&cluster).into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => listed.extend(page.associations.unwrap_or_default()),
                Err(error) if is_not_found(&error) => return Ok(()),
                Err(error) => {
                    return Err(CloudError::from_sdk("eks:ListPodIdentityAssociations", Some(&cluster), error));
                }
            }
        }
        for summary in listed {
            let Some(association_id) = summary.association_id() else { continue };
            let described = self
                .eks
                .describe_pod_identity_association()
                .cluster_name(&cluster)
                .association_id(association_id)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("eks:DescribePodIdentityAssociation", Some(association_id), e))?;
            let Some(association) = described.association() else { continue };
            let ours = association.tags().and_then(|t| t.get(OWNER_TAG)) == Some(&cluster);
            if association.role_arn() != Some(controller_role_arn) || !ours {
                continue;
            }
            if self.ledger.may_mutate() {
                self.eks
                    .delete_pod_identity_association()
                    .cluster_name(&cluster)
                    .association_id(association_id)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("eks:DeletePodIdentityAssociation", Some(association_id), e))?;
            }
            self.ledger.record("eks-pod-identity-association", association_id, Action::Deleted, 1);
        }
        Ok(())
    }

    /// First of all: the NodePools, through the cluster's Kubernetes API. A cluster that still exists but cannot
    /// be reached (no kubeconfig, or one for another cluster) stops teardown, unless `skip_kubernetes`: its
    /// controller would launch replacements for the instances terminated next.
    pub(super) async fn kubernetes_first(&mut self) -> Result<Option<KubernetesSide>, TeardownError> {
        let Some(endpoint) = self.cluster_endpoint().await? else { return Ok(None) };
        let client = match self.kube_client(&endpoint) {
            Ok(client) => client,
            Err(why) if self.options.skip_kubernetes => {
                self.ledger.keep(
                    "nodepool",
                    "*",
                    format!("--skip-kubernetes: NodePools and any aws-auth mapping left ({why})"),
                );
                return Ok(None);
            }
            Err(why) => return Err(TeardownError::NoKubernetes { cluster: self.options.cluster.clone(), why }),
        };
        let pools = self.nodepools(&client).await?;
        Ok(Some(KubernetesSide { client, pools }))
    }

    /// After the instances: node access (aws-auth mapping, access entry), the Pod Identity association, and the
    /// finalizers nothing else will remove.
    pub(super) async fn cluster_access_last(&mut self, kubernetes: Option<&KubernetesSide>) -> Result<(), CloudError> {
        if self.cluster_endpoint().await?.is_none() {
            return Ok(());
        }
        let Some(prefix) = self.account_prefix().await? else { return Ok(()) };
        let node_role_arn = format!("{prefix}role/{}", self.names.node_role);
        let controller_role_arn = format!("{prefix}role/{}", self.names.controller_role);
        if let Some(kubernetes) = kubernetes {
            self.release_finalizers(&kubernetes.client, &kubernetes.pools).await?;
            self.aws_auth_mapping(&kubernetes.client, &node_role_arn).await?;
        }
        self.access_entry(&node_role_arn).await?;
        self.pod_identity_associations(&controller_role_arn).await
    }
}

/// What the Kubernetes step leaves for the last one.
pub(super) struct KubernetesSide {
    client: kube::Client,
    pools: BTreeSet<String>,
}

/// Whether a nodesmith controller holds its Lease: renewed within the last 30 seconds, in any namespace.
async fn controller_alive(client: &kube::Client) -> Result<bool, CloudError> {
    let leases: Api<Lease> = Api::all(client.clone());
    let params = ListParams::default().fields(&format!("metadata.name={}", crate::names::LEASE_NAME));
    let listed = leases.list(&params).await.map_err(|e| kube_error("listing Leases", e))?;
    let now = k8s_openapi::jiff::Timestamp::now();
    Ok(listed.items.iter().any(|lease| {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .is_some_and(|renewed| now.duration_since(renewed.0) < k8s_openapi::jiff::SignedDuration::from_secs(30))
    }))
}

fn kube_error(what: &str, error: kube::Error) -> CloudError {
    CloudError::call("kubernetes", format!("{what}: {error}"))
}
