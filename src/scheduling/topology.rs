//! Pod topology: spread constraints, and pod affinity and anti-affinity, on zone, hostname and capacity type.
//!
//! Pods are counted per *group*: a topology key with the label selector and namespace of a constraint (and, for a
//! spread, the nodes whose pods it counts). Zones and capacity types are counted across the plan; hostnames per
//! node. Pods already placed (running on existing nodes, or nominated to them) count where they are, as
//! kube-scheduler counts them. A pod whose constraints involve zone or capacity type pins the node it joins to one
//! domain, so every later count is exact.
//!
//! Anti-affinity holds both ways, as in kube-scheduler: a pod may not join a domain holding a pod whose required
//! anti-affinity term selects it, even if it has no term of its own.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::model::{Taint, Toleration, tolerates_all};
use super::requirements::Requirement;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TopologyKey {
    Zone,
    Hostname,
    CapacityType,
}

impl TopologyKey {
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "topology.kubernetes.io/zone" | "failure-domain.beta.kubernetes.io/zone" => Some(Self::Zone),
            "kubernetes.io/hostname" => Some(Self::Hostname),
            "karpenter.sh/capacity-type" => Some(Self::CapacityType),
            _ => None,
        }
    }
}

/// The label a topology key stands for, as a person wrote it.
fn key_label(key: TopologyKey) -> &'static str {
    match key {
        TopologyKey::Zone => "topology.kubernetes.io/zone",
        TopologyKey::Hostname => "kubernetes.io/hostname",
        TopologyKey::CapacityType => "karpenter.sh/capacity-type",
    }
}

/// `topologySpreadConstraints` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologySpread {
    pub key: TopologyKey,
    pub max_skew: u32,
    pub min_domains: Option<u32>,
    /// `DoNotSchedule`; `ScheduleAnyway` spreads are honoured first and relaxed like preferences.
    pub hard: bool,
    /// Over pod labels, in the pod's namespace.
    pub selector: Vec<Requirement>,
    /// Which nodes' pods count (`nodeAffinityPolicy`, `nodeTaintsPolicy`).
    #[serde(default)]
    pub counted_nodes: CountedNodes,
}

/// Which placed pods a spread counts (kube-scheduler's `nodeAffinityPolicy` and `nodeTaintsPolicy`): with Honor,
/// only those on nodes the spreading pod could itself go to. The default counts pods on every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CountedNodes {
    /// The pod's node selector and required node affinity: ORed terms, each ANDed. None: every node.
    pub affinity: Option<Vec<Vec<Requirement>>>,
    /// The pod's tolerations, when taints are honoured. None: every node.
    pub tolerations: Option<Vec<Toleration>>,
}

impl CountedNodes {
    /// Whether pods on a node with these labels and taints count.
    pub fn counts(&self, labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
        let affinity_ok = self.affinity.as_ref().is_none_or(|terms| {
            terms.is_empty()
                || terms.iter().any(|term| term.iter().all(|r| r.matches(labels.get(&r.key).map(String::as_str))))
        });
        let taints_ok = self.tolerations.as_ref().is_none_or(|tolerations| tolerates_all(tolerations, taints));
        affinity_ok && taints_ok
    }
}

/// A required pod affinity or anti-affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodAffinityTerm {
    pub key: TopologyKey,
    pub selector: Vec<Requirement>,
}

/// A preferred pod affinity (or anti-affinity) term: honoured while the pod fits somewhere with it, relaxed
/// lightest first when it does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PreferredPodTerm {
    pub weight: i32,
    pub anti: bool,
    pub term: PodAffinityTerm,
}

/// Which soft constraints a try honours: `ScheduleAnyway` spreads or not, and how many of the pod's preferred pod
/// terms (heaviest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Honour {
    pub soft_spreads: bool,
    pub preferred: usize,
}

impl Honour {
    /// Required constraints only.
    pub const REQUIRED: Self = Self { soft_spreads: false, preferred: 0 };
    /// Soft spreads too (the old `soft: true`), no preferred pod terms.
    pub const SOFT_SPREADS: Self = Self { soft_spreads: true, preferred: 0 };
}

/// Whether pod labels satisfy a selector (all requirements hold).
pub fn selects(selector: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
}

