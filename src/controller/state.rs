//! The cluster as the controller sees it: one watch per kind, feeding both the caches every component reads and
//! the controllers' triggers (shared streams), so no kind is watched twice. Every replica keeps them warm, so a
//! new leader starts with a full picture.
//!
//! The triggers carry the objects themselves, as the watch applied them to the cache, not references looked up
//! in the cache when read (kube's `ReflectHandle`): a reference to an object deleted before its subscriber read
//! it left that stream pending with no wake-up, and inside a `Controller` (which selects its triggers with
//! `SelectAll`) it was never polled again, so its buffer filled and the whole watch stopped. At drift:600 that
//! froze the Node cache within four minutes and every registration after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::apis::pod::Pod;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use super::slim;
use crate::apis::ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;

/// Changes a subscriber may fall behind by before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// A change stream of a shared watch: every object the watch brings, once applied to the cache (all of them
/// after each list). Must be read (see `Subscriptions`).
pub type Subscription<K> = mpsc::Receiver<Arc<K>>;

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
    /// Where pods' volumes let them run (`volume_topology`).
    pub pvcs: Store<PersistentVolumeClaim>,
    pub pvs: Store<PersistentVolume>,
    pub storageclasses: Store<StorageClass>,
    /// An observing controller's own resolution of each EC2NodeClass (`observe`): it writes no status, so the
    /// status it would write is kept here and read in place of the stored one. Empty otherwise.
    observed_nodeclass_status: Arc<std::sync::RwLock<HashMap<String, EC2NodeClassStatus>>>,
}

/// The change streams of the shared watches, one per consumer. Each must be polled for as long as the controller
/// runs: a subscriber that stops reading makes its watch wait (see `SUBSCRIBER_BUFFER`).
pub struct Subscriptions {
    /// Wake the provisioner's batcher.
    pub provisioner: Triggers,
    /// Drive the NodeClaim controller: its NodeClaims, and Nodes appearing and changing (registration).
    pub nodeclaims: Subscription<NodeClaim>,
    pub nodes: Subscription<Node>,
    /// Drives the EC2NodeClass controller.
    pub nodeclasses: Subscription<EC2NodeClass>,
}

/// What may make a pod need a new place: pods changing, nodes being tainted or going away, NodeClaims changing.
pub struct Triggers {
    pub pods: Subscription<Pod>,
    pub nodes: Subscription<Node>,
    pub nodeclaims: Subscription<NodeClaim>,
}

/// Told of each change a watch brings, before the cache takes it: the cached copy it replaces (None for an object
/// not seen before) and the new one. The object metrics count transitions this way (`object_metrics`).
pub trait Changes<K>: Send + Sync {
    fn changed(&self, _before: Option<&K>, _after: &K) {}
    fn deleted(&self, _last: &K) {}
}

/// Told nothing.
pub struct Unobserved;

impl<K> Changes<K> for Unobserved {}

fn tell<K>(cache: &Store<K>, changes: &dyn Changes<K>, event: &watcher::Event<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    match event {
        watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
            let before = cache.get(&reflector::ObjectRef::from_obj(object));
            changes.changed(before.as_deref(), object);
        }
        watcher::Event::Delete(object) => changes.deleted(object),
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// A watch of `api`'s objects into a cache, each slimmed by `slim` before it is stored (see `super::slim`) and
/// told to `changes`, and `N` change streams of it, which must be read (see `Subscriptions`).
fn watch<K, const N: usize>(
    api: Api<K>,
    slim: fn(&mut K),
    changes: Arc<dyn Changes<K>>,
) -> (Store<K>, [Subscription<K>; N])
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let mut subscribers = Vec::with_capacity(N);
    let subscriptions = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        subscribers.push(sender);
        receiver
    });
    let cache = store.clone();
    let told = store.clone();
    let watch = watcher(api, watcher::Config::default()).default_backoff().modify(slim).map(move |event| {
        if let Ok(event) = &event {
            tell(&told, changes.as_ref(), event);
        }
        event
    });
    // Every event, not only objects: a kind with no objects still tells that it is served again.
    let stream = reflector::reflector(writer, watch);
    tokio::spawn(async move {
        let mut health = WatchHealth::<K>::default();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(event) = &event {
                tell_subscribers(&cache, event, &mut subscribers).await;
            }
            health.observe(event);
        }
    });
    (store, subscriptions)
}

