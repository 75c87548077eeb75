//! `nodesmith render`: the NodePool and EC2NodeClass manifests of `nodeclasses/`, filled in for a cluster.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{CliError, Report};
use crate::render::{NodeClassValues, Profile, render_nodeclasses};

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[arg(long)]
    pub cluster: String,
    /// The node IAM role (default: the one setup creates).
    #[arg(long)]
    pub node_role: Option<String>,
    /// The discovery tag value subnets and security groups carry (default: the cluster name).
    #[arg(long)]
    pub discovery_value: Option<String>,
    /// staging adds burstable (t) types and disrupts freely; production leaves t out, keeps GPU nodes on-demand and
    /// disrupts at most 10% of a pool at a time.
    #[arg(long, value_enum, default_value_t = Profile::Production)]
    pub profile: Profile,
    /// The cluster runs the VPC CNI with ENABLE_PREFIX_DELEGATION=true: the EC2NodeClass says so, and nodes get the
    /// prefix-delegated max pods.
    #[arg(long)]
    pub prefix_delegation: bool,
    /// Write one file per manifest into this directory instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct RenderReport {
    pub files: Vec<RenderedFile>,
}

#[derive(Debug, Serialize)]
pub struct RenderedFile {
    pub name: String,
    /// Where it was written, if it was.
    pub path: Option<PathBuf>,
    pub yaml: String,
}

/// `region` is `--region` (or AWS_REGION); without it, AWS_DEFAULT_REGION. Render makes no AWS call.
pub fn run(args: &RenderArgs, region: Option<&str>) -> Result<RenderReport, CliError> {
    let node_role = match &args.node_role {
        Some(role) => role.clone(),
        None => {
            let region = region
                .map(str::to_string)
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .filter(|r| !r.is_empty())
                .ok_or(CliError::NoRegionForNodeRole)?;
            crate::cloud::resource_names::ClusterNames::for_cluster(&args.cluster, &region).node_role
        }
    };
    let values = NodeClassValues::for_cluster(
        &args.cluster,
        &node_role,
        args.discovery_value.as_deref().unwrap_or(&args.cluster),
    )
    .with_profile(args.profile);
    let values = NodeClassValues { prefix_delegation: args.prefix_delegation, ..values };
    write_nodeclasses(&values, args.out.as_deref())
}

/// Renders every template; with `dir`, writes each to a file there.
pub fn write_nodeclasses(values: &NodeClassValues, dir: Option<&Path>) -> Result<RenderReport, CliError> {
    let mut files = Vec::new();
    for (name, yaml) in render_nodeclasses(values)? {
        let path = match dir {
            Some(dir) => {
                let path = dir.join(name);
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&path, &yaml))
                    .map_err(|source| CliError::WriteFile { path: path.clone(), source })?;
                Some(path)
            }
            None => None,
        };
        files.push(RenderedFile { name: name.to_string(), path, yaml });
    }
    Ok(RenderReport { files })
}

impl Report for RenderReport {
    fn human(&self) -> String {
        self.files
            .iter()
            .map(|f| match &f.path {
                Some(path) => format!("wrote {}\n", path.display()),
                None => format!("---\n{}", f.yaml),
            })
            .collect()
    }
}
