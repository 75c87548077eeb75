//! `nodesmith version`: what this binary is and which APIs it serves.

use serde::Serialize;

use super::Report;

#[derive(Debug, Serialize)]
pub struct VersionReport {
    pub version: &'static str,
    pub git_commit: Option<&'static str>,
    pub target: &'static str,
    /// The Kubernetes API groups and versions nodesmith serves (Karpenter v1 compatible).
    pub api_versions: Vec<&'static str>,
}

pub fn report() -> VersionReport {
    VersionReport {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("NODESMITH_GIT_COMMIT"),
        target: std::env::consts::ARCH,
        api_versions: vec!["karpenter.sh/v1", "karpenter.k8s.aws/v1"],
    }
}

impl Report for VersionReport {
    fn rows(&self) -> Vec<(String, String)> {
        vec![
            ("version".into(), self.version.into()),
            ("commit".into(), self.git_commit.unwrap_or("unknown").into()),
            ("arch".into(), self.target.into()),
            ("apis".into(), self.api_versions.join(", ")),
        ]
    }
}
