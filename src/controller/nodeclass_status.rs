//! EC2NodeClass status: the subnets, security groups and AMIs its selector terms find, and its instance profile,
//! refreshed every minute; `ValidationSucceeded` when nodesmith honours every field it sets (`nodeclass_validation`).
//! `Ready` only when it is valid and all four are resolved; the provisioner plans only for ready classes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::NodeSelectorRequirement;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::leader::Leadership;
use super::nodeclass_validation as validation;
use super::state::Subscription;
use super::{Context, Error, conditions, events};
use crate::apis::ec2nodeclass::EC2NodeClass;

/// The label an alias's NVIDIA and standard images are told apart by.
const GPU_MANUFACTURER_LABEL: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
use crate::cloud::nodeclass::{AmiVariant, ImageInfo, SelectorTerm};
use crate::cloud::{CloudProvider, nodeclass as resolve};

/// The `controller` label of this module's cloud calls.
const CONTROLLER: &str = "nodeclass";
const REFRESH: Duration = Duration::from_secs(60);
const NOT_READY_RETRY: Duration = Duration::from_secs(10);
const VALIDATION_SUCCEEDED: &str = "ValidationSucceeded";

pub struct Reconciler {
    pub ctx: Arc<Context>,
    pub leadership: Leadership,
}

pub async fn run(ctx: Arc<Context>, leadership: Leadership, nodeclasses: Subscription<EC2NodeClass>) {
    Controller::for_shared_stream(nodeclasses, ctx.state.nodeclasses.clone())
        .run(
            |class, r: Arc<Reconciler>| super::measured(r.ctx.metrics.clone(), CONTROLLER, reconcile(class, r)),
            error_policy,
            Arc::new(Reconciler { ctx, leadership }),
        )
        .for_each(|_| async {})
        .await;
}

fn error_policy(class: Arc<EC2NodeClass>, error: &Error, _: Arc<Reconciler>) -> Action {
    tracing::warn!(ec2nodeclass = %class.name_any(), "status refresh failed, retrying: {error}");
    Action::requeue(NOT_READY_RETRY)
}

/// The images an alias names: per architecture, the standard image and, where the family publishes one, the
/// NVIDIA variant (`al2023@latest` → the SSM parameters of each). A missing NVIDIA parameter is not an error.
async fn alias_images(ctx: &Context, alias: &str) -> Result<(Vec<ImageInfo>, Vec<String>), Error> {
    let family = alias.split_once('@').map_or(alias, |(family, _)| family);
    let mut images = Vec::new();
    let mut missing = Vec::new();
    for arch in ["amd64", "arm64"] {
        for variant in [AmiVariant::Nvidia, AmiVariant::Standard] {
            let Some(parameter) = resolve::alias_parameter(alias, &ctx.cluster.kubernetes_version, arch, variant)
            else {
                if variant == AmiVariant::Nvidia {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "unknown AMI alias family {family:?} (use al2023, al2 or bottlerocket)"
                )));
            };
            match ctx.cloud(CONTROLLER).image_from_parameter(&parameter).await? {
                Some(id) => images.push(ImageInfo {
                    id,
                    name: alias.to_string(),
                    arch: arch.into(),
                    creation_date: String::new(),
                    variant: Some(variant),
                }),
                None if variant == AmiVariant::Standard => missing.push(parameter),
                None => {}
            }
        }
    }
    Ok((images, missing))
}

/// `status.amis`: each image with the requirements an instance type must meet to boot it, Karpenter's way.
/// An alias's NVIDIA image is for NVIDIA GPU types, its standard image for every other type.
pub fn ami_statuses(images: &[ImageInfo]) -> Vec<serde_json::Value> {
    images
        .iter()
        .map(|image| {
            let mut requirements = vec![NodeSelectorRequirement {
                key: "kubernetes.io/arch".into(),
                operator: "In".into(),
                values: Some(vec![image.arch.clone()]),
            }];
            let nvidia = || Some(vec!["nvidia".to_string()]);
            match image.variant {
                Some(AmiVariant::Nvidia) => requirements.push(NodeSelectorRequirement {
                    key: GPU_MANUFACTURER_LABEL.into(),
                    operator: "In".into(),
                    values: nvidia(),
                }),
                Some(AmiVariant::Standard) => requirements.push(NodeSelectorRequirement {
                    key: GPU_MANUFACTURER_LABEL.into(),
                    operator: "NotIn".into(),
                    values: nvidia(),
                }),
                None => {}
            }
            json!({"id": image.id, "name": image.name, "requirements": requirements})
        })
        .collect()
}

