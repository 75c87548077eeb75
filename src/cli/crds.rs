//! `nodesmith crds`: the CustomResourceDefinitions nodesmith serves (Karpenter v1's NodePool, NodeClaim and
//! EC2NodeClass), generated from its Rust types.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{CliError, Report};
use crate::apis::crds;

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory (Karpenter's file names) instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct CrdsReport {
    pub files: Vec<CrdFile>,
}

#[derive(Debug, Serialize)]
pub struct CrdFile {
    pub name: String,
    /// Where it was written, if it was.
    pub path: Option<PathBuf>,
    pub yaml: String,
}

pub fn run(args: &CrdsArgs) -> Result<CrdsReport, CliError> {
    write_crds(args.out.as_deref())
}

/// Every CRD as YAML; with `dir`, each written to its file there.
pub fn write_crds(dir: Option<&Path>) -> Result<CrdsReport, CliError> {
    let mut files = Vec::new();
    for generated in crds::all() {
        let yaml = generated.to_yaml()?;
        let path = match dir {
            Some(dir) => {
                let path = dir.join(generated.file_name);
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&path, &yaml))
                    .map_err(|source| CliError::WriteFile { path: path.clone(), source })?;
                Some(path)
            }
            None => None,
        };
        files.push(CrdFile { name: generated.file_name.to_string(), path, yaml });
    }
    Ok(CrdsReport { files })
}

impl Report for CrdsReport {
    /// Multi-document YAML (ready for `kubectl apply -f -`), or the files written.
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