/// One counted group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    key: TopologyKey,
    namespace: String,
    selector: Vec<Requirement>,
    /// Spreads only; affinity counts pods on every node.
    counted_nodes: CountedNodes,
}

/// A pod's constraints, with their groups resolved.
#[derive(Debug, Clone, Default)]
pub struct PodTopology {
    /// (group, max skew, min domains), hard ones only unless soft ones are being honoured.
    pub spreads: Vec<(usize, u32, Option<u32>, bool)>,
    pub affinity: Vec<usize>,
    pub anti_affinity: Vec<usize>,
    /// Groups whose selector this pod matches: it counts in them.
    pub member_of: Vec<usize>,
    /// Whether this pod matches its own affinity terms' selectors (a first pod of a self-affine group may go
    /// anywhere).
    pub self_affine: Vec<bool>,
    /// Preferred terms, heaviest first: (group, anti-affinity, self-affine).
    pub preferred: Vec<(usize, bool, bool)>,
}

impl GroupKey {
    /// The group of a spread of a pod in `namespace`.
    fn of_spread(spread: &TopologySpread, namespace: &str) -> Self {
        Self {
            key: spread.key,
            namespace: namespace.to_string(),
            selector: spread.selector.clone(),
            counted_nodes: spread.counted_nodes.clone(),
        }
    }

    /// The group of an affinity or anti-affinity term of a pod in `namespace`.
    fn of_term(term: &PodAffinityTerm, namespace: &str) -> Self {
        Self {
            key: term.key,
            namespace: namespace.to_string(),
            selector: term.selector.clone(),
            counted_nodes: CountedNodes::default(),
        }
    }
}

impl PodTopology {
    pub fn is_empty(&self) -> bool {
        self.spreads.is_empty()
            && self.affinity.is_empty()
            && self.anti_affinity.is_empty()
            && self.member_of.is_empty()
            && self.preferred.is_empty()
    }

    /// The affinity terms a try with `honour` enforces: the required ones, then the preferred ones it keeps, each
    /// with whether the pod matches it itself.
    fn affinity_terms(&self, honour: Honour) -> impl Iterator<Item = (usize, bool)> + '_ {
        let required = self.affinity.iter().copied().zip(self.self_affine.iter().copied());
        let preferred = self.preferred.iter().take(honour.preferred).filter(|p| !p.1).map(|&(g, _, own)| (g, own));
        required.chain(preferred)
    }

    /// The anti-affinity terms a try with `honour` enforces.
    fn anti_affinity_terms(&self, honour: Honour) -> impl Iterator<Item = usize> + '_ {
        let preferred = self.preferred.iter().take(honour.preferred).filter(|p| p.1).map(|p| p.0);
        self.anti_affinity.iter().copied().chain(preferred)
    }
}

/// Counts of every group, across the plan.
#[derive(Debug, Default)]
pub struct Topology {
    groups: Vec<GroupKey>,
    index: HashMap<GroupKey, usize>,
    /// Per group: pods per zone index.
    zone_counts: Vec<[u32; 64]>,
    /// Per group: pods per capacity type (spot, on-demand).
    capacity_type_counts: Vec<[u32; 2]>,
    /// Per group: pods anywhere (for affinity's "any matching pod yet?").
    totals: Vec<u32>,
    /// Per group that is some pod's anti-affinity term: the zones (bits) and capacity types (bits) holding such a
    /// pod, which the group's members may not join. Hostnames are kept per node (`HostState`).
    anti_zones: Vec<u64>,
    anti_capacity_types: Vec<u8>,
    /// Per group: whether some pod (pending or placed) holds it as an anti-affinity term.
    is_anti: Vec<bool>,
}

/// A pod already placed on an existing node: where it is, and what it is.
pub struct PlacedTopologyInput<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub anti_affinity: &'a [PodAffinityTerm],
    /// Index of its node among the existing nodes.
    pub node: usize,
    pub node_labels: &'a BTreeMap<String, String>,
    pub node_taints: &'a [Taint],
    pub zone: Option<usize>,
    pub capacity_type: Option<usize>,
}

/// What a placed pod is on its node, for hostname topology: the groups it counts in and its hostname
/// anti-affinity groups. Only placed pods that matter to this solve are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedMembership {
    pub node: usize,
    pub member_of: Vec<usize>,
    pub hostname_anti_affinity: Vec<usize>,
}

