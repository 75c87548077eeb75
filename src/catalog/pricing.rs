//! Prices per instance type and capacity type, for one region.
//!
//! On-demand prices are embedded: us-east-1's from Karpenter's generated pricing data (`on-demand-prices.tsv`,
//! July 2026), every other commercial region's from the ec2instances.info data of May 2025
//! (`regional-on-demand-prices.tsv`, written by `scripts/regional-prices`); a region neither knows falls back to
//! us-east-1's, and says so (`PriceSource`). The Pricing API is not read yet. Spot prices are not read either
//! (DescribeSpotPriceHistory): a fixed fraction of on-demand stands in, so that choices stay deterministic and
//! spot stays cheaper than on-demand, as it is in practice; one set with `set_spot` is used if plausible (moto
//! answers 0.00001 for everything).

use std::collections::HashMap;

use serde::Serialize;

const EMBEDDED_ON_DEMAND: &str = include_str!("on-demand-prices.tsv");
const EMBEDDED_REGIONAL_ON_DEMAND: &str = include_str!("regional-on-demand-prices.tsv");

/// The region of Karpenter's own price table, and the stand-in for regions without prices.
pub const HOME_REGION: &str = "us-east-1";

/// Spot as a fraction of on-demand when no usable spot price is known (AWS's long-run average discount is
/// 60–70%).
pub const SPOT_FALLBACK_FRACTION: f64 = 0.35;
/// A spot price below this fraction of on-demand is taken as unknown.
const IMPLAUSIBLE_SPOT_FRACTION: f64 = 0.01;

/// Where a table's prices come from, as `plan --output json` and the logs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceSource {
    /// us-east-1 list prices from Karpenter's generated pricing data (on-demand-prices.tsv, 2026-07-20).
    KarpenterTable,
    /// The region's list prices from ec2instances.info data (regional-on-demand-prices.tsv, 2025-05-28).
    RegionalSnapshot,
    /// A region with no embedded prices: us-east-1's stand in.
    HomeRegionStandIn,
    /// Spot: `SPOT_FALLBACK_FRACTION` of on-demand.
    SpotEstimate,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    region: String,
    on_demand_source: PriceSource,
    on_demand: HashMap<String, f64>,
    /// (instance type, zone) → spot price.
    spot: HashMap<(String, String), f64>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            region: HOME_REGION.to_string(),
            on_demand_source: PriceSource::KarpenterTable,
            on_demand: HashMap::new(),
            spot: HashMap::new(),
        }
    }
}

impl PriceTable {
    /// The embedded prices of us-east-1.
    pub fn embedded() -> Self {
        Self::embedded_for(HOME_REGION)
    }

    /// The embedded prices of `region`; us-east-1's when none are embedded for it (see `on_demand_source`).
    pub fn embedded_for(region: &str) -> Self {
        let rows = |text: &'static str| {
            text.lines().filter(|line| !line.starts_with('#')).skip(1).filter_map(|line| {
                let mut cols = line.split('\t');
                let (row_region, name, price) = (cols.next()?, cols.next()?, cols.next()?);
                Some((row_region, name.to_string(), price.parse::<f64>().ok()?))
            })
        };
        let collect = |text: &'static str, wanted: &str| -> HashMap<String, f64> {
            rows(text).filter(|(r, _, _)| *r == wanted).map(|(_, name, price)| (name, price)).collect()
        };
        let (on_demand, on_demand_source) = if region == HOME_REGION {
            (collect(EMBEDDED_ON_DEMAND, HOME_REGION), PriceSource::KarpenterTable)
        } else {
            match collect(EMBEDDED_REGIONAL_ON_DEMAND, region) {
                regional if !regional.is_empty() => (regional, PriceSource::RegionalSnapshot),
                _ => (collect(EMBEDDED_ON_DEMAND, HOME_REGION), PriceSource::HomeRegionStandIn),
            }
        };
        Self { region: region.to_string(), on_demand_source, on_demand, spot: HashMap::new() }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn on_demand_source(&self) -> PriceSource {
        self.on_demand_source
    }

    /// Where spot prices come from: so far always the estimate (`set_spot` prices are tests' and moto's).
    pub fn spot_source(&self) -> PriceSource {
        PriceSource::SpotEstimate
    }

    pub fn set_on_demand(&mut self, instance_type: &str, price: f64) {
        self.on_demand.insert(instance_type.to_string(), price);
    }

    pub fn set_spot(&mut self, instance_type: &str, zone: &str, price: f64) {
        self.spot.insert((instance_type.to_string(), zone.to_string()), price);
    }

    pub fn on_demand(&self, instance_type: &str) -> Option<f64> {
        self.on_demand.get(instance_type).copied()
    }

    pub fn spot(&self, instance_type: &str, zone: &str) -> Option<f64> {
        let on_demand = self.on_demand(instance_type);
        let observed = self.spot.get(&(instance_type.to_string(), zone.to_string())).copied();
        match (observed, on_demand) {
            (Some(spot), Some(od)) if spot >= od * IMPLAUSIBLE_SPOT_FRACTION => Some(spot.min(od)),
            (Some(spot), None) => Some(spot),
            (_, Some(od)) => Some(od * SPOT_FALLBACK_FRACTION),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_has_every_row() {
        let table = PriceTable::embedded();
        assert_eq!(table.on_demand.len(), 1367);
        assert_eq!(table.on_demand("m5.large"), Some(0.096));
    }

    #[test]
    fn each_region_has_its_own_prices_and_says_where_they_come_from() {
        let home = PriceTable::embedded_for("us-east-1");
        let ireland = PriceTable::embedded_for("eu-west-1");
        assert_eq!(ireland.on_demand_source(), PriceSource::RegionalSnapshot);
        assert_eq!(ireland.on_demand("m5.large"), Some(0.107));
        assert_ne!(ireland.on_demand("m5.large"), home.on_demand("m5.large"));
        assert!(ireland.on_demand.len() > 500, "{} types priced in eu-west-1", ireland.on_demand.len());
        let unknown = PriceTable::embedded_for("xx-nowhere-1");
        assert_eq!(unknown.on_demand_source(), PriceSource::HomeRegionStandIn);
        assert_eq!(unknown.on_demand("m5.large"), home.on_demand("m5.large"));
        assert_eq!(unknown.region(), "xx-nowhere-1");
    }

    #[test]
    fn spot_falls_back_to_a_fraction_of_on_demand() {
        let mut table = PriceTable::embedded();
        let fallback = 0.096 * SPOT_FALLBACK_FRACTION;
        assert_eq!(table.spot("m5.large", "us-east-1a"), Some(fallback));
        // moto's placeholder price is ignored...
        table.set_spot("m5.large", "us-east-1a", 0.00001);
        assert_eq!(table.spot("m5.large", "us-east-1a"), Some(fallback));
        // ...a real one is used.
        table.set_spot("m5.large", "us-east-1b", 0.04);
        assert_eq!(table.spot("m5.large", "us-east-1b"), Some(0.04));
        assert_eq!(table.spot("no.such-type", "us-east-1a"), None);
    }
}
