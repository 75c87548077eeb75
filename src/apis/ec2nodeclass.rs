//! `karpenter.k8s.aws/v1` EC2NodeClass: how nodes are launched on AWS (subnets, security groups, AMIs, role, user
//! data, kubelet settings, disks, metadata options), field for field as Karpenter v1 defines it, plus nodesmith's
//! one addition, `prefixDelegation`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NodeSelectorRequirement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::allocatable::{EvictionSignals, EvictionThresholds, NodeOverhead, Reserved, Threshold};
use crate::catalog::instance_type::{DEFAULT_EPHEMERAL_STORAGE_BYTES, EphemeralStorage, InstanceTypeInfo};
use crate::catalog::max_pods::MaxPodsSettings;
use crate::catalog::resources::{ResourceName, Resources, parse_quantity};

/// The rule every selector term's tag map carries.
const NO_EMPTY_TAGS: (&str, &str) =
    ("self.all(k, k != '' && self[k] != '')", "empty tag keys or values aren't supported");

/// EC2NodeClassSpec is the top level specification for the AWS provider: what is needed to launch instances in
/// AWS.
// Every `printcolumn(...)` repeats the same keys, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "karpenter.k8s.aws",
    version = "v1",
    kind = "EC2NodeClass",
    status = "EC2NodeClassStatus",
    category = "karpenter",
    shortname = "ec2nc",
    shortname = "ec2ncs",
    derive = "PartialEq",
    doc = "EC2NodeClass is the Schema for the EC2NodeClass API",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role", priority = 1)
)]
#[x_kube(
    validation = Rule::new("(has(self.role) && !has(self.instanceProfile)) || (!has(self.role) && has(self.instanceProfile))")
        .message("must specify exactly one of ['role', 'instanceProfile']"),
    validation = alias_family_rule("al2", "AL2", "an AL2 alias"),
    validation = alias_family_rule("al2023", "AL2023", "an AL2023 alias"),
    validation = alias_family_rule("bottlerocket", "Bottlerocket", "a Bottlerocket alias"),
    validation = alias_family_rule("windows2019", "Windows2019", "a Windows2019 alias"),
    validation = alias_family_rule("windows2022", "Windows2022", "a Windows2022 alias"),
    validation = alias_family_rule("windows2025", "Windows2025", "a Windows2025 alias"),
    validation = Rule::new("self.amiSelectorTerms.exists(x, has(x.alias)) ? true : has(self.amiFamily)")
        .message("must specify amiFamily if amiSelectorTerms does not contain an alias"),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::apis::crds::required(&["amiSelectorTerms", "securityGroupSelectorTerms", "subnetSelectorTerms"]))]
