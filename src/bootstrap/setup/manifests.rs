//! `--apply`: the CRDs, then the EC2NodeClass and NodePools `nodesmith render` makes for this cluster, server-side
//! applied. An object the apply would not change is reported unchanged and not written.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Setup, SetupError};
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::nodepool::NodePool;
use crate::bootstrap::report::Action;
use crate::render::{NodeClassValues, render_nodeclasses};

const FIELD_MANAGER: &str = "nodesmith-setup";
const ESTABLISHED_WAIT: Duration = Duration::from_secs(30);

fn kube_error(what: &str) -> impl Fn(kube::Error) -> SetupError + '_ {
    move |e| SetupError::Kube(format!("{what}: {e}"))
}

impl Setup<'_> {
    pub(super) async fn apply_manifests(&mut self, discovery_value: &str) -> Result<(), SetupError> {
        let client = self.kube_client("--apply")?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut crds_missing = false;
        for generated in crate::apis::crds::all() {
            let action = self.apply_one(&crds, "crd", &generated.crd).await?;
            crds_missing |= action == Action::Created && !self.ledger.may_mutate();
            if self.ledger.may_mutate() {
                wait_established(&crds, &generated.crd.name_any()).await?;
            }
        }
        let values = NodeClassValues::for_cluster(&self.options.cluster, &self.names.node_role, discovery_value);
        let rendered = render_nodeclasses(&values).map_err(|e| SetupError::Kube(e.to_string()))?;
        for (file, yaml) in rendered {
            let invalid = |e: serde_yaml_ng::Error| SetupError::Kube(format!("rendered {file}: {e}"));
            if file.starts_with("ec2nodeclass") {
                let object: EC2NodeClass = serde_yaml_ng::from_str(&yaml).map_err(invalid)?;
                self.apply_rendered(&Api::all(client.clone()), "ec2nodeclass", &object, crds_missing).await?;
            } else {
                let object: NodePool = serde_yaml_ng::from_str(&yaml).map_err(invalid)?;
                self.apply_rendered(&Api::all(client.clone()), "nodepool", &object, crds_missing).await?;
            }
        }
        Ok(())
    }

    /// In a dry run before the CRDs exist the API server cannot even validate these: they would be created.
    async fn apply_rendered<K>(
        &mut self,
        api: &Api<K>,
        kind: &'static str,
        object: &K,
        crds_missing: bool,
    ) -> Result<(), SetupError>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    {
        if crds_missing {
            self.ledger.record(kind, object.name_any(), Action::Created, 1);
            return Ok(());
        }
        self.apply_one(api, kind, object).await.map(|_| ())
    }

    /// Server-side applies `object` unless a dry-run apply shows it would change nothing.
    async fn apply_one<K>(&mut self, api: &Api<K>, kind: &'static str, object: &K) -> Result<Action, SetupError>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    {
        let name = object.name_any();
        let what = format!("{kind} {name}");
        let current = api.get_opt(&name).await.map_err(kube_error(&what))?;
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = true;
        let would_be = api.patch(&name, &params, &Patch::Apply(object)).await.map_err(kube_error(&what))?;
        let action = match &current {
            Some(current) if current.resource_version() == would_be.resource_version() => Action::Unchanged,
            Some(_) => Action::Updated,
            None => Action::Created,
        };
        if action != Action::Unchanged && self.ledger.may_mutate() {
            params.dry_run = false;
            api.patch(&name, &params, &Patch::Apply(object)).await.map_err(kube_error(&what))?;
        }
        self.ledger.record(kind, name, action, u32::from(action != Action::Unchanged));
        Ok(action)
    }
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<(), SetupError> {
    let deadline = tokio::time::Instant::now() + ESTABLISHED_WAIT;
    loop {
        let crd = api.get(name).await.map_err(kube_error(name))?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Established" && c.status == "True") {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SetupError::Kube(format!("CRD {name} was not established within {ESTABLISHED_WAIT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
