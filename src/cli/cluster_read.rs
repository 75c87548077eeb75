//! What the commands that read a live cluster share (`status`, `explain`): the current kubeconfig context, every
//! object of a kind page by page, and the cluster's region.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::{CliError, GlobalArgs};
use crate::bootstrap::kube_target::KubeTarget;
use crate::catalog::pricing::HOME_REGION;
use crate::names::REGION_LABEL;

/// The cluster of the current kubeconfig context (or the in-cluster one).
pub async fn connect() -> Result<KubeTarget, CliError> {
    KubeTarget::infer().await.map_err(|reason| CliError::NoKubeconfig { reason })
}

/// Every object of a kind in every namespace, page by page. `what` names the kind in errors; a Karpenter kind the
/// server does not serve says how to install it.
pub async fn list<K>(kube: &kube::Client, what: &'static str) -> Result<Vec<K>, CliError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(kube.clone());
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.map_err(|source| {
            let not_served = matches!(&source, kube::Error::Api(status) if status.code == 404);
            if not_served && ["nodepools", "nodeclaims", "ec2nodeclasses"].contains(&what) {
                CliError::KarpenterApiMissing { what }
            } else {
                CliError::KubeList { what, source }
            }
        })?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

/// `--region`, else the region the nodes are labelled with, else us-east-1.
pub fn region<'n>(global: &GlobalArgs, mut nodes: impl Iterator<Item = &'n Node>) -> String {
    global
        .region
        .clone()
        .or_else(|| nodes.find_map(|n| n.labels().get(REGION_LABEL).cloned()))
        .unwrap_or_else(|| HOME_REGION.to_string())
}
