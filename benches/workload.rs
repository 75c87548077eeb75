//! The workload of Karpenter's scheduling benchmark (sigs.k8s.io/karpenter v1.14.1,
//! `pkg/controllers/provisioning/scheduling/scheduling_benchmark_test.go`, `makeDiversePods`, and
//! `pkg/cloudprovider/fake/instancetype.go`, `InstanceTypes(400)`), rebuilt as nodesmith's plain input so both
//! schedulers solve the same problem:
//! - 400 instance types, type i with i+1 vCPUs, 2(i+1) GiB and 10(i+1) pods, priced 0.1 per vCPU plus 0.1 per GB,
//!   offered as spot in zones 1–2 and on-demand in zones 1–3, with 100m CPU and 10Mi held back;
//! - one NodePool without requirements;
//! - pods in five equal kinds (generic; zone spread; hostname spread; zone self-affinity; hostname anti-affinity),
//!   CPU drawn from {100, 250, 500, 1000, 1500}m and memory from {100, 256, 512, 1024, 2048, 4096}Mi.
#![allow(dead_code)] // each bench target uses part of it

use std::collections::{BTreeMap, HashSet};

use nodesmith::catalog::allocatable::{EvictionSignals, EvictionThresholds, NodeOverhead, Reserved, Threshold};
use nodesmith::catalog::instance_type::InstanceTypeInfo;
use nodesmith::catalog::pricing::PriceTable;
use nodesmith::catalog::resources::{ResourceName, Resources};
use nodesmith::catalog::{CapacityType, OfferingKey};
use nodesmith::names::{CAPACITY_TYPE_LABEL, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};
use nodesmith::scheduling::{
    ExistingNode, NodePoolSpec, Operator, PlacedPod, Plan, PodAffinityTerm, PodRequest, Requirement, SchedulingInput,
    TopologyKey, TopologySpread, solve,
};

pub const ZONES: [&str; 3] = ["test-zone-1", "test-zone-2", "test-zone-3"];

pub struct Workload {
    pub types: Vec<InstanceTypeInfo>,
    pub prices: PriceTable,
    pub unavailable: HashSet<OfferingKey>,
    pub pools: Vec<NodePoolSpec>,
}

impl Workload {
    /// Plans `pods` on this workload's instance types and NodePool, with no existing nodes.
    pub fn solve(&self, pods: &[PodRequest]) -> Plan {
        self.solve_around(pods, &[])
    }

    /// Plans `pods` around nodes that already run.
    pub fn solve_around(&self, pods: &[PodRequest], existing: &[ExistingNode]) -> Plan {
        solve(&SchedulingInput {
            pods,
            nodepools: &self.pools,
            instance_types: &self.types,
            prices: &self.prices,
            existing,
            daemonsets: &[],
            unavailable: &self.unavailable,
        })
    }

    /// `nodes` running nodes of the 16-vCPU type, spread over the zones, each with `pods_per_node` pods labelled
    /// as the diverse pods are (every fifth an nginx pod with hostname anti-affinity to its kind) and a quarter of
    /// its room left.
    pub fn running_cluster(&self, nodes: usize, pods_per_node: usize, seed: u64) -> Vec<ExistingNode> {
        let mut rng = Rng::new(seed);
        let info = &self.types[15];
        let capacity = info.capacity(Default::default());
        let quarter = Resources::ZERO
            .with(ResourceName::Cpu, capacity.get(ResourceName::Cpu) / 4)
            .with(ResourceName::Memory, capacity.get(ResourceName::Memory) / 4)
            .with(ResourceName::Pods, capacity.get(ResourceName::Pods) - pods_per_node as i64);
        (0..nodes)
            .map(|n| {
                let name = format!("running-{n:05}");
                let labels = BTreeMap::from([
                    (ZONE_LABEL.to_string(), ZONES[n % ZONES.len()].to_string()),
                    (HOSTNAME_LABEL.to_string(), name.clone()),
                    (CAPACITY_TYPE_LABEL.to_string(), "on-demand".to_string()),
                    (INSTANCE_TYPE_LABEL.to_string(), info.name.clone()),
                    (NODEPOOL_LABEL.to_string(), "default".to_string()),
                ]);
                let pods = (0..pods_per_node)
                    .map(|p| {
                        if (n * pods_per_node + p) % 5 == 4 {
                            let nginx = BTreeMap::from([("app".to_string(), "nginx".to_string())]);
                            let anti = PodAffinityTerm { key: TopologyKey::Hostname, selector: selector(&nginx) };
                            PlacedPod {
                                namespace: "default".into(),
                                labels: nginx,
                                anti_affinity: vec![anti],
                                host_ports: vec![],
                            }
                        } else {
                            let key = if p % 2 == 0 { "my-label" } else { "my-affininity" };
                            PlacedPod {
                                namespace: "default".into(),
                                labels: random_labels(&mut rng, key),
                                anti_affinity: vec![],
                                host_ports: vec![],
                            }
                        }
                    })
                    .collect();
                ExistingNode {
                    name,
                    labels,
                    taints: vec![],
                    available: quarter,
                    capacity,
                    nodepool: Some("default".into()),
                    pods,
                }
            })
            .collect()
    }
}

