//! IAM: the node role and its instance profile, the controller role (IRSA) and its policies, the OIDC provider,
//! and the spot service-linked role.

use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::{Setup, SetupError};
use crate::bootstrap::policies::{self, PolicyContext};
use crate::bootstrap::propagation::retry_while_propagating;
use crate::bootstrap::report::Action;
use crate::cloud::error::CloudError;
use crate::cloud::instance_profile::other_region;
use crate::names::OWNER_TAG;
use crate::names::REGION_TAG;

/// AWS managed policies a node needs.
const NODE_MANAGED_POLICIES: [&str; 4] = [
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
];
const SPOT_SERVICE_LINKED_ROLE: &str = "AWSServiceRoleForEC2Spot";
const SPOT_SERVICE_LINKED_ROLE_PATH: &str = "/aws-service-role/spot.amazonaws.com/";

/// IAM returns policy documents URL-encoded.
/// IAM's limit on the versions of a managed policy.
const MAX_POLICY_VERSIONS: usize = 5;

fn decode_document(text: &str) -> Option<Value> {
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8().ok()?;
    serde_json::from_str(&decoded).ok()
}

fn is_no_such_entity<E: aws_sdk_iam::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code() == Some("NoSuchEntity")
}

fn is_entity_already_exists<E: aws_sdk_iam::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code() == Some("EntityAlreadyExists")
}

