//! A JSON patch that rewrites one list of an object only while the list is still what was read: another writer's
//! entry is never dropped, and a change elsewhere in the object since (a kubelet's heartbeat on a Node, every few
//! seconds) does not fail it, where a pinned resourceVersion would fail it for as long as the copy read lags
//! behind the API server (after a burst, for minutes). Finalizers and a Node's taints are written this way.

use json_patch::jsonptr::Pointer;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation, TestOperation};
use kube::api::Patch;
use serde::Serialize;
use serde_json::json;

/// Writes `written` at `path` if `path` still holds `read` (`None`: the list is still absent).
pub fn rewriting_list<T: Serialize>(path: &'static str, read: Option<&[T]>, written: &[T]) -> Patch<()> {
    let path = || Pointer::from_static(path).to_buf();
    let write = match read {
        Some(_) => PatchOperation::Replace(ReplaceOperation { path: path(), value: json!(written) }),
        None => PatchOperation::Add(AddOperation { path: path(), value: json!(written) }),
    };
    Patch::Json(json_patch::Patch(vec![
        PatchOperation::Test(TestOperation { path: path(), value: json!(read) }),
        write,
    ]))
}

/// The API server's answer to a `rewriting_list` patch whose list changed since it was read: its test failed.
pub fn is_stale_list(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 422)
}
