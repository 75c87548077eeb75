//! `nodesmith migrate from-cluster-autoscaler` in the sandbox: an EKS managed node group and a self-managed Auto
//! Scaling group in moto whose instances the registrar makes Nodes (the managed group's with the EKS node-group
//! label), a `cluster-autoscaler` Deployment, and a workload with a PodDisruptionBudget on the groups' nodes. The migration, killed after each change it makes and run again each
//! time, ends with Cluster Autoscaler at 0, the group at the two nodes kept, every pod Running on nodesmith's nodes,
//! and the budget never broken (sampled all along); `--rollback` then scales Cluster Autoscaler back and lifts the
//! taints. Needs `make sandbox-up`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_sdk_autoscaling::types::Tag as GroupTag;
use aws_sdk_ec2::types::{Filter, InstanceType, RequestLaunchTemplateData};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use nodesmith::names::{CONTROLLER_ONLY_TAINT_KEY, MIGRATION_TAINT_KEY};
use serde_json::json;
use support::controller::*;
use support::{Sandbox, wait_until};

const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// On every node of the test's groups (a tag the registrar copies), so that the shared sandbox's other nodes are
/// left out.
const GROUPS_LABEL: &str = "sandbox.nodesmith.dev/fromca";
const REPLICAS: usize = 6;
const MIN_AVAILABLE: usize = 5;

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn moving_off_cluster_autoscaler_keeps_the_budget_resumes_after_every_kill_and_rolls_back() -> Result<()> {
    let test = ControllerTest::new("fromca").await?;
    // A pool with no room yet: the workload starts on the groups' nodes only, and the migration raises the limits.
    nodeclass_and_pool(&test.sandbox, &test.name, on_demand_general_purpose(), "0").await?;
    test.start_controller()?;
    let autoscaler = format!("{}-ca", test.name);
    test.run(async |t| {
        let story = migration_story(&t.sandbox, &t.namespace, &t.name, &autoscaler).await;
        let cleaned = remove_groups_and_autoscaler(&t.sandbox, &t.name, &autoscaler).await;
        story.and(cleaned)
    })
    .await
}