pub struct EC2NodeClassSpec {
    /// SubnetSelectorTerms is a list of subnet selector terms. The terms are ORed.
    #[serde(default)]
    #[schemars(length(max = 30), transform = crate::apis::crds::no_default)]
    #[x_kube(
        validation = Rule::new("self.size() != 0").message("subnetSelectorTerms cannot be empty"),
        validation = Rule::new("self.all(x, has(x.tags) || has(x.id))").message("expected at least one, got none, ['tags', 'id']"),
        validation = Rule::new("!self.all(x, has(x.id) && has(x.tags))")
            .message("'id' is mutually exclusive, cannot be set with a combination of other fields in a subnet selector term"),
    )]
    pub subnet_selector_terms: Vec<SubnetSelectorTerm>,
    /// SecurityGroupSelectorTerms is a list of security group selector terms. The terms are ORed.
    #[serde(default)]
    #[schemars(length(max = 30), transform = crate::apis::crds::no_default)]
    #[x_kube(
        validation = Rule::new("self.size() != 0").message("securityGroupSelectorTerms cannot be empty"),
        validation = Rule::new("self.all(x, has(x.tags) || has(x.id) || has(x.name))")
            .message("expected at least one, got none, ['tags', 'id', 'name']"),
        validation = Rule::new("!self.all(x, has(x.id) && (has(x.tags) || has(x.name)))")
            .message("'id' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term"),
        validation = Rule::new("!self.all(x, has(x.name) && (has(x.tags) || has(x.id)))")
            .message("'name' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term"),
    )]
    pub security_group_selector_terms: Vec<SecurityGroupSelectorTerm>,
    /// CapacityReservationSelectorTerms is a list of capacity reservation selector terms. Each term is ORed
    /// together to determine the set of eligible capacity reservations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 30))]
    #[x_kube(
        validation = Rule::new("self.all(x, has(x.tags) || has(x.id) || has(x.instanceMatchCriteria))")
            .message("expected at least one, got none, ['tags', 'id', 'instanceMatchCriteria']"),
        validation = Rule::new("!self.all(x, has(x.id) && (has(x.tags) || has(x.ownerID) || has(x.instanceMatchCriteria)))")
            .message("'id' is mutually exclusive, cannot be set along with other fields in a capacity reservation selector term"),
    )]
    pub capacity_reservation_selector_terms: Vec<CapacityReservationSelectorTerm>,
    /// PlacementGroupSelector defines the name or the id of the placement to resolve with the nodeclass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_group_selector: Option<PlacementGroupSelector>,
    /// AssociatePublicIPAddress controls if public IP addresses are assigned to instances that are launched with
    /// the nodeclass.
    #[serde(default, rename = "associatePublicIPAddress", skip_serializing_if = "Option::is_none")]
    pub associate_public_ip_address: Option<bool>,
    /// AMISelectorTerms is a list of or ami selector terms. The terms are ORed.
    #[serde(default)]
    #[schemars(length(min = 1, max = 30), transform = crate::apis::crds::no_default)]
    #[x_kube(
        validation = Rule::new("self.all(x, has(x.tags) || has(x.id) || has(x.name) || has(x.alias) || has(x.ssmParameter))")
            .message("expected at least one, got none, ['tags', 'id', 'name', 'alias', 'ssmParameter']"),
        validation = Rule::new("!self.exists(x, has(x.id) && (has(x.alias) || has(x.tags) || has(x.name) || has(x.owner)))")
            .message("'id' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"),
        validation = Rule::new("!self.exists(x, has(x.alias) && (has(x.id) || has(x.tags) || has(x.name) || has(x.owner)))")
            .message("'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"),
        validation = Rule::new("!(self.exists(x, has(x.alias)) && self.size() != 1)")
            .message("'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms"),
    )]
    pub ami_selector_terms: Vec<AmiSelectorTerm>,
    /// AMIFamily dictates the UserData format and default BlockDeviceMappings used when generating launch
    /// templates. This field is optional when using an alias amiSelectorTerm, and the value will be inferred from
    /// the alias' family. When an alias is specified, this field may only be set to its corresponding family or
    /// 'Custom'. If no alias is specified, this field is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["AL2", "AL2023", "Bottlerocket", "Custom", "Windows2019", "Windows2022", "Windows2025"]))]
    pub ami_family: Option<String>,
    /// UserData to be applied to the provisioned nodes. It must be in the appropriate format based on the
    /// AMIFamily in use. nodesmith merges the fields it needs (cluster, max pods, labels, taints) into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Role is the AWS identity that nodes use. This field is mutually exclusive from instanceProfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("role cannot be empty"))]
    pub role: Option<String>,
    /// InstanceProfile is the AWS entity that instances use. This field is mutually exclusive from role. The
    /// instance profile should already have a role assigned to it that the controller has PassRole permission on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("instanceProfile cannot be empty"))]
    pub instance_profile: Option<String>,
    /// Tags to be applied on ec2 resources like instances and launch templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(
        validation = Rule::new("self.all(k, k != '')").message("empty tag keys aren't supported"),
        validation = Rule::new("self.all(k, k !='eks:eks-cluster-name')").message("tag contains a restricted tag matching eks:eks-cluster-name"),
        validation = Rule::new("self.all(k, !k.startsWith('kubernetes.io/cluster') )")
            .message("tag contains a restricted tag matching kubernetes.io/cluster/"),
        validation = Rule::new("self.all(k, k != 'karpenter.sh/nodepool')").message("tag contains a restricted tag matching karpenter.sh/nodepool"),
        validation = Rule::new("self.all(k, k !='karpenter.sh/nodeclaim')").message("tag contains a restricted tag matching karpenter.sh/nodeclaim"),
        validation = Rule::new("self.all(k, k !='karpenter.k8s.aws/ec2nodeclass')")
            .message("tag contains a restricted tag matching karpenter.k8s.aws/ec2nodeclass"),
    )]
    pub tags: BTreeMap<String, String>,
    /// Kubelet defines args to be used when configuring kubelet on provisioned nodes. They are a subset of the
    /// upstream types, recognizing not all options may be supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
    /// BlockDeviceMappings to be applied to provisioned nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(
        validation = Rule::new("self.filter(x, has(x.rootVolume)?x.rootVolume==true:false).size() <= 1")
            .message("must have only one blockDeviceMappings with rootVolume"),
    )]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// InstanceStorePolicy specifies how to handle instance-store disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["RAID0"]))]
    pub instance_store_policy: Option<String>,
    /// DetailedMonitoring controls if detailed monitoring is enabled for instances that are launched
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_monitoring: Option<bool>,
    /// MetadataOptions for the generated launch template of provisioned nodes: the exposure of the Instance
    /// Metadata Service (IMDS). The default requires IMDSv2 and keeps IMDS out of reach of pods (hop limit 1).
    #[serde(default = "default_metadata_options", skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// Context is a Reserved field in EC2 APIs https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateFleet.html
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// NetworkInterfaces specifies the network interface configurations to be attached to provisioned instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 150))]
    #[x_kube(
        validation = Rule::new("self.size() == 0 || self.exists(x, x.deviceIndex == 0 && x.networkCardIndex == 0 && x.interfaceType == 'interface')")
            .message("networkInterfaces must include a primary interface with interfaceType='interface'"),
        validation = Rule::new("self.all(x, self.filter(y, x.networkCardIndex == y.networkCardIndex && x.deviceIndex == y.deviceIndex).size() == 1 && (x.interfaceType != 'efa-only' || self.filter(y, x.networkCardIndex == y.networkCardIndex && y.interfaceType == 'efa-only').size() == 1))")
            .message("networkInterfaces must not have duplicate networkCardIndex and deviceIndex pairs, and can have at most one efa device per network card"),
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    /// IPPrefixCount sets the number of IPv4 prefixes to be automatically assigned to the network interface.
    #[serde(default, rename = "ipPrefixCount", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ip_prefix_count: Option<i32>,
    /// ConnectionTracking configures idle connection tracking timeouts for the ENIs of the launch template.
    /// EFA-only interfaces are excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_tracking: Option<ConnectionTracking>,
    /// CPUOptions defines the CPU options for the instance.
    #[serde(default, rename = "cpuOptions", skip_serializing_if = "Option::is_none")]
    pub cpu_options: Option<CpuOptions>,
    /// nodesmith's addition: whether the VPC CNI runs with prefix delegation (a /28 prefix per ENI slot, many more
    /// pods per node), which sets the nodes' max pods. Auto (the default, also when unset) reads
    /// ENABLE_PREFIX_DELEGATION from the aws-node DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_delegation: Option<PrefixDelegation>,
}

