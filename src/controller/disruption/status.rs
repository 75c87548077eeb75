//! What disruption writes on NodeClaims for people and tools to read: the drift hashes they were made with
//! (stamped on NodeClaims that lack them or carry another hash version), and the `Consolidatable` and `Drifted`
//! conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::super::{Context, Error, conditions};
use crate::apis::drift_hash::{
    EC2NODECLASS_HASH_VERSION, NODEPOOL_HASH_VERSION, nodeclass_annotations, nodepool_annotations,
};
use crate::apis::nodeclaim::NodeClaim;
use crate::names::{EC2NODECLASS_HASH_VERSION_ANNOTATION, NODEPOOL_HASH_VERSION_ANNOTATION, NODEPOOL_LABEL};

/// Stamps the current hashes on a NodeClaim that has none of this version (adopted from Karpenter, or made before
/// nodesmith hashed), so that later changes show as drift and earlier ones do not.
pub async fn stamp_hashes(ctx: &Context, claim: &NodeClaim) -> Result<(), Error> {
    let annotations = claim.annotations();
    let mut stamp = serde_json::Map::new();
    if annotations.get(NODEPOOL_HASH_VERSION_ANNOTATION).map(String::as_str) != Some(NODEPOOL_HASH_VERSION)
        && let Some(pool) = claim.labels().get(NODEPOOL_LABEL).and_then(|p| ctx.state.nodepool(p))
    {
        stamp.extend(nodepool_annotations(&pool.spec).map(|(k, v)| (k.to_string(), v.into())));
    }
    if annotations.get(EC2NODECLASS_HASH_VERSION_ANNOTATION).map(String::as_str) != Some(EC2NODECLASS_HASH_VERSION)
        && let Some(class) = ctx.state.nodeclass(&claim.spec.node_class_ref.name)
    {
        stamp.extend(nodeclass_annotations(&class.spec).map(|(k, v)| (k.to_string(), v.into())));
    }
    if stamp.is_empty() {
        return Ok(());
    }
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let patch = json!({"metadata": {"annotations": stamp}});
    api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

/// Records why a NodeClaim is about to be disrupted (`DisruptionReason`, as Karpenter writes it), so its drain
/// can say why its pods go. Over the copy read: a NodeClaim changed meanwhile keeps its conditions, and its
/// drain reports the reason as Karpenter does when none is recorded.
pub async fn set_disruption_reason(ctx: &Context, claim: &NodeClaim, reason: &str) -> Result<(), Error> {
    let mut conds = claim.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    if !conditions::set(&mut conds, DISRUPTION_REASON, true, reason, reason) {
        return Ok(());
    }
    write_conditions(ctx, claim, conds).await
}

/// The condition type of why a NodeClaim is being disrupted.
pub const DISRUPTION_REASON: &str = "DisruptionReason";

/// Why the pods of `claim`'s node are drained, as Karpenter's `pods_drained_total` labels it: the recorded
/// disruption reason, else a forceful termination (expiry, interruption, a deletion by hand).
pub fn drain_reason(claim: &NodeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == DISRUPTION_REASON && c.status == "True"))
        .map_or("Forceful Termination", |c| c.reason.as_str())
}

/// Sets `Consolidatable` and `Drifted` as they are now; writes only when something changed, and only over the
/// copy it read (a 409 waits for the next pass), so the lifecycle's conditions are never overwritten.
pub async fn set_conditions(
    ctx: &Context,
    claim: &NodeClaim,
    consolidatable: bool,
    drifted: Option<&str>,
) -> Result<(), Error> {
    let mut conds = claim.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let mut changed = if consolidatable {
        conditions::set(&mut conds, "Consolidatable", true, "Consolidatable", "")
    } else {
        let before = conds.len();
        conds.retain(|c| c.type_ != "Consolidatable");
        before != conds.len()
    };
    changed |= match drifted {
        Some(reason) => conditions::set(&mut conds, "Drifted", true, reason, ""),
        None => {
            let before = conds.len();
            conds.retain(|c| c.type_ != "Drifted");
            before != conds.len()
        }
    };
    if !changed {
        return Ok(());
    }
    write_conditions(ctx, claim, conds).await
}

/// Writes `conds` as the NodeClaim's conditions over the copy read: a 409 (changed meanwhile) or 404 (gone) writes
/// nothing, and the next pass works from the newer copy.
async fn write_conditions(ctx: &Context, claim: &NodeClaim, conds: Vec<Condition>) -> Result<(), Error> {
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let patch = json!({"metadata": {"resourceVersion": claim.resource_version()}, "status": {"conditions": conds}});
    match api.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
