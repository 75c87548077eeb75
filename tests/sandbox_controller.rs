//! `nodesmith controller` end to end in the sandbox: the real binary against moto and the real control plane,
//! with KWOK as the kubelets and the registrar turning instances into Nodes. Needs `make sandbox-up`.
//!
//! The tests of this file share one cluster (`demo`, the one the registrar serves) and each runs its own
//! controller process, so they take turns: each runs in a `ControllerTest`, which also cleans up after it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use nodesmith::apis::ec2nodeclass::EC2NodeClass;
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::apis::nodepool::NodePool;
use nodesmith::catalog::embedded_instance_types;
use nodesmith::catalog::max_pods::MaxPodsSettings;
use nodesmith::catalog::resources::{ResourceName, parse_quantity};
use nodesmith::cloud::instances::instance_id_from_provider_id;
use nodesmith_sandbox::fault_proxy::FaultPlan;
use nodesmith_sandbox::user_data::mime_parts;
use std::sync::atomic::Ordering;
use support::controller::*;
use support::{Sandbox, unique_name, wait_until};

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_deployment_gets_nodes_launched_registered_and_running() -> Result<()> {
    let test = ControllerTest::new("ctl-deploy").await?;
    rendered_nodeclass_and_pool(&test.sandbox, &test.name).await?;
    let controller = test.start_controller()?;
    let sdk = test.sandbox.sdk.clone();
    let mut launched = Vec::new();
    test.run(async |t| {
        launched = deployment_story(&t.sandbox, &t.namespace, &t.name).await?;
        nodepool_columns_story(&t.sandbox, &t.name).await?;
        status_story(&t.sandbox, &t.name).await?;
        prices_story(&t.sandbox, &controller, &t.name).await
    })
    .await?;
    // Deleting the NodeClaims (the fixture's clean-up) drained and terminated: no instance of the test is left
    // running.
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let described = ec2.describe_instances().set_instance_ids(Some(launched)).send().await?;
    for instance in described.reservations().iter().flat_map(|r| r.instances()) {
        let state = instance.state().and_then(|s| s.name()).map(|s| s.as_str().to_string()).unwrap_or_default();
        if state != "terminated" && state != "shutting-down" {
            bail!("instance {:?} is still {state}", instance.instance_id());
        }
    }
    Ok(())
}

/// 10 pods of 1 CPU and 1 GiB get nodes; returns the instances launched.
async fn deployment_story(sandbox: &Sandbox, namespace: &str, test: &str) -> Result<Vec<String>> {
    let (sandbox, namespace, test) = (sandbox, namespace.to_string(), test.to_string());
    deployment(sandbox, &namespace, &test, 10, "1", "1Gi").await?;
    wait_until("10 pods Running on launched nodes", RUN_WAIT, || async {
        Ok((running_pods(sandbox, &namespace).await?.len() == 10).then_some(()))
    })
    .await?;

    let claims = initialized_nodeclaims(sandbox, &test).await?;
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let nodes: Api<Node> = Api::all(sandbox.kube.clone());
    let mut pods_on_claims = 0;
    for claim in &claims {
        let status = claim.status.as_ref().context("NodeClaim without status")?;
        let provider_id = status.provider_id.as_deref().context("NodeClaim without providerID")?;
        let instance_id = instance_id_from_provider_id(provider_id).context("providerID names no instance")?;

        // The instance, as EC2 reports it, carries every tag of the launch.
        let described = ec2.describe_instances().instance_ids(instance_id).send().await?;
        let instance = described.reservations()[0].instances()[0].clone();
        let tags: BTreeMap<&str, &str> = instance.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))).collect();
        assert_eq!(tags.get("kubernetes.io/cluster/demo"), Some(&"owned"));
        assert_eq!(tags.get("eks:eks-cluster-name"), Some(&"demo"));
        assert_eq!(tags.get("karpenter.sh/nodepool"), Some(&test.as_str()));
        assert_eq!(tags.get("karpenter.sh/nodeclaim"), Some(&claim.name_any().as_str()));
        assert_eq!(tags.get("karpenter.k8s.aws/ec2nodeclass"), Some(&test.as_str()));
        assert!(tags.contains_key("Name"));
        assert_eq!(instance.image_id(), Some(AL2023_X86_AMI), "al2023@latest for amd64, through SSM");

        // The Node registered for it: the NodeClaim's labels, our finalizer, and the pod density of its type.
        let node = nodes.get(status.node_name.as_deref().context("NodeClaim without node")?).await?;
        let labels = node.labels();
        let instance_type = labels.get("node.kubernetes.io/instance-type").context("no instance type label")?;
        assert_eq!(labels.get(TEST_LABEL), Some(&test));
        assert_eq!(labels.get("karpenter.sh/nodepool"), Some(&test));
        // Spot is preferred when the pool allows both, and the label says what EC2 launched.
        let lifecycle =
            if instance.instance_lifecycle().is_some_and(|l| l.as_str() == "spot") { "spot" } else { "on-demand" };
        assert_eq!(labels.get("karpenter.sh/capacity-type").map(String::as_str), Some(lifecycle));
        assert_eq!(lifecycle, "spot");
        assert!(["c", "m", "r"].iter().any(|c| instance_type.starts_with(c)), "{instance_type}");
        assert!(node.finalizers().iter().any(|f| f == "karpenter.sh/termination"));
        let info = embedded_instance_types().iter().find(|t| &t.name == instance_type).context("unknown type")?;
        let pods_capacity = node.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("pods"));
        assert_eq!(
            pods_capacity.map(|q| q.0.clone()),
            Some(info.max_pods(MaxPodsSettings::default()).to_string()),
            "{instance_type}: pod capacity from the user data's maxPods"
        );
        pods_on_claims += running_pods(sandbox, &namespace)
            .await?
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.name_any().as_str()))
            .count();
    }
    assert_eq!(pods_on_claims, 10, "every pod runs on a node the controller launched");

    Ok(claims
        .iter()
        .filter_map(|c| c.status.as_ref()?.provider_id.as_deref().and_then(instance_id_from_provider_id))
        .map(str::to_string)
        .collect())
}

/// `kubectl get nodepools -o wide` shows what Karpenter's shows: the pool's nodes, Ready, its CPU and memory.
async fn nodepool_columns_story(sandbox: &Sandbox, pool: &str) -> Result<()> {
    let env = support::sandbox_env()?;
    let kubectl = std::path::Path::new(env.get("NODESMITH_SANDBOX_BIN").context("NODESMITH_SANDBOX_BIN is not set")?)
        .join("kubectl");
    let nodes = nodes_of(sandbox, pool).await?.len().to_string();
    let mut last = String::new();
    let shown = wait_until("kubectl get nodepools to show the pool's nodes, Ready and resources", RUN_WAIT, || {
        let output =
            std::process::Command::new(&kubectl).envs(&env).args(["get", "nodepools", pool, "-o", "wide"]).output();
        last = output.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let table = last.clone();
        let nodes = nodes.clone();
        async move {
            let mut lines = table.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            let column = |name: &str| header.iter().position(|h| *h == name).and_then(|i| row.get(i)).copied();
            let filled = |name: &str| column(name).is_some_and(|v| v != "<none>");
            Ok((column("NODES") == Some(nodes.as_str())
                && column("READY") == Some("True")
                && filled("CPU")
                && filled("MEMORY"))
            .then_some(()))
        }
    })
    .await;
    shown.with_context(|| format!("kubectl get nodepools -o wide printed:\n{last}"))
}

