//! `nodesmith max-pods`: the pod density of instance types, with or without VPC CNI prefix delegation.

use clap::Args;
use serde::Serialize;

use super::output::table;
use super::{CliError, GlobalArgs, Report};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::max_pods::MaxPodsSettings;
use crate::catalog::{
    EMBEDDED_CATALOG_PROVENANCE, SNAPSHOT_REGION, embedded_instance_types, embedded_instance_types_in,
};

#[derive(Debug, Args)]
pub struct MaxPodsArgs {
    /// Only these types (repeat the flag); all types when absent.
    #[arg(long = "instance-type", value_name = "TYPE")]
    pub instance_types: Vec<String>,
    /// As if the VPC CNI runs with ENABLE_PREFIX_DELEGATION=true.
    #[arg(long)]
    pub prefix_delegation: bool,
    /// ENIs kept out of the pod pool (EC2NodeClass kubelet.reservedENIs).
    #[arg(long, default_value_t = 0)]
    pub reserved_enis: u32,
    /// A fixed kubelet maxPods, as EC2NodeClass kubelet.maxPods sets it.
    #[arg(long)]
    pub max_pods: Option<u32>,
    /// kubelet podsPerCore: a further cap of this many pods per vCPU.
    #[arg(long)]
    pub pods_per_core: Option<u32>,
    /// Ask EC2 (DescribeInstanceTypes in the current region) instead of the embedded catalog.
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Serialize)]
pub struct MaxPodsReport {
    /// Where the instance types came from.
    pub source: String,
    pub settings: MaxPodsSettings,
    pub instance_types: Vec<MaxPodsRow>,
}

#[derive(Debug, Serialize)]
pub struct MaxPodsRow {
    pub instance_type: String,
    pub max_pods: u32,
    pub vcpus: u32,
    pub enis: u32,
    pub ipv4_per_eni: u32,
    /// Nitro or bare metal: prefix delegation applies.
    pub supports_prefixes: bool,
}

pub async fn run(args: &MaxPodsArgs, global: &GlobalArgs) -> Result<MaxPodsReport, CliError> {
    let (types, source) = if args.live {
        let sdk = crate::aws::sdk_config(global.region.as_deref()).await;
        let region = sdk.region().map(ToString::to_string).unwrap_or_else(|| "the default region".into());
        let types = crate::cloud::instance_types::describe_instance_types(&aws_sdk_ec2::Client::new(&sdk)).await?;
        (types, format!("DescribeInstanceTypes in {region}"))
    } else {
        // The types offered in the region asked for; every type the catalog knows when it does not know the region.
        let region = global.region.as_deref().unwrap_or(SNAPSHOT_REGION);
        match embedded_instance_types_in(region) {
            Some(types) => (types, format!("embedded catalog ({region}: {EMBEDDED_CATALOG_PROVENANCE})")),
            None => (
                embedded_instance_types().to_vec(),
                format!("embedded catalog (every type it knows: it does not cover {region})"),
            ),
        }
    };
    let settings = MaxPodsSettings {
        prefix_delegation: args.prefix_delegation,
        reserved_enis: args.reserved_enis,
        max_pods: args.max_pods,
        pods_per_core: args.pods_per_core,
    };
    let selected = select(&types, &args.instance_types)?;
    Ok(MaxPodsReport { source, settings, instance_types: selected.into_iter().map(|t| row(t, settings)).collect() })
}

fn select<'a>(types: &'a [InstanceTypeInfo], names: &[String]) -> Result<Vec<&'a InstanceTypeInfo>, CliError> {
    if names.is_empty() {
        return Ok(types.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            types.iter().find(|t| &t.name == name).ok_or_else(|| CliError::UnknownInstanceType {
                name: name.clone(),
                suggestion: closest(types, name).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(),
            })
        })
        .collect()
}

/// The known type nearest to a misspelt one, if any is near.
fn closest<'a>(types: &'a [InstanceTypeInfo], name: &str) -> Option<&'a str> {
    types
        .iter()
        .map(|t| (strsim::damerau_levenshtein(&t.name, name), t.name.as_str()))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, n)| n)
}

fn row(t: &InstanceTypeInfo, settings: MaxPodsSettings) -> MaxPodsRow {
    let limits = t.network_limits();
    MaxPodsRow {
        instance_type: t.name.clone(),
        max_pods: t.max_pods(settings),
        vcpus: t.vcpus,
        enis: limits.enis,
        ipv4_per_eni: limits.ipv4_per_eni,
        supports_prefixes: limits.supports_prefixes,
    }
}

impl Report for MaxPodsReport {
    fn human(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .instance_types
            .iter()
            .map(|r| {
                vec![
                    r.instance_type.clone(),
                    r.vcpus.to_string(),
                    r.enis.to_string(),
                    r.ipv4_per_eni.to_string(),
                    if r.supports_prefixes { "yes" } else { "no" }.to_string(),
                    r.max_pods.to_string(),
                ]
            })
            .collect();
        table(&["INSTANCE TYPE", "VCPUS", "ENIS", "IPV4/ENI", "PREFIXES", "MAX PODS"], &rows)
    }

    fn tsv(&self) -> Option<String> {
        Some(self.instance_types.iter().map(|r| format!("{}\t{}\n", r.instance_type, r.max_pods)).collect())
    }
}