/// The two halves of an alias rule: a given family's alias allows only that amiFamily (or Custom).
fn alias_family_rule(alias: &str, family: &str, what: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!has(self.amiFamily) || (self.amiSelectorTerms.exists(x, has(x.alias) && x.alias.find('^[^@]+') == '{alias}') ? (self.amiFamily == 'Custom' || self.amiFamily == '{family}') : true)"
    ))
    .message(format!("if set, amiFamily must be '{family}' or 'Custom' when using {what}").as_str())
}

/// What the API server fills in for an EC2NodeClass without `metadataOptions`: IMDSv2 only, hop limit 1.
fn default_metadata_options() -> Option<MetadataOptions> {
    Some(MetadataOptions::default())
}

/// nodesmith's prefix delegation setting for an EC2NodeClass: `Auto` reads `ENABLE_PREFIX_DELEGATION` from the
/// cluster's aws-node DaemonSet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PrefixDelegation {
    #[default]
    Auto,
    Enabled,
    Disabled,
}

/// SubnetSelectorTerm defines selection logic for a subnet used to launch nodes. If multiple fields are used for
/// selection, the requirements are ANDed.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubnetSelectorTerm {
    /// Tags is a map of key/value tags used to select subnets. Specifying '*' for a value selects all values for a
    /// given tag key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new(NO_EMPTY_TAGS.0).message(NO_EMPTY_TAGS.1))]
    pub tags: BTreeMap<String, String>,
    /// ID is the subnet id in EC2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "subnet-[0-9a-z]+"))]
    pub id: Option<String>,
}

/// SecurityGroupSelectorTerm defines selection logic for a security group used to launch nodes. If multiple fields
/// are used for selection, the requirements are ANDed.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupSelectorTerm {
    /// Tags is a map of key/value tags used to select security groups. Specifying '*' for a value selects all
    /// values for a given tag key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new(NO_EMPTY_TAGS.0).message(NO_EMPTY_TAGS.1))]
    pub tags: BTreeMap<String, String>,
    /// ID is the security group id in EC2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "sg-[0-9a-z]+"))]
    pub id: Option<String>,
    /// Name is the security group name in EC2. This value is the name field, which is different from the name tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// CapacityReservationSelectorTerm selects capacity reservations nodes may launch into.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReservationSelectorTerm {
    /// Tags is a map of key/value tags used to select capacity reservations. Specifying '*' for a value selects all
    /// values for a given tag key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new(NO_EMPTY_TAGS.0).message(NO_EMPTY_TAGS.1))]
    pub tags: BTreeMap<String, String>,
    /// ID is the capacity reservation id in EC2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^cr-[0-9a-z]+$"))]
    pub id: Option<String>,
    /// The id of the AWS account that owns the capacity reservation.
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]{12}$"))]
    pub owner_id: Option<String>,
    /// InstanceMatchCriteria specifies how instances are matched to capacity reservations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["open", "targeted"]))]
    pub instance_match_criteria: Option<String>,
}

/// PlacementGroupSelector names a placement group by name or by id.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.name) || has(self.id)").message("expected at least one, got none, ['name', 'id']"),
    validation = Rule::new("!(has(self.name) && has(self.id))").message("'name' and 'id' are mutually exclusive"),
)]
pub struct PlacementGroupSelector {
    /// ID is the placement group id in EC2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^pg-[0-9a-z]+$"))]
    pub id: Option<String>,
    /// Name is the placement group name in EC2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub name: Option<String>,
}

/// AMISelectorTerm defines selection logic for an ami used to launch nodes. If multiple fields are used for
/// selection, the requirements are ANDed.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmiSelectorTerm {
    /// Alias specifies which EKS optimized AMI to select, as "family@version": families al2, al2023, bottlerocket,
    /// windows2019, windows2022, windows2025; the version is a release (`al2023@v20240625`) or `latest` (the only
    /// version Windows families accept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 30))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-zA-Z0-9]+@.+$')")
            .message("'alias' is improperly formatted, must match the format 'family@version'"),
        validation = Rule::new("self.split('@')[0] in ['al2','al2023','bottlerocket','windows2019','windows2022','windows2025']")
            .message("family is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022', 'windows2025'"),
        validation = Rule::new("self.split('@')[0] in ['windows2019','windows2022','windows2025'] ? self.split('@')[1] == 'latest' : true")
            .message("windows families may only specify version 'latest'"),
    )]
    pub alias: Option<String>,
    /// Tags is a map of key/value tags used to select amis. Specifying '*' for a value selects all values for a
    /// given tag key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new(NO_EMPTY_TAGS.0).message(NO_EMPTY_TAGS.1))]
    pub tags: BTreeMap<String, String>,
    /// ID is the ami id in EC2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "ami-[0-9a-z]+"))]
    pub id: Option<String>,
    /// Name is the ami name in EC2. This value is the name field, which is different from the name tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner is the owner for the ami. You can specify a combination of AWS account IDs, "self", "amazon", and
    /// "aws-marketplace"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// SSMParameter is the name (or ARN) of the SSM parameter containing the Image ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
}