/// `nodesmith status` shows the pool's nodes by type, what its 10 pods of 1 CPU request of their allocatable,
/// its cost, and the disruptions its default budget (10%) allows.
async fn status_story(sandbox: &Sandbox, pool: &str) -> Result<()> {
    let nodes = nodes_of(sandbox, pool).await?;
    let output = support::nodesmith()?.args(["status", "--nodepool", pool, "--output", "json"]).output()?;
    ensure!(output.status.success(), "status failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let row = &report["nodepools"][0];
    assert_eq!(row["name"], pool, "{report}");
    assert_eq!(row["nodes"], nodes.len(), "{report}");
    let by_type: u64 =
        row["instance_types"].as_array().context("types")?.iter().filter_map(|t| t["nodes"].as_u64()).sum();
    assert_eq!(by_type, nodes.len() as u64, "{report}");
    let allocatable: f64 = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.allocatable.as_ref()?.get("cpu"))
        .filter_map(|q| parse_quantity(&q.0, ResourceName::Cpu).ok())
        .map(|millicores| millicores as f64 / 1000.0)
        .sum();
    let cpu = &row["cpu"];
    assert!((cpu["allocatable"].as_f64().unwrap_or_default() - allocatable).abs() < 1e-6, "{report}");
    assert!(cpu["requested"].as_f64().unwrap_or_default() >= 10.0, "10 pods of 1 CPU: {report}");
    assert!(row["usd_per_hour"].as_f64().unwrap_or_default() > 0.0, "{report}");
    // 10% of the pool's nodes, rounded up, none disrupting.
    let allowed = nodes.len().div_ceil(10);
    assert_eq!(row["disruptions_allowed"]["underutilized"], allowed, "{report}");
    assert_eq!(report["pending_pods"].as_array().map(Vec::len), Some(0), "{report}");
    Ok(())
}

/// The controller prices offerings as the sandbox's AWS does: spot from the spot price history of the zone,
/// on-demand from the Pricing API, and says so in its metrics.
async fn prices_story(sandbox: &Sandbox, controller: &ControllerProcess, pool: &str) -> Result<()> {
    // Prices are read in the background after start (the Pricing API takes seconds to page through), and the
    // nodes may be up before they are: wait until the controller says both reads were taken.
    for (capacity_type, source) in [("spot", "spot-price-history"), ("on-demand", "pricing-api")] {
        let sample = format!(r#"nodesmith_offering_prices{{capacity_type="{capacity_type}",source="{source}"}}"#);
        wait_until(&format!("{sample} to count the prices read"), RUN_WAIT, || async {
            Ok((controller.metric(&sample).await.unwrap_or_default() > 100.0).then_some(()))
        })
        .await?;
    }
    for node in nodes_of(sandbox, pool).await? {
        let labels = node.labels();
        let label = |key: &str| labels.get(key).cloned().with_context(|| format!("node without {key}"));
        let (instance_type, zone) = (label("node.kubernetes.io/instance-type")?, label("topology.kubernetes.io/zone")?);
        let spot = format!(
            r#"karpenter_cloudprovider_instance_type_offering_price_estimate{{instance_type="{instance_type}",capacity_type="spot",zone="{zone}"}}"#
        );
        let expected = support::prices::spot_price_in_history(&sandbox.sdk, &zone, &instance_type).await?;
        let exported = controller.metric(&spot).await?;
        assert!((exported - expected).abs() < 1e-9, "{spot} is {exported}: the history says {expected}");
        let on_demand = spot.replace(r#"capacity_type="spot""#, r#"capacity_type="on-demand""#);
        let listed = support::prices::list_price(&sandbox.sdk, "us-east-1", &instance_type).await?;
        let exported = controller.metric(&on_demand).await?;
        assert!((exported - listed).abs() < 1e-9, "{on_demand} is {exported}: the Pricing API says {listed}");
    }
    Ok(())
}

async fn nodes_of(sandbox: &Sandbox, pool: &str) -> Result<Vec<Node>> {
    let api: Api<Node> = Api::all(sandbox.kube.clone());
    Ok(api.list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}"))).await?.items)
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn nodepool_architecture_capacity_type_and_limits_are_obeyed() -> Result<()> {
    let test = ControllerTest::new("ctl-arm").await?;
    let sandbox = &test.sandbox;
    let on_demand = serde_json::json!({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]});
    let general =
        serde_json::json!({"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]});
    let arm = test.name.clone();
    nodeclass_and_pool(
        sandbox,
        &arm,
        serde_json::json!([on_demand, general, {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]),
        "1000",
    )
    .await?;
    let (spot, spot_namespace) = test.another_pool("ctl-spot").await?;
    nodeclass_and_pool(
        sandbox,
        &spot,
        serde_json::json!([
            general,
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        ]),
        "1000",
    )
    .await?;
    let (limited, limited_namespace) = test.another_pool("ctl-limited").await?;
    nodeclass_and_pool(
        sandbox,
        &limited,
        serde_json::json!([on_demand, general, {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]),
        "4",
    )
    .await?;
    let namespaces = [test.namespace.clone(), spot_namespace, limited_namespace];
    test.start_controller()?;
    test.run(async |t| constraints_story(&t.sandbox, &namespaces, [&arm, &spot, &limited]).await).await
}

async fn constraints_story(sandbox: &Sandbox, namespaces: &[String; 3], pools: [&String; 3]) -> Result<()> {
    let [arm, spot, limited] = pools;
    deployment(sandbox, &namespaces[0], arm, 2, "500m", "512Mi").await?;
    deployment(sandbox, &namespaces[1], spot, 2, "500m", "512Mi").await?;
    deployment(sandbox, &namespaces[2], limited, 6, "1", "1Gi").await?;
    wait_until("the arm64 and spot pods Running", RUN_WAIT, || async {
        let arm_running = running_pods(sandbox, &namespaces[0]).await?.len();
        let spot_running = running_pods(sandbox, &namespaces[1]).await?.len();
        Ok((arm_running == 2 && spot_running == 2).then_some(()))
    })
    .await?;
    for node in nodes_of(sandbox, arm).await? {
        assert_eq!(node.labels().get("kubernetes.io/arch").map(String::as_str), Some("arm64"), "{}", node.name_any());
    }
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let spot_nodes = nodes_of(sandbox, spot).await?;
    assert!(!spot_nodes.is_empty());
    for node in &spot_nodes {
        assert_eq!(node.labels().get("karpenter.sh/capacity-type").map(String::as_str), Some("spot"));
        let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()).context("no providerID")?;
        let id = instance_id_from_provider_id(provider_id).context("not an instance")?;
        let described = ec2.describe_instances().instance_ids(id).send().await?;
        let lifecycle = described.reservations()[0].instances()[0].instance_lifecycle().map(|l| l.as_str().to_string());
        assert_eq!(lifecycle.as_deref(), Some("spot"), "EC2 launched {id} as spot");
    }

    // The limited pool: 4 CPUs in all, so some of its 6 one-CPU pods run and the rest wait, with a reason.
    wait_until("the limited pool's pods to run as far as its limit allows", RUN_WAIT, || async {
        Ok((!running_pods(sandbox, &namespaces[2]).await?.is_empty()).then_some(()))
    })
    .await?;
    // Several more batches pass: the limit must hold across them, not only within one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut cpus = 0;
    for claim in nodeclaims_of(sandbox, limited).await? {
        let instance_type = claim.labels().get("node.kubernetes.io/instance-type").cloned().unwrap_or_default();
        let info = embedded_instance_types().iter().find(|t| t.name == instance_type);
        cpus += info.map_or(0, |t| t.vcpus);
    }
    assert!(cpus > 0 && cpus <= 4, "the limited pool launched {cpus} vCPUs, over its limit of 4");
    let running = running_pods(sandbox, &namespaces[2]).await?.len();
    assert!(running < 6, "{running} pods of 1 CPU run within a 4-CPU limit");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sandbox.kube.clone(), &namespaces[2]);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedProvisioning"))
        .filter_map(|e| e.message)
        .collect();
    assert!(reasons.iter().any(|r| r.contains("limit")), "pending pods say why: {reasons:?}");
    explain_story(sandbox, namespaces, pools).await
}

/// `nodesmith explain pod` says why a pod waits (its pool's limits; no type with a GPU), and why a running pod's
/// node is spot or on-demand; the controller's Events on the waiting pod say the same.
async fn explain_story(sandbox: &Sandbox, namespaces: &[String; 3], pools: [&String; 3]) -> Result<()> {
    let [arm, spot, limited] = pools;
    let refusal = |report: &serde_json::Value, pool: &str| -> String {
        let refusals = report["plan"]["nodepools"].as_array().cloned().unwrap_or_default();
        let refusal = refusals.iter().find(|r| r["nodepool"] == pool);
        refusal.and_then(|r| r["reason"].as_str()).unwrap_or_default().to_string()
    };
    let pods: Api<Pod> = Api::namespaced(sandbox.kube.clone(), &namespaces[2]);
    let waiting = pods.list(&ListParams::default()).await?.items.into_iter().find(|p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
            && p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
    });
    let waiting = format!("{}/{}", namespaces[2], waiting.context("a pod waiting on the limit")?.name_any());
    // The controller writes its Event once the pod is no longer planned onto a node being launched (30 s after
    // that node is up, if the scheduler did not bind it there).
    let said = format!("NodePool {limited}: its limits are reached");
    let report = wait_until("explain and the pod's Events to say the limit holds it", RUN_WAIT, || async {
        let report = explain(&["pod", &waiting])?;
        let events = report["events"].as_array().cloned().unwrap_or_default();
        let told = events
            .iter()
            .any(|e| e["reason"] == "FailedProvisioning" && e["message"].as_str().is_some_and(|m| m.contains(&said)));
        Ok(told.then_some(report))
    })
    .await?;
    ensure!(report["state"] == "waiting" && report["plan"]["outcome"] == "unschedulable", "{report:#}");
    let reason = refusal(&report, limited);
    ensure!(reason.starts_with("its limits are reached: ") && reason.contains(" CPU left under them"), "{report:#}");

    // A pod that needs a GPU, in a pool of c and m types.
    let gpu: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "trainer"},
        "spec": {
            "nodeSelector": {TEST_LABEL: arm},
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}],
        }
    }))?;
    Api::<Pod>::namespaced(sandbox.kube.clone(), &namespaces[0]).create(&PostParams::default(), &gpu).await?;
    let trainer = format!("{}/trainer", namespaces[0]);
    let report = wait_until("explain to see the GPU pod unschedulable", RUN_WAIT, || async {
        let report = explain(&["pod", &trainer])?;
        Ok((report["plan"]["outcome"] == "unschedulable").then_some(report))
    })
    .await?;
    ensure!(
        refusal(&report, arm) == "the pod requests 1 nvidia.com/gpu, and no instance type it allows has any",
        "{report:#}"
    );
    // The same for a person, with what kube-scheduler said.
    let output = support::nodesmith()?.args(["explain", "pod", &trainer]).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}");
    ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    ensure!(text.contains(&format!("  {arm}: the pod requests 1 nvidia.com/gpu")), "{text}");
    ensure!(text.contains("kube-scheduler: 0/") && text.contains("Events (newest last):"), "{text}");

    // Running pods: why spot, why on-demand.
    let spot_pod = running_pods(sandbox, &namespaces[1]).await?.first().context("a spot pod")?.name_any();
    let report = explain(&["pod", &format!("{}/{spot_pod}", namespaces[1])])?;
    let choice = &report["choice"];
    ensure!(report["state"] == "on_nodesmith_node", "{report:#}");
    ensure!(choice["capacity_type"] == "spot" && choice["nodepool"] == spot.as_str(), "{report:#}");
    ensure!(choice["why"][0].as_str().is_some_and(|w| w.starts_with("spot: ")), "{report:#}");
    let arm_pod = running_pods(sandbox, &namespaces[0]).await?.first().context("an arm64 pod")?.name_any();
    let report = explain(&["pod", &format!("{}/{arm_pod}", namespaces[0])])?;
    let choice = &report["choice"];
    ensure!(
        choice["why"][0].as_str().is_some_and(|w| w.starts_with("on-demand: the only capacity type")),
        "{report:#}"
    );
    ensure!(choice["allowed_types"].as_u64().unwrap_or_default() >= 1, "{report:#}");
    Ok(())
}