/// The pod input the topology needs, to stay independent of `PodRequest`.
pub struct PodTopologyInput<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spreads: &'a [TopologySpread],
    pub affinity: &'a [PodAffinityTerm],
    pub anti_affinity: &'a [PodAffinityTerm],
    pub preferred: &'a [PreferredPodTerm],
}

impl Topology {
    /// Registers the groups of every pending pod's constraints and of placed pods' anti-affinity terms that select
    /// a pending pod, resolves each pending pod's constraints and memberships, and counts the placed pods.
    pub fn new(
        pods: &[PodTopologyInput],
        placed: &[PlacedTopologyInput],
    ) -> (Self, Vec<PodTopology>, Vec<PlacedMembership>) {
        let mut topology = Topology::default();
        for pod in pods {
            for s in pod.spreads {
                topology.group(GroupKey::of_spread(s, pod.namespace));
            }
            for t in pod.affinity.iter().chain(pod.anti_affinity).chain(pod.preferred.iter().map(|p| &p.term)) {
                topology.group(GroupKey::of_term(t, pod.namespace));
            }
            for t in pod.anti_affinity {
                let g = topology.index[&GroupKey::of_term(t, pod.namespace)];
                topology.is_anti[g] = true;
            }
        }
        // A placed pod's anti-affinity matters only if it keeps some pending pod away.
        let mut placed_terms: HashMap<GroupKey, bool> = HashMap::new();
        for p in placed {
            for t in p.anti_affinity {
                let key = GroupKey::of_term(t, p.namespace);
                placed_terms.entry(key).or_insert_with(|| {
                    pods.iter().any(|pod| pod.namespace == p.namespace && selects(&t.selector, pod.labels))
                });
            }
        }
        for (key, selects_pending) in placed_terms {
            if selects_pending {
                let g = topology.group(key);
                topology.is_anti[g] = true;
            }
        }
        let resolved: Vec<PodTopology> = pods
            .iter()
            .map(|pod| {
                let group_of = |key: GroupKey| topology.index[&key];
                PodTopology {
                    spreads: pod
                        .spreads
                        .iter()
                        .map(|s| {
                            (group_of(GroupKey::of_spread(s, pod.namespace)), s.max_skew.max(1), s.min_domains, s.hard)
                        })
                        .collect(),
                    affinity: pod.affinity.iter().map(|t| group_of(GroupKey::of_term(t, pod.namespace))).collect(),
                    anti_affinity: pod
                        .anti_affinity
                        .iter()
                        .map(|t| group_of(GroupKey::of_term(t, pod.namespace)))
                        .collect(),
                    self_affine: pod.affinity.iter().map(|t| selects(&t.selector, pod.labels)).collect(),
                    preferred: {
                        let mut preferred: Vec<&PreferredPodTerm> = pod.preferred.iter().collect();
                        preferred.sort_by_key(|p| std::cmp::Reverse(p.weight));
                        preferred
                            .iter()
                            .map(|p| {
                                let group = group_of(GroupKey::of_term(&p.term, pod.namespace));
                                (group, p.anti, selects(&p.term.selector, pod.labels))
                            })
                            .collect()
                    },
                    member_of: topology.members_of(pod.namespace, pod.labels, None),
                }
            })
            .collect();
        let memberships = topology.count_placed(placed);
        (topology, resolved, memberships)
    }

