//! Prices per instance type and capacity type, for one region, and where each comes from.
//!
//! A table starts from embedded data and is then overlaid with what AWS says, as Karpenter does:
//! - on-demand: us-east-1's from Karpenter's generated pricing data (`on-demand-prices.tsv`, July 2026), every other
//!   commercial region's from the ec2instances.info data of May 2025 (`regional-on-demand-prices.tsv`); a region
//!   neither knows falls back to us-east-1's. The Pricing API's answer (`apply_on_demand`) replaces them type by
//!   type.
//! - spot: the region's average spot price per type (`regional-spot-prices.tsv`, same data); where that is
//!   missing, on-demand times the region's median spot / on-demand ratio (35% where even that is unknown).
//!   DescribeSpotPriceHistory's current price per zone (`apply_spot`) replaces them zone by zone. A price below 1%
//!   of on-demand is taken as unknown (moto answers 0.00001).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::CapacityType;

const EMBEDDED_ON_DEMAND: &str = include_str!("on-demand-prices.tsv");
const EMBEDDED_REGIONAL_ON_DEMAND: &str = include_str!("regional-on-demand-prices.tsv");
const EMBEDDED_REGIONAL_SPOT: &str = include_str!("regional-spot-prices.tsv");

/// The region of Karpenter's own price table, and the stand-in for regions without prices.
pub const HOME_REGION: &str = "us-east-1";

/// Spot as a fraction of on-demand when the region's own typical discount is not known either (AWS's long-run
/// average discount is 60–70%).
pub const SPOT_FALLBACK_FRACTION: f64 = 0.35;
/// The region's typical discount is taken from at least this many types priced both ways.
const SPOT_FRACTION_SAMPLE: usize = 20;
/// A spot price below this fraction of on-demand is taken as unknown.
const IMPLAUSIBLE_SPOT_FRACTION: f64 = 0.01;

/// Where a price comes from, as `plan --output json`, the logs and `nodesmith_offering_prices` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceSource {
    /// The Pricing API (GetProducts), read by this process.
    PricingApi,
    /// DescribeSpotPriceHistory's current price in the zone, read by this process.
    SpotPriceHistory,
    /// us-east-1 list prices from Karpenter's generated pricing data (on-demand-prices.tsv, 2026-07-20).
    KarpenterTable,
    /// The region's prices from ec2instances.info data (regional-*-prices.tsv, 2025-05-28): list prices for
    /// on-demand, the average over the region's zones for spot.
    RegionalSnapshot,
    /// A region with no embedded on-demand prices: us-east-1's stand in.
    HomeRegionStandIn,
    /// Spot: on-demand times the region's median spot discount (`SPOT_FALLBACK_FRACTION` where that is unknown).
    SpotEstimate,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PricingApi => "pricing-api",
            Self::SpotPriceHistory => "spot-price-history",
            Self::KarpenterTable => "karpenter-table",
            Self::RegionalSnapshot => "regional-snapshot",
            Self::HomeRegionStandIn => "home-region-stand-in",
            Self::SpotEstimate => "spot-estimate",
        }
    }

    /// What it means, in a sentence's words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PricingApi => "the AWS Pricing API, read now",
            Self::SpotPriceHistory => "EC2's spot price history, read now",
            Self::KarpenterTable => "Karpenter's us-east-1 list prices (July 2026)",
            Self::RegionalSnapshot => "the region's embedded prices (ec2instances.info, May 2025)",
            Self::HomeRegionStandIn => "us-east-1's list prices, standing in (none embedded for this region)",
            Self::SpotEstimate => "an estimate: on-demand times the region's typical spot discount",
        }
    }
}

/// A price and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price {
    pub usd_per_hour: f64,
    pub source: PriceSource,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    region: String,
    on_demand: HashMap<String, Price>,
    /// The region's average spot price per type, from the snapshot.
    spot_average: HashMap<String, f64>,
    /// (instance type, zone) → the zone's current spot price, from DescribeSpotPriceHistory.
    spot: HashMap<(String, String), f64>,
    /// Spot as a fraction of on-demand for a type with no spot price: the region's median over the types that
    /// have both, so that a type missing from the data is neither favoured nor shunned.
    spot_fraction: f64,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            region: HOME_REGION.to_string(),
            on_demand: HashMap::new(),
            spot_average: HashMap::new(),
            spot: HashMap::new(),
            spot_fraction: SPOT_FALLBACK_FRACTION,
        }
    }
}

