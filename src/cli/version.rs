//! `nodesmith version`: what this binary is and which APIs it serves.

use serde::Serialize;

use super::Report;
use super::output::table;

#[derive(Debug, Serialize)]
pub struct VersionReport {
    pub version: &'static str,
    pub git_commit: Option<&'static str>,
    pub arch: &'static str,
    /// The Kubernetes API groups and versions nodesmith serves (Karpenter v1 compatible).
    pub api_versions: Vec<&'static str>,
}

pub fn report() -> VersionReport {
    VersionReport {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("NODESMITH_GIT_COMMIT"),
        arch: std::env::consts::ARCH,
        api_versions: vec!["karpenter.sh/v1", "karpenter.k8s.aws/v1"],
    }
}

impl Report for VersionReport {
    fn human(&self) -> String {
        let rows = [["version", self.version], ["commit", self.git_commit.unwrap_or("unknown")], ["arch", self.arch]];
        let mut rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect();
        rows.push(vec!["apis".into(), self.api_versions.join(", ")]);
        table(&[], &rows)
    }
}
