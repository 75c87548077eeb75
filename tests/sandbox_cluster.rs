//! The sandbox's Kubernetes side, end to end: the real scheduler, controller-manager and KWOK, with moto
//! instances turned into Nodes by the registrar. Needs `make sandbox-up` (run by `make test`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{
    Filter, InstanceType, LaunchTemplateSpecification, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use base64::Engine;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};
use support::{Sandbox, unique_name, wait_until};

const TEST_LABEL: &str = "sandbox.nodesmith.dev/test";
const NODE_WAIT: Duration = Duration::from_secs(60);
// Orphaned pods are collected by the controller-manager's pod GC after its 40 s quarantine.
const RESCHEDULE_WAIT: Duration = Duration::from_secs(180);

/// Launches `count` instances tagged for the cluster and for this test.
async fn run_instances(
    sandbox: &Sandbox,
    test_id: &str,
    instance_type: InstanceType,
    count: i32,
    launch_template: Option<&str>,
) -> Result<Vec<String>> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:Name").values("demo-private-*").build())
        .send()
        .await?;
    let subnet_id =
        subnets.subnets().first().and_then(|s| s.subnet_id()).context("no demo subnet: was the sandbox seeded?")?;
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let mut request = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(instance_type)
        .min_count(count)
        .max_count(count)
        .subnet_id(subnet_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag(&format!("kubernetes.io/cluster/{}", sandbox.cluster), "owned"))
                .tags(tag(TEST_LABEL, test_id))
                .build(),
        );
    if let Some(template_id) = launch_template {
        request =
            request.launch_template(LaunchTemplateSpecification::builder().launch_template_id(template_id).build());
    }
    let reservation = request.send().await?;
    Ok(reservation.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect())
}

async fn terminate(sandbox: &Sandbox, instance_ids: &[String]) -> Result<()> {
    if instance_ids.is_empty() {
        return Ok(());
    }
    aws_sdk_ec2::Client::new(&sandbox.sdk)
        .terminate_instances()
        .set_instance_ids(Some(instance_ids.to_vec()))
        .send()
        .await?;
    Ok(())
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits for one Ready Node per instance, labelled for this test, and returns them.
async fn test_nodes(sandbox: &Sandbox, test_id: &str, count: usize) -> Result<Vec<Node>> {
    let nodes: Api<Node> = Api::all(sandbox.kube.clone());
    let selector = ListParams::default().labels(&format!("{TEST_LABEL}={test_id}"));
    wait_until(&format!("{count} Ready nodes for {test_id}"), NODE_WAIT, || async {
        let listed = nodes.list(&selector).await?.items;
        Ok((listed.len() == count && listed.iter().all(ready)).then_some(listed))
    })
    .await
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn unschedulable(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
    })
}

