//! Launching one instance for one NodeClaim with CreateFleet (type `instant`), and the capacity errors that make
//! the next attempt pick another offering.

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType, InstanceType,
    OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};

use super::error::CloudError;
use crate::catalog::{CapacityType, OfferingKey};

/// A launch offers CreateFleet at most this many instance types (the cheapest), each in every zone it may launch
/// in, as Karpenter does: an instant fleet has no cap on overrides, and more types give spot more pools to draw on.
pub const MAX_INSTANCE_TYPES: usize = 60;

/// Error codes that mean "this offering has no capacity now" rather than "the request is wrong".
const CAPACITY_ERROR_CODES: [&str; 5] = [
    "InsufficientInstanceCapacity",
    "UnfulfillableCapacity",
    "MaxSpotInstanceCountExceeded",
    "InsufficientFreeAddressesInSubnet",
    "SpotMaxPriceTooLow",
];

pub fn is_capacity_error(code: &str) -> bool {
    CAPACITY_ERROR_CODES.contains(&code)
}

/// One (instance type, subnet) the fleet may launch into; the order is the preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOverride {
    pub instance_type: String,
    pub subnet_id: String,
    pub zone: String,
}

/// The overrides that launch with one template (types whose bootstrap is the same, e.g. the same max pods).
#[derive(Debug, Clone)]
pub struct LaunchTemplateOverrides {
    pub launch_template_name: String,
    pub overrides: Vec<FleetOverride>,
}