async fn reconcile(class: Arc<EC2NodeClass>, r: Arc<Reconciler>) -> Result<Action, Error> {
    if !r.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let ctx = &r.ctx;
    let name = class.name_any();
    let spec = &class.spec;

    let subnet_terms: Vec<SelectorTerm> = spec
        .subnet_selector_terms
        .iter()
        .map(|t| SelectorTerm { id: t.id.clone(), tags: t.tags.clone(), ..Default::default() })
        .collect();
    let subnets = ctx.cloud(CONTROLLER).subnets(&subnet_terms).await?;

    let group_terms: Vec<SelectorTerm> = spec
        .security_group_selector_terms
        .iter()
        .map(|t| SelectorTerm { id: t.id.clone(), name: t.name.clone(), tags: t.tags.clone(), ..Default::default() })
        .collect();
    let groups = ctx.cloud(CONTROLLER).security_groups(&group_terms).await?;

    let mut images = Vec::new();
    let mut missing_parameters = Vec::new();
    let mut image_terms = Vec::new();
    for term in &spec.ami_selector_terms {
        if let Some(alias) = &term.alias {
            let (found, missing) = alias_images(ctx, alias).await?;
            images.extend(found);
            missing_parameters.extend(missing);
        } else if let Some(parameter) = &term.ssm_parameter {
            // The parameter names the image; the image itself is then described like an `id` term.
            match ctx.cloud(CONTROLLER).image_from_parameter(parameter).await? {
                Some(id) => image_terms.push(SelectorTerm { id: Some(id), ..Default::default() }),
                None => missing_parameters.push(parameter.clone()),
            }
        } else {
            image_terms.push(SelectorTerm {
                id: term.id.clone(),
                name: term.name.clone(),
                owner: term.owner.clone(),
                tags: term.tags.clone(),
            });
        }
    }
    if !image_terms.is_empty() {
        images.extend(ctx.cloud(CONTROLLER).images(&image_terms).await?);
    }

    let profile = match (&spec.instance_profile, &spec.role) {
        (Some(profile), _) => Ok(profile.clone()),
        (None, Some(role)) => {
            match ctx.cloud(CONTROLLER).ensure_instance_profile(&ctx.settings.cluster_name, &name, role).await {
                Ok(profile) => Ok(profile),
                // A throttled or unanswered call says nothing about the class (as for the subnets above): the status
                // stays as it was, so launches go on, and the refresh is tried again.
                Err(error) if error.is_transient() => return Err(error.into()),
                // An answer about the request (no such role, a denied call) is the operator's to fix: said here.
                Err(error) => Err(error.to_string()),
            }
        }
        (None, None) => Err("neither role nor instanceProfile is set".to_string()),
    };

    let mut conds = class.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let problems = validation::problems(&class);
    let valid = problems.is_empty();
    let validation_message = problems.join("; ");
    let said_before = conds.iter().any(|c| c.type_ == VALIDATION_SUCCEEDED && c.message == validation_message);
    if !valid && !said_before {
        let note = format!("nothing launches from this EC2NodeClass: {validation_message}");
        events::publish(
            &ctx.recorder,
            &class.object_ref(&()),
            EventType::Warning,
            "ValidationFailed",
            "Validate",
            &note,
        )
        .await;
        tracing::warn!(ec2nodeclass = %name, "{note}");
    }
    conditions::set(
        &mut conds,
        VALIDATION_SUCCEEDED,
        valid,
        if valid { "ValidationSucceeded" } else { validation::UNSUPPORTED },
        &validation_message,
    );
    let subnets_ready = !subnets.is_empty();
    let groups_ready = !groups.is_empty();
    let images_ready = !images.is_empty();
    conditions::set(
        &mut conds,
        "SubnetsReady",
        subnets_ready,
        if subnets_ready { "SubnetsReady" } else { "SubnetsNotFound" },
        if subnets_ready { "" } else { "no subnet matches subnetSelectorTerms" },
    );
    conditions::set(
        &mut conds,
        "SecurityGroupsReady",
        groups_ready,
        if groups_ready { "SecurityGroupsReady" } else { "SecurityGroupsNotFound" },
        if groups_ready { "" } else { "no security group matches securityGroupSelectorTerms" },
    );
    let ami_message = if images_ready {
        String::new()
    } else if !missing_parameters.is_empty() {
        format!("no AMI found: SSM parameter(s) {} do not exist", missing_parameters.join(", "))
    } else {
        "no AMI matches amiSelectorTerms".to_string()
    };
    conditions::set(
        &mut conds,
        "AMIsReady",
        images_ready,
        if images_ready { "AMIsReady" } else { "AMINotFound" },
        &ami_message,
    );
    let (profile_ready, profile_message) = match &profile {
        Ok(_) => (true, String::new()),
        Err(message) => (false, message.clone()),
    };
    conditions::set(
        &mut conds,
        "InstanceProfileReady",
        profile_ready,
        if profile_ready { "InstanceProfileReady" } else { "InstanceProfileNotReady" },
        &profile_message,
    );
    let ready = valid && subnets_ready && groups_ready && images_ready && profile_ready;
    let not_ready: Vec<&str> = [
        (valid, VALIDATION_SUCCEEDED),
        (subnets_ready, "SubnetsReady"),
        (groups_ready, "SecurityGroupsReady"),
        (images_ready, "AMIsReady"),
        (profile_ready, "InstanceProfileReady"),
    ]
    .iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, c)| *c)
    .collect();
    conditions::set(
        &mut conds,
        "Ready",
        ready,
        if ready { "Ready" } else { "NotReady" },
        &if ready { String::new() } else { format!("not ready: {}", not_ready.join(", ")) },
    );

    let amis = ami_statuses(&images);
    let status = json!({
        "subnets": subnets.iter().map(|s| json!({"id": s.id, "zone": s.zone, "zoneID": s.zone_id})).collect::<Vec<_>>(),
        "securityGroups": groups.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
        "amis": amis,
        "instanceProfile": profile.ok(),
        "conditions": conds,
    });
    if ctx.settings.observe {
        // Written nowhere: kept for this controller's own planning (`observe`).
        let status = serde_json::from_value(status)
            .map_err(|e| Error::Invalid(format!("EC2NodeClass {name}: the resolved status does not parse: {e}")))?;
        ctx.state.observe_nodeclass_status(&name, status);
        return Ok(Action::requeue(if ready { REFRESH } else { NOT_READY_RETRY }));
    }
    let api: Api<EC2NodeClass> = Api::all(ctx.kube.clone());
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(Action::requeue(if ready { REFRESH } else { NOT_READY_RETRY }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::nodeclass::{SecurityGroupInfo, SubnetInfo};
    use crate::controller::testing;

    fn class() -> EC2NodeClass {
        testing::object(json!({
            "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "default"},
            "spec": {"role": "NodeRole", "amiSelectorTerms": [{"id": "ami-1"}],
                     "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}],
                     "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}]},
        }))
    }

    /// A cloud where the class's subnet, security group and image exist, and a reconciler over it that keeps what it
    /// resolves in its caches (observing) instead of writing it.
    fn reconciler(cloud: &Arc<FakeCloud>) -> Arc<Reconciler> {
        cloud.subnets.lock().expect("subnets").push(SubnetInfo {
            id: "subnet-1".into(),
            zone: "us-east-1a".into(),
            zone_id: "use1-az1".into(),
            available_ips: 250,
        });
        cloud
            .security_groups
            .lock()
            .expect("groups")
            .push(SecurityGroupInfo { id: "sg-1".into(), name: "nodes".into() });
        cloud.images.lock().expect("images").push(ImageInfo {
            id: "ami-1".into(),
            name: "al2023".into(),
            arch: "amd64".into(),
            creation_date: "2026-11-01T00:00:00Z".into(),
            variant: None,
        });
        let ctx = testing::observing_context(cloud.clone(), testing::state(vec![], vec![class()]));
        Arc::new(Reconciler { ctx, leadership: Leadership::without_lease() })
    }

    /// The status the reconciler resolved for the class, if any: (condition type, status, message) for each.
    fn conditions_of(r: &Reconciler) -> Option<Vec<(String, String, String)>> {
        let status = r.ctx.state.nodeclass("default")?.status.clone()?;
        Some(status.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.message.clone())).collect())
    }

    #[tokio::test]
    async fn a_throttled_instance_profile_call_leaves_the_status_as_it_was() {
        let cloud = Arc::new(FakeCloud::default());
        let r = reconciler(&cloud);
        cloud.fail_next("EnsureInstanceProfile", "Throttling");
        let outcome = reconcile(Arc::new(class()), r.clone()).await;
        assert!(matches!(&outcome, Err(Error::Cloud(error)) if error.code() == "Throttling"), "{outcome:?}");
        assert_eq!(conditions_of(&r), None, "nothing resolved is kept from a refresh that was not answered");

        // The next refresh is answered: Ready.
        reconcile(Arc::new(class()), r.clone()).await.expect("resolved");
        let conditions = conditions_of(&r).expect("a status");
        assert!(conditions.contains(&("Ready".into(), "True".into(), String::new())), "{conditions:?}");
    }

    #[tokio::test]
    async fn a_role_iam_does_not_know_is_said_in_the_status() {
        let cloud = Arc::new(FakeCloud::default());
        let r = reconciler(&cloud);
        cloud.fail_next("EnsureInstanceProfile", "NoSuchEntity");
        reconcile(Arc::new(class()), r.clone()).await.expect("an answer, said in the status");
        let conditions = conditions_of(&r).expect("a status");
        let profile = conditions.iter().find(|(kind, _, _)| kind == "InstanceProfileReady").expect("the condition");
        assert_eq!(profile.1, "False");
        assert!(profile.2.contains("NoSuchEntity"), "{profile:?}");
        assert!(
            conditions.contains(&("Ready".into(), "False".into(), "not ready: InstanceProfileReady".into())),
            "{conditions:?}"
        );
    }
}
