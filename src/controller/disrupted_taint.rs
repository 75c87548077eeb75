//! The `karpenter.sh/disrupted:NoSchedule` taint: on a node whose pods are about to move (a disruption command
//! started, or its NodeClaim deleted), so that no pod is scheduled there meanwhile; lifted again when the
//! disruption does not go through. Patches hold only while the node's taints are those read (`guarded_patch`):
//! a node whose taints changed meanwhile is left for the next look at a fresh copy.

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::{Context, Error, is_not_found};
use crate::apis::guarded_patch;
use crate::names::DISRUPTED_TAINT_KEY;

/// What a taint or lift did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The node already was as asked.
    AlreadySo,
    /// The node's taints changed since they were read, or the node is gone: nothing written.
    Stale,
}

pub fn is_tainted(node: &Node) -> bool {
    taints(node).unwrap_or_default().iter().any(|t| t.key == DISRUPTED_TAINT_KEY)
}

pub async fn taint(ctx: &Context, node: &Node) -> Result<Outcome, Error> {
    write(ctx, node, tainting(node)).await
}

pub async fn lift(ctx: &Context, node: &Node) -> Result<Outcome, Error> {
    write(ctx, node, lifting(node)).await
}

async fn write(ctx: &Context, node: &Node, patch: Option<Patch<()>>) -> Result<Outcome, Error> {
    let Some(patch) = patch else { return Ok(Outcome::AlreadySo) };
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    match nodes.patch(&node.name_any(), &PatchParams::default(), &patch).await {
        Ok(_) => Ok(Outcome::Written),
        Err(error) if guarded_patch::is_stale_list(&error) || is_not_found(&error) => Ok(Outcome::Stale),
        Err(error) => Err(error.into()),
    }
}

fn taints(node: &Node) -> Option<&[Taint]> {
    node.spec.as_ref().and_then(|s| s.taints.as_deref())
}

/// The JSON patch that adds the disrupted taint to `node`, None if it has it.
fn tainting(node: &Node) -> Option<Patch<()>> {
    if is_tainted(node) {
        return None;
    }
    let read = taints(node);
    let mut written = read.unwrap_or_default().to_vec();
    written.push(Taint { key: DISRUPTED_TAINT_KEY.into(), effect: "NoSchedule".into(), value: None, time_added: None });
    Some(guarded_patch::rewriting_list("/spec/taints", read, &written))
}

/// The JSON patch that takes the disrupted taint off `node`, None if it has none.
fn lifting(node: &Node) -> Option<Patch<()>> {
    if !is_tainted(node) {
        return None;
    }
    let read = taints(node);
    let kept: Vec<Taint> = read.unwrap_or_default().iter().filter(|t| t.key != DISRUPTED_TAINT_KEY).cloned().collect();
    Some(guarded_patch::rewriting_list("/spec/taints", read, &kept))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;
    use serde_json::json;

    use super::*;

    fn node(taints: Option<Vec<Taint>>) -> Node {
        Node { spec: Some(NodeSpec { taints, ..Default::default() }), ..Default::default() }
    }

    fn team() -> Taint {
        Taint { key: "team".into(), effect: "NoSchedule".into(), value: Some("a".into()), time_added: None }
    }

    fn disrupted() -> Taint {
        Taint { key: DISRUPTED_TAINT_KEY.into(), effect: "NoSchedule".into(), value: None, time_added: None }
    }

    fn operations(patch: Option<Patch<()>>) -> serde_json::Value {
        let Some(Patch::Json(operations)) = patch else { panic!("a JSON patch: {patch:?}") };
        serde_json::to_value(operations).expect("serializable")
    }

    #[test]
    fn the_disrupted_taint_is_added_only_to_the_taints_read() {
        let team_json = json!({"key": "team", "effect": "NoSchedule", "value": "a"});
        let disrupted_json = json!({"key": DISRUPTED_TAINT_KEY, "effect": "NoSchedule"});
        assert_eq!(
            operations(tainting(&node(Some(vec![team()])))),
            json!([
                {"op": "test", "path": "/spec/taints", "value": [team_json.clone()]},
                {"op": "replace", "path": "/spec/taints", "value": [team_json, disrupted_json.clone()]},
            ])
        );
        // No taints read: the test is that there are still none.
        assert_eq!(
            operations(tainting(&node(None))),
            json!([
                {"op": "test", "path": "/spec/taints", "value": null},
                {"op": "add", "path": "/spec/taints", "value": [disrupted_json]},
            ])
        );
    }

    #[test]
    fn lifting_keeps_every_other_taint_read() {
        let team_json = json!({"key": "team", "effect": "NoSchedule", "value": "a"});
        let disrupted_json = json!({"key": DISRUPTED_TAINT_KEY, "effect": "NoSchedule"});
        assert_eq!(
            operations(lifting(&node(Some(vec![team(), disrupted()])))),
            json!([
                {"op": "test", "path": "/spec/taints", "value": [team_json.clone(), disrupted_json]},
                {"op": "replace", "path": "/spec/taints", "value": [team_json]},
            ])
        );
    }

    #[test]
    fn a_node_already_so_needs_no_patch() {
        assert!(tainting(&node(Some(vec![disrupted()]))).is_none());
        assert!(lifting(&node(Some(vec![team()]))).is_none());
        assert!(lifting(&node(None)).is_none());
        assert!(is_tainted(&node(Some(vec![team(), disrupted()]))));
    }
}
