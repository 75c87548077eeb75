//! Which parts of an EC2NodeClass nodesmith cannot honour, each named by its field. The schema accepts everything
//! Karpenter v1 accepts; a class that uses something nodesmith would otherwise drop on the floor is refused out
//! loud instead (`ValidationSucceeded=False`, not Ready, an Event; its NodePools launch nothing).

use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::cloud::user_data::AmiFamily;

/// The reason of a refused class's `ValidationSucceeded=False`.
pub const UNSUPPORTED: &str = "Unsupported";

/// One message per field nodesmith cannot honour or read, in spec order; empty when it honours the whole class.
pub fn problems(class: &EC2NodeClass) -> Vec<String> {
    let spec = &class.spec;
    let mut problems = Vec::new();
    let mut unsupported = |field: &str, what: &str| {
        problems
            .push(format!("spec.{field}: {what} is not supported by nodesmith; remove it to launch from this class"))
    };
    if !spec.capacity_reservation_selector_terms.is_empty() {
        unsupported("capacityReservationSelectorTerms", "launching into capacity reservations");
    }
    if spec.placement_group_selector.is_some() {
        unsupported("placementGroupSelector", "launching into placement groups");
    }
    let family = class.ami_family_name();
    if family.to_ascii_lowercase().starts_with("windows") {
        unsupported("amiFamily", &format!("{family} (Windows nodes need a bootstrap nodesmith does not write)"));
    }
    if spec.context.is_some() {
        unsupported("context", "an EC2 Fleet context");
    }
    if !spec.network_interfaces.is_empty() {
        unsupported("networkInterfaces", "setting the network interfaces (EFA among them)");
    }
    if spec.ip_prefix_count.is_some() {
        unsupported("ipPrefixCount", "assigning IP prefixes to the primary interface");
    }
    if spec.connection_tracking.is_some() {
        unsupported("connectionTracking", "setting connection tracking timeouts");
    }
    if spec.cpu_options.is_some() {
        unsupported("cpuOptions", "setting CPU options");
    }
    if let Err(error) = class.node_overhead() {
        problems.push(format!("spec.{error}"));
    }
    if AmiFamily::from_name(family) == AmiFamily::Bottlerocket
        && let Some(user_data) = spec.user_data.as_deref().filter(|u| !u.trim().is_empty())
        && let Err(error) = user_data.parse::<toml::Table>()
    {
        problems.push(format!("spec.userData: a Bottlerocket node reads TOML settings, and this is not TOML: {error}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn class(extra: serde_json::Value) -> EC2NodeClass {
        let mut spec = json!({
            "role": "nodes",
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "subnetSelectorTerms": [{"tags": {"k": "v"}}],
            "securityGroupSelectorTerms": [{"tags": {"k": "v"}}],
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": spec})).expect("an EC2NodeClass")
    }

    #[test]
    fn a_class_nodesmith_honours_has_no_problem() {
        let honoured = class(json!({
            "kubelet": {"maxPods": 50, "kubeReserved": {"cpu": "100m"}, "evictionHard": {"memory.available": "5%"}},
            "userData": "echo hi",
            "instanceStorePolicy": "RAID0",
            "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": "50Gi"}}],
            "metadataOptions": {"httpTokens": "required"},
            "tags": {"team": "a"},
            "associatePublicIPAddress": false,
            "detailedMonitoring": true,
        }));
        assert_eq!(problems(&honoured), Vec::<String>::new());
    }

    #[test]
    fn every_field_nodesmith_does_not_honour_is_named() {
        let cases = [
            (json!({"context": "cfc-123"}), "spec.context"),
            (json!({"capacityReservationSelectorTerms": [{"id": "cr-123"}]}), "spec.capacityReservationSelectorTerms"),
            (json!({"placementGroupSelector": {"name": "pg"}}), "spec.placementGroupSelector"),
            (
                json!({"networkInterfaces": [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}]}),
                "spec.networkInterfaces",
            ),
            (json!({"ipPrefixCount": 1}), "spec.ipPrefixCount"),
            (json!({"cpuOptions": {"coreCount": 2}}), "spec.cpuOptions"),
            (json!({"amiFamily": "Windows2022", "amiSelectorTerms": [{"id": "ami-1"}]}), "spec.amiFamily: Windows2022"),
            (json!({"amiSelectorTerms": [{"alias": "windows2019@latest"}]}), "spec.amiFamily: windows2019"),
            (json!({"kubelet": {"systemReserved": {"memory": "lots"}}}), "spec.kubelet.systemReserved[memory]"),
            (
                json!({"amiSelectorTerms": [{"alias": "bottlerocket@latest"}], "userData": "#!/bin/bash\necho"}),
                "spec.userData: a Bottlerocket node reads TOML",
            ),
        ];
        for (extra, named) in cases {
            let found = problems(&class(extra.clone()));
            assert_eq!(found.len(), 1, "{extra}: {found:?}");
            assert!(found[0].starts_with(named), "{extra}: {found:?}");
        }
    }
}
