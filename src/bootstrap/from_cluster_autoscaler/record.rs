//! What a migration from Cluster Autoscaler must remember across runs: how things were before it changed anything
//! (for `--rollback`), which nodes stay and which go, and, per node being drained, the workloads that must run
//! again elsewhere before its instance goes. Kept in a ConfigMap beside Cluster Autoscaler, written once before the
//! first change and then only to add what a drain learns, so a run killed anywhere resumes from the cluster itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

pub const NAME: &str = "nodesmith-migration-from-cluster-autoscaler";
const KEY: &str = "record.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Cluster Autoscaler's Deployment (`namespace/name`) and its replicas before the migration.
    pub autoscaler: String,
    pub autoscaler_replicas: i32,
    /// Each group's minimum size and desired capacity before the migration.
    pub groups: BTreeMap<String, GroupSize>,
    /// The nodes left to the groups (for the controller itself).
    pub kept: Vec<String>,
    /// The nodes to drain and terminate, in order.
    pub drained: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSize {
    pub min_size: i32,
    pub desired: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub node: String,
    pub instance_id: String,
    pub group: String,
    /// Once its drain began: each workload (controller owner UID) with pods on the node → how many of its pods ran
    /// in the cluster then. The instance goes once as many run again, off this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<BTreeMap<String, usize>>,
}

/// The record, if a migration has begun.
pub async fn read(api: &Api<ConfigMap>) -> Result<Option<Record>, kube::Error> {
    let Some(map) = api.get_opt(NAME).await? else { return Ok(None) };
    let text = map.data.as_ref().and_then(|d| d.get(KEY)).cloned().unwrap_or_default();
    Ok(serde_json::from_str(&text).ok())
}

/// Writes the first record; if another run wrote one meanwhile, that one stands.
pub async fn create(api: &Api<ConfigMap>, record: &Record) -> Result<Record, kube::Error> {
    let map = config_map(record);
    match api.create(&PostParams::default(), &map).await {
        Ok(_) => Ok(record.clone()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(read(api).await?.unwrap_or_else(|| record.clone())),
        Err(error) => Err(error),
    }
}

/// Replaces the record (a drain adding its owners).
pub async fn update(api: &Api<ConfigMap>, record: &Record) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"data": {KEY: serde_json::to_string(record).unwrap_or_default()}});
    api.patch(NAME, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

pub async fn delete(api: &Api<ConfigMap>) -> Result<(), kube::Error> {
    match api.delete(NAME, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

fn config_map(record: &Record) -> ConfigMap {
    let mut map = ConfigMap::default();
    map.metadata.name = Some(NAME.to_string());
    map.metadata.labels = Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "nodesmith".to_string())]));
    map.data = Some(BTreeMap::from([(KEY.to_string(), serde_json::to_string(record).unwrap_or_default())]));
    map
}
