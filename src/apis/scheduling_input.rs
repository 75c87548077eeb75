//! Kubernetes objects → the scheduler's plain input. Requests are counted as the kubelet counts them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodAffinityTerm as KubePodAffinityTerm;
use k8s_openapi::api::core::v1::WeightedPodAffinityTerm;
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Taint as KubeTaint, Toleration as KubeToleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::nodepool::{NodePoolSpec as KubeNodePoolSpec, NodeSelectorRequirementWithMinValues};
use super::pod::{Container, PodSpec};
use crate::catalog::max_pods::MaxPodsSettings;
use crate::catalog::resources::{ResourceName, Resources, kubernetes_quantity, parse_quantity};
use crate::scheduling::{
    CountedNodes, DaemonSetPod, ExistingNode, HostPort, NodePoolSpec, Operator, PodAffinityTerm, PodRequest,
    PreferredPodTerm, Requirement, Taint, Toleration, TopologyKey, TopologySpread,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConversionError(pub String);

/// A pod's scheduling needs. `id` is `namespace/name`; `labels` are the pod's own.
pub fn pod_request(id: &str, labels: &BTreeMap<String, String>, spec: &PodSpec) -> Result<PodRequest, ConversionError> {
    let selector: Vec<Requirement> =
        spec.node_selector.iter().flatten().map(|(key, value)| Requirement::equals(key, value)).collect();
    let mut requirements = selector.clone();
    let mut alternative_requirements = Vec::new();
    let mut preferences = Vec::new();
    if let Some(node_affinity) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
        if let Some(required) = &node_affinity.required_during_scheduling_ignored_during_execution {
            let mut terms = required.node_selector_terms.iter();
            if let Some(first) = terms.next() {
                requirements.extend(expressions(first.match_expressions.as_deref())?);
            }
            for term in terms {
                let mut alternative = selector.clone();
                alternative.extend(expressions(term.match_expressions.as_deref())?);
                alternative_requirements.push(alternative);
            }
        }
        for preferred in node_affinity.preferred_during_scheduling_ignored_during_execution.iter().flatten() {
            preferences.push((preferred.weight, expressions(preferred.preference.match_expressions.as_deref())?));
        }
    }
    let tolerations: Vec<Toleration> = spec.tolerations.iter().flatten().map(toleration).collect();
    // The nodes the pod may go to, for spreads that count only pods on such nodes (nodeAffinityPolicy: Honor).
    let node_terms = (!requirements.is_empty() || !alternative_requirements.is_empty())
        .then(|| std::iter::once(&requirements).chain(&alternative_requirements).cloned().collect());
    if let Some(unknown) = unoffered_request(spec) {
        return Err(ConversionError(format!(
            "pod {id}: requests {unknown}, which no instance type nodesmith launches offers"
        )));
    }
    Ok(PodRequest {
        id: id.to_string(),
        requests: pod_requests(spec).map_err(|e| ConversionError(format!("pod {id}: {e}")))?,
        spreads: spreads(spec, labels, node_terms, &tolerations)?,
        requirements,
        alternative_requirements,
        preferences,
        tolerations,
        labels: labels.clone(),
        affinity: pod_affinity_terms(
            spec.affinity
                .as_ref()
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()),
            labels,
        )?,
        anti_affinity: pod_affinity_terms(
            spec.affinity
                .as_ref()
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()),
            labels,
        )?,
        preferred_pod_terms: preferred_pod_terms(spec, labels)?,
        host_ports: host_ports(spec),
    })
}

/// The ports a pod takes on its node: its containers' and sidecars' `hostPort`s, with kube-scheduler's defaults
/// (TCP, every address).
pub fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(HostPort {
                port: p.host_port.filter(|port| *port > 0)?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
            })
        })
        .collect()
}

