//! The Node a kubelet would register for an EC2 instance. Pure: facts in, a Node out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nodesmith::catalog::allocatable;
use nodesmith::catalog::resources::{ResourceName, parse_quantity};

use crate::user_data::KubeletFacts;

/// Marks the Nodes the registrar owns, so it never deletes one it did not make.
pub const REGISTRAR_ANNOTATION: &str = "sandbox.nodesmith.dev/registered-by";

/// What the registrar learned about one running instance.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub zone: String,
    pub private_dns_name: String,
    pub private_ip: String,
    pub instance_type: String,
    /// `amd64` or `arm64`, as Kubernetes names them.
    pub arch: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub spot: bool,
    pub max_pods: u32,
    /// Reservations and eviction thresholds the bootstrap gives the kubelet (unset: the EKS AMI's defaults).
    pub kubelet: KubeletFacts,
    /// Labels and taints the launch asked for (the kubelet's `--node-labels`, `--register-with-taints`).
    pub requested_labels: BTreeMap<String, String>,
    pub requested_taints: Vec<Taint>,
}

impl InstanceFacts {
    pub fn provider_id(&self) -> String {
        format!("aws:///{}/{}", self.zone, self.instance_id)
    }
}

pub fn node_for(facts: &InstanceFacts) -> Node {
    let mut labels = facts.requested_labels.clone();
    let well_known = [
        ("kubernetes.io/hostname", facts.private_dns_name.as_str()),
        ("kubernetes.io/arch", facts.arch.as_str()),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", facts.instance_type.as_str()),
        ("topology.kubernetes.io/zone", facts.zone.as_str()),
        ("topology.kubernetes.io/region", region_of(&facts.zone)),
        ("karpenter.sh/capacity-type", if facts.spot { "spot" } else { "on-demand" }),
    ];
    for (key, value) in well_known {
        labels.insert(key.to_string(), value.to_string());
    }

    // As the kubelet reckons it: allocatable = capacity − kube-reserved − system-reserved − the hard eviction
    // threshold; each reservation the bootstrap leaves out is the EKS AMI's (kube-reserved by its formulas).
    let kubelet = &facts.kubelet;
    let quantity = |map: &BTreeMap<String, String>, key: &str, resource: ResourceName| {
        map.get(key).and_then(|q| parse_quantity(q, resource).ok()).map(|v| u64::try_from(v).unwrap_or(0))
    };
    let memory_capacity = allocatable::memory_capacity_mib(facts.memory_mib) << 20;
    let kube_reserved_memory = quantity(&kubelet.kube_reserved, "memory", ResourceName::Memory)
        .unwrap_or(allocatable::kube_reserved_memory_mib(facts.max_pods) << 20);
    let system_reserved_memory = quantity(&kubelet.system_reserved, "memory", ResourceName::Memory).unwrap_or(0);
    let eviction_memory = match kubelet.eviction_hard.get("memory.available") {
        Some(percent) if percent.ends_with('%') => {
            let percent: f64 = percent.trim_end_matches('%').parse().unwrap_or(0.0);
            (memory_capacity as f64 * percent / 100.0).ceil() as u64
        }
        Some(amount) => parse_quantity(amount, ResourceName::Memory).map_or(0, |v| u64::try_from(v).unwrap_or(0)),
        None => allocatable::EVICTION_THRESHOLD_MIB << 20,
    };
    let memory_allocatable = memory_capacity
        .saturating_sub(kube_reserved_memory)
        .saturating_sub(system_reserved_memory)
        .saturating_sub(eviction_memory);
    let kube_reserved_cpu = quantity(&kubelet.kube_reserved, "cpu", ResourceName::Cpu)
        .unwrap_or(allocatable::kube_reserved_cpu_millis(facts.vcpus));
    let system_reserved_cpu = quantity(&kubelet.system_reserved, "cpu", ResourceName::Cpu).unwrap_or(0);
    let cpu_allocatable =
        (u64::from(facts.vcpus) * 1000).saturating_sub(kube_reserved_cpu).saturating_sub(system_reserved_cpu);
    let capacity = resources(format!("{}", facts.vcpus), memory_capacity, facts.max_pods);
    let allocatable = resources(format!("{cpu_allocatable}m"), memory_allocatable, facts.max_pods);

    Node {
        metadata: ObjectMeta {
            name: Some(facts.private_dns_name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(REGISTRAR_ANNOTATION.to_string(), "registrar".to_string())])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(facts.provider_id()),
            taints: (!facts.requested_taints.is_empty()).then(|| facts.requested_taints.clone()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: facts.private_ip.clone() },
                NodeAddress { type_: "Hostname".into(), address: facts.private_dns_name.clone() },
                NodeAddress { type_: "InternalDNS".into(), address: facts.private_dns_name.clone() },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: facts.arch.clone(),
                operating_system: "linux".into(),
                system_uuid: facts.instance_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn resources(cpu: String, memory_bytes: u64, pods: u32) -> BTreeMap<String, Quantity> {
    // In MiB where whole (as before), in bytes where a percentage left a fraction.
    let memory = if memory_bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", memory_bytes >> 20)
    } else {
        memory_bytes.to_string()
    };
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu)),
        ("memory".to_string(), Quantity(memory)),
        ("pods".to_string(), Quantity(pods.to_string())),
        ("ephemeral-storage".to_string(), Quantity("20Gi".to_string())),
    ])
}

