//! A Pod as nodesmith reads it: the fields scheduling, draining and disruption look at, and nothing else. The
//! controller caches every pod of the cluster; `k8s_openapi`'s Pod spends about 4.5 KiB inline on one pod with one
//! container before a single string is stored, most of it on fields nobody here reads (probes, environments,
//! mounts, security contexts). Deserializing into this type skips those fields instead of allocating them.
//!
//! The field names and JSON shapes are Kubernetes' own, so a `core/v1` Pod (or a pod template's spec) reads as
//! one of these; code that reads a pod is written as it would be against `k8s_openapi`'s type.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The pod's labels are kept apart from its metadata (`labels`, read with `Pod::labels`), as a short list: a
/// `BTreeMap` leaf spends room for eleven entries (over 500 bytes, a 640-byte allocation) on a pod's two or three
/// labels, which is megabytes over ten thousand cached pods. Read and written as Kubernetes' JSON, the labels in
/// `metadata.labels`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "WirePod", into = "WirePod")]
pub struct Pod {
    /// Its labels are always in `labels`, never here.
    pub metadata: ObjectMeta,
    pub labels: Labels,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

/// A Pod as the API server sends it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct WirePod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<PodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<PodStatus>,
}

impl From<WirePod> for Pod {
    fn from(mut wire: WirePod) -> Self {
        let labels = wire.metadata.labels.take().map(Labels::from).unwrap_or_default();
        Self { metadata: wire.metadata, labels, spec: wire.spec, status: wire.status }
    }
}

impl From<Pod> for WirePod {
    fn from(pod: Pod) -> Self {
        let mut metadata = pod.metadata;
        if !pod.labels.is_empty() {
            metadata.labels = Some(pod.labels.to_map());
        }
        Self { metadata, spec: pod.spec, status: pod.status }
    }
}

impl Pod {
    /// The node the pod is bound to, if any.
    pub fn node_name(&self) -> Option<&str> {
        self.spec.as_ref().and_then(|s| s.node_name.as_deref())
    }

    /// The pod's labels (this, not `ResourceExt::labels`, which reads the always empty `metadata.labels`).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
}

/// Labels as a list sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As the map Kubernetes' types use.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        // A map iterates in key order: the list is sorted.
        let mut list: Vec<(String, String)> = map.into_iter().collect();
        list.shrink_to_fit();
        Self(list)
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(entries: I) -> Self {
        Self::from(entries.into_iter().collect::<BTreeMap<_, _>>())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<core::Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<core::Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<core::TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Only claims of storage: they may decide where a pod can go. Config maps, secrets and the projected
    /// service-account token every pod mounts do not, and are not kept.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "storage_volumes")]
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `Always` on an init container makes it a sidecar, whose requests add to the app containers'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<core::ContainerPort>>,
}

/// A container's requests and limits (its resource claims are not read).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
}

/// A resource name → quantity map, as a list: a pod names two or three resources, and a `BTreeMap` leaf spends
/// room for eleven (over 500 bytes) on them. Ten thousand cached pods make that megabytes. Read and written as the
/// JSON object Kubernetes uses; a name given twice keeps its last quantity, as a map would.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceList(Vec<(String, Quantity)>);

impl ResourceList {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Quantity)> {
        self.0.iter().map(|(name, quantity)| (name, quantity))
    }

    pub fn get(&self, name: &str) -> Option<&Quantity> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, quantity)| quantity)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl FromIterator<(String, Quantity)> for ResourceList {
    fn from_iter<I: IntoIterator<Item = (String, Quantity)>>(entries: I) -> Self {
        let mut list: Vec<(String, Quantity)> = Vec::new();
        for (name, quantity) in entries {
            match list.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = quantity,
                None => list.push((name, quantity)),
            }
        }
        list.shrink_to_fit();
        Self(list)
    }
}

impl Serialize for ResourceList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = ResourceList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of resource names to quantities")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ResourceList, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(2));
                while let Some(entry) = map.next_entry::<String, Quantity>()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<core::PersistentVolumeClaimVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<core::EphemeralVolumeSource>,
}