/// Preferred pod affinity and anti-affinity terms with their weights.
fn preferred_pod_terms(
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<PreferredPodTerm>, ConversionError> {
    let affinity = spec.affinity.as_ref();
    let wanted: &[WeightedPodAffinityTerm] = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default();
    let unwanted: &[WeightedPodAffinityTerm] = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (terms, anti) in [(wanted, false), (unwanted, true)] {
        for weighted in terms {
            let converted = pod_affinity_terms(Some(std::slice::from_ref(&weighted.pod_affinity_term)), labels)?;
            out.extend(converted.into_iter().map(|term| PreferredPodTerm { weight: weighted.weight, anti, term }));
        }
    }
    Ok(out)
}

/// A running pod's required anti-affinity terms, which keep the pods they select away from it. A term that cannot
/// be read is left out: the API server admitted the pod, so the fault is nodesmith's reading, and one pod must not
/// stop every plan.
pub fn anti_affinity_terms(spec: &PodSpec, labels: &BTreeMap<String, String>) -> Vec<PodAffinityTerm> {
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref());
    terms
        .unwrap_or_default()
        .iter()
        .filter_map(|term| pod_affinity_terms(Some(std::slice::from_ref(term)), labels).ok())
        .flatten()
        .collect()
}

/// Topology spread constraints on the keys nodesmith plans for (zone, hostname, capacity type), as kube-scheduler
/// reads them: `matchLabelKeys` narrow the selector to the pod's own values of those labels; `nodeAffinityPolicy`
/// (Honor unless Ignore) counts only pods on nodes the pod's node selector and affinity allow; `nodeTaintsPolicy`
/// (Ignore unless Honor) only those on nodes whose taints it tolerates. A constraint without a selector selects no
/// pod and so constrains nothing.
fn spreads(
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
    node_terms: Option<Vec<Vec<Requirement>>>,
    tolerations: &[Toleration],
) -> Result<Vec<TopologySpread>, ConversionError> {
    let mut out = Vec::new();
    for c in spec.topology_spread_constraints.iter().flatten() {
        let (Some(key), Some(selector)) = (TopologyKey::from_label(&c.topology_key), c.label_selector.as_ref()) else {
            continue;
        };
        let mut selector = label_selector(selector)?;
        selector.extend(own_values(c.match_label_keys.as_deref(), labels, Operator::In));
        let honour_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
        let honour_taints = c.node_taints_policy.as_deref() == Some("Honor");
        out.push(TopologySpread {
            key,
            max_skew: u32::try_from(c.max_skew).unwrap_or(1),
            min_domains: c.min_domains.and_then(|m| u32::try_from(m).ok()),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector,
            counted_nodes: CountedNodes {
                affinity: if honour_affinity { node_terms.clone() } else { None },
                tolerations: honour_taints.then(|| tolerations.to_vec()),
            },
        });
    }
    Ok(out)
}

/// `matchLabelKeys` (and, with NotIn, `mismatchLabelKeys`): a requirement on each key the pod carries, with the
/// pod's own value. Keys the pod lacks are ignored, as kube-scheduler ignores them.
fn own_values<'a>(
    keys: Option<&'a [String]>,
    labels: &'a BTreeMap<String, String>,
    operator: Operator,
) -> impl Iterator<Item = Requirement> + 'a {
    keys.unwrap_or_default()
        .iter()
        .filter_map(move |key| Some(Requirement::new(key, operator, &[labels.get(key)?.as_str()])))
}

fn pod_affinity_terms(
    terms: Option<&[KubePodAffinityTerm]>,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<PodAffinityTerm>, ConversionError> {
    let mut out = Vec::new();
    for term in terms.unwrap_or_default() {
        let (Some(key), Some(selector)) = (TopologyKey::from_label(&term.topology_key), term.label_selector.as_ref())
        else {
            continue;
        };
        let mut selector = label_selector(selector)?;
        selector.extend(own_values(term.match_label_keys.as_deref(), labels, Operator::In));
        selector.extend(own_values(term.mismatch_label_keys.as_deref(), labels, Operator::NotIn));
        out.push(PodAffinityTerm { key, selector });
    }
    Ok(out)
}

/// A label selector as requirements on labels, all of which must hold (an empty selector selects everything).
pub fn label_selector(selector: &LabelSelector) -> Result<Vec<Requirement>, ConversionError> {
    let mut out: Vec<Requirement> =
        selector.match_labels.iter().flatten().map(|(k, v)| Requirement::equals(k, v)).collect();
    for e in selector.match_expressions.iter().flatten() {
        out.push(requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or_default(), None)?);
    }
    Ok(out)
}

/// Node selector expressions (of a pod's node affinity, or a PersistentVolume's) as requirements.
pub fn node_selector_requirements(
    list: Option<&[NodeSelectorRequirement]>,
) -> Result<Vec<Requirement>, ConversionError> {
    expressions(list)
}

