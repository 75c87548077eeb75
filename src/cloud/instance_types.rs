//! The instance-type catalog from EC2: DescribeInstanceTypes for the facts, DescribeInstanceTypeOfferings for
//! the zones.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    ArchitectureType, AttachmentLimitType, InstanceTypeInfo as Ec2InstanceType, LocationType, UsageClassType,
    VirtualizationType,
};

use super::error::CloudError;
use crate::catalog::instance_type::{Accelerator, InstanceTypeInfo};

/// Every HVM instance type of the region with an architecture nodesmith runs on (x86_64, arm64), with its zones.
pub async fn describe_instance_types(ec2: &aws_sdk_ec2::Client) -> Result<Vec<InstanceTypeInfo>, CloudError> {
    let zones = zones_by_type(ec2).await?;
    // Filtered here rather than by request filters: some servers (moto) match multi-valued attributes such as
    // ["i386", "x86_64"] only exactly, which would drop t2 and other types that run x86_64.
    let mut pages = ec2.describe_instance_types().into_paginator().send();
    let mut types = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeInstanceTypes", None, e))?;
        for described in page.instance_types() {
            if let Some(info) = from_ec2(described, &zones) {
                types.push(info);
            }
        }
    }
    types.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(types)
}

async fn zones_by_type(ec2: &aws_sdk_ec2::Client) -> Result<BTreeMap<String, BTreeSet<String>>, CloudError> {
    let mut pages =
        ec2.describe_instance_type_offerings().location_type(LocationType::AvailabilityZone).into_paginator().send();
    let mut zones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeInstanceTypeOfferings", None, e))?;
        for offering in page.instance_type_offerings() {
            if let (Some(t), Some(zone)) = (offering.instance_type(), offering.location()) {
                zones.entry(t.as_str().to_string()).or_default().insert(zone.to_string());
            }
        }
    }
    Ok(zones)
}

/// None for a type nodesmith cannot run (not HVM, no x86_64 or arm64) or without the facts a node needs
/// (vCPUs, memory, network limits).
fn from_ec2(t: &Ec2InstanceType, zones: &BTreeMap<String, BTreeSet<String>>) -> Option<InstanceTypeInfo> {
    if !t.supported_virtualization_types().contains(&VirtualizationType::Hvm) {
        return None;
    }
    let name = t.instance_type()?.as_str().to_string();
    let network = t.network_info()?;
    let default_card_index = network.default_network_card_index().unwrap_or(0);
    let default_card = network.network_cards().iter().find(|c| c.network_card_index() == Some(default_card_index));
    let enis = default_card.and_then(|c| c.maximum_network_interfaces()).or(network.maximum_network_interfaces())?;
    let bandwidth_gbps = default_card.and_then(|c| c.baseline_bandwidth_in_gbps()).unwrap_or(0.0);
    let processor = t.processor_info();
    let architectures: Vec<String> = processor
        .map(|p| {
            p.supported_architectures()
                .iter()
                .filter(|a| matches!(a, ArchitectureType::X8664 | ArchitectureType::Arm64))
                .map(|a| a.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    if architectures.is_empty() {
        return None;
    }
    let gpu = t.gpu_info().and_then(|g| g.gpus().first()).map(|g| Accelerator {
        name: g.name().unwrap_or_default().to_string(),
        manufacturer: g.manufacturer().unwrap_or_default().to_string(),
        count: count(g.count()),
        memory_mib: g.memory_info().and_then(|m| m.size_in_mib()).map_or(0, |m| m.max(0) as u64),
    });
    let neuron = t.neuron_info().and_then(|n| n.neuron_devices().first()).map(|d| Accelerator {
        name: d.name().unwrap_or_default().to_string(),
        manufacturer: "AWS".to_string(),
        count: count(d.count()),
        memory_mib: d.memory_info().and_then(|m| m.size_in_mib()).map_or(0, |m| m.max(0) as u64),
    });
    let neuron_cores = t.neuron_info().map_or(0, |n| {
        n.neuron_devices().iter().map(|d| count(d.count()) * count(d.core_info().and_then(|c| c.count()))).sum()
    });
    let efa_interfaces = if network.efa_supported().unwrap_or(false) {
        count(network.efa_info().and_then(|e| e.maximum_efa_interfaces()))
    } else {
        0
    };
    let storage = t.instance_storage_info();
    let ebs_volume_limit = ebs_volume_limit(t);
    let nvme = storage.is_some_and(|s| s.nvme_support().is_some_and(|n| n.as_str() != "unsupported"));
    Some(InstanceTypeInfo {
        architectures,
        vcpus: count(t.v_cpu_info()?.default_v_cpus()),
        memory_mib: t.memory_info()?.size_in_mib()?.max(0) as u64,
        hypervisor: t.hypervisor().map(|h| h.as_str().to_string()).unwrap_or_default(),
        bare_metal: t.bare_metal().unwrap_or(false),
        enis: count(Some(enis)),
        ipv4_per_eni: count(network.ipv4_addresses_per_interface()),
        cpu_manufacturer: processor.and_then(|p| p.manufacturer()).unwrap_or_default().to_string(),
        network_bandwidth_mbps: (bandwidth_gbps * 1000.0).round() as u64,
        gpu,
        neuron,
        neuron_cores,
        efa_interfaces,
        ebs_volume_limit,
        local_nvme_gib: if nvme {
            storage.and_then(|s| s.total_size_in_gb()).map_or(0, |g| g.max(0) as u64)
        } else {
            0
        },
        usage_classes: t
            .supported_usage_classes()
            .iter()
            .filter(|u| matches!(u, UsageClassType::Spot | UsageClassType::OnDemand))
            .map(|u| u.as_str().to_string())
            .collect(),
        zones: zones.get(&name).map(|z| z.iter().cloned().collect()).unwrap_or_default(),
        name,
    })
}

/// EBS volumes a node of the type can attach for pods, as the EBS CSI driver reckons it: EC2's maximum EBS
/// attachments less the root volume, and where the limit is shared (Nitro) less the NVMe instance-store disks.
/// (The driver also takes off ENIs attached after the first and some accelerators; those vary per node.)
fn ebs_volume_limit(t: &Ec2InstanceType) -> u32 {
    let Some(ebs) = t.ebs_info() else { return 0 };
    let maximum = count(ebs.maximum_ebs_attachments());
    let shared = !matches!(ebs.attachment_limit_type(), Some(AttachmentLimitType::Dedicated));
    let disks: u32 = if shared {
        t.instance_storage_info().map_or(0, |s| s.disks().iter().map(|d| count(d.count())).sum())
    } else {
        0
    };
    maximum.saturating_sub(1).saturating_sub(disks)
}

fn count(value: Option<i32>) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}
