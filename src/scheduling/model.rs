//! The scheduler's input: pods, NodePools and existing capacity as plain data (no Kubernetes types).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::requirements::Requirement;
use super::topology::{PodAffinityTerm, PreferredPodTerm, TopologyKey, TopologySpread, selects};
use crate::catalog::allocatable::NodeOverhead;
use crate::catalog::instance_type::EphemeralStorage;
use crate::catalog::max_pods::MaxPodsSettings;
use crate::catalog::resources::Resources;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Toleration {
    /// None with `Exists` tolerates every taint.
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    pub operator: String,
    pub value: Option<String>,
    /// None tolerates every effect.
    pub effect: Option<String>,
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.as_deref().is_some_and(|e| e != taint.effect) {
            return false;
        }
        match (self.key.as_deref(), self.operator.as_str()) {
            (None, "Exists") => true,
            (Some(key), "Exists") => key == taint.key,
            (Some(key), _) => {
                key == taint.key && self.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
            (None, _) => false,
        }
    }
}

/// Whether `tolerations` let a pod onto a node with `taints` (PreferNoSchedule never blocks).
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints.iter().filter(|t| t.effect != "PreferNoSchedule").all(|taint| tolerations.iter().any(|t| t.tolerates(taint)))
}

/// A pending pod as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRequest {
    /// `namespace/name`.
    pub id: String,
    /// What the pod needs of a node, counted as Kubernetes counts it (max of init containers and the sum of the
    /// containers, plus overhead) and including one `pods` slot.
    pub requests: Resources,
    /// nodeSelector entries and the required node-affinity term, ANDed. A pod with several required
    /// node-selector terms (ORed) is given as one of these lists per term in `alternative_requirements`.
    pub requirements: Vec<Requirement>,
    /// Further ORed required terms beyond the first; tried in order when the first cannot be met.
    #[serde(default)]
    pub alternative_requirements: Vec<Vec<Requirement>>,
    /// Preferred node-affinity terms, heaviest first; dropped one at a time, lightest first, when the pod fits
    /// nowhere with them.
    #[serde(default)]
    pub preferences: Vec<(i32, Vec<Requirement>)>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// The pod's labels, which topology selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub spreads: Vec<TopologySpread>,
    /// Required pod affinity terms.
    #[serde(default)]
    pub affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity terms.
    #[serde(default)]
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod affinity and anti-affinity terms: honoured first, dropped lightest first when the pod fits
    /// nowhere with them.
    #[serde(default)]
    pub preferred_pod_terms: Vec<PreferredPodTerm>,
    /// Ports it takes on its node (`hostPort`): no two pods on one node may take the same.
    #[serde(default)]
    pub host_ports: Vec<HostPort>,
}

/// A port a pod takes on its node's network (a container's `hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPort {
    pub port: i32,
    /// `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: String,
    /// The address it binds; `0.0.0.0` (the default) is every address.
    pub ip: String,
}

impl HostPort {
    /// Whether two pods taking these could not share a node, as kube-scheduler's NodePorts judges it.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        const ANY: &str = "0.0.0.0";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY || other.ip == ANY)
    }
}

/// Whether any of `wanted` conflicts with any of `taken`.
pub fn ports_conflict(wanted: &[HostPort], taken: &[HostPort]) -> bool {
    wanted.iter().any(|w| taken.iter().any(|t| w.conflicts(t)))
}

impl PodRequest {
    /// The zone this pod is held to among `zones` by its required node terms (volume topology included): the one
    /// zone, `flexible` when several are open to it, `none` when none is (Karpenter's effective zone).
    pub fn effective_zone(&self, zones: &[&str]) -> String {
        let allows = |zone: &str| {
            std::iter::once(&self.requirements)
                .chain(&self.alternative_requirements)
                .any(|term| term.iter().filter(|r| r.key == crate::names::ZONE_LABEL).all(|r| r.matches(Some(zone))))
        };
        let mut open = zones.iter().copied().filter(|zone| allows(zone));
        match (open.next(), open.next()) {
            (None, _) => "none".to_string(),
            (Some(zone), None) => zone.to_string(),
            (Some(_), Some(_)) => "flexible".to_string(),
        }
    }

    /// A pod with these requests and no constraints.
    pub fn new(id: &str, requests: Resources) -> Self {
        Self {
            id: id.to_string(),
            requests,
            requirements: vec![],
            alternative_requirements: vec![],
            preferences: vec![],
            tolerations: vec![],
            labels: BTreeMap::new(),
            spreads: vec![],
            affinity: vec![],
            anti_affinity: vec![],
            preferred_pod_terms: vec![],
            host_ports: vec![],
        }
    }

