//! Instance types, their offerings (zone × capacity type × price) and what a node of each type can hold.
//! Pure: plain data in, plain data out; the AWS calls that fill it live in `cloud::instance_types`.

pub mod allocatable;
pub mod instance_type;
pub mod max_pods;
pub mod pricing;
pub mod resources;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use instance_type::InstanceTypeInfo;
use pricing::PriceTable;

use crate::names::{CAPACITY_TYPE_ON_DEMAND, CAPACITY_TYPE_SPOT};

/// `instance-types.json`: DescribeInstanceTypes and DescribeInstanceTypeOfferings of us-east-1 as the sandbox's
/// moto serves them (real AWS data), written by `scripts/catalog-snapshot`. Lets `plan` and `max-pods` work with
/// no AWS at all.
const SNAPSHOT: &str = include_str!("instance-types.json");
pub const SNAPSHOT_REGION: &str = "us-east-1";
/// `regional-zones.tsv`: the zones each type is offered in, in every commercial region (AWS data as recorded in
/// moto 5.2.5), written by `scripts/regional-zones`.
const REGIONAL_ZONES: &str = include_str!("regional-zones.tsv");
/// What the embedded catalog describes and how old it is, for reports.
pub const EMBEDDED_CATALOG_PROVENANCE: &str = "instance types and zones as AWS reported them in the data of moto \
    5.2.5 (2025); on-demand prices of July 2026 (us-east-1, Karpenter's table) or May 2025 (other regions, \
    ec2instances.info); spot prices the regions' averages of May 2025";

/// What the controller plans with: the region's instance types and their prices. Replaced whole when refreshed,
/// so a plan never mixes two versions.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub instance_types: Vec<InstanceTypeInfo>,
    pub prices: PriceTable,
}

impl Catalog {
    pub fn instance_type(&self, name: &str) -> Option<&InstanceTypeInfo> {
        self.instance_types.iter().find(|t| t.name == name)
    }

    /// Every offering the catalog prices: instance type, zone, capacity type, and its price with its source.
    pub fn offering_prices(&self) -> impl Iterator<Item = (&str, &str, CapacityType, pricing::Price)> + '_ {
        self.instance_types.iter().flat_map(move |t| {
            t.zones.iter().flat_map(move |zone| {
                t.usage_classes.iter().filter_map(move |usage| {
                    let capacity_type = usage.parse().ok()?;
                    let price = self.prices.price(&t.name, zone, capacity_type)?;
                    Some((t.name.as_str(), zone.as_str(), capacity_type, price))
                })
            })
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    Spot,
    OnDemand,
}

impl CapacityType {
    /// The value of the `karpenter.sh/capacity-type` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spot => CAPACITY_TYPE_SPOT,
            Self::OnDemand => CAPACITY_TYPE_ON_DEMAND,
        }
    }
}

/// A value no capacity type has (Karpenter on AWS knows `spot` and `on-demand`; `reserved` is not served).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a capacity type (spot or on-demand)")]
pub struct UnknownCapacityType(pub String);

impl std::str::FromStr for CapacityType {
    type Err = UnknownCapacityType;

    /// From the `karpenter.sh/capacity-type` label, or EC2's instance lifecycle and usage class (same words).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            CAPACITY_TYPE_SPOT => Ok(Self::Spot),
            CAPACITY_TYPE_ON_DEMAND => Ok(Self::OnDemand),
            other => Err(UnknownCapacityType(other.to_string())),
        }
    }
}

/// Where and how a type can be launched, and at what price per hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offering {
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price: f64,
}

/// One offering, as the insufficient-capacity cache and interruptions name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OfferingKey {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
}

/// The embedded snapshot, parsed once.
pub fn embedded_instance_types() -> &'static [InstanceTypeInfo] {
    static TYPES: OnceLock<Vec<InstanceTypeInfo>> = OnceLock::new();
    TYPES.get_or_init(|| serde_json::from_str(SNAPSHOT).unwrap_or_default())
}

/// The embedded catalog as `region` has it: the types offered there, each with the region's zones. None for a
/// region the snapshot does not cover.
pub fn embedded_instance_types_in(region: &str) -> Option<Vec<InstanceTypeInfo>> {
    let letters: HashMap<&str, &str> = REGIONAL_ZONES
        .lines()
        .filter(|line| !line.starts_with('#'))
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let (row_region, name, letters) = (cols.next()?, cols.next()?, cols.next()?);
            (row_region == region).then_some((name, letters))
        })
        .collect();
    if letters.is_empty() {
        return None;
    }
    let types = embedded_instance_types()
        .iter()
        .filter_map(|t| {
            let zones = letters.get(t.name.as_str())?.chars().map(|letter| format!("{region}{letter}")).collect();
            Some(InstanceTypeInfo { zones, ..t.clone() })
        })
        .collect();
    Some(types)
}

