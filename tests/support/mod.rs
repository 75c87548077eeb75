//! Connects tests to the running sandbox (`scripts/sandbox up`) and keeps tests that run in parallel apart.
//!
//! The connection comes from the environment `scripts/sandbox up` writes to `target/sandbox/env`; variables already
//! set in the process win, so `source target/sandbox/env && cargo test -- --ignored` and a bare
//! `cargo test -- --ignored` behave the same.
#![allow(dead_code)] // each test binary uses its own part of the support code

pub mod chart;
pub mod controller;
pub mod dashboards;
pub mod iam;
pub mod metrics;
pub mod prices;
pub mod yaml;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct Sandbox {
    pub sdk: aws_config::SdkConfig,
    pub kube: kube::Client,
    /// The API server `kube` talks to (what the sandbox's EKS clusters report as their endpoint).
    pub kube_server: String,
    /// The EKS cluster the sandbox plays (`demo`).
    pub cluster: String,
}

const ENV_KEYS: [&str; 15] = [
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "KUBECONFIG",
    "NODESMITH_SANDBOX_CLUSTER",
    "NODESMITH_SANDBOX_BIN",
    "NODESMITH_HELM",
    "NODESMITH_TERRAFORM",
    "NODESMITH_SERVICEMONITOR_CRD",
    "NODESMITH_PROMETHEUSRULE_CRD",
    "NODESMITH_PROMTOOL",
    "NODESMITH_AUDIT_LOG",
    "NODESMITH_IAM_LOG",
    "NODESMITH_IAM_SIMULATOR",
];

impl Sandbox {
    pub async fn connect() -> Result<Self> {
        let env = sandbox_env()?;
        let get = |key: &str| env.get(key).cloned().with_context(|| format!("{key} is not set by target/sandbox/env"));
        let endpoint = get("AWS_ENDPOINT_URL")?;
        if !endpoint.starts_with("http://127.") && !endpoint.starts_with("http://localhost") {
            bail!("AWS_ENDPOINT_URL={endpoint} is not the local sandbox; refusing to run tests against it");
        }
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(get("AWS_REGION")?))
            .credentials_provider(Credentials::new(
                get("AWS_ACCESS_KEY_ID")?,
                get("AWS_SECRET_ACCESS_KEY")?,
                None,
                None,
                "sandbox",
            ))
            .load()
            .await;
        let kubeconfig = Kubeconfig::read_from(get("KUBECONFIG")?).context("reading the sandbox kubeconfig")?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let kube_server = config.cluster_url.to_string();
        Ok(Self { sdk, kube: kube::Client::try_from(config)?, kube_server, cluster: get("NODESMITH_SANDBOX_CLUSTER")? })
    }

    /// A namespace of its own for one test; delete it with [`Sandbox::delete_namespace`].
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(self.kube.clone()).create(&PostParams::default(), &namespace).await?;
        // Pods are refused until the namespace's default ServiceAccount exists.
        let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(self.kube.clone(), &name);
        wait_until("the namespace's default ServiceAccount", Duration::from_secs(60), || async {
            Ok(accounts.get_opt("default").await?.map(|_| ()))
        })
        .await?;
        Ok(name)
    }

    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        Api::<Namespace>::all(self.kube.clone()).delete(name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// The fault-injecting proxy in front of the sandbox's moto, with this plan: its URL and what it records.
pub async fn aws_fault_proxy(
    plan: nodesmith_sandbox::fault_proxy::FaultPlan,
) -> Result<(String, std::sync::Arc<nodesmith_sandbox::fault_proxy::FaultLog>)> {
    let moto = sandbox_env()?.get("AWS_ENDPOINT_URL").cloned().context("no moto endpoint")?;
    nodesmith_sandbox::fault_proxy::start(&moto, plan).await
}

/// The names setup gives `cluster`'s resources in the sandbox's region.
pub fn names(cluster: &str) -> nodesmith::cloud::resource_names::ClusterNames {
    let region = sandbox_env().ok().and_then(|e| e.get("AWS_REGION").cloned()).unwrap_or_else(|| "us-east-1".into());
    nodesmith::cloud::resource_names::ClusterNames::for_cluster(cluster, &region)
}

/// Waits until the API server serves the CRD `name` (its `Established` condition).
pub async fn wait_established(kube: &kube::Client, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(kube.clone());
    wait_until(&format!("CRD {name} established"), Duration::from_secs(60), || async {
        let crd = api.get(name).await?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
    })
    .await
}

/// The nodesmith binary under test.
pub fn nodesmith_binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_nodesmith"))
}

/// The nodesmith binary under test, in the sandbox's environment (moto's endpoint and keys, the kubeconfig).
pub fn nodesmith() -> Result<std::process::Command> {
    let mut command = nodesmith_binary();
    command.envs(sandbox_env()?);
    Ok(command)
}

/// The sandbox environment: `target/sandbox/env`, overridden by the process environment.
pub fn sandbox_env() -> Result<HashMap<String, String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sandbox/env");
    let mut env = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines() {
            if let Some((key, value)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.insert(key.to_string(), value.trim_matches('"').to_string());
            }
        }
    }
    for key in ENV_KEYS {
        if let Ok(value) = std::env::var(key) {
            env.insert(key.to_string(), value);
        }
    }
    if env.is_empty() {
        bail!("the sandbox is not running: start it with `make sandbox-up` (or run `make test`)");
    }
    Ok(env)
}

/// Setup's options for a test cluster: IRSA for nodesmith/nodesmith, nodes let in through aws-auth (moto serves
/// no EKS access entries), cluster-scoped discovery, /22 subnets.
pub fn setup_options(sandbox: &Sandbox, cluster: &str) -> nodesmith::bootstrap::setup::SetupOptions {
    use nodesmith::bootstrap::setup::{DiscoveryValue, Identity, NodeAccess, SetupOptions};
    SetupOptions {
        cluster: cluster.to_string(),
        namespace: "nodesmith".into(),
        service_account: "nodesmith".into(),
        identity: Identity::Irsa,
        node_access: NodeAccess::AwsAuth,
        discovery: DiscoveryValue::Cluster,
        create_subnets: Some(22),
        apply: false,
        dry_run: false,
        kube: Some(nodesmith::bootstrap::kube_target::KubeTarget {
            client: sandbox.kube.clone(),
            server: sandbox.kube_server.clone(),
        }),
        progress: None,
    }
}

/// Teardown of `cluster` through the AWS API only: the sandbox's clusters share one API server, which the tests
/// that use this leave alone.
pub fn teardown_without_kubernetes(cluster: &str) -> nodesmith::bootstrap::teardown::TeardownOptions {
    nodesmith::bootstrap::teardown::TeardownOptions {
        cluster: cluster.to_string(),
        dry_run: false,
        kube: Err("none".into()),
        skip_kubernetes: true,
        progress: None,
    }
}

/// A name no other test, or other run, uses: `prefix-<pid>-<n>`, valid as a Kubernetes name and an AWS name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Polls `check` every half second until it returns `Some`, or fails after `timeout` saying what it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