/// `us-east-1a` → `us-east-1`.
fn region_of(zone: &str) -> &str {
    zone.trim_end_matches(|c: char| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m5_large() -> InstanceFacts {
        InstanceFacts {
            instance_id: "i-0123".into(),
            zone: "us-east-1b".into(),
            private_dns_name: "ip-10-0-2-7.ec2.internal".into(),
            private_ip: "10.0.2.7".into(),
            instance_type: "m5.large".into(),
            arch: "amd64".into(),
            vcpus: 2,
            memory_mib: 8192,
            spot: true,
            max_pods: 29,
            kubelet: KubeletFacts::default(),
            requested_labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
            requested_taints: vec![Taint {
                key: "dedicated".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn node_carries_the_kubelet_identity_and_the_requested_labels_and_taints() {
        let node = node_for(&m5_large());
        assert_eq!(node.metadata.name.as_deref(), Some("ip-10-0-2-7.ec2.internal"));
        let spec = node.spec.expect("spec");
        assert_eq!(spec.provider_id.as_deref(), Some("aws:///us-east-1b/i-0123"));
        assert_eq!(spec.taints.expect("taints")[0].key, "dedicated");
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels["karpenter.sh/capacity-type"], "spot");
        assert_eq!(labels["topology.kubernetes.io/region"], "us-east-1");
        assert_eq!(labels["team"], "a");
    }

    #[test]
    fn allocatable_subtracts_kube_reserved_and_eviction() {
        let status = node_for(&m5_large()).status.expect("status");
        let allocatable = status.allocatable.expect("allocatable");
        assert_eq!(allocatable["cpu"].0, "1930m");
        // 8192 − 614 (VM overhead) − 574 (11 × 29 + 255) − 100
        assert_eq!(allocatable["memory"].0, "6904Mi");
        assert_eq!(allocatable["pods"].0, "29");
        assert_eq!(status.capacity.expect("capacity")["cpu"].0, "2");
    }

    #[test]
    fn allocatable_follows_the_kubelet_settings_of_the_bootstrap() {
        let facts = InstanceFacts {
            kubelet: KubeletFacts {
                max_pods: Some(29),
                kube_reserved: BTreeMap::from([("cpu".into(), "200m".into())]),
                system_reserved: BTreeMap::from([("cpu".into(), "100m".into()), ("memory".into(), "300Mi".into())]),
                eviction_hard: BTreeMap::from([("memory.available".into(), "500Mi".into())]),
                register_with_taints: None,
            },
            ..m5_large()
        };
        let allocatable = node_for(&facts).status.and_then(|s| s.allocatable).expect("allocatable");
        assert_eq!(allocatable["cpu"].0, "1700m");
        // 7578 − 574 (kube-reserved memory left to the formula) − 300 − 500
        assert_eq!(allocatable["memory"].0, "6204Mi");
    }
}
