//! `nodesmith teardown` against the sandbox's AWS (moto): after setup (and some controller-made resources), it
//! leaves nothing tagged for the cluster, and leaves alone another cluster's resources and untagged look-alikes.
//! Needs `make sandbox-up` (run by `make test`).

mod support;

use std::process::Command;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{
    Filter, InstanceStateName, InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use nodesmith::bootstrap::setup;
use nodesmith::bootstrap::teardown::{self, TeardownOptions};
use nodesmith_sandbox::seed::{Environment, seed};
use serde_json::Value;
use support::{Sandbox, setup_options, unique_name};

/// What the controller would have launched for a node pool of `cluster`: a tagged template and instance.
async fn controller_made(sandbox: &Sandbox, cluster: &str, subnet: &str) -> Result<(String, String)> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let tags = |resource| {
        TagSpecification::builder()
            .resource_type(resource)
            .tags(Tag::builder().key(format!("kubernetes.io/cluster/{cluster}")).value("owned").build())
            .tags(Tag::builder().key("karpenter.sh/nodepool").value("default").build())
            .build()
    };
    let template = ec2
        .create_launch_template()
        .launch_template_name(format!("nodesmith-{cluster}-lt"))
        .launch_template_data(RequestLaunchTemplateData::builder().image_id("ami-12c6146b").build())
        .tag_specifications(tags(ResourceType::LaunchTemplate))
        .send()
        .await?;
    let template_id = template.launch_template().and_then(|t| t.launch_template_id()).context("template")?.to_string();
    let instances = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .tag_specifications(tags(ResourceType::Instance))
        .send()
        .await?;
    let instance_id = instances.instances().first().and_then(|i| i.instance_id()).context("instance")?.to_string();
    Ok((template_id, instance_id))
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn teardown_removes_everything_of_the_cluster_and_nothing_else() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let gone = unique_name("teardown");
    let other = unique_name("teardown-other");
    let look_alike = unique_name("teardown-lookalike");
    let seeded = seed(&sandbox.sdk, &Environment::named(&gone, Some(&format!("{gone}-vpc")))).await?;
    seed(&sandbox.sdk, &Environment::named(&other, Some(&format!("{other}-vpc")))).await?;
    setup::run(&sandbox.sdk, &setup_options(&sandbox, &gone)).await?;
    setup::run(&sandbox.sdk, &setup_options(&sandbox, &other)).await?;
    let subnet = seeded["subnet_ids"][0].as_str().context("subnet")?;
    let (template_id, instance_id) = controller_made(&sandbox, &gone, subnet).await?;

    // Untagged resources with the names setup would give a third cluster.
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let sqs = aws_sdk_sqs::Client::new(&sandbox.sdk);
    iam.create_role()
        .role_name(format!("nodesmith-node-{look_alike}"))
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

    // Through the command line, as a user runs it.
    let output = Command::new(env!("CARGO_BIN_EXE_nodesmith"))
        .args(["teardown", "--cluster", &gone, "--yes", "--output", "json"])
        .envs(support::sandbox_env()?)
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert!(report["deleted"].as_array().is_some_and(|d| d.len() > 10), "{report}");

    // Nothing of the torn-down cluster is left...
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    assert!(iam.get_role().role_name(format!("nodesmith-node-{gone}")).send().await.is_err());
    assert!(iam.get_role().role_name(format!("nodesmith-controller-{gone}")).send().await.is_err());
    assert!(iam.get_instance_profile().instance_profile_name(format!("nodesmith-node-{gone}")).send().await.is_err());
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{gone}")).send().await.is_err());
    let events = aws_sdk_eventbridge::Client::new(&sandbox.sdk);
    assert!(events.describe_rule().name(format!("spot-interruption-nodesmith-{gone}")).send().await.is_err());
    let owned_subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:nodesmith.io/cluster").values(&gone).build())
        .send()
        .await?;
    assert!(owned_subnets.subnets().is_empty());
    let discovered = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:karpenter.sh/discovery").values(&gone).build())
        .send()
        .await?;
    assert!(discovered.subnets().is_empty(), "discovery tags left");
    let instance = ec2.describe_instances().instance_ids(&instance_id).send().await?;
    let state = instance.reservations()[0].instances()[0].state().and_then(|s| s.name()).cloned();
    assert_eq!(state, Some(InstanceStateName::Terminated));
    // AWS answers NotFound for a deleted template, moto an empty list: either way it is gone.
    let template = ec2.describe_launch_templates().launch_template_ids(&template_id).send().await;
    assert!(template.map_or(true, |t| t.launch_templates().is_empty()), "launch template left");

    // The node role's aws-auth mapping went with it; the other cluster's stays.
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(sandbox.kube.clone(), "kube-system");
    let aws_auth = config_maps.get("aws-auth").await?;
    let map_roles = aws_auth.data.and_then(|d| d.get("mapRoles").cloned()).unwrap_or_default();
    assert!(!map_roles.contains(&format!("role/nodesmith-node-{gone}\n")), "{map_roles}");
    assert!(map_roles.contains(&format!("role/nodesmith-node-{other}\n")), "{map_roles}");

    // Its NodePool went first; the other cluster's stays.
    assert!(
        pools.get_opt(&gone).await?.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "{gone}'s NodePool left"
    );
    assert!(pools.get_opt(&other).await?.is_some(), "the other cluster's NodePool was deleted");
    pools.delete(&other, &Default::default()).await?;

    // ...and everything of the other cluster and the look-alikes is.
    assert!(iam.get_role().role_name(format!("nodesmith-node-{other}")).send().await.is_ok());
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{other}")).send().await.is_ok());
    let teardown_look_alike = teardown::run(
        &sandbox.sdk,
        &TeardownOptions {
            cluster: look_alike.clone(),
            dry_run: false,
            kube: Err("none".into()),
            skip_kubernetes: true,
            progress: None,
        },
    )
    .await?;
    assert!(teardown_look_alike.resources.iter().all(|r| r.action != nodesmith::bootstrap::report::Action::Deleted));
    assert!(iam.get_role().role_name(format!("nodesmith-node-{look_alike}")).send().await.is_ok());
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{look_alike}")).send().await.is_ok());

    // Re-running is safe and finds nothing to do.
    let again = teardown::run(
        &sandbox.sdk,
        &TeardownOptions {
            cluster: gone.clone(),
            dry_run: false,
            kube: Err("none".into()),
            skip_kubernetes: true,
            progress: None,
        },
    )
    .await?;
    assert_eq!(again.changes, 0, "{:?}", again.resources);
    Ok(())
}

#[test]
fn teardown_off_a_terminal_refuses_without_yes() {
    let output = Command::new(env!("CARGO_BIN_EXE_nodesmith"))
        .args(["teardown", "--cluster", "demo"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pass --yes"), "{stderr}");
}
