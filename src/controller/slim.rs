//! What the watch caches keep of each object: only what the controller reads. At thousands of pods the parts
//! nobody reads (managed fields, `kubectl apply`'s copy of the object, container commands, environments,
//! probes and mounts, projected token volumes, container statuses, a node's image list) are most of the memory.

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use kube::api::ObjectMeta;

use crate::names::{DO_NOT_DISRUPT_ANNOTATION, MIRROR_POD_ANNOTATION, POD_DELETION_COST_ANNOTATION};

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no object's reader needs from its metadata.
pub fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Keeps of a container what scheduling reads: its name, requests and limits, restart policy and ports.
fn container(container: &mut Container) {
    container.command = None;
    container.args = None;
    container.env = None;
    container.env_from = None;
    container.liveness_probe = None;
    container.readiness_probe = None;
    container.startup_probe = None;
    container.lifecycle = None;
    container.volume_mounts = None;
    container.volume_devices = None;
    container.security_context = None;
    container.working_dir = None;
    container.termination_message_path = None;
    container.termination_message_policy = None;
    container.image = None;
    container.image_pull_policy = None;
    container.resize_policy = None;
}

/// The pod annotations the controller reads; a pod keeps no other (real pods carry many, some large).
const POD_ANNOTATIONS_READ: [&str; 3] =
    [DO_NOT_DISRUPT_ANNOTATION, POD_DELETION_COST_ANNOTATION, MIRROR_POD_ANNOTATION];

pub fn pod(pod: &mut Pod) {
    metadata(&mut pod.metadata);
    let meta = &mut pod.metadata;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| POD_ANNOTATIONS_READ.contains(&key.as_str()));
    }
    meta.generate_name = None;
    meta.resource_version = None;
    meta.finalizers = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.iter_mut().for_each(container);
        spec.init_containers.iter_mut().flatten().for_each(container);
        spec.ephemeral_containers = None;
        spec.security_context = None;
        spec.dns_config = None;
        spec.dns_policy = None;
        spec.host_aliases = None;
        spec.image_pull_secrets = None;
        spec.readiness_gates = None;
        spec.hostname = None;
        spec.subdomain = None;
        spec.service_account = None;
        spec.service_account_name = None;
        spec.automount_service_account_token = None;
        spec.enable_service_links = None;
        // Only claims of storage may ever matter to where a pod can go; the service-account token, config maps
        // and secrets every pod mounts do not.
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        }
    }
    if let Some(status) = pod.status.as_mut() {
        // What is read: the phase, whether the scheduler found no node (PodScheduled), and a nomination.
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "PodScheduled");
            for condition in conditions.iter_mut() {
                condition.message = None;
            }
        }
        status.host_ip = None;
        status.host_ips = None;
        status.pod_ip = None;
        status.pod_ips = None;
        status.qos_class = None;
        status.start_time = None;
        status.message = None;
        status.reason = None;
        status.resize = None;
        status.resource_claim_statuses = None;
    }
}

pub fn node(node: &mut Node) {
    metadata(&mut node.metadata);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        ContainerImage, EnvVar, NodeStatus, PodCondition, PodSpec, PodStatus, Probe, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;
    use crate::apis::scheduling_input::pod_request;
    use crate::controller::pods;

    fn full_container(name: &str, cpu: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("app:1".into()),
            command: Some(vec!["/bin/app".into(), "--serve".into()]),
            env: Some(vec![EnvVar { name: "MODE".into(), value: Some("production".into()), ..EnvVar::default() }]),
            liveness_probe: Some(Probe::default()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
                limits: Some(BTreeMap::from([("memory".to_string(), Quantity("1Gi".into()))])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    fn full_pod() -> Pod {
        let mut sidecar = full_container("proxy", "100m");
        sidecar.restart_policy = Some("Always".into());
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                annotations: Some(BTreeMap::from([
                    ("karpenter.sh/do-not-disrupt".to_string(), "true".to_string()),
                    ("prometheus.io/scrape".to_string(), "true".to_string()),
                    (LAST_APPLIED.to_string(), "{\"a whole copy\": true}".to_string()),
                ])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![full_container("app", "500m")],
                init_containers: Some(vec![sidecar, full_container("migrate", "2")]),
                node_selector: Some(BTreeMap::from([("kubernetes.io/arch".to_string(), "arm64".to_string())])),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "False".into(),
                        reason: Some("Unschedulable".into()),
                        message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                        ..PodCondition::default()
                    },
                    PodCondition { type_: "Ready".into(), status: "False".into(), ..PodCondition::default() },
                ]),
                pod_ip: Some("10.0.0.1".into()),
                container_statuses: Some(vec![Default::default()]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn a_slim_pod_reads_as_the_whole_one_did() {
        let whole = full_pod();
        let mut slim = whole.clone();
        pod(&mut slim);
        let request = |p: &Pod| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            pod_request("shop/web-1", &labels, p.spec.as_ref().expect("spec"))
        };
        assert_eq!(request(&slim), request(&whole));
        assert_eq!(pods::is_provisionable(&slim), pods::is_provisionable(&whole));
        assert!(pods::is_provisionable(&slim));
        assert_eq!(pods::is_do_not_disrupt(&slim), pods::is_do_not_disrupt(&whole));
        assert!(pods::is_do_not_disrupt(&slim));
        // And it is slimmer: what nobody reads is gone.
        assert!(slim.metadata.managed_fields.is_none());
        assert!(!slim.metadata.annotations.as_ref().expect("annotations").contains_key(LAST_APPLIED));
        let app = &slim.spec.as_ref().expect("spec").containers[0];
        assert!(app.env.is_none() && app.command.is_none() && app.liveness_probe.is_none());
        assert!(slim.status.as_ref().expect("status").container_statuses.is_none());
        let annotations = slim.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["karpenter.sh/do-not-disrupt"]);
        assert_eq!(slim.status.as_ref().and_then(|s| s.conditions.as_ref()).map(Vec::len), Some(1));
        assert!(app.image.is_none());
    }

    #[test]
    fn a_slim_node_keeps_its_status_but_not_its_image_list() {
        let mut node = Node {
            metadata: ObjectMeta { managed_fields: Some(vec![ManagedFieldsEntry::default()]), ..ObjectMeta::default() },
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([("cpu".to_string(), Quantity("2".into()))])),
                images: Some(vec![ContainerImage { names: Some(vec!["app:1".into()]), size_bytes: Some(1) }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        super::node(&mut node);
        let status = node.status.as_ref().expect("status");
        assert!(status.images.is_none() && node.metadata.managed_fields.is_none());
        assert_eq!(status.allocatable.as_ref().map(|a| a["cpu"].0.as_str()), Some("2"));
    }
}
