//! Kubernetes-facing types: the Karpenter v1 API nodesmith serves (NodePool, NodeClaim, EC2NodeClass), their CRDs,
//! the well-known labels, and the conversions from Kubernetes objects to the scheduler's plain input.

pub mod crds;
pub mod drift_hash;
pub mod ec2nodeclass;
pub mod finalizers;
pub mod labels;
pub mod nodeclaim;
pub mod nodepool;
pub mod scheduling_input;
