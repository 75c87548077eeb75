//! Kubernetes-facing types: the Karpenter v1 API nodesmith serves, and the conversions from Kubernetes objects
//! to the scheduler's plain input.

pub mod nodepool;
pub mod scheduling_input;
