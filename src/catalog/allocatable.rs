//! What the kubelet holds back on an EKS node, so that allocatable = capacity − kube-reserved − eviction
//! threshold (DESIGN.md: the EKS AMIs' defaults).

use serde::{Deserialize, Serialize};

use super::resources::Resources;

/// Karpenter's estimate of the memory the hypervisor and kernel take from the nominal size, so capacity
/// matches what a kubelet reports.
pub const VM_MEMORY_OVERHEAD_PERCENT: f64 = 7.5;
/// `evictionHard: memory.available<100Mi`.
pub const EVICTION_THRESHOLD_MIB: u64 = 100;

/// What a node holds back from pods, beyond what the instance type has. The default is an EKS AMI's: the VM
/// overhead estimate, kube-reserved by the formulas below, nothing system-reserved, and the default eviction
/// thresholds. EC2NodeClass `kubelet` settings (and `nodesmith plan`'s comparisons) may set each part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeOverhead {
    pub vm_memory_overhead_percent: f64,
    /// None: the EKS formulas from vCPUs and max pods.
    pub kube_reserved: Option<Resources>,
    pub system_reserved: Resources,
    /// None: `memory.available<100Mi` and `nodefs.available<10%` of the root volume.
    pub eviction_threshold: Option<Resources>,
}

impl Default for NodeOverhead {
    fn default() -> Self {
        Self {
            vm_memory_overhead_percent: VM_MEMORY_OVERHEAD_PERCENT,
            kube_reserved: None,
            system_reserved: Resources::ZERO,
            eviction_threshold: None,
        }
    }
}

/// Kube-reserved memory: 11 MiB per pod plus 255 MiB.
pub fn kube_reserved_memory_mib(max_pods: u32) -> u64 {
    11 * u64::from(max_pods) + 255
}

/// Kube-reserved CPU in millicores: 6% of the first core, 1% of the second, 0.5% of cores 3–4, 0.25% of the rest.
pub fn kube_reserved_cpu_millis(vcpus: u32) -> u64 {
    // (cores in this band, reserved per core in hundredths of a millicore)
    const BANDS: [(u32, u64); 4] = [(1, 6000), (1, 1000), (2, 500), (u32::MAX, 250)];
    let mut remaining = vcpus;
    let mut hundredths = 0u64;
    for (cores, per_core) in BANDS {
        let here = remaining.min(cores);
        hundredths += u64::from(here) * per_core;
        remaining -= here;
    }
    hundredths / 100
}

/// Memory capacity a kubelet reports for a type of this nominal size.
pub fn memory_capacity_mib(nominal_mib: u64) -> u64 {
    memory_capacity_mib_with(nominal_mib, VM_MEMORY_OVERHEAD_PERCENT)
}

pub fn memory_capacity_mib_with(nominal_mib: u64, overhead_percent: f64) -> u64 {
    // Integer arithmetic in tenths of a percent keeps the result exact and platform-independent.
    let overhead_per_mille = (overhead_percent * 10.0).clamp(0.0, 1000.0) as u64;
    nominal_mib - nominal_mib * overhead_per_mille / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_reservation_bands() {
        assert_eq!(kube_reserved_cpu_millis(1), 60);
        assert_eq!(kube_reserved_cpu_millis(2), 70);
        assert_eq!(kube_reserved_cpu_millis(4), 80);
        // 80 + 4 × 2.5
        assert_eq!(kube_reserved_cpu_millis(8), 90);
        assert_eq!(kube_reserved_cpu_millis(96), 80 + 92 * 25 / 10);
    }

    #[test]
    fn memory_reservation_follows_max_pods() {
        assert_eq!(kube_reserved_memory_mib(29), 574);
        assert_eq!(kube_reserved_memory_mib(110), 1465);
    }

    #[test]
    fn memory_capacity_drops_the_vm_overhead() {
        assert_eq!(memory_capacity_mib(8192), 8192 - 614);
        assert_eq!(memory_capacity_mib(0), 0);
    }
}
