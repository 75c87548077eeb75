//! `karpenter.sh/v1` NodePool, field for field as Karpenter v1 defines it, with its defaults and validation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

pub use super::ec2nodeclass::KubeletConfiguration;

/// NodePoolSpec is the top level nodepool specification. Nodepools launch nodes in response to pods that are
/// unschedulable. A single nodepool is capable of managing a diverse set of nodes. Node properties are determined
/// from a combination of nodepool and pod scheduling constraints.
// Every `printcolumn(...)` repeats the same keys, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodePool",
    status = "NodePoolStatus",
    category = "karpenter",
    derive = "PartialEq",
    doc = "NodePool is the Schema for the NodePools API",
    scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.nodes"),
    printcolumn(name = "NodeClass", type_ = "string", json_path = ".spec.template.spec.nodeClassRef.name"),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.nodes"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".spec.weight", priority = 1),
    printcolumn(name = "CPU", type_ = "string", json_path = ".status.resources.cpu", priority = 1),
    printcolumn(name = "Memory", type_ = "string", json_path = ".status.resources.memory", priority = 1)
)]
#[x_kube(
    validation = Rule::new("has(self.replicas) == has(oldSelf.replicas)")
        .message("Cannot transition NodePool between static (replicas set) and dynamic (replicas unset) provisioning modes"),
    validation = Rule::new("!has(self.replicas) || (!has(self.limits) || size(self.limits) == 0 || (size(self.limits) == 1 && 'nodes' in self.limits))")
        .message("only 'limits.nodes' is supported on static NodePools"),
    validation = Rule::new("!has(self.replicas) || !has(self.weight)").message("'weight' is not supported on static NodePools"),
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// Template contains the template of possibilities for the provisioning logic to launch a NodeClaim with.
    /// NodeClaims launched from this NodePool will often be further constrained than the template specifies.
    pub template: NodeClaimTemplate,
    /// Disruption contains the parameters that relate to Karpenter's disruption logic
    #[serde(default)]
    #[schemars(extend("default" = {"consolidateAfter": "0s"}))]
    pub disruption: Disruption,
    /// Limits define a set of bounds for provisioning capacity (resource name → quantity, e.g. `cpu: "1000"`,
    /// `memory: 1000Gi`). Limits other than limits.nodes is not supported when replicas is set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "int_or_string_map")]
    #[schemars(schema_with = "crate::apis::crds::quantity_map")]
    pub limits: BTreeMap<String, String>,
    /// Weight is the priority given to the nodepool during scheduling. A higher numerical weight indicates that
    /// this nodepool will be ordered ahead of other nodepools with lower weights. A nodepool with no weight will
    /// be treated as if it is a nodepool with a weight of 0. Weight is not supported when replicas is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
    /// Replicas is the desired number of nodes for the NodePool. When specified, the NodePool keeps this fixed
    /// number of nodes rather than scaling with pod demand (consolidation settings and weight are then ignored,
    /// and only limits.nodes is supported). Note: This field is alpha.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i64>,
}

/// NodePoolStatus defines the observed state of NodePool
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Resources is the list of resources that have been provisioned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "int_or_string_map")]
    #[schemars(schema_with = "crate::apis::crds::quantity_map")]
    pub resources: BTreeMap<String, String>,
    /// Nodes is the count of nodes associated with this NodePool
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub nodes: Option<i64>,
    /// NodeClassObservedGeneration represents the observed nodeClass generation for referenced nodeClass. If this
    /// does not match the actual NodeClass Generation, NodeRegistrationHealthy status condition on the NodePool
    /// will be reset
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class_observed_generation: Option<i64>,
    /// Conditions contains signals for health and readiness
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::nodepool_conditions")]
    pub conditions: Vec<Condition>,
}

