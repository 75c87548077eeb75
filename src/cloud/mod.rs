//! The AWS side of nodesmith: every EC2, IAM and SSM call the controller and the offline commands make.

pub mod error;
pub mod fleet;
pub mod instance_profile;
pub mod instance_types;
pub mod instances;
pub mod interruption_message;
pub mod launch_template;
pub mod nodeclass;
pub mod user_data;
