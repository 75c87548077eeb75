//! Bursts of spot interruption warnings (`controller-bench interruptions N` and `interruption-handler N`).
//!
//! Both send N messages in batches of ten to the sandbox's SQS server (`nodesmith_sandbox::sqs_server`, not moto's:
//! moto took 38.8 s just to accept 1,000 messages) and time, from the first send, until a watch has seen every
//! NodeClaim's deletion, and per message from its batch's send to its NodeClaim's deletion.
//!
//! - `interruptions`: the whole controller (the `nodesmith controller` binary) with N moto instances, NodeClaims and
//!   Nodes; each deletion starts that NodeClaim's termination (drain, TerminateInstances through moto, finalizers)
//!   on the same two cores, as it would in a cluster.
//! - `interruption-handler`: nodesmith's interruption handler alone (`controller::interruption::run`, in this
//!   process, over the controller's shared watches and its AWS cloud), as Karpenter's half runs its interruption
//!   controller alone (`benches/karpenter-interruption`): NodeClaims without a finalizer, nothing terminating them,
//!   no instances behind them. This is the like-for-like figure beside Karpenter's.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use nodesmith::apis::nodeclaim::NodeClaim;

use crate::Controller;
use crate::bench_support::{
    free_port, install_crds, namespace, percentile, prepare_cluster, sandbox_region, wait_until,
};

/// The account and region the burst's messages come from; the handler acts only on its cluster's own.
const MESSAGE_ACCOUNT: &str = "123456789012";
const MESSAGE_REGION: &str = "us-east-1";

/// Sends every service's calls to one endpoint. The SDK prefers `AWS_ENDPOINT_URL` (the sandbox's moto) to an
/// SdkConfig's own endpoint, but not to its service configuration.
#[derive(Debug)]
struct OneEndpoint(String);

impl aws_types::service_config::LoadServiceConfig for OneEndpoint {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        (key.env() == "AWS_ENDPOINT_URL").then(|| self.0.clone())
    }
}

/// One instance of the bench: launched by moto (`interruptions`) or only named (`interruption-handler`).
struct BenchInstance {
    id: String,
    zone: String,
    dns_name: String,
    ip: String,
}

impl BenchInstance {
    /// An instance that exists only in the NodeClaim and Node naming it (Karpenter's half uses fake ids too).
    fn named(i: usize) -> Self {
        let ip = format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256);
        Self {
            id: format!("i-{i:017x}"),
            zone: format!("{MESSAGE_REGION}a"),
            dns_name: format!("ip-{}.ec2.internal", ip.replace('.', "-")),
            ip,
        }
    }

    /// The Node a t3.micro's kubelet registers for a nodesmith launch (the pool's label, the unregistered taint).
    fn node(&self, pool: &str) -> Node {
        use nodesmith_sandbox::instance_node::{InstanceFacts, node_for};
        node_for(&InstanceFacts {
            instance_id: self.id.clone(),
            zone: self.zone.clone(),
            private_dns_name: self.dns_name.clone(),
            private_ip: self.ip.clone(),
            instance_type: "t3.micro".into(),
            arch: "amd64".into(),
            vcpus: 2,
            memory_mib: 1024,
            spot: true,
            max_pods: 4,
            kubelet: Default::default(),
            requested_labels: std::collections::BTreeMap::from([(
                "karpenter.sh/nodepool".to_string(),
                pool.to_string(),
            )]),
            requested_taints: vec![k8s_openapi::api::core::v1::Taint {
                key: "karpenter.sh/unregistered".into(),
                effect: "NoExecute".into(),
                ..Default::default()
            }],
        })
    }
}

/// Whether the bench registers its NodeClaims itself (status `nodeName`) or leaves it to the controller.
#[derive(Clone, Copy, PartialEq)]
enum Registration {
    ByController,
    ByBench,
}

/// The bench's NodeClaim for `instance`, with its status, and the instance's Node; any step already done is fine.
async fn bench_objects(
    claims: Api<NodeClaim>,
    nodes: Api<Node>,
    bench: String,
    i: usize,
    instance: &BenchInstance,
    registration: Registration,
) -> Result<()> {
    let name = format!("{bench}-{i}");
    let claim: NodeClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": bench, "karpenter.sh/capacity-type": "spot",
            "node.kubernetes.io/instance-type": "t3.micro", "topology.kubernetes.io/zone": instance.zone}},
        "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": bench},
                 "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]},
    }))?;
    match claims.create(&PostParams::default(), &claim).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    let node = instance.node(&bench);
    let mut status = serde_json::json!({
        "providerID": format!("aws:///{}/{}", instance.zone, instance.id),
        "conditions": [{"type": "Launched", "status": "True", "reason": "Launched", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    if registration == Registration::ByBench {
        status["nodeName"] = serde_json::json!(node.name_any());
    }
    claims.patch_status(&name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "status": status }))).await?;
    // The Node as the registrar would make it, made here at once: the registrar makes one at a time.
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// Runs `step` again, up to three times in all, while it fails.
async fn retried<F, Fut>(step: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match step().await {
            Err(error) if attempt < 3 => eprintln!("retrying a bench object: {error:#}"),
            done => return done,
        }
    }
}

