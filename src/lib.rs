//! nodesmith: just-in-time nodes for Amazon EKS.
//!
//! `catalog` is pure (no kube or AWS client); `cli` parses and prints; `aws` builds SDK configuration.
#![forbid(unsafe_code)]

pub mod apis;
pub mod aws;
pub mod bootstrap;
pub mod catalog;
pub mod cli;
pub mod cloud;
pub mod controller;
pub mod disruption;
pub mod duration;
pub mod migrate;
pub mod names;
pub mod render;
pub mod scheduling;
pub mod telemetry;