/// Eviction signals the kubelet accepts in evictionHard, evictionSoft and evictionSoftGracePeriod.
const EVICTION_SIGNALS: &str = "['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available']";

/// A percentage or a quantity, as eviction thresholds are written.
const EVICTION_PATTERN: &str = r"^((\d{1,2}(\.\d{1,2})?|100(\.0{1,2})?)%||(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?)$";

fn eviction_keys_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.all(x, x in {EVICTION_SIGNALS})"))
        .message(format!("valid keys for {field} are {EVICTION_SIGNALS}").as_str())
}

fn reserved_keys_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new("self.all(x, x=='cpu' || x=='memory' || x=='ephemeral-storage' || x=='pid')")
        .message(format!("valid keys for {field} are ['cpu','memory','ephemeral-storage','pid']").as_str())
}

fn reserved_not_negative_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new("self.all(x, !self[x].startsWith('-'))")
        .message(format!("{field} value cannot be a negative resource quantity").as_str())
}

/// KubeletConfiguration: the kubelet settings an EC2NodeClass may set, a subset of the kubelet's own
/// configuration with the same names.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.imageGCHighThresholdPercent) && has(self.imageGCLowThresholdPercent) ?  self.imageGCHighThresholdPercent > self.imageGCLowThresholdPercent  : true")
        .message("imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent"),
    validation = Rule::new("has(self.evictionSoft) ? self.evictionSoft.all(e, (e in self.evictionSoftGracePeriod)):true")
        .message("evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod"),
    validation = Rule::new("has(self.evictionSoftGracePeriod) ? self.evictionSoftGracePeriod.all(e, (e in self.evictionSoft)):true")
        .message("evictionSoftGracePeriod OwnerKey does not have a matching evictionSoft"),
)]
pub struct KubeletConfiguration {
    /// clusterDNS is a list of IP addresses for the cluster DNS server. Note that not all providers may use all
    /// addresses.
    #[serde(default, rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    /// MaxPods is an override for the maximum number of pods that can run on a worker node instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 0))]
    pub max_pods: Option<u32>,
    /// PodsPerCore is an override for the number of pods that can run on a worker node instance based on the
    /// number of cpu cores. This value cannot exceed MaxPods, so, if MaxPods is a lower value, that value will be
    /// used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 0))]
    pub pods_per_core: Option<u32>,
    /// SystemReserved contains resources reserved for OS system daemons and kernel memory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": "string", "pattern": crate::apis::crds::QUANTITY_PATTERN}))]
    #[x_kube(validation = reserved_keys_rule("systemReserved"), validation = reserved_not_negative_rule("systemReserved"))]
    pub system_reserved: BTreeMap<String, String>,
    /// KubeReserved contains resources reserved for Kubernetes system components.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": "string", "pattern": crate::apis::crds::QUANTITY_PATTERN}))]
    #[x_kube(validation = reserved_keys_rule("kubeReserved"), validation = reserved_not_negative_rule("kubeReserved"))]
    pub kube_reserved: BTreeMap<String, String>,
    /// EvictionHard is the map of signal names to quantities that define hard eviction thresholds
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": "string", "pattern": EVICTION_PATTERN}))]
    #[x_kube(validation = eviction_keys_rule("evictionHard"))]
    pub eviction_hard: BTreeMap<String, String>,
    /// EvictionSoft is the map of signal names to quantities that define soft eviction thresholds
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": "string", "pattern": EVICTION_PATTERN}))]
    #[x_kube(validation = eviction_keys_rule("evictionSoft"))]
    pub eviction_soft: BTreeMap<String, String>,
    /// EvictionSoftGracePeriod is the map of signal names to quantities that define grace periods for each
    /// eviction signal
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = eviction_keys_rule("evictionSoftGracePeriod"))]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// EvictionMaxPodGracePeriod is the maximum allowed grace period (in seconds) to use when terminating pods in
    /// response to soft eviction thresholds being met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// ImageGCHighThresholdPercent is the percent of disk usage after which image garbage collection is always
    /// run. When specified, the value must be greater than ImageGCLowThresholdPercent.
    #[serde(default, rename = "imageGCHighThresholdPercent", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// ImageGCLowThresholdPercent is the percent of disk usage before which image garbage collection is never run.
    /// When specified, the value must be less than imageGCHighThresholdPercent
    #[serde(default, rename = "imageGCLowThresholdPercent", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// CPUCFSQuota enables CPU CFS quota enforcement for containers that specify CPU limits.
    #[serde(default, rename = "cpuCFSQuota", skip_serializing_if = "Option::is_none")]
    pub cpu_cfs_quota: Option<bool>,
}

