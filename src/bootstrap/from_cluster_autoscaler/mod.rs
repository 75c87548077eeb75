//! `nodesmith migrate from-cluster-autoscaler`: Karpenter's checklist for leaving Cluster Autoscaler, as steps
//! that each look at the cluster before they change it, so that a run killed anywhere converges when run again:
//!
//! 1. refuse unless `setup` ran (nodesmith's controller role, and the NodePool the pods will move to);
//! 2. read the node groups (EKS managed node groups and Auto Scaling groups tagged for the cluster) and their
//!    nodes; write down how things are (`record`) before the first change;
//! 3. raise the NodePool's limits to hold what the groups could hold;
//! 4. taint the groups' nodes `NoSchedule`: `keep` of them for the nodesmith controller itself (the chart tolerates
//!    that taint), the rest to be drained;
//! 5. scale Cluster Autoscaler to 0;
//! 6. one node at a time: evict its pods (PodDisruptionBudgets respected), wait until they run again elsewhere,
//!    then terminate its instance with the group's desired capacity decremented;
//! 7. move what else runs on the kept nodes (all but the pods that tolerate their taint) the same way.
//!
//! `--rollback` scales Cluster Autoscaler back, lifts the taints and restores the groups' minimum sizes.
//! `--dry-run` reads everything and reports what each step would change.

pub mod drain;
pub mod groups;
pub mod plan;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::report::{Action, Ledger, ProgressObserver};
use crate::apis::nodepool::NodePool;
use crate::cloud::error::CloudError;
use crate::cloud::instances::instance_id_from_provider_id;
use crate::cloud::resource_names::ClusterNames;
use drain::DrainError;
use plan::{GroupNode, NodeGroup};
use record::{GroupSize, Record, Target};

