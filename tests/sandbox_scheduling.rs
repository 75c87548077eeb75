//! The solver's plans against the real kube-scheduler, on a cluster that already runs pods: a plan that ignores
//! them (a spread skewed by pods already running, anti-affinity to a running pod, affinity to one) is a plan
//! kube-scheduler refuses, and its pods stay Pending. Also volumes (a pod goes where its volume is) and
//! resources no type of the pool has (the pod waits, and says why). Needs `make sandbox-up`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::controller::*;
use support::{Sandbox, wait_until};

const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn kube_scheduler_binds_every_pod_where_the_plan_put_room_for_it_around_running_pods() -> Result<()> {
    // General-purpose types under 32 vCPUs: none has EFA (in c and m, c5n.9xlarge is the smallest that has).
    let test = ControllerTest::new("ctl-topology").await?;
    let mut requirements = on_demand_general_purpose();
    if let Some(list) = requirements.as_array_mut() {
        list.push(json!({"key": "karpenter.k8s.aws/instance-cpu", "operator": "Lt", "values": ["32"]}));
    }
    nodeclass_and_pool(&test.sandbox, &test.name, requirements, "1000").await?;
    test.start_controller()?;
    test.run(async |t| running_pods_story(&t.sandbox, &t.namespace, &t.name).await).await
}

/// A Deployment of 500m / 512Mi pause pods on the test's pool, with `labels` and `extra` merged into its pod spec.
async fn deployment_of(
    apps: &Api<Deployment>,
    test: &str,
    name: &str,
    replicas: i32,
    labels: Value,
    extra: Value,
) -> Result<()> {
    let mut spec = json!({
        "nodeSelector": {TEST_LABEL: test},
        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            match (spec.get_mut(key), value) {
                (Some(Value::Object(mine)), Value::Object(more)) => mine.extend(more.clone()),
                _ => {
                    spec.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"deployment": name}},
            "template": {"metadata": {"labels": merged(&labels, json!({"deployment": name}))}, "spec": spec},
        }
    }))?;
    apps.create(&PostParams::default(), &deployment).await?;
    Ok(())
}

fn merged(a: &Value, b: Value) -> Value {
    let mut out = a.clone();
    if let (Some(out), Some(b)) = (out.as_object_mut(), b.as_object()) {
        out.extend(b.clone());
    }
    out
}

fn term(key: &str, labels: Value) -> Value {
    json!({"topologyKey": key, "labelSelector": {"matchLabels": labels}})
}

async fn pods(sandbox: &Sandbox, namespace: &str) -> Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(sandbox.kube.clone(), namespace).list(&ListParams::default()).await?.items)
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.labels().get(key).map(String::as_str)
}

/// Waits until `count` pods of the namespace run (kube-scheduler bound each where it allowed).
async fn until_running(sandbox: &Sandbox, namespace: &str, count: usize, what: &str) -> Result<Vec<Pod>> {
    wait_until(what, RUN_WAIT, || async {
        let all = pods(sandbox, namespace).await?;
        Ok((all.iter().filter(|p| is_running(p)).count() >= count).then_some(all))
    })
    .await
}

