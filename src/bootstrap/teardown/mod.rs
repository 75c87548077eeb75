//! `nodesmith teardown`: removes what setup and the controller made for a cluster, found by their tags, and
//! nothing else. Safe to re-run: what is gone is simply not found.

mod cluster;

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceStateName};

use super::kube_target::KubeTarget;
use super::ownership::{queue_is_ours, rule_is_ours};
use super::report::{Action, Ledger, ProgressObserver};
use super::setup::queue::INTERRUPTION_EVENTS;
use crate::cloud::error::CloudError;
use crate::cloud::resource_names::ClusterNames;
use crate::cloud::{instance_profile, instances};
use crate::names::{DISCOVERY_SET_BY_TAG, DISCOVERY_TAG, OWNER_TAG, REGION_TAG};

/// How long teardown waits for terminated instances to go before it moves on.
const INSTANCE_WAIT: Duration = Duration::from_secs(120);
const MAX_CONTROLLER_POLICIES: usize = 8;

#[derive(Debug, Clone)]
pub struct TeardownOptions {
    pub cluster: String,
    pub dry_run: bool,
    /// The Kubernetes API, for the NodePools and the aws-auth mapping (used only if it is the cluster's), or why
    /// there is none.
    pub kube: Result<KubeTarget, String>,
    /// Go on without the Kubernetes side when the cluster exists but cannot be reached.
    pub skip_kubernetes: bool,
    /// Told of each step and resource as teardown goes.
    pub progress: Option<ProgressObserver>,
}

struct Teardown<'a> {
    options: &'a TeardownOptions,
    names: ClusterNames,
    /// The region torn down: IAM resources tagged with another are that region's and stay.
    region: String,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    eks: aws_sdk_eks::Client,
    sts: aws_sdk_sts::Client,
    account_prefix: Option<String>,
    ledger: Ledger,
}

/// How long teardown waits, all subnets together, for EC2 to release the interfaces of terminated instances.
const INTERFACE_WAIT: Duration = Duration::from_secs(60);
/// Results per page of the EC2 lists teardown walks (every page is read).
const PAGE_SIZE: i32 = 100;

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error(
        "cluster {cluster} still exists and its Kubernetes API cannot be used ({why}): its NodePools would launch \
         replacements for the instances teardown terminates. Point kubectl at it (aws eks update-kubeconfig --name \
         {cluster} --region <region>), or pass --skip-kubernetes once the controller is uninstalled"
    )]
    NoKubernetes { cluster: String, why: String },
    #[error("no AWS region is set: pass --region (or set AWS_REGION); teardown removes one region's resources")]
    NoRegion,
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

pub async fn run(sdk: &aws_config::SdkConfig, options: &TeardownOptions) -> Result<Ledger, TeardownError> {
    let region = sdk.region().map(ToString::to_string).ok_or(TeardownError::NoRegion)?;
    let mut teardown = Teardown {
        options,
        names: ClusterNames::for_cluster(&options.cluster, &region),
        region,
        ec2: aws_sdk_ec2::Client::new(sdk),
        iam: aws_sdk_iam::Client::new(sdk),
        sqs: aws_sdk_sqs::Client::new(sdk),
        events: aws_sdk_eventbridge::Client::new(sdk),
        eks: aws_sdk_eks::Client::new(sdk),
        sts: aws_sdk_sts::Client::new(sdk),
        account_prefix: None,
        ledger: Ledger::with_observer(options.dry_run, options.progress.clone()),
    };
    teardown.ledger.step("NodePools");
    let kubernetes = teardown.kubernetes_first().await?;
    teardown.ledger.step("instances");
    teardown.instances().await?;
    teardown.ledger.step("launch templates");
    teardown.launch_templates().await?;
    teardown.ledger.step("EventBridge rules and the queue");
    teardown.rules().await?;
    teardown.queue().await?;
    teardown.ledger.step("node access, Pod Identity");
    teardown.cluster_access_last(kubernetes.as_ref()).await?;
    teardown.ledger.step("IAM");
    teardown.controller_policies().await?;
    teardown.instance_profiles().await?;
    for role in [teardown.names.controller_role.clone(), teardown.names.node_role.clone()] {
        teardown.role(&role).await?;
    }
    teardown.oidc_providers().await?;
    teardown.ledger.step("discovery tags and subnets");
    teardown.discovery_tags().await?;
    teardown.subnets().await?;
    Ok(teardown.ledger)
}

