//! Pod topology: spread constraints, and pod affinity and anti-affinity, on zone, hostname and capacity type.
//!
//! Pods are counted per *group*: a topology key with the label selector and namespace of a constraint. Zones and
//! capacity types are counted across the plan; hostnames per node. A pod whose constraints involve zone or capacity
//! type pins the node it joins to one domain, so every later count is exact.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

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
}

/// A required pod affinity or anti-affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodAffinityTerm {
    pub key: TopologyKey,
    pub selector: Vec<Requirement>,
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
}

impl PodTopology {
    pub fn is_empty(&self) -> bool {
        self.spreads.is_empty()
            && self.affinity.is_empty()
            && self.anti_affinity.is_empty()
            && self.member_of.is_empty()
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
}

/// The pod input the topology needs, to stay independent of `PodRequest`.
pub struct PodTopologyInput<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spreads: &'a [TopologySpread],
    pub affinity: &'a [PodAffinityTerm],
    pub anti_affinity: &'a [PodAffinityTerm],
}

impl Topology {
    /// Registers the groups of every pod's constraints, then resolves each pod's constraints and memberships.
    pub fn new(pods: &[PodTopologyInput]) -> (Self, Vec<PodTopology>) {
        let mut topology = Topology::default();
        for pod in pods {
            let terms = pod.spreads.iter().map(|s| (s.key, &s.selector));
            let terms = terms.chain(pod.affinity.iter().chain(pod.anti_affinity).map(|t| (t.key, &t.selector)));
            for (key, selector) in terms {
                topology.group(GroupKey { key, namespace: pod.namespace.to_string(), selector: selector.clone() });
            }
        }
        let resolved = pods
            .iter()
            .map(|pod| {
                let group_of = |key: TopologyKey, selector: &Vec<Requirement>| {
                    topology.index[&GroupKey { key, namespace: pod.namespace.to_string(), selector: selector.clone() }]
                };
                PodTopology {
                    spreads: pod
                        .spreads
                        .iter()
                        .map(|s| (group_of(s.key, &s.selector), s.max_skew.max(1), s.min_domains, s.hard))
                        .collect(),
                    affinity: pod.affinity.iter().map(|t| group_of(t.key, &t.selector)).collect(),
                    anti_affinity: pod.anti_affinity.iter().map(|t| group_of(t.key, &t.selector)).collect(),
                    self_affine: pod.affinity.iter().map(|t| selects(&t.selector, pod.labels)).collect(),
                    member_of: topology
                        .groups
                        .iter()
                        .enumerate()
                        .filter(|(_, g)| g.namespace == pod.namespace && selects(&g.selector, pod.labels))
                        .map(|(i, _)| i)
                        .collect(),
                }
            })
            .collect();
        (topology, resolved)
    }

