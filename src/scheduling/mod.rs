//! The solver: which nodes to launch for pending pods. Pure: no kube client, no AWS client.

pub mod bitset;
mod explain;
pub mod model;
mod options;
pub mod plan;
mod repack;
pub mod requirements;
pub mod solver;
pub mod topology;

pub use model::{
    DaemonSetPod, ExistingNode, HostPort, MinValuesPolicy, NodePoolSpec, PlacedPod, PodRequest, Taint, Toleration,
};
pub use plan::{NewNode, NodePoolRefusal, Plan, UnschedulablePod};
pub use requirements::{Operator, Requirement};
pub use solver::{Prepared, PreparedCatalog, SchedulingInput, solve, solve_on, solve_prepared};
pub use topology::{CountedNodes, PodAffinityTerm, PreferredPodTerm, TopologyKey, TopologySpread};

#[cfg(test)]
mod running_pods_tests;
#[cfg(test)]
mod solver_tests;
