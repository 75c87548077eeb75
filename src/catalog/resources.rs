//! Resource quantities as the scheduler compares them: a fixed array of integers, one slot per resource it
//! understands, so adding and comparing never allocates.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use serde::{Deserialize, Serialize};

/// The resources nodesmith accounts for: those of the kubelet and every extended resource an EC2 instance type
/// offers through the device plugins Karpenter knows on AWS; `nodes`, which only NodePool limits count (each
/// node is one); and the EBS volumes a node can attach, which pods use through their claims (the EBS CSI driver
/// reports it in CSINode, not in the Node). Memory and storage are bytes, CPU millicores, the rest counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceName {
    Cpu,
    Memory,
    EphemeralStorage,
    Pods,
    NvidiaGpu,
    AmdGpu,
    Neuron,
    NeuronCore,
    Gaudi,
    Efa,
    PodEni,
    Nodes,
    EbsVolumes,
}

/// How many resources `Resources` holds.
pub const RESOURCE_COUNT: usize = ResourceName::ALL.len();

impl ResourceName {
    pub const ALL: [ResourceName; 13] = [
        Self::Cpu,
        Self::Memory,
        Self::EphemeralStorage,
        Self::Pods,
        Self::NvidiaGpu,
        Self::AmdGpu,
        Self::Neuron,
        Self::NeuronCore,
        Self::Gaudi,
        Self::Efa,
        Self::PodEni,
        Self::Nodes,
        Self::EbsVolumes,
    ];