/// Disruption contains the parameters that relate to Karpenter's disruption logic
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::apis::crds::required(&["consolidateAfter"]))]
pub struct Disruption {
    /// ConsolidateAfter is the duration the controller will wait before attempting to terminate nodes that are
    /// underutilized. Refer to ConsolidationPolicy for how underutilization is considered. When replicas is set,
    /// ConsolidateAfter is simply ignored
    #[serde(default = "zero_seconds")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"), transform = crate::apis::crds::no_default)]
    pub consolidate_after: String,
    /// ConsolidationPolicy describes which nodes Karpenter can disrupt through its consolidation algorithm. This
    /// policy defaults to "WhenEmptyOrUnderutilized" if not specified. When replicas is set, ConsolidationPolicy is
    /// simply ignored.
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
    /// Budgets is a list of Budgets. If there are multiple active budgets, Karpenter uses the most restrictive
    /// value. If left undefined, this will default to one budget with a value to 10%.
    #[serde(default = "default_budgets")]
    #[schemars(length(max = 50))]
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new("self.all(x, has(x.schedule) == has(x.duration))").message("'schedule' must be set with 'duration'"),
    )]
    pub budgets: Vec<Budget>,
}

impl Default for Disruption {
    /// What the API server fills in for a NodePool without `disruption`.
    fn default() -> Self {
        Self {
            consolidate_after: zero_seconds(),
            consolidation_policy: ConsolidationPolicy::default(),
            budgets: default_budgets(),
        }
    }
}

fn zero_seconds() -> String {
    "0s".into()
}

fn default_budgets() -> Vec<Budget> {
    vec![Budget { nodes: default_budget_nodes(), schedule: None, duration: None, reasons: Vec::new() }]
}

fn default_budget_nodes() -> String {
    "10%".into()
}

/// Which nodes consolidation may disrupt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConsolidationPolicy {
    WhenEmpty,
    #[default]
    WhenEmptyOrUnderutilized,
    Balanced,
}

/// Budget defines when Karpenter will restrict the number of Node Claims that can be terminating simultaneously.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::apis::crds::required(&["nodes"]))]
pub struct Budget {
    /// Nodes dictates the maximum number of NodeClaims owned by this NodePool that can be terminating at once: a
    /// count (`"5"`) or a percentage (`"10%"`) of the NodePool's nodes. This field is required when specifying a
    /// budget.
    #[serde(default = "default_budget_nodes")]
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// Schedule specifies when a budget begins being active, following the upstream cronjob syntax. If omitted,
    /// the budget is always active. Timezones are not supported. This field is required if Duration is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$"
    ))]
    pub schedule: Option<String>,
    /// Duration determines how long a Budget is active since each Schedule hit. Only minutes and hours are
    /// accepted, as cron does not work in seconds. If omitted, the budget is always active. This is required if
    /// Schedule is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$"))]
    pub duration: Option<String>,
    /// Reasons is a list of disruption methods that this budget applies to. If Reasons is not set, this budget
    /// applies to all methods. Otherwise, this will apply to each reason defined. Allowed reasons are
    /// Underutilized, Empty, and Drifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub reasons: Vec<DisruptionReason>,
}

/// DisruptionReason defines valid reasons for disruption budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
}

/// Template of the NodeClaims a NodePool launches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    #[serde(default, skip_serializing_if = "TemplateMetadata::is_empty")]
    pub metadata: TemplateMetadata,
    pub spec: NodeClaimTemplateSpec,
}