/// A NodePool of general-purpose on-demand amd64 nodes for one test, and a namespace for its workload.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn deleting_a_nodeclaim_drains_it_within_its_pod_disruption_budget() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-drain").await?;
    test.start_controller()?;
    test.run(async |t| drain_story(&t.sandbox, &t.namespace, &t.name).await).await
}

async fn drain_story(sandbox: &Sandbox, namespace: &str, test: &str) -> Result<()> {
    deployment(sandbox, namespace, test, 4, "1", "1Gi").await?;
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }))?;
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(sandbox.kube.clone(), namespace)
        .create(&PostParams::default(), &pdb)
        .await?;
    wait_until("4 pods Running", RUN_WAIT, || async {
        Ok((running_pods(sandbox, namespace).await?.len() == 4).then_some(()))
    })
    .await?;
    // The node with the most pods goes.
    let pods = running_pods(sandbox, namespace).await?;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &pods {
        *per_node.entry(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()).or_default() += 1;
    }
    let (busiest, on_it) = per_node.iter().max_by_key(|(_, n)| **n).map(|(n, c)| (n.clone(), *c)).context("no node")?;
    let claims = initialized_nodeclaims(sandbox, test).await?;
    let claim = claims
        .iter()
        .find(|c| c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(busiest.as_str()))
        .context("the busiest node has no NodeClaim")?;
    let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.clone()).context("no providerID")?;
    Api::<NodeClaim>::all(sandbox.kube.clone()).delete(&claim.name_any(), &DeleteParams::default()).await?;

    // Tainted first, so that nothing is scheduled onto it while it drains (the Node stays until the last pod left).
    wait_until(&format!("{busiest} to carry the disrupted taint"), RUN_WAIT, || async {
        let node = Api::<Node>::all(sandbox.kube.clone()).get_opt(&busiest).await?.context("the node went first")?;
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        Ok(taints.iter().any(|t| t.key == "karpenter.sh/disrupted" && t.effect == "NoSchedule").then_some(()))
    })
    .await?;

    // While it drains, the budget holds: never more than one of the 4 pods unavailable.
    let fewest_ready = std::sync::atomic::AtomicUsize::new(4);
    let fewest_ready = &fewest_ready;
    wait_until(&format!("{on_it} pods to leave {busiest} and run elsewhere"), RUN_WAIT, || async {
        let pods = Api::<Pod>::namespaced(sandbox.kube.clone(), namespace).list(&ListParams::default()).await?;
        let ready: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        fewest_ready.fetch_min(ready.len(), std::sync::atomic::Ordering::Relaxed);
        let moved = ready.len() == 4
            && ready.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(busiest.as_str()));
        Ok(moved.then_some(()))
    })
    .await?;
    let fewest_ready = fewest_ready.load(std::sync::atomic::Ordering::Relaxed);
    assert!(fewest_ready >= 3, "the PodDisruptionBudget allows one pod down at a time; {fewest_ready} of 4 were up");
    wait_until("the drained NodeClaim and its Node to be gone", RUN_WAIT, || async {
        let gone = !nodeclaims_of(sandbox, test).await?.iter().any(|c| c.name_any() == claim.name_any())
            && Api::<Node>::all(sandbox.kube.clone()).get_opt(&busiest).await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    let id = instance_id_from_provider_id(&provider_id).context("not an instance")?;
    assert!(live_instances(sandbox, test).await?.iter().all(|(i, _)| i != id), "{id} was terminated");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_budget_blocks_a_drain_until_the_termination_grace_period_runs_out() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-grace").await?;
    // Before any NodeClaim exists: a NodeClaim's spec is fixed when it is made.
    let grace = serde_json::json!({"spec": {"template": {"spec": {"terminationGracePeriod": "20s"}}}});
    Api::<NodePool>::all(test.sandbox.kube.clone())
        .patch(&test.name, &PatchParams::default(), &Patch::Merge(&grace))
        .await?;
    test.start_controller()?;
    test.run(async |t| grace_story(&t.sandbox, &t.namespace, &t.name).await).await
}

async fn grace_story(sandbox: &Sandbox, namespace: &str, test: &str) -> Result<()> {
    deployment(sandbox, namespace, test, 2, "1", "1Gi").await?;
    // A budget that allows no eviction at all.
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}},
    }))?;
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(sandbox.kube.clone(), namespace)
        .create(&PostParams::default(), &pdb)
        .await?;
    // And a pod no allowed type can hold: it stays pending, and its Event says why, once per round. The repeats
    // make an Event series (a patch of the first Event): the only path that uses the chart's `events patch`.
    let too_big: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "too-big"},
        "spec": {
            "nodeSelector": {TEST_LABEL: test},
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "1000"}}}],
        },
    }))?;
    Api::<Pod>::namespaced(sandbox.kube.clone(), namespace).create(&PostParams::default(), &too_big).await?;
    wait_until("2 pods Running", RUN_WAIT, || async {
        Ok((running_pods(sandbox, namespace).await?.len() == 2).then_some(()))
    })
    .await?;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(sandbox.kube.clone(), namespace);
    let note = wait_until("a repeated FailedProvisioning Event on the pod too big for any type", RUN_WAIT, || async {
        let listed = events.list(&ListParams::default()).await?;
        Ok(listed
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("FailedProvisioning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("too-big")
                    && e.series.as_ref().is_some_and(|s| s.count >= 2)
            })
            .and_then(|e| e.note))
    })
    .await?;
    ensure!(note.to_lowercase().contains("cpu"), "the Event should say which resource does not fit: {note:?}");

    let claim = initialized_nodeclaims(sandbox, test).await?.into_iter().next().context("no NodeClaim")?;
    let node = claim.status.as_ref().and_then(|s| s.node_name.clone()).context("no node name")?;
    let deleted_at = std::time::Instant::now();
    Api::<NodeClaim>::all(sandbox.kube.clone()).delete(&claim.name_any(), &DeleteParams::default()).await?;
    let on_node = |pods: &[Pod]| {
        pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())).count()
    };
    let before = on_node(&running_pods(sandbox, namespace).await?);
    ensure!(before > 0, "the NodeClaim's node runs none of the pods");
    // Within the grace period the budget holds: nothing is evicted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pods = Api::<Pod>::namespaced(sandbox.kube.clone(), namespace).list(&ListParams::default()).await?.items;
    let still_there = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    ensure!(still_there == before, "a pod left {node} although its budget allows no eviction");
    // Then the grace period is over: the pods are deleted, and the node goes.
    wait_until("the NodeClaim to be gone once its grace period ran out", RUN_WAIT, || async {
        Ok((!nodeclaims_of(sandbox, test).await?.iter().any(|c| c.name_any() == claim.name_any())).then_some(()))
    })
    .await?;
    let took = deleted_at.elapsed();
    ensure!(took >= Duration::from_secs(20), "the drain ended after {took:?}, before the 20 s grace period");
    // Soon after it, too: an eviction refused by the budget must not hold the drain in a retry loop.
    ensure!(took < Duration::from_secs(50), "the drain ended {took:?} after the deletion, long after its 20 s grace");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_controller_killed_during_a_launch_leaves_no_duplicate_and_no_orphan() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-kill").await?;
    let first = test.start(Start { identity: Some(&format!("{}-a", test.name)), ..Start::default() })?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        deployment(sandbox, namespace, test, 3, "1", "1Gi").await?;
        // SIGKILL as soon as a NodeClaim exists: its launch is somewhere between not started and recorded.
        wait_until("a NodeClaim", RUN_WAIT, || async {
            Ok((!nodeclaims_of(sandbox, test).await?.is_empty()).then_some(()))
        })
        .await?;
        first.kill();
        // It runs on through the fixture's clean-up, which needs a controller to drain and terminate.
        t.start(Start { identity: Some(&format!("{test}-b")), ..Start::default() })?;
        wait_until("3 pods Running after the restart", RUN_WAIT, || async {
            Ok((running_pods(sandbox, namespace).await?.len() == 3).then_some(()))
        })
        .await?;
        // Every live instance belongs to a NodeClaim, and each NodeClaim has exactly one.
        wait_until("one live instance per NodeClaim", RUN_WAIT, || async {
            let claims: Vec<String> = nodeclaims_of(sandbox, test).await?.iter().map(|c| c.name_any()).collect();
            let instances = live_instances(sandbox, test).await?;
            let mut per_claim: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, claim) in &instances {
                *per_claim.entry(claim.as_str()).or_default() += 1;
            }
            let exact = instances.len() == claims.len() && claims.iter().all(|c| per_claim.get(c.as_str()) == Some(&1));
            Ok(exact.then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn of_two_replicas_only_the_leader_launches_and_the_other_takes_over() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-leader").await?;
    let first = test.start(Start { identity: Some(&format!("{}-a", test.name)), ..Start::default() })?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(sandbox.kube.clone(), &t.controller_namespace);
        let holder = || async {
            let lease = leases.get_opt(nodesmith::names::LEASE_NAME).await?;
            anyhow::Ok(lease.and_then(|l| l.spec?.holder_identity))
        };
        wait_until("the first replica to lead", RUN_WAIT, || async {
            Ok(holder().await?.filter(|h| h.ends_with("-a")))
        })
        .await?;
        let second = t.start(Start { identity: Some(&format!("{test}-b")), ..Start::default() })?;
        deployment(sandbox, namespace, test, 2, "1", "1Gi").await?;
        wait_until("2 pods Running", RUN_WAIT, || async {
            Ok((running_pods(sandbox, namespace).await?.len() == 2).then_some(()))
        })
        .await?;
        assert!(first.log_lines_with("\"launched\"") > 0, "the leader launched");
        assert_eq!(second.log_lines_with("\"launched\""), 0, "the follower launched nothing");

        first.kill();
        wait_until("the second replica to take over", RUN_WAIT, || async {
            Ok(holder().await?.filter(|h| h.ends_with("-b")))
        })
        .await?;
        let deployments: Api<Deployment> = Api::namespaced(sandbox.kube.clone(), namespace);
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 6}})))
            .await?;
        wait_until("6 pods Running under the new leader", RUN_WAIT, || async {
            Ok((running_pods(sandbox, namespace).await?.len() == 6).then_some(()))
        })
        .await?;
        assert!(second.log_lines_with("\"launched\"") > 0, "the new leader launched");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn insufficient_capacity_and_throttling_still_get_every_pod_running() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-faults").await?;
    let plan = FaultPlan { fail_first_preferred_type: true, throttle_one_in: 5, ..FaultPlan::default() };
    let (proxy, faults) = support::aws_fault_proxy(plan).await?;
    test.start(Start { aws_endpoint: Some(&proxy), ..Start::default() })?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        deployment(sandbox, namespace, test, 6, "1", "1Gi").await?;
        wait_until("6 pods Running despite the faults", RUN_WAIT, || async {
            Ok((running_pods(sandbox, namespace).await?.len() == 6).then_some(()))
        })
        .await?;
        let refused = faults.insufficient_capacity_types.lock().map(|t| t.clone()).unwrap_or_default();
        assert!(faults.capacity_errors.load(Ordering::Relaxed) > 0, "the proxy refused a launch for capacity");
        assert!(faults.throttled.load(Ordering::Relaxed) > 0, "the proxy throttled some requests");
        // No node of the refused type, one instance per NodeClaim, none without one.
        let claims = initialized_nodeclaims(sandbox, test).await?;
        for claim in &claims {
            let instance_type = claim.labels().get("node.kubernetes.io/instance-type").cloned().unwrap_or_default();
            assert!(!refused.contains(&instance_type), "launched {instance_type}, which had no capacity");
        }
        let instances = live_instances(sandbox, test).await?;
        let mut claimed: Vec<&str> = instances.iter().map(|(_, c)| c.as_str()).collect();
        claimed.sort_unstable();
        let mut names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
        names.sort_unstable();
        assert_eq!(claimed, names, "exactly one live instance per NodeClaim");
        Ok(())
    })
    .await
}