/// Hands the objects an event brought, as the cache holds them now, to every subscriber, waiting for those whose
/// buffer is full. A subscriber that went away is skipped.
async fn tell_subscribers<K>(cache: &Store<K>, event: &watcher::Event<K>, subscribers: &mut [mpsc::Sender<Arc<K>>])
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let objects = match event {
        watcher::Event::Apply(object) => cache.get(&reflector::ObjectRef::from_obj(object)).into_iter().collect(),
        // A (re)list is complete: everything there is may have changed.
        watcher::Event::InitDone => cache.state(),
        watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::Delete(_) => Vec::new(),
    };
    for object in objects {
        for subscriber in subscribers.iter_mut() {
            let _gone = subscriber.send(object.clone()).await;
        }
    }
}

/// Says once, plainly, that a kind is not served (its CRD is missing), rather than at every retry; says when it
/// is served again. Other watch errors are retried and logged each time.
struct WatchHealth<K> {
    missing: bool,
    kind: std::marker::PhantomData<K>,
}

/// What one watch event gives to say.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Nothing,
    NotServed(String),
    ServedAgain(String),
    Retrying(String),
}

impl<K> Default for WatchHealth<K> {
    fn default() -> Self {
        Self { missing: false, kind: std::marker::PhantomData }
    }
}

impl<K: kube::Resource<DynamicType = ()>> WatchHealth<K> {
    fn observe(&mut self, event: watcher::Result<watcher::Event<K>>) {
        let kind = K::kind(&());
        let said = match event {
            // Said before each (re)list starts: no proof yet that the kind is served.
            Ok(watcher::Event::Init) => return,
            Ok(_) => self.said(None),
            Err(error) => self.said(Some(error)),
        };
        match said {
            Said::Nothing => {}
            Said::NotServed(message) => tracing::error!(kind = kind.as_ref(), "{message}"),
            Said::ServedAgain(message) => tracing::info!(kind = kind.as_ref(), "{message}"),
            Said::Retrying(message) => tracing::warn!(kind = kind.as_ref(), "{message}"),
        }
    }

    fn said(&mut self, error: Option<watcher::Error>) -> Said {
        let (kind, api_version) = (K::kind(&()), K::api_version(&()));
        match error {
            None if self.missing => {
                self.missing = false;
                Said::ServedAgain(format!("{api_version} {kind} is served now; watching it"))
            }
            Some(error) if is_not_served(&error) => {
                if self.missing {
                    return Said::Nothing;
                }
                self.missing = true;
                Said::NotServed(not_served_message(&api_version, &kind))
            }
            Some(error) => Said::Retrying(format!("watch error (retrying): {error}")),
            None => Said::Nothing,
        }
    }
}

/// The API server answered 404 to the list or watch: the kind's API is not there.
fn is_not_served(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => super::is_not_found(error),
        watcher::Error::WatchError(status) => status.code == 404,
        watcher::Error::NoResourceVersion => false,
    }
}

fn not_served_message(api_version: &str, kind: &str) -> String {
    if api_version.starts_with("karpenter.") {
        format!(
            "{api_version} {kind} is not served by this cluster: the Karpenter v1 CRDs are not installed. Install them \
             with `nodesmith crds | kubectl apply --server-side -f -` (or the Helm chart, which carries them). The \
             controller stays unready until they are; it keeps watching and starts on its own."
        )
    } else {
        format!("{api_version} {kind} is not served by this cluster; the controller stays unready until it is")
    }
}

/// A cache holding `objects`, never updated: a one-off read of the cluster (`nodesmith explain`), or a test's.
pub fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// Every kind the caches hold, as plain lists.
#[derive(Default)]
pub struct Objects {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub daemonsets: Vec<DaemonSet>,
    pub nodeclaims: Vec<NodeClaim>,
    pub nodepools: Vec<NodePool>,
    pub nodeclasses: Vec<EC2NodeClass>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub pvcs: Vec<PersistentVolumeClaim>,
    pub pvs: Vec<PersistentVolume>,
    pub storageclasses: Vec<StorageClass>,
}