#[derive(Debug, Clone)]
pub struct Options {
    pub cluster: String,
    /// The NodePool the pods move to (setup --apply writes `default`).
    pub nodepool: String,
    /// Cluster Autoscaler's Deployment: namespace and name.
    pub autoscaler: (String, String),
    /// Nodes of the groups left running for the controller itself.
    pub keep: usize,
    /// How long one node may take to drain, and its pods to run again elsewhere.
    pub drain_timeout: Duration,
    pub dry_run: bool,
    pub rollback: bool,
    pub progress: Option<ProgressObserver>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{0}")]
    NotSetUp(String),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Drain(#[from] DrainError),
    #[error("{0}")]
    Invalid(String),
}

/// Runs the migration (or its rollback) against the cluster `kube` reaches, which the caller has checked is
/// `options.cluster`.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    kube: &kube::Client,
    options: &Options,
) -> Result<Ledger, MigrationError> {
    let mut ledger = Ledger::with_observer(options.dry_run, options.progress.clone());
    let (namespace, name) = &options.autoscaler;
    let records: Api<ConfigMap> = Api::namespaced(kube.clone(), namespace);
    let groups = groups::Groups::new(sdk);
    if options.rollback {
        rollback(kube, &records, &groups, options, &mut ledger).await?;
        return Ok(ledger);
    }

    ledger.step("setup");
    check_setup(sdk, kube, options).await?;
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), namespace);

    ledger.step("node groups");
    let found = groups.of_cluster(&options.cluster).await?;
    let nodes: Api<Node> = Api::all(kube.clone());
    let existing = record::read(&records).await?;
    let record = match existing {
        Some(record) => {
            ledger.record_noted(
                "migration-record",
                record::NAME,
                Action::Unchanged,
                0,
                "resuming the migration it records",
            );
            record
        }
        None => {
            let replicas = deployments.get_opt(name).await?.map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1));
            let replicas = replicas.ok_or_else(|| {
                MigrationError::NotSetUp(format!(
                    "no Deployment {namespace}/{name}: name Cluster Autoscaler's with --autoscaler NAMESPACE/NAME"
                ))
            })?;
            let record = first_record(&found, &nodes.list(&ListParams::default()).await?.items, replicas, options);
            if !options.dry_run {
                record::create(&records, &record).await?;
            }
            ledger
                .record("migration-record", record::NAME, Action::Created, 1)
                .spec(serde_json::to_value(&record).unwrap_or_default());
            record
        }
    };
    for group in &found {
        ledger.record_noted(
            "autoscaling-group",
            &group.name,
            Action::Unchanged,
            0,
            format!(
                "{} instance(s), min {} max {}{}",
                group.instances.len(),
                group.min_size,
                group.max_size,
                group.nodegroup.as_ref().map(|n| format!(", EKS node group {n}")).unwrap_or_default()
            ),
        );
    }

    ledger.step("NodePool limits");
    raise_limits(kube, &found, options, &mut ledger).await?;

    ledger.step("taint");
    let [(drain_key, drain_value), (kept_key, kept_value)] = drain::TAINTS;
    let drained: Vec<&str> = record.drained.iter().map(|t| t.node.as_str()).collect();
    let why = format!("{drain_key}={drain_value}:NoSchedule, to drain");
    taint_each(&nodes, &drained, (drain_key, drain_value), &why, options.dry_run, &mut ledger).await?;
    let kept: Vec<&str> = record.kept.iter().map(String::as_str).collect();
    let why =
        format!("{kept_key}={kept_value}:NoSchedule, kept for the nodesmith controller, whose chart tolerates it");
    taint_each(&nodes, &kept, (kept_key, kept_value), &why, options.dry_run, &mut ledger).await?;

    ledger.step("Cluster Autoscaler");
    let before = drain::scale(&deployments, name, 0, options.dry_run).await?;
    let action = if before.is_some_and(|b| b != 0) { Action::Updated } else { Action::Unchanged };
    ledger.record_noted(
        "deployment",
        format!("{namespace}/{name}"),
        action,
        u32::from(action == Action::Updated),
        "replicas 0",
    );

    // Each group's minimum size and instances in service, as this run changes them.
    let mut sizes: BTreeMap<String, (i32, i32)> = found
        .iter()
        .map(|g| (g.name.clone(), (g.min_size, i32::try_from(g.instances.len()).unwrap_or(i32::MAX))))
        .collect();
    let mut record = record;
    for index in 0..record.drained.len() {
        let target = record.drained[index].clone();
        ledger.step(&format!("drain {}", target.node));
        let in_service = found.iter().any(|g| g.name == target.group && g.instances.contains(&target.instance_id));
        if !in_service {
            ledger.record_noted(
                "ec2-instance",
                &target.instance_id,
                Action::Unchanged,
                0,
                format!("node {}: no longer in group {}", target.node, target.group),
            );
            continue;
        }
        if options.dry_run {
            ledger.record_noted(
                "ec2-instance",
                &target.instance_id,
                Action::Deleted,
                2,
                format!(
                    "node {} drained, then terminated in group {} (desired capacity − 1)",
                    target.node, target.group
                ),
            );
            continue;
        }
        let owners = match &target.owners {
            Some(owners) => owners.clone(),
            None => {
                let owners = drain::owners_on(kube, &target.node, None).await?;
                record.drained[index].owners = Some(owners.clone());
                record::update(&records, &record).await?;
                owners
            }
        };
        let evicted = drain::evict_all(kube, &target.node, None, options.drain_timeout).await?;
        drain::wait_replaced(kube, &target.node, &owners, options.drain_timeout).await?;
        let calls = u32::try_from(evicted).unwrap_or(u32::MAX);
        let action = if evicted > 0 { Action::Updated } else { Action::Unchanged };
        let note = format!("drained: {evicted} pod(s) evicted; {} workload(s) run again elsewhere", owners.len());
        ledger.record_noted("node", &target.node, action, calls, note);
        if let Some((min_size, count)) = sizes.get_mut(&target.group) {
            // A group refuses to shrink below its minimum: lower it first, to what stays.
            let left = (*count - 1).max(0);
            if *min_size > left {
                groups.set_min_size(&target.group, left, *count).await?;
                *min_size = left;
                ledger.record_noted(
                    "autoscaling-group",
                    &target.group,
                    Action::Updated,
                    1,
                    format!("minimum size {left}"),
                );
            }
            *count = left;
        }
        groups.terminate(&target.instance_id).await?;
        ledger.record_noted(
            "ec2-instance",
            &target.instance_id,
            Action::Deleted,
            1,
            format!("terminated in group {}, desired capacity decremented", target.group),
        );
    }
    // The kept nodes serve the controller only: what else runs there moves to nodesmith's nodes too.
    for kept in &record.kept {
        ledger.step(&format!("move workloads off {kept}"));
        let stays = Some((kept_key, kept_value));
        let owners = drain::owners_on(kube, kept, stays).await?;
        if options.dry_run {
            ledger.record_noted(
                "node",
                kept,
                Action::Updated,
                0,
                format!("{} workload(s) would move to nodesmith's nodes", owners.len()),
            );
            continue;
        }
        let evicted = drain::evict_all(kube, kept, stays, options.drain_timeout).await?;
        drain::wait_replaced(kube, kept, &owners, options.drain_timeout).await?;
        let action = if evicted > 0 { Action::Updated } else { Action::Unchanged };
        let note = format!("{evicted} pod(s) moved to nodesmith's nodes; the controller's stay");
        ledger.record_noted("node", kept, action, u32::try_from(evicted).unwrap_or(u32::MAX), note);
    }
    ledger.outputs.insert("autoscaler_replicas", "0".into());
    ledger.outputs.insert("nodes_kept", record.kept.join(","));
    Ok(ledger)
}