/// The offerings of a type: every zone it is offered in × the capacity types it supports, where a price is
/// known (a type without a price cannot be compared, so it is not offered).
pub fn offerings(instance_type: &InstanceTypeInfo, prices: &PriceTable) -> Vec<Offering> {
    let mut offerings = Vec::new();
    for zone in &instance_type.zones {
        for usage in &instance_type.usage_classes {
            let (capacity_type, price) = match usage.parse() {
                Ok(CapacityType::Spot) => (CapacityType::Spot, prices.spot(&instance_type.name, zone)),
                Ok(CapacityType::OnDemand) => (CapacityType::OnDemand, prices.on_demand(&instance_type.name)),
                Err(_) => continue,
            };
            if let Some(price) = price {
                offerings.push(Offering { zone: zone.clone(), capacity_type, price });
            }
        }
    }
    offerings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_types_read_as_they_are_written() {
        for capacity_type in [CapacityType::Spot, CapacityType::OnDemand] {
            assert_eq!(capacity_type.as_str().parse(), Ok(capacity_type));
        }
        assert_eq!("reserved".parse::<CapacityType>(), Err(UnknownCapacityType("reserved".into())));
        assert_eq!(
            "Spot".parse::<CapacityType>().map_err(|e| e.to_string()),
            Err("\"Spot\" is not a capacity type (spot or on-demand)".into())
        );
    }
    use crate::catalog::max_pods::MaxPodsSettings;

    #[test]
    fn the_snapshot_parses_and_holds_the_common_types() {
        let types = embedded_instance_types();
        assert!(types.len() > 1000, "{} types", types.len());
        let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
        assert_eq!((m5.vcpus, m5.memory_mib, m5.enis, m5.ipv4_per_eni), (2, 8192, 3, 10));
        assert!(m5.zones.len() >= 3);
        let graviton = types.iter().find(|t| t.name == "m7g.large").expect("m7g.large");
        assert_eq!(graviton.kubernetes_arch(), Some("arm64"));
    }

    #[test]
    fn snapshot_max_pods_matches_aws_table_and_the_prefix_delegation_examples() {
        let types = embedded_instance_types();
        let find = |name: &str| types.iter().find(|t| t.name == name).expect(name);
        let pd = MaxPodsSettings { prefix_delegation: true, ..Default::default() };
        assert_eq!(find("m5.large").max_pods(pd), 110);
        assert_eq!(find("t3.micro").max_pods(pd), 34);
        assert_eq!(find("m5.24xlarge").max_pods(pd), 250);

        let table = include_str!("../../tests/data/eni-max-pods.txt");
        let mut compared = 0;
        for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((name, expected)) = line.split_once(' ') else {
                continue;
            };
            let Some(t) = types.iter().find(|t| t.name == name) else {
                continue;
            };
            assert_eq!(t.max_pods(MaxPodsSettings::default()).to_string(), expected.trim(), "{name}");
            compared += 1;
        }
        assert!(compared > 500, "only {compared} types in both");
    }

    #[test]
    fn every_commercial_region_has_its_own_types_and_zones() {
        let ireland = embedded_instance_types_in("eu-west-1").expect("eu-west-1 is covered");
        let m5 = ireland.iter().find(|t| t.name == "m5.large").expect("m5.large is offered in eu-west-1");
        assert_eq!(m5.zones, ["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
        assert!(ireland.len() > 500, "{} types in eu-west-1", ireland.len());
        // Fewer types in a small region than in us-east-1, and none of us-east-1's zones.
        let cape_town = embedded_instance_types_in("af-south-1").expect("af-south-1 is covered");
        let virginia = embedded_instance_types_in("us-east-1").expect("us-east-1 is covered");
        assert!(cape_town.len() < virginia.len(), "{} < {}", cape_town.len(), virginia.len());
        assert!(cape_town.iter().flat_map(|t| &t.zones).all(|z| z.starts_with("af-south-1")));
        // us-east-1's agree with the snapshot's own offerings.
        let snapshot_m5 = embedded_instance_types().iter().find(|t| t.name == "m5.large").expect("m5.large");
        let regional_m5 = virginia.iter().find(|t| t.name == "m5.large").expect("m5.large");
        assert_eq!(regional_m5.zones, snapshot_m5.zones);
        assert_eq!(embedded_instance_types_in("xx-nowhere-1"), None);
    }

    #[test]
    fn offerings_cover_zones_and_capacity_types_with_prices() {
        let types = embedded_instance_types();
        let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
        let offerings = offerings(m5, &PriceTable::embedded());
        assert_eq!(offerings.len(), m5.zones.len() * 2);
        let spot = offerings.iter().find(|o| o.capacity_type == CapacityType::Spot).expect("spot");
        let on_demand = offerings.iter().find(|o| o.capacity_type == CapacityType::OnDemand).expect("on-demand");
        assert!(spot.price < on_demand.price);
    }
}
