//! `explain node`: one node (or NodeClaim) as disruption sees it: its age, price and use, whether it is drifted
//! and when it expires, and what a disruption pass would do with it now or, if nothing, what holds it.

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::events::{self, EventLine};
use super::{Offering, rfc3339};
use crate::catalog::resources::ResourceName;
use crate::cli::CliError;
use crate::cli::status::{Usage, share};
use crate::controller::Context;
use crate::controller::cluster_snapshot::{quantities_to_resources, requests_of};
use crate::controller::disruption::gather_now;
use crate::disruption::expiration::expires_at;
use crate::disruption::{Verdict, verdict};

#[derive(Debug, Serialize)]
pub struct NodeExplanation {
    /// None while its NodeClaim has no node yet.
    pub node: Option<String>,
    pub nodeclaim: String,
    pub nodepool: String,
    pub instance_type: String,
    pub capacity_type: String,
    pub zone: String,
    /// When its NodeClaim was created (RFC 3339), and how long ago.
    pub created: String,
    pub age_seconds: i64,
    pub usd_per_hour: Option<f64>,
    /// Cores requested by the pods on it (DaemonSet pods included) out of its allocatable.
    pub cpu: Usage,
    /// Bytes.
    pub memory: Usage,
    /// The pods that would have to move if it went (not DaemonSet or mirror pods).
    pub pods: Vec<String>,
    /// Why it is drifted (`NodePoolDrifted`, `AMIDrift`, …); None when it is not.
    pub drifted: Option<String>,
    /// `expireAfter` as written on its NodeClaim, and when that is.
    pub expire_after: String,
    pub expires: Option<String>,
    /// What disruption would do with it now, judged on its own.
    pub disruption: Verdict,
    /// Which instance types and prices the answer was worked out with.
    pub catalog: String,
    pub events: Vec<EventLine>,
}

/// `name` is a Node's name or a NodeClaim's.
pub fn explain(ctx: &Context, name: &str, now: Timestamp, catalog: String) -> Result<NodeExplanation, CliError> {
    let claims = ctx.state.nodeclaims.state();
    let node_of = |c: &crate::apis::nodeclaim::NodeClaim| c.status.as_ref().and_then(|s| s.node_name.clone());
    let claim =
        claims.iter().find(|c| node_of(c).as_deref() == Some(name) || c.name_any() == name).ok_or_else(|| {
            let hint = if ctx.state.node(name).is_some() {
                ": the node exists, but no NodeClaim has it, so nodesmith does not manage it (a node group, Fargate)"
            } else {
                " (neither a Node nor a NodeClaim)"
            };
            CliError::NotFound { kind: "node", name: name.to_string(), hint: hint.into() }
        })?;
    let node_name = node_of(claim);
    let gathered = gather_now(ctx);
    let snapshot = gathered.snapshot(ctx);
    let managed = snapshot.nodes.iter().find(|n| n.claim == claim.name_any());
    let disruption = verdict(&snapshot, &claim.name_any())
        .unwrap_or_else(|| Verdict::Stays { held_by: "it has no node yet: it is still launching".into() });

    let node = node_name.as_deref().and_then(|n| ctx.state.node(n));
    let Offering { nodepool, instance_type, capacity_type, zone } = Offering::of(ctx, claim);
    let bound = node_name.as_deref().and_then(|n| ctx.state.pods_by_node().remove(n)).unwrap_or_default();
    let requested = requests_of(&bound);
    let allocatable = node
        .as_ref()
        .and_then(|n| n.status.as_ref()?.allocatable.as_ref().map(quantities_to_resources))
        .unwrap_or_default();
    let usage = |resource: ResourceName, scale: f64| Usage {
        requested: requested.get(resource) as f64 / scale,
        allocatable: allocatable.get(resource) as f64 / scale,
    };
    let created = claim.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let expire_after = claim.spec.expire_after.clone().unwrap_or_else(|| "Never".into());
    let expires = crate::duration::parse(&expire_after).and_then(|after| expires_at(created, Some(after)));
    Ok(NodeExplanation {
        node: node_name,
        nodeclaim: claim.name_any(),
        nodepool,
        instance_type,
        capacity_type,
        zone,
        created: rfc3339(created),
        age_seconds: now.duration_since(created).as_secs(),
        usd_per_hour: managed.map(|m| m.price).filter(|p| *p > 0.0),
        cpu: usage(ResourceName::Cpu, 1000.0),
        memory: usage(ResourceName::Memory, 1.0),
        pods: managed.map(|m| m.pods.iter().map(|p| p.request.id.clone()).collect()).unwrap_or_default(),
        drifted: managed.and_then(|m| m.drifted.clone()),
        expire_after,
        expires: expires.map(rfc3339),
        disruption,
        catalog,
        events: Vec::new(),
    })
}

impl NodeExplanation {
    pub fn human(&self) -> String {
        let node = self.node.as_deref().unwrap_or("(no node yet)");
        let price = self.usd_per_hour.map_or_else(|| "unpriced".to_string(), |p| format!("${p:.4}/h"));
        let mut out = format!(
            "Node {node} (NodeClaim {}, NodePool {}): {} {} in {} at {price}\n",
            self.nodeclaim, self.nodepool, self.instance_type, self.capacity_type, self.zone
        );
        out += &format!("  created {} ({} ago)\n", self.created, crate::duration::format(age(self.age_seconds)));
        out += &format!(
            "  requested: CPU {}, memory {}\n",
            share(&self.cpu, 1.0, ""),
            share(&self.memory, f64::from(1u32 << 30), "Gi")
        );
        out += &format!(
            "  pods that would move: {}\n",
            if self.pods.is_empty() { "none".into() } else { self.pods.join(", ") }
        );
        out += &format!("  drifted: {}\n", self.drifted.as_deref().unwrap_or("no"));
        out += &match &self.expires {
            Some(at) => format!("  expires at {at} (expireAfter {})\n", self.expire_after),
            None => format!("  never expires (expireAfter {})\n", self.expire_after),
        };
        out += &match &self.disruption {
            Verdict::Disrupt { command } => {
                let saving = command.candidates_price - command.replacements_price;
                let what = match command.replacements.first() {
                    None => "delete it".to_string(),
                    Some(r) => format!(
                        "replace it with {} {} (${:.4}/h)",
                        r.instance_type,
                        r.capacity_type.as_str(),
                        r.price_per_hour
                    ),
                };
                format!(
                    "Disruption would {what} now ({:?}, reason {}), saving ${saving:.4}/h\n",
                    command.method,
                    command.reason.as_str()
                )
            }
            Verdict::Stays { held_by } => format!("Disruption leaves it: {held_by}\n"),
        };
        out += &format!("Catalog: {}\n", self.catalog);
        out + &events::human(&self.events)
    }
}

fn age(seconds: i64) -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}