fn expressions(list: Option<&[NodeSelectorRequirement]>) -> Result<Vec<Requirement>, ConversionError> {
    list.unwrap_or_default()
        .iter()
        .map(|e| requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or_default(), None))
        .collect()
}

fn requirement(
    key: &str,
    operator: &str,
    values: &[String],
    min_values: Option<u32>,
) -> Result<Requirement, ConversionError> {
    let operator = Operator::parse(operator).ok_or_else(|| {
        ConversionError(format!(
            "requirement on {key}: operator {operator:?} is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte"
        ))
    })?;
    Ok(Requirement { key: key.to_string(), operator, values: values.to_vec(), min_values })
}

/// What the pod asks of a node, as the kubelet and scheduler count it (see `pod_total`), plus one pod slot.
pub fn pod_requests(spec: &PodSpec) -> Result<Resources, ConversionError> {
    let mut total = pod_total(spec, container_requests)?;
    total.set(ResourceName::Pods, 1);
    Ok(total)
}

/// The pod's limits, added up as its requests are; a resource no container limits counts 0.
pub fn pod_limits(spec: &PodSpec) -> Result<Resources, ConversionError> {
    pod_total(spec, |container| {
        let listed = container.resources.as_ref().and_then(|r| r.limits.as_ref());
        quantities(listed.into_iter().flat_map(|l| l.iter()), &container.name)
    })
}

/// `per_container` summed over a pod as the kubelet does: the larger of the running containers (with restartable
/// init containers, i.e. sidecars) and the largest init container (with the sidecars started before it), plus the
/// pod overhead.
fn pod_total(
    spec: &PodSpec,
    per_container: impl Fn(&Container) -> Result<Resources, ConversionError>,
) -> Result<Resources, ConversionError> {
    let mut running = Resources::ZERO;
    for container in &spec.containers {
        running += per_container(container)?;
    }
    let mut sidecars = Resources::ZERO;
    let mut init_peak = Resources::ZERO;
    for init in spec.init_containers.iter().flatten() {
        let own = per_container(init)?;
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars += own;
            init_peak = init_peak.max(&sidecars);
        } else {
            init_peak = init_peak.max(&(sidecars + own));
        }
    }
    let mut total = (running + sidecars).max(&init_peak);
    total += quantities(spec.overhead.iter().flat_map(|o| o.iter()), "overhead")?;
    Ok(total)
}

/// The first resource a container of the pod asks for (by request or limit, not zero) that no node nodesmith
/// launches offers: an extended resource of a device plugin it does not know, hugepages, or a name that is not a
/// container resource (`nodes`).
fn unoffered_request(spec: &PodSpec) -> Option<String> {
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let asked = containers.filter_map(|c| c.resources.as_ref()).flat_map(|r| {
        let requests = r.requests.iter().flat_map(|l| l.iter());
        requests.chain(r.limits.iter().flat_map(|l| l.iter()))
    });
    let offered = |name: &str| ResourceName::from_kubernetes(name).is_some_and(ResourceName::is_node_resource);
    let zero = |quantity: &Quantity| parse_quantity(&quantity.0, ResourceName::Pods) == Ok(0);
    asked.filter(|(name, quantity)| !offered(name) && !zero(quantity)).map(|(name, _)| name.clone()).next()
}

/// A container's requests; where it sets a limit but no request, the limit is its request (API defaulting).
fn container_requests(container: &Container) -> Result<Resources, ConversionError> {
    let resources = container.resources.as_ref();
    let limits =
        quantities(resources.and_then(|r| r.limits.as_ref()).into_iter().flat_map(|l| l.iter()), &container.name)?;
    let requests =
        quantities(resources.and_then(|r| r.requests.as_ref()).into_iter().flat_map(|r| r.iter()), &container.name)?;
    let mut out = requests;
    for name in ResourceName::ALL {
        let has_request = resources.and_then(|r| r.requests.as_ref()).is_some_and(|r| r.contains_key(name.as_str()));
        if !has_request {
            out.set(name, limits.get(name));
        }
    }
    Ok(out)
}

fn quantities<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a Quantity)>,
    owner: &str,
) -> Result<Resources, ConversionError> {
    let mut out = Resources::ZERO;
    for (name, quantity) in entries {
        // Resources the scheduler does not model (hugepages, other extended resources) are not counted.
        let Some(resource) = ResourceName::from_kubernetes(name) else { continue };
        let value =
            parse_quantity(&quantity.0, resource).map_err(|e| ConversionError(format!("{owner}: {name}: {e}")))?;
        out.set(resource, value);
    }
    Ok(out)
}