impl Objects {
    /// Caches holding these objects, as they are (not slimmed).
    pub fn into_state(self) -> ClusterState {
        ClusterState {
            pods: store(self.pods),
            nodes: store(self.nodes),
            daemonsets: store(self.daemonsets),
            nodeclaims: store(self.nodeclaims),
            nodepools: store(self.nodepools),
            nodeclasses: store(self.nodeclasses),
            pdbs: store(self.pdbs),
            pvcs: store(self.pvcs),
            pvs: store(self.pvs),
            storageclasses: store(self.storageclasses),
            observed_nodeclass_status: Arc::default(),
        }
    }
}

/// Slims any object to its metadata's needs.
fn metadata_only<K: kube::Resource>(object: &mut K) {
    slim::metadata(object.meta_mut());
}

impl ClusterState {
    /// Starts every watch; `wait_synced` tells when the caches are complete. The subscriptions must all be read.
    /// `changes` is told of every change to pods, nodes, NodeClaims, NodePools and EC2NodeClasses.
    pub fn start(
        client: &kube::Client,
        changes: Arc<super::object_metrics::ObjectTransitions>,
    ) -> (Self, Subscriptions) {
        let c = client;
        let none = Arc::new(Unobserved);
        let (pods, [pod_changes]) = watch(Api::all(c.clone()), slim::pod, changes.clone());
        let (nodes, [node_changes, node_registrations]) = watch(Api::all(c.clone()), slim::node, changes.clone());
        let (nodeclaims, [nodeclaim_changes, nodeclaim_reconciles]) =
            watch(Api::all(c.clone()), metadata_only, changes.clone());
        let (nodeclasses, [nodeclass_reconciles]) = watch(Api::all(c.clone()), metadata_only, changes.clone());
        let (daemonsets, []) = watch(Api::all(c.clone()), metadata_only, none.clone());
        let (nodepools, []) = watch(Api::all(c.clone()), metadata_only, changes);
        let (pdbs, []) = watch(Api::all(c.clone()), metadata_only, none.clone());
        let (pvcs, []) = watch(Api::all(c.clone()), metadata_only, none.clone());
        let (pvs, []) = watch(Api::all(c.clone()), metadata_only, none.clone());
        let (storageclasses, []) = watch(Api::all(c.clone()), metadata_only, none);
        let state = Self {
            pods,
            nodes,
            daemonsets,
            nodeclaims,
            nodepools,
            nodeclasses,
            pdbs,
            pvcs,
            pvs,
            storageclasses,
            observed_nodeclass_status: Arc::default(),
        };
        let subscriptions = Subscriptions {
            provisioner: Triggers { pods: pod_changes, nodes: node_changes, nodeclaims: nodeclaim_changes },
            nodeclaims: nodeclaim_reconciles,
            nodes: node_registrations,
            nodeclasses: nodeclass_reconciles,
        };
        (state, subscriptions)
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
            self.pvcs.wait_until_ready(),
            self.pvs.wait_until_ready(),
            self.storageclasses.wait_until_ready(),
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

    /// The pod `key` (`namespace/name`, as `pods::key` writes it; a bare name is in `default`).
    pub fn pod(&self, key: &str) -> Option<Arc<Pod>> {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        self.pods.get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// The EC2NodeClass, with the status an observing controller resolved for it, if it did.
    pub fn nodeclass(&self, name: &str) -> Option<Arc<EC2NodeClass>> {
        let class = self.nodeclasses.get(&reflector::ObjectRef::new(name))?;
        let observed = self.observed_nodeclass_status.read().ok().and_then(|o| o.get(name).cloned());
        Some(match observed {
            Some(status) => Arc::new(EC2NodeClass { status: Some(status), ..(*class).clone() }),
            None => class,
        })
    }

    /// Keeps the status an observing controller resolved for the EC2NodeClass `name` in place of writing it.
    pub fn observe_nodeclass_status(&self, name: &str, status: EC2NodeClassStatus) {
        if let Ok(mut observed) = self.observed_nodeclass_status.write() {
            observed.insert(name.to_string(), status);
        }
    }

    pub fn nodepool(&self, name: &str) -> Option<Arc<NodePool>> {
        self.nodepools.get(&reflector::ObjectRef::new(name))
    }

    /// `ENABLE_PREFIX_DELEGATION` of the VPC CNI's DaemonSet (`kube-system/aws-node`).
    pub fn cni_prefix_delegation(&self) -> bool {
        self.daemonsets.state().iter().any(|ds| {
            ds.metadata.namespace.as_deref() == Some("kube-system")
                && ds.metadata.name.as_deref() == Some("aws-node")
                && ds
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .into_iter()
                    .flat_map(|s| &s.containers)
                    .flat_map(|c| c.env.iter().flatten())
                    .any(|e| e.name == "ENABLE_PREFIX_DELEGATION" && e.value.as_deref() == Some("true"))
        })
    }

    /// Pods bound to each node, by node name.
    pub fn pods_by_node(&self) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self.pods.state() {
            if let Some(node) = pod.node_name() {
                by_node.entry(node.to_string()).or_default().push(pod);
            }
        }
        by_node
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use kube::core::Status;

    use super::*;

    fn named_node(name: &str) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node
    }

    /// The trigger streams must not depend on the object still being in the cache when read: with kube's
    /// `ReflectHandle` the change of `gone` left its subscriber pending for good, and the watch behind it stopped.
    #[tokio::test]
    async fn a_subscriber_gets_every_change_even_of_an_object_deleted_before_it_read_it() {
        let (cache, mut writer) = reflector::store();
        let (sender, receiver) = mpsc::channel(16);
        let mut subscribers = vec![sender];
        let events = [
            watcher::Event::Init,
            watcher::Event::InitApply(named_node("listed")),
            watcher::Event::InitDone,
            watcher::Event::Apply(named_node("gone")),
            watcher::Event::Delete(named_node("gone")),
            watcher::Event::Apply(named_node("new")),
        ];
        for event in &events {
            writer.apply_watcher_event(event);
            tell_subscribers(&cache, event, &mut subscribers).await;
        }
        drop(subscribers);
        let told: Vec<String> = receiver.map(|node| node.name_any()).collect().await;
        assert_eq!(told, ["listed", "gone", "new"]);
    }

    fn not_found() -> watcher::Error {
        let status = Status::failure("404 page not found", "NotFound").with_code(404);
        watcher::Error::InitialListFailed(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn a_missing_crd_is_said_once_with_how_to_install_it_and_its_return_once() {
        let mut health = WatchHealth::<NodeClaim>::default();
        let Said::NotServed(message) = health.said(Some(not_found())) else { panic!("not said") };
        assert!(message.starts_with("karpenter.sh/v1 NodeClaim is not served"), "{message}");
        assert!(message.contains("nodesmith crds | kubectl apply") && message.contains("Helm chart"), "{message}");
        assert_eq!(health.said(Some(not_found())), Said::Nothing);
        assert_eq!(health.said(None), Said::ServedAgain("karpenter.sh/v1 NodeClaim is served now; watching it".into()));
        assert_eq!(health.said(None), Said::Nothing);
        // Missing again later: said again, once.
        assert!(matches!(health.said(Some(not_found())), Said::NotServed(_)));
    }

    #[test]
    fn other_watch_errors_are_said_each_time() {
        let mut health = WatchHealth::<Pod>::default();
        let forbidden = || {
            let status = Status::failure("pods is forbidden", "Forbidden").with_code(403);
            watcher::Error::WatchFailed(kube::Error::Api(status.boxed()))
        };
        assert!(matches!(health.said(Some(forbidden())), Said::Retrying(m) if m.contains("forbidden")));
        assert!(matches!(health.said(Some(forbidden())), Said::Retrying(_)));
        assert_eq!(health.said(None), Said::Nothing);
        assert!(!not_served_message("v1", "Pod").contains("Karpenter"));
    }
}
