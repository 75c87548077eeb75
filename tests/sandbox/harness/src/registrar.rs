//! The missing link of the sandbox: in AWS an instance boots, its kubelet registers a Node, and when the
//! instance goes the cloud controller deletes that Node. Here the registrar does both, by polling moto.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{Filter, Instance, InstanceAttributeName, InstanceLifecycleType, InstanceStateName};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use nodesmith::catalog::max_pods::{MaxPodsSettings, NetworkLimits, max_pods};
use tracing::{info, warn};

use crate::instance_node::{InstanceFacts, REGISTRAR_ANNOTATION, node_for};
use crate::user_data;

const NODECLAIM_TAG: &str = "karpenter.sh/nodeclaim";
/// Instance tags under this prefix are copied to the Node's labels (test isolation only).
const SANDBOX_LABEL_PREFIX: &str = "sandbox.nodesmith.dev/";

/// What the registrar needs of an instance type, fetched once per type.
#[derive(Debug, Clone, Copy)]
struct TypeInfo {
    vcpus: u32,
    memory_mib: u64,
    network: NetworkLimits,
}

pub async fn run(sdk: &aws_config::SdkConfig, kube: kube::Client, cluster: &str, interval: Duration) -> Result<()> {
    let mut registrar = Registrar {
        ec2: aws_sdk_ec2::Client::new(sdk),
        nodes: Api::all(kube.clone()),
        nodeclaims: Api::all_with(
            kube,
            &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("karpenter.sh", "v1", "NodeClaim"), "nodeclaims"),
        ),
        cluster_tag: format!("tag:kubernetes.io/cluster/{cluster}"),
        types: HashMap::new(),
    };
    info!(cluster, "registrar started");
    loop {
        if let Err(error) = registrar.reconcile().await {
            warn!("registrar pass failed, retrying: {error:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

struct Registrar {
    ec2: aws_sdk_ec2::Client,
    nodes: Api<Node>,
    nodeclaims: Api<DynamicObject>,
    cluster_tag: String,
    types: HashMap<String, TypeInfo>,
}

impl Registrar {
    async fn reconcile(&mut self) -> Result<()> {
        let instances = self.cluster_instances().await?;
        let running: HashMap<String, &Instance> = instances
            .iter()
            .filter(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
            .filter_map(|i| Some((provider_id(i)?, i)))
            .collect();

        let nodes = self.nodes.list(&Default::default()).await?;
        let registered: HashSet<String> =
            nodes.items.iter().filter_map(|n| n.spec.as_ref()?.provider_id.clone()).collect();

        for (provider_id, instance) in &running {
            if !registered.contains(provider_id) {
                self.register(instance).await?;
            }
        }
        for node in &nodes.items {
            let ours = node.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(REGISTRAR_ANNOTATION));
            let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()).unwrap_or_default();
            if ours && !running.contains_key(provider_id) {
                let name = node.metadata.name.clone().unwrap_or_default();
                info!(node = %name, provider_id, "instance is gone; deleting its Node");
                match self.nodes.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    async fn cluster_instances(&self) -> Result<Vec<Instance>> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(Filter::builder().name(&self.cluster_tag).values("owned").build())
            // Only the live ones: moto keeps terminated instances for good (EC2 drops them after about an hour),
            // and listing a thousand of them took 3 s of every pass, and of moto's time.
            .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            for reservation in page.context("DescribeInstances")?.reservations() {
                instances.extend(reservation.instances().iter().cloned());
            }
        }
        Ok(instances)
    }

    async fn register(&mut self, instance: &Instance) -> Result<()> {
        let facts = self.facts(instance).await?;
        let node = node_for(&facts);
        info!(node = %facts.private_dns_name, instance = %facts.instance_id, max_pods = facts.max_pods, "registering Node");
        match self.nodes.create(&PostParams::default(), &node).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn facts(&mut self, instance: &Instance) -> Result<InstanceFacts> {
        let instance_id = instance.instance_id().context("instance without id")?.to_string();
        let instance_type = instance.instance_type().context("instance without type")?.as_str().to_string();
        let info = self.type_info(&instance_type).await?;
        let kubelet = instance_user_data(&self.ec2, instance)
            .await?
            .as_deref()
            .map(user_data::kubelet_facts_from_base64)
            .unwrap_or_default();
        let max_pods = kubelet.max_pods.unwrap_or_else(|| max_pods(info.network, MaxPodsSettings::default()));
        let (mut requested_labels, claim_taints) = match tag(instance, NODECLAIM_TAG) {
            Some(claim) => self.nodeclaim_labels_and_taints(claim).await?,
            None => Default::default(),
        };
        // A kubelet registers with the taints its user data names (nodesmith's launches name
        // karpenter.sh/unregistered there, so no pod lands before the controller registers the Node); user data
        // that names none (a custom image's) leaves the NodeClaim's.
        let requested_taints = kubelet.register_with_taints.clone().unwrap_or(claim_taints);
        // Tests keep their Nodes apart by a tag of their own, which becomes a label. An EKS managed node group's
        // instances carry its name, which the EKS AMI's bootstrap gives the kubelet as a label.
        for t in instance.tags() {
            match (t.key(), t.value()) {
                (Some(key), Some(value)) if key.starts_with(SANDBOX_LABEL_PREFIX) => {
                    requested_labels.insert(key.to_string(), value.to_string());
                }
                (Some("eks:nodegroup-name"), Some(value)) => {
                    requested_labels.insert("eks.amazonaws.com/nodegroup".to_string(), value.to_string());
                }
                _ => {}
            }
        }
        Ok(InstanceFacts {
            zone: instance
                .placement()
                .and_then(|p| p.availability_zone())
                .context("instance without zone")?
                .to_string(),
            private_dns_name: instance.private_dns_name().context("instance without private DNS name")?.to_string(),
            private_ip: instance.private_ip_address().unwrap_or_default().to_string(),
            arch: match instance.architecture().map(|a| a.as_str()) {
                Some("arm64") => "arm64".into(),
                _ => "amd64".into(),
            },
            spot: instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
            vcpus: info.vcpus,
            memory_mib: info.memory_mib,
            instance_id,
            instance_type,
            max_pods,
            kubelet,
            requested_labels,
            requested_taints,
        })
    }

    async fn type_info(&mut self, instance_type: &str) -> Result<TypeInfo> {
        if let Some(info) = self.types.get(instance_type) {
            return Ok(*info);
        }
        let described = self
            .ec2
            .describe_instance_types()
            .instance_types(instance_type.into())
            .send()
            .await
            .with_context(|| format!("DescribeInstanceTypes {instance_type}"))?;
        let t = described.instance_types().first().with_context(|| format!("unknown instance type {instance_type}"))?;
        let network = t.network_info().with_context(|| format!("{instance_type} has no network info"))?;
        let default_card = network.default_network_card_index().unwrap_or(0);
        let enis = network
            .network_cards()
            .iter()
            .find(|card| card.network_card_index() == Some(default_card))
            .and_then(|card| card.maximum_network_interfaces())
            .or(network.maximum_network_interfaces())
            .unwrap_or(1);
        let nitro = t.hypervisor().map(|h| h.as_str()) == Some("nitro") || t.bare_metal() == Some(true);
        let vcpus = t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(1);
        let info = TypeInfo {
            vcpus: u32::try_from(vcpus).unwrap_or(1),
            memory_mib: t.memory_info().and_then(|m| m.size_in_mib()).map_or(0, |m| u64::try_from(m).unwrap_or(0)),
            network: NetworkLimits {
                enis: u32::try_from(enis).unwrap_or(1),
                ipv4_per_eni: network.ipv4_addresses_per_interface().map_or(1, |n| u32::try_from(n).unwrap_or(1)),
                vcpus: u32::try_from(vcpus).unwrap_or(1),
                supports_prefixes: nitro,
            },
        };
        self.types.insert(instance_type.to_string(), info);
        Ok(info)
    }

    /// The NodeClaim's labels and taints, as its launch passes them to the kubelet. None before the NodeClaim
    /// CRD is installed.
    async fn nodeclaim_labels_and_taints(&self, name: &str) -> Result<(BTreeMap<String, String>, Vec<Taint>)> {
        let claim = match self.nodeclaims.get_opt(name).await {
            Ok(Some(claim)) => claim,
            Ok(None) | Err(kube::Error::Api(_)) => return Ok(Default::default()),
            Err(error) => return Err(error.into()),
        };
        let labels = claim.metadata.labels.unwrap_or_default();
        let mut taints = Vec::new();
        for field in ["taints", "startupTaints"] {
            if let Some(list) = claim.data.get("spec").and_then(|s| s.get(field)) {
                let parsed: Vec<Taint> = serde_json::from_value(list.clone())
                    .with_context(|| format!("NodeClaim {name} has malformed spec.{field}"))?;
                taints.extend(parsed);
            }
        }
        Ok((labels, taints))
    }
}

fn tag<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn provider_id(instance: &Instance) -> Option<String> {
    let zone = instance.placement()?.availability_zone()?;
    Some(format!("aws:///{zone}/{}", instance.instance_id()?))
}

/// The instance's user data (base64, as EC2 keeps it), or else its launch template's (as the instance was booted
/// with it).
pub async fn instance_user_data(ec2: &aws_sdk_ec2::Client, instance: &Instance) -> Result<Option<String>> {
    let instance_id = instance.instance_id().unwrap_or_default();
    let attribute = ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .with_context(|| format!("DescribeInstanceAttribute userData of {instance_id}"))?;
    if let Some(value) = attribute.user_data().and_then(|u| u.value()).filter(|v| !v.is_empty()) {
        return Ok(Some(value.to_string()));
    }
    let Some(template_id) = tag(instance, "aws:ec2launchtemplate:id") else {
        return Ok(None);
    };
    let version = tag(instance, "aws:ec2launchtemplate:version").unwrap_or("$Default");
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(template_id)
        .versions(version)
        .send()
        .await
        .with_context(|| format!("DescribeLaunchTemplateVersions {template_id}"))?;
    Ok(versions
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .and_then(|d| d.user_data())
        .map(str::to_string))
}
