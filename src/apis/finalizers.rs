//! Adding and removing one finalizer without dropping anyone else's. Both replace the whole list, so each holds
//! only if the list is still what was read. Adding (a merge patch) carries the resourceVersion it was read at: if
//! another writer changed the object since, the API server refuses it (409). Removing tests the list itself
//! (`guarded_patch`): a changed list fails it (422, `guarded_patch::is_stale_list`).

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::guarded_patch::{is_stale_list, rewriting_list};

/// How many times a removal re-reads the object after losing a race before it gives up.
const CONFLICT_RETRIES: usize = 5;

/// Whether `object` carries `finalizer`.
pub fn has<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.finalizers().iter().any(|f| f == finalizer)
}

/// The merge patch that adds `finalizer` to `object`, or None if it has it already.
pub fn adding<K: Resource>(object: &K, finalizer: &str) -> Option<Value> {
    if has(object, finalizer) {
        return None;
    }
    let finalizers = object.finalizers();
    let mut finalizers = finalizers.to_vec();
    finalizers.push(finalizer.to_string());
    Some(json!({"metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}}))
}

/// The JSON patch that removes `finalizer` from `object`, or None if it does not have it: it holds only while the
/// object's finalizers are still those of `object`.
pub fn removing<K: Resource>(object: &K, finalizer: &str) -> Option<Patch<()>> {
    if !has(object, finalizer) {
        return None;
    }
    let finalizers = object.finalizers();
    let kept: Vec<String> = finalizers.iter().filter(|f| *f != finalizer).cloned().collect();
    Some(rewriting_list("/metadata/finalizers", Some(finalizers), &kept))
}

/// Removes `finalizer` from the object called `name`, reading it again after a conflict. Ok when the object, or
/// its finalizer, is already gone. For callers without a fresh copy (teardown); the controller, which may not
/// `get`, patches from the copy its reconcile read and lets a conflict fail that pass.
pub async fn remove<K>(api: &Api<K>, name: &str, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut attempt = 0;
    loop {
        let Some(object) = api.get_opt(name).await? else { return Ok(()) };
        let Some(patch) = removing(&object, finalizer) else { return Ok(()) };
        match api.patch(name, &PatchParams::default(), &patch).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(error) if is_stale_list(&error) && attempt < CONFLICT_RETRIES => attempt += 1,
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ObjectMeta;

    use super::*;

    fn node(finalizers: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                resource_version: Some("42".into()),
                finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn removing_keeps_other_finalizers_and_holds_only_on_the_list_read() {
        let patch = removing(&node(&["other.io/keep", "karpenter.sh/termination"]), "karpenter.sh/termination");
        let Some(Patch::Json(operations)) = patch else { panic!("a JSON patch: {patch:?}") };
        assert_eq!(
            serde_json::to_value(operations).expect("serializable"),
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["other.io/keep", "karpenter.sh/termination"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["other.io/keep"]},
            ])
        );
        assert!(removing(&node(&["other.io/keep"]), "karpenter.sh/termination").is_none());
    }

    #[test]
    fn adding_appends_once_and_pins_the_version_read() {
        let patch = adding(&node(&["other.io/keep"]), "karpenter.sh/termination");
        assert_eq!(
            patch,
            Some(json!({"metadata": {
                "finalizers": ["other.io/keep", "karpenter.sh/termination"],
                "resourceVersion": "42",
            }}))
        );
        assert_eq!(adding(&node(&["karpenter.sh/termination"]), "karpenter.sh/termination"), None);
    }
}