    fn group(&mut self, key: GroupKey) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.groups.push(key.clone());
        self.zone_counts.push([0; 64]);
        self.capacity_type_counts.push([0; 2]);
        self.totals.push(0);
        self.index.insert(key, self.groups.len() - 1);
        self.groups.len() - 1
    }

    pub fn key_of(&self, group: usize) -> TopologyKey {
        self.groups[group].key
    }

    /// Records a pod of `member_of` in a zone and capacity type (each None while not pinned).
    pub fn record(&mut self, member_of: &[usize], zone: Option<usize>, capacity_type: Option<usize>) {
        for &g in member_of {
            if let Some(z) = zone {
                self.zone_counts[g][z] += 1;
            }
            if let Some(c) = capacity_type {
                self.capacity_type_counts[g][c] += 1;
            }
        }
    }

    /// Counts a pod anywhere (call once per placed pod).
    pub fn record_total(&mut self, member_of: &[usize]) {
        for &g in member_of {
            self.totals[g] += 1;
        }
    }

    /// The zones (bits over `eligible`) where the pod's zone constraints allow it.
    pub fn allowed_zones(&self, pod: &PodTopology, eligible: u64, soft: bool) -> u64 {
        self.allowed(pod, TopologyKey::Zone, eligible, soft, |g, d| self.zone_counts[g][d], 64)
    }

    /// The capacity types (bit 0 spot, bit 1 on-demand) where the pod's constraints allow it.
    pub fn allowed_capacity_types(&self, pod: &PodTopology, eligible: u8, soft: bool) -> u8 {
        self.allowed(
            pod,
            TopologyKey::CapacityType,
            u64::from(eligible),
            soft,
            |g, d| self.capacity_type_counts[g][d],
            2,
        ) as u8
    }

    fn allowed(
        &self,
        pod: &PodTopology,
        key: TopologyKey,
        eligible: u64,
        soft: bool,
        count: impl Fn(usize, usize) -> u32,
        domains: usize,
    ) -> u64 {
        let mut allowed = eligible;
        let domain_bits = || (0..domains).filter(move |d| eligible & (1 << d) != 0);
        for &(g, max_skew, min_domains, hard) in &pod.spreads {
            if self.key_of(g) != key || !(hard || soft) {
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
        for (i, &g) in pod.affinity.iter().enumerate() {
            if self.key_of(g) != key {
                continue;
            }
            if self.totals[g] == 0 {
                if !pod.self_affine[i] {
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
        for &g in &pod.anti_affinity {
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
        soft: bool,
    ) -> bool {
        let here = |g: usize| on_node.iter().find(|(group, _)| *group == g).map_or(0, |(_, n)| *n);
        // A new node is always possible, so the global minimum over hostnames is 0.
        let spreads_ok = pod.spreads.iter().all(|&(g, max_skew, _, hard)| {
            self.key_of(g) != TopologyKey::Hostname || !(hard || soft) || here(g) < max_skew
        });
        let affinity_ok = pod.affinity.iter().enumerate().all(|(i, &g)| {
            self.key_of(g) != TopologyKey::Hostname || here(g) > 0 || (self.totals[g] == 0 && pod.self_affine[i])
        });
        let anti_ok = pod.anti_affinity.iter().all(|&g| self.key_of(g) != TopologyKey::Hostname || here(g) == 0);
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

    /// Whether the pod has constraints on `key`.
    pub fn constrains(&self, pod: &PodTopology, key: TopologyKey) -> bool {
        pod.spreads
            .iter()
            .map(|s| s.0)
            .chain(pod.affinity.iter().copied())
            .chain(pod.anti_affinity.iter().copied())
            .any(|g| self.key_of(g) == key)
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
        }
    }

    #[test]
    fn zone_spread_allows_only_the_least_crowded_zones_past_the_skew() {
        let web = labels("web");
        let spreads = [spread(TopologyKey::Zone, "web")];
        let input =
            [PodTopologyInput { namespace: "ns", labels: &web, spreads: &spreads, affinity: &[], anti_affinity: &[] }];
        let (mut topology, pods) = Topology::new(&input);
        let pod = &pods[0];
        assert_eq!(topology.allowed_zones(pod, 0b111, false), 0b111);
        topology.record(&pod.member_of, Some(0), None);
        assert_eq!(topology.allowed_zones(pod, 0b111, false), 0b110);
        topology.record(&pod.member_of, Some(1), None);
        assert_eq!(topology.allowed_zones(pod, 0b111, false), 0b100);
        assert_eq!(topology.pick_domain(pod, TopologyKey::Zone, 0b100), Some(2));
    }

    #[test]
    fn min_domains_above_the_eligible_zones_caps_each_at_the_skew() {
        let web = labels("web");
        let mut s = spread(TopologyKey::Zone, "web");
        s.min_domains = Some(5);
        let spreads = [s];
        let input =
            [PodTopologyInput { namespace: "ns", labels: &web, spreads: &spreads, affinity: &[], anti_affinity: &[] }];
        let (mut topology, pods) = Topology::new(&input);
        for zone in 0..3 {
            topology.record(&pods[0].member_of, Some(zone), None);
        }
        // Every zone has 1 = 0 + maxSkew: none may take another.
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, false), 0);
    }

    #[test]
    fn hostname_anti_affinity_is_one_per_node_both_ways() {
        let db = labels("db");
        let anti = [PodAffinityTerm { key: TopologyKey::Hostname, selector: vec![Requirement::equals("app", "db")] }];
        let other = labels("cache");
        let input = [
            PodTopologyInput { namespace: "ns", labels: &db, spreads: &[], affinity: &[], anti_affinity: &anti },
            PodTopologyInput { namespace: "ns", labels: &other, spreads: &[], affinity: &[], anti_affinity: &[] },
        ];
        let (topology, pods) = Topology::new(&input);
        let group = pods[0].anti_affinity[0];
        assert!(topology.hostname_allows(&pods[0], &[], &[], false));
        assert!(!topology.hostname_allows(&pods[0], &[(group, 1)], &[group], false));
        // A pod not selected by the term may share the node.
        assert!(topology.hostname_allows(&pods[1], &[(group, 1)], &[group], false));
    }

    #[test]
    fn zone_affinity_follows_the_first_pod() {
        let web = labels("web");
        let affinity = [PodAffinityTerm { key: TopologyKey::Zone, selector: vec![Requirement::equals("app", "web")] }];
        let input =
            [PodTopologyInput { namespace: "ns", labels: &web, spreads: &[], affinity: &affinity, anti_affinity: &[] }];
        let (mut topology, pods) = Topology::new(&input);
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, false), 0b111);
        topology.record(&pods[0].member_of, Some(1), None);
        topology.record_total(&pods[0].member_of);
        assert_eq!(topology.allowed_zones(&pods[0], 0b111, false), 0b010);
    }

    #[test]
    fn namespaces_keep_groups_apart() {
        let web = labels("web");
        let spreads = [spread(TopologyKey::Zone, "web")];
        let input = [
            PodTopologyInput { namespace: "a", labels: &web, spreads: &spreads, affinity: &[], anti_affinity: &[] },
            PodTopologyInput { namespace: "b", labels: &web, spreads: &[], affinity: &[], anti_affinity: &[] },
        ];
        let (_, pods) = Topology::new(&input);
        assert_eq!(pods[0].member_of.len(), 1);
        assert!(pods[1].member_of.is_empty());
    }
}
