//! `nodesmith teardown` against the sandbox's AWS (moto): after setup (and some controller-made resources), it
//! leaves nothing tagged for the cluster, and leaves alone another cluster's resources and untagged look-alikes.
//! Needs `make sandbox-up` (run by `make test`).

mod support;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{
    Filter, InstanceStateName, InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use nodesmith::bootstrap::setup;
use nodesmith::bootstrap::teardown;
use nodesmith_sandbox::seed::{Environment, seed};
use serde_json::Value;
use support::{Sandbox, setup_options, unique_name};

/// Who made a template and its instances: nodesmith's controller marks its own with the owner tag; Karpenter's carry
/// the same cluster and node pool tags without it.
#[derive(Clone, Copy, PartialEq)]
enum Maker {
    Nodesmith,
    Karpenter,
}

/// What a controller would have launched for a node pool of `cluster`: a tagged template and `count` instances.
async fn controller_made(
    sandbox: &Sandbox,
    cluster: &str,
    subnet: &str,
    maker: Maker,
    count: i32,
) -> Result<(String, Vec<String>)> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let tags = |resource| {
        let spec = TagSpecification::builder()
            .resource_type(resource)
            .tags(Tag::builder().key(format!("kubernetes.io/cluster/{cluster}")).value("owned").build())
            .tags(Tag::builder().key("karpenter.sh/nodepool").value("default").build());
        match maker {
            Maker::Nodesmith => spec.tags(Tag::builder().key("nodesmith.io/cluster").value(cluster).build()),
            Maker::Karpenter => {
                spec.tags(Tag::builder().key("karpenter.k8s.aws/ec2nodeclass").value("default").build())
            }
        }
        .build()
    };
    let name = match maker {
        Maker::Nodesmith => unique_name(&format!("nodesmith/{cluster}/lt")),
        Maker::Karpenter => unique_name(&format!("karpenter.k8s.aws/{cluster}")),
    };
    let template = ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(RequestLaunchTemplateData::builder().image_id("ami-12c6146b").build())
        .tag_specifications(tags(ResourceType::LaunchTemplate))
        .send()
        .await?;
    let template_id = template.launch_template().and_then(|t| t.launch_template_id()).context("template")?.to_string();
    if count == 0 {
        return Ok((template_id, Vec::new()));
    }
    let instances = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(InstanceType::M5Large)
        .min_count(count)
        .max_count(count)
        .subnet_id(subnet)
        .tag_specifications(tags(ResourceType::Instance))
        .send()
        .await?;
    let ids = instances.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect();
    Ok((template_id, ids))
}