/// Labels and annotations every NodeClaim (and its Node) of the NodePool gets.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateMetadata {
    /// Map of string keys and values that can be used to organize and categorize (scope and select) objects.
    /// More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 100,
        "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"},
    ))]
    #[x_kube(
        merge_strategy = MapMerge::Atomic,
        validation = Rule::new(r#"self.all(x, x in ["karpenter.sh/capacity-type", "karpenter.sh/nodepool"] || !x.find("^([^/]+)").endsWith("karpenter.sh"))"#)
            .message(r#"label domain "karpenter.sh" is restricted"#),
        validation = Rule::new(r#"self.all(x, x != "karpenter.sh/nodepool")"#).message(r#"label "karpenter.sh/nodepool" is restricted"#),
        validation = Rule::new(r#"self.all(x, x != "kubernetes.io/hostname")"#).message(r#"label "kubernetes.io/hostname" is restricted"#),
        validation = Rule::new(format!(
            r#"self.all(x, x in [{AWS_LABELS_ALLOWED_IN_TEMPLATES}] || !x.find("^([^/]+)").endsWith("karpenter.k8s.aws"))"#
        ))
        .message(r#"label domain "karpenter.k8s.aws" is restricted"#),
    )]
    pub labels: BTreeMap<String, String>,
    /// Unstructured key value map stored with a resource that may be set by external tools to store and retrieve
    /// arbitrary metadata. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/annotations
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(merge_strategy = MapMerge::Granular)]
    pub annotations: BTreeMap<String, String>,
}

impl TemplateMetadata {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// The `karpenter.k8s.aws/` labels a NodePool may set or require: those of instance types and offerings. Karpenter's
/// AWS CRDs list them for template labels (with one key twice, kept so the rule is Karpenter's exactly) and for
/// requirement keys.
const AWS_LABELS_ALLOWED_IN_TEMPLATES: &str = r#""karpenter.k8s.aws/instance-tenancy", "karpenter.k8s.aws/capacity-reservation-type", "karpenter.k8s.aws/capacity-reservation-id", "karpenter.k8s.aws/capacity-reservation-interruptible", "karpenter.k8s.aws/capacity-reservation-interruptible", "karpenter.k8s.aws/ec2nodeclass", "karpenter.k8s.aws/instance-encryption-in-transit-supported", "karpenter.k8s.aws/instance-category", "karpenter.k8s.aws/instance-hypervisor", "karpenter.k8s.aws/instance-family", "karpenter.k8s.aws/instance-generation", "karpenter.k8s.aws/instance-local-nvme", "karpenter.k8s.aws/instance-size", "karpenter.k8s.aws/instance-cpu", "karpenter.k8s.aws/instance-cpu-manufacturer", "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz", "karpenter.k8s.aws/instance-memory", "karpenter.k8s.aws/instance-ebs-bandwidth", "karpenter.k8s.aws/instance-network-bandwidth", "karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-gpu-manufacturer", "karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-memory", "karpenter.k8s.aws/instance-accelerator-name", "karpenter.k8s.aws/instance-accelerator-manufacturer", "karpenter.k8s.aws/instance-accelerator-count", "karpenter.k8s.aws/instance-capability-flex", "karpenter.k8s.aws/placement-group-id", "karpenter.k8s.aws/placement-group-partition""#;
const AWS_LABELS_ALLOWED_IN_REQUIREMENTS: &str = r#""karpenter.k8s.aws/instance-tenancy", "karpenter.k8s.aws/capacity-reservation-type", "karpenter.k8s.aws/capacity-reservation-id", "karpenter.k8s.aws/capacity-reservation-interruptible", "karpenter.k8s.aws/ec2nodeclass", "karpenter.k8s.aws/instance-encryption-in-transit-supported", "karpenter.k8s.aws/instance-category", "karpenter.k8s.aws/instance-hypervisor", "karpenter.k8s.aws/instance-family", "karpenter.k8s.aws/instance-generation", "karpenter.k8s.aws/instance-local-nvme", "karpenter.k8s.aws/instance-size", "karpenter.k8s.aws/instance-cpu", "karpenter.k8s.aws/instance-cpu-manufacturer", "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz", "karpenter.k8s.aws/instance-memory", "karpenter.k8s.aws/instance-ebs-bandwidth", "karpenter.k8s.aws/instance-network-bandwidth", "karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-gpu-manufacturer", "karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-memory", "karpenter.k8s.aws/instance-accelerator-name", "karpenter.k8s.aws/instance-accelerator-manufacturer", "karpenter.k8s.aws/instance-accelerator-count", "karpenter.k8s.aws/instance-capability-flex", "karpenter.k8s.aws/placement-group-id", "karpenter.k8s.aws/placement-group-partition""#;

/// NodeClaimTemplateSpec describes the desired state of the NodeClaims of a NodePool (a NodeClaimSpec without
/// resource requests, which users do not set in a NodePool).
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::apis::crds::required(&["nodeClassRef", "requirements"]))]
pub struct NodeClaimTemplateSpec {
    /// NodeClassRef is a reference to an object that defines provider specific configuration
    #[serde(default)]
    #[schemars(transform = crate::apis::crds::no_default)]
    #[x_kube(
        validation = Rule::new("self.group == oldSelf.group").message("nodeClassRef.group is immutable"),
        validation = Rule::new("self.kind == oldSelf.kind").message("nodeClassRef.kind is immutable"),
    )]
    pub node_class_ref: NodeClassReference,
    /// Requirements are layered with GetLabels and applied to every node.
    #[serde(default)]
    #[schemars(length(max = 100), transform = crate::apis::crds::no_default, transform = restrict_nodepool_label)]
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new(REQUIREMENTS_IN_HAVE_VALUES.0).message(REQUIREMENTS_IN_HAVE_VALUES.1),
        validation = Rule::new(REQUIREMENTS_COMPARISONS_HAVE_ONE_INTEGER.0).message(REQUIREMENTS_COMPARISONS_HAVE_ONE_INTEGER.1),
        validation = Rule::new(REQUIREMENTS_MIN_VALUES.0).message(REQUIREMENTS_MIN_VALUES.1),
    )]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
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
    /// ExpireAfter is the duration the controller will wait before terminating a node, measured from when the node
    /// is created. This is useful to implement features like eventually consistent node upgrade, memory leak
    /// protection, and disruption testing.
    #[serde(default = "default_expire_after", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"))]
    pub expire_after: Option<String>,
    /// TerminationGracePeriod is the maximum duration the controller will wait before forcefully deleting the pods
    /// on a node, measured from when deletion is first initiated. It takes precedence over a Pod's
    /// terminationGracePeriodSeconds, blocking PDBs and the karpenter.sh/do-not-disrupt annotation. If left
    /// undefined, the controller will wait indefinitely for pods to be drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub termination_grace_period: Option<String>,
}