    /// The groups a pod of `namespace` with `labels` counts in; on a node (labels, taints) when placed there.
    fn members_of(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        node: Option<(&BTreeMap<String, String>, &[Taint])>,
    ) -> Vec<usize> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.namespace == namespace && selects(&g.selector, labels))
            .filter(|(_, g)| node.is_none_or(|(labels, taints)| g.counted_nodes.counts(labels, taints)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Counts the placed pods where they are, and marks the domains their anti-affinity keeps pods from.
    fn count_placed(&mut self, placed: &[PlacedTopologyInput]) -> Vec<PlacedMembership> {
        if self.groups.is_empty() {
            return Vec::new();
        }
        let mut memberships = Vec::new();
        for p in placed {
            let member_of = self.members_of(p.namespace, p.labels, Some((p.node_labels, p.node_taints)));
            let mut hostname_anti_affinity = Vec::new();
            for t in p.anti_affinity {
                let Some(&g) = self.index.get(&GroupKey::of_term(t, p.namespace)) else { continue };
                if t.key == TopologyKey::Hostname {
                    hostname_anti_affinity.push(g);
                }
                self.keep_away(g, p.zone, p.capacity_type);
            }
            self.count_in(&member_of, p.zone, p.capacity_type);
            self.record_total(&member_of);
            if !member_of.is_empty() || !hostname_anti_affinity.is_empty() {
                memberships.push(PlacedMembership { node: p.node, member_of, hostname_anti_affinity });
            }
        }
        memberships
    }

    fn group(&mut self, key: GroupKey) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.groups.push(key.clone());
        self.zone_counts.push([0; 64]);
        self.capacity_type_counts.push([0; 2]);
        self.totals.push(0);
        self.anti_zones.push(0);
        self.anti_capacity_types.push(0);
        self.is_anti.push(false);
        self.index.insert(key, self.groups.len() - 1);
        self.groups.len() - 1
    }

    pub fn key_of(&self, group: usize) -> TopologyKey {
        self.groups[group].key
    }

    /// Records a pod in a zone and capacity type (each None while not pinned): it counts in its groups there, and
    /// its anti-affinity keeps the pods it selects away from there.
    pub fn record(&mut self, pod: &PodTopology, zone: Option<usize>, capacity_type: Option<usize>) {
        self.count_in(&pod.member_of, zone, capacity_type);
        for &g in &pod.anti_affinity {
            self.keep_away(g, zone, capacity_type);
        }
    }

    /// Counts a pod of `member_of` in a zone and capacity type (each None while not known).
    fn count_in(&mut self, member_of: &[usize], zone: Option<usize>, capacity_type: Option<usize>) {
        for &g in member_of {
            if let Some(z) = zone {
                self.zone_counts[g][z] += 1;
            }
            if let Some(c) = capacity_type {
                self.capacity_type_counts[g][c] += 1;
            }
        }
    }

    /// A pod holding anti-affinity term `g` is in this zone and capacity type: the term's pods stay out of them.
    /// Hostnames are kept per node, by the solver.
    fn keep_away(&mut self, g: usize, zone: Option<usize>, capacity_type: Option<usize>) {
        match self.key_of(g) {
            TopologyKey::Zone => self.anti_zones[g] |= zone.map_or(0, |z| 1 << z),
            TopologyKey::CapacityType => self.anti_capacity_types[g] |= capacity_type.map_or(0, |c| 1 << c),
            TopologyKey::Hostname => {}
        }
    }

    /// Counts a pod anywhere (call once per placed pod).
    pub fn record_total(&mut self, member_of: &[usize]) {
        for &g in member_of {
            self.totals[g] += 1;
        }
    }

    /// The zones (bits over `eligible`) where the pod's zone constraints allow it.
    pub fn allowed_zones(&self, pod: &PodTopology, eligible: u64, honour: Honour) -> u64 {
        let kept_away = self.kept_away(pod, TopologyKey::Zone, |g| self.anti_zones[g]);
        self.allowed(pod, TopologyKey::Zone, eligible, honour, |g, d| self.zone_counts[g][d], 64) & !kept_away
    }

    /// The capacity types (bit 0 spot, bit 1 on-demand) where the pod's constraints allow it.
    pub fn allowed_capacity_types(&self, pod: &PodTopology, eligible: u8, honour: Honour) -> u8 {
        let kept_away = self.kept_away(pod, TopologyKey::CapacityType, |g| u64::from(self.anti_capacity_types[g]));
        (self.allowed(
            pod,
            TopologyKey::CapacityType,
            u64::from(eligible),
            honour,
            |g, d| self.capacity_type_counts[g][d],
            2,
        ) & !kept_away) as u8
    }

    /// The domains on `key` (bits) holding a pod whose anti-affinity selects this one.
    fn kept_away(&self, pod: &PodTopology, key: TopologyKey, domains: impl Fn(usize) -> u64) -> u64 {
        pod.member_of
            .iter()
            .filter(|&&g| self.is_anti[g] && self.key_of(g) == key)
            .fold(0, |bits, &g| bits | domains(g))
    }

    fn allowed(
        &self,
        pod: &PodTopology,
        key: TopologyKey,
        eligible: u64,
        honour: Honour,
        count: impl Fn(usize, usize) -> u32,
        domains: usize,
    ) -> u64 {
        let mut allowed = eligible;
        let domain_bits = || (0..domains).filter(move |d| eligible & (1 << d) != 0);
        for &(g, max_skew, min_domains, hard) in &pod.spreads {
            if self.key_of(g) != key || !(hard || honour.soft_spreads) {
                continue;
            }
            let eligible_domains = domain_bits().count() as u32;
            // Fewer eligible domains than minDomains: the global minimum counts as 0.
            let global_min = if min_domains.is_some_and(|m| eligible_domains < m) {
                0
            } else {
                domain_bits().map(|d| count(g, d)).min().unwrap_or(0)
            };
            for d in domain_bits() {
                if count(g, d) + 1 > global_min + max_skew {
                    allowed &= !(1 << d);
                }
            }
        }
        for (g, self_affine) in pod.affinity_terms(honour) {
            if self.key_of(g) != key {
                continue;
            }
            if self.totals[g] == 0 {
                if !self_affine {
                    return 0;
                }
                continue;
            }
            for d in domain_bits() {
                if count(g, d) == 0 {
                    allowed &= !(1 << d);
                }
            }
        }
        for g in pod.anti_affinity_terms(honour) {
            if self.key_of(g) != key {
                continue;
            }
            for d in domain_bits() {
                if count(g, d) > 0 {
                    allowed &= !(1 << d);
                }
            }
        }
        allowed
    }

    /// Whether the pod may join a node that already holds `on_node` (group → pods) and whose pods carry the
    /// anti-affinity groups `node_anti_affinity` on hostname.
    pub fn hostname_allows(
        &self,
        pod: &PodTopology,
        on_node: &[(usize, u32)],
        node_anti_affinity: &[usize],
        honour: Honour,
    ) -> bool {
        let here = |g: usize| on_node.iter().find(|(group, _)| *group == g).map_or(0, |(_, n)| *n);
        // A new node is always possible, so the global minimum over hostnames is 0.
        let spreads_ok = pod.spreads.iter().all(|&(g, max_skew, _, hard)| {
            self.key_of(g) != TopologyKey::Hostname || !(hard || honour.soft_spreads) || here(g) < max_skew
        });
        let mut affinity = pod.affinity_terms(honour);
        let affinity_ok = affinity.all(|(g, self_affine)| {
            self.key_of(g) != TopologyKey::Hostname || here(g) > 0 || (self.totals[g] == 0 && self_affine)
        });
        let anti_ok = pod.anti_affinity_terms(honour).all(|g| self.key_of(g) != TopologyKey::Hostname || here(g) == 0);
        // Symmetry: pods already there that keep pods like this one away.
        let symmetric_ok = !node_anti_affinity.iter().any(|g| pod.member_of.contains(g));
        spreads_ok && affinity_ok && anti_ok && symmetric_ok
    }

    /// The domain of `candidates` (bits) to pin a node to: the least crowded for the pod's spread on `key`,
    /// else the lowest.
    pub fn pick_domain(&self, pod: &PodTopology, key: TopologyKey, candidates: u64) -> Option<usize> {
        let domains = (0..64).filter(|d| candidates & (1u64 << d) != 0);
        let spread = pod.spreads.iter().find(|(g, ..)| self.key_of(*g) == key).map(|(g, ..)| *g);
        match spread {
            Some(g) => domains.min_by_key(|&d| {
                let count =
                    if key == TopologyKey::Zone { self.zone_counts[g][d] } else { self.capacity_type_counts[g][d] };
                (count, d)
            }),
            None => domains.min(),
        }
    }

    /// Whether the pod has constraints on `key`, its own or another pod's anti-affinity that selects it.
    pub fn constrains(&self, pod: &PodTopology, key: TopologyKey) -> bool {
        pod.spreads
            .iter()
            .map(|s| s.0)
            .chain(pod.affinity.iter().copied())
            .chain(pod.anti_affinity.iter().copied())
            .chain(pod.preferred.iter().map(|p| p.0))
            .any(|g| self.key_of(g) == key)
            || pod.member_of.iter().any(|&g| self.is_anti[g] && self.key_of(g) == key)
    }

    /// Why the pod's required topology may leave it nowhere to go, in words, once it was found to fit nowhere:
    /// an affinity term that selects no pod anywhere, else the constraints it has.
    pub fn describe_constraints(&self, pod: &PodTopology) -> Option<String> {
        let describe = |g: usize| {
            let group = &self.groups[g];
            let selector: Vec<String> = group.selector.iter().map(ToString::to_string).collect();
            format!("{} of pods {}", key_label(group.key), selector.join(","))
        };
        for (&g, &self_affine) in pod.affinity.iter().zip(&pod.self_affine) {
            if self.totals[g] == 0 && !self_affine {
                return Some(format!("its pod affinity to {} selects no pod that runs or is planned", describe(g)));
            }
        }
        let mut terms: Vec<String> = Vec::new();
        terms.extend(pod.spreads.iter().filter(|s| s.3).map(|s| format!("spread over {}", describe(s.0))));
        terms.extend(pod.affinity.iter().map(|&g| format!("affinity to {}", describe(g))));
        terms.extend(pod.anti_affinity.iter().map(|&g| format!("anti-affinity to {}", describe(g))));
        if pod.member_of.iter().any(|&g| self.is_anti[g]) {
            terms.push("the anti-affinity of other pods".to_string());
        }
        (!terms.is_empty()).then(|| format!("its topology ({}) leaves no zone or node it may use", terms.join("; ")))
    }

    /// Whether the pod counts in any group on `key` (so the node's domain on it must be known).
    pub fn counted_on(&self, pod: &PodTopology, key: TopologyKey) -> bool {
        pod.member_of.iter().any(|&g| self.key_of(g) == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), app.to_string())])
    }

    fn spread(key: TopologyKey, app: &str) -> TopologySpread {
        TopologySpread {
            key,
            max_skew: 1,
            min_domains: None,
            hard: true,
            selector: vec![Requirement::equals("app", app)],
            counted_nodes: CountedNodes::default(),
        }
    }

    /// A pod with these spreads (or none) and no affinity terms.
    fn spreading<'a>(
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
        spreads: &'a [TopologySpread],
    ) -> PodTopologyInput<'a> {
        PodTopologyInput { namespace, labels, spreads, affinity: &[], anti_affinity: &[], preferred: &[] }
    }

    #[test]
    fn zone_spread_allows_only_the_least_crowded_zones_past_the_skew() {
        let web = labels("web");
        let spreads = [spread(TopologyKey::Zone, "web")];
        let input = [spreading("ns", &web, &spreads)];
        let (mut topology, pods, _) = Topology::new(&input, &[]);
        let pod = &pods[0];
        assert_eq!(topology.allowed_zones(pod, 0b111, Honour::REQUIRED), 0b111);
        topology.record(pod, Some(0), None);
        assert_eq!(topology.allowed_zones(pod, 0b111, Honour::REQUIRED), 0b110);
        topology.record(pod, Some(1), None);
        assert_eq!(topology.allowed_zones(pod, 0b111, Honour::REQUIRED), 0b100);
        assert_eq!(topology.pick_domain(pod, TopologyKey::Zone, 0b100), Some(2));
    }

    #[test]
    fn min_domains_above_the_eligible_zones_caps_each_at_the_skew() {
        let web = labels("web");
        let mut s = spread(TopologyKey::Zone, "web");
        s.min_domains = Some(5);
        let spreads = [s];
        let input = [spreading("ns", &web, &spreads)];
        let (mut topology, pods, _) = Topology::new(&input, &[]);
        for zone in 0..3 {
            topology.record(&pods[0], Some(zone), None);
        }
        // Every zone has 1 = 0 + maxSkew: none may take another.
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, Honour::REQUIRED), 0);
    }

    #[test]
    fn hostname_anti_affinity_is_one_per_node_both_ways() {
        let db = labels("db");
        let anti = [PodAffinityTerm { key: TopologyKey::Hostname, selector: vec![Requirement::equals("app", "db")] }];
        let other = labels("cache");
        let input = [
            PodTopologyInput {
                namespace: "ns",
                labels: &db,
                spreads: &[],
                affinity: &[],
                anti_affinity: &anti,
                preferred: &[],
            },
            spreading("ns", &other, &[]),
        ];
        let (topology, pods, _) = Topology::new(&input, &[]);
        let group = pods[0].anti_affinity[0];
        assert!(topology.hostname_allows(&pods[0], &[], &[], Honour::REQUIRED));
        assert!(!topology.hostname_allows(&pods[0], &[(group, 1)], &[group], Honour::REQUIRED));
        // A pod not selected by the term may share the node.
        assert!(topology.hostname_allows(&pods[1], &[(group, 1)], &[group], Honour::REQUIRED));
    }

    #[test]
    fn zone_affinity_follows_the_first_pod() {
        let web = labels("web");
        let affinity = [PodAffinityTerm { key: TopologyKey::Zone, selector: vec![Requirement::equals("app", "web")] }];
        let input = [PodTopologyInput {
            namespace: "ns",
            labels: &web,
            spreads: &[],
            affinity: &affinity,
            anti_affinity: &[],
            preferred: &[],
        }];
        let (mut topology, pods, _) = Topology::new(&input, &[]);
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, Honour::REQUIRED), 0b111);
        topology.record(&pods[0], Some(1), None);
        topology.record_total(&pods[0].member_of);
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, Honour::REQUIRED), 0b010);
    }

    #[test]
    fn counted_nodes_are_those_the_pod_could_use_as_the_policies_say() {
        let arm = BTreeMap::from([("kubernetes.io/arch".to_string(), "arm64".to_string())]);
        let amd = BTreeMap::from([("kubernetes.io/arch".to_string(), "amd64".to_string())]);
        let tainted = [Taint { key: "dedicated".into(), value: None, effect: "NoSchedule".into() }];
        let every = CountedNodes::default();
        assert!(every.counts(&arm, &tainted));
        let amd64_only = CountedNodes {
            affinity: Some(vec![vec![Requirement::equals("kubernetes.io/arch", "amd64")]]),
            tolerations: None,
        };
        assert!(amd64_only.counts(&amd, &tainted) && !amd64_only.counts(&arm, &[]));
        let untainted_only = CountedNodes { affinity: None, tolerations: Some(vec![]) };
        assert!(untainted_only.counts(&arm, &[]) && !untainted_only.counts(&arm, &tainted));
    }

    #[test]
    fn placed_pods_count_where_they_are_and_their_anti_affinity_keeps_others_away() {
        let web = labels("web");
        let spreads = [spread(TopologyKey::Zone, "web")];
        let pending = [spreading("ns", &web, &spreads)];
        let node_labels = BTreeMap::new();
        let keep_web_away =
            [PodAffinityTerm { key: TopologyKey::Zone, selector: vec![Requirement::equals("app", "web")] }];
        let loner = labels("loner");
        let placed = [
            PlacedTopologyInput {
                namespace: "ns",
                labels: &web,
                anti_affinity: &[],
                node: 0,
                node_labels: &node_labels,
                node_taints: &[],
                zone: Some(0),
                capacity_type: Some(1),
            },
            PlacedTopologyInput {
                namespace: "ns",
                labels: &loner,
                anti_affinity: &keep_web_away,
                node: 1,
                node_labels: &node_labels,
                node_taints: &[],
                zone: Some(2),
                capacity_type: Some(1),
            },
        ];
        let (topology, pods, memberships) = Topology::new(&pending, &placed);
        // Zone 0 has a web pod already (skew), zone 2 a pod that keeps web pods out.
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, Honour::REQUIRED), 0b010);
        assert!(topology.constrains(&pods[0], TopologyKey::Zone));
        assert_eq!(memberships.len(), 1, "only the web pod counts in a group: {memberships:?}");
        assert_eq!(memberships[0].node, 0);
    }

    #[test]
    fn namespaces_keep_groups_apart() {
        let web = labels("web");
        let spreads = [spread(TopologyKey::Zone, "web")];
        let input = [spreading("a", &web, &spreads), spreading("b", &web, &[])];
        let (_, pods, _) = Topology::new(&input, &[]);
        assert_eq!(pods[0].member_of.len(), 1);
        assert!(pods[1].member_of.is_empty());
    }
}