/// Every instance's NodeClaim and Node, 32 at a time.
async fn create_objects(
    kube: &kube::Client,
    bench: &str,
    instances: &[BenchInstance],
    registration: Registration,
) -> Result<()> {
    let claims: Api<NodeClaim> = Api::all(kube.clone());
    let nodes: Api<Node> = Api::all(kube.clone());
    futures::stream::iter(instances.iter().enumerate())
        .map(|(i, instance)| {
            let (claims, nodes, bench) = (claims.clone(), nodes.clone(), bench.to_string());
            // Each step may be repeated: a connection the API server closed under the load fails a request now and
            // then ("connection closed before message completed").
            retried(move || bench_objects(claims.clone(), nodes.clone(), bench.clone(), i, instance, registration))
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// When a watch first saw each NodeClaim's deletion: its deletion mark, or its removal when it had no finalizer.
struct Marks {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Marks {
    fn watch(claims: Api<NodeClaim>, label: &str) -> Self {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let record = seen.clone();
        let watch = tokio::spawn(watcher(claims, watcher::Config::default().labels(label)).for_each(move |event| {
            let deleted = match event {
                Ok(watcher::Event::Delete(claim)) => Some(claim),
                Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim))
                    if claim.metadata.deletion_timestamp.is_some() =>
                {
                    Some(claim)
                }
                _ => None,
            };
            if let Some(claim) = deleted
                && let Ok(mut seen) = record.lock()
            {
                seen.entry(claim.name_any()).or_insert_with(Instant::now);
            }
            std::future::ready(())
        }));
        Self { seen, watch }
    }

    fn count(&self) -> usize {
        self.seen.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The burst: one message per instance, sent ten to a batch; returns when each NodeClaim's message was sent, and
/// how long sending took.
async fn send_burst(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bench: &str,
    instances: &[BenchInstance],
) -> Result<(HashMap<String, Instant>, Duration)> {
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let burst = Instant::now();
    for (chunk_index, chunk) in instances.chunks(10).enumerate() {
        let mut request = sqs.send_message_batch().queue_url(url);
        for (i, BenchInstance { id, .. }) in chunk.iter().enumerate() {
            let body = serde_json::json!({
                "version": "0", "id": format!("bench-{chunk_index}-{i}"), "source": "aws.ec2",
                "detail-type": "EC2 Spot Instance Interruption Warning", "account": MESSAGE_ACCOUNT,
                "region": MESSAGE_REGION,
                "resources": [format!("arn:aws:ec2:{MESSAGE_REGION}:{MESSAGE_ACCOUNT}:instance/{id}")],
                "detail": {"instance-id": id, "instance-action": "terminate"},
            });
            request = request.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body.to_string())
                    .build()?,
            );
        }
        request.send().await?;
        let now = Instant::now();
        for (i, _) in chunk.iter().enumerate() {
            sent.insert(format!("{bench}-{}", chunk_index * 10 + i), now);
        }
    }
    Ok((sent, burst.elapsed()))
}

/// Sends the burst and waits until every NodeClaim's deletion was seen; prints the figures under `who`.
async fn time_burst(
    who: &str,
    claims: &Api<NodeClaim>,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bench: &str,
    instances: &[BenchInstance],
    sqs_server: &nodesmith_sandbox::sqs_server::SqsServer,
) -> Result<()> {
    let count = instances.len();
    let marks = Marks::watch(claims.clone(), &format!("karpenter.sh/nodepool={bench}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let burst = Instant::now();
    let (sent, sent_in) = send_burst(sqs, url, bench, instances).await?;
    wait_until("every NodeClaim marked for deletion", Duration::from_secs(600), || async {
        Ok((marks.count() >= count).then_some(()))
    })
    .await?;
    let all_marked = burst.elapsed();
    marks.watch.abort();
    let seen = marks.seen.lock().map(|m| m.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = seen
        .iter()
        .filter_map(|(claim, at)| Some(at.checked_duration_since(*sent.get(claim)?)?.as_secs_f64()))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let counts = sqs_server.counts();
    println!(
        "{who}: {count} spot interruption messages sent in {:.1} s; every NodeClaim marked for deletion {:.1} s after the first; per message p50 {:.2} s, p99 {:.2} s; {:.0} messages/s (the queue: {} received, {} deleted)",
        sent_in.as_secs_f64(),
        all_marked.as_secs_f64(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        count as f64 / all_marked.as_secs_f64(),
        counts.received,
        counts.deleted,
    );
    Ok(())
}

/// `interruptions N`: the whole controller, its terminations included.
pub async fn whole_controller(kube: &kube::Client, count: usize) -> Result<()> {
    // New subnets of the cluster's zones: /22s hold a thousand t3.micro instances, /20s ten thousand.
    let prefix = if count > 2_500 { 20 } else { 22 };
    let (cluster, sdk) = prepare_cluster(kube, Some(prefix)).await?;
    let bench = format!("bench-int-{}", std::process::id());
    namespace(kube, &bench).await?;

    // N instances of the cluster, each with a NodeClaim that names it and the Node its kubelet would register.
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let subnets = ec2
        .describe_subnets()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:karpenter.sh/discovery").values(&cluster).build())
        .send()
        .await?;
    let mut free: Vec<(String, i32)> = subnets
        .subnets()
        .iter()
        .filter_map(|s| Some((s.subnet_id()?.to_string(), s.available_ip_address_count()?)))
        .collect();
    let mut instances = Vec::new();
    let launching = Instant::now();
    while instances.len() < count {
        free.sort_by_key(|(_, n)| -n);
        let (subnet, left) = free.first_mut().context("no discovery-tagged subnet")?;
        *left -= 100;
        let subnet = subnet.clone();
        let batch = (count - instances.len()).min(100) as i32;
        let ran = ec2
            .run_instances()
            .image_id("ami-03c3da4cfa8e8943a")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(batch)
            .max_count(batch)
            .subnet_id(&subnet)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(format!("kubernetes.io/cluster/{cluster}"))
                            .value("owned")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("RunInstances: {}", aws_smithy_types::error::display::DisplayErrorContext(&e))
            })?;
        for i in ran.instances() {
            instances.push(BenchInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                zone: i.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
                dns_name: i.private_dns_name().unwrap_or_default().to_string(),
                ip: i.private_ip_address().unwrap_or_default().to_string(),
            });
        }
    }
    eprintln!("{count} instances running in moto after {:.1} s", launching.elapsed().as_secs_f64());
    create_objects(kube, &bench, &instances, Registration::ByController).await?;
    let claims: Api<NodeClaim> = Api::all(kube.clone());
    let label = format!("karpenter.sh/nodepool={bench}");

    let queue = nodesmith::cloud::resource_names::ClusterNames::for_cluster(&cluster, &sandbox_region()).queue;
    let sqs_server = nodesmith_sandbox::sqs_server::start("127.0.0.1:0", &sandbox_region()).await?;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk).endpoint_url(&sqs_server.endpoint).build(),
    );
    let url = sqs.create_queue().queue_name(&queue).send().await?.queue_url.context("no queue URL")?;
    let controller = {
        let binary = std::env::var("NODESMITH_BIN").unwrap_or_else(|_| "target/release/nodesmith".into());
        let child = Command::new(binary)
            .args(["controller", "--cluster-name", &cluster, "--namespace", &bench, "--identity", "bench"])
            .args(["--interruption-queue", &queue])
            .env("AWS_ENDPOINT_URL_SQS", &sqs_server.endpoint)
            .args(["--metrics-port", &free_port()?.to_string(), "--health-port", &free_port()?.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create("target/controller-bench.log")?)
            .spawn()?;
        Controller(child, 0, 0)
    };
    wait_until("every NodeClaim registered", Duration::from_secs(600), || async {
        let listed = claims.list(&ListParams::default().labels(&label)).await?;
        let registered =
            listed.items.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.node_name.is_some())).count();
        Ok((registered == count).then_some(()))
    })
    .await?;

    time_burst("nodesmith", &claims, &sqs, &url, &bench, &instances, &sqs_server).await?;

    // Termination goes through moto (TerminateInstances), which is slower than the queue.
    wait_until("the NodeClaims to be terminated", Duration::from_secs(900 + count as u64 / 10), || async {
        Ok(claims.list(&ListParams::default().labels(&label)).await?.items.is_empty().then_some(()))
    })
    .await?;
    drop(controller);
    Api::<Namespace>::all(kube.clone()).delete(&bench, &DeleteParams::default()).await?;
    Ok(())
}