/// The other way: resources as the `Quantity` map Kubernetes objects carry (zero resources left out), exact so
/// that reading it back gives the same values.
pub fn resource_quantities(resources: &Resources) -> BTreeMap<String, Quantity> {
    ResourceName::ALL
        .into_iter()
        // `nodes` counts for NodePool limits and attachable volumes are in CSINode: neither is in a Node's status.
        .filter(|&name| name.is_node_resource() && resources.get(name) != 0)
        .map(|name| (name.as_str().to_string(), Quantity(kubernetes_quantity(name, resources.get(name)))))
        .collect()
}

fn toleration(t: &KubeToleration) -> Toleration {
    Toleration {
        key: t.key.clone().filter(|k| !k.is_empty()),
        operator: t.operator.clone().unwrap_or_else(|| "Equal".to_string()),
        value: t.value.clone(),
        effect: t.effect.clone().filter(|e| !e.is_empty()),
    }
}

pub fn taint(t: &KubeTaint) -> Taint {
    Taint { key: t.key.clone(), value: t.value.clone(), effect: t.effect.clone() }
}

/// What a DaemonSet's pod needs on every node, from its template.
pub fn daemonset_pod(template: &k8s_openapi::api::core::v1::PodSpec) -> Result<DaemonSetPod, ConversionError> {
    let spec = PodSpec::from_template(template).map_err(|e| ConversionError(e.to_string()))?;
    let pod = pod_request("daemonset", &BTreeMap::new(), &spec)?;
    Ok(DaemonSetPod { requests: pod.requests, requirements: pod.requirements, tolerations: pod.tolerations })
}

