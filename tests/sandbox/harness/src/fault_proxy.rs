//! A proxy in front of moto that makes EC2 misbehave the way real AWS does under pressure: CreateFleet answers
//! InsufficientInstanceCapacity for chosen instance types (the cheapest one the controller asks for first, and
//! every request for it afterwards), any EC2 request may be refused with RequestLimitExceeded, and CreateFleet may
//! be refused with UnauthorizedOperation (as a policy that does not allow a launch would), and a REST-JSON request
//! (EKS) may be answered with a chosen error a chosen number of times (as EKS refuses a principal IAM has not yet
//! propagated). moto itself does none of these. A refused request never reaches moto, as with AWS.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Fail CreateFleet for the first instance type the first CreateFleet prefers, from then on.
    pub fail_first_preferred_type: bool,
    /// Refuse about one EC2 request in this many with RequestLimitExceeded (0: never).
    pub throttle_one_in: u64,
    /// While set, refuse every CreateFleet with UnauthorizedOperation (the test may clear it).
    pub deny_create_fleet: Arc<AtomicBool>,
    /// REST-JSON requests to answer with an error instead of forwarding them.
    pub rest_faults: Vec<RestFault>,
}

/// Answer `times` requests of `method` whose path ends with `path_suffix` with `status` and an AWS REST-JSON error
/// (`x-amzn-ErrorType: error_type`, `{"message": ...}`); `u32::MAX` times is always.
#[derive(Debug, Clone)]
pub struct RestFault {
    pub method: Method,
    pub path_suffix: String,
    /// How many answers are left to give.
    pub times: Arc<std::sync::atomic::AtomicU32>,
    initial: u32,
    pub status: StatusCode,
    pub error_type: String,
    pub message: String,
}

impl RestFault {
    pub fn new(
        method: Method,
        path_suffix: &str,
        times: u32,
        status: StatusCode,
        error_type: &str,
        message: &str,
    ) -> Self {
        Self {
            method,
            path_suffix: path_suffix.into(),
            times: Arc::new(times.into()),
            initial: times,
            status,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// How many times it was answered.
    pub fn served(&self) -> u32 {
        self.initial - self.times.load(Ordering::SeqCst)
    }
}

/// What the proxy did, for the test to check.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub insufficient_capacity_types: Mutex<BTreeSet<String>>,
    pub capacity_errors: AtomicU64,
    pub throttled: AtomicU64,
    pub denied: AtomicU64,
    pub forwarded: AtomicU64,
    /// Each CreateFleet that reached moto: when, and for which NodeClaim (its `karpenter.sh/nodeclaim` tag).
    pub fleet_calls: Mutex<Vec<(std::time::Instant, String)>>,
    /// What each of those CreateFleet calls answered: the NodeClaim and the instances it launched (or returned
    /// again, for a retried client token).
    pub fleet_answers: Mutex<Vec<(String, Vec<String>)>>,
    /// TerminateInstances calls that reached moto.
    pub terminations: AtomicU64,
    /// Every request that reached moto, named by its API action: the query protocol's `Action` (EC2, IAM, SQS's
    /// query form), the JSON protocols' `X-Amz-Target` operation, or else `METHOD /path` (REST: EKS).
    pub actions: Mutex<Vec<String>>,
}

struct Proxy {
    upstream: String,
    plan: FaultPlan,
    log: Arc<FaultLog>,
    http: reqwest_lite::Client,
    random: Mutex<u64>,
}

/// Starts the proxy on a free loopback port; returns its URL and what it records.
pub async fn start(upstream: &str, plan: FaultPlan) -> Result<(String, Arc<FaultLog>)> {
    let log = Arc::new(FaultLog::default());
    let proxy = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        plan,
        log: log.clone(),
        http: reqwest_lite::Client::new(),
        random: Mutex::new(0x9e37_79b9_7f4a_7c15),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address: SocketAddr = listener.local_addr()?;
    let app = axum::Router::new().fallback(handle).with_state(proxy);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!("fault proxy stopped: {error}");
        }
    });
    Ok((format!("http://{address}"), log))
}

impl Proxy {
    /// A deterministic pseudo-random draw (xorshift), so a failing run can be replayed.
    fn one_in(&self, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let Ok(mut state) = self.random.lock() else { return false };
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state).is_multiple_of(n)
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url_decode_pairs(&String::from_utf8_lossy(body))
}

