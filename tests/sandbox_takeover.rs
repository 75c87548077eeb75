//! Taking over from Karpenter: nodes Karpenter v1 made (its instance tags, NodeClaims and Nodes, labels,
//! annotations, finalizer and owner references) are nodesmith's once it starts in Karpenter's place, with nothing
//! launched and nothing terminated, and are disrupted later like its own. The test plays Karpenter's part by hand,
//! as its AWS provider and its registration controller leave each object. Needs `make sandbox-up`.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, ensure};
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::apis::nodepool::NodePool;
use nodesmith_sandbox::fault_proxy::FaultPlan;
use serde_json::json;
use support::controller::*;
use support::{Sandbox, wait_until};

/// Hashes as Karpenter v1 stamps them: its own algorithm and versions, which nodesmith cannot compare with its own.
const KARPENTER_NODEPOOL_HASH: (&str, &str) = ("6821555240504101244", "v3");
const KARPENTER_NODECLASS_HASH: (&str, &str) = ("15616957348189460630", "v4");

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn nodes_karpenter_made_are_adopted_without_a_launch_or_a_termination_and_disrupted_later() -> Result<()> {
    let test = ControllerTest::new("takeover").await?;
    // Empty nodes go at once: the adopted nodes stay only because pods run on them.
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "0s"});
    nodeclass_and_pool_with(&test.sandbox, &test.name, on_demand_general_purpose(), "1000", disruption).await?;
    let (aws_proxy, aws_log) = support::aws_fault_proxy(FaultPlan::default()).await?;
    test.run(async |t| {
        let (sandbox, test) = (&t.sandbox, &t.name);
        // Karpenter's two nodes, each running one of the workload's pods.
        let mut made = Vec::new();
        for zone in ["us-east-1a", "us-east-1b"] {
            made.push(karpenter_node(sandbox, test, zone).await?);
        }
        deployment(sandbox, &t.namespace, test, 2, "1", "1Gi").await?;
        wait_until("the workload Running on Karpenter's nodes", RUN_WAIT, || async {
            Ok((running_pods(sandbox, &t.namespace).await?.len() == 2).then_some(()))
        })
        .await?;

        let controller = t.start(Start { aws_endpoint: Some(&aws_proxy), ..Start::default() })?;
        // A whole garbage-collection pass (it lists the instances first and deletes unused launch templates last),
        // and the NodePool counting both nodes.
        let pools: Api<NodePool> = Api::all(sandbox.kube.clone());
        let gc_done = r#"karpenter_cloudprovider_duration_seconds_count{controller="nodeclaim.garbagecollection",method="DeleteLaunchTemplates",provider="aws"}"#;
        let seen = std::sync::Mutex::new(String::new());
        wait_until("a garbage-collection pass, and the NodePool counting the adopted nodes", RUN_WAIT, || async {
            let counted = pools.get(test).await?.status.and_then(|s| s.nodes);
            // Not listening yet while it starts.
            let passes = controller.metric(gc_done).await.unwrap_or_default();
            if let Ok(mut seen) = seen.lock() {
                *seen = format!("the NodePool counts {counted:?} nodes; garbage collection passed {passes} times");
            }
            Ok((counted == Some(2) && passes >= 1.0).then_some(()))
        })
        .await
        .with_context(|| seen.lock().map(|s| s.clone()).unwrap_or_default())?;

        let fleet_calls = aws_log.fleet_calls.lock().map(|c| c.len()).unwrap_or_default();
        ensure!(fleet_calls == 0, "{fleet_calls} CreateFleet calls for nodes that were already there");
        ensure!(aws_log.terminations.load(Ordering::Relaxed) == 0, "an adopted instance was terminated");
        let claims: Api<NodeClaim> = Api::all(sandbox.kube.clone());
        let nodes: Api<Node> = Api::all(sandbox.kube.clone());
        for adopted in &made {
            let claim = claims.get(&adopted.claim).await?;
            let status = claim.status.clone().unwrap_or_default();
            ensure!(status.provider_id.as_deref() == Some(adopted.provider_id.as_str()), "{} moved", adopted.claim);
            let condition = |kind: &str| status.conditions.iter().any(|c| c.type_ == kind && c.status == "True");
            ensure!(condition("Initialized") && !condition("Drifted"), "{}: {:?}", adopted.claim, status.conditions);
            // Stamped with nodesmith's hashes: later NodePool and EC2NodeClass changes show as drift, earlier ones
            // (Karpenter's hashes are not comparable) do not.
            let version = claim.annotations().get("karpenter.sh/nodepool-hash-version").cloned();
            ensure!(version.as_deref() == Some("nodesmith-v1"), "{} kept hash version {version:?}", adopted.claim);
            ensure!(nodes.get_opt(&adopted.node).await?.is_some(), "the Node {} is gone", adopted.node);
        }
        ensure!(live_instances(sandbox, test).await?.len() == 2, "an adopted instance is not running");

        // Later, like its own: one pod fewer leaves one node empty, which goes (drained, its instance terminated).
        let apps: Api<Deployment> = Api::namespaced(sandbox.kube.clone(), &t.namespace);
        apps.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await?;
        let left = wait_until("the emptied adopted node consolidated", RUN_WAIT, || async {
            let left = live_instances(sandbox, test).await?;
            Ok((left.len() == 1).then_some(left))
        })
        .await?;
        let terminated: BTreeSet<&str> = made
            .iter()
            .map(|m| m.instance_id.as_str())
            .filter(|id| !left.iter().any(|(instance, _)| instance == id))
            .collect();
        ensure!(terminated.len() == 1, "the instances left are {left:?}");
        ensure!(aws_log.terminations.load(Ordering::Relaxed) == 1, "more than the emptied instance was terminated");
        let fleet_calls = aws_log.fleet_calls.lock().map(|c| c.len()).unwrap_or_default();
        ensure!(fleet_calls == 0, "{fleet_calls} CreateFleet calls: the remaining pod needed no new node");
        Ok(())
    })
    .await
}

