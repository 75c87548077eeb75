//! Step 2, nodes' access to the cluster (an EKS access entry, or the aws-auth ConfigMap), and the EKS Pod Identity
//! association of step 3.

use serde_json::json;

use super::{NodeAccess, Setup, SetupError};
use crate::bootstrap::aws_auth;
use crate::bootstrap::propagation::retry_while_propagating;
use crate::bootstrap::report::Action;
use crate::cloud::error::CloudError;
use crate::names::OWNER_TAG;

impl Setup<'_> {
    /// Lets nodes with the node role join: an access entry of type EC2_LINUX, or an aws-auth mapping.
    pub(super) async fn node_access(&mut self, node_role_arn: &str) -> Result<(), SetupError> {
        match self.options.node_access {
            NodeAccess::AccessEntry => self.access_entry(node_role_arn).await,
            NodeAccess::AwsAuth => self.aws_auth_mapping(node_role_arn).await,
        }
    }

    async fn access_entry(&mut self, node_role_arn: &str) -> Result<(), SetupError> {
        let cluster = self.options.cluster.clone();
        let found = self.eks.describe_access_entry().cluster_name(&cluster).principal_arn(node_role_arn).send().await;
        let id = format!("{cluster} <- {node_role_arn}");
        let spec = json!({"type": "EC2_LINUX", "principal_arn": node_role_arn, "tags": {OWNER_TAG: cluster}});
        match found {
            Ok(answer) => {
                let entry_type = answer.access_entry().and_then(|e| e.r#type()).unwrap_or_default().to_string();
                if entry_type != "EC2_LINUX" {
                    return Err(SetupError::Conflict(format!(
                        "cluster {cluster} has an access entry of type {entry_type} for the node role {node_role_arn}; \
                         nodes need EC2_LINUX: delete that entry (aws eks delete-access-entry) and run again"
                    )));
                }
                self.ledger.record("eks-access-entry", id, Action::Unchanged, 0).spec(spec);
                Ok(())
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                if self.ledger.may_mutate() {
                    let eks = self.eks.clone();
                    retry_while_propagating(|| {
                        eks.create_access_entry()
                            .cluster_name(&cluster)
                            .principal_arn(node_role_arn)
                            .r#type("EC2_LINUX")
                            .tags(OWNER_TAG, &cluster)
                            .send()
                    })
                    .await
                    .map_err(|e| CloudError::from_sdk("eks:CreateAccessEntry", Some(node_role_arn), e))?;
                }
                self.ledger.record("eks-access-entry", id, Action::Created, 1).spec(spec);
                Ok(())
            }
            Err(error) => Err(CloudError::from_sdk("eks:DescribeAccessEntry", Some(node_role_arn), error).into()),
        }
    }

    /// The node role in kube-system/aws-auth's mapRoles, as EKS maps node group roles.
    async fn aws_auth_mapping(&mut self, node_role_arn: &str) -> Result<(), SetupError> {
        let client = self.kube_client("--node-access aws-auth")?;
        let spec = json!({
            "rolearn": node_role_arn,
            "username": aws_auth::NODE_USERNAME,
            "groups": aws_auth::NODE_GROUPS,
        });
        let edited = aws_auth::edit_map_roles(&client, self.ledger.may_mutate(), |map_roles| {
            aws_auth::with_node_role(map_roles, node_role_arn)
        })
        .await;
        let (action, calls) = match edited {
            Ok(aws_auth::Edit::Unchanged) => (Action::Unchanged, 0),
            Ok(aws_auth::Edit::Written) => (Action::Created, 1),
            Err(aws_auth::EditError::MapRoles(error)) => return Err(error.into()),
            Err(error) => return Err(SetupError::Kube(error.to_string())),
        };
        self.ledger.record("aws-auth-mapping", node_role_arn, action, calls).spec(spec);
        Ok(())
    }

    /// EKS Pod Identity: the controller's ServiceAccount gets the controller role.
    pub(super) async fn pod_identity_association(&mut self, role_arn: &str) -> Result<(), SetupError> {
        let cluster = self.options.cluster.clone();
        let (namespace, account) = (self.options.namespace.clone(), self.options.service_account.clone());
        let id = format!("{cluster} {namespace}/{account} -> {role_arn}");
        let spec = json!({"namespace": namespace, "service_account": account, "role_arn": role_arn,
                          "tags": {OWNER_TAG: cluster}});
        let listed = self
            .eks
            .list_pod_identity_associations()
            .cluster_name(&cluster)
            .namespace(&namespace)
            .service_account(&account)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("eks:ListPodIdentityAssociations", Some(&cluster), e))?;
        if let Some(existing) = listed.associations().first() {
            let association_id = existing.association_id().unwrap_or_default().to_string();
            let described = self
                .eks
                .describe_pod_identity_association()
                .cluster_name(&cluster)
                .association_id(&association_id)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("eks:DescribePodIdentityAssociation", Some(&association_id), e))?;
            let current_role = described.association().and_then(|a| a.role_arn()).unwrap_or_default().to_string();
            if current_role == role_arn {
                self.ledger.record("eks-pod-identity-association", id, Action::Unchanged, 0).spec(spec);
                return Ok(());
            }
            return Err(SetupError::Conflict(format!(
                "{namespace}/{account} in cluster {cluster} already has a Pod Identity association ({association_id}) \
                 with role {current_role}: delete it, or pass another --service-account"
            )));
        }
        if self.ledger.may_mutate() {
            let eks = self.eks.clone();
            retry_while_propagating(|| {
                eks.create_pod_identity_association()
                    .cluster_name(&cluster)
                    .namespace(&namespace)
                    .service_account(&account)
                    .role_arn(role_arn)
                    .tags(OWNER_TAG, &cluster)
                    .send()
            })
            .await
            .map_err(|e| CloudError::from_sdk("eks:CreatePodIdentityAssociation", Some(role_arn), e))?;
        }
        self.ledger.record("eks-pod-identity-association", id, Action::Created, 1).spec(spec);
        Ok(())
    }
}
