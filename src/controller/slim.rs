//! What the watch caches keep of each object: only what the controller reads. At thousands of pods the parts
//! nobody reads (managed fields, `kubectl apply`'s copy of the object, annotations, a node's image list) are most
//! of the memory. Pods are also read into a type of their own that skips what is not read (`crate::apis::pod`).

use crate::apis::pod::Pod;
use k8s_openapi::api::core::v1::Node;
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

/// The pod annotations the controller reads; a pod keeps no other (real pods carry many, some large).
const POD_ANNOTATIONS_READ: [&str; 3] =
    [DO_NOT_DISRUPT_ANNOTATION, POD_DELETION_COST_ANNOTATION, MIRROR_POD_ANNOTATION];

/// A pod's spec and status are slim as read (`crate::apis::pod`); its metadata is slimmed here.
pub fn pod(pod: &mut Pod) {
    metadata(&mut pod.metadata);
    let meta = &mut pod.metadata;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| POD_ANNOTATIONS_READ.contains(&key.as_str()));
    }
    meta.generate_name = None;
    meta.resource_version = None;
    meta.finalizers = None;
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

    use k8s_openapi::api::core::v1::{ContainerImage, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;
    use crate::apis::pod::PodSpec;
    use crate::apis::scheduling_input::pod_request;
    use crate::controller::pods;

    /// A pending pod as the API server sends it: managed fields, `kubectl apply`'s copy, annotations nobody reads.
    const WHOLE_POD: &str = r#"{
      "metadata": {
        "name": "web-1", "namespace": "shop", "generateName": "web-", "resourceVersion": "42",
        "labels": {"app": "web"},
        "annotations": {"karpenter.sh/do-not-disrupt": "true", "prometheus.io/scrape": "true",
                        "kubectl.kubernetes.io/last-applied-configuration": "{\"a whole copy\": true}"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
      },
      "spec": {"containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": "500m"}}}],
               "nodeSelector": {"kubernetes.io/arch": "arm64"}},
      "status": {"phase": "Pending",
                 "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    }"#;

    #[test]
    fn a_slim_pod_reads_as_the_whole_one_did() {
        let mut slim: Pod = serde_json::from_str(WHOLE_POD).expect("reads");
        pod(&mut slim);
        let whole: k8s_openapi::api::core::v1::Pod = serde_json::from_str(WHOLE_POD).expect("reads");
        let whole_spec = PodSpec::from_template(whole.spec.as_ref().expect("spec")).expect("converts");
        let labels = whole.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            pod_request("shop/web-1", &slim.labels().to_map(), slim.spec.as_ref().expect("spec")),
            pod_request("shop/web-1", &labels, &whole_spec)
        );
        assert!(!labels.is_empty() && slim.metadata.labels.is_none(), "the labels are kept apart, as a list");
        assert!(pods::is_provisionable(&slim));
        assert!(pods::is_do_not_disrupt(&slim));
        // And it is slimmer: what nobody reads is gone.
        assert!(slim.metadata.managed_fields.is_none());
        let annotations = slim.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["karpenter.sh/do-not-disrupt"]);
        assert!(slim.metadata.generate_name.is_none() && slim.metadata.resource_version.is_none());
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
