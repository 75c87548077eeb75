//! `setup` and `teardown`: the AWS side of a cluster as a list of idempotent steps, each get-or-create or
//! delete-if-owned. This first part is the pure planning: names within AWS's limits, IAM documents and subnet
//! carving.

pub mod aws_auth;
pub mod cidr;
pub mod from_cluster_autoscaler;
pub mod kube_target;
pub mod operator_policy;
pub mod ownership;
pub mod policies;
pub mod propagation;
pub mod report;
pub mod setup;
pub mod teardown;