/// A NodePool as the scheduler sees it, with the pod density settings of its EC2NodeClass.
pub fn nodepool(
    name: &str,
    spec: &KubeNodePoolSpec,
    max_pods: MaxPodsSettings,
) -> Result<NodePoolSpec, ConversionError> {
    let template = &spec.template;
    let requirements = template
        .spec
        .requirements
        .iter()
        .map(|NodeSelectorRequirementWithMinValues { key, operator, values, min_values }| {
            requirement(key, operator, values, *min_values)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConversionError(format!("NodePool {name}: {e}")))?;
    let limits = if spec.limits.is_empty() {
        None
    } else {
        // A limit on some resources leaves the others unlimited.
        let mut limits = Resources::ZERO;
        for resource in ResourceName::ALL {
            limits.set(resource, i64::MAX / 2);
        }
        for (resource_name, quantity) in &spec.limits {
            let Some(resource) = ResourceName::from_kubernetes(resource_name) else {
                let known: Vec<&str> = ResourceName::ALL.iter().map(|r| r.as_str()).collect();
                return Err(ConversionError(format!(
                    "NodePool {name}: limits.{resource_name}: not a resource nodesmith counts (it counts {})",
                    known.join(", ")
                )));
            };
            let value = parse_quantity(quantity, resource)
                .map_err(|e| ConversionError(format!("NodePool {name}: limits.{resource_name}: {e}")))?;
            limits.set(resource, value);
        }
        Some(limits)
    };
    Ok(NodePoolSpec {
        name: name.to_string(),
        weight: spec.weight.unwrap_or(0),
        requirements,
        labels: template.metadata.labels.clone(),
        taints: template.spec.taints.iter().map(taint).collect(),
        startup_taints: template.spec.startup_taints.iter().map(taint).collect(),
        limits,
        max_pods,
        overhead: Default::default(),
        ephemeral_storage: Default::default(),
        min_values_policy: Default::default(),
    })
}

/// A Node as capacity the scheduler may use: its allocatable, labels and taints. The pods already on it are not
/// known here (the cluster snapshot adds them), so it counts as empty.
/// Room for volume attachments on a node whose attachments nodesmith does not track: never the reason a pod
/// does not fit there.
const UNKNOWN_ATTACHMENTS: i64 = 1 << 20;

pub fn existing_node(node: &Node) -> Result<ExistingNode, ConversionError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let allocatable =
        quantities(status.and_then(|s| s.allocatable.as_ref()).into_iter().flatten(), &format!("node {name}"))?;
    let capacity = quantities(status.and_then(|s| s.capacity.as_ref()).into_iter().flatten(), &format!("node {name}"))?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    // Its free EBS attachments are in CSINode, which is not read: kube-scheduler, which reads it, decides there.
    let available = allocatable.with(ResourceName::EbsVolumes, UNKNOWN_ATTACHMENTS);
    Ok(ExistingNode {
        nodepool: labels.get("karpenter.sh/nodepool").cloned(),
        pods: Vec::new(),
        name,
        taints: node.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().map(taint).collect(),
        available,
        capacity,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml_ng::from_str(yaml).expect("valid pod spec")
    }

    #[test]
    fn a_resource_no_instance_type_offers_is_refused_by_name() {
        let efa = spec("containers: [{name: a, resources: {limits: {vpc.amazonaws.com/efa: 1}}}]");
        let request = pod_request("ns/p", &BTreeMap::new(), &efa).expect("EFA is offered by some types");
        assert_eq!(request.requests.get(ResourceName::Efa), 1, "a limit alone is the request");
        for unoffered in [
            "containers: [{name: a, resources: {requests: {example.com/widget: 2}}}]",
            "initContainers: [{name: i, resources: {limits: {example.com/widget: 1}}}]\ncontainers: []",
            "containers: [{name: a, resources: {limits: {hugepages-2Mi: 64Mi}}}]",
        ] {
            let error = pod_request("ns/p", &BTreeMap::new(), &spec(unoffered)).expect_err(unoffered);
            assert!(error.0.contains("which no instance type nodesmith launches offers"), "{}", error.0);
        }
        let zero = spec("containers: [{name: a, resources: {requests: {example.com/widget: 0}}}]");
        assert!(pod_request("ns/p", &BTreeMap::new(), &zero).is_ok(), "asking for none is asking for nothing");
    }

    #[test]
    fn requests_count_init_containers_sidecars_overhead_and_limits_as_kubernetes_does() {
        let pod = spec(
            r#"
containers:
- name: app
  resources: {requests: {cpu: 500m, memory: 256Mi}}
- name: limited
  resources: {limits: {cpu: "1", memory: 1Gi}}
initContainers:
- name: migrate
  resources: {requests: {cpu: "3"}}
- name: proxy
  restartPolicy: Always
  resources: {requests: {cpu: 100m, memory: 64Mi}}
overhead: {cpu: 50m}
"#,
        );
        let requests = pod_requests(&pod).expect("requests");
        // max(0.5 + 1 + 0.1 sidecar, 3 init) + 0.05 overhead
        assert_eq!(requests.get(ResourceName::Cpu), 3050);
        assert_eq!(requests.get(ResourceName::Memory), (256 + 1024 + 64) << 20);
        assert_eq!(requests.get(ResourceName::Pods), 1);
    }

    #[test]
    fn selectors_and_affinity_become_requirements() {
        let pod = spec(
            r#"
containers: [{name: app}]
nodeSelector: {kubernetes.io/arch: arm64}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1a]}]
      - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}]
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 10
      preference: {matchExpressions: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]}
