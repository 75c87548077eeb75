//! Where a pod's volumes let it run, as kube-scheduler's VolumeBinding plugin decides it: a claim bound to a
//! PersistentVolume follows the volume's node affinity (an EBS volume lives in one zone); an unbound claim of a
//! `WaitForFirstConsumer` StorageClass follows the class's `allowedTopologies`, since the volume will be made
//! where the pod lands. Like Karpenter, only the first term of each is used (terms are alternatives; the first
//! is the one provisioners fill). EBS volumes also count against what a node can attach.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use super::state::ClusterState;
use crate::apis::pod::Pod;
use crate::apis::scheduling_input::{node_selector_requirements, pod_request};
use crate::catalog::resources::ResourceName;
use crate::names::ZONE_LABEL;
use crate::scheduling::{Operator, PodRequest, Requirement};

/// Zone keys that CSI drivers and older clusters put on volumes; a node in the zone carries them all (the EBS CSI
/// node plugin adds its own key once it runs), so the scheduler plans them as the zone.
const ZONE_ALIASES: [&str; 2] = ["topology.ebs.csi.aws.com/zone", "failure-domain.beta.kubernetes.io/zone"];

const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// The EBS CSI driver, and the in-tree provisioner it replaced.
const EBS_DRIVERS: [&str; 2] = ["ebs.csi.aws.com", "kubernetes.io/aws-ebs"];

/// What a pod's volumes ask of its node.
#[derive(Debug, Default, PartialEq)]
pub struct VolumePlacement {
    /// Node requirements (the zone of an EBS volume).
    pub requirements: Vec<Requirement>,
    /// EBS volumes the node must attach for the pod.
    pub ebs_volumes: i64,
}

/// Lookups of the storage objects a pod's volumes refer to.
pub trait StorageObjects {
    fn claim(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim>;
    fn volume(&self, name: &str) -> Option<PersistentVolume>;
    fn class(&self, name: &str) -> Option<StorageClass>;
    fn default_class(&self) -> Option<StorageClass>;
}

impl StorageObjects for ClusterState {
    fn claim(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim> {
        self.pvcs.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)).map(|c| (*c).clone())
    }
    fn volume(&self, name: &str) -> Option<PersistentVolume> {
        self.pvs.get(&kube::runtime::reflector::ObjectRef::new(name)).map(|v| (*v).clone())
    }
    fn class(&self, name: &str) -> Option<StorageClass> {
        self.storageclasses.get(&kube::runtime::reflector::ObjectRef::new(name)).map(|c| (*c).clone())
    }
    fn default_class(&self) -> Option<StorageClass> {
        let classes = self.storageclasses.state();
        let default =
            classes.iter().find(|c| c.annotations().get(DEFAULT_CLASS_ANNOTATION).is_some_and(|v| v == "true"));
        default.map(|c| (**c).clone())
    }
}

/// The pod as the scheduler sees it, with what its volumes ask of its node; Err says why it cannot be planned
/// (a spec nodesmith cannot read, a claim that is missing or waits to be bound).
pub fn pod_request_with_volumes(key: &str, pod: &Pod, storage: &dyn StorageObjects) -> Result<PodRequest, String> {
    let spec = pod.spec.as_ref().ok_or_else(|| format!("pod {key} has no spec"))?;
    let mut request = pod_request(key, &pod.labels().to_map(), spec).map_err(|e| e.0)?;
    constrain(&mut request, &volume_placement(pod, storage)?);
    Ok(request)
}

