//! Pod density of an instance type, as DESIGN.md states it: ENI-limited by default, ×16 under VPC CNI prefix
//! delegation on Nitro and bare-metal types (with AWS's 110/250 caps), then the user's overrides.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The network limits of an instance type that bound how many pod IPs it can hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLimits {
    /// `MaximumNetworkInterfaces` of the default network card.
    pub enis: u32,
    /// `Ipv4AddressesPerInterface`.
    pub ipv4_per_eni: u32,
    /// `DefaultVCpus`.
    pub vcpus: u32,
    /// Nitro or bare metal: only these can be assigned /28 prefixes.
    pub supports_prefixes: bool,
}

/// The knobs an EC2NodeClass (or the cluster's CNI) sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaxPodsSettings {
    /// VPC CNI `ENABLE_PREFIX_DELEGATION`.
    pub prefix_delegation: bool,
    /// ENIs kept out of the pod pool (e.g. for custom networking).
    pub reserved_enis: u32,
    /// `kubelet.maxPods`: wins over the formula.
    pub max_pods: Option<u32>,
    /// `kubelet.podsPerCore`: a further cap of `podsPerCore × vCPUs`.
    pub pods_per_core: Option<u32>,
}

/// The VPC CNI's own ENI table (`pkg/vpc/vpc_ip_resource_limit.go`, August 2026): the CNI attaches ENIs by
/// it, so where it knows a type its figures are the ones pod density follows. DescribeInstanceTypes disagrees
/// for a few multi-card types (i7ie.48xlarge: 8 ENIs on the default card there, 15 here and in AWS's
/// eni-max-pods table).
const VPC_CNI_LIMITS: &str = include_str!("eni-limits.tsv");

/// (ENIs of the default network card, IPv4 addresses per ENI) of `instance_type` in the VPC CNI's table.
pub fn vpc_cni_limits(instance_type: &str) -> Option<(u32, u32)> {
    static TABLE: OnceLock<HashMap<&'static str, (u32, u32)>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            VPC_CNI_LIMITS
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split('\t').collect();
                    Some((*cols.first()?, (cols.get(3)?.parse().ok()?, cols.get(2)?.parse().ok()?)))
                })
                .collect()
        })
        .get(instance_type)
        .copied()
}

/// Branch interfaces of the trunking-compatible types, from the VPC resource controller's table (see the file's
/// header): the `vpc.amazonaws.com/pod-eni` a node offers to pods with security groups.
const POD_ENI_LIMITS: &str = include_str!("pod-eni-limits.tsv");

/// `vpc.amazonaws.com/pod-eni` of `instance_type`; None where it cannot trunk.
pub fn pod_eni_limit(instance_type: &str) -> Option<u32> {
    static TABLE: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            POD_ENI_LIMITS
                .lines()
                .filter(|line| !line.starts_with('#'))
                .skip(1)
                .filter_map(|line| {
                    let (name, branches) = line.split_once('\t')?;
                    Some((name, branches.parse().ok()?))
                })
                .collect()
        })
        .get(instance_type)
        .copied()
}

/// Addresses in one delegated /28 prefix.
const IPS_PER_PREFIX: u32 = 16;
/// AWS's recommended ceilings under prefix delegation: small types stop at 110, larger ones at 250.
const SMALL_TYPE_VCPUS: u32 = 30;
const SMALL_TYPE_CAP: u32 = 110;
const LARGE_TYPE_CAP: u32 = 250;
/// Host-network pods (aws-node, kube-proxy) need no pod IP and are counted on top.
const HOST_NETWORK_PODS: u32 = 2;

/// The kubelet `maxPods` for a node of this type.
pub fn max_pods(limits: NetworkLimits, settings: MaxPodsSettings) -> u32 {
    let base = settings.max_pods.unwrap_or_else(|| formula(limits, settings));
    match settings.pods_per_core {
        Some(per_core) => base.min(per_core.saturating_mul(limits.vcpus)),
        None => base,
    }
}