    /// The namespace part of `id`.
    pub fn namespace(&self) -> &str {
        self.id.split_once('/').map_or("default", |(namespace, _)| namespace)
    }

    /// Whether the pods on a node (`placed`) would let this one join them, whatever else runs: no host port taken
    /// twice, and no required anti-affinity on hostname either way. Room, and spreads (which depend on every node),
    /// are for the caller or the solver to weigh.
    pub fn may_join(&self, placed: &[PlacedPod]) -> bool {
        let namespace = self.namespace();
        let on_hostname = |term: &&PodAffinityTerm| term.key == TopologyKey::Hostname;
        let neighbours = || placed.iter().filter(|p| p.namespace == namespace);
        let ports_free = placed.iter().all(|p| !ports_conflict(&self.host_ports, &p.host_ports));
        let keeps_none_away = self
            .anti_affinity
            .iter()
            .filter(on_hostname)
            .all(|term| !neighbours().any(|p| selects(&term.selector, &p.labels)));
        let kept_away_by_none = neighbours()
            .all(|p| !p.anti_affinity.iter().filter(on_hostname).any(|term| selects(&term.selector, &self.labels)));
        ports_free && keeps_none_away && kept_away_by_none
    }
}

/// A NodePool, reduced to what scheduling needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePoolSpec {
    pub name: String,
    /// Higher weight is tried first.
    pub weight: i32,
    pub requirements: Vec<Requirement>,
    /// Labels every node of the pool carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Taints present only while the node starts; they do not keep pods off it.
    #[serde(default)]
    pub startup_taints: Vec<Taint>,
    /// Total resources the pool may hold (existing and planned nodes, by capacity); None is unlimited.
    #[serde(default)]
    pub limits: Option<Resources>,
    /// Pod density settings of its EC2NodeClass.
    #[serde(default)]
    pub max_pods: MaxPodsSettings,
    /// What its nodes hold back from pods (EKS AMI defaults unless the EC2NodeClass's kubelet settings say
    /// otherwise).
    #[serde(default)]
    pub overhead: NodeOverhead,
    /// Where its nodes' ephemeral storage lives (the EC2NodeClass's root volume or instance store).
    #[serde(default)]
    pub ephemeral_storage: EphemeralStorage,
    /// What happens when its requirements' `minValues` cannot be met (the controller's `--min-values-policy`).
    #[serde(default)]
    pub min_values_policy: MinValuesPolicy,
}

/// Karpenter's `MIN_VALUES_POLICY`: whether `minValues` is a hard rule or a wish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MinValuesPolicy {
    /// A pod that only fits a node with fewer distinct values than `minValues` stays pending, and says why.
    #[default]
    Strict,
    /// Such a pod still gets a node, with as many distinct values as it allows; the NodeClaim is annotated
    /// `karpenter.sh/nodeclaim-min-values-relaxed: "true"`.
    BestEffort,
}

impl std::str::FromStr for MinValuesPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "Strict" => Ok(Self::Strict),
            "BestEffort" => Ok(Self::BestEffort),
            _ => Err(format!("{text:?} is not a minValues policy: Strict or BestEffort")),
        }
    }
}

/// A node that exists or is being launched: what is still free on it, and the pods on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExistingNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Allocatable minus what its pods already request.
    pub available: Resources,
    /// Capacity, counted against its NodePool's limits.
    pub capacity: Resources,
    pub nodepool: Option<String>,
    /// The pods running there or nominated to it: they count in topology spread and pod (anti-)affinity.
    #[serde(default)]
    pub pods: Vec<PlacedPod>,
}

/// A pod already on a node, or nominated to one. Its requests are out of the node's `available` already.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Its required anti-affinity terms: the pods they select may not join it (kube-scheduler checks them both
    /// ways).
    #[serde(default)]
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// The ports it takes on the node.
    #[serde(default)]
    pub host_ports: Vec<HostPort>,
}