/// The rows of an embedded price table for `region`: instance type → USD per hour.
fn embedded_rows(text: &'static str, region: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let (row_region, name, price) = (cols.next()?, cols.next()?, cols.next()?);
            (row_region == region).then(|| Some((name.to_string(), price.parse::<f64>().ok()?)))?
        })
        .collect()
}

impl PriceTable {
    /// The embedded prices of us-east-1.
    pub fn embedded() -> Self {
        Self::embedded_for(HOME_REGION)
    }

    /// The embedded prices of `region`; us-east-1's on-demand prices when none are embedded for it.
    pub fn embedded_for(region: &str) -> Self {
        let (on_demand, source) = if region == HOME_REGION {
            (embedded_rows(EMBEDDED_ON_DEMAND, HOME_REGION), PriceSource::KarpenterTable)
        } else {
            match embedded_rows(EMBEDDED_REGIONAL_ON_DEMAND, region) {
                regional if !regional.is_empty() => (regional, PriceSource::RegionalSnapshot),
                _ => (embedded_rows(EMBEDDED_ON_DEMAND, HOME_REGION), PriceSource::HomeRegionStandIn),
            }
        };
        let spot_average = embedded_rows(EMBEDDED_REGIONAL_SPOT, region);
        let spot_fraction = median_fraction(&spot_average, &on_demand).unwrap_or(SPOT_FALLBACK_FRACTION);
        Self {
            region: region.to_string(),
            on_demand: on_demand
                .into_iter()
                .map(|(name, usd_per_hour)| (name, Price { usd_per_hour, source }))
                .collect(),
            spot_average,
            spot: HashMap::new(),
            spot_fraction,
        }
    }

    /// The same on-demand prices, with spot at one fraction of on-demand everywhere (tests that need spot prices
    /// in proportion).
    #[cfg(test)]
    pub fn with_spot_estimated(mut self) -> Self {
        self.spot_average.clear();
        self.spot.clear();
        self.spot_fraction = SPOT_FALLBACK_FRACTION;
        self
    }

