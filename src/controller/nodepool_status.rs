//! NodePool `status.nodes` and `status.resources` (the capacity of its nodes), as Karpenter keeps them: the
//! columns `kubectl get nodepools` shows, and what `limits` are compared with; and the `Launchable` condition,
//! which says when the pool's launches are being refused for a reason other than capacity (a denied permission,
//! a bad parameter): those need a person, and the NodeClaims concerned back off rather than churn; and the
//! `ValidationSucceeded` condition, which says when the spec is one nodesmith cannot plan with; `NodeClassReady`,
//! whether the EC2NodeClass it refers to exists and is Ready; and `Ready`, Karpenter's root condition (the
//! `READY` column of `kubectl get nodepools`), true when both are.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::cluster_snapshot::quantities_to_resources;
use super::{Context, Error, conditions};
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;
use crate::apis::scheduling_input::{nodepool as scheduling_nodepool, resource_quantities};
use crate::catalog::resources::Resources;
use crate::names::NODEPOOL_LABEL;

/// Writes each NodePool's node count and summed capacity where they changed.
pub async fn update(ctx: &Context) -> Result<(), Error> {
    let mut totals: BTreeMap<String, (i64, Resources)> = BTreeMap::new();
    let mut failing: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for claim in ctx.state.nodeclaims.state() {
        let Some(pool) = claim.labels().get(NODEPOOL_LABEL) else { continue };
        if let Some(message) = launch_failure(&claim) {
            failing.entry(pool.clone()).or_default().push((claim.name_any(), message));
        }
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
        let mut conds = status.conditions.clone();
        let (launchable, reason, message) = launchable(failing.get(&pool.name_any()).map_or(&[], Vec::as_slice));
        let mut conditions_changed = conditions::set(&mut conds, LAUNCHABLE, launchable, reason, &message);
        let (valid, reason, message) = validation(&pool);
        conditions_changed |= conditions::set(&mut conds, VALIDATION_SUCCEEDED, valid, reason, &message);
        let class = ctx.state.nodeclass(&pool.spec.template.spec.node_class_ref.name);
        let (class_ready, reason, message) = nodeclass_ready(&pool, class.as_deref());
        conditions_changed |= conditions::set(&mut conds, NODE_CLASS_READY, class_ready, reason, &message);
        let (ready, reason, message) = readiness(&conds);
        conditions_changed |= conditions::set(&mut conds, READY, ready, reason, &message);
        if status.nodes == Some(nodes) && status.resources == resources && !conditions_changed {
            continue;
        }
        // A merge patch merges maps: a resource no node has any more is removed with a null.
        let mut merged: serde_json::Map<String, serde_json::Value> =
            status.resources.keys().map(|k| (k.clone(), serde_json::Value::Null)).collect();
        merged.extend(resources.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))));
        let patch = json!({"status": {"nodes": nodes, "resources": merged, "conditions": conds}});
        match api.patch_status(&pool.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// The NodePool condition type saying whether its launches go through.
pub const LAUNCHABLE: &str = "Launchable";

/// The NodePool condition type saying whether nodesmith can plan with the pool's spec (a limit on a resource it
/// does not count, a requirement it cannot read): a pool it cannot read launches nothing, and says so here.
pub const VALIDATION_SUCCEEDED: &str = "ValidationSucceeded";

/// The NodePool condition type saying whether its EC2NodeClass exists and is Ready.
pub const NODE_CLASS_READY: &str = "NodeClassReady";

/// Karpenter's root condition: the pool can be provisioned from (its class ready, its spec valid).
pub const READY: &str = "Ready";

/// What `Ready` depends on, as Karpenter's NodePool has it.
const READY_DEPENDS_ON: [&str; 2] = [VALIDATION_SUCCEEDED, NODE_CLASS_READY];

fn nodeclass_ready(pool: &NodePool, class: Option<&EC2NodeClass>) -> (bool, &'static str, String) {
    let reference = &pool.spec.template.spec.node_class_ref;
    if reference.kind != "EC2NodeClass" || reference.group != "karpenter.k8s.aws" {
        let message = format!(
            "nodeClassRef is {}/{}: nodesmith serves karpenter.k8s.aws/EC2NodeClass only",
            reference.group, reference.kind
        );
        return (false, "NodeClassNotFound", message);
    }
    let Some(class) = class else {
        return (false, "NodeClassNotFound", format!("EC2NodeClass {} does not exist", reference.name));
    };
    let conditions = class.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if conditions::is_true(conditions, READY) {
        return (true, "NodeClassReady", String::new());
    }
    let why = conditions
        .iter()
        .find(|c| c.type_ == READY && !c.message.is_empty())
        .map_or_else(|| "its status is not written yet".to_string(), |c| c.message.clone());
    (false, "NodeClassNotReady", format!("EC2NodeClass {} is not ready: {why}", reference.name))
}

/// `Ready` from the conditions it depends on: the first that is not true says why.
fn readiness(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> (bool, &'static str, String) {
    let unhealthy: Vec<String> = READY_DEPENDS_ON
        .iter()
        .filter(|type_| !conditions::is_true(conds, type_))
        .map(|type_| match conds.iter().find(|c| c.type_ == **type_) {
            Some(c) if !c.message.is_empty() => format!("{type_}={}: {}", c.status, c.message),
            Some(c) => format!("{type_}={}", c.status),
            None => format!("{type_}=Unknown"),
        })
        .collect();
    if unhealthy.is_empty() {
        (true, "Ready", String::new())
    } else {
        (false, "UnhealthyDependents", unhealthy.join("; "))
    }
}

fn validation(pool: &NodePool) -> (bool, &'static str, String) {
    match scheduling_nodepool(&pool.name_any(), &pool.spec, Default::default()) {
        Ok(_) => (true, "Valid", String::new()),
        Err(error) => (false, "Invalid", error.0),
    }
}

/// Why the NodeClaim's latest launch was refused, when it was for a reason other than capacity (capacity errors
/// re-plan elsewhere at once and say so on their own).
fn launch_failure(claim: &NodeClaim) -> Option<String> {
    let status = claim.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Launched" && c.status == "False" && c.reason == "LaunchFailed")
        .map(|c| c.message.clone())
}

/// The pool's `Launchable` condition from its NodeClaims whose launches are refused: status, reason, message.
fn launchable(failing: &[(String, String)]) -> (bool, &'static str, String) {
    let Some((first, why)) = failing.first() else { return (true, "Launchable", String::new()) };
    let others = match failing.len() - 1 {
        0 => String::new(),
        1 => " (and 1 other NodeClaim)".into(),
        n => format!(" (and {n} other NodeClaims)"),
    };
    (false, "LaunchFailed", format!("NodeClaim {first}{others} cannot launch: {why}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claim(name: &str, launched: Option<(&str, &str, &str)>) -> NodeClaim {
        let conditions: Vec<serde_json::Value> = launched
            .into_iter()
            .map(|(status, reason, message)| {
                json!({"type": "Launched", "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": "2026-12-02T15:00:00Z"})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"}},
            "status": {"conditions": conditions},
        }))
        .expect("a NodeClaim")
    }

    #[test]
    fn a_pool_whose_launch_is_refused_says_which_nodeclaim_and_why() {
        let denied = "ec2:CreateFleet on launch template x: UnauthorizedOperation";
        let claims = [
            claim("a", Some(("False", "LaunchFailed", denied))),
            claim("b", Some(("True", "Launched", ""))),
            claim("c", None),
            claim("d", Some(("False", "LaunchFailed", denied))),
        ];
        let failing: Vec<(String, String)> =
            claims.iter().filter_map(|c| Some((c.name_any(), launch_failure(c)?))).collect();
        let (ok, reason, message) = launchable(&failing);
        assert!(!ok);
        assert_eq!(reason, "LaunchFailed");
        assert_eq!(message, format!("NodeClaim a (and 1 other NodeClaim) cannot launch: {denied}"));
        assert_eq!(launchable(&failing[1..]).2, format!("NodeClaim d cannot launch: {denied}"));
        assert_eq!(launchable(&[]), (true, "Launchable", String::new()));
    }

    fn pool_with_limits(limits: serde_json::Value) -> NodePool {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "template": {"spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"},
                    "requirements": [],
                }},
                "limits": limits,
            },
        }))
        .expect("a NodePool")
    }

    fn class(ready: Option<(&str, &str)>) -> EC2NodeClass {
        let conditions: Vec<serde_json::Value> = ready
            .into_iter()
            .map(|(status, message)| {
                json!({"type": "Ready", "status": status, "reason": "R", "message": message,
                       "lastTransitionTime": "2026-12-02T15:00:00Z"})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"role": "r", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                     "subnetSelectorTerms": [{"tags": {"a": "b"}}], "securityGroupSelectorTerms": [{"tags": {"a": "b"}}]},
            "status": {"conditions": conditions},
        }))
        .expect("an EC2NodeClass")
    }

    #[test]
    fn a_pool_is_ready_only_with_its_class_ready_and_its_spec_valid_and_says_what_is_missing() {
        let pool = pool_with_limits(json!({"cpu": "100"}));
        assert_eq!(nodeclass_ready(&pool, Some(&class(Some(("True", ""))))), (true, "NodeClassReady", String::new()));
        let (ready, reason, message) = nodeclass_ready(&pool, None);
        assert_eq!((ready, reason, message.as_str()), (false, "NodeClassNotFound", "EC2NodeClass d does not exist"));
        let (ready, reason, message) = nodeclass_ready(&pool, Some(&class(Some(("False", "no subnet matches")))));
        assert_eq!((ready, reason), (false, "NodeClassNotReady"));
        assert_eq!(message, "EC2NodeClass d is not ready: no subnet matches");
        assert!(nodeclass_ready(&pool, Some(&class(None))).2.contains("not written yet"));
        let mut foreign = pool.clone();
        foreign.spec.template.spec.node_class_ref.kind = "AKSNodeClass".into();
        assert_eq!(nodeclass_ready(&foreign, Some(&class(Some(("True", ""))))).1, "NodeClassNotFound");

        let mut conds = Vec::new();
        conditions::set(&mut conds, VALIDATION_SUCCEEDED, true, "Valid", "");
        assert_eq!(readiness(&conds), (false, "UnhealthyDependents", "NodeClassReady=Unknown".to_string()));
        conditions::set(&mut conds, NODE_CLASS_READY, false, "NodeClassNotReady", "EC2NodeClass d is not ready: x");
        assert_eq!(readiness(&conds).2, "NodeClassReady=False: EC2NodeClass d is not ready: x");
        conditions::set(&mut conds, NODE_CLASS_READY, true, "NodeClassReady", "");
        assert_eq!(readiness(&conds), (true, "Ready", String::new()));
        conditions::set(&mut conds, VALIDATION_SUCCEEDED, false, "Invalid", "limits.x");
        assert_eq!(readiness(&conds).2, "ValidationSucceeded=False: limits.x");
    }

    #[test]
    fn a_limit_on_a_resource_nodesmith_does_not_count_is_refused_by_name() {
        let (valid, reason, message) = validation(&pool_with_limits(json!({"cpu": "100", "example.com/widget": "3"})));
        assert!(!valid);
        assert_eq!(reason, "Invalid");
        assert!(message.contains("limits.example.com/widget"), "{message}");
        let counted =
            json!({"cpu": "100", "nodes": "5", "vpc.amazonaws.com/efa": "8", "aws.amazon.com/neuroncore": "64"});
        assert_eq!(validation(&pool_with_limits(counted)), (true, "Valid", String::new()));
    }
}