impl Volume {
    fn claims_storage(&self) -> bool {
        self.persistent_volume_claim.is_some() || self.ephemeral.is_some()
    }
}

fn storage_volumes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<Volume>>, D::Error> {
    let volumes: Option<Vec<Volume>> = Option::deserialize(deserializer)?;
    Ok(volumes.map(|mut v| {
        v.retain(Volume::claims_storage);
        v
    }))
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Only `PodScheduled` (whether kube-scheduler found no node for the pod) and `Ready` (for
    /// `karpenter_pods_state`) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "scheduled_condition")]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nominated_node_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn scheduled_condition<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<PodCondition>>, D::Error> {
    let conditions: Option<Vec<PodCondition>> = Option::deserialize(deserializer)?;
    Ok(conditions.map(|mut c| {
        c.retain(|c| c.type_ == "PodScheduled" || c.type_ == "Ready");
        c
    }))
}

impl kube::Resource for Pod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Why a Kubernetes pod spec could not be read as this one: only a spec that does not serialize, which
/// `k8s_openapi`'s types never do; kept as an error rather than a panic all the same.
#[derive(Debug, thiserror::Error)]
#[error("pod spec cannot be read: {0}")]
pub struct UnreadableSpec(#[from] serde_json::Error);

impl PodSpec {
    /// A pod template's spec (a DaemonSet's, a Deployment's in `nodesmith plan`) as the scheduler reads it.
    pub fn from_template(spec: &core::PodSpec) -> Result<Self, UnreadableSpec> {
        Ok(serde_json::from_value(serde_json::to_value(spec)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod as the API server sends it, with the many fields this type does not keep.
    const WHOLE_POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}, "uid": "u-1"},
      "spec": {
        "nodeName": "n1",
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "priority": 1000, "priorityClassName": "high",
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
          {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
          "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
        "overhead": {"cpu": "10m"},
        "containers": [{"name": "app", "image": "app:1", "command": ["/bin/app"],
          "env": [{"name": "MODE", "value": "production"}], "livenessProbe": {"httpGet": {"port": 80}},
          "ports": [{"containerPort": 80, "hostPort": 8080}],
          "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
          "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "initContainers": [{"name": "proxy", "image": "proxy:1", "restartPolicy": "Always",
          "resources": {"requests": {"cpu": "100m"}}}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
                    {"name": "token", "projected": {"sources": []}},
                    {"name": "config", "configMap": {"name": "web"}}],
        "dnsPolicy": "ClusterFirst", "serviceAccountName": "web", "securityContext": {"runAsUser": 1000}
      },
      "status": {
        "phase": "Pending", "nominatedNodeName": "n2", "podIP": "10.0.0.1",
        "conditions": [
          {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"},
          {"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
        "containerStatuses": [{"name": "app", "image": "app:1", "imageID": "", "ready": false, "restartCount": 0}]
      }
    }"#;

    #[test]
    fn a_whole_pod_reads_as_the_fields_nodesmith_uses() {
        let pod: Pod = serde_json::from_str(WHOLE_POD).expect("reads");
        let whole: core::Pod = serde_json::from_str(WHOLE_POD).expect("reads");
        let (spec, whole_spec) = (pod.spec.as_ref().expect("spec"), whole.spec.as_ref().expect("spec"));
        let mut whole_meta = whole.metadata.clone();
        assert_eq!(whole_meta.labels.take().map(Labels::from), Some(pod.labels().clone()), "the labels apart");
        assert_eq!(pod.metadata, whole_meta, "the rest of the metadata as it was");
        assert_eq!(spec.node_name, whole_spec.node_name);
        assert_eq!(spec.node_selector, whole_spec.node_selector);
        assert_eq!(spec.affinity, whole_spec.affinity);
        assert_eq!(spec.tolerations, whole_spec.tolerations);
        assert_eq!(spec.topology_spread_constraints, whole_spec.topology_spread_constraints);
        assert_eq!(serde_json::to_value(&spec.overhead).ok(), serde_json::to_value(&whole_spec.overhead).ok());
        assert_eq!((spec.priority, spec.priority_class_name.as_deref()), (Some(1000), Some("high")));
        let app = &spec.containers[0];
        let whole_app = &whole_spec.containers[0];
        assert_eq!(app.name, "app");
        let requests = app.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        let limits = app.resources.as_ref().and_then(|r| r.limits.as_ref()).expect("limits");
        let whole_resources = whole_app.resources.as_ref().expect("resources");
        assert_eq!(requests.iter().collect::<Vec<_>>(), whole_resources.requests.iter().flatten().collect::<Vec<_>>());
        assert_eq!(limits.iter().collect::<Vec<_>>(), whole_resources.limits.iter().flatten().collect::<Vec<_>>());
        assert_eq!(app.ports.as_ref().and_then(|p| p[0].host_port), Some(8080));
        let sidecar = &spec.init_containers.as_ref().expect("init containers")[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["data"], "only storage claims are kept");

        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.nominated_node_name.as_deref(), Some("n2"));
        let conditions = status.conditions.as_ref().expect("conditions");
        let kept: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kept, ["PodScheduled", "Ready"], "only PodScheduled and Ready are kept");
        assert_eq!((conditions[0].status.as_str(), conditions[0].reason.as_deref()), ("False", Some("Unschedulable")));
    }

    #[test]
    fn a_template_spec_reads_as_the_same_pod_would() {
        let pod: Pod = serde_json::from_str(WHOLE_POD).expect("reads");
        let whole: core::Pod = serde_json::from_str(WHOLE_POD).expect("reads");
        let from_template = PodSpec::from_template(whole.spec.as_ref().expect("spec")).expect("converts");
        assert_eq!(Some(from_template), pod.spec);
    }

    #[test]
    fn labels_are_kept_apart_as_a_sorted_list_and_written_back_where_kubernetes_has_them() {
        let json = r#"{"metadata": {"name": "web-1", "labels": {"tier": "front", "app": "web"}}}"#;
        let pod: Pod = serde_json::from_str(json).expect("reads");
        assert!(pod.metadata.labels.is_none());
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
        assert_eq!(pod.labels().get("tier").map(String::as_str), Some("front"));
        assert_eq!(pod.labels().get("zone"), None);
        assert_eq!(pod.labels().iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["app", "tier"]);
        let written = serde_json::to_value(&pod).expect("writes");
        assert_eq!(written["metadata"]["labels"], serde_json::json!({"app": "web", "tier": "front"}));
        let again: Pod = serde_json::from_value(written).expect("reads again");
        assert_eq!(again, pod);
        let unlabelled: Pod = serde_json::from_str(r#"{"metadata": {"name": "x"}}"#).expect("reads");
        assert!(serde_json::to_value(&unlabelled).expect("writes")["metadata"].get("labels").is_none());
    }

    #[test]
    fn a_resource_list_reads_and_writes_as_the_map_kubernetes_sends() {
        let list: ResourceList =
            serde_json::from_str(r#"{"cpu": "500m", "memory": "1Gi", "cpu": "1"}"#).expect("reads");
        assert_eq!(list.get("cpu").map(|q| q.0.as_str()), Some("1"), "the last of a repeated name wins");
        assert!(list.contains_key("memory") && !list.contains_key("nvidia.com/gpu"));
        assert_eq!(serde_json::to_value(&list).expect("writes"), serde_json::json!({"cpu": "1", "memory": "1Gi"}));
        assert!(serde_json::from_str::<ResourceList>(r#"["cpu"]"#).is_err(), "a list is not a resource map");
    }

    #[test]
    fn it_is_served_where_core_v1_pods_are() {
        use kube::Resource;
        assert_eq!(Pod::api_version(&()), core::Pod::api_version(&()));
        assert_eq!(Pod::url_path(&(), Some("shop")), core::Pod::url_path(&(), Some("shop")));
        assert_eq!(Pod::kind(&()), "Pod");
    }
}