/// One node as Karpenter v1 on AWS leaves it once running: what it launched, what its registration wrote.
struct KarpenterNode {
    claim: String,
    instance_id: String,
    provider_id: String,
    node: String,
}

/// Makes the NodeClaim, the instance and (through the registrar, as a kubelet would) the Node of one Karpenter
/// node of the test's pool in `zone`, then writes what Karpenter's launch, tagging and registration write.
async fn karpenter_node(sandbox: &Sandbox, pool: &str, zone: &str) -> Result<KarpenterNode> {
    let pool_object = Api::<NodePool>::all(sandbox.kube.clone()).get(pool).await?;
    let claim = nodesmith::apis::planned_nodeclaim::fresh_name(pool);
    let instance_type = "m5.large";
    let labels = json!({
        "karpenter.sh/nodepool": pool,
        "karpenter.k8s.aws/ec2nodeclass": pool,
        TEST_LABEL: pool,
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/zone": zone,
        "karpenter.sh/capacity-type": "on-demand",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
    });
    let claims: Api<NodeClaim> = Api::all(sandbox.kube.clone());
    let object: NodeClaim = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {
            "name": claim,
            "labels": labels,
            "annotations": {
                "karpenter.sh/nodepool-hash": KARPENTER_NODEPOOL_HASH.0,
                "karpenter.sh/nodepool-hash-version": KARPENTER_NODEPOOL_HASH.1,
                "karpenter.k8s.aws/ec2nodeclass-hash": KARPENTER_NODECLASS_HASH.0,
                "karpenter.k8s.aws/ec2nodeclass-hash-version": KARPENTER_NODECLASS_HASH.1,
                "karpenter.k8s.aws/tagged": "true",
            },
            "finalizers": ["karpenter.sh/termination"],
            "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "name": pool,
                                 "uid": pool_object.uid(), "blockOwnerDeletion": true}],
        },
        "spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": pool},
            "requirements": [
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": [pool]},
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type, "m5.xlarge"]},
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            ],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi", "pods": "1"}},
            "expireAfter": "720h",
        },
    }))?;
    claims.create(&PostParams::default(), &object).await?;

    // Its CreateFleet's instance: the tags of Karpenter's launch, and those its tagging controller adds.
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let subnet = ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:karpenter.sh/discovery").values(&sandbox.cluster).build())
        .filters(Filter::builder().name("availability-zone").values(zone).build())
        .send()
        .await?
        .subnets()
        .first()
        .and_then(|s| s.subnet_id().map(str::to_string))
        .with_context(|| format!("no discovered subnet in {zone}"))?;
    let tags = [
        (format!("kubernetes.io/cluster/{}", sandbox.cluster), "owned".to_string()),
        ("eks:eks-cluster-name".into(), sandbox.cluster.clone()),
        ("karpenter.sh/nodepool".into(), pool.to_string()),
        ("karpenter.k8s.aws/ec2nodeclass".into(), pool.to_string()),
        ("karpenter.sh/nodeclaim".into(), claim.clone()),
    ];
    let mut instance_tags = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (key, value) in &tags {
        instance_tags = instance_tags.tags(Tag::builder().key(key).value(value).build());
    }
    let launched = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::M5Large)
        .subnet_id(&subnet)
        .min_count(1)
        .max_count(1)
        .tag_specifications(instance_tags.build())
        .send()
        .await?;
    let instance = launched.instances().first().context("RunInstances launched nothing")?;
    let instance_id = instance.instance_id().context("an instance without an id")?.to_string();
    let provider_id = format!("aws:///{zone}/{instance_id}");
    let launched_at = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |kind: &str| {
        json!({"type": kind, "status": "True", "reason": kind, "message": "",
                                        "lastTransitionTime": launched_at})
    };
    let capacity = json!({"cpu": "2", "memory": "7577Mi", "pods": "29", "ephemeral-storage": "20Gi"});
    let status = |extra: serde_json::Value| {
        let mut status = json!({"providerID": provider_id, "imageID": AMI, "capacity": capacity,
                                "allocatable": capacity, "conditions": [condition("Launched")]});
        if let (Some(status), Some(extra)) = (status.as_object_mut(), extra.as_object()) {
            status.extend(extra.clone());
        }
        json!({"status": status})
    };
    claims.patch_status(&claim, &PatchParams::default(), &Patch::Merge(status(json!({})))).await?;

    // The kubelet's Node (the registrar's), then what Karpenter's registration and initialization write on it.
    let nodes: Api<Node> = Api::all(sandbox.kube.clone());
    let node = wait_until("the registrar's Node for Karpenter's instance", RUN_WAIT, || async {
        let all = nodes.list(&Default::default()).await?.items;
        Ok(all.into_iter().find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(&provider_id)))
    })
    .await?;
    let claim_uid = claims.get(&claim).await?.uid();
    let registered = json!({"metadata": {
        "labels": {"karpenter.sh/registered": "true", "karpenter.sh/initialized": "true",
                   "karpenter.sh/nodepool": pool, TEST_LABEL: pool},
        "finalizers": ["karpenter.sh/termination"],
        "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "name": claim,
                             "uid": claim_uid, "blockOwnerDeletion": true}],
    }});
    nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(registered)).await?;
    let all_true = ["Launched", "Registered", "Initialized", "Ready"].map(condition);
    let conditions = json!({"nodeName": node.name_any(), "conditions": all_true});
    claims.patch_status(&claim, &PatchParams::default(), &Patch::Merge(status(conditions))).await?;
    ec2.create_tags()
        .resources(&instance_id)
        .tags(Tag::builder().key("Name").value(node.name_any()).build())
        .send()
        .await?;
    Ok(KarpenterNode { claim, instance_id, provider_id, node: node.name_any() })
}
