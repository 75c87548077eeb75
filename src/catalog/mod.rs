//! Instance types and what a node of each type can hold. Pure: plain data in, plain data out.

pub mod allocatable;
pub mod max_pods;