tolerations: [{operator: Exists}]
"#,
        );
        let request = pod_request("ns/p", &BTreeMap::new(), &pod).expect("converts");
        assert_eq!(request.requirements.len(), 2);
        assert_eq!(request.alternative_requirements.len(), 1);
        assert_eq!(request.alternative_requirements[0][0], Requirement::equals("kubernetes.io/arch", "arm64"));
        assert_eq!(request.preferences[0].0, 10);
        assert_eq!(request.tolerations[0].key, None);
    }

    #[test]
    fn spreads_read_match_label_keys_and_the_node_policies_as_kube_scheduler_does() {
        let pod = spec(
            r#"
containers: [{name: app}]
nodeSelector: {kubernetes.io/arch: amd64}
tolerations: [{key: dedicated, operator: Exists}]
topologySpreadConstraints:
- {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
   labelSelector: {matchLabels: {app: web}}, matchLabelKeys: [pod-template-hash, absent]}
- {maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway,
   labelSelector: {matchLabels: {app: web}}, nodeAffinityPolicy: Ignore, nodeTaintsPolicy: Honor}
"#,
        );
        let labels =
            BTreeMap::from([("app".to_string(), "web".to_string()), ("pod-template-hash".into(), "5d8f".into())]);
        let request = pod_request("ns/p", &labels, &pod).expect("converts");
        let [zone, hostname] = request.spreads.as_slice() else { panic!("two spreads: {:?}", request.spreads) };
        // matchLabelKeys: this revision's pods only; a key the pod lacks is ignored.
        assert_eq!(
            zone.selector,
            [Requirement::equals("app", "web"), Requirement::equals("pod-template-hash", "5d8f")]
        );
        // Defaults: node affinity honoured (only amd64 nodes' pods count), taints ignored.
        assert_eq!(zone.counted_nodes.affinity, Some(vec![vec![Requirement::equals("kubernetes.io/arch", "amd64")]]));
        assert_eq!(zone.counted_nodes.tolerations, None);
        assert!(zone.hard && !hostname.hard);
        assert_eq!(hostname.counted_nodes.affinity, None, "nodeAffinityPolicy: Ignore");
        assert_eq!(hostname.counted_nodes.tolerations.as_ref().map(Vec::len), Some(1), "nodeTaintsPolicy: Honor");
    }

    #[test]
    fn affinity_terms_read_match_and_mismatch_label_keys() {
        let pod = spec(
            r#"
containers: [{name: app}]
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
    - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: db}},
       matchLabelKeys: [tenant], mismatchLabelKeys: [shard]}
"#,
        );
        let labels = BTreeMap::from([("tenant".to_string(), "t1".to_string()), ("shard".into(), "s1".into())]);
        let request = pod_request("ns/p", &labels, &pod).expect("converts");
        assert_eq!(
            request.anti_affinity[0].selector,
            [
                Requirement::equals("app", "db"),
                Requirement::equals("tenant", "t1"),
                Requirement::new("shard", Operator::NotIn, &["s1"]),
            ]
        );
        assert_eq!(anti_affinity_terms(&pod, &labels), request.anti_affinity, "a running pod's terms read the same");
    }

    #[test]
    fn preferred_pod_terms_keep_their_weights_and_kind() {
        let pod = spec(
            r#"
containers: [{name: app}]
affinity:
  podAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 20
      podAffinityTerm: {topologyKey: topology.kubernetes.io/zone, labelSelector: {matchLabels: {app: cache}}}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 80
      podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}
"#,
        );
        let request = pod_request("ns/p", &BTreeMap::new(), &pod).expect("converts");
        let terms: Vec<(i32, bool, TopologyKey)> =
            request.preferred_pod_terms.iter().map(|p| (p.weight, p.anti, p.term.key)).collect();
        assert_eq!(terms, [(20, false, TopologyKey::Zone), (80, true, TopologyKey::Hostname)]);
        assert!(request.affinity.is_empty() && request.anti_affinity.is_empty(), "preferred, not required");
    }

    #[test]
    fn host_ports_of_containers_and_sidecars_with_kube_scheduler_defaults() {
        let pod = spec(
            r#"
containers:
- {name: app, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 9090}]}
initContainers:
- {name: proxy, restartPolicy: Always, ports: [{containerPort: 53, hostPort: 53, protocol: UDP, hostIP: 10.0.0.5}]}
- {name: setup, ports: [{containerPort: 1, hostPort: 1}]}
"#,
        );
        let ports = host_ports(&pod);
        let ports: Vec<(i32, &str, &str)> =
            ports.iter().map(|p| (p.port, p.protocol.as_str(), p.ip.as_str())).collect();
        assert_eq!(ports, [(8080, "TCP", "0.0.0.0"), (53, "UDP", "10.0.0.5")], "a plain init container has ended");
    }

    #[test]
    fn a_bad_quantity_or_operator_is_named() {
        let bad_cpu = spec("containers: [{name: app, resources: {requests: {cpu: lots}}}]");
        let error = pod_request("ns/p", &BTreeMap::new(), &bad_cpu).expect_err("refused");
        assert!(error.0.contains("pod ns/p: app: cpu: \"lots\" is not a Kubernetes quantity"), "{error}");
        let bad_operator = spec(
            "containers: [{name: app}]\naffinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Inn, values: [b]}]}]}}}",
        );
        let error = pod_request("ns/p", &BTreeMap::new(), &bad_operator).expect_err("refused");
        assert!(error.0.contains("operator \"Inn\" is not one of"), "{error}");
    }
}