#[derive(Debug, Clone)]
pub struct FleetRequest {
    pub configs: Vec<LaunchTemplateOverrides>,
    pub capacity_type: CapacityType,
    pub tags: Vec<(String, String)>,
    /// Derived from the NodeClaim, so that a retried request is recognised as the same one where EC2 honours it.
    pub client_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedInstance {
    pub instance_id: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Nothing launched and every error was about capacity: those offerings should be avoided for a while.
    #[error("no capacity for any of {} offerings ({codes})", offerings.len())]
    InsufficientCapacity { offerings: Vec<OfferingKey>, codes: String },
    #[error("CreateFleet launched nothing: {detail}")]
    NothingLaunched {
        /// The distinct AWS error codes, comma-separated (empty when AWS gave none).
        codes: String,
        detail: String,
    },
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

fn tag_specification(resource: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(resource);
    for (key, value) in tags {
        spec = spec.tags(Tag::builder().key(key).value(value).build());
    }
    spec.build()
}

/// What a refused CreateFleet names as its resource: the launch templates it launched from.
fn launch_templates_of(request: &FleetRequest) -> String {
    let names: Vec<&str> = request.configs.iter().map(|c| c.launch_template_name.as_str()).collect();
    format!("launch template {}", names.join(", "))
}

/// Launches exactly one instance from the overrides (on-demand `lowest-price` picks the cheapest of them; spot
/// uses `price-capacity-optimized`). The priorities record the plan's preference for the record only.
pub async fn create_fleet(ec2: &aws_sdk_ec2::Client, request: &FleetRequest) -> Result<LaunchedInstance, FleetError> {
    let mut configs = Vec::new();
    let mut priority = 0.0;
    for group in &request.configs {
        let mut config = FleetLaunchTemplateConfigRequest::builder().launch_template_specification(
            FleetLaunchTemplateSpecificationRequest::builder()
                .launch_template_name(&group.launch_template_name)
                .version("$Latest")
                .build(),
        );
        for o in &group.overrides {
            config = config.overrides(
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(InstanceType::from(o.instance_type.as_str()))
                    .subnet_id(&o.subnet_id)
                    .availability_zone(&o.zone)
                    .priority(priority)
                    .build(),
            );
            priority += 1.0;
        }
        configs.push(config.build());
    }
    let all_overrides = || request.configs.iter().flat_map(|c| &c.overrides);
    let target_type = match request.capacity_type {
        CapacityType::Spot => DefaultTargetCapacityType::Spot,
        CapacityType::OnDemand => DefaultTargetCapacityType::OnDemand,
    };
    let target = TargetCapacitySpecificationRequest::builder()
        .total_target_capacity(1)
        .default_target_capacity_type(target_type)
        .build();
    let answer = ec2
        .create_fleet()
        .r#type(FleetType::Instant)
        .target_capacity_specification(target)
        .set_launch_template_configs(Some(configs))
        .spot_options(
            SpotOptionsRequest::builder().allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized).build(),
        )
        .on_demand_options(
            OnDemandOptionsRequest::builder().allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice).build(),
        )
        // The fleet is tagged too: the controller policy allows CreateFleet on fleet/* only with the cluster's tags.
        .tag_specifications(tag_specification(ResourceType::Fleet, &request.tags))
        .tag_specifications(tag_specification(ResourceType::Instance, &request.tags))
        .tag_specifications(tag_specification(ResourceType::Volume, &request.tags))
        .client_token(&request.client_token)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("ec2:CreateFleet", Some(&launch_templates_of(request)), e))?;

    for instance in answer.instances() {
        let Some(instance_id) = instance.instance_ids().first() else { continue };
        let overrides = instance.launch_template_and_overrides().and_then(|l| l.overrides());
        let instance_type = instance
            .instance_type()
            .map(|t| t.as_str().to_string())
            .or_else(|| overrides.and_then(|o| o.instance_type()).map(|t| t.as_str().to_string()));
        let subnet = overrides.and_then(|o| o.subnet_id());
        let zone = overrides
            .and_then(|o| o.availability_zone())
            .or_else(|| all_overrides().find(|o| Some(o.subnet_id.as_str()) == subnet).map(|o| o.zone.as_str()));
        let capacity_type = instance.lifecycle().and_then(|l| l.as_str().parse().ok()).unwrap_or(request.capacity_type);
        return Ok(LaunchedInstance {
            instance_id: instance_id.clone(),
            instance_type: instance_type.unwrap_or_default(),
            zone: zone.unwrap_or_default().to_string(),
            capacity_type,
        });
    }

    let errors = answer.errors();
    let all_capacity = !errors.is_empty() && errors.iter().all(|e| e.error_code().is_some_and(is_capacity_error));
    if all_capacity {
        let mut offerings: Vec<OfferingKey> = errors
            .iter()
            .filter_map(|e| {
                let o = e.launch_template_and_overrides()?.overrides()?;
                Some(OfferingKey {
                    instance_type: o.instance_type()?.as_str().to_string(),
                    zone: o.availability_zone().map(str::to_string).or_else(|| {
                        let subnet = o.subnet_id()?;
                        all_overrides().find(|r| r.subnet_id == subnet).map(|r| r.zone.clone())
                    })?,
                    capacity_type: request.capacity_type,
                })
            })
            .collect();
        offerings.sort();
        offerings.dedup();
        let mut codes: Vec<&str> = errors.iter().filter_map(|e| e.error_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        return Err(FleetError::InsufficientCapacity { offerings, codes: codes.join(", ") });
    }
    let messages: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.error_code().unwrap_or("unknown"), e.error_message().unwrap_or_default()))
        .collect();
    let mut codes: Vec<&str> = errors.iter().filter_map(|e| e.error_code()).collect();
    codes.sort_unstable();
    codes.dedup();
    let detail = if messages.is_empty() { "no instance and no error".into() } else { messages.join("; ") };
    Err(FleetError::NothingLaunched { codes: codes.join(", "), detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_errors_are_told_from_request_errors() {
        assert!(is_capacity_error("InsufficientInstanceCapacity"));
        assert!(is_capacity_error("MaxSpotInstanceCountExceeded"));
        assert!(!is_capacity_error("InvalidParameterValue"));
        assert!(!is_capacity_error("UnauthorizedOperation"));
    }
}
