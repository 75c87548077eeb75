//! `explain pod`: a waiting pod gets the plan the provisioner would make now, with each NodePool's refusal where
//! none takes it; a pod on a nodesmith node gets why that node is of its type and capacity type.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde::Serialize;

use super::Offering;
use super::events::{self, EventLine};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::pod::Pod;
use crate::catalog::CapacityType;
use crate::catalog::pricing::PriceTable;
use crate::cli::CliError;
use crate::controller::cluster_snapshot::{Planning, pending_pods};
use crate::controller::nominations::Nominations;
use crate::controller::volume_topology::pod_request_with_volumes;
use crate::controller::{Context, pods};
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL};
use crate::scheduling::{self, NodePoolRefusal};

/// Cheapest options listed.
const OPTIONS_SHOWN: usize = 5;

#[derive(Debug, Serialize)]
pub struct PodExplanation {
    pub pod: String,
    pub phase: String,
    #[serde(flatten)]
    pub placement: Placement,
    /// Which instance types and prices the answer was worked out with.
    pub catalog: String,
    pub events: Vec<EventLine>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Placement {
    /// No node yet: what the provisioner would do for it now.
    Waiting {
        /// kube-scheduler's word on why no node takes it, when it has marked it Unschedulable.
        #[serde(skip_serializing_if = "Option::is_none")]
        scheduler: Option<String>,
        /// The scheduler has marked it Unschedulable: the provisioner plans for it.
        provisionable: bool,
        plan: WaitingPlan,
        /// NodeClaims whose nodes have not registered yet: a pod planned onto one waits for it.
        launching: Vec<String>,
    },
    /// On a node of a NodePool.
    OnNodesmithNode { node: String, nodeclaim: String, choice: Choice },
    /// On a node no NodePool manages (a node group, Fargate).
    OnOtherNode { node: String },
}

#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WaitingPlan {
    /// A new node would be launched for it (with the other waiting pods planned onto it).
    NewNode {
        nodepool: String,
        instance_type: String,
        capacity_type: CapacityType,
        zone: String,
        usd_per_hour: f64,
        /// How many instance types the NodeClaim would allow; the cheapest of them.
        instance_type_options: usize,
        cheapest_options: Vec<PricedType>,
    },
    /// It fits on a node (or a NodeClaim being launched) that is there already.
    ExistingNode { node: String },
    /// No NodePool can give it a node: each one's first refusal.
    Unschedulable { reason: String, nodepools: Vec<NodePoolRefusal> },
    /// It cannot be planned at all.
    Refused { reason: String },
}

#[derive(Debug, Serialize)]
pub struct PricedType {
    pub instance_type: String,
    pub usd_per_hour: Option<f64>,
}

/// Why a node is what it is.
#[derive(Debug, Serialize)]
pub struct Choice {
    pub nodepool: String,
    pub instance_type: String,
    pub capacity_type: String,
    pub zone: String,
    pub usd_per_hour: Option<f64>,
    /// What its NodeClaim was made to hold: the requests of the pods planned onto it and its DaemonSets.
    pub made_for: String,
    /// The instance types its NodeClaim allowed (each holds `made_for`), and the cheapest of them here.
    pub allowed_types: usize,
    pub cheapest_allowed: Vec<PricedType>,
    pub capacity_types_allowed: Vec<String>,
    /// The pod's own node requirements (node selector, required affinity, volume zones).
    pub pod_requires: Vec<String>,
    /// In sentences: the capacity type, then the type.
    pub why: Vec<String>,
}

pub fn explain(
    ctx: &Context,
    namespace: &str,
    name: &str,
    scheduler: Option<String>,
    events: Vec<EventLine>,
    catalog: String,
) -> Result<PodExplanation, CliError> {
    let pod = ctx.state.pods.get(&ObjectRef::new(name).within(namespace)).ok_or_else(|| CliError::NotFound {
        kind: "pod",
        name: format!("{namespace}/{name}"),
        hint: String::new(),
    })?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let placement = match pod.node_name() {
        None => waiting(ctx, &pod, scheduler),
        Some(node) => {
            let claims = ctx.state.nodeclaims.state();
            let claim =
                claims.into_iter().find(|c| c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node));
            match claim {
                Some(claim) => Placement::OnNodesmithNode {
                    node: node.to_string(),
                    nodeclaim: claim.name_any(),
                    choice: choice(ctx, &pod, &claim),
                },
                None => Placement::OnOtherNode { node: node.to_string() },
            }
        }
    };
    Ok(PodExplanation { pod: pods::key(&pod), phase, placement, catalog, events })
}