/// An event as EC2 or AWS Health would put it on the bus, for `instance_id`.
fn event_entry(kind: &str, instance_id: &str) -> aws_sdk_eventbridge::types::PutEventsRequestEntry {
    let arn = format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}");
    let (source, detail_type, detail) = match kind {
        "spot" => (
            "aws.ec2",
            "EC2 Spot Instance Interruption Warning",
            serde_json::json!({"instance-id": instance_id, "instance-action": "terminate"}),
        ),
        "rebalance" => {
            ("aws.ec2", "EC2 Instance Rebalance Recommendation", serde_json::json!({"instance-id": instance_id}))
        }
        "stopping" => (
            "aws.ec2",
            "EC2 Instance State-change Notification",
            serde_json::json!({"instance-id": instance_id, "state": "stopping"}),
        ),
        "capacity-reservation" => (
            "aws.ec2",
            "EC2 Capacity Reservation Instance Interruption Warning",
            serde_json::json!({"instance-id": instance_id, "instance-action": "terminate"}),
        ),
        _ => (
            "aws.health",
            "AWS Health Event",
            serde_json::json!({
                "service": "EC2",
                "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                "eventTypeCategory": "scheduledChange",
                "affectedEntities": [{"entityValue": instance_id}],
            }),
        ),
    };
    aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source(source)
        .detail_type(detail_type)
        .resources(arn)
        .detail(detail.to_string())
        .build()
}

