//! The controller under test: its process, its namespace and identity, the CRDs, and the NodePools, workloads
//! and clean-up the controller tests share (tests/sandbox_controller.rs, tests/sandbox_disruption.rs).

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use nodesmith::apis::ec2nodeclass::EC2NodeClass;
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::apis::nodepool::NodePool;
use nodesmith::bootstrap::setup;
use nodesmith::render::{NodeClassValues, render_nodeclasses};

use super::{Sandbox, sandbox_env, setup_options, unique_name, wait_until};

pub static CONTROLLER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const TEST_LABEL: &str = "nodesmith.dev/test";
/// An x86_64 and an arm64 AMI moto serves.
pub const AMI: &str = "ami-12c6146b";
/// What `al2023@latest` resolves to in the sandbox (the SSM parameters tests/sandbox/moto_server.py seeds).
pub const AL2023_X86_AMI: &str = "ami-03c3da4cfa8e8943a";
pub const ARM_AMI: &str = "ami-08a311a6aaa3cd94a";
pub const RUN_WAIT: Duration = Duration::from_secs(120);

/// The controller binary, killed when dropped.
pub struct ControllerProcess {
    child: std::sync::Mutex<Child>,
    pub log: std::path::PathBuf,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl ControllerProcess {
    /// SIGKILL: no chance to finish anything.
    pub fn kill(&self) {
        if let Ok(mut child) = self.child.lock() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// One sample of the controller's `/metrics`, 0 when absent.
    pub async fn metric(&self, sample: &str) -> Result<f64> {
        let text = http_get(self.metrics_port, "/metrics").await?;
        Ok(text
            .lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0))
    }

    /// Whether `/readyz` answers 200.
    pub async fn is_ready(&self) -> Result<bool> {
        Ok(http_status(self.health_port, "/readyz").await? == 200)
    }

    pub fn log_lines_with(&self, text: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| l.contains(text)).count()
    }

