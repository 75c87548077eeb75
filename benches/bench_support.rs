//! What the benchmarks that drive a sandbox share (`controller-bench`, `side-by-side`): waiting, the cluster's
//! setup and CRDs, a test namespace, percentiles, and a process's resident memory from /proc.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut failures = 0;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => failures = 0,
            // A connection the API server closed under load fails one look now and then ("connection closed
            // before message completed"): looked again; five failures in a row are the answer.
            Err(error) if failures < 4 => {
                failures += 1;
                eprintln!("waiting for {what}, looking again: {error:#}");
            }
            Err(error) => return Err(error),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn namespace(kube: &kube::Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(kube.clone()).create(&PostParams::default(), &ns).await?;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(kube.clone(), name);
    wait_until("the default ServiceAccount", Duration::from_secs(60), || async {
        Ok(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The sandbox cluster with setup run on it (subnets of that prefix length if asked) and the CRDs installed;
/// returns its name and the SDK configuration.
pub async fn prepare_cluster(
    kube: &kube::Client,
    create_subnets: Option<u8>,
) -> Result<(String, aws_config::SdkConfig)> {
    let cluster = std::env::var("NODESMITH_SANDBOX_CLUSTER").unwrap_or_else(|_| "demo".into());
    let sdk = nodesmith::aws::sdk_config(None).await;
    let options = nodesmith::bootstrap::setup::SetupOptions {
        cluster: cluster.clone(),
        namespace: "nodesmith".into(),
        service_account: "nodesmith".into(),
        identity: nodesmith::bootstrap::setup::Identity::Irsa,
        // moto serves no EKS access entries: the sandbox lets nodes in through aws-auth.
        node_access: nodesmith::bootstrap::setup::NodeAccess::AwsAuth,
        discovery: nodesmith::bootstrap::setup::DiscoveryValue::Cluster,
        create_subnets,
        apply: false,
        dry_run: false,
        kube: Some(nodesmith::bootstrap::kube_target::KubeTarget::infer().await.map_err(anyhow::Error::msg)?),
        progress: None,
    };
    nodesmith::bootstrap::setup::run(&sdk, &options).await?;
    install_crds(kube).await?;
    Ok((cluster, sdk))
}

/// The Karpenter v1 CRDs, applied and given a moment to be served: the controller does not become ready without.
pub async fn install_crds(kube: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    for crd in nodesmith::apis::crds::all() {
        crds.patch(&crd.crd.name_any(), &PatchParams::apply("nodesmith").force(), &Patch::Apply(&crd.crd)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

pub fn rss_kib(pid: u32) -> Result<BTreeMap<String, u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter(|l| ["VmRSS", "VmHWM", "RssAnon", "RssFile"].iter().any(|k| l.starts_with(k)))
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            Some((key.to_string(), value.trim().trim_end_matches(" kB").parse().ok()?))
        })
        .collect())
}

/// GET /readyz on the health port: true on 200.
pub async fn http_ready(port: u16) -> Result<bool> {
    let response = http_get(port, "/readyz").await?;
    Ok(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"))
}

/// GET `path` on a local port: the whole response, headers included.
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The region the bench's sandbox plays (IAM names carry it).
pub fn sandbox_region() -> String {
    std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())
}
