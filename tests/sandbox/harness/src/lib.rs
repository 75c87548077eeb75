//! The sandbox harness as a library, for tests that need environments of their own.
#![forbid(unsafe_code)]

pub mod fault_proxy;
pub mod instance_node;
pub mod kube_fault_proxy;
pub mod registrar;
pub mod seed;
pub mod sqs_server;
pub mod user_data;
