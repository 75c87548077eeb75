//! One EC2 instance type as nodesmith needs it: the facts DescribeInstanceTypes gives, and what follows from
//! them: the labels Karpenter users select on, node capacity and allocatable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::allocatable::{self, NodeOverhead};
use super::max_pods::{MaxPodsSettings, NetworkLimits, max_pods, pod_eni_limit, vpc_cni_limits};
use super::resources::{ResourceName, Resources};

/// GPUs or Neuron devices of a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    pub name: String,
    pub manufacturer: String,
    pub count: u32,
    pub memory_mib: u64,
}

/// The facts of one instance type, as DescribeInstanceTypes and DescribeInstanceTypeOfferings report them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceTypeInfo {
    pub name: String,
    /// `x86_64` and/or `arm64`, as EC2 names them.
    pub architectures: Vec<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `nitro`, `xen`, or empty for bare metal.
    pub hypervisor: String,
    pub bare_metal: bool,
    /// Network interfaces of the default network card.
    pub enis: u32,
    pub ipv4_per_eni: u32,
    pub cpu_manufacturer: String,
    /// Baseline bandwidth of the default network card, in Mbit/s.
    pub network_bandwidth_mbps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Accelerator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neuron: Option<Accelerator>,
    /// Total local NVMe instance storage, in GB as EC2 reports it (0 when none).
    #[serde(default)]
    pub local_nvme_gib: u64,
    /// NeuronCores over all Neuron devices (0 when none).
    #[serde(default)]
    pub neuron_cores: u32,
    /// EFA interfaces the type can attach (0 when it does not support EFA).
    #[serde(default)]
    pub efa_interfaces: u32,
    /// EBS volumes a node can attach for pods (see `cloud::instance_types::ebs_volume_limit`).
    #[serde(default)]
    pub ebs_volume_limit: u32,
    /// `spot` and/or `on-demand`.
    pub usage_classes: Vec<String>,
    /// Availability zones of the region where the type is offered.
    pub zones: Vec<String>,
}

/// Default root volume a node gets, which bounds its ephemeral storage (Karpenter's default is 20Gi).
pub const DEFAULT_EPHEMERAL_STORAGE_BYTES: i64 = 20 << 30;

/// Where a node's ephemeral storage lives, as its EC2NodeClass sets it up: the kubelet's volume, or the
/// instance-store disks in RAID0 where the type has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralStorage {
    /// Size of the volume the kubelet's root directory is on.
    pub volume_bytes: i64,
    /// `instanceStorePolicy: RAID0`: types with NVMe instance storage use all of it instead.
    pub instance_store_raid0: bool,
}

impl Default for EphemeralStorage {
    fn default() -> Self {
        Self { volume_bytes: DEFAULT_EPHEMERAL_STORAGE_BYTES, instance_store_raid0: false }
    }
}

impl EphemeralStorage {
    /// The ephemeral-storage capacity of a node of `instance_type`.
    pub fn bytes(&self, instance_type: &InstanceTypeInfo) -> i64 {
        const GB: i64 = 1_000_000_000;
        match i64::try_from(instance_type.local_nvme_gib) {
            Ok(gb) if self.instance_store_raid0 && gb > 0 => gb.saturating_mul(GB),
            _ => self.volume_bytes,
        }
    }
}