async fn instance_state(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<InstanceStateName>> {
    let described = ec2.describe_instances().instance_ids(id).send().await?;
    Ok(described.reservations().iter().flat_map(|r| r.instances()).next().and_then(|i| i.state()?.name().cloned()))
}

async fn template_exists(ec2: &aws_sdk_ec2::Client, id: &str) -> bool {
    // AWS answers NotFound for a deleted template, moto an empty list.
    ec2.describe_launch_templates().launch_template_ids(id).send().await.is_ok_and(|t| !t.launch_templates().is_empty())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn teardown_removes_everything_of_the_cluster_and_nothing_else() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let gone = unique_name("teardown");
    let other = unique_name("teardown-other");
    let look_alike = unique_name("teardown-lookalike");
    seed(&sandbox.sdk, &Environment::named(&gone, Some(&format!("{gone}-vpc")))).await?;
    seed(&sandbox.sdk, &Environment::named(&other, Some(&format!("{other}-vpc")))).await?;
    setup::run(&sandbox.sdk, &setup_options(&sandbox, &gone)).await?;
    setup::run(&sandbox.sdk, &setup_options(&sandbox, &other)).await?;
    // The instance runs in one of the /22 subnets setup made: teardown deletes that subnet once EC2 has released
    // the instance's interface, a little after terminating it (the sandbox, like AWS, takes a few seconds).
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let made = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:nodesmith.io/cluster").values(&gone).build())
        .send()
        .await?;
    let subnet = made.subnets().first().and_then(|s| s.subnet_id()).context("setup made no subnet")?.to_string();
    let (template_id, instance_ids) = controller_made(&sandbox, &gone, &subnet, Maker::Nodesmith, 1).await?;
    let instance_id = instance_ids.first().context("an instance")?.clone();

    // Untagged resources with the names setup would give a third cluster.
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let sqs = aws_sdk_sqs::Client::new(&sandbox.sdk);
    iam.create_role()
        .role_name(support::names(&look_alike).node_role)
        .assume_role_policy_document(nodesmith::bootstrap::policies::node_trust_policy().to_string())
        .send()
        .await?;
    sqs.create_queue().queue_name(format!("nodesmith-{look_alike}")).send().await?;

    // NodePools: one labelled for the torn-down cluster, one for the other (the sandbox's clusters share one API
    // server; a real cluster has its own). Neither's EC2NodeClass exists, so no controller acts on them.
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(sandbox.kube.clone());
    for crd in nodesmith::apis::crds::all() {
        let name = crd.crd.metadata.name.clone().context("CRD name")?;
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("nodesmith-tests").force(),
            &kube::api::Patch::Apply(&crd.crd),
        )
        .await?;
    }
    let pools: kube::Api<nodesmith::apis::nodepool::NodePool> = kube::Api::all(sandbox.kube.clone());
    for cluster in [&gone, &other] {
        let pool: nodesmith::apis::nodepool::NodePool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": cluster, "labels": {"nodesmith.io/cluster": cluster}},
            "spec": {"template": {"spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": format!("{cluster}-absent")},
                "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]}}},
        }))?;
        support::wait_until("the NodePool CRD to serve", std::time::Duration::from_secs(30), || async {
            match pools.create(&kube::api::PostParams::default(), &pool).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
        .await?;
    }

    // Through the command line, as a user runs it, holding only `nodesmith operator-policy`.
    let (operator, _) = support::iam::operator(&sandbox).await?;
    let output = support::nodesmith()?
        .args(["teardown", "--cluster", &gone, "--yes", "--output", "json"])
        .envs(operator)
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert!(report["deleted"].as_array().is_some_and(|d| d.len() > 10), "{report}");

    // Nothing of the torn-down cluster is left...
    assert!(iam.get_role().role_name(support::names(&gone).node_role).send().await.is_err());
    assert!(iam.get_role().role_name(support::names(&gone).controller_role).send().await.is_err());
    assert!(iam.get_instance_profile().instance_profile_name(support::names(&gone).node_role).send().await.is_err());
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{gone}")).send().await.is_err());
    let events = aws_sdk_eventbridge::Client::new(&sandbox.sdk);
    assert!(events.describe_rule().name(format!("spot-interruption-nodesmith-{gone}")).send().await.is_err());
    let owned_subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:nodesmith.io/cluster").values(&gone).build())
        .send()
        .await?;
    assert!(owned_subnets.subnets().is_empty(), "subnets left: {report}");
    let discovered = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:karpenter.sh/discovery").values(&gone).build())
        .send()
        .await?;
    assert!(discovered.subnets().is_empty(), "discovery tags left");
    assert_eq!(instance_state(&ec2, &instance_id).await?, Some(InstanceStateName::Terminated));
    assert!(!template_exists(&ec2, &template_id).await, "launch template left");

    // The node role's aws-auth mapping went with it; the other cluster's stays.
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(sandbox.kube.clone(), "kube-system");
    let aws_auth = config_maps.get("aws-auth").await?;
    let map_roles = aws_auth.data.and_then(|d| d.get("mapRoles").cloned()).unwrap_or_default();
    assert!(!map_roles.contains(&format!("role/{}\n", support::names(&gone).node_role)), "{map_roles}");
    assert!(map_roles.contains(&format!("role/{}\n", support::names(&other).node_role)), "{map_roles}");

    // Its NodePool went first; the other cluster's stays.
    assert!(
        pools.get_opt(&gone).await?.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "{gone}'s NodePool left"
    );
    assert!(pools.get_opt(&other).await?.is_some(), "the other cluster's NodePool was deleted");
    pools.delete(&other, &Default::default()).await?;

    // ...and everything of the other cluster and the look-alikes is.
    assert!(iam.get_role().role_name(support::names(&other).node_role).send().await.is_ok());
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{other}")).send().await.is_ok());
    let teardown_look_alike = teardown::run(&sandbox.sdk, &support::teardown_without_kubernetes(&look_alike)).await?;
    assert!(teardown_look_alike.resources.iter().all(|r| r.action != nodesmith::bootstrap::report::Action::Deleted));
    assert!(iam.get_role().role_name(support::names(&look_alike).node_role).send().await.is_ok());
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{look_alike}")).send().await.is_ok());

    // Re-running is safe and finds nothing to do.
    let again = teardown::run(&sandbox.sdk, &support::teardown_without_kubernetes(&gone)).await?;
    assert_eq!(again.changes, 0, "{:?}", again.resources);
    Ok(())
}