async fn running_pods_story(sandbox: &Sandbox, namespace: &str, test: &str) -> Result<()> {
    let apps: Api<Deployment> = Api::namespaced(sandbox.kube.clone(), namespace);

    // Wave 1: two web pods run in us-east-1a.
    let in_1a = json!({"nodeSelector": {ZONE: "us-east-1a"}});
    deployment_of(&apps, test, "web-a", 2, json!({"app": "web", "tier": "a"}), in_1a).await?;
    until_running(sandbox, namespace, 2, "wave 1: two web pods in us-east-1a").await?;

    // Wave 2, onto that cluster:
    // kube-scheduler weighs skew over the zones whose nodes exist when it binds; nodes launched together appear one
    // by one, so without minDomains it may fill the first zone to appear before the others exist.
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1, "minDomains": 3, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]});
    // - a zone spread over every web pod, in at least three zones: us-east-1a has two already, so none of these
    //   three may go there;
    deployment_of(&apps, test, "web", 3, json!({"app": "web"}), spread).await?;
    // - pods that may share no node with a web pod, running or new;
    let apart = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        term(HOSTNAME, json!({"app": "web"}))]}}});
    deployment_of(&apps, test, "apart", 2, json!({"app": "apart"}), apart).await?;
    // - a pod that must be in the zone of the running tier-a pods;
    let near = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        term(ZONE, json!({"tier": "a"}))]}}});
    deployment_of(&apps, test, "near", 1, json!({"app": "near"}), near).await?;
    // - a pod that would rather not share a node with a web pod;
    let alone = json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term(HOSTNAME, json!({"app": "web"}))}]}}});
    deployment_of(&apps, test, "alone", 1, json!({"app": "alone"}), alone).await?;
    // - two pods that take the same host port, so never one node;
    let port = json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
        "ports": [{"containerPort": 8443, "hostPort": 8443}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]});
    deployment_of(&apps, test, "ports", 2, json!({"app": "ports"}), port).await?;
    // - and one that must sit beside a pod that runs nowhere: no node can be launched for it.
    let orphan = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        term(HOSTNAME, json!({"app": "nobody"}))]}}});
    deployment_of(&apps, test, "orphan", 1, json!({"app": "orphan"}), orphan).await?;
    // - a pod whose volume lives in us-east-1b (a bound claim; the volume's node affinity names the zone), too
    //   large for the room left on any running node, so it needs a node of its own in that zone;
    let claim = zonal_claim(sandbox, namespace, test, "us-east-1b").await?;
    let with_volume = json!({
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}],
    });
    deployment_of(&apps, test, "zonal", 1, json!({"app": "zonal"}), with_volume).await?;
    // - and one that asks for an EFA interface, which no type of the pool has.
    let efa = json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"vpc.amazonaws.com/efa": "1"}}}]});
    deployment_of(&apps, test, "efa", 1, json!({"app": "efa"}), efa).await?;
    until_running(sandbox, namespace, 2 + 3 + 2 + 1 + 1 + 2 + 1, "wave 2 bound by kube-scheduler").await?;

    // Wave 3: the spread Deployment scaled 3 → 9, around everything running now (the apart pods' anti-affinity
    // keeps web pods off their nodes, both ways).
    apps.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 9}}))).await?;
    let all = until_running(sandbox, namespace, 2 + 9 + 2 + 1 + 1 + 2 + 1, "wave 3 bound by kube-scheduler").await?;

    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sandbox.kube.clone());
    let mut zone_of_node = BTreeMap::new();
    for node in nodes.list(&ListParams::default().labels(&format!("{TEST_LABEL}={test}"))).await?.items {
        zone_of_node.insert(node.name_any(), node.labels().get(ZONE).cloned().unwrap_or_default());
    }
    let mut web_per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for pod in all.iter().filter(|p| label(p, "app") == Some("web")) {
        let zone = node_of(pod).and_then(|n| zone_of_node.get(&n).cloned()).context("a web pod on no known node")?;
        *web_per_zone.entry(zone).or_default() += 1;
    }
    let (least, most) = (web_per_zone.values().min(), web_per_zone.values().max());
    let spread = web_per_zone.len() == 3 && most.zip(least).is_some_and(|(most, least)| most - least <= 1);
    if !spread {
        // What kube-scheduler saw when: each web pod's node, zone and creation, and each test Node's creation.
        let mut story = vec![format!("web pods per zone: {web_per_zone:?}")];
        for pod in all.iter().filter(|p| label(p, "app") == Some("web")) {
            let node = node_of(pod).unwrap_or_default();
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            story.push(format!("pod {} on {node} ({:?}) created {created}", pod.name_any(), zone_of_node.get(&node)));
        }
        for node in nodes.list(&ListParams::default().labels(&format!("{TEST_LABEL}={test}"))).await?.items {
            let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let provider = node.spec.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default();
            story.push(format!("node {} {provider} created {created}", node.name_any()));
        }
        anyhow::bail!("the web pods are not spread over the zones with a skew of at most 1:\n{}", story.join("\n"));
    }
    for pod in all.iter().filter(|p| label(p, "app") == Some("near")) {
        let zone = node_of(pod).and_then(|n| zone_of_node.get(&n).cloned());
        assert_eq!(zone.as_deref(), Some("us-east-1a"), "beside the tier-a pods");
    }
    for pod in all.iter().filter(|p| label(p, "app") == Some("zonal")) {
        let zone = node_of(pod).and_then(|n| zone_of_node.get(&n).cloned());
        assert_eq!(zone.as_deref(), Some("us-east-1b"), "where its volume is");
    }
    let orphan = all.iter().find(|p| label(p, "app") == Some("orphan")).context("the orphan pod")?;
    assert!(!is_running(orphan) && node_of(orphan).is_none(), "nothing can hold the orphan pod");
    let efa = all.iter().find(|p| label(p, "app") == Some("efa")).context("the EFA pod")?;
    assert!(!is_running(efa) && node_of(efa).is_none(), "no type of the pool has EFA");

    // No node nodesmith launched stands empty: every one holds a pod of the test.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = pods(sandbox, namespace).await?;
    for claim in initialized_nodeclaims(sandbox, test).await? {
        let node =
            claim.status.as_ref().and_then(|s| s.node_name.clone()).context("an initialized NodeClaim's node")?;
        let held = all.iter().filter(|p| node_of(p).as_deref() == Some(node.as_str())).count();
        let placed: Vec<String> = all.iter().map(|p| format!("{} on {:?}", p.name_any(), node_of(p))).collect();
        anyhow::ensure!(
            held > 0,
            "node {node} (NodeClaim {}) was launched and holds no pod; the pods: {placed:#?}",
            claim.name_any()
        );
    }

    // The orphan and the EFA pod say why they wait.
    let reason = failed_provisioning(sandbox, namespace, &orphan.name_any()).await?;
    assert!(reason.contains("selects no pod that runs or is planned"), "{reason}");
    let reason = failed_provisioning(sandbox, namespace, &efa.name_any()).await?;
    assert!(reason.contains("requests 1 vpc.amazonaws.com/efa"), "{reason}");
    Api::<PersistentVolume>::all(sandbox.kube.clone()).delete(&claim, &Default::default()).await?;
    Ok(())
}

