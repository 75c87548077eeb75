//! The Helm chart in the sandbox: render it with the pinned Helm, apply (or dry-run) what it renders, and run
//! the controller as the chart's ServiceAccount so that the end-to-end tests exercise the chart's RBAC.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::yaml::parse_documents;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;

use super::{Sandbox, sandbox_env};

pub const CHART_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/nodesmith");

/// The Kubernetes version charts are rendered for (the sandbox's).
const KUBE_VERSION: &str = "1.36.3";

/// A setting of `helm template --set`.
pub type HelmValue<'a> = (&'a str, &'a str);

/// The Helm binary `scripts/sandbox` built (NODESMITH_HELM).
pub fn helm() -> Result<PathBuf> {
    let env = sandbox_env()?;
    let path =
        env.get("NODESMITH_HELM").context("NODESMITH_HELM is not set: restart the sandbox (scripts/sandbox up)")?;
    Ok(PathBuf::from(path))
}

/// Runs Helm with `args`; the output of a success, or what a failure printed (`helm lint` reports on stdout).
pub fn run_helm(args: &[&str]) -> Result<std::result::Result<String, String>> {
    let output = Command::new(helm()?).args(args).output().context("running helm")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok(if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
    })
}

/// `helm template` of the chart as release `release` in `namespace`, as JSON objects.
pub fn render(
    release: &str,
    namespace: &str,
    values: &[HelmValue],
    include_crds: bool,
) -> Result<Vec<serde_json::Value>> {
    render_with_files(release, namespace, &[], values, include_crds)
}

/// [`render`], with values files (`-f`) under the `--set` values.
pub fn render_with_files(
    release: &str,
    namespace: &str,
    values_files: &[&Path],
    values: &[HelmValue],
    include_crds: bool,
) -> Result<Vec<serde_json::Value>> {
    let mut args = vec!["template", release, CHART_DIR, "--namespace", namespace, "--kube-version", KUBE_VERSION];
    if include_crds {
        args.push("--include-crds");
    }
    for file in values_files {
        args.extend(["--values", file.to_str().context("a values file path that is not UTF-8")?]);
    }
    let sets: Vec<String> = values.iter().map(|(key, value)| format!("{key}={value}")).collect();
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let yaml = match run_helm(&args)? {
        Ok(yaml) => yaml,
        Err(error) => bail!("helm template failed: {error}"),
    };
    parse_documents(&yaml)
}

/// Server-side applies `object` (with `dry_run`, only validates it: admission, schema, CEL).
pub async fn apply(kube: &kube::Client, object: &serde_json::Value, dry_run: bool) -> Result<()> {
    let mut params = PatchParams::apply("nodesmith-tests").force();
    params.dry_run = dry_run;
    apply_with(kube, object, &params).await
}

/// Server-side applies `object` with `params`.
pub async fn apply_with(kube: &kube::Client, object: &serde_json::Value, params: &PatchParams) -> Result<()> {
    let (api, name, kind) = api_for(kube, object).await?;
    let dry = if params.dry_run { " (dry run)" } else { "" };
    api.patch(&name, params, &Patch::Apply(object)).await.with_context(|| format!("applying {kind} {name}{dry}"))?;
    Ok(())
}

/// Deletes `object` (found by its kind and name).
pub async fn delete(kube: &kube::Client, object: &serde_json::Value) -> Result<()> {
    let (api, name, kind) = api_for(kube, object).await?;
    api.delete(&name, &DeleteParams::default()).await.with_context(|| format!("deleting {kind} {name}"))?;
    Ok(())
}

/// The API of `object`'s kind (found by discovery) in its namespace, its name and kind.
async fn api_for(kube: &kube::Client, object: &serde_json::Value) -> Result<(Api<DynamicObject>, String, String)> {
    let object: DynamicObject = serde_json::from_value(object.clone())?;
    let types = object.types.clone().context("an object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (resource, capabilities) = kube::discovery::pinned_kind(kube, &gvk)
        .await
        .with_context(|| format!("the API server does not serve {}", types.kind))?;
    let name = object.metadata.name.clone().context("an object without a name")?;
    let api: Api<DynamicObject> = match (capabilities.scope, object.metadata.namespace.as_deref()) {
        (Scope::Namespaced, Some(namespace)) => Api::namespaced_with(kube.clone(), namespace, &resource),
        (Scope::Namespaced, None) => bail!("{} {name} has no namespace", types.kind),
        (Scope::Cluster, _) => Api::all_with(kube.clone(), &resource),
    };
    Ok((api, name, types.kind))
}

/// The kinds that make up the chart's identity and permissions.
const RBAC_KINDS: [&str; 5] = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

/// Installs the chart's ServiceAccount and RBAC as release `namespace` in `namespace`, and writes a kubeconfig that
/// authenticates as that ServiceAccount with a bound token; returns its path (also [`kubeconfig_path`]).
pub async fn install_controller_identity(sandbox: &Sandbox, namespace: &str) -> Result<PathBuf> {
    let objects = render(namespace, namespace, &[("settings.clusterName", &sandbox.cluster)], false)?;
    let mut service_account = None;
    for object in objects.iter().filter(|o| RBAC_KINDS.contains(&o["kind"].as_str().unwrap_or_default())) {
        apply(&sandbox.kube, object, false).await?;
        if object["kind"] == "ServiceAccount" {
            service_account = object["metadata"]["name"].as_str().map(str::to_string);
        }
    }
    let service_account = service_account.context("the chart rendered no ServiceAccount")?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(sandbox.kube.clone(), namespace);
    let token = accounts
        .create_token_request(&service_account, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("a TokenRequest without a token")?;
    let path = kubeconfig_path(namespace);
    write_token_kubeconfig(&path, &token)?;
    Ok(path)
}

/// Where [`install_controller_identity`] writes the ServiceAccount's kubeconfig for `namespace`.
pub fn kubeconfig_path(namespace: &str) -> PathBuf {
    PathBuf::from(format!("{}/target/chart-sa-{namespace}.kubeconfig", env!("CARGO_MANIFEST_DIR")))
}

/// A kubeconfig for the sandbox's API server (address and CA from the admin kubeconfig) that presents `token`.
fn write_token_kubeconfig(path: &Path, token: &str) -> Result<()> {
    let env = sandbox_env()?;
    let admin = kube::config::Kubeconfig::read_from(env.get("KUBECONFIG").context("KUBECONFIG is not set")?)?;
    let cluster =
        admin.clusters.first().and_then(|c| c.cluster.clone()).context("the admin kubeconfig has no cluster")?;
    let mut cluster_fields = serde_json::json!({ "server": cluster.server });
    if let Some(ca) = cluster.certificate_authority {
        cluster_fields["certificate-authority"] = ca.into();
    }
    if let Some(ca) = cluster.certificate_authority_data {
        cluster_fields["certificate-authority-data"] = ca.into();
    }
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "sandbox", "cluster": cluster_fields }],
        "users": [{ "name": "chart-service-account", "user": { "token": token } }],
        "contexts": [{ "name": "chart", "context": { "cluster": "sandbox", "user": "chart-service-account" } }],
        "current-context": "chart",
    });
    std::fs::write(path, serde_yaml_ng::to_string(&kubeconfig)?)?;
    Ok(())
}
