//! Prices per instance type and capacity type.
//!
//! On-demand prices come from the Pricing API when the controller can reach it; the table embedded here
//! (`on-demand-prices.tsv`: us-east-1 list prices from Karpenter's generated pricing data, July 2026) is the
//! fallback and what offline commands use. Spot prices come from DescribeSpotPriceHistory; where none is known, or
//! the one known is implausible (moto answers 0.00001 for everything), a fixed fraction of on-demand stands in, so
//! that choices stay deterministic and spot stays cheaper than on-demand as it is in practice.

use std::collections::HashMap;

const EMBEDDED_ON_DEMAND: &str = include_str!("on-demand-prices.tsv");

/// Spot as a fraction of on-demand when no usable spot price is known (AWS's long-run average discount is
/// 60–70%).
pub const SPOT_FALLBACK_FRACTION: f64 = 0.35;
/// A spot price below this fraction of on-demand is taken as unknown.
const IMPLAUSIBLE_SPOT_FRACTION: f64 = 0.01;

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    on_demand: HashMap<String, f64>,
    /// (instance type, zone) → spot price.
    spot: HashMap<(String, String), f64>,
}

impl PriceTable {
    /// The embedded on-demand table of `region` (only us-east-1 is embedded; other regions use its figures, which
    /// keeps relative prices, which is what choices depend on).
    pub fn embedded() -> Self {
        let on_demand = EMBEDDED_ON_DEMAND
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let (_region, name, price) = (cols.next()?, cols.next()?, cols.next()?);
                Some((name.to_string(), price.parse().ok()?))
            })
            .collect();
        Self { on_demand, spot: HashMap::new() }
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