/// A launch refused for a reason other than capacity (here UnauthorizedOperation, as a policy without the
/// permission answers) is retried after a growing backoff, not every few seconds, and says why on the NodeClaim;
/// once the permission is there, the same NodeClaim launches.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_denied_launch_backs_off_says_why_and_launches_once_allowed() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-denied").await?;
    let plan = FaultPlan::default();
    plan.deny_create_fleet.store(true, Ordering::Relaxed);
    let (proxy, faults) = support::aws_fault_proxy(plan.clone()).await?;
    test.start(Start { aws_endpoint: Some(&proxy), ..Start::default() })?;
    test.run(async |t| denied_story(&t.sandbox, &t.namespace, &t.name, &plan, &faults).await).await
}

async fn denied_story(
    sandbox: &Sandbox,
    namespace: &str,
    test: &str,
    plan: &FaultPlan,
    faults: &nodesmith_sandbox::fault_proxy::FaultLog,
) -> Result<()> {
    deployment(sandbox, namespace, test, 1, "1", "1Gi").await?;

    let claim = wait_until("a NodeClaim saying its launch was denied", RUN_WAIT, || async {
        let claims = nodeclaims_of(sandbox, test).await?;
        Ok(claims.into_iter().find(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Launched"
                        && c.status == "False"
                        && c.message.contains("ec2:CreateFleet")
                        && c.message.contains("on launch template nodesmith/")
                })
            })
        }))
    })
    .await?;
    // 60 s at a fixed 5 s retry would be a dozen launches; the backoff (5, 10, 20, 40 s) allows five.
    let first_denied = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    let denied = faults.denied.load(Ordering::Relaxed);
    assert!((2..=5).contains(&denied), "{denied} launches in about a minute");
    assert_eq!(nodeclaims_of(sandbox, test).await?.len(), 1, "no second NodeClaim for the same pod");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(sandbox.kube.clone());
    let said = events.list(&ListParams::default()).await?.items.into_iter().any(|e| {
        e.reason.as_deref() == Some("LaunchFailed")
            && e.involved_object.name.as_deref() == Some(claim.name_any().as_str())
            && e.message.as_deref().is_some_and(|m| m.contains("ec2:CreateFleet"))
    });
    assert!(said, "a LaunchFailed Event names the AWS call");
    let launchable = |pool: NodePool| -> Option<(String, String)> {
        let condition = pool.status?.conditions.into_iter().find(|c| c.type_ == "Launchable")?;
        Some((condition.status, condition.message))
    };
    let pools: Api<NodePool> = Api::all(sandbox.kube.clone());
    wait_until("the NodePool to say it cannot launch", RUN_WAIT, || async {
        let said = launchable(pools.get(test).await?);
        Ok(said.filter(|(status, message)| {
            status == "False" && message.contains(&claim.name_any()) && message.contains("ec2:CreateFleet")
        }))
    })
    .await?;

    plan.deny_create_fleet.store(false, Ordering::Relaxed);
    wait_until("the pod to run once launches are allowed", RUN_WAIT, || async {
        Ok((running_pods(sandbox, namespace).await?.len() == 1).then_some(()))
    })
    .await?;
    let launched = nodeclaims_of(sandbox, test).await?;
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].name_any(), claim.name_any(), "the same NodeClaim launched, none was replaced");
    assert!(first_denied.elapsed() < std::time::Duration::from_secs(300));
    wait_until("the NodePool to say it launches again", RUN_WAIT, || async {
        Ok(launchable(pools.get(test).await?).filter(|(status, _)| status == "True"))
    })
    .await?;
    Ok(())
}

/// The API server loses the status write that records a launch (answered 500, never stored): the controller
/// must find the instance it already launched, not launch another. Shown from the AWS proxy's log (every
/// CreateFleet that reached moto, and what it answered) and from moto's instances in every state, with no
/// TerminateInstances at all: garbage collection is not what makes it pass.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_lost_status_write_after_a_launch_launches_nothing_twice() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-lost").await?;
    let (aws_proxy, aws_log) = support::aws_fault_proxy(FaultPlan::default()).await?;
    let kube_faults = std::sync::Arc::new(nodesmith_sandbox::kube_fault_proxy::KubeFaults::default());
    kube_faults.lose_launch_status_writes.store(1, Ordering::SeqCst);
    let kube_proxy = nodesmith_sandbox::kube_fault_proxy::start(
        controller_kube_client(&test.controller_namespace).await?,
        kube_faults.clone(),
    )
    .await?;
    test.start(Start { aws_endpoint: Some(&aws_proxy), kube_endpoint: Some(&kube_proxy), ..Start::default() })?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        deployment(sandbox, namespace, test, 1, "1", "1Gi").await?;
        // The pod may run before the retry (the node registers on its own); the NodeClaim is whole only once the
        // retry has found the instance and recorded it.
        wait_until("the pod Running and its NodeClaim initialized", RUN_WAIT, || async {
            let running = running_pods(sandbox, namespace).await?.len() == 1;
            Ok((running && initialized_nodeclaims(sandbox, test).await?.len() == 1).then_some(()))
        })
        .await?;
        let lost = kube_faults.lost.lock().map(|l| l.clone()).unwrap_or_default();
        ensure!(lost.len() == 1, "the proxy lost {lost:?}, not one launch's status write");
        let claims = nodeclaims_of(sandbox, test).await?;
        ensure!(claims.len() == 1 && claims[0].name_any() == lost[0], "one NodeClaim, the one whose write was lost");
        let answers = aws_log.fleet_answers.lock().map(|a| a.clone()).unwrap_or_default();
        let launched: std::collections::BTreeSet<&String> =
            answers.iter().filter(|(claim, _)| *claim == lost[0]).flat_map(|(_, ids)| ids).collect();
        ensure!(launched.len() == 1, "CreateFleet launched {launched:?} for {}", lost[0]);
        let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
        let tagged = ec2
            .describe_instances()
            .filters(aws_sdk_ec2::types::Filter::builder().name("tag:karpenter.sh/nodeclaim").values(&lost[0]).build())
            .send()
            .await?;
        let instances: Vec<&str> =
            tagged.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.instance_id()).collect();
        ensure!(instances.len() == 1, "moto holds {instances:?} for {}, in any state", lost[0]);
        ensure!(aws_log.terminations.load(Ordering::Relaxed) == 0, "nothing was terminated on the way");
        let recorded = claims[0].status.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default();
        ensure!(recorded.ends_with(instances[0]), "the NodeClaim records {recorded:?}, not {}", instances[0]);
        Ok(())
    })
    .await
}