async fn migration_story(sandbox: &Sandbox, namespace: &str, pool: &str, autoscaler: &str) -> Result<()> {
    // Cluster Autoscaler's world: an EKS managed node group and a self-managed group of two nodes each, its
    // Deployment, a workload with a budget on them.
    let managed = format!("{pool}-managed");
    let managed_group = managed_node_group(sandbox, pool, &managed).await?;
    let workers = format!("{pool}-workers");
    let cluster_tag = format!("kubernetes.io/cluster/{}", sandbox.cluster);
    create_group(sandbox, pool, &workers, 2, &[(cluster_tag.as_str(), "owned")]).await?;
    let nodes: Api<Node> = Api::all(sandbox.kube.clone());
    let selector = ListParams::default().labels(&format!("{GROUPS_LABEL}={pool}"));
    let group = pool;
    wait_until("the groups' four Nodes", RUN_WAIT, || async {
        Ok((nodes.list(&selector).await?.items.len() == 4).then_some(()))
    })
    .await?;
    let labelled = nodes.list(&ListParams::default().labels(&format!("{NODEGROUP_LABEL}={managed}"))).await?.items;
    ensure!(labelled.len() == 2, "{} Nodes carry the managed node group's label", labelled.len());
    let pause = json!({"name": "app", "image": "registry.k8s.io/pause:3.10",
                       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}});
    let ca: Deployment = serde_json::from_value(json!({
        "metadata": {"name": autoscaler},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": autoscaler}},
                 "template": {"metadata": {"labels": {"app": autoscaler}},
                              "spec": {"nodeSelector": {GROUPS_LABEL: group}, "containers": [pause]}}},
    }))?;
    Api::<Deployment>::namespaced(sandbox.kube.clone(), "kube-system").create(&PostParams::default(), &ca).await?;
    // The workload may run on the group's nodes or the pool's (nodesmith's), nowhere else in the shared sandbox.
    let anywhere_of_the_test = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [
        {"matchExpressions": [{"key": GROUPS_LABEL, "operator": "In", "values": [group]}]},
        {"matchExpressions": [{"key": TEST_LABEL, "operator": "In", "values": [pool]}]},
    ]}}});
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"affinity": anywhere_of_the_test, "containers": [{
                                  "name": "app", "image": "registry.k8s.io/pause:3.10",
                                  "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]}}},
    }))?;
    Api::<Deployment>::namespaced(sandbox.kube.clone(), namespace).create(&PostParams::default(), &web).await?;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": MIN_AVAILABLE, "selector": {"matchLabels": {"app": "web"}}},
    }))?;
    Api::<PodDisruptionBudget>::namespaced(sandbox.kube.clone(), namespace)
        .create(&PostParams::default(), &pdb)
        .await?;
    let pods: Api<Pod> = Api::namespaced(sandbox.kube.clone(), namespace);
    let group_nodes: Vec<String> = nodes.list(&selector).await?.items.iter().map(ResourceExt::name_any).collect();
    let last = std::sync::Mutex::new(Vec::new());
    wait_until("the workload Running on the groups' nodes", RUN_WAIT, || async {
        let list = pods.list(&ListParams::default()).await?.items;
        let on_groups = running(&list).iter().filter(|p| node_of(p).is_some_and(|n| group_nodes.contains(&n))).count();
        if let Ok(mut last) = last.lock() {
            *last = list.iter().map(|p| (p.name_any(), node_of(p), p.status.clone().and_then(|s| s.phase))).collect();
        }
        Ok((on_groups == REPLICAS).then_some(()))
    })
    .await
    .with_context(|| format!("the groups' nodes {group_nodes:?}; the pods {:?}", last.lock().map(|l| l.clone())))?;

    // The budget, sampled from here on: never fewer than MIN_AVAILABLE pods Running.
    let lowest = Arc::new(AtomicUsize::new(REPLICAS));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pods, lowest, sampling) = (pods.clone(), lowest.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    lowest.fetch_min(running(&list.items).len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let deployment = format!("kube-system/{autoscaler}");
    let args = ["migrate", "from-cluster-autoscaler", "--cluster", &sandbox.cluster, "--nodepool", pool];
    let args: Vec<&str> = args.iter().copied().chain(["--autoscaler", &deployment, "--drain-timeout", "3m"]).collect();

    // Without the NodePool setup --apply writes, it refuses, and says what to run.
    let refused = support::nodesmith()?
        .args(["migrate", "from-cluster-autoscaler", "--cluster", &sandbox.cluster, "--nodepool", "no-such-pool"])
        .args(["--autoscaler", &deployment])
        .output()?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success(), "it started without the NodePool");
    ensure!(said.contains(&format!("run `nodesmith setup --cluster {} --apply`", sandbox.cluster)), "{said}");
    ensure!(tainted(&nodes, MIGRATION_TAINT_KEY).await?.is_empty(), "the refused run tainted a node");

    // A dry run changes nothing and names every step.
    let dry = support::nodesmith()?.args(&args).args(["--dry-run", "--output", "json"]).output()?;
    ensure!(dry.status.success(), "the dry run failed: {}", String::from_utf8_lossy(&dry.stderr));
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout)?;
    let would_terminate = report["resources"]
        .as_array()
        .context("resources")?
        .iter()
        .filter(|r| r["kind"] == "ec2-instance" && r["action"] == "deleted")
        .count();
    ensure!(would_terminate == 2, "the dry run would terminate {would_terminate} instances, not 2: {report}");
    ensure!(tainted(&nodes, MIGRATION_TAINT_KEY).await?.is_empty(), "the dry run tainted a node");

    // Killed after each change it makes (each run resumes, makes the next change, and is killed in turn), until a
    // run goes to its end.
    let mut kills = Vec::new();
    loop {
        ensure!(kills.len() < 40, "no run finished after {} kills: {kills:#?}", kills.len());
        let mut run = support::nodesmith()?.args(&args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn()?;
        let stderr = run.stderr.take().context("stderr")?;
        // Read to the end (a closed pipe would end the run otherwise), passing on the lines that report a change.
        let (changes, first_change) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let changed =
                |l: &str| ["updated ", "created ", "deleted "].iter().any(|c| l.contains(&format!("migrate:   {c}")));
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if changed(&line) {
                    changes.send(line).ok();
                }
            }
        });
        // None: the run ended (the sender went with its stderr) without a change, or hung.
        let change = tokio::task::spawn_blocking(move || first_change.recv_timeout(Duration::from_secs(300)).ok());
        let change = change.await?;
        match change {
            Some(line) if run.try_wait()?.is_none() => {
                run.kill()?;
                run.wait()?;
                kills.push(line);
            }
            _ => {
                let status = run.wait()?;
                ensure!(
                    status.success(),
                    "the run after {} kills failed ({status}); killed after: {kills:#?}",
                    kills.len()
                );
                break;
            }
        }
    }
    // A run that changes something is killed, so the last one found nothing left to change.
    ensure!(kills.iter().any(|l| l.contains("drained")), "no run was killed after a drain: {kills:#?}");
    ensure!(kills.iter().any(|l| l.contains("limits raised")), "no run raised the NodePool's limits: {kills:#?}");
    ensure!(
        kills.iter().any(|l| l.contains("deleted ec2-instance")),
        "no run was killed after a termination: {kills:#?}"
    );

    let autoscaling = aws_sdk_autoscaling::Client::new(&sandbox.sdk);
    let described = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&managed_group)
        .auto_scaling_group_names(&workers)
        .send()
        .await?;
    let in_service: Vec<&str> = described
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter(|i| i.lifecycle_state().is_some_and(|s| s.as_str() == "InService"))
        .filter_map(|i| i.instance_id())
        .collect();
    let desired: i32 = described.auto_scaling_groups().iter().filter_map(|g| g.desired_capacity()).sum();
    ensure!(in_service.len() == 2 && desired == 2, "the groups hold {in_service:?}, desired {desired}");
    let replicas = Api::<Deployment>::namespaced(sandbox.kube.clone(), "kube-system")
        .get(autoscaler)
        .await?
        .spec
        .and_then(|s| s.replicas);
    ensure!(replicas == Some(0), "Cluster Autoscaler has {replicas:?} replicas");
    let ours: Vec<String> = nodes
        .list(&ListParams::default().labels(&format!("{TEST_LABEL}={pool}")))
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let list = wait_until("every pod Running on nodesmith's nodes", RUN_WAIT, || async {
        let list = pods.list(&ListParams::default()).await?.items;
        let on_ours = running(&list).iter().filter(|p| node_of(p).is_some_and(|n| ours.contains(&n))).count();
        Ok((on_ours == REPLICAS).then_some(list))
    })
    .await
    .with_context(|| format!("nodesmith's nodes: {ours:?}"))?;
    ensure!(running(&list).len() == REPLICAS, "pods: {:?}", list.iter().map(node_of).collect::<Vec<_>>());
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let lowest = lowest.load(Ordering::Relaxed);
    ensure!(lowest >= MIN_AVAILABLE, "only {lowest} pods ran at one point: the budget asks {MIN_AVAILABLE}");
    let kept: Vec<String> = nodes.list(&selector).await?.items.iter().map(ResourceExt::name_any).collect();
    ensure!(kept.len() == 2, "the group's nodes left: {kept:?}");
    ensure!(tainted(&nodes, MIGRATION_TAINT_KEY).await?.is_empty(), "a node kept the drain taint");
    let for_controller = tainted(&nodes, CONTROLLER_ONLY_TAINT_KEY).await?;
    ensure!(for_controller.len() == 2 && kept.iter().all(|k| for_controller.contains(k)), "{for_controller:?}");

    // Rolled back: Cluster Autoscaler at its replicas again, no taint left, the record gone.
    let back = support::nodesmith()?.args(&args).args(["--rollback", "--output", "json"]).output()?;
    ensure!(back.status.success(), "the rollback failed: {}", String::from_utf8_lossy(&back.stderr));
    let replicas = Api::<Deployment>::namespaced(sandbox.kube.clone(), "kube-system")
        .get(autoscaler)
        .await?
        .spec
        .and_then(|s| s.replicas);
    ensure!(replicas == Some(1), "after the rollback Cluster Autoscaler has {replicas:?} replicas");
    let record = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(sandbox.kube.clone(), "kube-system")
        .get_opt("nodesmith-migration-from-cluster-autoscaler")
        .await?;
    ensure!(record.is_none(), "the rollback left its record");
    for key in [MIGRATION_TAINT_KEY, CONTROLLER_ONLY_TAINT_KEY] {
        ensure!(tainted(&nodes, key).await?.is_empty(), "the rollback left {key} on a node");
    }
    Ok(())
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// Running and not being deleted.
fn running(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

async fn tainted(nodes: &Api<Node>, key: &str) -> Result<Vec<String>> {
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == key)))
        .map(ResourceExt::name_any)
        .collect())
}