    /// Spot as a fraction of on-demand for a type with no spot price of its own.
    pub fn spot_fraction(&self) -> f64 {
        self.spot_fraction
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Replaces on-demand prices with the Pricing API's, type by type (a type it does not price keeps its
    /// embedded price); returns how many it priced.
    pub fn apply_on_demand(&mut self, prices: impl IntoIterator<Item = (String, f64)>) -> usize {
        let mut applied = 0;
        for (name, usd_per_hour) in prices {
            if usd_per_hour > 0.0 {
                self.on_demand.insert(name, Price { usd_per_hour, source: PriceSource::PricingApi });
                applied += 1;
            }
        }
        applied
    }

    /// Replaces spot prices with the zones' current ones from the spot price history; returns how many.
    pub fn apply_spot(&mut self, prices: impl IntoIterator<Item = (String, String, f64)>) -> usize {
        let mut applied = 0;
        for (name, zone, usd_per_hour) in prices {
            self.spot.insert((name, zone), usd_per_hour);
            applied += 1;
        }
        applied
    }

    /// One on-demand price, as read from the Pricing API (tests and benchmarks).
    pub fn set_on_demand(&mut self, instance_type: &str, price: f64) {
        self.apply_on_demand([(instance_type.to_string(), price)]);
    }

    /// One zone's spot price, as read from the spot price history (tests and benchmarks).
    pub fn set_spot(&mut self, instance_type: &str, zone: &str, price: f64) {
        self.apply_spot([(instance_type.to_string(), zone.to_string(), price)]);
    }

    pub fn on_demand_price(&self, instance_type: &str) -> Option<Price> {
        self.on_demand.get(instance_type).copied()
    }

    pub fn on_demand(&self, instance_type: &str) -> Option<f64> {
        self.on_demand_price(instance_type).map(|p| p.usd_per_hour)
    }

    /// The spot price of the type in the zone: the zone's current price, else the region's average, else the
    /// estimate; never above on-demand.
    pub fn spot_price(&self, instance_type: &str, zone: &str) -> Option<Price> {
        let on_demand = self.on_demand(instance_type);
        let plausible = |spot: f64| on_demand.is_none_or(|od| spot >= od * IMPLAUSIBLE_SPOT_FRACTION);
        let capped = |usd_per_hour: f64, source| Price {
            usd_per_hour: on_demand.map_or(usd_per_hour, |od| usd_per_hour.min(od)),
            source,
        };
        if let Some(&spot) = self.spot.get(&(instance_type.to_string(), zone.to_string()))
            && plausible(spot)
        {
            return Some(capped(spot, PriceSource::SpotPriceHistory));
        }
        if let Some(&average) = self.spot_average.get(instance_type)
            && plausible(average)
        {
            return Some(capped(average, PriceSource::RegionalSnapshot));
        }
        on_demand.map(|od| Price { usd_per_hour: od * self.spot_fraction, source: PriceSource::SpotEstimate })
    }

    pub fn spot(&self, instance_type: &str, zone: &str) -> Option<f64> {
        self.spot_price(instance_type, zone).map(|p| p.usd_per_hour)
    }

    pub fn price(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) -> Option<Price> {
        match capacity_type {
            CapacityType::OnDemand => self.on_demand_price(instance_type),
            CapacityType::Spot => self.spot_price(instance_type, zone),
        }
    }

    /// Where the on-demand prices come from: the source of most of them.
    pub fn on_demand_source(&self) -> PriceSource {
        most_common(self.on_demand.values().map(|p| p.source)).unwrap_or(PriceSource::HomeRegionStandIn)
    }

    /// Where spot prices come from: the history once read, else the region's averages, else the estimate.
    pub fn spot_source(&self) -> PriceSource {
        if self.spot.values().any(|&p| p > 0.0) {
            PriceSource::SpotPriceHistory
        } else if !self.spot_average.is_empty() {
            PriceSource::RegionalSnapshot
        } else {
            PriceSource::SpotEstimate
        }
    }
}

/// The median of spot / on-demand over the types priced both ways; None with too few of them.
fn median_fraction(spot: &HashMap<String, f64>, on_demand: &HashMap<String, f64>) -> Option<f64> {
    let mut fractions: Vec<f64> = spot
        .iter()
        .filter_map(|(name, spot)| Some(spot / on_demand.get(name).filter(|od| **od > 0.0)?))
        .filter(|f| f.is_finite() && *f > 0.0 && *f <= 1.0)
        .collect();
    if fractions.len() < SPOT_FRACTION_SAMPLE {
        return None;
    }
    fractions.sort_by(f64::total_cmp);
    Some(fractions[fractions.len() / 2])
}

fn most_common(sources: impl Iterator<Item = PriceSource>) -> Option<PriceSource> {
    let mut counts: BTreeMap<PriceSource, usize> = BTreeMap::new();
    for source in sources {
        *counts.entry(source).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(_, count)| count).map(|(source, _)| source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_has_every_row() {
        let table = PriceTable::embedded();
        assert_eq!(table.on_demand.len(), 1367);
        assert_eq!(table.on_demand("m5.large"), Some(0.096));
        assert_eq!(table.on_demand_source(), PriceSource::KarpenterTable);
    }

    #[test]
    fn each_region_has_its_own_prices_and_says_where_they_come_from() {
        let home = PriceTable::embedded_for("us-east-1");
        let ireland = PriceTable::embedded_for("eu-west-1");
        assert_eq!(ireland.on_demand_source(), PriceSource::RegionalSnapshot);
        assert_eq!(ireland.on_demand("m5.large"), Some(0.107));
        assert_ne!(ireland.on_demand("m5.large"), home.on_demand("m5.large"));
        assert!(ireland.on_demand.len() > 500, "{} types priced in eu-west-1", ireland.on_demand.len());
        // Spot: each region's own average, not a fraction of on-demand.
        assert_eq!(ireland.spot_source(), PriceSource::RegionalSnapshot);
        let spot = ireland.spot_price("m5.large", "eu-west-1a").expect("a spot price");
        assert_eq!(spot, Price { usd_per_hour: 0.04708, source: PriceSource::RegionalSnapshot });
        assert_eq!(home.spot("m5.large", "us-east-1a"), Some(0.03168));
        let unknown = PriceTable::embedded_for("xx-nowhere-1");
        assert_eq!(unknown.on_demand_source(), PriceSource::HomeRegionStandIn);
        assert_eq!(unknown.on_demand("m5.large"), home.on_demand("m5.large"));
        assert_eq!(unknown.spot_source(), PriceSource::SpotEstimate);
        assert_eq!(unknown.spot_fraction(), SPOT_FALLBACK_FRACTION);
        // A type without a spot price of its own is estimated at the region's typical discount.
        assert!((0.2..0.6).contains(&home.spot_fraction()), "{}", home.spot_fraction());
        let unpriced =
            home.on_demand.keys().find(|t| !home.spot_average.contains_key(*t)).expect("a type without spot data");
        let estimate = home.spot_price(unpriced, "us-east-1a").expect("an estimate");
        assert_eq!(estimate.source, PriceSource::SpotEstimate);
        assert_eq!(estimate.usd_per_hour, home.on_demand(unpriced).unwrap_or_default() * home.spot_fraction());
        assert_eq!(unknown.region(), "xx-nowhere-1");
    }

    #[test]
    fn live_prices_replace_embedded_ones_type_by_type_and_zone_by_zone() {
        let mut table = PriceTable::embedded_for("eu-west-1");
        let applied = table.apply_on_demand([("m5.large".to_string(), 0.2), ("new.type".to_string(), 1.5)]);
        assert_eq!(applied, 2);
        assert_eq!(
            table.on_demand_price("m5.large"),
            Some(Price { usd_per_hour: 0.2, source: PriceSource::PricingApi })
        );
        assert_eq!(table.on_demand("new.type"), Some(1.5));
        // Types the API did not price keep the embedded price (and most still come from the snapshot).
        assert_eq!(table.on_demand_price("c5.large").map(|p| p.source), Some(PriceSource::RegionalSnapshot));
        assert_eq!(table.on_demand_source(), PriceSource::RegionalSnapshot);

        table.apply_spot([("m5.large".to_string(), "eu-west-1b".to_string(), 0.05)]);
        assert_eq!(table.spot_source(), PriceSource::SpotPriceHistory);
        assert_eq!(
            table.spot_price("m5.large", "eu-west-1b"),
            Some(Price { usd_per_hour: 0.05, source: PriceSource::SpotPriceHistory })
        );
        // Another zone keeps the region's average.
        assert_eq!(table.spot_price("m5.large", "eu-west-1a").map(|p| p.source), Some(PriceSource::RegionalSnapshot));
        let source = |zone, capacity_type| table.price("m5.large", zone, capacity_type).map(|p| p.source);
        assert_eq!(source("eu-west-1b", CapacityType::Spot), Some(PriceSource::SpotPriceHistory));
        assert_eq!(source("eu-west-1a", CapacityType::Spot), Some(PriceSource::RegionalSnapshot));
        assert_eq!(source("eu-west-1a", CapacityType::OnDemand), Some(PriceSource::PricingApi));
    }

    #[test]
    fn spot_is_never_above_on_demand_and_a_placeholder_price_is_ignored() {
        let mut table = PriceTable::default();
        table.set_on_demand("m5.large", 0.096);
        let fallback = 0.096 * SPOT_FALLBACK_FRACTION;
        assert_eq!(
            table.spot_price("m5.large", "us-east-1a").map(|p| (p.usd_per_hour, p.source)),
            Some((fallback, PriceSource::SpotEstimate))
        );
        // moto's placeholder price is ignored...
        table.set_spot("m5.large", "us-east-1a", 0.00001);
        assert_eq!(table.spot("m5.large", "us-east-1a"), Some(fallback));
        // ...a real one is used, and one above on-demand is capped.
        table.set_spot("m5.large", "us-east-1b", 0.04);
        assert_eq!(table.spot("m5.large", "us-east-1b"), Some(0.04));
        table.set_spot("m5.large", "us-east-1c", 0.5);
        assert_eq!(table.spot("m5.large", "us-east-1c"), Some(0.096));
        assert_eq!(table.spot("no.such-type", "us-east-1a"), None);
    }
}