pub fn fake_instance_types() -> Workload {
    let mut prices = PriceTable::default();
    let mut unavailable = HashSet::new();
    let types = (0..400u32)
        .map(|i| {
            let n = i + 1;
            let name = format!("fake-it-{i}");
            let price = 0.1 * f64::from(n) + 0.1 * f64::from(2 * n) * f64::from(1u32 << 30) / 1e9;
            prices.set_on_demand(&name, price);
            for zone in ZONES {
                prices.set_spot(&name, zone, price);
            }
            // Karpenter's fake offers no spot in zone 3.
            unavailable.insert(OfferingKey {
                instance_type: name.clone(),
                zone: ZONES[2].to_string(),
                capacity_type: CapacityType::Spot,
            });
            InstanceTypeInfo {
                name,
                architectures: vec!["x86_64".into()],
                vcpus: n,
                memory_mib: u64::from(2048 * n),
                hypervisor: "nitro".into(),
                bare_metal: false,
                // One ENI with 10n − 1 addresses: the ENI formula gives exactly 10n pods.
                enis: 1,
                ipv4_per_eni: 10 * n - 1,
                cpu_manufacturer: "fake".into(),
                network_bandwidth_mbps: 0,
                gpu: None,
                neuron: None,
                local_nvme_gib: 0,
                neuron_cores: 0,
                efa_interfaces: 0,
                ebs_volume_limit: 25,
                usage_classes: vec!["spot".into(), "on-demand".into()],
                zones: ZONES.iter().map(|z| z.to_string()).collect(),
            }
        })
        .collect();
    let pool = NodePoolSpec {
        name: "default".into(),
        weight: 0,
        requirements: vec![],
        labels: BTreeMap::new(),
        taints: vec![],
        startup_taints: vec![],
        limits: None,
        max_pods: Default::default(),
        overhead: NodeOverhead {
            vm_memory_overhead_percent: 0.0,
            kube_reserved: Reserved {
                cpu_millis: Some(100),
                memory_bytes: Some(10 << 20),
                ephemeral_storage_bytes: None,
            },
            system_reserved: Reserved::default(),
            eviction: EvictionThresholds {
                hard: EvictionSignals { memory: Some(Threshold::Bytes(0)), nodefs: Some(Threshold::Bytes(0)) },
                soft: EvictionSignals::default(),
            },
        },
        ephemeral_storage: Default::default(),
        min_values_policy: Default::default(),
    };
    Workload { types, prices, unavailable, pools: vec![pool] }
}

/// xorshift64*: a fixed, dependency-free sequence, so every run plans the same pods.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_pod(rng: &mut Rng, id: String, labels: BTreeMap<String, String>) -> PodRequest {
    let cpu = *rng.pick(&[100, 250, 500, 1000, 1500]);
    let memory_mib: i64 = *rng.pick(&[100, 256, 512, 1024, 2048, 4096]);
    let requests = Resources::ZERO
        .with(ResourceName::Cpu, cpu)
        .with(ResourceName::Memory, memory_mib << 20)
        .with(ResourceName::Pods, 1);
    let mut pod = PodRequest::new(&id, requests);
    pod.labels = labels;
    pod
}