/// An EKS managed node group of two m5.large (at least one), and the Auto Scaling group EKS makes for it: named as
/// DescribeNodegroup reports, tagged as EKS tags it (`eks:cluster-name`, `eks:nodegroup-name`, the cluster's
/// `kubernetes.io/cluster/` tag; its instances too). Returns the Auto Scaling group's name.
async fn managed_node_group(sandbox: &Sandbox, pool: &str, nodegroup: &str) -> Result<String> {
    let eks = aws_sdk_eks::Client::new(&sandbox.sdk);
    let role = format!("arn:aws:iam::{SANDBOX_ACCOUNT}:role/{}", support::names(&sandbox.cluster).node_role);
    eks.create_nodegroup()
        .cluster_name(&sandbox.cluster)
        .nodegroup_name(nodegroup)
        .node_role(role)
        .set_subnets(Some(subnets(sandbox).await?))
        .scaling_config(
            aws_sdk_eks::types::NodegroupScalingConfig::builder().min_size(1).max_size(3).desired_size(2).build(),
        )
        .instance_types("m5.large")
        .send()
        .await?;
    let described = eks.describe_nodegroup().cluster_name(&sandbox.cluster).nodegroup_name(nodegroup).send().await?;
    let group = described
        .nodegroup()
        .and_then(|n| n.resources())
        .and_then(|r| r.auto_scaling_groups().first())
        .and_then(|g| g.name())
        .context("the node group names no Auto Scaling group")?
        .to_string();
    let cluster_tag = format!("kubernetes.io/cluster/{}", sandbox.cluster);
    let tags = [
        ("eks:cluster-name", sandbox.cluster.as_str()),
        ("eks:nodegroup-name", nodegroup),
        (cluster_tag.as_str(), "owned"),
    ];
    create_group(sandbox, pool, &group, 1, &tags).await?;
    Ok(group)
}

