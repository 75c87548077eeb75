//! `karpenter.sh/v1` NodeClaim: one node nodesmith launched (or is launching), field for field as Karpenter v1
//! defines it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::LAUNCH_FAILURES_ANNOTATION;

use super::nodepool::{
    NodeClassReference, NodeSelectorRequirementWithMinValues, REQUIREMENTS_COMPARISONS_HAVE_ONE_INTEGER,
    REQUIREMENTS_IN_HAVE_VALUES, REQUIREMENTS_MIN_VALUES, default_expire_after,
};

/// NodeClaimSpec describes the desired state of the NodeClaim
// Every `printcolumn(...)` repeats the same keys, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodeClaim",
    status = "NodeClaimStatus",
    category = "karpenter",
    derive = "PartialEq",
    doc = "NodeClaim is the Schema for the NodeClaims API",
    printcolumn(name = "Type", type_ = "string", json_path = r".metadata.labels.node\.kubernetes\.io/instance-type"),
    printcolumn(name = "Capacity", type_ = "string", json_path = r".metadata.labels.karpenter\.sh/capacity-type"),
    printcolumn(name = "Zone", type_ = "string", json_path = r".metadata.labels.topology\.kubernetes\.io/zone"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "ImageID", type_ = "string", json_path = ".status.imageID", priority = 1),
    printcolumn(name = "ID", type_ = "string", json_path = ".status.providerID", priority = 1),
    printcolumn(
        name = "NodePool",
        type_ = "string",
        json_path = r".metadata.labels.karpenter\.sh/nodepool",
        priority = 1
    ),
    printcolumn(name = "NodeClass", type_ = "string", json_path = ".spec.nodeClassRef.name", priority = 1),
    printcolumn(
        name = "Drifted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Drifted")].status"#,
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::apis::crds::required(&["nodeClassRef", "requirements"]))]
pub struct NodeClaimSpec {
    /// Taints will be applied to the NodeClaim's node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::taints")]
    pub taints: Vec<Taint>,
    /// StartupTaints are taints that are applied to nodes upon startup which are expected to be removed
    /// automatically within a short period of time, typically by a DaemonSet that tolerates the taint. Pods need
    /// not tolerate them for nodes to be provisioned for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::taints")]
    pub startup_taints: Vec<Taint>,
    /// Requirements are layered with GetLabels and applied to every node.
    #[serde(default)]
    #[schemars(length(max = 100), transform = crate::apis::crds::no_default)]
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new(REQUIREMENTS_IN_HAVE_VALUES.0).message(REQUIREMENTS_IN_HAVE_VALUES.1),
        validation = Rule::new(REQUIREMENTS_COMPARISONS_HAVE_ONE_INTEGER.0).message(REQUIREMENTS_COMPARISONS_HAVE_ONE_INTEGER.1),
        validation = Rule::new(REQUIREMENTS_MIN_VALUES.0).message(REQUIREMENTS_MIN_VALUES.1),
    )]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Resources models the resource requirements for the NodeClaim to launch
    #[serde(default, skip_serializing_if = "NodeClaimResources::is_empty")]
    pub resources: NodeClaimResources,
    /// NodeClassRef is a reference to an object that defines provider specific configuration
    #[serde(default)]
    #[schemars(transform = crate::apis::crds::no_default)]
    pub node_class_ref: NodeClassReference,
    /// TerminationGracePeriod is the maximum duration the controller will wait before forcefully deleting the pods
    /// on a node, measured from when deletion is first initiated. It takes precedence over a Pod's
    /// terminationGracePeriodSeconds, blocking PDBs and the karpenter.sh/do-not-disrupt annotation. If left
    /// undefined, the controller will wait indefinitely for pods to be drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub termination_grace_period: Option<String>,
    /// ExpireAfter is the duration the controller will wait before terminating a node, measured from when the node
    /// is created.
    #[serde(default = "default_expire_after", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"))]
    pub expire_after: Option<String>,
}

/// The resources a NodeClaim needs its node to have: the pods planned onto it, with their daemonsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeClaimResources {
    /// Requests describes the minimum required resources for the NodeClaim to launch
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::quantity_map")]
    pub requests: BTreeMap<String, Quantity>,
}

impl NodeClaim {
    /// The values an `In` requirement on `key` allows, if there is one.
    pub fn requirement_values(&self, key: &str) -> Option<&[String]> {
        self.spec.requirements.iter().find(|r| r.key == key && r.operator == "In").map(|r| r.values.as_slice())
    }

    /// Its failed launches so far, as recorded on it; also its launch attempt (see `controller::launch::client_token`).
    pub fn launch_failures(&self) -> u32 {
        let recorded = self.metadata.annotations.as_ref().and_then(|a| a.get(LAUNCH_FAILURES_ANNOTATION));
        recorded.and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl NodeClaimResources {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// NodeClaimStatus defines the observed state of NodeClaim
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    /// NodeName is the name of the corresponding node object
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// ProviderID of the corresponding node object (`aws:///<zone>/<instance id>`)
    #[serde(default, rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// ImageID is an identifier for the image that runs on the node
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Capacity is the estimated full capacity of the node
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::quantity_map")]
    pub capacity: BTreeMap<String, Quantity>,
    /// Allocatable is the estimated allocatable capacity of the node
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::quantity_map")]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Conditions contains signals for health and readiness
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::nodeclaim_conditions")]
    pub conditions: Vec<Condition>,
    /// LastPodEventTime is updated with the last time a pod was scheduled or removed from the node. A pod going
    /// terminal or terminating is also considered as removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pod_event_time: Option<Time>,
}
