//! Every request the controller sends to the Kubernetes API server, counted and timed under client-go's metric
//! names (`client_go_request_total`, `client_go_request_duration_seconds`), as Karpenter's controllers dashboard
//! reads them. A tower layer on the kube client; the time is until the response's head (a watch's events stream
//! after it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};

use super::Metrics;

/// What a request is about, read from its method and path as client-go labels it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiTarget {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// The API group, empty for the core group.
    pub group: String,
    pub version: String,
    /// The resource (plural), or empty for a discovery request.
    pub kind: String,
    pub subresource: String,
}

impl ApiTarget {
    pub fn of(method: &Method, path_and_query: &str) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => ("", "", &[][..]),
        };
        // Namespaced: namespaces/NS/RESOURCE/...; `namespaces/NS` alone is the namespace itself.
        let rest = match rest {
            ["namespaces", _, resource, more @ ..] => {
                let mut named = vec![*resource];
                named.extend(more);
                named
            }
            other => other.to_vec(),
        };
        let (kind, name, subresource) = match rest.as_slice() {
            [resource] => (*resource, None, ""),
            [resource, name] => (*resource, Some(*name), ""),
            [resource, name, subresource, ..] => (*resource, Some(*name), *subresource),
            [] => ("", None, ""),
        };
        let watching = query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1");
        let verb = match (method, name) {
            (&Method::GET, _) if watching => "watch",
            (&Method::GET | &Method::HEAD, Some(_)) => "get",
            (&Method::GET | &Method::HEAD, None) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::DELETE, None) => "deletecollection",
            _ => "unknown",
        };
        Self {
            verb: verb.into(),
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            subresource: subresource.into(),
        }
    }
}

/// Counts and times every request of the client it wraps.
#[derive(Clone)]
pub struct ApiRequestsLayer {
    metrics: Arc<Metrics>,
}

impl ApiRequestsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for ApiRequestsLayer {
    type Service = ApiRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiRequests { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct ApiRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<Request<B>> for ApiRequests<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().clone();
        let target = ApiTarget::of(&method, request.uri().path_and_query().map_or("", |p| p.as_str()));
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // client-go's code label: the HTTP status, or `<error>` when no response came.
            let code = response.as_ref().map_or_else(|_| "<error>".to_string(), |r| r.status().as_u16().to_string());
            metrics.api_request(method.as_str(), &code, &target, started.elapsed().as_secs_f64());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, path: &str) -> (String, String, String, String, String) {
        let t = ApiTarget::of(&method, path);
        (t.verb, t.group, t.version, t.kind, t.subresource)
    }

    fn expect(
        verb: &str,
        group: &str,
        version: &str,
        kind: &str,
        sub: &str,
    ) -> (String, String, String, String, String) {
        (verb.into(), group.into(), version.into(), kind.into(), sub.into())
    }

    #[test]
    fn requests_are_labelled_as_client_go_labels_them() {
        assert_eq!(
            target(Method::GET, "/api/v1/pods?watch=true&resourceVersion=5"),
            expect("watch", "", "v1", "pods", "")
        );
        assert_eq!(target(Method::GET, "/api/v1/nodes"), expect("list", "", "v1", "nodes", ""));
        assert_eq!(
            target(Method::POST, "/api/v1/namespaces/shop/pods/web-1/eviction"),
            expect("create", "", "v1", "pods", "eviction")
        );
        assert_eq!(
            target(Method::PATCH, "/apis/karpenter.sh/v1/nodeclaims/default-a/status"),
            expect("patch", "karpenter.sh", "v1", "nodeclaims", "status")
        );
        assert_eq!(
            target(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/nodesmith/leases/nodesmith-leader-election"),
            expect("get", "coordination.k8s.io", "v1", "leases", "")
        );
        assert_eq!(target(Method::GET, "/api/v1/namespaces/nodesmith"), expect("get", "", "v1", "namespaces", ""));
        assert_eq!(target(Method::DELETE, "/api/v1/nodes/ip-1"), expect("delete", "", "v1", "nodes", ""));
        assert_eq!(target(Method::GET, "/version"), expect("list", "", "", "", ""));
    }
}