impl Teardown<'_> {
    fn ours(&self, key: Option<&str>, value: Option<&str>) -> bool {
        key == Some(OWNER_TAG) && value == Some(self.options.cluster.as_str())
    }

    /// The other region an IAM resource is tagged with, if it is: it belongs to that region's cluster of the same
    /// name. (One made before nodesmith tagged regions carries none.)
    fn other_region(&self, tags: &[aws_sdk_iam::types::Tag]) -> Option<String> {
        instance_profile::other_region(tags, &self.region).map(str::to_string)
    }

    /// Instances the controller launched for this cluster's node pools: tagged with the owner tag as well as the
    /// cluster's. Another controller's of the same cluster name (Karpenter's carry the same cluster and node pool
    /// tags) are reported and left.
    async fn instances(&mut self) -> Result<(), CloudError> {
        let mut ids: Vec<String> = Vec::new();
        for instance in instances::cluster_node_pool_instances(&self.ec2, &self.options.cluster).await? {
            if instance.owner.as_deref() == Some(self.options.cluster.as_str()) {
                ids.push(instance.instance_id);
            } else {
                self.ledger.keep("ec2-instance", &instance.instance_id, self.not_ours_note());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        if self.ledger.may_mutate() {
            instances::terminate_all(&self.ec2, &ids).await?;
            self.wait_terminated(&ids).await?;
        }
        for id in ids {
            self.ledger.record("ec2-instance", id, Action::Deleted, 0);
        }
        self.ledger.changes += 1;
        Ok(())
    }

    fn not_ours_note(&self) -> String {
        format!(
            "tagged for cluster {} but not {OWNER_TAG}={}: another controller's (Karpenter's?) or launched by a \
             nodesmith older than its owner tag; terminate it yourself if it is nodesmith's",
            self.options.cluster, self.options.cluster
        )
    }

    /// The states of these instances, as DescribeInstances gives them.
    async fn instance_states(&self, ids: &[String]) -> Result<Vec<Option<InstanceStateName>>, CloudError> {
        let described = instances::describe_many(&self.ec2, ids).await?;
        Ok(described.iter().map(|i| (!i.state.is_empty()).then(|| InstanceStateName::from(i.state.as_str()))).collect())
    }

    async fn wait_terminated(&self, ids: &[String]) -> Result<(), CloudError> {
        let deadline = tokio::time::Instant::now() + INSTANCE_WAIT;
        loop {
            let states = self.instance_states(ids).await?;
            let all_gone = states.iter().all(|s| *s == Some(InstanceStateName::Terminated));
            if all_gone || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The controller's launch templates for this cluster: owner-tagged, or (made before the owner tag) named
    /// `nodesmith/<cluster>/...`. Another controller's are reported and left.
    async fn launch_templates(&mut self) -> Result<(), CloudError> {
        let owned = format!("tag:kubernetes.io/cluster/{}", self.options.cluster);
        let legacy_prefix = format!("nodesmith/{}/", self.options.cluster);
        let mut pages = self
            .ec2
            .describe_launch_templates()
            .filters(filter(&owned, "owned"))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut ours: Vec<String> = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeLaunchTemplates", None, e))?;
            for template in page.launch_templates() {
                let Some(id) = template.launch_template_id() else { continue };
                let tagged = template.tags().iter().any(|t| self.ours(t.key(), t.value()));
                let named = template.launch_template_name().is_some_and(|n| n.starts_with(&legacy_prefix));
                if tagged || named {
                    ours.push(id.to_string());
                } else {
                    self.ledger.keep("ec2-launch-template", id, self.not_ours_note());
                }
            }
        }
        for id in ours {
            if self.ledger.may_mutate() {
                self.ec2
                    .delete_launch_template()
                    .launch_template_id(&id)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("ec2:DeleteLaunchTemplate", Some(&id), e))?;
            }
            self.ledger.record("ec2-launch-template", id, Action::Deleted, 1);
        }
        Ok(())
    }

    async fn rules(&mut self) -> Result<(), CloudError> {
        for (kind, ..) in INTERRUPTION_EVENTS {
            let name = self.names.rule(kind);
            let rule = match self.events.describe_rule().name(&name).send().await {
                Ok(rule) => rule,
                Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => continue,
                Err(error) => return Err(CloudError::from_sdk("events:DescribeRule", Some(&name), error)),
            };
            if !rule_is_ours(&self.events, rule.arn().unwrap_or_default(), &name, &self.options.cluster).await? {
                self.ledger.keep("eventbridge-rule", &name, format!("not tagged {OWNER_TAG}={}", self.options.cluster));
                continue;
            }
            let targets = self
                .events
                .list_targets_by_rule()
                .rule(&name)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("events:ListTargetsByRule", Some(&name), e))?;
            let ids: Vec<String> = targets.targets().iter().map(|t| t.id().to_string()).collect();
            if self.ledger.may_mutate() {
                if !ids.is_empty() {
                    self.events
                        .remove_targets()
                        .rule(&name)
                        .set_ids(Some(ids.clone()))
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("events:RemoveTargets", Some(&name), e))?;
                }
                self.events
                    .delete_rule()
                    .name(&name)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("events:DeleteRule", Some(&name), e))?;
            }
            self.ledger.record("eventbridge-rule", &name, Action::Deleted, 1 + u32::from(!ids.is_empty()));
        }
        Ok(())
    }

    async fn queue(&mut self) -> Result<(), CloudError> {
        let name = self.names.queue.clone();
        let url = match self.sqs.get_queue_url().queue_name(&name).send().await {
            Ok(found) => found.queue_url.unwrap_or_default(),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => return Ok(()),
            Err(error) => return Err(CloudError::from_sdk("sqs:GetQueueUrl", Some(&name), error)),
        };
        if !queue_is_ours(&self.sqs, &url, &name, &self.options.cluster).await? {
            self.ledger.keep("sqs-queue", &name, format!("not tagged {OWNER_TAG}={}", self.options.cluster));
            return Ok(());
        }
        if self.ledger.may_mutate() {
            self.sqs
                .delete_queue()
                .queue_url(&url)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("sqs:DeleteQueue", Some(&name), e))?;
        }
        self.ledger.record("sqs-queue", &name, Action::Deleted, 1);
        Ok(())
    }

    /// `arn:<partition>:iam::<account>:` of the caller.
    async fn account_prefix(&mut self) -> Result<Option<String>, CloudError> {
        if self.account_prefix.is_none() {
            let identity = self
                .sts
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("sts:GetCallerIdentity", None, e))?;
            let partition = identity.arn().and_then(|a| a.split(':').nth(1)).unwrap_or("aws").to_string();
            self.account_prefix = identity.account().map(|account| format!("arn:{partition}:iam::{account}:"));
        }
        Ok(self.account_prefix.clone())
    }

    async fn controller_policies(&mut self) -> Result<(), CloudError> {
        let Some(prefix) = self.account_prefix().await? else { return Ok(()) };
        for part in 1..=MAX_CONTROLLER_POLICIES {
            let name = self.names.controller_policy(part);
            let arn = format!("{prefix}policy/{name}");
            let policy = match self.iam.get_policy().policy_arn(&arn).send().await {
                Ok(found) => found.policy,
                Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => continue,
                Err(error) => return Err(CloudError::from_sdk("iam:GetPolicy", Some(&arn), error)),
            };
            let Some(policy) = policy else { continue };
            if !policy.tags().iter().any(|t| self.ours(Some(t.key()), Some(t.value()))) {
                self.ledger.keep("iam-policy", &name, format!("not tagged {OWNER_TAG}={}", self.options.cluster));
                continue;
            }
            if let Some(region) = self.other_region(policy.tags()) {
                self.ledger.keep("iam-policy", &name, format!("{region}'s, tagged {REGION_TAG}={region}"));
                continue;
            }
            let mut calls = 1;
            let entities = self
                .iam
                .list_entities_for_policy()
                .policy_arn(&arn)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("iam:ListEntitiesForPolicy", Some(&arn), e))?;
            let versions = self
                .iam
                .list_policy_versions()
                .policy_arn(&arn)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("iam:ListPolicyVersions", Some(&arn), e))?;
            if self.ledger.may_mutate() {
                for role in entities.policy_roles() {
                    let role = role.role_name().unwrap_or_default();
                    self.iam
                        .detach_role_policy()
                        .role_name(role)
                        .policy_arn(&arn)
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("iam:DetachRolePolicy", Some(role), e))?;
                }
                for version in versions.versions().iter().filter(|v| !v.is_default_version()) {
                    self.iam
                        .delete_policy_version()
                        .policy_arn(&arn)
                        .version_id(version.version_id().unwrap_or_default())
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("iam:DeletePolicyVersion", Some(&arn), e))?;
                }
                self.iam
                    .delete_policy()
                    .policy_arn(&arn)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:DeletePolicy", Some(&arn), e))?;
            }
            calls += entities.policy_roles().len() as u32;
            calls += versions.versions().iter().filter(|v| !v.is_default_version()).count() as u32;
            self.ledger.record("iam-policy", &name, Action::Deleted, calls);
        }
        Ok(())
    }

    /// Setup's instance profile, and those the controller made for the cluster's EC2NodeClasses: named
    /// `nodesmith-...` and owner-tagged (or, made before the controller tagged its own, tagged for the cluster and
    /// named `nodesmith-<cluster>-...`). Every page of the account's profiles is looked at.
    async fn instance_profiles(&mut self) -> Result<(), CloudError> {
        let mut pages = self.iam.list_instance_profiles().into_paginator().send();
        let mut names: Vec<String> = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("iam:ListInstanceProfiles", None, e))?;
            names.extend(
                page.instance_profiles()
                    .iter()
                    .map(|p| p.instance_profile_name().to_string())
                    .filter(|n| n.starts_with("nodesmith-")),
            );
        }
        let controller_tag = format!("kubernetes.io/cluster/{}", self.options.cluster);
        let legacy_prefix = format!("nodesmith-{}-", self.options.cluster);
        for name in names {
            let profile = match self.iam.get_instance_profile().instance_profile_name(&name).send().await {
                Ok(profile) => profile,
                // Deleted since it was listed (by someone else's teardown): nothing to do.
                Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => continue,
                Err(error) => return Err(CloudError::from_sdk("iam:GetInstanceProfile", Some(&name), error)),
            };
            let Some(profile) = profile.instance_profile() else { continue };
            let tagged = profile.tags().iter().any(|t| self.ours(Some(t.key()), Some(t.value())));
            let legacy = name.starts_with(&legacy_prefix)
                && profile.tags().iter().any(|t| t.key() == controller_tag && t.value() == "owned");
            if !tagged && !legacy {
                continue;
            }
            if let Some(region) = self.other_region(profile.tags()) {
                self.ledger.keep("iam-instance-profile", &name, format!("{region}'s, tagged {REGION_TAG}={region}"));
                continue;
            }
            let roles: Vec<String> = profile.roles().iter().map(|r| r.role_name().to_string()).collect();
            if self.ledger.may_mutate() {
                for role in &roles {
                    self.iam
                        .remove_role_from_instance_profile()
                        .instance_profile_name(&name)
                        .role_name(role)
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("iam:RemoveRoleFromInstanceProfile", Some(&name), e))?;
                }
                self.iam
                    .delete_instance_profile()
                    .instance_profile_name(&name)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:DeleteInstanceProfile", Some(&name), e))?;
            }
            self.ledger.record("iam-instance-profile", &name, Action::Deleted, 1 + roles.len() as u32);
        }
        Ok(())
    }

    async fn role(&mut self, name: &str) -> Result<(), CloudError> {
        let role = match self.iam.get_role().role_name(name).send().await {
            Ok(found) => found.role,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => return Ok(()),
            Err(error) => return Err(CloudError::from_sdk("iam:GetRole", Some(name), error)),
        };
        let Some(role) = role else { return Ok(()) };
        if !role.tags().iter().any(|t| self.ours(Some(t.key()), Some(t.value()))) {
            self.ledger.keep("iam-role", name, format!("not tagged {OWNER_TAG}={}", self.options.cluster));
            return Ok(());
        }
        if let Some(region) = self.other_region(role.tags()) {
            self.ledger.keep("iam-role", name, format!("{region}'s, tagged {REGION_TAG}={region}"));
            return Ok(());
        }
        let attached = self
            .iam
            .list_attached_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:ListAttachedRolePolicies", Some(name), e))?;
        let arns: Vec<String> =
            attached.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
        if self.ledger.may_mutate() {
            for arn in &arns {
                self.iam
                    .detach_role_policy()
                    .role_name(name)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:DetachRolePolicy", Some(name), e))?;
            }
            self.iam
                .delete_role()
                .role_name(name)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("iam:DeleteRole", Some(name), e))?;
        }
        self.ledger.record("iam-role", name, Action::Deleted, 1 + arns.len() as u32);
        Ok(())
    }

    /// The OIDC provider setup created for this cluster (tagged, and for this cluster's issuer when the cluster
    /// still says which); one that existed before setup is left alone, and so is one any remaining role trusts
    /// (another IRSA add-on of the cluster would stop working).
    async fn oidc_providers(&mut self) -> Result<(), CloudError> {
        let issuer = self.cluster_issuer().await?;
        let listed = self
            .iam
            .list_open_id_connect_providers()
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:ListOpenIDConnectProviders", None, e))?;
        for provider in listed.open_id_connect_provider_list() {
            let Some(arn) = provider.arn() else { continue };
            let tags =
                match self.iam.list_open_id_connect_provider_tags().open_id_connect_provider_arn(arn).send().await {
                    Ok(tags) => tags,
                    // Deleted since it was listed: nothing to do.
                    Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => continue,
                    Err(error) => {
                        return Err(CloudError::from_sdk("iam:ListOpenIDConnectProviderTags", Some(arn), error));
                    }
                };
            if !tags.tags().iter().any(|t| self.ours(Some(t.key()), Some(t.value()))) {
                continue;
            }
            if let Some(issuer) = &issuer
                && !arn.ends_with(&format!(":oidc-provider/{}", issuer.trim_start_matches("https://")))
            {
                self.ledger.keep("iam-oidc-provider", arn, format!("not this cluster's issuer {issuer}"));
                continue;
            }
            if let Some(role) = self.role_trusting(arn).await? {
                self.ledger.keep("iam-oidc-provider", arn, format!("role {role} trusts it"));
                continue;
            }
            if self.ledger.may_mutate() {
                self.iam
                    .delete_open_id_connect_provider()
                    .open_id_connect_provider_arn(arn)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam:DeleteOpenIDConnectProvider", Some(arn), e))?;
            }
            self.ledger.record("iam-oidc-provider", arn, Action::Deleted, 1);
        }
        Ok(())
    }

    /// A role (of any page) whose trust policy names the provider. Teardown has deleted its own roles by now.
    async fn role_trusting(&self, provider_arn: &str) -> Result<Option<String>, CloudError> {
        let mut pages = self.iam.list_roles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("iam:ListRoles", None, e))?;
            for role in page.roles() {
                let trust = role.assume_role_policy_document().unwrap_or_default();
                let decoded = percent_encoding::percent_decode_str(trust).decode_utf8_lossy();
                if decoded.contains(provider_arn) {
                    return Ok(Some(role.role_name().to_string()));
                }
            }
        }
        Ok(None)
    }

    /// The discovery tags setup added (marked by the set-by tag); tags someone else put stay.
    async fn discovery_tags(&mut self) -> Result<(), CloudError> {
        let marked = filter(&format!("tag:{DISCOVERY_SET_BY_TAG}"), &self.options.cluster);
        let subnets = self
            .ec2
            .describe_subnets()
            .filters(marked.clone())
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeSubnets", None, e))?;
        let groups = self
            .ec2
            .describe_security_groups()
            .filters(marked)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeSecurityGroups", None, e))?;
        let ids: Vec<(&'static str, String)> = subnets
            .subnets()
            .iter()
            // Subnets setup created go whole, below.
            .filter(|s| !s.tags().iter().any(|t| self.ours(t.key(), t.value())))
            .filter_map(|s| Some(("subnet-discovery-tag", s.subnet_id()?.to_string())))
            .chain(
                groups
                    .security_groups()
                    .iter()
                    .filter_map(|g| Some(("security-group-discovery-tag", g.group_id()?.to_string()))),
            )
            .collect();
        for (kind, id) in ids {
            if self.ledger.may_mutate() {
                self.ec2
                    .delete_tags()
                    .resources(&id)
                    .tags(aws_sdk_ec2::types::Tag::builder().key(DISCOVERY_TAG).build())
                    .tags(aws_sdk_ec2::types::Tag::builder().key(DISCOVERY_SET_BY_TAG).build())
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("ec2:DeleteTags", Some(&id), e))?;
            }
            self.ledger.record(kind, id, Action::Deleted, 1);
        }
        Ok(())
    }

    /// Subnets setup created, once no network interface is left in them.
    /// The network interfaces in a subnet, with the instance each is attached to.
    async fn interfaces_in(&self, subnet: &str) -> Result<Vec<(String, Option<String>)>, CloudError> {
        let mut pages = self
            .ec2
            .describe_network_interfaces()
            .filters(filter("subnet-id", subnet))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeNetworkInterfaces", Some(subnet), e))?;
            for interface in page.network_interfaces() {
                let Some(id) = interface.network_interface_id() else { continue };
                let instance = interface.attachment().and_then(|a| a.instance_id()).map(str::to_string);
                found.push((id.to_string(), instance));
            }
        }
        Ok(found)
    }

    /// Whether every interface is attached to an instance that is shutting down or terminated.
    async fn all_of_terminated_instances(&self, interfaces: &[(String, Option<String>)]) -> Result<bool, CloudError> {
        let instances: Option<Vec<String>> = interfaces.iter().map(|(_, instance)| instance.clone()).collect();
        let Some(mut instances) = instances else { return Ok(false) };
        instances.sort();
        instances.dedup();
        let states = self.instance_states(&instances).await?;
        Ok(states.iter().all(|s| matches!(s, Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated))))
    }

    async fn subnets(&mut self) -> Result<(), CloudError> {
        let subnets = self
            .ec2
            .describe_subnets()
            .filters(filter(&format!("tag:{OWNER_TAG}"), &self.options.cluster))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeSubnets", None, e))?;
        let deadline = tokio::time::Instant::now() + INTERFACE_WAIT;
        for subnet in subnets.subnets() {
            let Some(id) = subnet.subnet_id() else { continue };
            let in_use = loop {
                let in_use = self.interfaces_in(id).await?;
                // EC2 releases a terminated instance's interfaces a little after it: those are waited for (a
                // bounded time); any other interface keeps the subnet at once.
                let releasing = self.ledger.may_mutate() && self.all_of_terminated_instances(&in_use).await?;
                if in_use.is_empty() || !releasing || tokio::time::Instant::now() >= deadline {
                    break in_use;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            if !in_use.is_empty() {
                let ids: Vec<&str> = in_use.iter().map(|(interface, _)| interface.as_str()).collect();
                self.ledger.keep("subnet", id, format!("still holds network interfaces {}", ids.join(", ")));
                continue;
            }
            if self.ledger.may_mutate() {
                self.ec2
                    .delete_subnet()
                    .subnet_id(id)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("ec2:DeleteSubnet", Some(id), e))?;
            }
            self.ledger.record("subnet", id, Action::Deleted, 1);
        }
        Ok(())
    }
}