async fn subnets(sandbox: &Sandbox) -> Result<Vec<String>> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let subnets: Vec<String> = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:karpenter.sh/discovery").values(&sandbox.cluster).build())
        .send()
        .await?
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .collect();
    ensure!(!subnets.is_empty(), "no discovered subnet");
    Ok(subnets)
}

/// An Auto Scaling group of two m5.large from a launch template of its name, in the discovered subnets, with
/// `tags` and the test's label tag (its instances carry them all; the registrar makes them Nodes). At least
/// `min_size`: the migration lowers it where it must.
async fn create_group(sandbox: &Sandbox, pool: &str, group: &str, min_size: i32, tags: &[(&str, &str)]) -> Result<()> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    ec2.create_launch_template()
        .launch_template_name(group)
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id(AMI).instance_type(InstanceType::M5Large).build(),
        )
        .send()
        .await?;
    let tag = |key: &str, value: &str| {
        GroupTag::builder()
            .key(key)
            .value(value)
            .propagate_at_launch(true)
            .resource_id(group)
            .resource_type("auto-scaling-group")
            .build()
    };
    let mut create = aws_sdk_autoscaling::Client::new(&sandbox.sdk)
        .create_auto_scaling_group()
        .auto_scaling_group_name(group)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(group)
                .version("$Latest")
                .build(),
        )
        .min_size(min_size)
        .max_size(4)
        .desired_capacity(2)
        .vpc_zone_identifier(subnets(sandbox).await?.join(","))
        .tags(tag(GROUPS_LABEL, pool));
    for (key, value) in tags {
        create = create.tags(tag(key, value));
    }
    create.send().await?;
    Ok(())
}

/// The test's groups (and their instances), launch templates and node group, and the Cluster Autoscaler
/// Deployment, whatever the story did.
async fn remove_groups_and_autoscaler(sandbox: &Sandbox, pool: &str, autoscaler: &str) -> Result<()> {
    let autoscaling = aws_sdk_autoscaling::Client::new(&sandbox.sdk);
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let groups = autoscaling.describe_auto_scaling_groups().send().await?;
    for group in groups.auto_scaling_groups() {
        let ours = group.tags().iter().any(|t| t.key() == Some(GROUPS_LABEL) && t.value() == Some(pool));
        let Some(name) = group.auto_scaling_group_name().filter(|_| ours) else { continue };
        autoscaling.delete_auto_scaling_group().auto_scaling_group_name(name).force_delete(true).send().await.ok();
        ec2.delete_launch_template().launch_template_name(name).send().await.ok();
    }
    let eks = aws_sdk_eks::Client::new(&sandbox.sdk);
    let nodegroup = format!("{pool}-managed");
    eks.delete_nodegroup().cluster_name(&sandbox.cluster).nodegroup_name(nodegroup).send().await.ok();
    let deployments: Api<Deployment> = Api::namespaced(sandbox.kube.clone(), "kube-system");
    deployments.delete(autoscaler, &DeleteParams::default()).await.ok();
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(sandbox.kube.clone(), "kube-system");
    configmaps.delete("nodesmith-migration-from-cluster-autoscaler", &DeleteParams::default()).await.ok();
    let nodes: Api<Node> = Api::all(sandbox.kube.clone());
    let selector = ListParams::default().labels(&format!("{GROUPS_LABEL}={pool}"));
    wait_until("the groups' Nodes gone", RUN_WAIT, || async {
        Ok(nodes.list(&selector).await?.items.is_empty().then_some(()))
    })
    .await
}
