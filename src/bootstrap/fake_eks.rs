//! An EKS endpoint on canned HTTP answers, for the calls moto does not serve (access entries, Pod Identity
//! associations). The SDK sends its real requests and parses the answers from the wire, shaped as the EKS API
//! reference documents them (REST-JSON; errors carry `x-amzn-ErrorType`). Hand-made rather than aws-smithy-mocks:
//! that crate turns on serde_json's `preserve_order` in every test build, which changes the byte output of the
//! user data and CRD golden tests.

use std::sync::{Arc, Mutex};

use aws_sdk_eks::config::http::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// The demo cluster's node and controller roles, and the paths the fake answers for its access entries and
/// Pod Identity associations: what the setup and teardown tests share.
pub const NODE_ROLE: &str = "arn:aws:iam::123456789012:role/nodesmith-node-demo-us-east-1";
pub const CONTROLLER_ROLE: &str = "arn:aws:iam::123456789012:role/nodesmith-controller-demo-us-east-1";
pub const ENTRIES: &str = "/clusters/demo/access-entries";
pub const ASSOCIATIONS: &str = "/clusters/demo/pod-identity-associations";

/// An SDK configuration for the clients a test builds but never calls (their steps are not under test).
pub fn uncalled_sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build()
}

/// One canned answer: for requests with this method whose path contains `path`.
#[derive(Debug, Clone)]
struct Route {
    method: &'static str,
    path: String,
    status: u16,
    error_type: Option<&'static str>,
    body: String,
    /// How many more times it answers (`None`: always).
    times: Option<usize>,
}

/// A request the fake received: method, path (with query), body.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct FakeEks {
    routes: Arc<Mutex<Vec<Route>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeEks {
    /// Answers `method` requests whose path contains `path` with 200 and `body`.
    pub fn ok(self, method: &'static str, path: &str, body: serde_json::Value) -> Self {
        self.route(Route {
            method,
            path: path.into(),
            status: 200,
            error_type: None,
            body: body.to_string(),
            times: None,
        })
    }

    /// Answers with an EKS error (`ResourceNotFoundException` is 404, the rest 400), `times` times if given.
    pub fn error(
        self,
        method: &'static str,
        path: &str,
        error_type: &'static str,
        message: &str,
        times: Option<usize>,
    ) -> Self {
        let status = if error_type == "ResourceNotFoundException" { 404 } else { 400 };
        let body = serde_json::json!({ "message": message }).to_string();
        self.route(Route { method, path: path.into(), status, error_type: Some(error_type), body, times })
    }

    fn route(self, route: Route) -> Self {
        if let Ok(mut routes) = self.routes.lock() {
            routes.push(route);
        }
        self
    }

    pub fn client(&self) -> aws_sdk_eks::Client {
        let config = aws_sdk_eks::Config::builder()
            .behavior_version(aws_sdk_eks::config::BehaviorVersion::latest())
            .region(aws_sdk_eks::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_eks::config::Credentials::new("test", "test", None, None, "fake-eks"))
            .http_client(self.clone())
            .build();
        aws_sdk_eks::Client::from_conf(config)
    }

    /// The requests received with this method whose path contains `path`.
    pub fn received(&self, method: &str, path: &str) -> Vec<Received> {
        let received = self.received.lock().map(|r| r.clone()).unwrap_or_default();
        received.into_iter().filter(|r| r.method == method && r.path.contains(path)).collect()
    }

    fn answer(&self, request: &HttpRequest) -> HttpResponse {
        let method = request.method().to_string();
        let path = request.uri().to_string();
        let path = path.split_once("amazonaws.com").map_or(path.clone(), |(_, p)| p.to_string());
        let body = request.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
        if let Ok(mut received) = self.received.lock() {
            received.push(Received { method: method.clone(), path: path.clone(), body });
        }
        let mut routes = match self.routes.lock() {
            Ok(routes) => routes,
            Err(_) => return response(500, None, "{}"),
        };
        let Some(route) =
            routes.iter_mut().find(|r| r.method == method && path.contains(&r.path) && r.times.is_none_or(|t| t > 0))
        else {
            return response(404, Some("UnknownOperationException"), r#"{"message":"no canned answer"}"#);
        };
        if let Some(times) = route.times.as_mut() {
            *times -= 1;
        }
        response(route.status, route.error_type, &route.body)
    }
}

fn response(status: u16, error_type: Option<&str>, body: &str) -> HttpResponse {
    let mut response = HttpResponse::new(
        status.try_into().unwrap_or_else(|_| 500u16.try_into().expect("500 is a status")),
        SdkBody::from(body.to_string()),
    );
    response.headers_mut().insert("content-type", "application/json");
    if let Some(error_type) = error_type {
        response.headers_mut().insert("x-amzn-errortype", error_type.to_string());
    }
    response
}

impl HttpConnector for FakeEks {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready(Ok(self.answer(&request)))
    }
}

impl HttpClient for FakeEks {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}