fn waiting(ctx: &Context, pod: &Arc<Pod>, scheduler: Option<String>) -> Placement {
    let key = pods::key(pod);
    let mut waiting = pending_pods(ctx, &Nominations::default());
    if !waiting.iter().any(|p| pods::key(p) == key) {
        waiting.push(pod.clone());
    }
    let planning = Planning::gather(ctx, &waiting, &|_| Vec::new());
    let catalog = ctx.catalog();
    let plan = scheduling::solve(&planning.input(&catalog));
    let outcome = if let Some((_, why)) = planning.refused.iter().find(|(p, _)| pods::key(p) == key) {
        WaitingPlan::Refused { reason: why.clone() }
    } else if let Some(unschedulable) = plan.unschedulable.iter().find(|u| u.pod == key) {
        let unschedulable = planning.with_unready(unschedulable);
        WaitingPlan::Unschedulable { reason: unschedulable.reason, nodepools: unschedulable.nodepools }
    } else if let Some((target, _)) = plan.existing_placements.iter().find(|(_, pods)| pods.contains(&key)) {
        WaitingPlan::ExistingNode { node: target.clone() }
    } else if let Some(node) = plan.new_nodes.iter().find(|n| n.pods.contains(&key)) {
        WaitingPlan::NewNode {
            nodepool: node.nodepool.clone(),
            instance_type: node.instance_type.clone(),
            capacity_type: node.capacity_type,
            zone: node.zone.clone(),
            usd_per_hour: node.price_per_hour,
            instance_type_options: node.instance_type_options.len(),
            cheapest_options: priced(
                &catalog.prices,
                &node.instance_type_options,
                node.capacity_type.as_str(),
                &node.zone,
            ),
        }
    } else {
        WaitingPlan::Refused { reason: "it has no spec to plan from".into() }
    };
    let launching = ctx
        .state
        .nodeclaims
        .state()
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| c.status.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .map(|c| c.name_any())
        .collect();
    Placement::Waiting { scheduler, provisionable: pods::is_provisionable(pod), plan: outcome, launching }
}

/// The price of `instance_type` as `capacity_type` (a label's value; what is not spot is priced on-demand).
fn price(prices: &PriceTable, instance_type: &str, capacity_type: &str, zone: &str) -> Option<f64> {
    let capacity_type = capacity_type.parse().unwrap_or(CapacityType::OnDemand);
    prices.price(instance_type, zone, capacity_type).map(|p| p.usd_per_hour)
}

/// The cheapest `OPTIONS_SHOWN` of `types` as `capacity_type` in `zone`; unpriced ones last.
fn priced(prices: &PriceTable, types: &[String], capacity_type: &str, zone: &str) -> Vec<PricedType> {
    let mut priced: Vec<PricedType> = types
        .iter()
        .map(|t| PricedType { instance_type: t.clone(), usd_per_hour: price(prices, t, capacity_type, zone) })
        .collect();
    priced.sort_by(|a, b| {
        let key = |p: &PricedType| p.usd_per_hour.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b)).then_with(|| a.instance_type.cmp(&b.instance_type))
    });
    priced.truncate(OPTIONS_SHOWN);
    priced
}

fn choice(ctx: &Context, pod: &Pod, claim: &NodeClaim) -> Choice {
    let Offering { nodepool, instance_type, capacity_type, zone } = Offering::of(ctx, claim);
    let prices = &ctx.catalog().prices;
    let allowed: Vec<String> =
        claim.requirement_values(INSTANCE_TYPE_LABEL).map(<[String]>::to_vec).unwrap_or_default();
    let capacity_types_allowed: Vec<String> =
        claim.requirement_values(CAPACITY_TYPE_LABEL).map(<[String]>::to_vec).unwrap_or_default();
    let cheapest_allowed = priced(prices, &allowed, &capacity_type, &zone);
    let usd_per_hour = price(prices, &instance_type, &capacity_type, &zone);
    let made_for = quantities(&claim.spec.resources.requests);
    let pod_requires = pod_request_with_volumes(&pods::key(pod), pod, &ctx.state)
        .map(|r| r.requirements.iter().map(ToString::to_string).collect())
        .unwrap_or_default();

    let mut why = vec![capacity_reason(&capacity_type, &capacity_types_allowed, &nodepool)];
    let cheapest = cheapest_allowed.first();
    why.push(match cheapest {
        _ if allowed.is_empty() => format!("{instance_type}: its NodeClaim names no instance types"),
        Some(first) if first.instance_type == instance_type || first.usd_per_hour >= usd_per_hour => format!(
            "{instance_type}: the cheapest {capacity_type} type in {zone} of the {} its NodeClaim allowed, each of \
             which holds what it was made for ({made_for})",
            allowed.len()
        ),
        Some(first) => format!(
            "{instance_type}: of the {} types its NodeClaim allowed (each holds {made_for}), {} is cheaper here; \
             {}",
            allowed.len(),
            first.instance_type,
            if capacity_type == "spot" {
                "for spot, CreateFleet's price-capacity-optimized strategy weighs spare capacity as well as price"
            } else {
                "the cheaper ones had no capacity when it launched (or prices changed since)"
            }
        ),
        None => format!("{instance_type}: one of the {} types its NodeClaim allowed", allowed.len()),
    });
    Choice {
        nodepool,
        instance_type,
        capacity_type,
        zone,
        usd_per_hour,
        made_for,
        allowed_types: allowed.len(),
        cheapest_allowed,
        capacity_types_allowed,
        pod_requires,
        why,
    }
}