/// What the pod's volumes ask of its node; Err says why the pod cannot be placed yet (a missing claim or volume,
/// a claim that waits to be bound).
fn volume_placement(pod: &Pod, storage: &dyn StorageObjects) -> Result<VolumePlacement, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut placement = VolumePlacement::default();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let (claim_name, template_class) = match (&volume.persistent_volume_claim, &volume.ephemeral) {
            (Some(source), _) => (source.claim_name.clone(), None),
            // A generic ephemeral volume's claim is named after the pod and the volume, and made with the pod.
            (None, Some(ephemeral)) => {
                let template = ephemeral.volume_claim_template.as_ref();
                let class = template.and_then(|t| t.spec.storage_class_name.clone());
                (format!("{}-{}", pod.name_any(), volume.name), Some(class))
            }
            (None, None) => continue,
        };
        let claim = storage.claim(&namespace, &claim_name);
        let (volume_name, class_name) = match (&claim, template_class) {
            (Some(claim), _) => {
                let spec = claim.spec.as_ref();
                (
                    spec.and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()),
                    spec.map(|s| s.storage_class_name.clone()),
                )
            }
            (None, Some(class)) => (None, Some(class)),
            (None, None) => return Err(format!("PersistentVolumeClaim {namespace}/{claim_name} not found")),
        };
        if let Some(volume_name) = volume_name {
            let pv = storage
                .volume(&volume_name)
                .ok_or_else(|| format!("PersistentVolume {volume_name} of claim {namespace}/{claim_name} not found"))?;
            let requirements = pv_requirements(&pv).map_err(|e| format!("PersistentVolume {volume_name}: {e}"))?;
            placement.requirements.extend(requirements);
            placement.ebs_volumes += i64::from(is_ebs_volume(&pv));
            continue;
        }
        // Unbound: the class says whether the volume waits for the pod's node, and where it may be made.
        let class = match class_name.flatten() {
            Some(name) if name.is_empty() => None,
            Some(name) => storage.class(&name),
            None => storage.default_class(),
        };
        let Some(class) = class else {
            return Err(format!("PersistentVolumeClaim {namespace}/{claim_name} is not bound and has no StorageClass"));
        };
        if class.volume_binding_mode.as_deref() != Some("WaitForFirstConsumer") {
            return Err(format!(
                "PersistentVolumeClaim {namespace}/{claim_name} waits to be bound (StorageClass {} binds Immediately)",
                class.name_any()
            ));
        }
        placement.requirements.extend(class_requirements(&class));
        placement.ebs_volumes += i64::from(EBS_DRIVERS.contains(&class.provisioner.as_str()));
    }
    Ok(placement)
}

/// Adds the volumes' requirements to every alternative of the pod's node affinity, and their attachments to its
/// requests.
fn constrain(request: &mut PodRequest, placement: &VolumePlacement) {
    request.requirements.extend(placement.requirements.iter().cloned());
    for alternative in &mut request.alternative_requirements {
        alternative.extend(placement.requirements.iter().cloned());
    }
    request.requests.set(ResourceName::EbsVolumes, placement.ebs_volumes);
}

fn is_ebs_volume(pv: &PersistentVolume) -> bool {
    let spec = pv.spec.as_ref();
    let csi_driver = spec.and_then(|s| s.csi.as_ref()).map(|c| c.driver.as_str());
    csi_driver.is_some_and(|d| EBS_DRIVERS.contains(&d)) || spec.is_some_and(|s| s.aws_elastic_block_store.is_some())
}

fn pv_requirements(pv: &PersistentVolume) -> Result<Vec<Requirement>, String> {
    let required = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref());
    let Some(first) = required.and_then(|r| r.node_selector_terms.first()) else { return Ok(Vec::new()) };
    let requirements = node_selector_requirements(first.match_expressions.as_deref()).map_err(|e| e.0)?;
    Ok(requirements.into_iter().map(as_zone).collect())
}

fn class_requirements(class: &StorageClass) -> Vec<Requirement> {
    let first = class.allowed_topologies.iter().flatten().next();
    let expressions = first.into_iter().flat_map(|t| t.match_label_expressions.iter().flatten());
    expressions
        .map(|e| {
            as_zone(Requirement {
                key: e.key.clone(),
                operator: Operator::In,
                values: e.values.clone(),
                min_values: None,
            })
        })
        .collect()
}

