//! A `/metrics` page with every metric the controller exports given a sample, for checks of what dashboards and
//! alerts read.

use anyhow::Result;

/// The `/metrics` text of a registry where every metric has been given a sample (a labelled family shows only
/// once it has one), the cluster gauges computed from a real node and pod by the controller's own code.
pub fn sampled() -> Result<String> {
    use nodesmith::catalog::Catalog;
    use nodesmith::catalog::pricing::PriceTable;
    use nodesmith::controller::cluster_metrics::cluster_gauges;
    use nodesmith::controller::leader::Leadership;
    use nodesmith::controller::object_metrics::{ObjectTransitions, object_gauges};
    use nodesmith::telemetry::{Metrics, OfferingPlace, ReconcileResult};
    let metrics = std::sync::Arc::new(Metrics::default());
    metrics.nodeclaim_created("provisioning", "default", false);
    metrics.nodeclaim_terminated("default", "spot", "us-east-1a", 30.0);
    metrics.node_created("default", "us-east-1a");
    metrics.node_drained("default");
    metrics.node_terminated("default", "us-east-1a", 20.0, 3600.0);
    metrics.eviction_requested(429);
    metrics.cloudprovider_error("provisioner", "Create", "InsufficientInstanceCapacity");
    metrics.cloudprovider_call("provisioner", "Create", 0.2);
    metrics.pod_started(40.0);
    metrics.reconciled("nodeclaim.lifecycle", ReconcileResult::Success, 0.01);
    metrics.reconciled("nodeclaim.lifecycle", ReconcileResult::Error, 0.01);
    metrics.scheduling_duration("provisioner", 0.01);
    metrics.unschedulable_pods("provisioner", 0);
    metrics.leading("nodesmith-leader-election", true);
    metrics.interruption_received("spot_interrupted");
    metrics.interruption_refused("foreign_origin");
    metrics.interruption_deleted();
    metrics.interruption_queue_duration(1.0);
    metrics.disruption_decision(&["default"], "delete", "underutilized", "single");
    metrics.disruption_eligible("underutilized", 1);
    metrics.nodeclaim_disrupted("underutilized", "default", "spot");
    metrics.set_allowed_disruptions(&[("default".into(), "underutilized", 1)]);
    metrics.consolidation_timeout("multi");
    let target = nodesmith::telemetry::api_requests::ApiTarget::of(&http::Method::GET, "/api/v1/nodes");
    metrics.api_request("GET", "200", &target, 0.01);
    metrics.pod_bound(2.0);
    metrics.pod_scheduling_decided(0.5);
    metrics.pod_provisioning_bound(30.0);
    metrics.pod_provisioning_started(40.0);
    metrics.pod_drained("Underutilized");
    metrics.cost_tracker_error("default");
    metrics.set_nodes_consuming_budgets(&[("default".into(), "Underutilized", 0)]);
    metrics.instance_terminated("default", 20.0);
    metrics.disruption_queue_failure("replace", "underutilized", "single");
    metrics.disruption_failed_validation("single");
    metrics.disruption_evaluated("underutilized", "single", 0.01);
    metrics.consolidation_move("default", "Balanced", true, Some((0.8, true)));
    metrics.pending_pods("provisioner", &[("us-east-1a".to_string(), 1)].into_iter().collect(), 0);
    metrics.scheduling_round_started("provisioner", 3);
    let place = OfferingPlace { zone: "us-east-1a", zone_id: "use1-az1", capacity_type: "spot" };
    metrics.launch_failed(place, "InsufficientInstanceCapacity");
    metrics.termination_failed("us-east-1a", "use1-az1");
    let prices = PriceTable::embedded();
    let instance_types = nodesmith::catalog::embedded_instance_types().to_vec();
    metrics.price_offerings_of(std::sync::Arc::new(Catalog { instance_types, prices: prices.clone() }));
    let node: k8s_openapi::api::core::v1::Node = serde_yaml_ng::from_str(NODE)?;
    let pods: Vec<std::sync::Arc<nodesmith::apis::pod::Pod>> =
        POD.split("---").map(|pod| Ok(std::sync::Arc::new(serde_yaml_ng::from_str(pod)?))).collect::<Result<_>>()?;
    let pool: nodesmith::apis::nodepool::NodePool = serde_yaml_ng::from_str(POOL)?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let claim: nodesmith::apis::nodeclaim::NodeClaim = serde_yaml_ng::from_str(NODECLAIM)?;
    let class: nodesmith::apis::ec2nodeclass::EC2NodeClass = serde_yaml_ng::from_str(NODECLASS)?;
    let (node, pool) = (std::sync::Arc::new(node), std::sync::Arc::new(pool));
    let (claim, class) = (std::sync::Arc::new(claim), std::sync::Arc::new(class));
    let transitions = ObjectTransitions::new(metrics.clone(), Leadership::without_lease());
    sample_transitions(&transitions, claim.as_ref());
    sample_transitions(&transitions, node.as_ref());
    sample_transitions(&transitions, pool.as_ref());
    sample_transitions(&transitions, class.as_ref());
    let mut gauges = cluster_gauges(std::slice::from_ref(&node), &pods, std::slice::from_ref(&pool), &prices, now);
    let (conditions, terminating) = (&mut gauges.conditions, &mut gauges.terminating);
    object_gauges(&[claim], now, conditions, terminating);
    object_gauges(&[node], now, conditions, terminating);
    object_gauges(&[pool], now, conditions, terminating);
    object_gauges(&[class], now, conditions, terminating);
    gauges.provisioning_unbound = vec![("shop".into(), "web-2".into(), 3.0)];
    gauges.provisioning_unstarted = vec![("shop".into(), "web-3".into(), 3.0)];
    gauges.scheduling_undecided = vec![("shop".into(), "web-4".into(), 1.0)];
    metrics.gauge_cluster_from(std::sync::Arc::new(nodesmith::telemetry::cluster::FixedGauges(gauges)));
    Ok(metrics.encode())
}