    /// The Kubernetes name of the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::EphemeralStorage => "ephemeral-storage",
            Self::Pods => "pods",
            Self::NvidiaGpu => "nvidia.com/gpu",
            Self::AmdGpu => "amd.com/gpu",
            Self::Neuron => "aws.amazon.com/neuron",
            Self::NeuronCore => "aws.amazon.com/neuroncore",
            Self::Gaudi => "habana.ai/gaudi",
            Self::Efa => "vpc.amazonaws.com/efa",
            Self::PodEni => "vpc.amazonaws.com/pod-eni",
            Self::Nodes => "nodes",
            Self::EbsVolumes => "attachable-volumes-csi-ebs.csi.aws.com",
        }
    }

    /// A resource a Node reports in its capacity and allocatable, and a container may request.
    pub fn is_node_resource(self) -> bool {
        !matches!(self, Self::Nodes | Self::EbsVolumes)
    }

    pub fn from_kubernetes(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources([i64; RESOURCE_COUNT]);

impl Resources {
    pub const ZERO: Resources = Resources([0; RESOURCE_COUNT]);

    pub fn get(&self, name: ResourceName) -> i64 {
        self.0[name as usize]
    }

    pub fn set(&mut self, name: ResourceName, value: i64) {
        self.0[name as usize] = value;
    }

    pub fn with(mut self, name: ResourceName, value: i64) -> Self {
        self.set(name, value);
        self
    }

    /// Every quantity of `self` is at most that of `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a <= b)
    }

    /// Element-wise maximum: what Kubernetes takes between init containers and the running containers.
    pub fn max(&self, other: &Resources) -> Resources {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a = (*a).max(*b);
        }
        out
    }

    pub fn min(&self, other: &Resources) -> Resources {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a = (*a).min(*b);
        }
        out
    }

    /// The first resource of `self` that does not fit in `other`.
    pub fn first_exceeding(&self, other: &Resources) -> Option<ResourceName> {
        ResourceName::ALL.into_iter().find(|r| self.get(*r) > other.get(*r))
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(mut self, other: Resources) -> Resources {
        self += other;
        self
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(mut self, other: Resources) -> Resources {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_sub(*b);
        }
        self
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = ResourceName::ALL
            .into_iter()
            .filter(|r| self.get(*r) != 0)
            .map(|r| format!("{}={}", r.as_str(), format_quantity(r, self.get(r))))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// A quantity the way a person reads it: CPU in cores (`1500` millicores as `1.5`), memory in Gi or Mi.
pub fn format_quantity(name: ResourceName, value: i64) -> String {
    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;
    match name {
        ResourceName::Cpu if value % 1000 == 0 => format!("{}", value / 1000),
        ResourceName::Cpu => format!("{:.3}", value as f64 / 1000.0).trim_end_matches('0').to_string(),
        ResourceName::Memory | ResourceName::EphemeralStorage if value % GI != 0 && value > 10 * GI => {
            format!("{:.1}Gi", value as f64 / GI as f64)
        }
        ResourceName::Memory | ResourceName::EphemeralStorage if value % GI == 0 => {
            format!("{}Gi", value / GI)
        }
        ResourceName::Memory | ResourceName::EphemeralStorage => format!("{}Mi", value / MI),
        _ => value.to_string(),
    }
}

/// A quantity exactly as Kubernetes stores it (`1500m`, `2`, `1930Mi`, `1234567`): what NodeClaim status and
/// requests carry. `parse_quantity` reads it back to the same value.
pub fn kubernetes_quantity(name: ResourceName, value: i64) -> String {
    const KI: i64 = 1 << 10;
    const MI: i64 = 1 << 20;
    match name {
        ResourceName::Cpu if value % 1000 == 0 => (value / 1000).to_string(),
        ResourceName::Cpu => format!("{value}m"),
        ResourceName::Memory | ResourceName::EphemeralStorage if value != 0 && value % MI == 0 => {
            format!("{}Mi", value / MI)
        }
        ResourceName::Memory | ResourceName::EphemeralStorage if value != 0 && value % KI == 0 => {
            format!("{}Ki", value / KI)
        }
        _ => value.to_string(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity (examples: 500m, 2, 1.5, 512Mi, 4Gi, 1e3)")]
pub struct QuantityError(pub String);

/// Parses a Kubernetes quantity into the unit nodesmith keeps: millicores for CPU, plain units otherwise.
/// Fractions round up, as the scheduler must never under-count a request.
pub fn parse_quantity(text: &str, name: ResourceName) -> Result<i64, QuantityError> {
    let error = || QuantityError(text.to_string());
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return Err(error());
    }
    // Decimal arithmetic in integers of 10^-9 avoids float rounding on values like 0.1.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let negative = whole.starts_with('-');
    let whole: i128 = whole
        .trim_start_matches(['+', '-'])
        .parse()
        .or_else(|_| if whole.trim_start_matches(['+', '-']).is_empty() { Ok(0) } else { Err(error()) })?;
    if fraction.len() > 9 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return Err(error());
    }
    let fraction_nanos: i128 =
        if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().map_err(|_| error())? };
    let mut nanos = whole * 1_000_000_000 + fraction_nanos;
    if negative {
        nanos = -nanos;
    }
    let multiplier_nanos: i128 = match suffix {
        "" => 1_000_000_000,
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "k" => 1_000_000_000_000,
        "M" => 1_000_000_000_000_000,
        "G" => 1_000_000_000_000_000_000,
        "T" => 1_000_000_000_000_000_000_000,
        "Ki" => 1_024 * 1_000_000_000,
        "Mi" => (1 << 20) * 1_000_000_000,
        "Gi" => (1 << 30) * 1_000_000_000,
        "Ti" => (1_i128 << 40) * 1_000_000_000,
        "Pi" => (1_i128 << 50) * 1_000_000_000,
        s if s.starts_with(['e', 'E']) => {
            let exponent: u32 = s[1..].parse().map_err(|_| error())?;
            10_i128.checked_pow(exponent).ok_or_else(error)? * 1_000_000_000
        }
        _ => return Err(error()),
    };
    let value_nanos = nanos.checked_mul(multiplier_nanos).ok_or_else(error)? / 1_000_000_000;
    let unit_nanos: i128 = if name == ResourceName::Cpu { 1_000_000 } else { 1_000_000_000 };
    let value = (value_nanos + unit_nanos - 1).div_euclid(unit_nanos);
    i64::try_from(value).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_into_millicores_rounding_up() {
        assert_eq!(parse_quantity("500m", ResourceName::Cpu), Ok(500));
        assert_eq!(parse_quantity("2", ResourceName::Cpu), Ok(2000));
        assert_eq!(parse_quantity("1.5", ResourceName::Cpu), Ok(1500));
        assert_eq!(parse_quantity("0.1", ResourceName::Cpu), Ok(100));
        assert_eq!(parse_quantity("100u", ResourceName::Cpu), Ok(1));
    }

    #[test]
    fn parses_memory_suffixes() {
        assert_eq!(parse_quantity("512Mi", ResourceName::Memory), Ok(512 << 20));
        assert_eq!(parse_quantity("4Gi", ResourceName::Memory), Ok(4 << 30));
        assert_eq!(parse_quantity("1G", ResourceName::Memory), Ok(1_000_000_000));
        assert_eq!(parse_quantity("1e3", ResourceName::Memory), Ok(1000));
        assert_eq!(parse_quantity("1.5Gi", ResourceName::Memory), Ok(3 << 29));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in ["", "abc", "1.2.3", "5Xi", "Mi", "1e"] {
            assert!(parse_quantity(bad, ResourceName::Memory).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_read_as_people_write_them() {
        assert_eq!(format_quantity(ResourceName::Cpu, 63770), "63.77");
        assert_eq!(format_quantity(ResourceName::Cpu, 96000), "96");
        assert_eq!(format_quantity(ResourceName::Cpu, 250), "0.25");
        assert_eq!(format_quantity(ResourceName::Memory, 512 << 20), "512Mi");
        assert_eq!(format_quantity(ResourceName::Memory, 4 << 30), "4Gi");
        assert_eq!(format_quantity(ResourceName::Memory, (370 << 30) + (1 << 29)), "370.5Gi");
    }

    #[test]
    fn fits_and_arithmetic() {
        let small = Resources::ZERO.with(ResourceName::Cpu, 500).with(ResourceName::Pods, 1);
        let big = Resources::ZERO.with(ResourceName::Cpu, 1000).with(ResourceName::Pods, 1);
        assert!(small.fits_in(&big));
        assert!(!(small + small + small).fits_in(&big));
        assert_eq!((big - small).get(ResourceName::Cpu), 500);
        assert_eq!((small + small).first_exceeding(&big), Some(ResourceName::Pods));
    }

    proptest::proptest! {
        #[test]
        fn integers_round_trip(value in 0i64..1_000_000_000) {
            proptest::prop_assert_eq!(parse_quantity(&value.to_string(), ResourceName::Memory), Ok(value));
            proptest::prop_assert_eq!(parse_quantity(&format!("{value}m"), ResourceName::Cpu), Ok(value));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,16}") {
            let _ = parse_quantity(&text, ResourceName::Cpu);
        }
    }

    #[test]
    fn kubernetes_quantities_read_back_to_the_same_value() {
        for name in ResourceName::ALL {
            for value in [0, 1, 999, 1000, 1500, 1024, 1 << 20, (1 << 30) + 1, 1930 << 20] {
                let text = kubernetes_quantity(name, value);
                assert_eq!(parse_quantity(&text, name), Ok(value), "{name:?} {value} -> {text}");
            }
        }
    }
}
