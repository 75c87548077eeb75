//! Karpenter's per-object metrics (those of awslabs/operatorpkg, which Karpenter's controllers use): each status
//! condition of every NodeClaim, Node, NodePool and EC2NodeClass, how long it has held, its transitions, and how
//! long deletions take. Gauges are computed at each scrape (`cluster`); transitions and termination times are
//! counted as the watches see them change (`Metrics::condition_transition`, `Metrics::object_terminated`).

/// The kinds whose conditions are reported, each under its own metric names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    NodeClaim,
    Node,
    NodePool,
    EC2NodeClass,
}

impl ObjectKind {
    pub const ALL: [Self; 4] = [Self::NodeClaim, Self::Node, Self::NodePool, Self::EC2NodeClass];

    /// The metric name prefix operatorpkg gives the kind (its lower-cased name).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::NodeClaim => "operator_nodeclaim",
            Self::Node => "operator_node",
            Self::NodePool => "operator_nodepool",
            Self::EC2NodeClass => "operator_ec2nodeclass",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Self::NodeClaim => 0,
            Self::Node => 1,
            Self::NodePool => 2,
            Self::EC2NodeClass => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::NodeClaim => "NodeClaim",
            Self::Node => "Node",
            Self::NodePool => "NodePool",
            Self::EC2NodeClass => "EC2NodeClass",
        }
    }

    pub(super) fn help(self, what: &str) -> String {
        format!("{what}, of each {}", self.name())
    }
}

/// Labels of one metric sample, in the order they are written.
pub type ObjectLabels = Vec<(&'static str, String)>;

/// One status condition of one object as it is now.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionGauge {
    pub kind: ObjectKind,
    /// namespace, name, type, status, reason, then the kind's own labels (its NodePool, EC2NodeClass, …).
    pub labels: ObjectLabels,
    /// Since the condition's last transition.
    pub seconds: f64,
}

/// One object being deleted (its finalizers not yet all off).
#[derive(Clone, Debug, PartialEq)]
pub struct TerminatingGauge {
    pub kind: ObjectKind,
    /// namespace, name, then the kind's own labels.
    pub labels: ObjectLabels,
    /// Since its deletion began.
    pub seconds: f64,
}
