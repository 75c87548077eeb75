//! What the kubelet holds back on an EKS node, so that allocatable = capacity − kube-reserved − eviction
//! threshold (DESIGN.md: the EKS AMIs' defaults).

use serde::{Deserialize, Serialize};

use super::resources::{ResourceName, Resources};

/// Karpenter's estimate of the memory the hypervisor and kernel take from the nominal size, so capacity
/// matches what a kubelet reports.
pub const VM_MEMORY_OVERHEAD_PERCENT: f64 = 7.5;
/// `evictionHard: memory.available<100Mi`.
pub const EVICTION_THRESHOLD_MIB: u64 = 100;

/// What a node holds back from pods, beyond what the instance type has. The default is an EKS AMI's: the VM
/// overhead estimate, kube-reserved by the formulas below, nothing system-reserved, and the default eviction
/// thresholds. An EC2NodeClass's `kubelet` settings change each part (`EC2NodeClass::node_overhead`), as the
/// kubelet they configure would.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeOverhead {
    pub vm_memory_overhead_percent: f64,
    /// Kube-reserved the class sets, resource by resource; what it leaves out follows the EKS formulas.
    pub kube_reserved: Reserved,
    pub system_reserved: Reserved,
    /// The hard eviction thresholds, or the soft ones where higher (pods above them are evicted soon after).
    pub eviction: EvictionThresholds,
}

impl Default for NodeOverhead {
    fn default() -> Self {
        Self {
            vm_memory_overhead_percent: VM_MEMORY_OVERHEAD_PERCENT,
            kube_reserved: Reserved::default(),
            system_reserved: Reserved::default(),
            eviction: EvictionThresholds::default(),
        }
    }
}

/// A `kubeReserved` or `systemReserved` map: CPU millicores, memory and ephemeral storage bytes, each only if set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    pub cpu_millis: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub ephemeral_storage_bytes: Option<i64>,
}

impl Reserved {
    /// As resources: what is set, else `defaults`' value.
    pub fn or(self, defaults: Resources) -> Resources {
        let mut resources = defaults;
        let set = [
            (ResourceName::Cpu, self.cpu_millis),
            (ResourceName::Memory, self.memory_bytes),
            (ResourceName::EphemeralStorage, self.ephemeral_storage_bytes),
        ];
        for (resource, value) in set {
            if let Some(value) = value {
                resources.set(resource, value);
            }
        }
        resources
    }
}

/// An eviction threshold as the kubelet takes it: an amount left free, or a percentage of capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Threshold {
    Bytes(i64),
    Percent(f64),
}

impl Threshold {
    /// What it holds back on a node with `capacity` bytes (a percentage rounds up, as Karpenter's does).
    pub fn of(self, capacity: i64) -> i64 {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Percent(percent) => {
                // In hundredths of a percent, integers: exact for the usual whole and two-decimal percentages.
                let hundredths = (percent * 100.0).round() as i128;
                let held = (i128::from(capacity) * hundredths + 9_999) / 10_000;
                i64::try_from(held).unwrap_or(i64::MAX)
            }
        }
    }
}

/// The eviction thresholds a kubelet is given, hard and soft, on the two signals that hold back resources pods
/// request: `memory.available` and `nodefs.available`. A signal set nowhere has the kubelet's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EvictionThresholds {
    pub hard: EvictionSignals,
    pub soft: EvictionSignals,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EvictionSignals {
    pub memory: Option<Threshold>,
    pub nodefs: Option<Threshold>,
}

impl EvictionThresholds {
    /// Memory held back on a node with `capacity` bytes: the higher of hard and soft (pods above a soft threshold
    /// are evicted after its grace period, so Karpenter plans below both), else `memory.available<100Mi`.
    pub fn memory(&self, capacity: i64) -> i64 {
        higher(self.hard.memory, self.soft.memory, capacity).unwrap_or(EVICTION_THRESHOLD_MIB as i64 * MIB)
    }

    /// Ephemeral storage held back on a node with `capacity` bytes, else `nodefs.available<10%`.
    pub fn nodefs(&self, capacity: i64) -> i64 {
        higher(self.hard.nodefs, self.soft.nodefs, capacity).unwrap_or_else(|| Threshold::Percent(10.0).of(capacity))
    }
}

fn higher(hard: Option<Threshold>, soft: Option<Threshold>, capacity: i64) -> Option<i64> {
    [hard, soft].into_iter().flatten().map(|t| t.of(capacity)).max()
}

const MIB: i64 = 1 << 20;

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