/// Nodes expire after 30 days unless the NodePool says otherwise.
pub(crate) fn default_expire_after() -> Option<String> {
    Some("720h".into())
}

/// NodeClaims carry `karpenter.sh/nodepool` as a requirement; a NodePool may not: this adds Karpenter's rule to the
/// requirement keys of a NodePool's template.
fn restrict_nodepool_label(schema: &mut schemars::Schema) {
    let rules = schema
        .as_object_mut()
        .and_then(|s| s.get_mut("items"))
        .and_then(|items| items.pointer_mut("/properties/key/x-kubernetes-validations"))
        .and_then(serde_json::Value::as_array_mut);
    if let Some(rules) = rules {
        let rule = serde_json::json!({
            "message": r#"label "karpenter.sh/nodepool" is restricted"#,
            "rule": r#"self != "karpenter.sh/nodepool""#,
        });
        rules.insert(1.min(rules.len()), rule);
    }
}

/// (rule, message) pairs on a list of requirements, shared by NodePools and NodeClaims.
pub(crate) const REQUIREMENTS_IN_HAVE_VALUES: (&str, &str) = (
    "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
    "requirements with operator 'In' must have a value defined",
);
pub(crate) const REQUIREMENTS_COMPARISONS_HAVE_ONE_INTEGER: (&str, &str) = (
    "self.all(x, (x.operator == 'Gt' || x.operator == 'Lt' || x.operator == 'Gte' || x.operator == 'Lte') ? (x.values.size() == 1 && int(x.values[0]) >= 0) : true)",
    "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
);
pub(crate) const REQUIREMENTS_MIN_VALUES: (&str, &str) = (
    "self.all(x, (x.operator == 'In' && has(x.minValues)) ? x.values.size() >= x.minValues : true)",
    "requirements with 'minValues' must have at least that many values specified in the 'values' field",
);