/// A condition of `object` changes (a copy with every condition an hour older, then the object), and the object
/// goes: a transition, how long the status before held, and a termination, under the kind's names.
fn sample_transitions<K>(transitions: &nodesmith::controller::object_metrics::ObjectTransitions, object: &K)
where
    K: Clone + kube::Resource + serde::Serialize + serde::de::DeserializeOwned,
    nodesmith::controller::object_metrics::ObjectTransitions: nodesmith::controller::state::Changes<K>,
{
    use nodesmith::controller::state::Changes;
    let mut before = object.clone();
    let json = serde_json::to_value(&before).ok();
    if let Some(mut json) = json {
        for condition in json.pointer_mut("/status/conditions").and_then(|c| c.as_array_mut()).into_iter().flatten() {
            condition["lastTransitionTime"] = "2026-01-01T00:00:00Z".into();
            condition["status"] = "Unknown".into();
        }
        if let Ok(older) = serde_json::from_value(json) {
            before = older;
        }
    }
    transitions.changed(Some(&before), object);
    transitions.deleted(object);
}

const NODECLAIM: &str = r#"
metadata:
  name: default-a
  labels: {karpenter.sh/nodepool: default, karpenter.k8s.aws/ec2nodeclass: default}
  deletionTimestamp: "2026-12-05T03:00:00Z"
spec: {nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}, requirements: []}
status:
  conditions:
  - {type: Ready, status: "True", reason: Ready, message: "", lastTransitionTime: "2026-12-05T02:00:00Z"}
"#;

const NODECLASS: &str = r#"
metadata: {name: default, deletionTimestamp: "2026-12-05T03:00:00Z"}
spec: {role: KarpenterNodeRole-demo, amiSelectorTerms: [{alias: al2023@latest}], subnetSelectorTerms: [{tags: {a: b}}],
       securityGroupSelectorTerms: [{tags: {a: b}}]}
status:
  conditions:
  - {type: Ready, status: "True", reason: Ready, message: "", lastTransitionTime: "2026-12-05T02:00:00Z"}
"#;

const NODE: &str = r#"
metadata:
  name: ip-10-0-0-1
  deletionTimestamp: "2026-12-05T03:00:00Z"
  labels: {karpenter.sh/nodepool: default, karpenter.sh/initialized: "true", karpenter.k8s.aws/ec2nodeclass: default, karpenter.sh/capacity-type: spot, node.kubernetes.io/instance-type: m5.large,
           topology.kubernetes.io/zone: us-east-1a, kubernetes.io/arch: amd64}
status:
  capacity: {cpu: "2", memory: 7934Mi, pods: "29"}
  allocatable: {cpu: 1930m, memory: 7134Mi, pods: "29"}
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, lastTransitionTime: "2026-12-05T02:00:00Z"}
"#;

const POD: &str = r#"
metadata: {name: web-1, namespace: shop}
spec: {nodeName: ip-10-0-0-1, containers: [{name: app, resources: {requests: {cpu: 500m}, limits: {memory: 1Gi}}}]}
status: {phase: Running}
---
metadata: {name: web-2, namespace: shop}
spec: {containers: [{name: app}]}
status: {phase: Pending}
---
metadata: {name: web-3, namespace: shop}
spec: {nodeName: ip-10-0-0-1, containers: [{name: app}]}
status: {phase: Pending}
"#;

const POOL: &str = r#"
metadata: {name: default, deletionTimestamp: "2026-12-05T03:00:00Z"}
spec:
  template: {spec: {nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}, requirements: []}}
  limits: {cpu: "100"}
status:
  resources: {cpu: "2"}
  conditions:
  - {type: Ready, status: "True", reason: Ready, message: "", lastTransitionTime: "2026-12-05T02:00:00Z"}
"#;