/// `interruption-handler N`: nodesmith's interruption handler alone, in this process, as the controller starts it.
pub async fn handler_alone(kube: &kube::Client, count: usize) -> Result<()> {
    use nodesmith::controller::{Context, Settings, interruption, leader, object_metrics, state};

    install_crds(kube).await?;
    let bench = format!("bench-inth-{}", std::process::id());
    let instances: Vec<BenchInstance> = (0..count).map(BenchInstance::named).collect();
    let making = Instant::now();
    create_objects(kube, &bench, &instances, Registration::ByBench).await?;
    eprintln!("{count} NodeClaims and Nodes made in {:.1} s", making.elapsed().as_secs_f64());

    let sqs_server = nodesmith_sandbox::sqs_server::start("127.0.0.1:0", &sandbox_region()).await?;
    // Every AWS call goes to the queue server: a spot warning needs no other, and one made would fail loudly.
    let sdk = nodesmith::aws::sdk_config(None)
        .await
        .to_builder()
        .service_config(OneEndpoint(sqs_server.endpoint.clone()))
        .build();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs.create_queue().queue_name(&bench).send().await?.queue_url.context("no queue URL")?;

    let settings = Settings {
        cluster_name: bench.clone(),
        cluster_endpoint: None,
        interruption_queue: Some(bench.clone()),
        rebalance: interruption::RebalancePolicy::Event,
        batch_idle: Duration::from_secs(1),
        batch_max: Duration::from_secs(10),
        metrics_port: 0,
        health_port: 0,
        identity: "bench".into(),
        namespace: "nodesmith".into(),
        disruption: Default::default(),
        min_values_policy: Default::default(),
        catalog_refresh: Default::default(),
        observe: false,
    };
    let cluster = nodesmith::controller::ClusterFacts {
        name: bench.clone(),
        arn: format!("arn:aws:eks:{MESSAGE_REGION}:{MESSAGE_ACCOUNT}:cluster/{bench}"),
        endpoint: String::new(),
        ca_bundle: String::new(),
        service_cidr: "10.100.0.0/16".into(),
        kubernetes_version: "1.36".into(),
    };
    let catalog = nodesmith::catalog::Catalog {
        instance_types: nodesmith::catalog::embedded_instance_types().to_vec(),
        prices: nodesmith::catalog::pricing::PriceTable::embedded(),
    };
    let metrics = Arc::new(nodesmith::telemetry::Metrics::default());
    // One replica, no Lease: nothing else competes for the queue here.
    let leadership = leader::Leadership::without_lease();
    let transitions = object_metrics::ObjectTransitions::new(metrics.clone(), leadership.clone());
    let (cluster_state, subscriptions) = state::ClusterState::start(kube, transitions);
    let cloud = Arc::new(nodesmith::cloud::AwsCloud::new(&sdk));
    let ctx = Context::new(settings, cluster, kube.clone(), kube.clone(), cloud, metrics, cluster_state, catalog);
    // The watches' change streams must be read (`state::Subscriptions`); nothing here acts on them.
    let drained = tokio::spawn(async move {
        let state::Subscriptions { provisioner, nodeclaims, nodes, nodeclasses } = subscriptions;
        tokio::join!(
            provisioner.pods.for_each(|_| std::future::ready(())),
            provisioner.nodes.for_each(|_| std::future::ready(())),
            provisioner.nodeclaims.for_each(|_| std::future::ready(())),
            nodeclaims.for_each(|_| std::future::ready(())),
            nodes.for_each(|_| std::future::ready(())),
            nodeclasses.for_each(|_| std::future::ready(())),
        );
    });
    ctx.state.wait_synced().await;
    let handler =
        tokio::spawn(interruption::run(ctx.clone(), leadership, bench.clone(), interruption::RebalancePolicy::Event));
    // As in Karpenter's half: every NodeClaim in the handler's cache before the burst.
    wait_until("every NodeClaim in the handler's cache", Duration::from_secs(120), || async {
        let cached = ctx.state.nodeclaims.state().iter().filter(|c| c.name_any().starts_with(&bench)).count();
        Ok((cached == count).then_some(()))
    })
    .await?;

    let claims: Api<NodeClaim> = Api::all(kube.clone());
    time_burst("nodesmith (interruption handler alone)", &claims, &sqs, &url, &bench, &instances, &sqs_server).await?;
    handler.abort();
    drained.abort();

    // The NodeClaims are gone (no finalizer); their Nodes are the bench's to remove. Ten thousand of them in one
    // request may outlast the connection: it is sent again, up to three times in all.
    let nodes: Api<Node> = Api::all(kube.clone());
    let ours = ListParams::default().labels(&format!("karpenter.sh/nodepool={bench}"));
    retried(|| async {
        nodes.delete_collection(&DeleteParams::default(), &ours).await?;
        Ok(())
    })
    .await
}