/// The one NodeClaim of the pool that runs pods now, with its instance id.
async fn serving_nodeclaim(sandbox: &Sandbox, pool: &str) -> Result<(NodeClaim, String)> {
    let claims = initialized_nodeclaims(sandbox, pool).await?;
    let claim = claims.into_iter().find(|c| c.metadata.deletion_timestamp.is_none()).context("no live NodeClaim")?;
    let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.clone()).context("no providerID")?;
    let id = instance_id_from_provider_id(&provider_id).context("not an instance")?.to_string();
    Ok((claim, id))
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn interruptions_through_eventbridge_and_the_queue_move_pods_before_the_instance_goes() -> Result<()> {
    let test = ControllerTest::new("ctl-interrupt").await?;
    let queue = support::names(&test.sandbox.cluster).queue;
    nodeclass_and_pool(
        &test.sandbox,
        &test.name,
        serde_json::json!([
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
            {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        ]),
        "1000",
    )
    .await?;
    let controller = test.start(Start { args: &["--interruption-queue", &queue], ..Start::default() })?;
    test.run(async |t| interruption_story(&t.sandbox, &controller, &t.namespace, &t.name, &queue).await).await
}

async fn interruption_story(
    sandbox: &Sandbox,
    controller: &ControllerProcess,
    namespace: &str,
    test: &str,
    queue: &str,
) -> Result<()> {
    let events = aws_sdk_eventbridge::Client::new(&sandbox.sdk);
    let sqs = aws_sdk_sqs::Client::new(&sandbox.sdk);
    let queue_url = sqs.get_queue_url().queue_name(queue).send().await?.queue_url.context("no queue URL")?;
    deployment(sandbox, namespace, test, 2, "1", "1Gi").await?;
    wait_until("2 pods Running", RUN_WAIT, || async {
        Ok((running_pods(sandbox, namespace).await?.len() == 2).then_some(()))
    })
    .await?;

    for kind in ["spot", "health", "stopping", "capacity-reservation"] {
        let (claim, instance_id) = serving_nodeclaim(sandbox, test).await?;
        let offering = (
            claim.labels().get("node.kubernetes.io/instance-type").cloned(),
            claim.labels().get("topology.kubernetes.io/zone").cloned(),
        );
        let node = claim.status.as_ref().and_then(|s| s.node_name.clone()).context("no node")?;
        if kind == "stopping" {
            // As on AWS, the state change happened before its event: the controller checks with EC2.
            aws_sdk_ec2::Client::new(&sandbox.sdk).stop_instances().instance_ids(&instance_id).send().await?;
        }
        events.put_events().entries(event_entry(kind, &instance_id)).send().await?;
        wait_until(
            &format!("{kind}: the pods to run on another node and {instance_id} to be terminated"),
            RUN_WAIT,
            || async {
                let pods = running_pods(sandbox, namespace).await?;
                let moved = pods.len() == 2
                    && pods.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node.as_str()));
                let terminated = live_instances(sandbox, test).await?.iter().all(|(id, _)| *id != instance_id);
                Ok((moved && terminated).then_some(()))
            },
        )
        .await?;
        if kind == "spot" {
            // The replacement avoids the (type, zone) spot pool that was just reclaimed.
            let (replacement, _) = serving_nodeclaim(sandbox, test).await?;
            let now = (
                replacement.labels().get("node.kubernetes.io/instance-type").cloned(),
                replacement.labels().get("topology.kubernetes.io/zone").cloned(),
            );
            assert_ne!(now, offering, "the replacement went back into the interrupted spot pool");
        }
    }

    // A rebalance recommendation only records an Event (without --rebalance=replace).
    let (claim, instance_id) = serving_nodeclaim(sandbox, test).await?;
    events.put_events().entries(event_entry("rebalance", &instance_id)).send().await?;
    // A message that does not parse and one about an instance that is not ours are deleted and counted.
    sqs.send_message().queue_url(&queue_url).message_body("this is not an event").send().await?;
    events.put_events().entries(event_entry("spot", "i-00000000000000000")).send().await?;
    // Forgeries, by anyone who may send to the queue: a spot warning from another account, and a "stopping"
    // state change for an instance EC2 says is running. Both are deleted and counted; the node stays.
    let forged_account = include_str!("data/events/spot-interruption-warning.json")
        .replace("123456789012", "210987654321")
        .replace("i-0b662ef9931388ba0", &instance_id);
    sqs.send_message().queue_url(&queue_url).message_body(forged_account).send().await?;
    events.put_events().entries(event_entry("stopping", &instance_id)).send().await?;
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::all(sandbox.kube.clone());
    wait_until("a RebalanceRecommendation event on the NodeClaim", RUN_WAIT, || async {
        let recorded = api.list(&ListParams::default()).await?.items.into_iter().any(|e| {
            e.reason.as_deref() == Some("RebalanceRecommendation")
                && e.involved_object.name.as_deref() == Some(claim.name_any().as_str())
        });
        Ok(recorded.then_some(()))
    })
    .await?;
    wait_until("the queue to be empty", RUN_WAIT, || async {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await?;
        let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
            attributes.attributes().and_then(|a| a.get(&name)).map_or(String::new(), |v| v.clone())
        };
        let empty = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages) == "0"
            && count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == "0";
        Ok(empty.then_some(()))
    })
    .await?;
    let still_there = nodeclaims_of(sandbox, test).await?.iter().any(|c| c.name_any() == claim.name_any());
    assert!(still_there, "a rebalance recommendation alone does not replace the node");
    assert_eq!(
        controller.metric(r#"karpenter_interruption_received_messages_total{message_type="parse_error"}"#).await?,
        1.0
    );
    for (reason, expected) in [("foreign_origin", 1.0), ("unconfirmed_state_change", 1.0)] {
        let sample = format!(r#"nodesmith_interruption_refused_messages_total{{reason="{reason}"}}"#);
        assert_eq!(controller.metric(&sample).await?, expected, "{reason}");
    }
    assert!(controller.metric("karpenter_interruption_deleted_messages_total").await? >= 9.0);
    // Each interrupted NodeClaim counted as disrupted, its reason the message's kind (as Karpenter labels it).
    let text = http_get(controller.metrics_port, "/metrics").await?;
    for reason in ["spot_interrupted", "scheduled_change", "instance_state_change", "capacity_reservation_interrupted"]
    {
        let prefix = format!(r#"karpenter_nodeclaims_disrupted_total{{reason="{reason}",nodepool="{test}","#);
        let count: f64 = text
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ensure!(count == 1.0, "{reason}: {count} NodeClaims counted as disrupted");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn prefix_delegation_gives_nodes_the_prefix_delegated_pod_capacity() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-prefix").await?;
    let classes: Api<EC2NodeClass> = Api::all(test.sandbox.kube.clone());
    classes
        .patch(
            &test.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"prefixDelegation": "Enabled"}})),
        )
        .await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        deployment(sandbox, namespace, test, 2, "1", "1Gi").await?;
        wait_until("2 pods Running", RUN_WAIT, || async {
            Ok((running_pods(sandbox, namespace).await?.len() == 2).then_some(()))
        })
        .await?;
        let delegated = MaxPodsSettings { prefix_delegation: true, ..Default::default() };
        for node in nodes_of(sandbox, test).await? {
            let instance_type = node.labels().get("node.kubernetes.io/instance-type").cloned().unwrap_or_default();
            let info = embedded_instance_types().iter().find(|t| t.name == instance_type).context("unknown type")?;
            let pods = node.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("pods")).cloned();
            let expected = info.max_pods(delegated);
            assert_eq!(pods.map(|q| q.0), Some(expected.to_string()), "{instance_type} under prefix delegation");
            assert_ne!(expected, info.max_pods(MaxPodsSettings::default()), "{instance_type}: the two must differ");
        }
        Ok(())
    })
    .await
}