fn capacity_reason(launched: &str, allowed: &[String], nodepool: &str) -> String {
    let spot_allowed = allowed.iter().any(|c| c == "spot");
    match launched {
        "spot" => "spot: its NodeClaim allowed spot, which nodesmith launches first as it costs less".to_string(),
        "on-demand" if spot_allowed => "on-demand although spot was allowed: no spot offering of its types had \
                                         capacity when it launched, so it fell back to on-demand"
            .to_string(),
        "on-demand" => format!(
            "on-demand: the only capacity type its NodeClaim allowed (NodePool {nodepool}'s requirements and its \
             pods' leave no other)"
        ),
        other => format!("{other}: as launched"),
    }
}

fn quantities(map: &BTreeMap<String, Quantity>) -> String {
    if map.is_empty() {
        return "nothing recorded".into();
    }
    map.iter().map(|(k, v)| format!("{k} {}", v.0)).collect::<Vec<_>>().join(", ")
}

impl PodExplanation {
    pub fn human(&self) -> String {
        let mut out = format!("Pod {} ({})\n", self.pod, if self.phase.is_empty() { "no phase" } else { &self.phase });
        match &self.placement {
            Placement::Waiting { scheduler, provisionable, plan, launching } => {
                if let Some(message) = scheduler {
                    out += &format!("kube-scheduler: {message}\n");
                }
                if !provisionable {
                    out += "kube-scheduler has not marked it Unschedulable: nodesmith plans only for pods the \
                            scheduler could not place. If it did:\n";
                }
                out += &match plan {
                    WaitingPlan::NewNode {
                        nodepool,
                        instance_type,
                        capacity_type,
                        zone,
                        usd_per_hour,
                        instance_type_options,
                        cheapest_options,
                    } => format!(
                        "nodesmith would launch a node of NodePool {nodepool} for it: {instance_type} {} in {zone} \
                         at ${usd_per_hour:.4}/h, one of {instance_type_options} types that hold it (cheapest: \
                         {})\n",
                        capacity_type.as_str(),
                        cheapest_options.iter().map(describe).collect::<Vec<_>>().join(", ")
                    ),
                    WaitingPlan::ExistingNode { node } => {
                        format!("It fits on {node}, which is there already: the scheduler should bind it there.\n")
                    }
                    WaitingPlan::Unschedulable { nodepools, reason } if nodepools.is_empty() => {
                        format!("No node can be launched for it: {reason}\n")
                    }
                    WaitingPlan::Unschedulable { nodepools, .. } => {
                        let mut text = String::from("No NodePool can give it a node:\n");
                        for refusal in nodepools {
                            text += &format!("  {}: {}\n", refusal.nodepool, refusal.reason);
                        }
                        text
                    }
                    WaitingPlan::Refused { reason } => format!("It cannot be planned: {reason}\n"),
                };
                if !launching.is_empty() {
                    out += &format!(
                        "NodeClaims launching (not registered yet): {}. A pod planned onto one waits for its node.\n",
                        launching.join(", ")
                    );
                }
            }
            Placement::OnNodesmithNode { node, nodeclaim, choice } => {
                let price = choice.usd_per_hour.map_or_else(|| "unpriced".to_string(), |p| format!("${p:.4}/h"));
                out += &format!(
                    "Runs on {node} (NodeClaim {nodeclaim}, NodePool {}): {} {} in {} at {price}\n",
                    choice.nodepool, choice.instance_type, choice.capacity_type, choice.zone
                );
                for why in &choice.why {
                    out += &format!("  {why}\n");
                }
                out += &format!(
                    "  cheapest allowed: {}\n",
                    choice.cheapest_allowed.iter().map(describe).collect::<Vec<_>>().join(", ")
                );
                if !choice.pod_requires.is_empty() {
                    out += &format!("  the pod requires: {}\n", choice.pod_requires.join(", "));
                }
            }
            Placement::OnOtherNode { node } => {
                out += &format!("Runs on {node}, which no NodePool manages (a node group, Fargate, ...).\n");
            }
        }
        out += &format!("Catalog: {}\n", self.catalog);
        out + &events::human(&self.events)
    }
}

fn describe(priced: &PricedType) -> String {
    match priced.usd_per_hour {
        Some(p) => format!("{} ${p:.4}", priced.instance_type),
        None => format!("{} (unpriced)", priced.instance_type),
    }
}