/// Puts the `NoSchedule` taint `key=value` on each node, recording each with `why`.
async fn taint_each(
    nodes: &Api<Node>,
    names: &[&str],
    (key, value): (&str, &str),
    why: &str,
    dry_run: bool,
    ledger: &mut Ledger,
) -> Result<(), kube::Error> {
    for name in names {
        let changed = drain::set_taint(nodes, name, key, Some(value), dry_run).await?;
        let action = if changed { Action::Updated } else { Action::Unchanged };
        ledger.record_noted("node", *name, action, u32::from(changed), why);
    }
    Ok(())
}

/// Nodesmith's controller role (setup's IAM) and the NodePool the pods move to must exist.
async fn check_setup(
    sdk: &aws_config::SdkConfig,
    kube: &kube::Client,
    options: &Options,
) -> Result<(), MigrationError> {
    let cluster = &options.cluster;
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let names = ClusterNames::for_cluster(cluster, &region);
    let iam = aws_sdk_iam::Client::new(sdk);
    match iam.get_role().role_name(&names.controller_role).send().await {
        Ok(_) => {}
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {
            return Err(MigrationError::NotSetUp(format!(
                "nodesmith is not set up for cluster {cluster} in {region} (no role {}): run `nodesmith setup --cluster {cluster} --apply`, install the chart, then run this again",
                names.controller_role
            )));
        }
        Err(error) => return Err(CloudError::from_sdk("iam:GetRole", Some(&names.controller_role), error).into()),
    }
    let pools: Api<NodePool> = Api::all(kube.clone());
    let pool = match pools.get_opt(&options.nodepool).await {
        Ok(pool) => pool,
        // The NodePool CRD itself is missing.
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(error) => return Err(error.into()),
    };
    if pool.is_none() {
        return Err(MigrationError::NotSetUp(format!(
            "no NodePool {} for the pods to move to: run `nodesmith setup --cluster {cluster} --apply` (it writes `default`), or name yours with --nodepool",
            options.nodepool
        )));
    }
    Ok(())
}