    /// The last `count` lines of its log, for a failed test's output (CI keeps nothing else of a run).
    pub fn log_tail(&self, count: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET on loopback (the controller's metrics and health servers).
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    let response = http_response(port, path).await?;
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// The status code of a plain HTTP GET on loopback.
pub async fn http_status(port: u16, path: &str) -> Result<u16> {
    let response = http_response(port, path).await?;
    let code = response.split(' ').nth(1).and_then(|c| c.parse().ok());
    code.with_context(|| format!("no HTTP status in {response:?}"))
}

async fn http_response(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `kube_endpoint` replaces the API server with a proxy in front of it that already acts as some identity (e.g.
/// `nodesmith_sandbox::kube_fault_proxy`, given `controller_kube_client` for the controller's ServiceAccount);
/// `namespace` is then only the Lease namespace, and need not exist.
pub fn start_controller_with(
    cluster: &str,
    namespace: &str,
    identity: &str,
    aws_endpoint: Option<&str>,
    kube_endpoint: Option<&str>,
    extra_args: &[&str],
) -> Result<ControllerProcess> {
    let mut env = sandbox_env()?;
    // The controller runs as the Helm chart's ServiceAccount, bound by the chart's RBAC: these tests show that
    // RBAC suffices (and tests/sandbox_chart.rs, from the audit log, that it grants nothing unused).
    let mut kubeconfig = super::chart::kubeconfig_path(namespace);
    if kube_endpoint.is_none() && !kubeconfig.exists() {
        bail!("no ServiceAccount kubeconfig for {namespace}: create the namespace with controller_namespace()");
    }
    if let Some(server) = kube_endpoint {
        kubeconfig =
            std::path::PathBuf::from(format!("{}/target/proxied-{identity}.kubeconfig", env!("CARGO_MANIFEST_DIR")));
        let proxied = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": server}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        });
        std::fs::write(&kubeconfig, serde_yaml_ng::to_string(&proxied)?)?;
    }
    env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    // On AWS as the role setup made for it, so that moto records its requests for the IAM check
    // (tests/sandbox_iam.rs) against that role's policies.
    let credentials = assume_controller_role(&env, cluster)?;
    env.insert("AWS_ACCESS_KEY_ID".into(), credentials.access_key_id);
    env.insert("AWS_SECRET_ACCESS_KEY".into(), credentials.secret_access_key);
    env.insert("AWS_SESSION_TOKEN".into(), credentials.session_token);
    if let Some(endpoint) = aws_endpoint {
        env.insert("AWS_ENDPOINT_URL".into(), endpoint.into());
    }
    let log_path = std::path::PathBuf::from(format!("{}/target/controller-{identity}.log", env!("CARGO_MANIFEST_DIR")));
    let log = std::fs::File::create(&log_path)?;
    let (metrics_port, health_port) = (free_port()?, free_port()?);
    // NODESMITH_TEST_LOG_LEVEL=nodesmith=debug keeps the plans' debug lines when a test is being looked into.
    let log_level = std::env::var("NODESMITH_TEST_LOG_LEVEL").unwrap_or_else(|_| "nodesmith=info".into());
    let child = super::nodesmith_binary()
        .args(["controller", "--cluster-name", cluster, "--namespace", namespace, "--identity", identity])
        .args(["--metrics-port", &metrics_port.to_string(), "--health-port", &health_port.to_string()])
        .args(extra_args)
        .args(["--batch-idle-duration", "500ms", "--batch-max-duration", "3s", "--log-level", &log_level])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(ControllerProcess { child: std::sync::Mutex::new(child), log: log_path, metrics_port, health_port })
}

/// A client acting as the controller's ServiceAccount in `namespace` (what a proxy in front of the API server
/// forwards the controller's requests with).
pub async fn controller_kube_client(namespace: &str) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(super::chart::kubeconfig_path(namespace))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

/// STS credentials of the controller role setup made for `cluster` (moto's STS, with the sandbox's own keys).
pub fn assume_controller_role(
    env: &std::collections::HashMap<String, String>,
    cluster: &str,
) -> Result<RoleCredentials> {
    let role = super::names(cluster).controller_role;
    assume_role(env, &format!("arn:aws:iam::{SANDBOX_ACCOUNT}:role/{role}"), CONTROLLER_SESSION)
}

/// moto's account.
pub const SANDBOX_ACCOUNT: &str = "123456789012";
/// The role session name of every controller the tests start: the IAM check evaluates these sessions' requests.
pub const CONTROLLER_SESSION: &str = "nodesmith-controller";

/// `sts:AssumeRole` against the sandbox; on a thread of its own, so that sync callers inside async tests may use it.
pub fn assume_role(
    env: &std::collections::HashMap<String, String>,
    role_arn: &str,
    session: &str,
) -> Result<RoleCredentials> {
    let get = |key: &str| env.get(key).cloned().unwrap_or_default();
    let (endpoint, region, key, secret) =
        (get("AWS_ENDPOINT_URL"), get("AWS_REGION"), get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"));
    let (role_arn, session) = (role_arn.to_string(), session.to_string());
    std::thread::spawn(move || -> Result<RoleCredentials> {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async move {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(aws_config::Region::new(region))
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(key, secret, None, None, "sandbox"))
                .load()
                .await;
            let assumed = aws_sdk_sts::Client::new(&sdk)
                .assume_role()
                .role_arn(&role_arn)
                .role_session_name(session)
                .send()
                .await?;
            let credentials = assumed.credentials().context("AssumeRole answered without credentials")?;
            Ok(RoleCredentials {
                access_key_id: credentials.access_key_id().to_string(),
                secret_access_key: credentials.secret_access_key().to_string(),
                session_token: credentials.session_token().to_string(),
            })
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the AssumeRole thread panicked"))?
}

/// The controller's own namespace (its Lease), holding the chart's ServiceAccount and RBAC, installed as a Helm
/// release of the same name.
pub async fn controller_namespace(sandbox: &Sandbox) -> Result<String> {
    let namespace = sandbox.namespace("ctl-lease").await?;
    super::chart::install_controller_identity(sandbox, &namespace).await?;
    Ok(namespace)
}

/// Server-side applies the generated CRDs and waits until the API server serves them.
pub async fn install_crds(sandbox: &Sandbox) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(sandbox.kube.clone());
    for crd in nodesmith::apis::crds::all() {
        let name = crd.crd.name_any();
        api.patch(&name, &PatchParams::apply("nodesmith").force(), &Patch::Apply(&crd.crd)).await?;
        super::wait_established(&sandbox.kube, &name).await?;
    }
    Ok(())
}

/// The EC2NodeClass and default NodePool `nodesmith render` makes for the demo cluster (AL2023 alias, discovery
/// tags, spot and on-demand c/m/r), named for the test and labelled so that only its pods land on its nodes.
pub async fn rendered_nodeclass_and_pool(sandbox: &Sandbox, test: &str) -> Result<()> {
    let cluster = &sandbox.cluster;
    let values = NodeClassValues {
        name: test.to_string(),
        nodeclass: test.to_string(),
        ..NodeClassValues::for_cluster(cluster, &super::names(cluster).node_role, cluster)
    };
    for (file, yaml) in render_nodeclasses(&values)? {
        let mut manifest: serde_json::Value = serde_yaml_ng::from_str(&yaml)?;
        match file {
            "ec2nodeclass.yaml" => {
                let class: EC2NodeClass = serde_json::from_value(manifest)?;
                Api::<EC2NodeClass>::all(sandbox.kube.clone()).create(&PostParams::default(), &class).await?;
            }
            "nodepool-default.yaml" => {
                manifest["metadata"]["name"] = test.into();
                manifest["spec"]["template"]["metadata"]["labels"][TEST_LABEL] = test.into();
                let pool: NodePool = serde_json::from_value(manifest)?;
                Api::<NodePool>::all(sandbox.kube.clone()).create(&PostParams::default(), &pool).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// An EC2NodeClass for the demo cluster (discovery tags from setup) and a NodePool over it whose nodes carry
/// `nodesmith.dev/test=<test>`, so only this test's pods land on them.
pub async fn nodeclass_and_pool(
    sandbox: &Sandbox,
    test: &str,
    requirements: serde_json::Value,
    cpu_limit: &str,
) -> Result<()> {
    // Tests of provisioning keep their nodes: consolidation is the disruption tests' subject.
    nodeclass_and_pool_with(sandbox, test, requirements, cpu_limit, serde_json::json!({"consolidateAfter": "Never"}))
        .await
}

/// `nodeclass_and_pool`, with the NodePool's `spec.disruption`.
pub async fn nodeclass_and_pool_with(
    sandbox: &Sandbox,
    test: &str,
    requirements: serde_json::Value,
    cpu_limit: &str,
    disruption: serde_json::Value,
) -> Result<()> {
    let cluster = &sandbox.cluster;
    let class: EC2NodeClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": test},
        "spec": {
            "role": super::names(cluster).node_role,
            "amiFamily": "AL2023",
            "amiSelectorTerms": [{"id": AMI}, {"id": ARM_AMI}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": cluster}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": cluster}}],
        }
    }))?;
    Api::<EC2NodeClass>::all(sandbox.kube.clone()).create(&PostParams::default(), &class).await?;
    let pool: NodePool = serde_json::from_value(serde_json::json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": test},
        "spec": {
            "template": {
                "metadata": {"labels": {TEST_LABEL: test}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": test},
                    "requirements": requirements,
                }
            },
            "limits": {"cpu": cpu_limit},
            "disruption": disruption,
        }
    }))?;
    Api::<NodePool>::all(sandbox.kube.clone()).create(&PostParams::default(), &pool).await?;
    Ok(())
}

pub async fn deployment(
    sandbox: &Sandbox,
    namespace: &str,
    test: &str,
    replicas: i32,
    cpu: &str,
    memory: &str,
) -> Result<()> {
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {TEST_LABEL: test},
                    "containers": [{
                        "name": "app",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}},
                    }],
                }
            }
        }
    }))?;
    Api::<Deployment>::namespaced(sandbox.kube.clone(), namespace).create(&PostParams::default(), &deployment).await?;
    Ok(())
}

