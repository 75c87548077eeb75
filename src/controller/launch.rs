//! NodeClaim → instance: the offerings its requirements allow (minus those out of capacity), one subnet per zone,
//! a launch template per distinct bootstrap (max pods differs by type), and one CreateFleet call. An instance
//! already tagged for the NodeClaim is adopted instead: a retry or a restarted controller never launches twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use kube::ResourceExt;

use super::Context;
use crate::apis::ec2nodeclass::{EC2NodeClass, KubeletConfiguration};
use crate::apis::nodeclaim::NodeClaim;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::{CapacityType, OfferingKey};
use crate::cloud::CloudProvider;
use crate::cloud::error::CloudError;
use crate::cloud::fleet::{FleetError, FleetOverride, FleetRequest, LaunchTemplateOverrides, MAX_INSTANCE_TYPES};
use crate::cloud::instances;
use crate::cloud::launch_template::{BlockDevice, LaunchTemplateSpec, MetadataOptions};
use crate::cloud::nodeclass::{SubnetInfo, subnet_with_most_free_ips};
use crate::cloud::user_data::{self, AmiFamily, BootstrapSettings, KubeletSettings, NodeTaint, UserDataError};
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, UNREGISTERED_TAINT_KEY, ZONE_LABEL};
use crate::names::{NODECLAIM_TAG, NODECLASS_TAG, NODEPOOL_TAG, cluster_tag_key};
use crate::scheduling::{Operator, Requirement};
use crate::telemetry::OfferingPlace;

/// The `controller` label of this module's cloud calls: launches run in the NodeClaim lifecycle.
const CONTROLLER: &str = "nodeclaim.lifecycle";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("EC2NodeClass {0} is not ready: {1}")]
    NodeClassNotReady(String, String),
    #[error("no offering left for NodeClaim {nodeclaim}: {why}")]
    NoOffering { nodeclaim: String, why: String },
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    UserData(#[from] UserDataError),
}