/// Teardown reads every page, and leaves what is not nodesmith's even where it carries the cluster's tags:
/// Karpenter's instances and templates of the same cluster name, and an OIDC provider another role still trusts.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn teardown_pages_through_everything_and_leaves_neighbours_alone() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let cluster = unique_name("teardown-pages");
    let seeded = seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
    setup::run(&sandbox.sdk, &setup_options(&sandbox, &cluster)).await?;
    let subnet = seeded["subnet_ids"][0].as_str().context("subnet")?;
    // More than one page (teardown asks for 100 a page) of instances and of templates.
    let (_, ours) = controller_made(&sandbox, &cluster, subnet, Maker::Nodesmith, 105).await?;
    let mut our_templates = Vec::new();
    for _ in 0..101 {
        our_templates.push(controller_made(&sandbox, &cluster, subnet, Maker::Nodesmith, 0).await?.0);
    }
    let (karpenter_template, karpenter_instances) =
        controller_made(&sandbox, &cluster, subnet, Maker::Karpenter, 1).await?;
    let karpenter_instance = karpenter_instances.first().context("an instance")?.clone();

    // Another IRSA add-on of the cluster trusts the OIDC provider setup made.
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let mut provider = None;
    for listed in iam.list_open_id_connect_providers().send().await?.open_id_connect_provider_list() {
        let arn = listed.arn().context("an ARN")?;
        let tags = iam.list_open_id_connect_provider_tags().open_id_connect_provider_arn(arn).send().await?;
        if tags.tags().iter().any(|t| t.key() == "nodesmith.io/cluster" && t.value() == cluster) {
            provider = Some(arn.to_string());
        }
    }
    let provider = provider.context("setup's OIDC provider")?;
    let add_on = unique_name("ebs-csi");
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Federated": provider}, "Action": "sts:AssumeRoleWithWebIdentity"}]});
    iam.create_role().role_name(&add_on).assume_role_policy_document(trust.to_string()).send().await?;

    let ledger = teardown::run(&sandbox.sdk, &support::teardown_without_kubernetes(&cluster)).await?;
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    for id in &ours {
        assert_eq!(instance_state(&ec2, id).await?, Some(InstanceStateName::Terminated), "{id} left running");
    }
    for id in &our_templates {
        assert!(!template_exists(&ec2, id).await, "{id} left");
    }
    assert_eq!(instance_state(&ec2, &karpenter_instance).await?, Some(InstanceStateName::Running));
    assert!(template_exists(&ec2, &karpenter_template).await, "Karpenter's template was deleted");
    let kept = |kind: &str, id: &str| {
        ledger.resources.iter().any(|r| {
            r.kind == kind && r.id == id && r.action == nodesmith::bootstrap::report::Action::Kept && r.note.is_some()
        })
    };
    assert!(kept("ec2-instance", &karpenter_instance), "Karpenter's instance is reported as kept");
    assert!(kept("ec2-launch-template", &karpenter_template));
    assert!(kept("iam-oidc-provider", &provider), "{:?}", ledger.resources);
    let providers = iam.list_open_id_connect_providers().send().await?;
    assert!(providers.open_id_connect_provider_list().iter().any(|p| p.arn() == Some(provider.as_str())));

    ec2.terminate_instances().instance_ids(&karpenter_instance).send().await?;
    ec2.delete_launch_template().launch_template_id(&karpenter_template).send().await?;
    iam.delete_role().role_name(&add_on).send().await?;
    iam.delete_open_id_connect_provider().open_id_connect_provider_arn(&provider).send().await?;
    Ok(())
}