pub async fn running_pods(sandbox: &Sandbox, namespace: &str) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(sandbox.kube.clone(), namespace).list(&ListParams::default()).await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect())
}

pub async fn nodeclaims_of(sandbox: &Sandbox, pool: &str) -> Result<Vec<NodeClaim>> {
    let api: Api<NodeClaim> = Api::all(sandbox.kube.clone());
    Ok(api.list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}"))).await?.items)
}

/// The pool's NodeClaims once every one of them is initialized (its node registered and ready).
pub async fn initialized_nodeclaims(sandbox: &Sandbox, pool: &str) -> Result<Vec<NodeClaim>> {
    wait_until("the NodeClaims to be initialized", RUN_WAIT, || async {
        let claims = nodeclaims_of(sandbox, pool).await?;
        let initialized = claims.iter().all(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Initialized" && c.status == "True"))
        });
        Ok((initialized && !claims.is_empty()).then_some(claims))
    })
    .await
}

/// Deletes the test's objects and waits until its NodeClaims, and so its instances and nodes, are gone. The
/// NodePool goes first: deleting it deletes its NodeClaims (owner references), and the controller launches no
/// replacement for pods of a pool that is gone.
pub async fn clean_up(sandbox: &Sandbox, namespace: &str, test: &str) -> Result<()> {
    sandbox.delete_namespace(namespace).await?;
    let pools: Api<NodePool> = Api::all(sandbox.kube.clone());
    match pools.delete(test, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    let claims: Api<NodeClaim> = Api::all(sandbox.kube.clone());
    wait_until("the test's NodeClaims to be terminated", RUN_WAIT, || async {
        let left = nodeclaims_of(sandbox, test).await?;
        for claim in left.iter().filter(|c| c.metadata.deletion_timestamp.is_none()) {
            claims.delete(&claim.name_any(), &DeleteParams::default()).await.ok();
        }
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    match Api::<EC2NodeClass>::all(sandbox.kube.clone()).delete(test, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        // A test made of `another_pool`s only has no class of its own.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The pool most controller tests use: on-demand c and m, amd64.
pub fn on_demand_general_purpose() -> serde_json::Value {
    serde_json::json!([
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
        {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
    ])
}

/// One controller test on the shared cluster (linkerd's `with_temp_ns`, for a controller): its turn, the sandbox
/// with setup run and the CRDs served, a name for its EC2NodeClass and NodePool, a namespace for its pods and one
/// for its controllers (the chart's ServiceAccount and RBAC). `run` cleans all of it up, whatever the story did.
pub struct ControllerTest {
    pub sandbox: Sandbox,
    /// The test's EC2NodeClass and NodePool, and the `TEST_LABEL` value its pods select.
    pub name: String,
    /// Where the test's pods go.
    pub namespace: String,
    /// Where its controllers run and lead (their Lease).
    pub controller_namespace: String,
    /// Running until the test is cleaned up: clean-up needs a controller to drain and terminate.
    controllers: std::sync::Mutex<Vec<Arc<ControllerProcess>>>,
    /// Pools and namespaces beside the test's own, cleaned up with it.
    more_pools: std::sync::Mutex<Vec<(String, String)>>,
    // Last: the next test starts once this one is cleaned up.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// How `ControllerTest::start` runs a controller; the default is the plain sandbox controller named for the test.
#[derive(Default)]
pub struct Start<'a> {
    /// Its leader-election identity (default: the test's name).
    pub identity: Option<&'a str>,
    /// In place of moto (e.g. the fault proxy).
    pub aws_endpoint: Option<&'a str>,
    /// In place of the API server (see `start_controller_with`).
    pub kube_endpoint: Option<&'a str>,
    pub args: &'a [&'a str],
}

impl ControllerTest {
    /// Waits for its turn, runs setup, installs the CRDs and makes the test's namespaces; no pool yet.
    pub async fn new(prefix: &str) -> Result<Self> {
        let turn = CONTROLLER_TURN.lock().await;
        let sandbox = Sandbox::connect().await?;
        setup::run(&sandbox.sdk, &setup_options(&sandbox, &sandbox.cluster)).await?;
        install_crds(&sandbox).await?;
        let name = unique_name(prefix);
        let namespace = sandbox.namespace(prefix).await?;
        let controller_namespace = controller_namespace(&sandbox).await?;
        Ok(Self {
            sandbox,
            name,
            namespace,
            controller_namespace,
            controllers: std::sync::Mutex::default(),
            more_pools: std::sync::Mutex::default(),
            _turn: turn,
        })
    }

    /// `new`, with the test's pool over `on_demand_general_purpose`.
    pub async fn with_simple_pool(prefix: &str) -> Result<Self> {
        let test = Self::new(prefix).await?;
        nodeclass_and_pool(&test.sandbox, &test.name, on_demand_general_purpose(), "1000").await?;
        Ok(test)
    }

    /// A name for another EC2NodeClass and NodePool, and a namespace for its pods, cleaned up with the test's.
    pub async fn another_pool(&self, prefix: &str) -> Result<(String, String)> {
        let pool = (unique_name(prefix), self.sandbox.namespace(prefix).await?);
        self.more_pools.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(pool.clone());
        Ok(pool)
    }

    /// The plain controller of the test.
    pub fn start_controller(&self) -> Result<Arc<ControllerProcess>> {
        self.start(Start::default())
    }

    /// A controller that runs until the test is cleaned up (or is killed).
    pub fn start(&self, start: Start<'_>) -> Result<Arc<ControllerProcess>> {
        let controller = Arc::new(start_controller_with(
            &self.sandbox.cluster,
            &self.controller_namespace,
            start.identity.unwrap_or(&self.name),
            start.aws_endpoint,
            start.kube_endpoint,
            start.args,
        )?);
        self.controllers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(controller.clone());
        Ok(controller)
    }

    /// Runs `story`, then, whatever it returned, deletes every pool and namespace of the test while its controllers
    /// still run, waits until their NodeClaims (and so instances and nodes) are gone, and stops the controllers.
    /// The story's error comes first.
    pub async fn run(self, story: impl AsyncFnOnce(&Self) -> Result<()>) -> Result<()> {
        let result = story(&self).await;
        if result.is_err()
            && let Ok(controllers) = self.controllers.lock()
        {
            for controller in controllers.iter() {
                eprintln!("--- the last lines of {}:\n{}", controller.log.display(), controller.log_tail(60));
            }
        }
        let more = self.more_pools.lock().map(|p| p.clone()).unwrap_or_default();
        let mut cleaned = clean_up(&self.sandbox, &self.namespace, &self.name).await;
        for (pool, namespace) in more {
            cleaned = cleaned.and(clean_up(&self.sandbox, &namespace, &pool).await);
        }
        if let Ok(mut controllers) = self.controllers.lock() {
            controllers.clear();
        }
        let deleted = self.sandbox.delete_namespace(&self.controller_namespace).await;
        result.and(cleaned).and(deleted)
    }
}

/// Live instances (pending or running) launched for this pool, by NodeClaim tag.
pub async fn live_instances(sandbox: &Sandbox, pool: &str) -> Result<Vec<(String, String)>> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let described = ec2
        .describe_instances()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:karpenter.sh/nodepool").values(pool).build())
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await?;
    Ok(described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let claim = i.tags().iter().find(|t| t.key() == Some("karpenter.sh/nodeclaim"))?.value()?;
            Some((i.instance_id()?.to_string(), claim.to_string()))
        })
        .collect())
}

/// `nodesmith explain ARGS --output json` against the sandbox, as a person would run it; its JSON.
pub fn explain(args: &[&str]) -> Result<serde_json::Value> {
    let output = super::nodesmith()?.arg("explain").args(args).args(["--output", "json"]).output()?;
    anyhow::ensure!(output.status.success(), "explain {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}