impl InstanceTypeInfo {
    /// Kubernetes' name of the architecture, if nodesmith can run on it.
    pub fn kubernetes_arch(&self) -> Option<&'static str> {
        if self.architectures.iter().any(|a| a == "x86_64") {
            Some("amd64")
        } else if self.architectures.iter().any(|a| a == "arm64") {
            Some("arm64")
        } else {
            None
        }
    }

    /// ENI limits as the VPC CNI applies them: its own table where it knows the type, else EC2's.
    pub fn network_limits(&self) -> NetworkLimits {
        let (enis, ipv4_per_eni) = vpc_cni_limits(&self.name).unwrap_or((self.enis, self.ipv4_per_eni));
        NetworkLimits {
            enis,
            ipv4_per_eni,
            vcpus: self.vcpus,
            supports_prefixes: self.hypervisor == "nitro" || self.bare_metal,
        }
    }

    pub fn max_pods(&self, settings: MaxPodsSettings) -> u32 {
        max_pods(self.network_limits(), settings)
    }

    /// `m5d.large` → `m5d`.
    pub fn family(&self) -> &str {
        self.name.split_once('.').map_or(self.name.as_str(), |(family, _)| family)
    }

    /// `m5d.large` → `large`.
    pub fn size(&self) -> &str {
        self.name.split_once('.').map_or("", |(_, size)| size)
    }

    /// The letters before the generation: `m5d` → `m`, `inf2` → `inf`, `u-6tb1` → `u`.
    pub fn category(&self) -> &str {
        let family = self.family();
        let end = family.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(family.len());
        &family[..end]
    }

    /// The digits after the category: `m5d` → 5, `c7gn` → 7.
    pub fn generation(&self) -> Option<u32> {
        let rest = &self.family()[self.category().len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// The labels of a node of this type, without the offering's zone and capacity type.
    pub fn labels(&self) -> BTreeMap<&'static str, String> {
        let mut labels = BTreeMap::from([
            ("node.kubernetes.io/instance-type", self.name.clone()),
            ("kubernetes.io/os", "linux".to_string()),
            ("karpenter.k8s.aws/instance-category", self.category().to_string()),
            ("karpenter.k8s.aws/instance-family", self.family().to_string()),
            ("karpenter.k8s.aws/instance-size", self.size().to_string()),
            ("karpenter.k8s.aws/instance-cpu", self.vcpus.to_string()),
            ("karpenter.k8s.aws/instance-memory", self.memory_mib.to_string()),
            ("karpenter.k8s.aws/instance-hypervisor", self.hypervisor.clone()),
            ("karpenter.k8s.aws/instance-cpu-manufacturer", self.cpu_manufacturer.to_lowercase()),
            ("karpenter.k8s.aws/instance-network-bandwidth", self.network_bandwidth_mbps.to_string()),
        ]);
        if let Some(arch) = self.kubernetes_arch() {
            labels.insert("kubernetes.io/arch", arch.to_string());
        }
        if let Some(generation) = self.generation() {
            labels.insert("karpenter.k8s.aws/instance-generation", generation.to_string());
        }
        if let Some(gpu) = &self.gpu {
            labels.insert("karpenter.k8s.aws/instance-gpu-name", gpu.name.to_lowercase());
            labels.insert("karpenter.k8s.aws/instance-gpu-manufacturer", gpu.manufacturer.to_lowercase());
            labels.insert("karpenter.k8s.aws/instance-gpu-count", gpu.count.to_string());
            labels.insert("karpenter.k8s.aws/instance-gpu-memory", gpu.memory_mib.to_string());
        }
        if let Some(neuron) = &self.neuron {
            labels.insert("karpenter.k8s.aws/instance-accelerator-name", neuron.name.to_lowercase());
            labels.insert("karpenter.k8s.aws/instance-accelerator-manufacturer", neuron.manufacturer.to_lowercase());
            labels.insert("karpenter.k8s.aws/instance-accelerator-count", neuron.count.to_string());
        }
        if self.local_nvme_gib > 0 {
            labels.insert("karpenter.k8s.aws/instance-local-nvme", self.local_nvme_gib.to_string());
        }
        labels
    }

    /// What the kubelet reports as capacity on an EKS AMI.
    pub fn capacity(&self, settings: MaxPodsSettings) -> Resources {
        self.capacity_with(settings, &NodeOverhead::default(), EphemeralStorage::default())
    }

    /// Capacity as the kubelet and the device plugins of an EKS AMI report it (the GPU, Neuron, EFA and pod-ENI
    /// plugins that Karpenter counts on AWS).
    pub fn capacity_with(
        &self,
        settings: MaxPodsSettings,
        overhead: &NodeOverhead,
        storage: EphemeralStorage,
    ) -> Resources {
        let memory = allocatable::memory_capacity_mib_with(self.memory_mib, overhead.vm_memory_overhead_percent);
        let mut capacity = Resources::ZERO
            .with(ResourceName::Cpu, i64::from(self.vcpus) * 1000)
            .with(ResourceName::Memory, mib(memory))
            .with(ResourceName::EphemeralStorage, storage.bytes(self))
            .with(ResourceName::Pods, i64::from(self.max_pods(settings)))
            .with(ResourceName::Efa, i64::from(self.efa_interfaces))
            .with(ResourceName::PodEni, i64::from(pod_eni_limit(&self.name).unwrap_or(0)))
            .with(ResourceName::EbsVolumes, i64::from(self.ebs_volume_limit));
        if let Some(gpu) = &self.gpu {
            let resource = match gpu.manufacturer.to_lowercase().as_str() {
                "nvidia" => Some(ResourceName::NvidiaGpu),
                "amd" => Some(ResourceName::AmdGpu),
                "habana" => Some(ResourceName::Gaudi),
                _ => None,
            };
            if let Some(resource) = resource {
                capacity.set(resource, i64::from(gpu.count));
            }
        }
        if let Some(neuron) = &self.neuron {
            capacity.set(ResourceName::Neuron, i64::from(neuron.count));
            capacity.set(ResourceName::NeuronCore, i64::from(self.neuron_cores));
        }
        capacity
    }

    /// Capacity less kube-reserved and the eviction threshold, on an EKS AMI: what pods can request.
    pub fn allocatable(&self, settings: MaxPodsSettings) -> Resources {
        self.allocatable_with(settings, &NodeOverhead::default(), EphemeralStorage::default())
    }

    pub fn allocatable_with(
        &self,
        settings: MaxPodsSettings,
        overhead: &NodeOverhead,
        storage: EphemeralStorage,
    ) -> Resources {
        let capacity = self.capacity_with(settings, overhead, storage);
        let pods = self.max_pods(settings);
        let kube_reserved = overhead.kube_reserved.or(Resources::ZERO
            .with(ResourceName::Cpu, allocatable::kube_reserved_cpu_millis(self.vcpus) as i64)
            .with(ResourceName::Memory, mib(allocatable::kube_reserved_memory_mib(pods))));
        let system_reserved = overhead.system_reserved.or(Resources::ZERO);
        let eviction = Resources::ZERO
            .with(ResourceName::Memory, overhead.eviction.memory(capacity.get(ResourceName::Memory)))
            .with(
                ResourceName::EphemeralStorage,
                overhead.eviction.nodefs(capacity.get(ResourceName::EphemeralStorage)),
            );
        capacity - kube_reserved - system_reserved - eviction
    }
}