fn deployment(name: &str, test_id: &str, replicas: i32, cpu: &str) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    node_selector: Some(BTreeMap::from([(TEST_LABEL.to_string(), test_id.to_string())])),
                    termination_grace_period_seconds: Some(0),
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn pending_pods_run_on_a_registered_instance_and_return_to_pending_when_it_goes() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let namespace = sandbox.namespace("scheduling").await?;
    let test_id = unique_name("scheduling");
    let pods: Api<Pod> = Api::namespaced(sandbox.kube.clone(), &namespace);

    // Three pods of 1 CPU each: an m5.large has 2 vCPUs, 1930m allocatable, so one pod per node.
    Api::<Deployment>::namespaced(sandbox.kube.clone(), &namespace)
        .create(&PostParams::default(), &deployment("web", &test_id, 3, "1"))
        .await?;
    wait_until("3 pods Unschedulable per the scheduler", Duration::from_secs(60), || async {
        let listed = pods.list(&Default::default()).await?.items;
        Ok((listed.len() == 3 && listed.iter().all(unschedulable)).then_some(()))
    })
    .await?;

    let instances = run_instances(&sandbox, &test_id, InstanceType::M5Large, 3, None).await?;
    let nodes = test_nodes(&sandbox, &test_id, 3).await?;
    for node in &nodes {
        let labels = node.metadata.labels.as_ref().context("node labels")?;
        assert_eq!(labels["node.kubernetes.io/instance-type"], "m5.large");
        assert_eq!(labels["karpenter.sh/capacity-type"], "on-demand");
        let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()).context("providerID")?;
        assert!(instances.iter().any(|id| provider_id.ends_with(&format!("/{id}"))), "{provider_id}");
        // No user data: the ENI formula, as the EKS AMI would compute it (3 ENIs × 9 IPs + 2).
        let status = node.status.as_ref().context("status")?;
        assert_eq!(status.allocatable.as_ref().context("allocatable")?["pods"].0, "29");
    }

    let running = wait_until("3 pods Running on 3 distinct nodes", Duration::from_secs(60), || async {
        let listed = pods.list(&Default::default()).await?.items;
        let running: Vec<Pod> = listed.into_iter().filter(|p| phase(p) == "Running").collect();
        Ok((running.len() == 3).then_some(running))
    })
    .await?;
    let mut hosts: Vec<String> = running.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "each 1-CPU pod needs a node of its own: {hosts:?}");

    // The instance goes: its Node goes, and its pod comes back as a new Pending pod.
    let (gone, remaining) = instances.split_at(1);
    let gone_node = nodes
        .iter()
        .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()).is_some_and(|p| p.ends_with(&gone[0])))
        .and_then(|n| n.metadata.name.clone())
        .context("node of the terminated instance")?;
    terminate(&sandbox, gone).await?;
    let node_api: Api<Node> = Api::all(sandbox.kube.clone());
    wait_until("the terminated instance's Node to be deleted", NODE_WAIT, || async {
        Ok(node_api.get_opt(&gone_node).await?.is_none().then_some(()))
    })
    .await?;
    wait_until("2 pods Running and 1 Unschedulable", RESCHEDULE_WAIT, || async {
        let listed = pods.list(&Default::default()).await?.items;
        let live: Vec<&Pod> = listed.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let running = live.iter().filter(|p| phase(p) == "Running").count();
        let pending = live.iter().filter(|p| unschedulable(p)).count();
        Ok((live.len() == 3 && running == 2 && pending == 1).then_some(()))
    })
    .await?;

    terminate(&sandbox, remaining).await?;
    sandbox.delete_namespace(&namespace).await
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn node_pods_capacity_is_the_max_pods_of_the_launch_template_user_data() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    // One template per user-data dialect nodesmith writes, each with a max pods no formula would give.
    let dialects = [
        (
            "al2023",
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n\n--//\nContent-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: 17\n--//--\n",
            17,
        ),
        ("al2", "#!/bin/bash\n/etc/eks/bootstrap.sh demo --kubelet-extra-args '--max-pods=23'\n", 23),
        ("bottlerocket", "[settings.kubernetes]\ncluster-name = \"demo\"\nmax-pods = 41\n", 41),
    ];
    let mut launched = Vec::new();
    for (dialect, user_data, max_pods) in dialects {
        let test_id = unique_name(&format!("maxpods-{dialect}"));
        let template = ec2
            .create_launch_template()
            .launch_template_name(&test_id)
            .launch_template_data(
                RequestLaunchTemplateData::builder().image_id("ami-12c6146b").user_data(base64(user_data)).build(),
            )
            .send()
            .await?;
        let template_id = template.launch_template().and_then(|t| t.launch_template_id()).context("template id")?;
        let instances = run_instances(&sandbox, &test_id, InstanceType::M5Large, 1, Some(template_id)).await?;
        launched.push((test_id, instances, template_id.to_string(), max_pods));
    }
    for (test_id, instances, template_id, max_pods) in &launched {
        let node = test_nodes(&sandbox, test_id, 1).await?.remove(0);
        let status = node.status.context("status")?;
        assert_eq!(status.allocatable.context("allocatable")?["pods"].0, max_pods.to_string(), "{test_id}");
        assert_eq!(status.capacity.context("capacity")?["pods"].0, max_pods.to_string(), "{test_id}");
        terminate(&sandbox, instances).await?;
        ec2.delete_launch_template().launch_template_id(template_id).send().await?;
    }
    Ok(())
}

/// The cloud port sends terminations asked at about the same time to EC2 together (`cloud::batch`): each caller
/// gets its own answer, an id EC2 does not know among them fails nobody, and every live instance ends.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn terminations_asked_together_each_end_their_own_instance() -> Result<()> {
    use nodesmith::cloud::{AwsCloud, CloudProvider};

    let sandbox = Sandbox::connect().await?;
    let test_id = unique_name("terminate-together");
    let instances = run_instances(&sandbox, &test_id, InstanceType::T3Micro, 3, None).await?;
    assert_eq!(instances.len(), 3);
    let cloud = AwsCloud::new(&sandbox.sdk);
    let mut asked = instances.clone();
    asked.push("i-0123456789abcdef0".into());
    let answers =
        futures::future::join_all(asked.iter().map(|id| cloud.terminate_instances(std::slice::from_ref(id)))).await;
    for (id, answer) in asked.iter().zip(answers) {
        answer.with_context(|| format!("terminating {id}"))?;
    }
    let described = aws_sdk_ec2::Client::new(&sandbox.sdk)
        .describe_instances()
        .set_instance_ids(Some(instances.clone()))
        .send()
        .await?;
    let states: Vec<String> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| Some(i.state()?.name()?.as_str().to_string()))
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states.iter().all(|s| s == "shutting-down" || s == "terminated"), "{states:?}");
    Ok(())
}
