//! A proxy in front of the sandbox's API server for one client (the controller under test): it forwards every
//! request as that client's own identity (watches stream through), and can lose a chosen write the way a real API
//! server sometimes does (an etcd timeout, a restart): the first NodeClaim status write that records a launch
//! (`providerID`) is answered 500 and never reaches the API server. The controller must then not launch again.
//! It can also hide the Karpenter API groups, answering 404 as an API server without the CRDs does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Default)]
pub struct KubeFaults {
    /// NodeClaim status writes carrying a `providerID` still to lose.
    pub lose_launch_status_writes: AtomicU32,
    /// Those lost so far: the NodeClaim names.
    pub lost: std::sync::Mutex<Vec<String>>,
    /// Answer every request under `karpenter.sh` and `karpenter.k8s.aws` as if their CRDs were not installed.
    pub hide_karpenter_apis: std::sync::atomic::AtomicBool,
}

struct Proxy {
    client: kube::Client,
    faults: Arc<KubeFaults>,
}

/// Starts the proxy on a free loopback port, forwarding through `client`; returns its plain-HTTP URL.
pub async fn start(client: kube::Client, faults: Arc<KubeFaults>) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address: SocketAddr = listener.local_addr()?;
    let app = axum::Router::new().fallback(handle).with_state(Arc::new(Proxy { client, faults }));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!("API server fault proxy stopped: {error}");
        }
    });
    Ok(format!("http://{address}"))
}

/// The NodeClaim a path's status subresource belongs to: `/apis/karpenter.sh/v1/nodeclaims/<name>/status`.
fn nodeclaim_of_status_path(path: &str) -> Option<&str> {
    path.strip_prefix("/apis/karpenter.sh/v1/nodeclaims/")?.strip_suffix("/status").filter(|n| !n.contains('/'))
}

/// A path under one of the Karpenter API groups.
fn is_karpenter_api(path: &str) -> bool {
    ["/apis/karpenter.sh/", "/apis/karpenter.k8s.aws/"].iter().any(|group| path.starts_with(group))
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if proxy.faults.hide_karpenter_apis.load(Ordering::SeqCst) && is_karpenter_api(parts.uri.path()) {
        // What the API server answers for a group it does not serve: not a Status, a plain-text page.
        return (StatusCode::NOT_FOUND, [("content-type", "text/plain; charset=utf-8")], "404 page not found\n")
            .into_response();
    }
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    if matches!(parts.method, Method::PATCH | Method::PUT)
        && let Some(claim) = nodeclaim_of_status_path(parts.uri.path())
        && String::from_utf8_lossy(&body).contains("providerID")
        && proxy
            .faults
            .lose_launch_status_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        if let Ok(mut lost) = proxy.faults.lost.lock() {
            lost.push(claim.to_string());
        }
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError",
            "message": "etcdserver: request timed out (lost by the sandbox's fault proxy)",
        });
        return (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], status.to_string())
            .into_response();
    }
    let mut forwarded = axum::http::Request::builder().method(parts.method).uri(parts.uri);
    for (name, value) in &parts.headers {
        // The client's own credentials are added by `client`; the framing is its own.
        if !matches!(name.as_str(), "host" | "authorization" | "content-length" | "transfer-encoding" | "connection") {
            forwarded = forwarded.header(name, value);
        }
    }
    let Ok(forwarded) = forwarded.body(kube::client::Body::from(body.to_vec())) else {
        return (StatusCode::BAD_REQUEST, "unforwardable request").into_response();
    };
    match proxy.client.send(forwarded).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                if !matches!(name.as_str(), "transfer-encoding" | "content-length" | "connection") {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
            }
            response
        }
        Err(error) => (StatusCode::BAD_GATEWAY, format!("API server fault proxy: {error}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nodeclaim_status_path_names_a_nodeclaim() {
        assert_eq!(nodeclaim_of_status_path("/apis/karpenter.sh/v1/nodeclaims/pool-abc/status"), Some("pool-abc"));
        assert_eq!(nodeclaim_of_status_path("/apis/karpenter.sh/v1/nodeclaims/pool-abc"), None);
        assert_eq!(nodeclaim_of_status_path("/apis/karpenter.sh/v1/nodepools/p/status"), None);
        assert_eq!(nodeclaim_of_status_path("/apis/karpenter.sh/v1/nodeclaims/a/b/status"), None);
    }

    #[test]
    fn both_karpenter_groups_and_nothing_else_are_hidden() {
        assert!(is_karpenter_api("/apis/karpenter.sh/v1/nodeclaims"));
        assert!(is_karpenter_api("/apis/karpenter.k8s.aws/v1/ec2nodeclasses"));
        assert!(!is_karpenter_api("/api/v1/pods"));
        assert!(!is_karpenter_api("/apis/coordination.k8s.io/v1/namespaces/a/leases"));
    }
}