fn mib(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / (1 << 20)) << 20
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn m5_large() -> InstanceTypeInfo {
        InstanceTypeInfo {
            name: "m5.large".into(),
            architectures: vec!["x86_64".into()],
            vcpus: 2,
            memory_mib: 8192,
            hypervisor: "nitro".into(),
            bare_metal: false,
            enis: 3,
            ipv4_per_eni: 10,
            cpu_manufacturer: "Intel".into(),
            network_bandwidth_mbps: 750,
            gpu: None,
            neuron: None,
            local_nvme_gib: 0,
            neuron_cores: 0,
            efa_interfaces: 0,
            ebs_volume_limit: 25,
            usage_classes: vec!["on-demand".into(), "spot".into()],
            zones: vec!["us-east-1a".into()],
        }
    }

    #[test]
    fn name_parts() {
        let mut t = m5_large();
        assert_eq!((t.family(), t.size(), t.category(), t.generation()), ("m5", "large", "m", Some(5)));
        t.name = "inf2.xlarge".into();
        assert_eq!((t.category(), t.generation()), ("inf", Some(2)));
        t.name = "u-6tb1.metal".into();
        assert_eq!((t.family(), t.category(), t.generation()), ("u-6tb1", "u", None));
    }

    #[test]
    fn labels_karpenter_users_select_on() {
        let labels = m5_large().labels();
        assert_eq!(labels["karpenter.k8s.aws/instance-family"], "m5");
        assert_eq!(labels["karpenter.k8s.aws/instance-generation"], "5");
        assert_eq!(labels["karpenter.k8s.aws/instance-cpu-manufacturer"], "intel");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert!(!labels.contains_key("karpenter.k8s.aws/instance-gpu-count"));
    }

    #[test]
    fn allocatable_of_an_m5_large() {
        let allocatable = m5_large().allocatable(MaxPodsSettings::default());
        assert_eq!(allocatable.get(ResourceName::Cpu), 1930);
        assert_eq!(allocatable.get(ResourceName::Memory), (8192 - 614 - 574 - 100) << 20);
        assert_eq!(allocatable.get(ResourceName::Pods), 29);
    }

    #[test]
    fn gpus_become_extended_resources() {
        let mut t = m5_large();
        t.gpu = Some(Accelerator { name: "A10G".into(), manufacturer: "NVIDIA".into(), count: 4, memory_mib: 91552 });
        assert_eq!(t.capacity(MaxPodsSettings::default()).get(ResourceName::NvidiaGpu), 4);
        assert_eq!(t.labels()["karpenter.k8s.aws/instance-gpu-name"], "a10g");
    }

    #[test]
    fn device_plugin_resources_of_the_catalog_as_karpenter_counts_them() {
        let types = crate::catalog::embedded_instance_types();
        let capacity =
            |name: &str| types.iter().find(|t| t.name == name).expect(name).capacity(MaxPodsSettings::default());
        let of = |name: &str, resources: &[ResourceName]| {
            resources.iter().map(|r| capacity(name).get(*r)).collect::<Vec<_>>()
        };
        use ResourceName::{Efa, Gaudi, Neuron, NeuronCore, NvidiaGpu, PodEni};
        // Trainium: 16 devices of 2 cores, 8 EFA interfaces; p5: 8 H100 and 32 EFA; inf2.xlarge: no EFA.
        assert_eq!(of("trn1.32xlarge", &[Neuron, NeuronCore, Efa]), [16, 32, 8]);
        assert_eq!(of("p5.48xlarge", &[NvidiaGpu, Efa]), [8, 32]);
        assert_eq!(of("inf2.xlarge", &[Neuron, NeuronCore, Efa]), [1, 2, 0]);
        // No Gaudi type is offered in the snapshot's region: EC2 reports DL1's accelerators as Habana GPUs.
        let mut dl1 = m5_large();
        dl1.gpu = Some(Accelerator {
            name: "Gaudi HL-205".into(),
            manufacturer: "Habana".into(),
            count: 8,
            memory_mib: 32768,
        });
        assert_eq!(dl1.capacity(MaxPodsSettings::default()).get(Gaudi), 8);
        // Branch ENIs of the VPC resource controller's table; t2 cannot trunk.
        assert_eq!(of("m5.large", &[PodEni]), [9]);
        assert_eq!(of("t2.medium", &[PodEni]), [0]);
    }
}