/// A block device of the launch template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceMapping {
    /// The device name (for example, /dev/sdh or xvdh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// EBS contains parameters used to automatically set up EBS volumes when an instance is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs: Option<BlockDevice>,
    /// RootVolume is a flag indicating if this device is mounted as kubelet root dir. You can configure at most one
    /// root volume in BlockDeviceMappings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_volume: bool,
}

/// An EBS volume.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.snapshotID) || has(self.volumeSize)").message("snapshotID or volumeSize must be defined"),
    validation = Rule::new("!has(self.volumeInitializationRate) || (has(self.snapshotID) && self.snapshotID != '')")
        .message("snapshotID must be set when volumeInitializationRate is set"),
)]
pub struct BlockDevice {
    /// DeleteOnTermination indicates whether the EBS volume is deleted on instance termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// Encrypted indicates whether the EBS volume is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// IOPS is the number of I/O operations per second (IOPS): provisioned for gp3, io1 and io2; the baseline for
    /// gp2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i64>,
    /// Identifier (key ID, key alias, key ARN, or alias ARN) of the customer managed KMS key to use for EBS
    /// encryption.
    #[serde(default, rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// SnapshotID is the ID of an EBS snapshot
    #[serde(default, rename = "snapshotID", skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Throughput to provision for a gp3 volume, with a maximum of 1,000 MiB/s. Valid Range: Minimum value of 125.
    /// Maximum value of 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i64>,
    /// VolumeInitializationRate is the Amazon EBS Provisioned Rate for Volume Initialization, in MiB/s, at which to
    /// download the snapshot blocks from Amazon S3 to the volume. Only allowed if SnapshotID is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 300))]
    pub volume_initialization_rate: Option<i32>,
    /// VolumeSize in `Gi`, `G`, `Ti`, or `T`. You must specify either a snapshot ID or a volume size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^((?:[1-9][0-9]{0,3}|[1-4][0-9]{4}|[5][0-8][0-9]{3}|59000)Gi|(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|[6][0-3][0-9]{3}|64000)G|([1-9]||[1-5][0-7]|58)Ti|([1-9]||[1-5][0-9]|6[0-3]|64)T)$"
    ))]
    pub volume_size: Option<String>,
    /// VolumeType of the block device (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/EBSVolumeTypes.html).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]))]
    pub volume_type: Option<String>,
}

/// MetadataOptions: how instances expose the Instance Metadata Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    /// HTTPEndpoint enables or disables the HTTP metadata endpoint on provisioned nodes.
    #[serde(default = "enabled", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub http_endpoint: Option<String>,
    /// HTTPProtocolIPv6 enables or disables the IPv6 endpoint for the instance metadata service on provisioned
    /// nodes.
    #[serde(default = "disabled", rename = "httpProtocolIPv6", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub http_protocol_ipv6: Option<String>,
    /// HTTPPutResponseHopLimit is the desired HTTP PUT response hop limit for instance metadata requests (1 to
    /// 64); 1 keeps the metadata service out of reach of pods that do not use the host network.
    #[serde(default = "one", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: Option<i64>,
    /// HTTPTokens determines the state of token usage for instance metadata requests: "required" is IMDSv2 only.
    #[serde(default = "required", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["required", "optional"]))]
    pub http_tokens: Option<String>,
}

impl EC2NodeClass {
    /// The AMI family as the class names it: its alias's (`bottlerocket@latest` → `bottlerocket`), else
    /// `amiFamily`, else AL2023.
    pub fn ami_family_name(&self) -> &str {
        let alias = self.spec.ami_selector_terms.iter().find_map(|t| t.alias.as_deref());
        alias.or(self.spec.ami_family.as_deref()).unwrap_or("AL2023")
    }

    /// Where its nodes' ephemeral storage lives, as Karpenter reckons it: with `instanceStorePolicy: RAID0` the
    /// instance store where a type has one; else the mapping marked `rootVolume`, else the family's kubelet
    /// device (`/dev/xvda`; Bottlerocket's data volume `/dev/xvdb`; a Custom AMI's last mapping), else 20Gi.
    pub fn ephemeral_storage(&self) -> EphemeralStorage {
        let size = |m: &BlockDeviceMapping| {
            let size = m.ebs.as_ref()?.volume_size.as_deref()?;
            parse_quantity(size, ResourceName::EphemeralStorage).ok()
        };
        let mappings = &self.spec.block_device_mappings;
        let family = self.ami_family_name().split('@').next().unwrap_or_default().to_ascii_lowercase();
        let kubelet_device = match family.as_str() {
            "custom" => mappings.last(),
            "bottlerocket" => mappings.iter().find(|m| m.device_name.as_deref() == Some("/dev/xvdb")),
            _ => mappings.iter().find(|m| m.device_name.as_deref() == Some("/dev/xvda")),
        };
        let volume = mappings.iter().find(|m| m.root_volume).or(kubelet_device).and_then(size);
        EphemeralStorage {
            volume_bytes: volume.unwrap_or(DEFAULT_EPHEMERAL_STORAGE_BYTES),
            instance_store_raid0: self.spec.instance_store_policy.as_deref() == Some("RAID0"),
        }
    }