fn url_decode_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The overrides of a CreateFleet request: (instance type, subnet, zone), in the order given.
fn fleet_overrides(pairs: &[(String, String)]) -> Vec<(String, String, String)> {
    let mut overrides: std::collections::BTreeMap<(u32, u32), (String, String, String)> = Default::default();
    for (key, value) in pairs {
        let parts: Vec<&str> = key.split('.').collect();
        if let ["LaunchTemplateConfigs", config, "Overrides", index, field] = parts.as_slice()
            && let (Ok(config), Ok(index)) = (config.parse::<u32>(), index.parse::<u32>())
        {
            let entry = overrides.entry((config, index)).or_default();
            match *field {
                "InstanceType" => entry.0 = value.clone(),
                "SubnetId" => entry.1 = value.clone(),
                "AvailabilityZone" => entry.2 = value.clone(),
                _ => {}
            }
        }
    }
    overrides.into_values().collect()
}

/// The value of the `karpenter.sh/nodeclaim` tag a CreateFleet request puts on its instances.
fn nodeclaim_tag(pairs: &[(String, String)]) -> Option<String> {
    let key_field = pairs
        .iter()
        .find(|(k, v)| k.starts_with("TagSpecification.") && k.ends_with(".Key") && v == "karpenter.sh/nodeclaim")?;
    let value_field = format!("{}.Value", key_field.0.trim_end_matches(".Key"));
    pairs.iter().find(|(k, _)| *k == value_field).map(|(_, v)| v.clone())
}

const UNAUTHORIZED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>";

const THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>";

fn capacity_error_response(failed: &[(String, String, String)], lifecycle: &str) -> String {
    let items: String = failed
        .iter()
        .map(|(instance_type, subnet, zone)| {
            format!(
                "<item><errorCode>InsufficientInstanceCapacity</errorCode><errorMessage>We currently do not have sufficient {instance_type} capacity in the Availability Zone you requested ({zone}).</errorMessage><launchTemplateAndOverrides><overrides><instanceType>{instance_type}</instanceType><subnetId>{subnet}</subnetId><availabilityZone>{zone}</availabilityZone></overrides></launchTemplateAndOverrides><lifecycle>{lifecycle}</lifecycle></item>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateFleetResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>fault-proxy</requestId><fleetId>fleet-fault-proxy</fleetId><errorSet>{items}</errorSet><fleetInstanceSet/></CreateFleetResponse>"
    )
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    for fault in &proxy.plan.rest_faults {
        let matches = parts.method == fault.method && parts.uri.path().ends_with(&fault.path_suffix);
        if matches && fault.times.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let body = serde_json::json!({"message": fault.message}).to_string();
            return (
                fault.status,
                [("content-type", "application/json"), ("x-amzn-errortype", fault.error_type.as_str())],
                body,
            )
                .into_response();
        }
    }
    let pairs = form(&body);
    let action = pairs.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.as_str()).unwrap_or_default();
    let ec2 = pairs.iter().any(|(k, v)| k == "Version" && v == "2016-11-15");

    if ec2 && proxy.one_in(proxy.plan.throttle_one_in) {
        proxy.log.throttled.fetch_add(1, Ordering::Relaxed);
        return xml(StatusCode::SERVICE_UNAVAILABLE, THROTTLED.to_string());
    }
    if ec2 && action == "CreateFleet" && proxy.plan.deny_create_fleet.load(Ordering::Relaxed) {
        proxy.log.denied.fetch_add(1, Ordering::Relaxed);
        return xml(StatusCode::FORBIDDEN, UNAUTHORIZED.to_string());
    }
    if ec2 && action == "CreateFleet" && proxy.plan.fail_first_preferred_type {
        let overrides = fleet_overrides(&pairs);
        let failed: Vec<(String, String, String)> = {
            let Ok(mut types) = proxy.log.insufficient_capacity_types.lock() else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "poisoned").into_response();
            };
            if types.is_empty()
                && let Some((first, _, _)) = overrides.first()
            {
                types.insert(first.clone());
            }
            overrides.iter().filter(|(t, _, _)| types.contains(t)).cloned().collect()
        };
        if !failed.is_empty() {
            proxy.log.capacity_errors.fetch_add(1, Ordering::Relaxed);
            let lifecycle = pairs
                .iter()
                .find(|(k, _)| k == "TargetCapacitySpecification.DefaultTargetCapacityType")
                .map_or("on-demand", |(_, v)| v.as_str());
            return xml(StatusCode::OK, capacity_error_response(&failed, lifecycle));
        }
    }
    proxy.log.forwarded.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut actions) = proxy.log.actions.lock() {
        actions.push(action_name(action, &parts.headers, &parts.method, parts.uri.path()));
    }
    if ec2 && action == "TerminateInstances" {
        proxy.log.terminations.fetch_add(1, Ordering::Relaxed);
    }
    if ec2 && action == "CreateFleet" {
        let nodeclaim = nodeclaim_tag(&pairs).unwrap_or_default();
        if let Ok(mut calls) = proxy.log.fleet_calls.lock() {
            calls.push((std::time::Instant::now(), nodeclaim.clone()));
        }
        let response = forward(&proxy, parts.method, &parts.uri, &parts.headers, body).await;
        let (parts, body) = response.into_parts();
        let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
            return (StatusCode::BAD_GATEWAY, "unreadable CreateFleet answer").into_response();
        };
        if let Ok(mut answers) = proxy.log.fleet_answers.lock() {
            answers.push((nodeclaim, instance_ids(&String::from_utf8_lossy(&body))));
        }
        return Response::from_parts(parts, Body::from(body));
    }
    forward(&proxy, parts.method, &parts.uri, &parts.headers, body).await
}

