//! The cluster as the controller sees it: watch-fed caches of pods, nodes, DaemonSets and the Karpenter objects.
//! Every replica keeps them warm, so a new leader starts with a full picture.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use super::slim;
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;

#[derive(Clone)]
pub struct ClusterState {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub daemonsets: Store<DaemonSet>,
    pub nodeclaims: Store<NodeClaim>,
    pub nodepools: Store<NodePool>,
    pub nodeclasses: Store<EC2NodeClass>,
    /// Read by disruption: a pod whose budget allows no eviction blocks its node.
    pub pdbs: Store<PodDisruptionBudget>,
}

/// A cache of `api`'s objects, each slimmed by `slim` before it is stored (see `super::slim`).
fn watch<K>(api: Api<K>, config: watcher::Config, slim: fn(&mut K)) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff().modify(slim)).applied_objects();
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(kind = K::kind(&()).as_ref(), "watch error (retrying): {error}");
                }
            })
            .await;
    });
    store
}

/// Slims any object to its metadata's needs.
fn metadata_only<K: kube::Resource>(object: &mut K) {
    slim::metadata(object.meta_mut());
}

impl ClusterState {
    /// Starts every watch; `wait_synced` tells when the caches are complete.
    pub fn start(client: &kube::Client) -> Self {
        let all = watcher::Config::default;
        Self {
            pods: watch(Api::all(client.clone()), all(), slim::pod),
            nodes: watch(Api::all(client.clone()), all(), slim::node),
            daemonsets: watch(Api::all(client.clone()), all(), metadata_only),
            nodeclaims: watch(Api::all(client.clone()), all(), metadata_only),
            nodepools: watch(Api::all(client.clone()), all(), metadata_only),
            nodeclasses: watch(Api::all(client.clone()), all(), metadata_only),
            pdbs: watch(Api::all(client.clone()), all(), metadata_only),
        }
    }

    pub async fn wait_synced(&self) {
        let _ = tokio::join!(
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.daemonsets.wait_until_ready(),
            self.nodeclaims.wait_until_ready(),
            self.nodepools.wait_until_ready(),
            self.nodeclasses.wait_until_ready(),
            self.pdbs.wait_until_ready(),
        );
    }

    pub fn node_by_provider_id(&self, provider_id: &str) -> Option<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id))
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&reflector::ObjectRef::new(name))
    }

    pub fn nodeclass(&self, name: &str) -> Option<Arc<EC2NodeClass>> {
        self.nodeclasses.get(&reflector::ObjectRef::new(name))
    }

    pub fn nodepool(&self, name: &str) -> Option<Arc<NodePool>> {
        self.nodepools.get(&reflector::ObjectRef::new(name))
    }

    /// Pods bound to each node, by node name.
    pub fn pods_by_node(&self) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self.pods.state() {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                by_node.entry(node).or_default().push(pod);
            }
        }
        by_node
    }
}
