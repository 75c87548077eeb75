//! Every well-known name nodesmith writes or reads: labels, annotations, taints and finalizers on Kubernetes
//! objects, tags on AWS resources, and the Lease. Karpenter v1's are used unchanged, so that nodeSelectors,
//! dashboards, IAM policies and scripts written for Karpenter keep working. Pure constants, at the bottom of
//! the module graph: every layer imports them from here.

// Labels on Nodes and NodeClaims.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const CAPACITY_TYPE_LABEL: &str = "karpenter.sh/capacity-type";
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
/// Set on a Node once it has registered (joined the cluster) for its NodeClaim.
pub const NODE_REGISTERED_LABEL: &str = "karpenter.sh/registered";
/// Set on a Node once it is initialized (ready, startup taints gone, resources reported).
pub const NODE_INITIALIZED_LABEL: &str = "karpenter.sh/initialized";
/// The EC2NodeClass a node was launched from.
pub const EC2NODECLASS_LABEL: &str = "karpenter.k8s.aws/ec2nodeclass";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_ID_LABEL: &str = "topology.k8s.aws/zone-id";
pub const INSTANCE_CATEGORY_LABEL: &str = "karpenter.k8s.aws/instance-category";
pub const INSTANCE_FAMILY_LABEL: &str = "karpenter.k8s.aws/instance-family";
pub const INSTANCE_GENERATION_LABEL: &str = "karpenter.k8s.aws/instance-generation";

// Values of `karpenter.sh/capacity-type`.
pub const CAPACITY_TYPE_SPOT: &str = "spot";
pub const CAPACITY_TYPE_ON_DEMAND: &str = "on-demand";
pub const CAPACITY_TYPE_RESERVED: &str = "reserved";

// Annotations.
/// On a pod or a node: never disrupt it voluntarily (consolidation, drift, expiration).
pub const DO_NOT_DISRUPT_ANNOTATION: &str = "karpenter.sh/do-not-disrupt";
/// On a NodeClaim whose NodePool's `minValues` were relaxed for it (minValues policy BestEffort).
pub const MIN_VALUES_RELAXED_ANNOTATION: &str = "karpenter.sh/nodeclaim-min-values-relaxed";
/// On a NodeClaim: the hash of its NodePool's template when it was made (drift detection).
pub const NODEPOOL_HASH_ANNOTATION: &str = "karpenter.sh/nodepool-hash";
pub const NODEPOOL_HASH_VERSION_ANNOTATION: &str = "karpenter.sh/nodepool-hash-version";
/// On a NodeClaim being deleted: when its terminationGracePeriod runs out.
pub const NODECLAIM_TERMINATION_TIMESTAMP_ANNOTATION: &str = "karpenter.sh/nodeclaim-termination-timestamp";
/// On a NodeClaim: the hash of its EC2NodeClass's spec when it was made (drift detection).
pub const EC2NODECLASS_HASH_ANNOTATION: &str = "karpenter.k8s.aws/ec2nodeclass-hash";
pub const EC2NODECLASS_HASH_VERSION_ANNOTATION: &str = "karpenter.k8s.aws/ec2nodeclass-hash-version";
/// On a NodeClaim launched by consolidation or drift: the NodeClaims it replaces (comma-separated). nodesmith's
/// own; consolidation holds such a node for its pool's `consolidateAfter` (a churn guard).
pub const REPLACES_ANNOTATION: &str = "nodesmith.dev/replaces";
/// On a NodeClaim: the subnet and the security groups (comma-separated) its instance was launched with, which
/// drift compares with what its EC2NodeClass selects now. nodesmith's own (Karpenter asks EC2 each time).
pub const SUBNET_ANNOTATION: &str = "nodesmith.dev/subnet-id";
pub const SECURITY_GROUPS_ANNOTATION: &str = "nodesmith.dev/security-group-ids";
/// On a NodeClaim: how many launches failed for a reason other than capacity (an AccessDenied, a bad parameter),
/// and when the last one did (RFC 3339). The next launch waits out a backoff that grows with them.
pub const LAUNCH_FAILURES_ANNOTATION: &str = "nodesmith.dev/launch-failures";
pub const LAST_LAUNCH_FAILURE_ANNOTATION: &str = "nodesmith.dev/last-launch-failure";
/// On a pod: how much its controller prefers to delete it (Kubernetes' ReplicaSet scale-down hint); consolidation
/// weighs it, as Karpenter does, when choosing whose pods to move.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// On a static pod's mirror (the kubelet owns it; eviction cannot move it).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// On a NodeClaim: its instance has been tagged with the NodeClaim's name.
pub const TAGGED_ANNOTATION: &str = "karpenter.k8s.aws/tagged";

// Finalizers.
/// On NodeClaims and Nodes: the instance is terminated (and the node drained) before the object goes.
pub const TERMINATION_FINALIZER: &str = "karpenter.sh/termination";

// Taints.
/// `NoExecute`, put on a Node at launch and removed once it registers for its NodeClaim.
pub const UNREGISTERED_TAINT_KEY: &str = "karpenter.sh/unregistered";
/// `NoSchedule`, put on a Node that is being disrupted (drained and terminated).
pub const DISRUPTED_TAINT_KEY: &str = "karpenter.sh/disrupted";
/// `NoSchedule`, put by `migrate from-cluster-autoscaler` on the node groups' nodes it moves pods off.
pub const MIGRATION_TAINT_KEY: &str = "nodesmith.dev/migrating-from";
/// `NoSchedule`, put by the same migration on the node groups' nodes it keeps for the nodesmith controller itself
/// (the chart's Deployment tolerates it): workloads move to nodesmith's nodes, the controller may stay.
pub const CONTROLLER_ONLY_TAINT_KEY: &str = "nodesmith.dev/controller-only";

// Label domains users may not set in a NodePool's requirements or labels, except for the listed keys.
pub const KARPENTER_DOMAIN: &str = "karpenter.sh";
pub const KARPENTER_AWS_DOMAIN: &str = "karpenter.k8s.aws";

// Tags on AWS resources.
/// On every instance (and what it launches with) of a NodeClaim: its name, pool and class.
pub const NODECLAIM_TAG: &str = "karpenter.sh/nodeclaim";
pub const NODEPOOL_TAG: &str = "karpenter.sh/nodepool";
pub const NODECLASS_TAG: &str = "karpenter.k8s.aws/ec2nodeclass";
/// Every resource nodesmith creates (setup, and the controller's instances and templates) carries this tag with
/// the cluster's name: teardown needs no state file.
pub const OWNER_TAG: &str = "nodesmith.io/cluster";
/// On subnets and security groups an EC2NodeClass may select.
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";
/// Put beside a discovery tag setup added, so teardown removes only the tags it added.
pub const DISCOVERY_SET_BY_TAG: &str = "nodesmith.io/discovery-set-by";
/// On IAM roles, policies and instance profiles: the region they were made for (IAM is global).
pub const REGION_TAG: &str = REGION_LABEL;

/// The tag every instance of a cluster carries: `kubernetes.io/cluster/<cluster>=owned`.
pub fn cluster_tag_key(cluster: &str) -> String {
    format!("{CLUSTER_TAG_PREFIX}{cluster}")
}
pub const CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";

// Leader election.
/// The `coordination.k8s.io/v1` Lease the controller's replicas elect a leader with.
pub const LEASE_NAME: &str = "nodesmith-leader-election";
