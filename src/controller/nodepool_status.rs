//! NodePool `status.nodes` and `status.resources` (the capacity of its nodes), as Karpenter keeps them: the
//! columns `kubectl get nodepools` shows, and what `limits` are compared with.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::provisioner::quantities_to_resources;
use super::{Context, Error};
use crate::apis::labels::NODEPOOL_LABEL;
use crate::apis::nodepool::NodePool;
use crate::apis::scheduling_input::resource_quantities;
use crate::catalog::resources::Resources;

/// Writes each NodePool's node count and summed capacity where they changed.
pub async fn update(ctx: &Context) -> Result<(), Error> {
    let mut totals: BTreeMap<String, (i64, Resources)> = BTreeMap::new();
    for claim in ctx.state.nodeclaims.state() {
        let Some(pool) = claim.labels().get(NODEPOOL_LABEL) else { continue };
        let status = claim.status.clone().unwrap_or_default();
        // The Node's own capacity once it reports one; the NodeClaim's estimate before.
        let capacity = status
            .node_name
            .as_deref()
            .and_then(|n| ctx.state.node(n))
            .and_then(|n| n.status.clone()?.capacity)
            .map(|c| quantities_to_resources(&c))
            .unwrap_or_else(|| quantities_to_resources(&status.capacity));
        let entry = totals.entry(pool.clone()).or_insert((0, Resources::ZERO));
        entry.0 += 1;
        entry.1 += capacity;
    }
    let api: Api<NodePool> = Api::all(ctx.kube.clone());
    for pool in ctx.state.nodepools.state() {
        let (nodes, capacity) = totals.get(&pool.name_any()).copied().unwrap_or((0, Resources::ZERO));
        let resources: BTreeMap<String, String> =
            resource_quantities(&capacity).into_iter().map(|(k, v)| (k, v.0)).collect();
        let status = pool.status.clone().unwrap_or_default();
        if status.nodes == Some(nodes) && status.resources == resources {
            continue;
        }
        // A merge patch merges maps: a resource no node has any more is removed with a null.
        let mut merged: serde_json::Map<String, serde_json::Value> =
            status.resources.keys().map(|k| (k.clone(), serde_json::Value::Null)).collect();
        merged.extend(resources.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))));
        let patch = json!({"status": {"nodes": nodes, "resources": merged}});
        match api.patch_status(&pool.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