/// The message of the pod's FailedProvisioning Event, once there is one.
async fn failed_provisioning(sandbox: &Sandbox, namespace: &str, pod: &str) -> Result<String> {
    let events: Api<Event> = Api::namespaced(sandbox.kube.clone(), namespace);
    wait_until(&format!("pod {pod}'s FailedProvisioning Event"), Duration::from_secs(30), || async {
        let listed = events.list(&ListParams::default()).await?;
        Ok(listed.items.into_iter().find_map(|e| {
            let about = e.involved_object.name.as_deref() == Some(pod);
            (about && e.reason.as_deref() == Some("FailedProvisioning")).then(|| e.message.unwrap_or_default())
        }))
    })
    .await
}

/// A PersistentVolume in `zone` bound to a claim of the namespace (both named after the test), as a zonal EBS
/// volume is; returns their name.
async fn zonal_claim(sandbox: &Sandbox, namespace: &str, test: &str, zone: &str) -> Result<String> {
    let name = format!("{test}-data");
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": "/data"},
            "claimRef": {"namespace": namespace, "name": name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": ZONE, "operator": "In", "values": [zone]}]}]}},
        }
    }))?;
    Api::<PersistentVolume>::all(sandbox.kube.clone()).create(&PostParams::default(), &volume).await?;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": name,
            "resources": {"requests": {"storage": "1Gi"}},
        }
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(sandbox.kube.clone(), namespace)
        .create(&PostParams::default(), &claim)
        .await?;
    Ok(name)
}
