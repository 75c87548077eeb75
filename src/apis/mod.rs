//! Kubernetes-facing types: the Karpenter v1 API nodesmith serves (NodePool, NodeClaim, EC2NodeClass), their CRDs,
//! and the conversions from Kubernetes objects to the scheduler's plain input. (The well-known names are in
//! `crate::names`.)

pub mod crds;
pub mod drift_hash;
pub mod ec2nodeclass;
pub mod finalizers;
pub mod guarded_patch;
pub mod nodeclaim;
pub mod nodepool;
pub mod planned_nodeclaim;
pub mod pod;
pub mod pods;
pub mod scheduling_input;