fn as_zone(mut requirement: Requirement) -> Requirement {
    if ZONE_ALIASES.contains(&requirement.key.as_str()) {
        requirement.key = ZONE_LABEL.to_string();
    }
    requirement
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Objects {
        claims: BTreeMap<(String, String), PersistentVolumeClaim>,
        volumes: BTreeMap<String, PersistentVolume>,
        classes: Vec<StorageClass>,
    }

    impl StorageObjects for Objects {
        fn claim(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim> {
            self.claims.get(&(namespace.to_string(), name.to_string())).cloned()
        }
        fn volume(&self, name: &str) -> Option<PersistentVolume> {
            self.volumes.get(name).cloned()
        }
        fn class(&self, name: &str) -> Option<StorageClass> {
            self.classes.iter().find(|c| c.name_any() == name).cloned()
        }
        fn default_class(&self) -> Option<StorageClass> {
            self.classes.iter().find(|c| c.annotations().contains_key(DEFAULT_CLASS_ANNOTATION)).cloned()
        }
    }

    fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
        serde_json::from_value(value).expect("a valid object")
    }

    fn pod(volumes: serde_json::Value) -> Pod {
        object(
            json!({"metadata": {"name": "db-0", "namespace": "shop"}, "spec": {"containers": [], "volumes": volumes}}),
        )
    }

    fn claim(name: &str, spec: serde_json::Value) -> ((String, String), PersistentVolumeClaim) {
        (("shop".into(), name.into()), object(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec})))
    }

    fn zonal_volume(name: &str, key: &str, zone: &str) -> (String, PersistentVolume) {
        let pv = object(json!({"metadata": {"name": name}, "spec": {
        "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": key, "operator": "In", "values": [zone]}]},
            {"matchExpressions": [{"key": key, "operator": "In", "values": ["us-east-1c"]}]},
        ]}}}}));
        (name.to_string(), pv)
    }

    fn class(name: &str, mode: &str, zones: &[&str], default: bool) -> StorageClass {
        let annotations = if default { json!({DEFAULT_CLASS_ANNOTATION: "true"}) } else { json!({}) };
        object(json!({
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": "ebs.csi.aws.com",
            "volumeBindingMode": mode,
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "topology.ebs.csi.aws.com/zone", "values": zones}]}],
        }))
    }

    fn zone_in(zones: &[&str]) -> Requirement {
        Requirement::new(ZONE_LABEL, Operator::In, zones)
    }

    #[test]
    fn a_bound_claim_follows_its_volumes_first_node_affinity_term_as_the_zone() {
        let storage = Objects {
            claims: BTreeMap::from([claim("data", json!({"volumeName": "pv-1", "storageClassName": "gp3"}))]),
            volumes: BTreeMap::from([zonal_volume("pv-1", "topology.ebs.csi.aws.com/zone", "us-east-1a")]),
            ..Objects::default()
        };
        let pod = pod(json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]));
        let placement = volume_placement(&pod, &storage).expect("placed");
        assert_eq!(placement.requirements, vec![zone_in(&["us-east-1a"])]);
        assert_eq!(placement.ebs_volumes, 1);
    }

    #[test]
    fn an_unbound_wait_for_first_consumer_claim_follows_its_class_allowed_topologies() {
        let storage = Objects {
            claims: BTreeMap::from([claim("data", json!({}))]),
            classes: vec![class("gp3", "WaitForFirstConsumer", &["us-east-1a", "us-east-1b"], true)],
            ..Objects::default()
        };
        let pod = pod(json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]));
        let expected = VolumePlacement { requirements: vec![zone_in(&["us-east-1a", "us-east-1b"])], ebs_volumes: 1 };
        assert_eq!(volume_placement(&pod, &storage), Ok(expected));

        // A generic ephemeral volume whose claim is not made yet: its template's class.
        let ephemeral = self::pod(json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "storageClassName": "gp3", "accessModes": ["ReadWriteOnce"]}}}}]));
        let placement = volume_placement(&ephemeral, &storage).expect("placed");
        assert_eq!(placement.requirements, vec![zone_in(&["us-east-1a", "us-east-1b"])]);
    }

    #[test]
    fn claims_that_cannot_be_placed_yet_say_why() {
        let storage = Objects {
            claims: BTreeMap::from([
                claim("immediate", json!({"storageClassName": "fast"})),
                claim("lost", json!({"volumeName": "pv-gone"})),
            ]),
            classes: vec![class("fast", "Immediate", &["us-east-1a"], false)],
            ..Objects::default()
        };
        let with = |claim: &str| pod(json!([{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]));
        let error = |claim: &str| volume_placement(&with(claim), &storage).expect_err("refused");
        assert_eq!(error("missing"), "PersistentVolumeClaim shop/missing not found");
        assert!(error("immediate").contains("binds Immediately"), "{}", error("immediate"));
        assert!(error("lost").contains("PersistentVolume pv-gone"), "{}", error("lost"));
    }

    #[test]
    fn volumes_add_to_every_alternative_of_the_pods_node_affinity() {
        let mut request = PodRequest::new("shop/db-0", Default::default());
        request.alternative_requirements = vec![vec![], vec![Requirement::equals("disk", "ssd")]];
        constrain(&mut request, &VolumePlacement { requirements: vec![zone_in(&["us-east-1a"])], ebs_volumes: 3 });
        assert_eq!(request.requirements, vec![zone_in(&["us-east-1a"])]);
        assert_eq!(request.requests.get(ResourceName::EbsVolumes), 3);
        assert!(request.alternative_requirements.iter().all(|alt| alt.contains(&zone_in(&["us-east-1a"]))));
    }
}