    /// What its nodes' kubelets hold back from pods: the EKS defaults, changed by `kubelet.kubeReserved`,
    /// `systemReserved`, and the `memory.available` / `nodefs.available` signals of `evictionHard` and
    /// `evictionSoft` (the higher of the two, as Karpenter reckons). An unreadable value is an error naming its field.
    pub fn node_overhead(&self) -> Result<NodeOverhead, KubeletSettingError> {
        let Some(kubelet) = &self.spec.kubelet else { return Ok(NodeOverhead::default()) };
        let signals = |field: &str, map: &BTreeMap<String, String>| -> Result<EvictionSignals, KubeletSettingError> {
            Ok(EvictionSignals {
                memory: setting(field, map, "memory.available", threshold)?,
                nodefs: setting(field, map, "nodefs.available", threshold)?,
            })
        };
        let eviction = EvictionThresholds {
            hard: signals("evictionHard", &kubelet.eviction_hard)?,
            soft: signals("evictionSoft", &kubelet.eviction_soft)?,
        };
        Ok(NodeOverhead {
            kube_reserved: reserved("kubeReserved", &kubelet.kube_reserved)?,
            system_reserved: reserved("systemReserved", &kubelet.system_reserved)?,
            eviction,
            ..NodeOverhead::default()
        })
    }

    /// What a node of `instance_type` from this class reports: (capacity, allocatable).
    pub fn node_resources(
        &self,
        instance_type: &InstanceTypeInfo,
        cni_prefix_delegation: bool,
    ) -> (Resources, Resources) {
        let (max_pods, storage) = (self.max_pods_settings(cni_prefix_delegation), self.ephemeral_storage());
        // A class whose settings do not parse launches nothing (it is not valid); the defaults serve until then.
        let overhead = self.node_overhead().unwrap_or_default();
        (
            instance_type.capacity_with(max_pods, &overhead, storage),
            instance_type.allocatable_with(max_pods, &overhead, storage),
        )
    }

    /// The pod density settings this class gives its nodes; `cni_prefix_delegation` is what the cluster's VPC CNI
    /// does, which `prefixDelegation: Auto` (or unset) follows.
    pub fn max_pods_settings(&self, cni_prefix_delegation: bool) -> MaxPodsSettings {
        let kubelet = self.spec.kubelet.as_ref();
        MaxPodsSettings {
            prefix_delegation: match self.spec.prefix_delegation {
                Some(PrefixDelegation::Enabled) => true,
                Some(PrefixDelegation::Disabled) => false,
                None | Some(PrefixDelegation::Auto) => cni_prefix_delegation,
            },
            reserved_enis: 0,
            max_pods: kubelet.and_then(|k| k.max_pods),
            pods_per_core: kubelet.and_then(|k| k.pods_per_core),
        }
    }
}

/// A kubelet setting of an EC2NodeClass that nodesmith cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not a quantity or a percentage")]
pub struct KubeletSettingError {
    pub field: String,
    pub value: String,
}

/// `10%` or a quantity such as `500Mi`.
fn threshold(text: &str) -> Option<Threshold> {
    match text.trim().strip_suffix('%') {
        Some(percent) => {
            percent.trim().parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).map(Threshold::Percent)
        }
        None => parse_quantity(text, ResourceName::Memory).ok().map(Threshold::Bytes),
    }
}

/// A `kubeReserved` / `systemReserved` map; `pid` reserves process IDs, which pods do not request.
fn reserved(field: &str, map: &BTreeMap<String, String>) -> Result<Reserved, KubeletSettingError> {
    let quantity = |resource| move |text: &str| parse_quantity(text, resource).ok();
    Ok(Reserved {
        cpu_millis: setting(field, map, "cpu", quantity(ResourceName::Cpu))?,
        memory_bytes: setting(field, map, "memory", quantity(ResourceName::Memory))?,
        ephemeral_storage_bytes: setting(field, map, "ephemeral-storage", quantity(ResourceName::EphemeralStorage))?,
    })
}

/// `map[key]` of the kubelet setting `field`, read by `parse`; an unreadable value is an error naming
/// `kubelet.<field>[<key>]`.
fn setting<T>(
    field: &str,
    map: &BTreeMap<String, String>,
    key: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, KubeletSettingError> {
    map.get(key)
        .map(|text| {
            parse(text)
                .ok_or_else(|| KubeletSettingError { field: format!("kubelet.{field}[{key}]"), value: text.clone() })
        })
        .transpose()
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            http_endpoint: enabled(),
            http_protocol_ipv6: disabled(),
            http_put_response_hop_limit: one(),
            http_tokens: required(),
        }
    }
}

fn enabled() -> Option<String> {
    Some("enabled".into())
}

fn disabled() -> Option<String> {
    Some("disabled".into())
}

fn one() -> Option<i64> {
    Some(1)
}

fn required() -> Option<String> {
    Some("required".into())
}

/// NetworkInterface specifies the configuration for a network interface to be attached to provisioned instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// NetworkCardIndex is the index of the network card to attach the interface to.
    #[schemars(range(min = 0))]
    pub network_card_index: i32,
    /// DeviceIndex is the device index for the network interface attachment.
    #[schemars(range(min = 0))]
    pub device_index: i32,
    /// InterfaceType is the type of network interface. Valid values are "interface" and "efa-only".
    #[schemars(extend("enum" = ["interface", "efa-only"]))]
    pub interface_type: String,
}