/// What a request does, by its API's naming: `Action`, the operation of `X-Amz-Target` (`AmazonSSM.GetParameter`
/// → `GetParameter`), or `METHOD /path`.
fn action_name(query_action: &str, headers: &HeaderMap, method: &Method, path: &str) -> String {
    if !query_action.is_empty() {
        return query_action.to_string();
    }
    let target = headers.get("x-amz-target").and_then(|t| t.to_str().ok());
    match target.and_then(|t| t.rsplit('.').next()) {
        Some(operation) => operation.to_string(),
        None => format!("{method} {path}"),
    }
}

/// The instance ids in an EC2 XML answer.
fn instance_ids(xml: &str) -> Vec<String> {
    xml.split(">i-")
        .skip(1)
        .filter_map(|rest| {
            let id: String = rest.chars().take_while(char::is_ascii_alphanumeric).collect();
            (!id.is_empty()).then(|| format!("i-{id}"))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml")], body).into_response()
}

async fn forward(proxy: &Proxy, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match proxy.http.send(method, &format!("{}{path}", proxy.upstream), headers, body).await {
        Ok((status, headers, body)) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (name, value) in headers.iter() {
                // The body is re-framed by this server.
                if name != "transfer-encoding" && name != "content-length" && name != "connection" {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
            }
            response
        }
        Err(error) => (StatusCode::BAD_GATEWAY, format!("fault proxy: upstream failed: {error}")).into_response(),
    }
}

/// The smallest HTTP/1.1 client the proxy needs, on hyper-util's pooled client.
mod reqwest_lite {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    pub struct Client(HyperClient<HttpConnector, Full<Bytes>>);

    impl Client {
        pub fn new() -> Self {
            Self(HyperClient::builder(TokioExecutor::new()).build_http())
        }

        pub async fn send(
            &self,
            method: Method,
            url: &str,
            headers: &HeaderMap,
            body: Bytes,
        ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
            let mut request = axum::http::Request::builder().method(method).uri(url);
            for (name, value) in headers {
                if name != "host" {
                    request = request.header(name, value);
                }
            }
            let response = self.0.request(request.body(Full::new(body))?).await?;
            let (parts, body) = response.into_parts();
            Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_fleet_overrides_are_read_in_order() {
        let body = "Action=CreateFleet&Version=2016-11-15&LaunchTemplateConfigs.1.Overrides.2.InstanceType=m5.large&LaunchTemplateConfigs.1.Overrides.1.InstanceType=c5.large&LaunchTemplateConfigs.1.Overrides.1.SubnetId=subnet-1&LaunchTemplateConfigs.1.Overrides.1.AvailabilityZone=us-east-1a";
        let overrides = fleet_overrides(&url_decode_pairs(body));
        assert_eq!(overrides[0], ("c5.large".into(), "subnet-1".into(), "us-east-1a".into()));
        assert_eq!(overrides[1].0, "m5.large");
    }

    #[test]
    fn the_nodeclaim_tag_of_a_fleet_request_is_found() {
        let body = "TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.2.Key=karpenter.sh%2Fnodeclaim&TagSpecification.1.Tag.2.Value=default-abcde&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=x";
        assert_eq!(nodeclaim_tag(&url_decode_pairs(body)).as_deref(), Some("default-abcde"));
    }

    #[test]
    fn instance_ids_are_read_from_a_fleet_answer() {
        let xml = "<CreateFleetResponse><fleetInstanceSet><item><instanceIds><item>i-0abc12</item>\
                   <item>i-0def34</item></instanceIds></item></fleetInstanceSet></CreateFleetResponse>";
        assert_eq!(instance_ids(xml), ["i-0abc12", "i-0def34"]);
        assert!(instance_ids("<errorSet/>").is_empty());
    }

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(decode("%24Latest"), "$Latest");
        assert_eq!(decode("a+b"), "a b");
    }
}
