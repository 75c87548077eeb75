//! The AWS side of nodesmith: every EC2, EKS, IAM, SSM, SQS and Pricing call the controller and the offline commands make.
//! The controller reaches them only through `provider::CloudProvider`.

pub mod batch;
pub mod cluster;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod fleet;
pub mod instance_profile;
pub mod instance_types;
pub mod instances;
pub mod interruption_message;
pub mod launch_caches;
pub mod launch_template;
pub mod nodeclass;
pub mod pricing;
pub mod provider;
pub mod queue;
pub mod resource_names;
pub mod user_data;

pub use provider::{AwsCloud, CloudProvider, Measured};