/// ConnectionTracking: idle connection tracking timeouts (seconds) of the instances' ENIs.
#[derive(KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.tcpEstablishedTimeout) || has(self.udpStreamTimeout) || has(self.udpTimeout)")
        .message("at least one of tcpEstablishedTimeout, udpStreamTimeout, or udpTimeout must be set"),
)]
pub struct ConnectionTracking {
    /// TCPEstablishedTimeout is the timeout (in seconds) for idle TCP connections in an established state. Value
    /// must be between 60 and 432,000 (5 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 432000))]
    pub tcp_established_timeout: Option<i32>,
    /// UDPStreamTimeout is the timeout (in seconds) for idle UDP "stream" flows that have seen more than one
    /// request-response transaction. Value must be between 60 and 180.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 180))]
    pub udp_stream_timeout: Option<i32>,
    /// UDPTimeout is the timeout (in seconds) for idle UDP flows that have seen traffic only in a single direction
    /// or a single request-response transaction. Value must be between 30 and 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 60))]
    pub udp_timeout: Option<i32>,
}

/// CPUOptions defines the CPU options for the instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuOptions {
    /// NestedVirtualization enables or disables nested virtualization on the instance (only instance types that
    /// support it are then chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub nested_virtualization: Option<String>,
}

/// EC2NodeClassStatus contains the resolved state of the EC2NodeClass
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    /// Subnets contains the current subnet values that are available to the cluster under the subnet selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<SubnetStatus>,
    /// SecurityGroups contains the current security group values that are available to the cluster under the
    /// SecurityGroups selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<SecurityGroupStatus>,
    /// CapacityReservations contains the current capacity reservation values that are available to this NodeClass
    /// under the CapacityReservation selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_reservations: Vec<CapacityReservation>,
    /// AMI contains the current AMI values that are available to the cluster under the AMI selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<AmiStatus>,
    /// InstanceProfile contains the resolved instance profile for the role
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Conditions contains signals for health and readiness
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apis::crds::ec2nodeclass_conditions")]
    pub conditions: Vec<Condition>,
}