fn formula(limits: NetworkLimits, settings: MaxPodsSettings) -> u32 {
    let usable_enis = limits.enis.saturating_sub(settings.reserved_enis);
    let secondary_ips = usable_enis.saturating_mul(limits.ipv4_per_eni.saturating_sub(1));
    if settings.prefix_delegation && limits.supports_prefixes {
        let cap = if limits.vcpus <= SMALL_TYPE_VCPUS { SMALL_TYPE_CAP } else { LARGE_TYPE_CAP };
        secondary_ips.saturating_mul(IPS_PER_PREFIX).saturating_add(HOST_NETWORK_PODS).min(cap)
    } else {
        secondary_ips.saturating_add(HOST_NETWORK_PODS)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ENI_MAX_PODS: &str = include_str!("../../tests/data/eni-max-pods.txt");

    #[test]
    fn without_prefix_delegation_the_vpc_cni_table_gives_aws_eni_max_pods_table() {
        let mut compared = 0;
        for line in ENI_MAX_PODS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (name, expected) = line.split_once(' ').expect("two columns");
            let expected: u32 = expected.trim().parse().expect("numeric max pods");
            let Some((enis, ipv4_per_eni)) = vpc_cni_limits(name) else {
                continue;
            };
            let limits = NetworkLimits { enis, ipv4_per_eni, vcpus: 1, supports_prefixes: true };
            assert_eq!(max_pods(limits, MaxPodsSettings::default()), expected, "{name}");
            compared += 1;
        }
        // The two tables come from different AWS repositories; nearly every type is in both.
        assert!(compared > 1000, "only {compared} types compared");
    }

    fn m5_large() -> NetworkLimits {
        NetworkLimits { enis: 3, ipv4_per_eni: 10, vcpus: 2, supports_prefixes: true }
    }

    #[test]
    fn prefix_delegation_on_a_small_nitro_type_is_capped_at_110() {
        let settings = MaxPodsSettings { prefix_delegation: true, ..Default::default() };
        // 3 * 9 * 16 + 2 = 434, capped.
        assert_eq!(max_pods(m5_large(), settings), 110);
    }

    #[test]
    fn prefix_delegation_on_a_large_nitro_type_is_capped_at_250() {
        let m5_16xlarge = NetworkLimits { enis: 15, ipv4_per_eni: 50, vcpus: 64, supports_prefixes: true };
        let settings = MaxPodsSettings { prefix_delegation: true, ..Default::default() };
        assert_eq!(max_pods(m5_16xlarge, settings), 250);
    }

    #[test]
    fn prefix_delegation_below_the_cap_keeps_the_formula() {
        // t3.nano: 2 ENIs, 2 IPs each: 2 * 1 * 16 + 2 = 34.
        let t3_nano = NetworkLimits { enis: 2, ipv4_per_eni: 2, vcpus: 2, supports_prefixes: true };
        let settings = MaxPodsSettings { prefix_delegation: true, ..Default::default() };
        assert_eq!(max_pods(t3_nano, settings), 34);
    }

    #[test]
    fn xen_types_ignore_prefix_delegation() {
        let t2_micro = NetworkLimits { enis: 2, ipv4_per_eni: 2, vcpus: 1, supports_prefixes: false };
        let settings = MaxPodsSettings { prefix_delegation: true, ..Default::default() };
        assert_eq!(max_pods(t2_micro, settings), 4);
    }

    #[test]
    fn reserved_enis_leave_the_pod_pool() {
        let settings = MaxPodsSettings { reserved_enis: 1, ..Default::default() };
        assert_eq!(max_pods(m5_large(), settings), 2 * 9 + 2);
    }

    #[test]
    fn explicit_max_pods_wins_and_pods_per_core_caps_it() {
        let explicit = MaxPodsSettings { max_pods: Some(200), ..Default::default() };
        assert_eq!(max_pods(m5_large(), explicit), 200);
        let per_core = MaxPodsSettings { pods_per_core: Some(10), ..explicit };
        assert_eq!(max_pods(m5_large(), per_core), 20);
    }

    proptest! {
        #[test]
        fn never_exceeds_the_caps_under_prefix_delegation(
            enis in 0u32..64, ips in 0u32..64, vcpus in 1u32..512, reserved in 0u32..4,
        ) {
            let limits = NetworkLimits { enis, ipv4_per_eni: ips, vcpus, supports_prefixes: true };
            let settings = MaxPodsSettings { prefix_delegation: true, reserved_enis: reserved, ..Default::default() };
            let pods = max_pods(limits, settings);
            let cap = if vcpus <= 30 { 110 } else { 250 };
            let without_prefixes =
                max_pods(limits, MaxPodsSettings { reserved_enis: reserved, ..Default::default() });
            prop_assert!(pods <= cap);
            prop_assert!(pods >= without_prefixes.min(110));
        }

        #[test]
        fn pods_per_core_is_an_upper_bound(
            enis in 1u32..16, ips in 1u32..51, vcpus in 1u32..192, per_core in 1u32..50, pd: bool,
        ) {
            let limits = NetworkLimits { enis, ipv4_per_eni: ips, vcpus, supports_prefixes: true };
            let settings = MaxPodsSettings { prefix_delegation: pd, pods_per_core: Some(per_core), ..Default::default() };
            prop_assert!(max_pods(limits, settings) <= per_core * vcpus);
        }
    }
}