/// NodeClassReference points at the object (for AWS, an EC2NodeClass) with the provider's settings.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeClassReference {
    /// API group of the referent (`karpenter.k8s.aws`)
    #[schemars(regex(pattern = "^[^/]*$"))]
    #[x_kube(validation = Rule::new("self != ''").message("group may not be empty"))]
    pub group: String,
    /// Kind of the referent (`EC2NodeClass`)
    #[x_kube(validation = Rule::new("self != ''").message("kind may not be empty"))]
    pub kind: String,
    /// Name of the referent; More info: http://kubernetes.io/docs/user-guide/identifiers#names
    #[x_kube(validation = Rule::new("self != ''").message("name may not be empty"))]
    pub name: String,
}

/// A node selector requirement: a key, an operator that relates the key and values, and minValues, the number of
/// distinct values the requirement must leave open.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirementWithMinValues {
    /// The label key that the selector applies to.
    #[schemars(
        length(max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
        )
    )]
    #[x_kube(
        validation = Rule::new(r#"self in ["karpenter.sh/capacity-type", "karpenter.sh/nodepool"] || !self.find("^([^/]+)").endsWith("karpenter.sh")"#)
            .message(r#"label domain "karpenter.sh" is restricted"#),
        validation = Rule::new(r#"self != "kubernetes.io/hostname""#).message(r#"label "kubernetes.io/hostname" is restricted"#),
        validation = Rule::new(format!(
            r#"self in [{AWS_LABELS_ALLOWED_IN_REQUIREMENTS}] || !self.find("^([^/]+)").endsWith("karpenter.k8s.aws")"#
        ))
        .message(r#"label domain "karpenter.k8s.aws" is restricted"#),
    )]
    pub key: String,
    /// Represents a key's relationship to a set of values. Valid operators are In, NotIn, Exists, DoesNotExist, Gt,
    /// Lt, Gte, and Lte.
    #[schemars(extend("enum" = ["Gte", "Lte", "In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]))]
    pub operator: String,
    /// An array of string values. If the operator is In or NotIn, the values array must be non-empty. If the
    /// operator is Exists or DoesNotExist, the values array must be empty. If the operator is Gt, Lt, Gte, or Lte,
    /// the values array must have a single element, which will be interpreted as an integer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub values: Vec<String>,
    /// This field is ALPHA and can be dropped or replaced at any time. MinValues is the minimum number of unique
    /// values required to define the flexibility of the specific requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<u32>,
}

/// Resource quantities as the API server may keep them: strings, or plain numbers (`cpu: 1000`), read as strings.
fn int_or_string_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(s) => Ok((name, s)),
            serde_json::Value::Number(n) => Ok((name, n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "{name}: expected a quantity (a string or a number), got {other}"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_resources_read_numbers_and_strings() {
        let spec: NodePoolSpec = serde_json::from_value(serde_json::json!({
            "template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}, "requirements": []}},
            "limits": {"cpu": 1000, "memory": "1000Gi", "nvidia.com/gpu": 1.5},
        }))
        .expect("a NodePool spec");
        assert_eq!(spec.limits["cpu"], "1000");
        assert_eq!(spec.limits["memory"], "1000Gi");
        assert_eq!(spec.limits["nvidia.com/gpu"], "1.5");
        let bad = serde_json::from_value::<NodePoolStatus>(serde_json::json!({"resources": {"cpu": [1]}}));
        assert!(bad.expect_err("a list is no quantity").to_string().contains("cpu: expected a quantity"));
    }

    #[test]
    fn a_missing_disruption_or_budget_gets_karpenters_defaults() {
        let spec: NodePoolSpec = serde_json::from_value(serde_json::json!({"template": {"spec": {}}})).expect("spec");
        assert_eq!(spec.disruption, Disruption::default());
        assert_eq!(spec.disruption.consolidate_after, "0s");
        assert_eq!(spec.disruption.consolidation_policy, ConsolidationPolicy::WhenEmptyOrUnderutilized);
        assert_eq!(spec.disruption.budgets[0].nodes, "10%");
        assert_eq!(spec.template.spec.expire_after.as_deref(), Some("720h"));
        let budget: Budget =
            serde_json::from_value(serde_json::json!({"schedule": "@daily", "duration": "10m"})).expect("budget");
        assert_eq!(budget.nodes, "10%");
    }
}
