//! The AWS side of nodesmith: every EC2 call the controller and the offline commands make.

pub mod error;
pub mod instance_types;
