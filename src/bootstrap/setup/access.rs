//! Step 2, nodes' access to the cluster (an EKS access entry, or the aws-auth ConfigMap), and the EKS Pod Identity
//! association of step 3.

use serde_json::json;

use super::{NodeAccess, OWNER_TAG, Setup, SetupError};
use crate::bootstrap::aws_auth;
use crate::bootstrap::propagation::retry_while_propagating;
use crate::bootstrap::report::Action;
use crate::cloud::error::CloudError;

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

/// moto serves no EKS access entries or Pod Identity associations: these calls are tested against a fake EKS
/// endpoint answering as the EKS API reference documents, and `--node-access aws-auth` end to end in the sandbox.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bootstrap::fake_eks::{ASSOCIATIONS, CONTROLLER_ROLE, ENTRIES, FakeEks, NODE_ROLE};
    use crate::bootstrap::names::ClusterNames;
    use crate::bootstrap::report::Ledger;
    use crate::bootstrap::setup::{ClusterInfo, DiscoveryValue, Identity, SetupOptions};

    fn options(dry_run: bool) -> SetupOptions {
        SetupOptions {
            cluster: "demo".into(),
            namespace: "nodesmith".into(),
            service_account: "nodesmith".into(),
            identity: Identity::PodIdentity,
            node_access: NodeAccess::AccessEntry,
            discovery: DiscoveryValue::Cluster,
            create_subnets: None,
            apply: false,
            dry_run,
            kube: None,
            progress: None,
        }
    }

    fn setup_for<'a>(options: &'a SetupOptions, eks: &FakeEks) -> Setup<'a> {
        let sdk = crate::bootstrap::fake_eks::uncalled_sdk_config();
        Setup {
            options,
            cluster: ClusterInfo {
                name: "demo".into(),
                arn: "arn:aws:eks:us-east-1:123456789012:cluster/demo".into(),
                partition: "aws".into(),
                region: "us-east-1".into(),
                account_id: "123456789012".into(),
                endpoint: "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com".into(),
                version: "1.36".into(),
                vpc_id: "vpc-1".into(),
                subnet_ids: Vec::new(),
                security_group_ids: Vec::new(),
                oidc_issuer: None,
                authentication_mode: None,
            },
            names: ClusterNames::for_cluster("demo", "us-east-1"),
            ec2: aws_sdk_ec2::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            eks: eks.client(),
            ledger: Ledger::new(options.dry_run),
        }
    }

    fn entry(entry_type: &str) -> serde_json::Value {
        json!({"accessEntry": {"clusterName": "demo", "principalArn": NODE_ROLE, "type": entry_type,
                               "tags": {OWNER_TAG: "demo"}}})
    }

    fn no_entry() -> FakeEks {
        FakeEks::default().error(
            "GET",
            ENTRIES,
            "ResourceNotFoundException",
            "The specified access entry resource can't be found.",
            None,
        )
    }

    #[tokio::test]
    async fn a_missing_access_entry_is_created_as_ec2_linux_with_the_ownership_tag() {
        let eks = no_entry().ok("POST", ENTRIES, entry("EC2_LINUX"));
        let options = options(false);
        let mut setup = setup_for(&options, &eks);
        setup.node_access(NODE_ROLE).await.expect("creates the entry");
        let created = eks.received("POST", ENTRIES);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].body["principalArn"], NODE_ROLE);
        assert_eq!(created[0].body["type"], "EC2_LINUX");
        assert_eq!(created[0].body["tags"][OWNER_TAG], "demo");
        assert_eq!((setup.ledger.resources[0].action, setup.ledger.changes), (Action::Created, 1));
    }

    #[tokio::test]
    async fn an_existing_ec2_linux_entry_is_left_and_another_type_is_a_clear_error() {
        let eks = FakeEks::default().ok("GET", ENTRIES, entry("EC2_LINUX"));
        let options = options(false);
        let mut setup = setup_for(&options, &eks);
        setup.node_access(NODE_ROLE).await.expect("already there");
        assert_eq!((setup.ledger.resources[0].action, setup.ledger.changes), (Action::Unchanged, 0));
        assert!(eks.received("POST", ENTRIES).is_empty());

        let eks = FakeEks::default().ok("GET", ENTRIES, entry("STANDARD"));
        let mut setup = setup_for(&options, &eks);
        let error = setup.node_access(NODE_ROLE).await.expect_err("wrong type");
        assert!(
            error.to_string().contains("type STANDARD") && error.to_string().contains("delete-access-entry"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_role_iam_has_not_propagated_yet_is_retried() {
        let not_yet = format!("The specified principal {NODE_ROLE} does not exist");
        let eks = no_entry().error("POST", ENTRIES, "InvalidParameterException", &not_yet, Some(2)).ok(
            "POST",
            ENTRIES,
            entry("EC2_LINUX"),
        );
        let options = options(false);
        let mut setup = setup_for(&options, &eks);
        setup.node_access(NODE_ROLE).await.expect("succeeds once IAM has caught up");
        assert_eq!(eks.received("POST", ENTRIES).len(), 3);
    }

    #[tokio::test]
    async fn an_access_entry_refused_for_another_reason_fails_saying_which_call() {
        let eks = no_entry().error(
            "POST",
            ENTRIES,
            "InvalidRequestException",
            "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP]",
            None,
        );
        let options = options(false);
        let mut setup = setup_for(&options, &eks);
        let error = setup.node_access(NODE_ROLE).await.expect_err("refused");
        assert!(
            error.to_string().contains("eks:CreateAccessEntry") && error.to_string().contains("API_AND_CONFIG_MAP"),
            "{error}"
        );
        assert_eq!(eks.received("POST", ENTRIES).len(), 1);
    }

    #[tokio::test]
    async fn a_dry_run_only_looks() {
        let eks = no_entry().ok("POST", ENTRIES, entry("EC2_LINUX"));
        let options = options(true);
        let mut setup = setup_for(&options, &eks);
        setup.node_access(NODE_ROLE).await.expect("plans");
        assert!(eks.received("POST", ENTRIES).is_empty());
        assert_eq!(setup.ledger.changes, 1);
    }

    fn association(role: &str) -> serde_json::Value {
        json!({"association": {"clusterName": "demo", "namespace": "nodesmith", "serviceAccount": "nodesmith",
                               "associationId": "a-1", "roleArn": role, "tags": {OWNER_TAG: "demo"}}})
    }

    #[tokio::test]
    async fn the_pod_identity_association_is_made_once_and_a_foreign_one_is_refused() {
        let eks = FakeEks::default().ok("GET", ASSOCIATIONS, json!({"associations": []})).ok(
            "POST",
            ASSOCIATIONS,
            association(CONTROLLER_ROLE),
        );
        let options = options(false);
        let mut setup = setup_for(&options, &eks);
        setup.pod_identity_association(CONTROLLER_ROLE).await.expect("creates");
        let listed = eks.received("GET", ASSOCIATIONS);
        assert!(listed[0].path.contains("namespace=nodesmith") && listed[0].path.contains("serviceAccount=nodesmith"));
        let created = eks.received("POST", ASSOCIATIONS);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].body["roleArn"], CONTROLLER_ROLE);
        assert_eq!(created[0].body["serviceAccount"], "nodesmith");
        assert_eq!(created[0].body["tags"][OWNER_TAG], "demo");

        let existing = |role: &str| {
            FakeEks::default()
                .ok("GET", &format!("{ASSOCIATIONS}/a-1"), association(role))
                .ok("GET", ASSOCIATIONS, json!({"associations": [{"associationId": "a-1", "namespace": "nodesmith", "serviceAccount": "nodesmith"}]}))
        };
        let eks = existing(CONTROLLER_ROLE);
        let mut setup = setup_for(&options, &eks);
        setup.pod_identity_association(CONTROLLER_ROLE).await.expect("already there");
        assert_eq!(setup.ledger.changes, 0);
        assert!(eks.received("POST", ASSOCIATIONS).is_empty());

        let eks = existing("arn:aws:iam::123456789012:role/someone-else");
        let mut setup = setup_for(&options, &eks);
        let error = setup.pod_identity_association(CONTROLLER_ROLE).await.expect_err("taken");
        assert!(error.to_string().contains("someone-else"), "{error}");
    }
}