/// Started where the Karpenter v1 CRDs are not served, the controller says so once per kind, with how to install
/// them, and stays unready; once they are served it becomes ready on its own. Its Lease namespace missing, it says
/// once what is missing and how to fix it, and leads as soon as the namespace exists. (Through the API server
/// proxy, acting with the sandbox's admin identity: the chart's ServiceAccount would be refused a Lease outside
/// its namespace before the API server looked for the namespace.)
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn missing_crds_and_a_missing_lease_namespace_are_said_once_until_they_exist() -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;
    let _turn = CONTROLLER_TURN.lock().await;
    let sandbox = Sandbox::connect().await?;
    let lease_namespace = unique_name("ctl-missing");
    let faults = std::sync::Arc::new(nodesmith_sandbox::kube_fault_proxy::KubeFaults::default());
    faults.hide_karpenter_apis.store(true, Ordering::SeqCst);
    let proxy = nodesmith_sandbox::kube_fault_proxy::start(sandbox.kube.clone(), faults.clone()).await?;
    let controller =
        start_controller_with(&sandbox.cluster, &lease_namespace, &lease_namespace, None, Some(&proxy), &[])?;
    let story = async {
        let crds_missing = "the Karpenter v1 CRDs are not installed. Install them with `nodesmith crds";
        wait_until("the missing CRDs said for each kind", Duration::from_secs(30), || async {
            Ok((controller.log_lines_with(crds_missing) >= 3).then_some(()))
        })
        .await?;
        // The watches retry every second or more: long enough for a repeat, had there been one.
        tokio::time::sleep(Duration::from_secs(8)).await;
        for kind in ["NodePool", "NodeClaim", "EC2NodeClass"] {
            let said = controller.log_lines_with(&format!("v1 {kind} is not served by this cluster"));
            ensure!(said == 1, "the missing {kind} CRD was said {said} times, not once");
        }
        ensure!(controller.log_lines_with("watch error") == 0, "a missing CRD was also logged as a watch error");
        ensure!(!controller.is_ready().await?, "ready without the CRDs");

        install_crds(&sandbox).await?;
        faults.hide_karpenter_apis.store(false, Ordering::SeqCst);
        wait_until("the controller ready once the CRDs are served", Duration::from_secs(60), || async {
            Ok(controller.is_ready().await.unwrap_or(false).then_some(()))
        })
        .await?;
        // Readiness and the log line come from different tasks: give the line a moment to be written.
        let recovered = "is served now; watching it";
        wait_until("each kind's recovery said", Duration::from_secs(10), || async {
            Ok((controller.log_lines_with(recovered) >= 3).then_some(()))
        })
        .await?;
        ensure!(controller.log_lines_with(recovered) == 3, "each kind's recovery said once");

        // (The JSON log escapes the quotes around the name in the sentence's start.)
        let namespace_missing = format!("does not exist, so this replica cannot lead and will change nothing. Create it (`kubectl create namespace {lease_namespace}`)");
        wait_until("the missing Lease namespace said", Duration::from_secs(30), || async {
            Ok((controller.log_lines_with(&namespace_missing) == 1).then_some(()))
        })
        .await?;
        // Leader election tries every 2 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let said = controller.log_lines_with(&namespace_missing);
        ensure!(said == 1, "the missing Lease namespace was said {said} times, not once");
        ensure!(controller.log_lines_with("leader election: ") == 0, "the missing namespace was also a raw error");

        let namespace = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(lease_namespace.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(sandbox.kube.clone()).create(&PostParams::default(), &namespace).await?;
        let leases: Api<Lease> = Api::namespaced(sandbox.kube.clone(), &lease_namespace);
        wait_until("the controller leading in the new namespace", Duration::from_secs(30), || async {
            let lease = leases.get_opt(nodesmith::names::LEASE_NAME).await?;
            let holder = lease.and_then(|l| l.spec?.holder_identity);
            Ok((holder.as_deref() == Some(lease_namespace.as_str())).then_some(()))
        })
        .await?;
        // The Lease is visible to us before the controller has read its own create's answer and said so.
        let namespace_back = "the Lease namespace exists now";
        wait_until("the namespace's recovery said", Duration::from_secs(10), || async {
            Ok((controller.log_lines_with(namespace_back) >= 1).then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        ensure!(controller.log_lines_with(namespace_back) == 1, "the recovery said once");
        anyhow::Ok(())
    }
    .await;
    drop(controller);
    faults.hide_karpenter_apis.store(false, Ordering::SeqCst);
    let deleted =
        match Api::<Namespace>::all(sandbox.kube.clone()).delete(&lease_namespace, &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            done => done.map(|_| ()).map_err(anyhow::Error::from),
        };
    story.and(deleted)
}

/// One family's class: its kubelet settings, its own user data, and what must be found in what it boots with.
struct FamilyCase {
    family: &'static str,
    user_data: String,
    /// Checks the decoded user data: it parses as the family's dialect and carries the user's parts and nodesmith's.
    check: fn(&str) -> Result<()>,
}

/// The kubelet settings every family's class sets (hard eviction above soft, so the plan's allocatable, which
/// takes the higher, is what the kubelet reports).
fn kubelet_settings() -> serde_json::Value {
    serde_json::json!({
        "kubeReserved": {"cpu": "300m", "memory": "600Mi"},
        "systemReserved": {"cpu": "100m", "memory": "200Mi"},
        "evictionHard": {"memory.available": "500Mi"},
        "evictionSoft": {"memory.available": "400Mi"},
        "evictionSoftGracePeriod": {"memory.available": "1m"},
        "imageGCHighThresholdPercent": 85,
        "imageGCLowThresholdPercent": 70,
        "cpuCFSQuota": false,
    })
}

fn family_cases() -> Vec<FamilyCase> {
    vec![
        FamilyCase {
            family: "AL2023",
            user_data: "#!/bin/bash\necho from-the-user > /etc/motd\n".into(),
            check: |text| {
                let parts = mime_parts(text).context("not a MIME multipart document")?;
                ensure!(parts.len() == 2, "nodesmith's NodeConfig and the user's script: {parts:?}");
                let config: serde_json::Value = serde_yaml_ng::from_str(&parts[0].1)?;
                ensure!(config["kind"] == "NodeConfig", "{config}");
                let kubelet = &config["spec"]["kubelet"]["config"];
                ensure!(kubelet["kubeReserved"]["memory"] == "600Mi" && kubelet["cpuCFSQuota"] == false, "{kubelet}");
                ensure!(kubelet["imageGCHighThresholdPercent"] == 85, "{kubelet}");
                ensure!(parts[1].1.contains("echo from-the-user"), "the user's script: {:?}", parts[1]);
                Ok(())
            },
        },
        FamilyCase {
            family: "AL2",
            user_data: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==U==\"\n\n--==U==\nContent-Type: text/x-shellscript\n\necho from-the-user\n--==U==--\n".into(),
            check: |text| {
                let parts = mime_parts(text).context("not a MIME multipart document")?;
                ensure!(parts.len() == 2, "the user's part, then bootstrap.sh: {parts:?}");
                ensure!(parts[0].1.contains("echo from-the-user"), "{:?}", parts[0]);
                let script = &parts[1].1;
                ensure!(script.contains("/etc/eks/bootstrap.sh"), "{script}");
                ensure!(script.contains("--image-gc-high-threshold=85") && script.contains("--cpu-cfs-quota=false"), "{script}");
                Ok(())
            },
        },
        FamilyCase {
            family: "Bottlerocket",
            user_data: "[settings.kubernetes]\ncluster-name = \"not-this-one\"\n\n[settings.kubernetes.node-labels]\nfrom-the-user = \"kept\"\n\n[settings.host-containers.admin]\nenabled = true\n".into(),
            check: |text| {
                let document: toml::Table = text.parse()?;
                let settings = &document["settings"];
                let kubernetes = &settings["kubernetes"];
                ensure!(kubernetes["cluster-name"].as_str() == Some("demo"), "nodesmith's cluster wins: {kubernetes}");
                ensure!(kubernetes["node-labels"]["from-the-user"].as_str() == Some("kept"), "{kubernetes}");
                ensure!(kubernetes["kube-reserved"]["memory"].as_str() == Some("600Mi"), "{kubernetes}");
                ensure!(kubernetes["image-gc-high-threshold-percent"].as_str() == Some("85"), "{kubernetes}");
                ensure!(settings["host-containers"]["admin"]["enabled"].as_bool() == Some(true), "{settings}");
                Ok(())
            },
        },
        FamilyCase {
            family: "Custom",
            // A Custom image boots as its owner says; here, a NodeConfig that reserves what the class says.
            user_data: "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      kubeReserved: {cpu: 300m, memory: 600Mi}\n      systemReserved: {cpu: 100m, memory: 200Mi}\n      evictionHard: {memory.available: 500Mi}\n".into(),
            check: |text| {
                ensure!(text.starts_with("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig"), "exactly the user's: {text}");
                ensure!(!text.contains("MIME") && !text.contains("maxPods"), "nothing of nodesmith's: {text}");
                Ok(())
            },
        },
    ]
}

/// For each AMI family, a class with kubelet settings and user data of its own: the node boots with user data that
/// parses in the family's dialect and carries both the user's parts and nodesmith's (Custom: only the user's), and
/// the Node's allocatable, as the registrar derives it from that user data, is what the plan assumed (the
/// NodeClaim's status).
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn each_ami_family_boots_with_the_classs_kubelet_settings_and_user_data() -> Result<()> {
    let test = ControllerTest::new("ctl-family").await?;
    let mut pools = Vec::new();
    for case in family_cases() {
        let (pool, namespace) = test.another_pool(&format!("ctl-{}", case.family.to_ascii_lowercase())).await?;
        nodeclass_and_pool(&test.sandbox, &pool, on_demand_general_purpose(), "1000").await?;
        let patch = serde_json::json!({"spec": {
            "amiFamily": case.family,
            "amiSelectorTerms": [{"id": AMI}],
            "kubelet": kubelet_settings(),
            "userData": case.user_data,
        }});
        Api::<EC2NodeClass>::all(test.sandbox.kube.clone())
            .patch(&pool, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        pools.push((case, pool, namespace));
    }
    test.start_controller()?;
    test.run(async |t| {
        let sandbox = &t.sandbox;
        let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
        for (_, pool, namespace) in &pools {
            deployment(sandbox, namespace, pool, 1, "500m", "512Mi").await?;
        }
        for (case, pool, namespace) in &pools {
            wait_until(&format!("the {} pod Running", case.family), RUN_WAIT, || async {
                Ok((running_pods(sandbox, namespace).await?.len() == 1).then_some(()))
            })
            .await?;
            let claim = initialized_nodeclaims(sandbox, pool).await?.remove(0);
            let status = claim.status.clone().context("NodeClaim status")?;
            let instance_id =
                status.provider_id.as_deref().and_then(instance_id_from_provider_id).context("providerID")?;
            let described = ec2.describe_instances().instance_ids(instance_id).send().await?;
            let instance =
                described.reservations().iter().flat_map(|r| r.instances()).next().context("the instance")?;
            let encoded =
                nodesmith_sandbox::registrar::instance_user_data(&ec2, instance).await?.context("user data")?;
            let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded.trim())?)?;
            (case.check)(&decoded).with_context(|| format!("{} user data:\n{decoded}", case.family))?;

            let node_name = status.node_name.clone().context("the NodeClaim's node")?;
            let node = Api::<Node>::all(sandbox.kube.clone()).get(&node_name).await?;
            let node_allocatable = node.status.and_then(|s| s.allocatable).context("the Node's allocatable")?;
            for (resource, name) in
                [(ResourceName::Cpu, "cpu"), (ResourceName::Memory, "memory"), (ResourceName::Pods, "pods")]
            {
                let planned = status.allocatable.get(name).context("planned allocatable")?;
                let on_node = node_allocatable.get(name).context("node allocatable")?;
                assert_eq!(
                    parse_quantity(&planned.0, resource)?,
                    parse_quantity(&on_node.0, resource)?,
                    "{}: {name} planned {}, the node has {}",
                    case.family,
                    planned.0,
                    on_node.0
                );
            }
        }
        Ok(())
    })
    .await
}

/// A class that sets a field nodesmith does not honour is refused out loud: `ValidationSucceeded=False` naming the
/// field, not Ready, a Warning Event on it, and nothing launched for its pool's pending pod; without the field, the
/// same pod gets its node.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_class_with_a_field_nodesmith_does_not_honour_launches_nothing_and_says_which() -> Result<()> {
    let test = ControllerTest::with_simple_pool("ctl-refuse").await?;
    let classes: Api<EC2NodeClass> = Api::all(test.sandbox.kube.clone());
    classes
        .patch(&test.name, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"context": "cfc-0123"}})))
        .await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        deployment(sandbox, namespace, test, 1, "500m", "512Mi").await?;
        let condition = |class: EC2NodeClass, type_: &str| {
            class.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_))
        };
        let refused = wait_until("ValidationSucceeded=False", RUN_WAIT, || async {
            Ok(condition(classes.get(test).await?, "ValidationSucceeded").filter(|c| c.status == "False"))
        })
        .await?;
        ensure!(refused.message.contains("spec.context"), "the condition names the field: {}", refused.message);
        let ready = condition(classes.get(test).await?, "Ready").context("a Ready condition")?;
        ensure!(ready.status == "False", "an invalid class is not Ready: {ready:?}");
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(sandbox.kube.clone());
        let said = events.list(&ListParams::default()).await?.items.into_iter().any(|e| {
            e.reason.as_deref() == Some("ValidationFailed")
                && e.involved_object.name.as_deref() == Some(test.as_str())
                && e.message.as_deref().is_some_and(|m| m.contains("spec.context"))
        });
        ensure!(said, "a ValidationFailed Event on the class names the field");
        // Several batch windows pass; the pod stays pending and nothing is launched for it.
        tokio::time::sleep(Duration::from_secs(15)).await;
        ensure!(nodeclaims_of(sandbox, test).await?.is_empty(), "a NodeClaim from a refused class");
        ensure!(live_instances(sandbox, test).await?.is_empty(), "an instance from a refused class");
        ensure!(running_pods(sandbox, namespace).await?.is_empty(), "the pod ran somewhere");

        classes
            .patch(test, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"context": null}})))
            .await?;
        wait_until("the pod Running once the field is gone", RUN_WAIT, || async {
            Ok((running_pods(sandbox, namespace).await?.len() == 1).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}