/// How things are before the first change, and which nodes stay and go.
fn first_record(found: &[NodeGroup], nodes: &[Node], autoscaler_replicas: i32, options: &Options) -> Record {
    let group_of: BTreeMap<&str, &str> =
        found.iter().flat_map(|g| g.instances.iter().map(move |i| (i.as_str(), g.name.as_str()))).collect();
    let group_nodes: Vec<GroupNode> = nodes
        .iter()
        .filter_map(|node| {
            let provider_id = node.spec.as_ref()?.provider_id.as_deref()?;
            let instance_id = instance_id_from_provider_id(provider_id)?;
            let group = group_of.get(instance_id)?;
            Some(GroupNode {
                name: node.name_any(),
                group: group.to_string(),
                instance_id: instance_id.to_string(),
                zone: node.labels().get(crate::names::ZONE_LABEL).cloned().unwrap_or_default(),
                created: node.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    let (kept, drained) = plan::choose(&group_nodes, options.keep);
    let target = |name: &String| {
        let node = group_nodes.iter().find(|n| &n.name == name)?;
        Some(Target {
            node: name.clone(),
            instance_id: node.instance_id.clone(),
            group: node.group.clone(),
            owners: None,
        })
    };
    Record {
        autoscaler: format!("{}/{}", options.autoscaler.0, options.autoscaler.1),
        autoscaler_replicas,
        groups: found
            .iter()
            .map(|g| (g.name.clone(), GroupSize { min_size: g.min_size, desired: g.desired }))
            .collect(),
        kept,
        drained: drained.iter().filter_map(target).collect(),
    }
}

/// Raises the NodePool's CPU and memory limits to what the groups could hold, where they are lower.
async fn raise_limits(
    kube: &kube::Client,
    found: &[NodeGroup],
    options: &Options,
    ledger: &mut Ledger,
) -> Result<(), MigrationError> {
    let types = crate::catalog::embedded_instance_types();
    let size_of = |name: &str| types.iter().find(|t| t.name == name).map(|t| (t.vcpus, t.memory_mib));
    let limits = plan::limits_for(found, size_of).map_err(MigrationError::Invalid)?;
    let pools: Api<NodePool> = Api::all(kube.clone());
    let Some(pool) = pools.get_opt(&options.nodepool).await? else { return Ok(()) };
    let current: BTreeMap<String, String> = pool.spec.limits.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let wanted = format!("cpu {}, memory {}Mi", limits.cpu, limits.memory_mib);
    if plan::holds(&current, limits) {
        ledger.record_noted("nodepool", &options.nodepool, Action::Unchanged, 0, format!("limits hold {wanted}"));
        return Ok(());
    }
    if !options.dry_run {
        let patch = serde_json::json!({"spec": {"limits": {"cpu": limits.cpu.to_string(), "memory": format!("{}Mi", limits.memory_mib)}}});
        pools.patch(&options.nodepool, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    ledger.record_noted("nodepool", &options.nodepool, Action::Updated, 1, format!("limits raised to {wanted}"));
    Ok(())
}

/// Scales Cluster Autoscaler back, lifts the taints, restores the groups' minimum sizes, and forgets the record.
async fn rollback(
    kube: &kube::Client,
    records: &Api<ConfigMap>,
    groups: &groups::Groups,
    options: &Options,
    ledger: &mut Ledger,
) -> Result<(), MigrationError> {
    let (namespace, name) = &options.autoscaler;
    ledger.step("rollback");
    let Some(record) = record::read(records).await? else {
        return Err(MigrationError::Invalid(format!(
            "no migration to roll back: {namespace}/{} does not exist",
            record::NAME
        )));
    };
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), namespace);
    let before = drain::scale(&deployments, name, record.autoscaler_replicas, options.dry_run).await?;
    let action =
        if before.is_some_and(|b| b != record.autoscaler_replicas) { Action::Updated } else { Action::Unchanged };
    ledger.record_noted(
        "deployment",
        format!("{namespace}/{name}"),
        action,
        u32::from(action == Action::Updated),
        format!("replicas {}", record.autoscaler_replicas),
    );
    let nodes: Api<Node> = Api::all(kube.clone());
    for (key, _) in drain::TAINTS {
        let tainted: BTreeSet<String> = drain::tainted(&nodes, key).await?.into_iter().collect();
        for node in &tainted {
            let changed = drain::set_taint(&nodes, node, key, None, options.dry_run).await?;
            let action = if changed { Action::Updated } else { Action::Unchanged };
            ledger.record_noted("node", node, action, u32::from(changed), format!("taint {key} lifted"));
        }
    }
    for group in groups.of_cluster(&options.cluster).await? {
        let Some(size) = record.groups.get(&group.name) else { continue };
        if group.min_size >= size.min_size {
            continue;
        }
        if !options.dry_run {
            groups.set_min_size(&group.name, size.min_size, group.desired).await?;
        }
        ledger.record_noted(
            "autoscaling-group",
            &group.name,
            Action::Updated,
            1,
            format!("minimum size {} again", size.min_size),
        );
    }
    if !options.dry_run {
        record::delete(records).await?;
    }
    ledger.record("migration-record", record::NAME, Action::Deleted, 1);
    Ok(())
}
