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

fn watch<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff()).applied_objects();
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

impl ClusterState {
    /// Starts every watch; `wait_synced` tells when the caches are complete.
    pub fn start(client: &kube::Client) -> Self {
        // Metadata-heavy fields (managed fields) are dropped from the caches: they are never read, and at 10,000
        // pods they are most of the memory.
        let pods = {
            let (store, writer) = reflector::store();
            let stream = reflector::reflector(
                writer,
                watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                    .default_backoff()
                    .modify(|pod: &mut Pod| pod.metadata.managed_fields = None),
            )
            .applied_objects();
            tokio::spawn(async move {
                stream
                    .for_each(|event| async move {
                        if let Err(error) = event {
                            tracing::warn!("pod watch error (retrying): {error}");
                        }
                    })
                    .await;
            });
            store
        };
        Self {
            pods,
            nodes: watch(Api::all(client.clone()), watcher::Config::default()),
            daemonsets: watch(Api::all(client.clone()), watcher::Config::default()),
            nodeclaims: watch(Api::all(client.clone()), watcher::Config::default()),
            nodepools: watch(Api::all(client.clone()), watcher::Config::default()),
            nodeclasses: watch(Api::all(client.clone()), watcher::Config::default()),
            pdbs: watch(Api::all(client.clone()), watcher::Config::default()),
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
