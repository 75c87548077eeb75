//! `nodesmith controller`: runs the in-cluster controller until SIGTERM. Settings come from flags or from the
//! environment variables the Helm chart sets.

use std::time::Duration;

use clap::Args;

use super::{CliError, GlobalArgs};
use crate::controller::{self, Settings};

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The EKS cluster this controller provisions nodes for.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: String,
    /// API server endpoint nodes join through; defaults to what DescribeCluster reports.
    #[arg(long, env = "CLUSTER_ENDPOINT")]
    pub cluster_endpoint: Option<String>,
    /// SQS queue (name or URL) that receives interruption events; interruption handling is off without one.
    #[arg(long, env = "INTERRUPTION_QUEUE")]
    pub interruption_queue: Option<String>,
    /// What an EC2 rebalance recommendation does: record an Event, or replace the node at once.
    #[arg(long, env = "REBALANCE", value_enum, default_value = "event")]
    pub rebalance: crate::controller::interruption::RebalancePolicy,
    /// Provision once no new pending pod arrived for this long (e.g. `1s`, `500ms`).
    #[arg(long, env = "BATCH_IDLE_DURATION", default_value = "1s", value_parser = parse_duration)]
    pub batch_idle_duration: Duration,
    /// ... or once the batch is this old, whichever comes first.
    #[arg(long, env = "BATCH_MAX_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub batch_max_duration: Duration,
    #[arg(long, env = "METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    #[arg(long, env = "HEALTH_PROBE_PORT", default_value_t = 8081)]
    pub health_port: u16,
    /// Namespace of the leader-election Lease (the controller's own namespace).
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = "nodesmith")]
    pub namespace: String,
    /// This replica's identity in the Lease and in Events; defaults to the pod name (HOSTNAME).
    #[arg(long, env = "HOSTNAME")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub decisions: DecisionArgs,
    /// Shadow mode: run beside another autoscaler, plan and decide as usual, and publish what would be launched
    /// and disrupted (metrics `nodesmith_observe_*`, Events on pods, NodePools and NodeClaims) while changing
    /// nothing in AWS or Kubernetes: no NodeClaim, instance, status, taint or Lease is written.
    #[arg(long, env = "OBSERVE", default_value_t = false)]
    pub observe: bool,
    /// How often instance types and their zones are read again (DescribeInstanceTypes and
    /// DescribeInstanceTypeOfferings), so that a new type or zone is used without a restart.
    #[arg(long, env = "INSTANCE_TYPES_REFRESH", default_value = "1h", value_parser = parse_duration)]
    pub instance_types_refresh: Duration,
    /// How often prices are read again (the Pricing API and the spot price history).
    #[arg(long, env = "PRICES_REFRESH", default_value = "12h", value_parser = parse_duration)]
    pub prices_refresh: Duration,
}

/// How the controller decides, where a person may set it: `explain` takes the same flags, to explain what a
/// controller run with them would do.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// Let consolidation replace a spot node with a cheaper spot node (Karpenter's SpotToSpotConsolidation
    /// feature gate): only where at least 15 cheaper instance types can be offered.
    #[arg(long, env = "SPOT_TO_SPOT_CONSOLIDATION", default_value_t = false)]
    pub spot_to_spot_consolidation: bool,
    /// Consolidation replaces nodes only when the replacement costs at least this much less, in percent of what
    /// it replaces (a churn guard: Karpenter replaces for any saving, however small).
    #[arg(long, env = "CONSOLIDATION_MIN_SAVINGS_PERCENT", default_value_t = 5.0, value_parser = parse_percent)]
    pub consolidation_min_savings_percent: f64,
    /// `Strict`: a pod that only fits a node with fewer distinct values than a NodePool's `minValues` stays
    /// pending. `BestEffort`: it gets such a node, annotated `karpenter.sh/nodeclaim-min-values-relaxed`.
    #[arg(long, env = "MIN_VALUES_POLICY", default_value = "Strict")]
    pub min_values_policy: crate::scheduling::MinValuesPolicy,
}

impl DecisionArgs {
    pub fn disruption(&self) -> crate::disruption::Settings {
        crate::disruption::Settings {
            spot_to_spot: self.spot_to_spot_consolidation,
            min_savings: self.consolidation_min_savings_percent / 100.0,
            ..crate::disruption::Settings::default()
        }
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim_end_matches('%').parse().map_err(|_| format!("{text:?} is not a percentage"))?;
    if (0.0..100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is outside 0 to 100 (exclusive of 100)"))
    }
}

/// `500ms`, `1s`, `2m`, `12h`: a whole number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration; write e.g. 500ms, 1s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("{text:?} has unit {unit:?}; use ms, s, m or h")),
    }
}

pub async fn run(args: &ControllerArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let sdk = crate::aws::sdk_config(global.region.as_deref()).await;
    let settings = Settings {
        cluster_name: args.cluster_name.clone(),
        cluster_endpoint: args.cluster_endpoint.clone(),
        interruption_queue: args.interruption_queue.clone().filter(|q| !q.is_empty()),
        rebalance: args.rebalance,
        batch_idle: args.batch_idle_duration,
        batch_max: args.batch_max_duration,
        metrics_port: args.metrics_port,
        health_port: args.health_port,
        identity: args.identity.clone().unwrap_or_else(|| format!("nodesmith-{}", std::process::id())),
        namespace: args.namespace.clone(),
        disruption: args.decisions.disruption(),
        min_values_policy: args.decisions.min_values_policy,
        catalog_refresh: crate::controller::catalog_refresh::Intervals {
            instance_types: args.instance_types_refresh,
            prices: args.prices_refresh,
        },
        observe: args.observe,
    };
    controller::run(settings, std::sync::Arc::new(crate::cloud::AwsCloud::new(&sdk))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_durations_take_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