#[test]
fn teardown_off_a_terminal_refuses_without_yes() {
    let output = support::nodesmith_binary()
        .args(["teardown", "--cluster", "demo"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pass --yes"), "{stderr}");
}

/// IAM is global: the same cluster name set up in two regions of one account gets two sets of roles, policies and
/// instance profiles; tearing down one region leaves the other's whole, and setup of the remaining one then has
/// nothing to change. A role whose trust lets in another cluster's issuer is never adopted.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn the_same_cluster_name_in_two_regions_is_set_up_and_torn_down_independently() -> Result<()> {
    use nodesmith::bootstrap::report::Action;
    use nodesmith::cloud::resource_names::ClusterNames;
    let sandbox = Sandbox::connect().await?;
    let cluster = unique_name("two-regions");
    let east_sdk = sandbox.sdk.clone();
    let east = east_sdk.region().context("the sandbox's region")?.to_string();
    let west = if east == "us-west-2" { "eu-west-1" } else { "us-west-2" };
    let west_sdk = sandbox.sdk.to_builder().region(aws_config::Region::new(west)).build();
    for sdk in [&east_sdk, &west_sdk] {
        seed(sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
        setup::run(sdk, &setup_options(&sandbox, &cluster)).await?;
    }
    let (east_names, west_names) =
        (ClusterNames::for_cluster(&cluster, &east), ClusterNames::for_cluster(&cluster, west));
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let trust_of = |role: String| {
        let iam = iam.clone();
        async move {
            let role = iam.get_role().role_name(role).send().await?.role.context("no role")?;
            let document = role.assume_role_policy_document().context("no trust policy")?.to_string();
            anyhow::Ok(percent_encoding::percent_decode_str(&document).decode_utf8()?.to_string())
        }
    };
    let east_issuer = aws_sdk_eks::Client::new(&east_sdk).describe_cluster().name(&cluster).send().await?;
    let east_issuer = east_issuer
        .cluster()
        .and_then(|c| c.identity()?.oidc()?.issuer())
        .context("no issuer")?
        .trim_start_matches("https://")
        .to_string();
    assert!(trust_of(east_names.controller_role.clone()).await?.contains(&east_issuer));
    assert!(!trust_of(west_names.controller_role.clone()).await?.contains(&east_issuer), "west trusts its own");

    // The west controller, resolving a class's `role`, finds the west's profile (tagged for its region) and uses it.
    let west_class_profile =
        nodesmith::cloud::instance_profile::ensure_for_role(&iam, &cluster, west, "default", &west_names.node_role)
            .await?;
    assert_eq!(west_class_profile, west_names.instance_profile);

    // Tearing down the east leaves the west whole...
    let report = teardown::run(&east_sdk, &support::teardown_without_kubernetes(&cluster)).await?;
    assert!(
        report.resources.iter().any(|r| r.id == west_class_profile && r.action == Action::Kept),
        "the west's profile was not reported kept: {:?}",
        report.resources
    );
    for role in [&east_names.node_role, &east_names.controller_role] {
        assert!(iam.get_role().role_name(role).send().await.is_err(), "{role} left");
    }
    for role in [&west_names.node_role, &west_names.controller_role] {
        assert!(iam.get_role().role_name(role).send().await.is_ok(), "{role} deleted");
    }
    assert!(iam.get_instance_profile().instance_profile_name(&west_names.instance_profile).send().await.is_ok());
    let west_sqs = aws_sdk_sqs::Client::new(&west_sdk);
    assert!(west_sqs.get_queue_url().queue_name(&west_names.queue).send().await.is_ok());
    // ...so that setup there has nothing to change.
    let again = setup::run(&west_sdk, &setup_options(&sandbox, &cluster)).await?;
    let changed: Vec<_> = again.resources.iter().filter(|r| r.action != Action::Unchanged).collect();
    assert!(changed.is_empty(), "setup in {west} changed {changed:?}");

    // A west controller role that trusts another issuer (say the cluster was recreated) is refused, not rewritten.
    let foreign = nodesmith::bootstrap::policies::irsa_trust_policy(
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example/id/OTHER",
        "https://oidc.eks.example/id/OTHER",
        "nodesmith",
        "nodesmith",
    );
    iam.update_assume_role_policy()
        .role_name(&west_names.controller_role)
        .policy_document(foreign.to_string())
        .send()
        .await?;
    let refused = setup::run(&west_sdk, &setup_options(&sandbox, &cluster)).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("trusts arn:aws:iam::123456789012:oidc-provider/oidc.eks.example/id/OTHER"), "{message}");
    assert!(trust_of(west_names.controller_role.clone()).await?.contains("OTHER"), "the trust was rewritten");

    let report = teardown::run(&west_sdk, &support::teardown_without_kubernetes(&cluster)).await?;
    assert!(report.resources.iter().any(|r| r.id == west_class_profile && r.action == Action::Deleted));
    for role in [&west_names.node_role, &west_names.controller_role] {
        assert!(iam.get_role().role_name(role).send().await.is_err(), "{role} left");
    }
    Ok(())
}
