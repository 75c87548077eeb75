//! The Kubernetes side of setup and teardown (aws-auth, `--apply`, NodePools), reached only through a kubeconfig
//! context whose API server is the cluster's own endpoint: a context left on another cluster must not get this
//! cluster's aws-auth mapping, nor lose its NodePools.

use std::fmt;

/// A Kubernetes client, and the API server it talks to.
#[derive(Clone)]
pub struct KubeTarget {
    pub client: kube::Client,
    pub server: String,
}

impl fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeTarget").field("server", &self.server).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeTargetError {
    #[error(
        "the current Kubernetes context talks to {server}, but cluster {cluster}'s endpoint is {endpoint}: switch \
         context (aws eks update-kubeconfig --name {cluster} --region <its region>) and run again"
    )]
    OtherCluster { cluster: String, server: String, endpoint: String },
    #[error(
        "{what} needs the Kubernetes API of cluster {cluster}, and no kubeconfig was found ({reason}): run aws eks \
         update-kubeconfig --name {cluster} --region <its region>, or set KUBECONFIG"
    )]
    NoKubeconfig { cluster: String, what: &'static str, reason: String },
}

impl KubeTarget {
    /// The current context (KUBECONFIG, ~/.kube/config, or in-cluster).
    pub async fn infer() -> Result<Self, String> {
        let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        Ok(Self { client, server })
    }

    /// This client, if it talks to `endpoint` (cluster `cluster`'s API server).
    pub fn for_cluster(&self, cluster: &str, endpoint: &str) -> Result<&kube::Client, KubeTargetError> {
        if same_server(&self.server, endpoint) {
            Ok(&self.client)
        } else {
            Err(KubeTargetError::OtherCluster {
                cluster: cluster.to_string(),
                server: self.server.clone(),
                endpoint: endpoint.to_string(),
            })
        }
    }
}

/// Whether two API server URLs name the same server: scheme, host (case aside) and port (443 by default), with any
/// trailing slash or path ignored.
pub fn same_server(a: &str, b: &str) -> bool {
    match (server_key(a), server_key(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn server_key(url: &str) -> Option<(String, String, u16)> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
    Some((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_server_however_written() {
        let eks = "https://ABCDEF0123.gr7.us-east-1.eks.amazonaws.com";
        assert!(same_server(eks, "https://abcdef0123.gr7.us-east-1.eks.amazonaws.com/"));
        assert!(same_server(eks, "https://ABCDEF0123.gr7.us-east-1.eks.amazonaws.com:443"));
        assert!(same_server("https://127.0.0.1:36443", "https://127.0.0.1:36443/"));
    }

    #[test]
    fn another_cluster_or_port_is_not_the_same_server() {
        let eks = "https://ABCDEF0123.gr7.us-east-1.eks.amazonaws.com";
        assert!(!same_server(eks, "https://FEDCBA3210.gr7.us-east-1.eks.amazonaws.com"));
        assert!(!same_server("https://127.0.0.1:36443", "https://127.0.0.1:36543"));
        assert!(!same_server("https://127.0.0.1", "http://127.0.0.1"));
        assert!(!same_server("", eks));
    }
}