impl LaunchError {
    /// Capacity ran out everywhere this NodeClaim may go: it should be replaced by a new plan, not retried.
    pub fn is_insufficient_capacity(&self) -> bool {
        matches!(self, Self::Fleet(FleetError::InsufficientCapacity { .. }) | Self::NoOffering { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Launched {
    pub instance_id: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub image_id: Option<String>,
    /// Where it was launched into: what drift compares with the EC2NodeClass's subnets and security groups.
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
}

impl Launched {
    pub fn provider_id(&self) -> String {
        instances::provider_id(&self.zone, &self.instance_id)
    }
}

pub async fn launch(ctx: &Context, claim: &NodeClaim) -> Result<Launched, LaunchError> {
    let name = claim.name_any();
    let class_name = &claim.spec.node_class_ref.name;
    let class = ctx.state.nodeclass(class_name);
    // The lookup for an instance launched before (a lost status write, a restart) and the subnets' free addresses
    // do not depend on each other: asked at once, they cost one round trip before CreateFleet, not two. A first
    // launch of a NodeClaim made here needs no lookup, and addresses read recently need no DescribeSubnets: then
    // nothing stands before CreateFleet.
    let resolved_subnets = class.as_deref().map(class_subnets).unwrap_or_default();
    let untried = ctx.caches().untried.take(&name);
    tracing::debug!(nodeclaim = %name, untried, "launching");
    let cloud = ctx.cloud(CONTROLLER);
    let lookup = async {
        if untried { Ok(None) } else { cloud.find_instance_for_nodeclaim(&ctx.settings.cluster_name, &name).await }
    };
    let (found, subnet_free) = tokio::join!(lookup, subnet_free_addresses(ctx, &resolved_subnets));
    if let Some(found) = found? {
        tracing::info!(nodeclaim = %name, instance = %found.instance_id, "adopting the instance already launched");
        return Ok(Launched {
            instance_id: found.instance_id,
            instance_type: found.instance_type,
            zone: found.zone,
            capacity_type: found.capacity_type,
            image_id: found.image_id,
            subnet_id: found.subnet_id,
            security_group_ids: found.security_group_ids,
        });
    }
    let class = class.ok_or_else(|| LaunchError::NodeClassNotReady(class_name.clone(), "it does not exist".into()))?;

    let catalog = ctx.catalog();
    let allowed_types: Vec<&InstanceTypeInfo> = match claim.requirement_values(INSTANCE_TYPE_LABEL) {
        Some(names) => names.iter().filter_map(|n| catalog.instance_type(n)).collect(),
        None => catalog.instance_types.iter().collect(),
    };
    let zones = claim.requirement_values(ZONE_LABEL);
    let capacity_types: Vec<CapacityType> = match claim.requirement_values(CAPACITY_TYPE_LABEL) {
        Some(values) => values.iter().filter_map(|v| v.parse().ok()).collect(),
        None => vec![CapacityType::OnDemand],
    };
    // Spot first when allowed; on-demand when spot has nothing left.
    let mut order = capacity_types.clone();
    order.sort_by_key(|c| if *c == CapacityType::Spot { 0 } else { 1 });
    let mut last_error = None;
    for capacity_type in order {
        match launch_as(ctx, claim, &class, &subnet_free, &allowed_types, zones, capacity_type).await {
            Ok(launched) => return Ok(launched),
            Err(error) if error.is_insufficient_capacity() => {
                tracing::info!(nodeclaim = %name, capacity_type = capacity_type.as_str(), "{error}");
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or(LaunchError::NoOffering { nodeclaim: name, why: "no capacity type allowed".into() }))
}

/// The subnets the class resolved, free addresses not known yet.
pub fn class_subnets(class: &EC2NodeClass) -> Vec<SubnetInfo> {
    let resolved = class.status.as_ref().map(|s| s.subnets.as_slice()).unwrap_or_default();
    resolved
        .iter()
        .map(|s| SubnetInfo {
            id: s.id.clone(),
            zone: s.zone.clone(),
            zone_id: s.zone_id.clone().unwrap_or_default(),
            available_ips: i64::MAX / 4,
        })
        .collect()
}

async fn launch_as(
    ctx: &Context,
    claim: &NodeClaim,
    class: &EC2NodeClass,
    subnet_free: &[SubnetInfo],
    allowed_types: &[&InstanceTypeInfo],
    zones: Option<&[String]>,
    capacity_type: CapacityType,
) -> Result<Launched, LaunchError> {
    let name = claim.name_any();
    let class_name = class.name_any();
    let status = class
        .status
        .as_ref()
        .ok_or_else(|| LaunchError::NodeClassNotReady(class_name.clone(), "no status yet".into()))?;
    if status.subnets.is_empty() || status.security_groups.is_empty() || status.amis.is_empty() {
        return Err(LaunchError::NodeClassNotReady(class_name, "no subnets, security groups or AMIs resolved".into()));
    }
    let instance_profile = status
        .instance_profile
        .clone()
        .or_else(|| class.spec.instance_profile.clone())
        .ok_or_else(|| LaunchError::NodeClassNotReady(class_name.clone(), "no instance profile".into()))?;
    let settings = class.max_pods_settings(ctx.state.cni_prefix_delegation());
    let caches = ctx.caches();
    let unavailable = caches.unavailable.snapshot();

    // One subnet per zone: the one with the most free addresses once recent launches are debited.
    let in_flight = caches.in_flight.lock().map(|mut f| f.counts()).unwrap_or_default();
    let mut subnet_by_zone: BTreeMap<String, SubnetInfo> = BTreeMap::new();
    for zone in subnet_free.iter().map(|s| s.zone.clone()).collect::<std::collections::BTreeSet<_>>() {
        if zones.is_some_and(|allowed| !allowed.contains(&zone)) {
            continue;
        }
        if let Some(subnet) = subnet_with_most_free_ips(subnet_free, &zone, &in_flight, settings.prefix_delegation) {
            subnet_by_zone.insert(zone, subnet.clone());
        }
    }

    // Overrides in preference order (the plan's cheapest-first), grouped by what their bootstrap differs in: up to
    // MAX_INSTANCE_TYPES types, each in every zone it may launch in, as Karpenter sends them.
    let mut groups: BTreeMap<(String, u32), Vec<FleetOverride>> = BTreeMap::new();
    let mut types_offered = 0;
    for t in allowed_types {
        if types_offered >= MAX_INSTANCE_TYPES || !t.usage_classes.iter().any(|u| u == capacity_type.as_str()) {
            continue;
        }
        let Some(image) = image_for_type(class, t) else { continue };
        let mut offered = false;
        for (zone, subnet) in &subnet_by_zone {
            let key = OfferingKey { instance_type: t.name.clone(), zone: zone.clone(), capacity_type };
            if !t.zones.contains(zone) || unavailable.contains(&key) {
                continue;
            }
            offered = true;
            groups.entry((image.clone(), t.max_pods(settings))).or_default().push(FleetOverride {
                instance_type: t.name.clone(),
                subnet_id: subnet.id.clone(),
                zone: zone.clone(),
            });
        }
        types_offered += usize::from(offered);
    }
    if groups.is_empty() {
        // Nothing of this NodeClaim can launch now (no subnet, no AMI or no capacity for its offerings): the
        // next plan must look elsewhere rather than make the same NodeClaim again.
        for t in allowed_types {
            for zone in zones.unwrap_or_default() {
                let key = OfferingKey { instance_type: t.name.clone(), zone: zone.clone(), capacity_type };
                if !unavailable.contains(&key) {
                    caches.unavailable.mark(key, "NoLaunchableOffering");
                }
            }
        }
        return Err(LaunchError::NoOffering {
            nodeclaim: name,
            why: format!("no {} offering of its instance types in its zones is available", capacity_type.as_str()),
        });
    }

    let tags = instance_tags(ctx, claim, class);
    let image_of_type: HashMap<String, String> = groups
        .iter()
        .flat_map(|((image, _), overrides)| overrides.iter().map(move |o| (o.instance_type.clone(), image.clone())))
        .collect();
    let mut specs = Vec::new();
    for ((image_id, max_pods), overrides) in groups {
        let bootstrap = bootstrap_settings(ctx, claim, class, max_pods);
        specs.push((
            LaunchTemplateSpec {
                cluster: ctx.settings.cluster_name.clone(),
                image_id,
                user_data: user_data::render(&bootstrap)?,
                security_group_ids: status.security_groups.iter().map(|g| g.id.clone()).collect(),
                instance_profile: instance_profile.clone(),
                metadata: metadata_options(class),
                block_devices: block_devices(class),
                associate_public_ip: class.spec.associate_public_ip_address,
                detailed_monitoring: class.spec.detailed_monitoring.unwrap_or(false),
                tags: template_tags(ctx, claim, class),
            },
            overrides,
        ));
    }
    // Asked together: the first launch of a class needs a template per (AMI, max pods), and one after another
    // they would stand in a row before CreateFleet.
    let cloud = ctx.cloud(CONTROLLER);
    let templates =
        futures::future::try_join_all(specs.iter().map(|(spec, _)| cloud.ensure_launch_template(spec))).await?;
    let mut configs = Vec::new();
    for (template, (_, overrides)) in templates.into_iter().zip(specs) {
        if let Ok(mut used) = caches.templates_used.lock() {
            used.insert(template.clone(), Instant::now());
        }
        configs.push(LaunchTemplateOverrides { launch_template_name: template, overrides });
    }

    let attempt = claim.launch_failures();
    let client_token = client_token(claim.metadata.uid.as_deref().unwrap_or(&name), attempt, capacity_type);
    let request = FleetRequest { configs, capacity_type, tags, client_token };
    tracing::debug!(nodeclaim = %name, capacity_type = capacity_type.as_str(), templates = request.configs.len(), "creating a fleet");
    match ctx.cloud(CONTROLLER).create_fleet(&request).await {
        Ok(launched) => {
            if let Some(subnet) = subnet_by_zone.get(&launched.zone)
                && let Ok(mut in_flight) = caches.in_flight.lock()
            {
                in_flight.debit(&subnet.id);
            }
            let image_id = image_of_type.get(&launched.instance_type).cloned();
            Ok(Launched {
                subnet_id: subnet_by_zone.get(&launched.zone).map(|s| s.id.clone()),
                security_group_ids: status.security_groups.iter().map(|g| g.id.clone()).collect(),
                instance_id: launched.instance_id,
                instance_type: launched.instance_type,
                zone: launched.zone,
                capacity_type: launched.capacity_type,
                image_id,
            })
        }
        Err(FleetError::InsufficientCapacity { offerings, codes }) => {
            for offering in &offerings {
                caches.unavailable.mark(offering.clone(), &codes);
                ctx.metrics.launch_failed(place(&subnet_by_zone, &offering.zone, capacity_type), &codes);
            }
            Err(LaunchError::Fleet(FleetError::InsufficientCapacity { offerings, codes }))
        }
        Err(FleetError::NothingLaunched { codes, detail }) => {
            // AWS says which override failed only in the detail: counted once per zone the request offered.
            let zones: BTreeSet<&str> =
                request.configs.iter().flat_map(|c| c.overrides.iter().map(|o| o.zone.as_str())).collect();
            let reason = if codes.is_empty() { "NothingLaunched" } else { codes.as_str() };
            for zone in zones {
                ctx.metrics.launch_failed(place(&subnet_by_zone, zone, capacity_type), reason);
            }
            Err(LaunchError::Fleet(FleetError::NothingLaunched { codes, detail }))
        }
        Err(error) => Err(error.into()),
    }
}

/// Where an offering in `zone` is, for the launch failure metrics.
fn place<'a>(
    subnet_by_zone: &'a BTreeMap<String, SubnetInfo>,
    zone: &'a str,
    capacity_type: CapacityType,
) -> OfferingPlace<'a> {
    let zone_id = subnet_by_zone.get(zone).map_or("", |s| s.zone_id.as_str());
    OfferingPlace { zone, zone_id, capacity_type: capacity_type.as_str() }
}

/// CreateFleet's idempotency token: the NodeClaim's UID, its attempt (the failed launches recorded on it) and the
/// capacity type (spot, then the on-demand fallback, within one attempt). A retry whose outcome was lost (the
/// status write after a launch failed, the controller was killed) sends the same token, and EC2 answers with the
/// fleet it already made, or refuses a changed request (IdempotentParameterMismatch), rather than launching again.
/// The attempt changes only once a failure is recorded, when nothing was launched.
pub fn client_token(uid: &str, attempt: u32, capacity_type: CapacityType) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{uid}/{attempt}/{}", capacity_type.as_str()));
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Free addresses per subnet: as read recently, or now.
async fn subnet_free_addresses(ctx: &Context, subnets: &[SubnetInfo]) -> Vec<SubnetInfo> {
    let ids: Vec<&str> = subnets.iter().map(|s| s.id.as_str()).collect();
    match ctx.caches().subnet_addresses.recent(&ids) {
        Some(recent) => recent,
        None => read_subnet_addresses(ctx, subnets).await,
    }
}

/// Free addresses per subnet now (DescribeSubnets), remembered for the next launches; the resolved list when the
/// call fails.
pub async fn read_subnet_addresses(ctx: &Context, subnets: &[SubnetInfo]) -> Vec<SubnetInfo> {
    if subnets.is_empty() {
        return Vec::new();
    }
    let terms: Vec<crate::cloud::nodeclass::SelectorTerm> = subnets
        .iter()
        .map(|s| crate::cloud::nodeclass::SelectorTerm { id: Some(s.id.clone()), ..Default::default() })
        .collect();
    match ctx.cloud(CONTROLLER).subnets(&terms).await {
        Ok(found) if !found.is_empty() => {
            ctx.caches().subnet_addresses.store(&found);
            found
        }
        Ok(_) => subnets.to_vec(),
        Err(error) => {
            tracing::warn!("could not read the subnets' free addresses: {error}");
            subnets.to_vec()
        }
    }
}

/// The first resolved AMI whose requirements the instance type meets: its architecture, and for an alias the
/// NVIDIA image for NVIDIA GPU types and the standard image for the rest.
fn image_for_type(class: &EC2NodeClass, instance_type: &InstanceTypeInfo) -> Option<String> {
    let labels = instance_type.labels();
    let status = class.status.as_ref()?;
    status
        .amis
        .iter()
        .find(|ami| {
            ami.requirements.iter().all(|r| ami_requirement_met(&r.key, &r.operator, r.values.as_deref(), &labels))
        })
        .map(|ami| ami.id.clone())
}

/// An AMI's requirement (as the status lists it) against an instance type's labels. An operator nodesmith does not
/// know constrains nothing: the status is ours, so that would be a newer writer's term.
fn ami_requirement_met(key: &str, operator: &str, values: Option<&[String]>, labels: &BTreeMap<&str, String>) -> bool {
    let Some(operator) = Operator::parse(operator) else { return true };
    let requirement =
        Requirement { key: key.to_string(), operator, values: values.unwrap_or_default().to_vec(), min_values: None };
    requirement.matches(labels.get(key).map(String::as_str))
}

fn ami_family(class: &EC2NodeClass) -> AmiFamily {
    AmiFamily::from_name(class.ami_family_name())
}

fn bootstrap_settings(ctx: &Context, claim: &NodeClaim, class: &EC2NodeClass, max_pods: u32) -> BootstrapSettings {
    let mut taints: Vec<NodeTaint> = claim
        .spec
        .taints
        .iter()
        .chain(&claim.spec.startup_taints)
        .map(|t| NodeTaint { key: t.key.clone(), value: t.value.clone(), effect: t.effect.clone() })
        .collect();
    // Karpenter's convention: the node is tainted until the controller has seen it register.
    taints.push(NodeTaint { key: UNREGISTERED_TAINT_KEY.into(), value: None, effect: "NoExecute".into() });
    let cluster_dns = class
        .spec
        .kubelet
        .as_ref()
        .map(|k| k.cluster_dns.clone())
        .filter(|d| !d.is_empty())
        .or_else(|| super::cluster_dns_ip(&ctx.cluster.service_cidr).map(|ip| vec![ip]))
        .unwrap_or_default();
    BootstrapSettings {
        family: ami_family(class),
        cluster_name: ctx.cluster.name.clone(),
        endpoint: ctx.cluster.endpoint.clone(),
        ca_bundle: ctx.cluster.ca_bundle.clone(),
        service_cidr: ctx.cluster.service_cidr.clone(),
        cluster_dns,
        max_pods,
        labels: claim.labels().clone(),
        taints,
        instance_store_raid0: class.ephemeral_storage().instance_store_raid0,
        kubelet: class.spec.kubelet.as_ref().map(kubelet_settings).unwrap_or_default(),
        custom: class.spec.user_data.clone(),
    }
}

fn kubelet_settings(kubelet: &KubeletConfiguration) -> KubeletSettings {
    KubeletSettings {
        kube_reserved: kubelet.kube_reserved.clone(),
        system_reserved: kubelet.system_reserved.clone(),
        eviction_hard: kubelet.eviction_hard.clone(),
        eviction_soft: kubelet.eviction_soft.clone(),
        eviction_soft_grace_period: kubelet.eviction_soft_grace_period.clone(),
        eviction_max_pod_grace_period: kubelet.eviction_max_pod_grace_period,
        image_gc_high_threshold_percent: kubelet.image_gc_high_threshold_percent,
        image_gc_low_threshold_percent: kubelet.image_gc_low_threshold_percent,
        cpu_cfs_quota: kubelet.cpu_cfs_quota,
    }
}

/// Tags of a launch template and of the volumes and network interfaces it launches: the class's tags, then the
/// cluster, class and pool tags the controller policy's tag conditions ask for on every resource a launch creates
/// (see `bootstrap::policies`; the IAM check of the sandbox tests evaluates them).
fn template_tags(ctx: &Context, claim: &NodeClaim, class: &EC2NodeClass) -> Vec<(String, String)> {
    owned_tags(ctx, claim, class).into_iter().collect()
}

/// A template's tags plus the NodeClaim's own and a Name.
fn instance_tags(ctx: &Context, claim: &NodeClaim, class: &EC2NodeClass) -> Vec<(String, String)> {
    let mut tags = owned_tags(ctx, claim, class);
    tags.insert(NODECLAIM_TAG.into(), claim.name_any());
    tags.entry("Name".into()).or_insert_with(|| claim.name_any());
    tags.into_iter().collect()
}

fn owned_tags(ctx: &Context, claim: &NodeClaim, class: &EC2NodeClass) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = class.spec.tags.clone();
    let cluster = &ctx.settings.cluster_name;
    tags.insert(cluster_tag_key(cluster), "owned".into());
    tags.insert("eks:eks-cluster-name".into(), cluster.clone());
    // nodesmith's own mark: teardown deletes what carries it, not another controller's look-alikes.
    tags.insert(crate::names::OWNER_TAG.into(), cluster.clone());
    tags.insert(NODECLASS_TAG.into(), class.name_any());
    if let Some(pool) = claim.labels().get(crate::names::NODEPOOL_LABEL) {
        tags.insert(NODEPOOL_TAG.into(), pool.clone());
    }
    tags
}

fn metadata_options(class: &EC2NodeClass) -> MetadataOptions {
    let defaults = MetadataOptions::default();
    let Some(m) = class.spec.metadata_options.as_ref() else { return defaults };
    MetadataOptions {
        http_endpoint: m.http_endpoint.clone().unwrap_or(defaults.http_endpoint),
        http_protocol_ipv6: m.http_protocol_ipv6.clone().unwrap_or(defaults.http_protocol_ipv6),
        http_put_response_hop_limit: m
            .http_put_response_hop_limit
            .map_or(defaults.http_put_response_hop_limit, |h| h as i32),
        http_tokens: m.http_tokens.clone().unwrap_or(defaults.http_tokens),
    }
}

/// `20Gi` → 20 (EBS sizes are whole GiB); other units are converted and rounded up.
fn volume_size_gib(size: &str) -> Option<i32> {
    let bytes =
        crate::catalog::resources::parse_quantity(size, crate::catalog::resources::ResourceName::EphemeralStorage)
            .ok()?;
    i32::try_from((bytes + (1 << 30) - 1) >> 30).ok()
}

/// The class's block devices; when it names none, an encrypted gp3 root volume as Karpenter gives one (an AMI's
/// own mapping is often unencrypted and small): 20 GiB, and for Bottlerocket a 4 GiB OS volume and a 20 GiB data
/// volume. A `Custom` family gets the AMI's own mapping, as in Karpenter.
fn block_devices(class: &EC2NodeClass) -> Vec<BlockDevice> {
    if class.spec.block_device_mappings.is_empty() {
        return default_block_devices(class);
    }
    class
        .spec
        .block_device_mappings
        .iter()
        .filter_map(|m| {
            let ebs = m.ebs.as_ref()?;
            Some(BlockDevice {
                device_name: m.device_name.clone()?,
                volume_size_gib: ebs.volume_size.as_deref().and_then(volume_size_gib),
                volume_type: ebs.volume_type.clone(),
                iops: ebs.iops.map(|v| v as i32),
                throughput: ebs.throughput.map(|v| v as i32),
                encrypted: ebs.encrypted,
                kms_key_id: ebs.kms_key_id.clone(),
                snapshot_id: ebs.snapshot_id.clone(),
                delete_on_termination: ebs.delete_on_termination,
            })
        })
        .collect()
}

fn default_block_devices(class: &EC2NodeClass) -> Vec<BlockDevice> {
    let aliased = class.spec.ami_selector_terms.iter().any(|t| t.alias.is_some());
    if !aliased && class.spec.ami_family.as_deref().is_some_and(|f| f.eq_ignore_ascii_case("custom")) {
        return Vec::new();
    }
    let volume = |device: &str, gib: i32| BlockDevice {
        device_name: device.into(),
        volume_size_gib: Some(gib),
        volume_type: Some("gp3".into()),
        iops: None,
        throughput: None,
        encrypted: Some(true),
        kms_key_id: None,
        snapshot_id: None,
        delete_on_termination: Some(true),
    };
    match ami_family(class) {
        AmiFamily::Bottlerocket => vec![volume("/dev/xvda", 4), volume("/dev/xvdb", 20)],
        AmiFamily::AL2023 | AmiFamily::AL2 | AmiFamily::Custom => vec![volume("/dev/xvda", 20)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_of_the_same_attempt_sends_the_same_token_and_a_new_attempt_another() {
        let token = client_token("uid-1", 0, CapacityType::Spot);
        assert_eq!(token, client_token("uid-1", 0, CapacityType::Spot), "a lost outcome retried");
        assert_eq!(token.len(), 32, "within CreateFleet's 64 characters");
        let others = [
            client_token("uid-1", 1, CapacityType::Spot),
            client_token("uid-1", 0, CapacityType::OnDemand),
            client_token("uid-2", 0, CapacityType::Spot),
        ];
        assert!(others.iter().all(|o| *o != token), "after a recorded failure, the fallback, another NodeClaim");
    }

    /// An EC2NodeClass whose status lists what `nodeclass_status::ami_statuses` makes of an AL2023 alias.
    fn class_with_alias_images() -> EC2NodeClass {
        use crate::cloud::nodeclass::{AmiVariant, ImageInfo};
        let image = |id: &str, arch: &str, variant| ImageInfo {
            id: id.into(),
            name: "al2023@latest".into(),
            arch: arch.into(),
            creation_date: String::new(),
            variant: Some(variant),
        };
        let amis = crate::controller::nodeclass_status::ami_statuses(&[
            image("ami-amd64-nvidia", "amd64", AmiVariant::Nvidia),
            image("ami-amd64", "amd64", AmiVariant::Standard),
            image("ami-arm64", "arm64", AmiVariant::Standard),
        ]);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "default"},
            "spec": {"amiSelectorTerms": [{"alias": "al2023@latest"}], "role": "r",
                     "subnetSelectorTerms": [{"id": "subnet-1"}], "securityGroupSelectorTerms": [{"id": "sg-1"}]},
            "status": {"amis": amis},
        }))
        .expect("an EC2NodeClass")
    }

    #[test]
    fn nvidia_gpu_types_boot_the_nvidia_image_and_the_rest_the_standard_one() {
        let class = class_with_alias_images();
        let image_of = |name: &str| {
            let instance_type =
                crate::catalog::embedded_instance_types().iter().find(|t| t.name == name).expect("in the catalog");
            image_for_type(&class, instance_type)
        };
        assert_eq!(image_of("g5.xlarge").as_deref(), Some("ami-amd64-nvidia"));
        assert_eq!(image_of("g4dn.xlarge").as_deref(), Some("ami-amd64-nvidia"));
        assert_eq!(image_of("m5.large").as_deref(), Some("ami-amd64"));
        assert_eq!(image_of("m6g.large").as_deref(), Some("ami-arm64"));
    }

    #[test]
    fn volume_sizes_are_whole_gib() {
        assert_eq!(volume_size_gib("20Gi"), Some(20));
        assert_eq!(volume_size_gib("100G"), Some(94));
        assert_eq!(volume_size_gib("1Ti"), Some(1024));
        assert_eq!(volume_size_gib("lots"), None);
    }

    fn class(spec: serde_json::Value) -> EC2NodeClass {
        let mut spec = spec;
        spec["role"] = "r".into();
        spec["subnetSelectorTerms"] = serde_json::json!([{"id": "subnet-1"}]);
        spec["securityGroupSelectorTerms"] = serde_json::json!([{"id": "sg-1"}]);
        serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}, "spec": spec})).expect("a valid class")
    }

    #[test]
    fn a_class_without_block_devices_gets_an_encrypted_gp3_root_volume() {
        let root = block_devices(&class(serde_json::json!({"amiSelectorTerms": [{"alias": "al2023@latest"}]})));
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].device_name, "/dev/xvda");
        assert_eq!(root[0].volume_size_gib, Some(20));
        assert_eq!(root[0].volume_type.as_deref(), Some("gp3"));
        assert_eq!(root[0].encrypted, Some(true));
        assert_eq!(root[0].delete_on_termination, Some(true));

        let bottlerocket =
            block_devices(&class(serde_json::json!({"amiSelectorTerms": [{"alias": "bottlerocket@latest"}]})));
        let sizes: Vec<(&str, Option<i32>)> =
            bottlerocket.iter().map(|d| (d.device_name.as_str(), d.volume_size_gib)).collect();
        assert_eq!(sizes, [("/dev/xvda", Some(4)), ("/dev/xvdb", Some(20))]);
        assert!(bottlerocket.iter().all(|d| d.encrypted == Some(true)));

        let custom = class(serde_json::json!({"amiFamily": "Custom", "amiSelectorTerms": [{"id": "ami-1"}]}));
        assert!(block_devices(&custom).is_empty(), "a custom AMI keeps its own mapping");
    }

    #[test]
    fn a_class_with_block_devices_gets_exactly_those() {
        let own = block_devices(&class(serde_json::json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": "100Gi", "volumeType": "io2"}}],
        })));
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].volume_size_gib, Some(100));
        assert_eq!(own[0].volume_type.as_deref(), Some("io2"));
        assert_eq!(own[0].encrypted, None, "what the class did not say is left to EC2");
    }
}