fn random_labels(rng: &mut Rng, key: &str) -> BTreeMap<String, String> {
    let value = *rng.pick(&["a", "b", "c", "d", "e", "f", "g"]);
    BTreeMap::from([(key.to_string(), value.to_string())])
}

fn selector(labels: &BTreeMap<String, String>) -> Vec<Requirement> {
    labels.iter().map(|(k, v)| Requirement::equals(k, v)).collect()
}

/// `makeDiversePods(count)`.
pub fn diverse_pods(count: usize, seed: u64) -> Vec<PodRequest> {
    let mut rng = Rng::new(seed);
    let per_kind = count / 5;
    let mut pods = Vec::with_capacity(count);
    let mut next_id = 0;
    let mut id = || {
        next_id += 1;
        format!("default/pod-{next_id:05}")
    };
    let generic = |rng: &mut Rng, id: String| {
        let labels = random_labels(rng, "my-label");
        random_pod(rng, id, labels)
    };
    for _ in 0..per_kind {
        pods.push(generic(&mut rng, id()));
    }
    for key in [TopologyKey::Zone, TopologyKey::Hostname] {
        for _ in 0..per_kind {
            let labels = random_labels(&mut rng, "my-label");
            let mut pod = random_pod(&mut rng, id(), labels);
            // The selector is drawn independently of the pod's own labels, as Karpenter's benchmark does.
            let spread_selector = selector(&random_labels(&mut rng, "my-label"));
            pod.spreads = vec![TopologySpread {
                key,
                max_skew: 1,
                min_domains: None,
                hard: true,
                selector: spread_selector,
                counted_nodes: Default::default(),
            }];
            pods.push(pod);
        }
    }
    for _ in 0..per_kind {
        let labels = random_labels(&mut rng, "my-affininity");
        let mut pod = random_pod(&mut rng, id(), labels.clone());
        pod.affinity = vec![PodAffinityTerm { key: TopologyKey::Zone, selector: selector(&labels) }];
        pods.push(pod);
    }
    for _ in 0..per_kind {
        let labels = BTreeMap::from([("app".to_string(), "nginx".to_string())]);
        let mut pod = random_pod(&mut rng, id(), labels.clone());
        pod.anti_affinity = vec![PodAffinityTerm { key: TopologyKey::Hostname, selector: selector(&labels) }];
        pods.push(pod);
    }
    while pods.len() < count {
        pods.push(generic(&mut rng, id()));
    }
    pods
}

/// Pods with no topology constraints, for packing quality: the same size mix.
pub fn generic_pods(count: usize, seed: u64) -> Vec<PodRequest> {
    let mut rng = Rng::new(seed);
    (0..count).map(|i| random_pod(&mut rng, format!("default/generic-{i:05}"), BTreeMap::new())).collect()
}

/// A general-purpose on-demand NodePool over the real catalog: amd64, c/m/r families of generation 5 and later.
/// The pool the packing-quality figures use.
pub fn general_purpose_pool() -> NodePoolSpec {
    NodePoolSpec {
        name: "general".into(),
        weight: 0,
        requirements: vec![
            Requirement::equals("kubernetes.io/arch", "amd64"),
            Requirement::equals("karpenter.sh/capacity-type", "on-demand"),
            Requirement::new("karpenter.k8s.aws/instance-category", Operator::In, &["c", "m", "r"]),
            Requirement::new("karpenter.k8s.aws/instance-generation", Operator::Gt, &["4"]),
        ],
        labels: BTreeMap::new(),
        taints: vec![],
        startup_taints: vec![],
        limits: None,
        max_pods: Default::default(),
        overhead: Default::default(),
        ephemeral_storage: Default::default(),
        min_values_policy: Default::default(),
    }
}