/// A DaemonSet's pod, which every node it can run on will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonSetPod {
    pub requests: Resources,
    pub requirements: Vec<Requirement>,
    pub tolerations: Vec<Toleration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint { key: key.into(), value: value.map(Into::into), effect: effect.into() }
    }

    #[test]
    fn the_effective_zone_is_the_one_zone_open_to_the_pod_or_flexible_or_none() {
        use super::super::requirements::Operator;
        let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
        let mut pod = PodRequest::new("shop/web", Resources::default());
        assert_eq!(pod.effective_zone(&zones), "flexible");
        pod.requirements = vec![Requirement::new(crate::names::ZONE_LABEL, Operator::In, &["us-east-1b"])];
        assert_eq!(pod.effective_zone(&zones), "us-east-1b");
        pod.alternative_requirements =
            vec![vec![Requirement::new(crate::names::ZONE_LABEL, Operator::In, &["us-east-1c"])]];
        assert_eq!(pod.effective_zone(&zones), "flexible", "either term's zone");
        pod.requirements = vec![Requirement::new(crate::names::ZONE_LABEL, Operator::In, &["eu-west-1a"])];
        pod.alternative_requirements.clear();
        assert_eq!(pod.effective_zone(&zones), "none");
    }

    #[test]
    fn host_ports_conflict_on_the_same_port_protocol_and_address_or_any_address() {
        let port = |port: i32, protocol: &str, ip: &str| HostPort { port, protocol: protocol.into(), ip: ip.into() };
        let web = port(8080, "TCP", "0.0.0.0");
        assert!(web.conflicts(&port(8080, "TCP", "10.0.0.5")), "every address includes this one");
        assert!(!web.conflicts(&port(8080, "UDP", "0.0.0.0")), "another protocol");
        assert!(!web.conflicts(&port(8081, "TCP", "0.0.0.0")));
        assert!(!port(53, "UDP", "10.0.0.5").conflicts(&port(53, "UDP", "10.0.0.6")), "two addresses");
        assert!(ports_conflict(&[port(1, "TCP", "0.0.0.0"), web.clone()], &[port(8080, "TCP", "0.0.0.0")]));
        assert!(!ports_conflict(&[web], &[]));
    }

    #[test]
    fn a_pod_may_join_a_node_unless_a_port_or_a_hostname_anti_affinity_either_way_keeps_it_out() {
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let away_from =
            |app: &str, key: TopologyKey| PodAffinityTerm { key, selector: vec![Requirement::equals("app", app)] };
        let placed = |namespace: &str, app: &str, anti_affinity: Vec<PodAffinityTerm>| PlacedPod {
            namespace: namespace.into(),
            labels: labels(app),
            anti_affinity,
            host_ports: vec![],
        };
        let mut web = PodRequest::new("shop/web-1", Resources::default());
        web.labels = labels("web");
        let apart = placed("shop", "apart", vec![away_from("web", TopologyKey::Hostname)]);
        assert!(web.may_join(&[placed("shop", "cache", vec![])]));
        assert!(!web.may_join(std::slice::from_ref(&apart)), "a pod there keeps web pods off its node");
        assert!(web.may_join(&[PlacedPod { namespace: "other".into(), ..apart }]), "its terms select in its namespace");
        assert!(
            web.may_join(&[placed("shop", "apart", vec![away_from("web", TopologyKey::Zone)])]),
            "a zone term is not this node's alone to judge"
        );
        let mut shy = web.clone();
        shy.anti_affinity = vec![away_from("cache", TopologyKey::Hostname)];
        assert!(!shy.may_join(&[placed("shop", "cache", vec![])]), "it keeps away from cache pods");
        assert!(shy.may_join(&[placed("shop", "db", vec![])]));
        let port = HostPort { port: 8443, protocol: "TCP".into(), ip: "0.0.0.0".into() };
        let mut ported = web.clone();
        ported.host_ports = vec![port.clone()];
        let taken = PlacedPod { host_ports: vec![port], ..placed("elsewhere", "proxy", vec![]) };
        assert!(!ported.may_join(std::slice::from_ref(&taken)), "ports are the node's, whatever the namespace");
        assert!(web.may_join(&[taken]));
        // A spread depends on every node: a second pod of a one-per-node spread may join once every node has one.
        let mut spread = web.clone();
        spread.spreads = vec![TopologySpread {
            key: TopologyKey::Hostname,
            max_skew: 1,
            min_domains: None,
            hard: true,
            selector: vec![Requirement::equals("app", "web")],
            counted_nodes: Default::default(),
        }];
        assert!(spread.may_join(&[placed("shop", "web", vec![])]));
    }

    #[test]
    fn tolerations_match_as_kubernetes_matches_them() {
        let gpu = taint("nvidia.com/gpu", Some("true"), "NoSchedule");
        let equal = Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: "Equal".into(),
            value: Some("true".into()),
            effect: None,
        };
        let exists_any = Toleration { key: None, operator: "Exists".into(), value: None, effect: None };
        let wrong_effect = Toleration { effect: Some("NoExecute".into()), ..equal.clone() };
        assert!(equal.tolerates(&gpu));
        assert!(exists_any.tolerates(&gpu));
        assert!(!wrong_effect.tolerates(&gpu));
        assert!(tolerates_all(&[], &[taint("soft", None, "PreferNoSchedule")]));
        assert!(!tolerates_all(&[], &[gpu]));
    }
}