/// `launch` through the in-memory cloud: what reaches AWS, and what the caches learn.
#[cfg(test)]
mod fake_cloud_tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::nodeclass::SubnetInfo;
    use crate::controller::testing;

    /// A ready class: two subnets in us-east-1a, one in us-east-1b, the standard AL2023 images.
    fn ready_class() -> EC2NodeClass {
        let amis = crate::controller::nodeclass_status::ami_statuses(&[crate::cloud::nodeclass::ImageInfo {
            id: "ami-amd64".into(),
            name: "al2023@latest".into(),
            arch: "amd64".into(),
            creation_date: String::new(),
            variant: Some(crate::cloud::nodeclass::AmiVariant::Standard),
        }]);
        serde_json::from_value(json!({
            "metadata": {"name": "default"},
            "spec": {"amiSelectorTerms": [{"alias": "al2023@latest"}], "role": "r",
                     "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}],
                     "securityGroupSelectorTerms": [{"id": "sg-1"}]},
            "status": {
                "amis": amis,
                "subnets": [{"id": "subnet-a1", "zone": "us-east-1a"}, {"id": "subnet-a2", "zone": "us-east-1a"},
                            {"id": "subnet-b", "zone": "us-east-1b"}],
                "securityGroups": [{"id": "sg-1"}],
                "instanceProfile": "demo_default",
            },
        }))
        .expect("an EC2NodeClass")
    }

    fn claim(name: &str, requirements: serde_json::Value) -> NodeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"karpenter.sh/nodepool": "default"}},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                     "requirements": requirements},
        }))
        .expect("a NodeClaim")
    }

    fn m5_large(zones: &[&str], capacity_types: &[&str]) -> serde_json::Value {
        json!([
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large"]},
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": capacity_types},
        ])
    }

    fn cloud_with_subnets(free: &[(&str, &str, i64)]) -> Arc<FakeCloud> {
        let cloud = Arc::new(FakeCloud::default());
        if let Ok(mut subnets) = cloud.subnets.lock() {
            for (id, zone, available_ips) in free {
                subnets.push(SubnetInfo {
                    id: (*id).into(),
                    zone: (*zone).into(),
                    zone_id: String::new(),
                    available_ips: *available_ips,
                });
            }
        }
        cloud
    }

    fn fleet_calls(cloud: &FakeCloud) -> Vec<String> {
        cloud.calls().into_iter().filter(|c| c.starts_with("CreateFleet")).collect()
    }

    #[tokio::test]
    async fn an_instance_already_launched_for_the_nodeclaim_is_adopted_and_nothing_is_launched() {
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 100)]);
        cloud.add_instance("i-0123", Some("a"), std::time::Duration::from_secs(30));
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        let launched = launch(&ctx, &claim("a", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect("adopted");
        assert_eq!(launched.instance_id, "i-0123");
        assert!(fleet_calls(&cloud).is_empty(), "{:?}", cloud.calls());
    }

    #[tokio::test]
    async fn spot_without_capacity_falls_back_to_on_demand_and_is_remembered_as_unavailable() {
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 100)]);
        cloud.exhaust("m5.large", "us-east-1a", CapacityType::Spot);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        let launched =
            launch(&ctx, &claim("a", m5_large(&["us-east-1a"], &["spot", "on-demand"]))).await.expect("launched");
        assert_eq!(launched.capacity_type, CapacityType::OnDemand);
        assert_eq!(launched.subnet_id.as_deref(), Some("subnet-a1"));
        let spot = OfferingKey {
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::Spot,
        };
        assert!(ctx.caches().unavailable.snapshot().contains(&spot), "the spot offering is avoided from now on");
        // Spot, then on-demand: two fleets, each with the token of its capacity type.
        let calls = fleet_calls(&cloud);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0], format!("CreateFleet {}", client_token("uid-a", 0, CapacityType::Spot)));
        assert_eq!(calls[1], format!("CreateFleet {}", client_token("uid-a", 0, CapacityType::OnDemand)));

        // The next NodeClaim does not ask for spot there again.
        let next =
            launch(&ctx, &claim("b", m5_large(&["us-east-1a"], &["spot", "on-demand"]))).await.expect("launched");
        assert_eq!(next.capacity_type, CapacityType::OnDemand);
        assert_eq!(fleet_calls(&cloud).len(), 3, "{:?}", cloud.calls());
    }

    #[tokio::test]
    async fn a_retry_whose_outcome_was_lost_sends_the_same_client_token() {
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 100)]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        let nodeclaim = claim("a", m5_large(&["us-east-1a"], &["on-demand"]));
        cloud.fail_next("CreateFleet", "InternalError");
        let failed = launch(&ctx, &nodeclaim).await.expect_err("CreateFleet failed");
        assert!(!failed.is_insufficient_capacity(), "{failed}");
        launch(&ctx, &nodeclaim).await.expect("launched");
        let calls = fleet_calls(&cloud);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0], calls[1], "the same attempt, the same token");
    }

    #[tokio::test]
    async fn launches_are_debited_from_their_subnet_until_its_free_addresses_show_them() {
        // As free as each other: the first launch takes subnet-a1 (the lower id breaks the tie); debited, it has
        // one address less than subnet-a2 for the second, though DescribeSubnets still says ten for both.
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 10), ("subnet-a2", "us-east-1a", 10)]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        let first = launch(&ctx, &claim("a", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect("launched");
        let second = launch(&ctx, &claim("b", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect("launched");
        assert_eq!(first.subnet_id.as_deref(), Some("subnet-a1"));
        assert_eq!(second.subnet_id.as_deref(), Some("subnet-a2"));
    }

    fn calls_of(cloud: &FakeCloud, method: &str) -> usize {
        cloud.calls().iter().filter(|c| c.split(' ').next() == Some(method)).count()
    }

    #[tokio::test]
    async fn the_first_launch_of_a_nodeclaim_made_here_looks_for_no_earlier_instance_and_a_retry_does() {
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 100)]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        let nodeclaim = claim("a", m5_large(&["us-east-1a"], &["on-demand"]));
        ctx.caches().untried.remember("a");
        cloud.fail_next("CreateFleet", "InternalError");
        launch(&ctx, &nodeclaim).await.expect_err("CreateFleet failed");
        assert_eq!(calls_of(&cloud, "FindInstanceForNodeClaim"), 0, "{:?}", cloud.calls());
        // The retry cannot know whether the failed call launched anything: it looks.
        launch(&ctx, &nodeclaim).await.expect("launched");
        assert_eq!(calls_of(&cloud, "FindInstanceForNodeClaim"), 1, "{:?}", cloud.calls());
        // One made elsewhere (another replica, before a restart) is looked for at once.
        launch(&ctx, &claim("b", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect("launched");
        assert_eq!(calls_of(&cloud, "FindInstanceForNodeClaim"), 2, "{:?}", cloud.calls());
    }

    #[tokio::test]
    async fn subnets_read_recently_are_not_read_again_for_a_launch() {
        let cloud = cloud_with_subnets(&[
            ("subnet-a1", "us-east-1a", 10),
            ("subnet-a2", "us-east-1a", 10),
            ("subnet-b", "us-east-1b", 10),
        ]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        read_subnet_addresses(&ctx, &class_subnets(&ready_class())).await;
        assert_eq!(calls_of(&cloud, "DescribeSubnets"), 1);
        let first = launch(&ctx, &claim("a", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect("launched");
        let second = launch(&ctx, &claim("b", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect("launched");
        assert_eq!(calls_of(&cloud, "DescribeSubnets"), 1, "{:?}", cloud.calls());
        // The addresses read before both launches still spread them: the first is debited.
        assert_eq!(first.subnet_id.as_deref(), Some("subnet-a1"));
        assert_eq!(second.subnet_id.as_deref(), Some("subnet-a2"));
    }

    #[tokio::test]
    async fn a_launch_offers_sixty_instance_types_each_in_every_zone_it_may_use() {
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 100), ("subnet-b", "us-east-1b", 100)]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        let zones = ["us-east-1a".to_string(), "us-east-1b".to_string()];
        let types: Vec<String> = ctx
            .catalog()
            .instance_types
            .iter()
            .filter(|t| t.kubernetes_arch() == Some("amd64") && t.gpu.is_none())
            .filter(|t| zones.iter().all(|z| t.zones.contains(z)) && t.usage_classes.iter().any(|u| u == "on-demand"))
            .take(80)
            .map(|t| t.name.clone())
            .collect();
        assert_eq!(types.len(), 80, "the catalog has enough types for the test");
        // Nothing has capacity, so the error lists every offering CreateFleet was given.
        for t in &types {
            for zone in &zones {
                cloud.exhaust(t, zone, CapacityType::OnDemand);
            }
        }
        let requirements = json!([
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": types},
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
        ]);
        let error = launch(&ctx, &claim("a", requirements)).await.expect_err("no capacity anywhere");
        let LaunchError::Fleet(FleetError::InsufficientCapacity { offerings, .. }) = error else {
            panic!("expected no capacity, got {error}");
        };
        let offered: std::collections::BTreeSet<&str> = offerings.iter().map(|o| o.instance_type.as_str()).collect();
        assert_eq!(offered.len(), MAX_INSTANCE_TYPES, "the 60 first of the NodeClaim's types");
        assert!(offered.iter().all(|t| types[..60].iter().any(|first| first == t)), "in the plan's order");
        assert_eq!(offerings.len(), 2 * MAX_INSTANCE_TYPES, "each in both zones");
    }

    #[tokio::test]
    async fn a_nodeclaim_whose_offerings_are_all_unavailable_launches_nothing_and_says_so() {
        let cloud = cloud_with_subnets(&[("subnet-a1", "us-east-1a", 100)]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![ready_class()]));
        // No subnet in us-east-1c: nothing of this NodeClaim can launch.
        let error = launch(&ctx, &claim("a", m5_large(&["us-east-1c"], &["on-demand"]))).await.expect_err("nothing");
        assert!(error.is_insufficient_capacity(), "{error}");
        assert!(error.to_string().contains("no on-demand offering"), "{error}");
        assert!(fleet_calls(&cloud).is_empty());
        let key = OfferingKey {
            instance_type: "m5.large".into(),
            zone: "us-east-1c".into(),
            capacity_type: CapacityType::OnDemand,
        };
        assert!(ctx.caches().unavailable.snapshot().contains(&key), "the next plan looks elsewhere");
    }

    #[tokio::test]
    async fn a_missing_or_unresolved_class_is_an_error_naming_it() {
        let cloud = cloud_with_subnets(&[]);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![]));
        let error = launch(&ctx, &claim("a", m5_large(&["us-east-1a"], &["on-demand"]))).await.expect_err("no class");
        assert!(error.to_string().contains("default"), "{error}");
        assert!(fleet_calls(&cloud).is_empty());
    }
}