impl Setup<'_> {
    /// The owner and the region: IAM is global, and teardown in another region leaves what is tagged for this one.
    fn iam_tags(&self) -> Vec<Tag> {
        let (key, value) = self.owner();
        vec![
            Tag::builder().key(key).value(value).build().expect("key and value are set"),
            Tag::builder().key(REGION_TAG).value(&self.cluster.region).build().expect("key and value are set"),
        ]
    }

    /// The tags CreateRole/CreatePolicy send, as the report shows them.
    fn iam_tags_spec(&self) -> Value {
        self.iam_tags().iter().map(|t| (t.key().to_string(), Value::String(t.value().to_string()))).collect()
    }

    fn role_spec(&self, trust: &Value) -> Value {
        serde_json::json!({"assume_role_policy": trust, "tags": self.iam_tags_spec()})
    }

    fn policy_spec(&self, document: &Value) -> Value {
        serde_json::json!({"policy": document, "tags": self.iam_tags_spec()})
    }

    fn owned(&self, tags: &[Tag]) -> bool {
        tags.iter().any(|t| t.key() == OWNER_TAG && t.value() == self.options.cluster)
    }

    /// Refuses what is not this cluster's here: not owner-tagged, or tagged for another region.
    fn check_ours(&self, kind: &'static str, name: &str, tags: &[Tag]) -> Result<(), SetupError> {
        let cluster = self.options.cluster.clone();
        if !self.owned(tags) {
            return Err(SetupError::NotOurs { kind, name: name.into(), cluster });
        }
        if let Some(other) = other_region(tags, &self.cluster.region) {
            return Err(SetupError::OtherRegion { kind, name: name.into(), cluster, region: other.into() });
        }
        Ok(())
    }

    /// The identities a role of this cluster may trust by name: the OIDC provider of its issuer and the cluster.
    fn this_clusters_identities(&self) -> Vec<String> {
        let mut identities = vec![self.cluster.arn.clone()];
        identities.extend(self.cluster.oidc_issuer.as_deref().map(|issuer| self.oidc_provider_arn(issuer)));
        identities
    }

    /// The ARN IAM gives the OIDC provider of `issuer` in this account.
    fn oidc_provider_arn(&self, issuer: &str) -> String {
        let host_path = issuer.trim_start_matches("https://");
        format!("arn:{}:iam::{}:oidc-provider/{host_path}", self.cluster.partition, self.cluster.account_id)
    }

    /// Gets or creates a role with this trust policy; returns its ARN. An existing role whose trust lets in another
    /// cluster (another issuer, another cluster ARN) is never adopted: rewriting its trust would lock that one out.
    async fn role(&mut self, name: &str, trust: &Value) -> Result<String, SetupError> {
        let spec = self.role_spec(trust);
        match self.iam.get_role().role_name(name).send().await {
            Ok(found) => {
                let role = found
                    .role()
                    .ok_or_else(|| CloudError::call("iam:GetRole", format!("no role in the answer for {name}")))?;
                self.check_ours("IAM role", name, role.tags())?;
                let current = role.assume_role_policy_document().and_then(decode_document);
                let ours = self.this_clusters_identities();
                let foreign = current
                    .as_ref()
                    .map(policies::trusted_identities)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|identity| !ours.contains(identity));
                if let Some(trusted) = foreign {
                    return Err(SetupError::TrustsAnother { role: name.into(), trusted, wanted: ours.join(", ") });
                }
                if current.as_ref() == Some(trust) {
                    self.ledger.record("iam-role", name, Action::Unchanged, 0).spec(spec);
                } else {
                    if self.ledger.may_mutate() {
                        self.iam
                            .update_assume_role_policy()
                            .role_name(name)
                            .policy_document(trust.to_string())
                            .send()
                            .await
                            .map_err(|e| CloudError::from_sdk("iam:UpdateAssumeRolePolicy", Some(name), e))?;
                    }
                    self.ledger.record("iam-role", name, Action::Updated, 1).spec(spec);
                }
                Ok(role.arn().to_string())
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {
                let arn = format!("arn:{}:iam::{}:role/{name}", self.cluster.partition, self.cluster.account_id);
                if self.ledger.may_mutate() {
                    // A trust policy naming an OIDC provider made a moment ago can be refused until IAM catches up.
                    let (iam, tags) = (self.iam.clone(), self.iam_tags());
                    let description = format!("nodesmith, EKS cluster {}", self.options.cluster);
                    let created = retry_while_propagating(|| {
                        iam.create_role()
                            .role_name(name)
                            .assume_role_policy_document(trust.to_string())
                            .description(&description)
                            .set_tags(Some(tags.clone()))
                            .send()
                    })
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:CreateRole", Some(name), e))?;
                    self.ledger.record("iam-role", name, Action::Created, 1).spec(spec);
                    return Ok(created.role().map_or(arn, |r| r.arn().to_string()));
                }
                self.ledger.record("iam-role", name, Action::Created, 1).spec(spec);
                Ok(arn)
            }
            Err(error) => Err(CloudError::from_sdk("iam:GetRole", Some(name), error).into()),
        }
    }

    /// Attaches each policy ARN the role lacks.
    async fn attach(&mut self, role: &str, policy_arns: &[String]) -> Result<(), SetupError> {
        let attached: Vec<String> = if self.role_exists(role) {
            self.iam
                .list_attached_role_policies()
                .role_name(role)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("iam:ListAttachedRolePolicies", Some(role), e))?
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string))
                .collect()
        } else {
            Vec::new()
        };
        for arn in policy_arns {
            let id = format!("{role} <- {arn}");
            if attached.contains(arn) {
                self.ledger.record("iam-role-policy-attachment", id, Action::Unchanged, 0);
                continue;
            }
            if self.ledger.may_mutate() {
                self.iam
                    .attach_role_policy()
                    .role_name(role)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:AttachRolePolicy", Some(role), e))?;
            }
            self.ledger.record("iam-role-policy-attachment", id, Action::Created, 1);
        }
        Ok(())
    }

    /// In a dry run a role planned for creation does not exist yet.
    fn role_exists(&self, role: &str) -> bool {
        !(self.ledger.dry_run
            && self
                .ledger
                .resources
                .iter()
                .any(|r| r.kind == "iam-role" && r.id == role && r.action == Action::Created))
    }

    pub(super) async fn node_role(&mut self) -> Result<String, SetupError> {
        let name = self.names.node_role.clone();
        let arn = self.role(&name, &policies::node_trust_policy()).await?;
        let partition = self.cluster.partition.clone();
        let managed: Vec<String> =
            NODE_MANAGED_POLICIES.iter().map(|p| format!("arn:{partition}:iam::aws:policy/{p}")).collect();
        self.attach(&name, &managed).await?;
        Ok(arn)
    }

    pub(super) async fn instance_profile(&mut self) -> Result<(), SetupError> {
        let name = self.names.instance_profile.clone();
        let role = self.names.node_role.clone();
        let roles: Vec<String> = match self.iam.get_instance_profile().instance_profile_name(&name).send().await {
            Ok(found) => {
                let profile = found.instance_profile();
                self.check_ours("instance profile", &name, profile.map(|p| p.tags()).unwrap_or_default())?;
                self.ledger.record("iam-instance-profile", &name, Action::Unchanged, 0);
                profile.map(|p| p.roles().iter().map(|r| r.role_name().to_string()).collect()).unwrap_or_default()
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {
                if self.ledger.may_mutate() {
                    self.iam
                        .create_instance_profile()
                        .instance_profile_name(&name)
                        .set_tags(Some(self.iam_tags()))
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("iam:CreateInstanceProfile", Some(&name), e))?;
                }
                self.ledger.record("iam-instance-profile", &name, Action::Created, 1);
                Vec::new()
            }
            Err(error) => return Err(CloudError::from_sdk("iam:GetInstanceProfile", Some(&name), error).into()),
        };
        if !roles.contains(&role) {
            if self.ledger.may_mutate() {
                self.iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(&name)
                    .role_name(&role)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:AddRoleToInstanceProfile", Some(&name), e))?;
            }
            self.ledger.record("iam-instance-profile-role", format!("{name} <- {role}"), Action::Created, 1);
        }
        Ok(())
    }

    /// The controller's role, trusted through the cluster's OIDC provider (created if absent), or by EKS Pod
    /// Identity. Returns its name.
    pub(super) async fn controller_role(&mut self) -> Result<String, SetupError> {
        let name = self.names.controller_role.clone();
        if self.options.identity == super::Identity::PodIdentity {
            let trust = policies::pod_identity_trust_policy(
                &self.cluster.account_id,
                &self.cluster.arn,
                &self.options.namespace,
                &self.options.service_account,
            );
            self.role(&name, &trust).await?;
            return Ok(name);
        }
        let issuer = self.cluster.oidc_issuer.clone().ok_or_else(|| SetupError::Incomplete {
            cluster: self.options.cluster.clone(),
            what: "OIDC issuer (IRSA needs one)",
        })?;
        let provider_arn = self.oidc_provider(&issuer).await?;
        let trust =
            policies::irsa_trust_policy(&provider_arn, &issuer, &self.options.namespace, &self.options.service_account);
        self.role(&name, &trust).await?;
        Ok(name)
    }

    async fn oidc_provider(&mut self, issuer: &str) -> Result<String, SetupError> {
        let arn = self.oidc_provider_arn(issuer);
        let listed = self
            .iam
            .list_open_id_connect_providers()
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:ListOpenIDConnectProviders", None, e))?;
        if listed.open_id_connect_provider_list().iter().any(|p| p.arn() == Some(arn.as_str())) {
            self.ledger.record("iam-oidc-provider", &arn, Action::Unchanged, 0);
            return Ok(arn);
        }
        if self.ledger.may_mutate() {
            let created = self
                .iam
                .create_open_id_connect_provider()
                .url(issuer)
                .client_id_list("sts.amazonaws.com")
                .set_tags(Some(self.iam_tags()))
                .send()
                .await;
            match created {
                Ok(_) => {}
                // The provider is one per issuer and account: another setup (this cluster's, run concurrently, or
                // eksctl's) made it between our list and our create. It is what we wanted, and it is not ours.
                Err(error) if error.as_service_error().is_some_and(is_entity_already_exists) => {
                    self.ledger.record("iam-oidc-provider", &arn, Action::Unchanged, 1);
                    return Ok(arn);
                }
                Err(error) => {
                    return Err(CloudError::from_sdk("iam:CreateOpenIDConnectProvider", Some(issuer), error).into());
                }
            }
        }
        self.ledger.record("iam-oidc-provider", &arn, Action::Created, 1);
        Ok(arn)
    }

    /// The controller's permissions as customer managed policies (as many as the size limit needs), attached to
    /// its role.
    pub(super) async fn controller_policies(
        &mut self,
        role: &str,
        node_role_arn: &str,
        queue_arn: &str,
    ) -> Result<(), SetupError> {
        let context = PolicyContext {
            partition: self.cluster.partition.clone(),
            region: self.cluster.region.clone(),
            account_id: self.cluster.account_id.clone(),
            cluster: self.options.cluster.clone(),
            node_role_arn: node_role_arn.to_string(),
            queue_arn: queue_arn.to_string(),
        };
        let mut arns = Vec::new();
        for (part, document) in policies::controller_policies(&context).iter().enumerate() {
            let name = self.names.controller_policy(part + 1);
            let arn = format!("arn:{}:iam::{}:policy/{name}", self.cluster.partition, self.cluster.account_id);
            self.managed_policy(&name, &arn, document).await?;
            arns.push(arn);
        }
        self.attach(role, &arns).await
    }

    async fn managed_policy(&mut self, name: &str, arn: &str, document: &Value) -> Result<(), SetupError> {
        let spec = self.policy_spec(document);
        let found = match self.iam.get_policy().policy_arn(arn).send().await {
            Ok(found) => found.policy,
            Err(error) if error.as_service_error().is_some_and(is_no_such_entity) => None,
            Err(error) => return Err(CloudError::from_sdk("iam:GetPolicy", Some(arn), error).into()),
        };
        let Some(policy) = found else {
            if self.ledger.may_mutate() {
                self.iam
                    .create_policy()
                    .policy_name(name)
                    .policy_document(document.to_string())
                    .description(format!("nodesmith controller, EKS cluster {}", self.options.cluster))
                    .set_tags(Some(self.iam_tags()))
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:CreatePolicy", Some(name), e))?;
            }
            self.ledger.record("iam-policy", name, Action::Created, 1).spec(spec);
            return Ok(());
        };
        self.check_ours("IAM policy", name, policy.tags())?;
        let version = policy.default_version_id().unwrap_or("v1");
        let current = self
            .iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:GetPolicyVersion", Some(arn), e))?
            .policy_version
            .and_then(|v| v.document)
            .and_then(|d| decode_document(&d));
        if current.as_ref() == Some(document) {
            self.ledger.record("iam-policy", name, Action::Unchanged, 0).spec(spec);
            return Ok(());
        }
        if self.ledger.may_mutate() {
            self.prune_policy_versions(arn).await?;
            self.iam
                .create_policy_version()
                .policy_arn(arn)
                .policy_document(document.to_string())
                .set_as_default(true)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("iam:CreatePolicyVersion", Some(arn), e))?;
        }
        self.ledger.record("iam-policy", name, Action::Updated, 1).spec(spec);
        Ok(())
    }

    /// IAM keeps at most five versions of a managed policy: deletes the oldest ones that are not the default so that
    /// one more fits (else the sixth change of the controller's policies would fail with LimitExceeded).
    async fn prune_policy_versions(&mut self, arn: &str) -> Result<(), SetupError> {
        let listed = self
            .iam
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:ListPolicyVersions", Some(arn), e))?;
        let mut old: Vec<(u32, String)> = listed
            .versions()
            .iter()
            .filter(|v| !v.is_default_version())
            .filter_map(|v| v.version_id())
            .map(|id| (id.trim_start_matches('v').parse().unwrap_or(0), id.to_string()))
            .collect();
        // Oldest first: IAM numbers a policy's versions in the order they were made (v1, v2, ...).
        old.sort();
        let excess = listed.versions().len().saturating_sub(MAX_POLICY_VERSIONS - 1);
        for (_, version) in old.into_iter().take(excess) {
            self.iam
                .delete_policy_version()
                .policy_arn(arn)
                .version_id(&version)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("iam:DeletePolicyVersion", Some(&format!("{arn} {version}")), e))?;
            self.ledger.record("iam-policy-version", format!("{arn} {version}"), Action::Deleted, 1);
        }
        Ok(())
    }

    /// EC2 needs this role once per account to launch spot instances; it may exist already, made by anyone.
    pub(super) async fn spot_service_linked_role(&mut self) -> Result<(), SetupError> {
        // Found by its path, which names the service, rather than by a name that differs between partitions.
        let existing = self
            .iam
            .list_roles()
            .path_prefix(SPOT_SERVICE_LINKED_ROLE_PATH)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:ListRoles", Some(SPOT_SERVICE_LINKED_ROLE_PATH), e))?;
        if let Some(role) = existing.roles().first() {
            self.ledger.record("iam-service-linked-role", role.role_name(), Action::Unchanged, 0);
            return Ok(());
        }
        if self.ledger.may_mutate() {
            let created = self.iam.create_service_linked_role().aws_service_name("spot.amazonaws.com").send().await;
            if let Err(error) = created {
                // Made meanwhile by someone else: what we wanted.
                let taken = error
                    .as_service_error()
                    .and_then(|e| aws_sdk_iam::error::ProvideErrorMetadata::message(e))
                    .is_some_and(|m| m.contains("taken") || m.contains("exists"));
                if !taken {
                    return Err(
                        CloudError::from_sdk("iam:CreateServiceLinkedRole", Some("spot.amazonaws.com"), error).into()
                    );
                }
            }
        }
        self.ledger.record("iam-service-linked-role", SPOT_SERVICE_LINKED_ROLE, Action::Created, 1);
        Ok(())
    }
}