/// Subnet contains resolved Subnet selector values utilized for node launch
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubnetStatus {
    /// ID of the subnet
    pub id: String,
    /// The associated availability zone
    pub zone: String,
    /// The associated availability zone ID
    #[serde(default, rename = "zoneID", skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

/// SecurityGroup contains resolved SecurityGroup selector values utilized for node launch
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecurityGroupStatus {
    /// ID of the security group
    pub id: String,
    /// Name of the security group
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// AMI contains resolved AMI selector values utilized for node launch
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AmiStatus {
    /// ID of the AMI
    pub id: String,
    /// Name of the AMI
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecation status of the AMI
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    /// Requirements of the AMI to be utilized on an instance type
    #[schemars(schema_with = "crate::apis::crds::node_selector_requirements")]
    pub requirements: Vec<NodeSelectorRequirement>,
}

/// A capacity reservation the EC2NodeClass's selector terms found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReservation {
    /// The availability zone the capacity reservation is available in.
    pub availability_zone: String,
    /// The time at which the capacity reservation expires. Once expired, the reserved capacity is released and no
    /// more instances can launch into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// The id for the capacity reservation.
    #[schemars(regex(pattern = "^cr-[0-9a-z]+$"))]
    pub id: String,
    /// Indicates the type of instance launches the capacity reservation accepts.
    #[schemars(extend("enum" = ["open", "targeted"]))]
    pub instance_match_criteria: String,
    /// The instance type for the capacity reservation.
    pub instance_type: String,
    /// Indicates whether this capacity reservation is interruptible
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interruptible: bool,
    /// The ID of the AWS account that owns the capacity reservation.
    #[serde(rename = "ownerID")]
    #[schemars(regex(pattern = "^[0-9]{12}$"))]
    pub owner_id: String,
    /// The type of capacity reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "default", "enum" = ["default", "capacity-block"]))]
    pub reservation_type: Option<String>,
    /// The state of the capacity reservation. A capacity reservation is considered to be expiring if it is within
    /// the EC2 reclamation window. Only capacity-block reservations may be in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "active", "enum" = ["active", "expiring"]))]
    pub state: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::catalog::embedded_instance_types;

    fn class(spec: serde_json::Value) -> EC2NodeClass {
        let mut spec = spec;
        spec["role"] = json!("nodes");
        spec["subnetSelectorTerms"] = json!([{"tags": {"k": "v"}}]);
        spec["securityGroupSelectorTerms"] = json!([{"tags": {"k": "v"}}]);
        serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": spec})).expect("an EC2NodeClass")
    }

    fn gib(n: i64) -> i64 {
        n << 30
    }

    #[test]
    fn ephemeral_storage_comes_from_the_volume_the_kubelet_runs_on() {
        let volume = |device: &str, size: &str, root: bool| json!({"deviceName": device, "ebs": {"volumeSize": size}, "rootVolume": root});
        let bytes = |c: &EC2NodeClass| c.ephemeral_storage().volume_bytes;
        assert_eq!(bytes(&class(json!({"amiSelectorTerms": [{"alias": "al2023@latest"}]}))), gib(20));
        let al2023 = class(json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "blockDeviceMappings": [volume("/dev/xvda", "100Gi", false), volume("/dev/xvdf", "500Gi", false)],
        }));
        assert_eq!(bytes(&al2023), gib(100), "the root device, not the extra disk");
        let bottlerocket = class(json!({
            "amiSelectorTerms": [{"alias": "bottlerocket@latest"}],
            "blockDeviceMappings": [volume("/dev/xvda", "4Gi", false), volume("/dev/xvdb", "80Gi", false)],
        }));
        assert_eq!(bytes(&bottlerocket), gib(80), "Bottlerocket's data volume");
        let marked = class(json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "blockDeviceMappings": [volume("/dev/xvda", "30Gi", false), volume("/dev/xvdf", "200Gi", true)],
        }));
        assert_eq!(bytes(&marked), gib(200), "rootVolume wins");
        let custom = class(json!({
            "amiFamily": "Custom",
            "amiSelectorTerms": [{"id": "ami-123"}],
            "blockDeviceMappings": [volume("/dev/sda1", "50Gi", false), volume("/dev/sdb", "75Gi", false)],
        }));
        assert_eq!(bytes(&custom), gib(75), "a Custom AMI's last mapping");
    }

    #[test]
    fn raid0_gives_types_with_instance_store_all_of_it() {
        let class = class(json!({"amiSelectorTerms": [{"alias": "al2023@latest"}], "instanceStorePolicy": "RAID0"}));
        let types = embedded_instance_types();
        let find = |name: &str| types.iter().find(|t| t.name == name).expect(name);
        let storage = |name: &str| class.node_resources(find(name), false).0.get(ResourceName::EphemeralStorage);
        // m5d.large: one 75 GB NVMe disk; m5.large has none and keeps its root volume.
        assert_eq!(storage("m5d.large"), 75_000_000_000);
        assert_eq!(storage("m5.large"), gib(20));
        let (capacity, allocatable) = class.node_resources(find("m5d.large"), false);
        assert_eq!(
            allocatable.get(ResourceName::EphemeralStorage),
            capacity.get(ResourceName::EphemeralStorage) - capacity.get(ResourceName::EphemeralStorage) / 10,
            "the kubelet's nodefs threshold is 10% of that disk"
        );
    }

    #[test]
    fn kubelet_settings_change_what_the_plan_counts_as_allocatable() {
        let types = embedded_instance_types();
        let m5_large = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
        let defaults = class(json!({"amiSelectorTerms": [{"alias": "al2023@latest"}]}));
        let (capacity, default_allocatable) = defaults.node_resources(m5_large, false);
        let memory = capacity.get(ResourceName::Memory);
        let set = class(json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "kubelet": {
                "kubeReserved": {"cpu": "200m", "pid": "1000"},
                "systemReserved": {"cpu": "100m", "memory": "300Mi", "ephemeral-storage": "1Gi"},
                "evictionHard": {"memory.available": "5%", "nodefs.available": "2Gi", "pid.available": "10%"},
            },
        }));
        let (same_capacity, allocatable) = set.node_resources(m5_large, false);
        assert_eq!(same_capacity, capacity, "capacity is the instance's, whatever the kubelet keeps");
        assert_eq!(allocatable.get(ResourceName::Cpu), 2000 - 200 - 100);
        // kube-reserved memory is not set, so the EKS formula stays (11 × 29 + 255 MiB).
        let kube_reserved_memory = (11 * 29 + 255) << 20;
        let five_percent = (memory * 5 + 99) / 100;
        assert_eq!(allocatable.get(ResourceName::Memory), memory - kube_reserved_memory - (300 << 20) - five_percent);
        assert_eq!(allocatable.get(ResourceName::EphemeralStorage), gib(20) - gib(1) - gib(2));
        assert_eq!(default_allocatable.get(ResourceName::Cpu), 2000 - 70);

        // The higher of hard and soft, signal by signal.
        let soft = class(json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "kubelet": {
                "evictionHard": {"memory.available": "200Mi"},
                "evictionSoft": {"memory.available": "1Gi", "nodefs.available": "1%"},
                "evictionSoftGracePeriod": {"memory.available": "1m", "nodefs.available": "1m"},
            },
        }));
        let overhead = soft.node_overhead().expect("readable");
        assert_eq!(overhead.eviction.memory(memory), gib(1));
        assert_eq!(overhead.eviction.nodefs(gib(100)), gib(1), "soft 1% is what is set for nodefs");
    }

    #[test]
    fn an_unreadable_kubelet_setting_is_named() {
        let bad = class(json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "kubelet": {"evictionHard": {"memory.available": "lots"}},
        }));
        let error = bad.node_overhead().expect_err("not a quantity");
        assert_eq!(error.field, "kubelet.evictionHard[memory.available]");
        let bad = class(
            json!({"amiSelectorTerms": [{"alias": "al2023@latest"}], "kubelet": {"kubeReserved": {"memory": "x"}}}),
        );
        assert_eq!(bad.node_overhead().expect_err("not a quantity").field, "kubelet.kubeReserved[memory]");
    }
}
