//! Keeps the controller's catalog current without a restart: instance types and their zones are read again every
//! `Intervals::instance_types`, prices at once and then every `Intervals::prices` (12 hours, as Karpenter does).
//! Whatever AWS does not answer keeps what was known, at first the embedded data of the cluster's region. Prices
//! are read in the background, as Karpenter's pricing controller reads them: the Pricing API takes seconds to page
//! through, and the embedded prices serve meanwhile. A read that AWS did not answer in full is tried again after
//! `PRICE_RETRY_FIRST`, doubling up to the interval, rather than leaving the embedded prices in place for 12 hours.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::pricing::{PriceSource, PriceTable};
use crate::catalog::{Catalog, embedded_instance_types, embedded_instance_types_in};
use crate::cloud::CloudProvider;

/// How often each part of the catalog is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub instance_types: Duration,
    pub prices: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self { instance_types: Duration::from_secs(3600), prices: Duration::from_secs(12 * 3600) }
    }
}

/// The catalog at start: the region's types from EC2 (the embedded catalog of the region when EC2 does not
/// answer) with the region's embedded prices; `run` reads AWS's prices at once.
pub async fn initial(cloud: &dyn CloudProvider, region: &str) -> Catalog {
    let prices = PriceTable::embedded_for(region);
    if prices.on_demand_source() == PriceSource::HomeRegionStandIn {
        tracing::warn!(
            region,
            "no embedded on-demand prices for this region: us-east-1's stand in until the Pricing API answers"
        );
    }
    let instance_types = match read_instance_types(cloud).await {
        Some(types) => types,
        None => embedded_instance_types_in(region).unwrap_or_else(|| embedded_instance_types().to_vec()),
    };
    Catalog { instance_types, prices }
}

/// The region's instance types from EC2; None (logged) when EC2 gives none.
async fn read_instance_types(cloud: &dyn CloudProvider) -> Option<Vec<InstanceTypeInfo>> {
    match cloud.instance_types().await {
        Ok(types) if !types.is_empty() => Some(types),
        Ok(_) => {
            tracing::warn!("DescribeInstanceTypes listed no instance type: keeping the catalog as it is");
            None
        }
        Err(error) => {
            tracing::warn!("{error}: keeping the catalog as it is");
            None
        }
    }
}

/// The first wait before a price read that failed is tried again.
pub const PRICE_RETRY_FIRST: Duration = Duration::from_secs(30);

/// Overlays what the Pricing API and the spot price history say now; a price they do not give keeps its value.
/// False when either of them failed (an answer with no price counts as answered).
pub async fn read_prices(cloud: &dyn CloudProvider, prices: &mut PriceTable) -> bool {
    let region = prices.region().to_string();
    let mut answered = true;
    match cloud.on_demand_prices().await {
        Ok(found) if !found.is_empty() => {
            let applied = prices.apply_on_demand(found);
            tracing::info!(region, prices = applied, "on-demand prices read from the Pricing API");
        }
        Ok(_) => tracing::warn!(
            region,
            "the Pricing API priced no instance type here: on-demand prices stay {}",
            prices.on_demand_source().describe()
        ),
        Err(error) => {
            answered = false;
            tracing::warn!(region, "{error}: on-demand prices stay {}", prices.on_demand_source().describe())
        }
    }
    match cloud.spot_prices().await {
        Ok(found) if !found.is_empty() => {
            let applied = prices.apply_spot(found.into_iter().map(|p| (p.instance_type, p.zone, p.usd_per_hour)));
            tracing::info!(region, prices = applied, "spot prices read from the spot price history");
        }
        Ok(_) => tracing::warn!(
            region,
            "the spot price history is empty: spot prices stay {}",
            prices.spot_source().describe()
        ),
        Err(error) => {
            answered = false;
            tracing::warn!(region, "{error}: spot prices stay {}", prices.spot_source().describe())
        }
    }
    answered
}

/// Runs forever: reads prices at once, then types and prices again when each is due, and swaps the new catalog in
/// whole.
pub async fn run(ctx: Arc<Context>) {
    let intervals = ctx.settings.catalog_refresh;
    let cloud = ctx.cloud("catalog.refresh");
    let start = tokio::time::Instant::now();
    // A zero interval would spin: one second is the least.
    let every = |d: Duration| d.max(Duration::from_secs(1));
    let mut types_due =
        tokio::time::interval_at(start + every(intervals.instance_types), every(intervals.instance_types));
    let mut prices_due = tokio::time::interval_at(start, every(intervals.prices));
    types_due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    prices_due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut price_retry = PRICE_RETRY_FIRST;
    loop {
        let current = ctx.catalog();
        let refreshed = tokio::select! {
            _ = types_due.tick() => read_instance_types(&cloud).await.map(|instance_types| {
                changes(&current.instance_types, &instance_types);
                Catalog { instance_types, prices: current.prices.clone() }
            }),
            _ = prices_due.tick() => {
                let mut prices = current.prices.clone();
                if read_prices(&cloud, &mut prices).await {
                    price_retry = PRICE_RETRY_FIRST;
                } else {
                    let wait = price_retry.min(every(intervals.prices));
                    tracing::info!(seconds = wait.as_secs(), "prices will be read again");
                    prices_due.reset_after(wait);
                    price_retry = wait * 2;
                }
                Some(Catalog { instance_types: current.instance_types.clone(), prices })
            }
        };
        if let Some(catalog) = refreshed {
            ctx.replace_catalog(catalog);
        }
    }
}

/// Logs the types and zones that came or went.
fn changes(before: &[InstanceTypeInfo], after: &[InstanceTypeInfo]) {
    let offerings = |types: &[InstanceTypeInfo]| -> std::collections::BTreeSet<(String, String)> {
        types.iter().flat_map(|t| t.zones.iter().map(|z| (t.name.clone(), z.clone()))).collect()
    };
    let (was, is) = (offerings(before), offerings(after));
    let added: Vec<String> = is.difference(&was).map(|(t, z)| format!("{t} in {z}")).collect();
    let removed: Vec<String> = was.difference(&is).map(|(t, z)| format!("{t} in {z}")).collect();
    if !added.is_empty() || !removed.is_empty() {
        tracing::info!(added = ?added, removed = ?removed, "instance type offerings changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::pricing::SpotPrice;
    use crate::controller::testing;

    fn spot(instance_type: &str, zone: &str, usd_per_hour: f64) -> SpotPrice {
        SpotPrice { instance_type: instance_type.into(), zone: zone.into(), usd_per_hour }
    }

    #[tokio::test]
    async fn aws_prices_overlay_the_regions_embedded_ones_type_by_type_and_zone_by_zone() {
        let cloud = FakeCloud::default();
        cloud.on_demand_prices.lock().expect("lock").insert("m5.large".into(), 0.2);
        cloud.spot_prices.lock().expect("lock").push(spot("m5.large", "eu-west-1b", 0.05));
        let mut catalog = initial(&cloud, "eu-west-1").await;
        assert_eq!(catalog.prices.on_demand_price("m5.large").map(|p| p.source), Some(PriceSource::RegionalSnapshot));
        read_prices(&cloud, &mut catalog.prices).await;
        let prices = &catalog.prices;
        assert_eq!(
            prices.on_demand_price("m5.large").map(|p| (p.usd_per_hour, p.source)),
            Some((0.2, PriceSource::PricingApi))
        );
        assert_eq!(prices.on_demand_price("c5.large").map(|p| p.source), Some(PriceSource::RegionalSnapshot));
        assert_eq!(
            prices.spot_price("m5.large", "eu-west-1b").map(|p| (p.usd_per_hour, p.source)),
            Some((0.05, PriceSource::SpotPriceHistory))
        );
        assert_eq!(prices.spot_price("m5.large", "eu-west-1a").map(|p| p.source), Some(PriceSource::RegionalSnapshot));
        assert_eq!(cloud.calls(), ["DescribeInstanceTypes ", "GetProducts ", "DescribeSpotPriceHistory "]);
    }

    #[tokio::test]
    async fn when_aws_does_not_answer_the_regions_embedded_catalog_and_prices_serve() {
        let cloud = FakeCloud::default();
        cloud.fail_next("DescribeInstanceTypes", "UnauthorizedOperation");
        cloud.fail_next("GetProducts", "AccessDeniedException");
        cloud.fail_next("DescribeSpotPriceHistory", "RequestLimitExceeded");
        let mut catalog = initial(&cloud, "eu-west-1").await;
        read_prices(&cloud, &mut catalog.prices).await;
        let m5 = catalog.instance_type("m5.large").expect("m5.large");
        assert!(m5.zones.iter().all(|z| z.starts_with("eu-west-1")), "{:?}", m5.zones);
        assert_eq!(
            catalog.prices.on_demand_price("m5.large").map(|p| (p.usd_per_hour, p.source)),
            Some((0.107, PriceSource::RegionalSnapshot))
        );
        assert_eq!(catalog.prices.spot_source(), PriceSource::RegionalSnapshot);
    }

    #[tokio::test(start_paused = true)]
    async fn a_price_read_that_failed_is_tried_again_within_a_minute_not_twelve_hours() {
        let cloud = Arc::new(FakeCloud::default());
        let types: Vec<InstanceTypeInfo> =
            embedded_instance_types().iter().filter(|t| t.name.starts_with("m5.")).cloned().collect();
        *cloud.instance_types.lock().expect("lock") = Some(types.clone());
        cloud.spot_prices.lock().expect("lock").push(spot("m5.large", "us-east-1a", 0.03));
        cloud.fail_next("DescribeSpotPriceHistory", "RequestLimitExceeded");
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![]));
        ctx.replace_catalog(Catalog { instance_types: types, prices: PriceTable::embedded() });
        let refresh = tokio::spawn(run(ctx.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ctx.catalog().prices.spot_source(), PriceSource::RegionalSnapshot, "the first read failed");

        tokio::time::sleep(PRICE_RETRY_FIRST).await;
        assert_eq!(
            ctx.catalog().prices.spot_price("m5.large", "us-east-1a").map(|p| (p.usd_per_hour, p.source)),
            Some((0.03, PriceSource::SpotPriceHistory))
        );
        let reads = cloud.calls().iter().filter(|c| c.starts_with("DescribeSpotPriceHistory")).count();
        assert_eq!(reads, 2);
        // Answered now: the next read waits for the interval again.
        tokio::time::sleep(PRICE_RETRY_FIRST * 4).await;
        let reads = cloud.calls().iter().filter(|c| c.starts_with("DescribeSpotPriceHistory")).count();
        assert_eq!(reads, 2);
        refresh.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn prices_are_read_at_once_and_a_new_type_and_new_prices_appear_without_a_restart() {
        let cloud = Arc::new(FakeCloud::default());
        let mut types: Vec<InstanceTypeInfo> =
            embedded_instance_types().iter().filter(|t| t.name.starts_with("m5.")).cloned().collect();
        *cloud.instance_types.lock().expect("lock") = Some(types.clone());
        cloud.on_demand_prices.lock().expect("lock").insert("m5.large".into(), 0.2);
        let ctx = testing::context(cloud.clone(), testing::state(vec![], vec![]));
        ctx.replace_catalog(Catalog { instance_types: types.clone(), prices: PriceTable::embedded() });
        assert!(ctx.instance_type("m7i.large").is_none());
        let refresh = tokio::spawn(run(ctx.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ctx.catalog().prices.on_demand("m5.large"), Some(0.2), "the first prices are read at once");

        // A type launched by AWS, and a price change.
        let mut new_type = embedded_instance_types().iter().find(|t| t.name == "m7i.large").expect("m7i.large").clone();
        new_type.zones = vec!["us-east-1a".into()];
        types.push(new_type);
        *cloud.instance_types.lock().expect("lock") = Some(types);
        cloud.on_demand_prices.lock().expect("lock").insert("m5.large".into(), 0.25);
        cloud.spot_prices.lock().expect("lock").push(spot("m7i.large", "us-east-1a", 0.07));

        tokio::time::sleep(Intervals::default().instance_types).await;
        assert_eq!(ctx.instance_type("m7i.large").map(|t| t.zones), Some(vec!["us-east-1a".to_string()]));
        assert_eq!(ctx.catalog().prices.on_demand("m5.large"), Some(0.2), "prices wait for their own interval");

        tokio::time::sleep(Intervals::default().prices).await;
        let catalog = ctx.catalog();
        assert_eq!(catalog.prices.on_demand_price("m5.large").map(|p| p.source), Some(PriceSource::PricingApi));
        assert_eq!(catalog.prices.on_demand("m5.large"), Some(0.25));
        assert_eq!(catalog.prices.spot("m7i.large", "us-east-1a"), Some(0.07));
        // The metrics price the catalog as it is now.
        let text = ctx.metrics.encode();
        let series = r#"karpenter_cloudprovider_instance_type_offering_price_estimate{instance_type="m7i.large",capacity_type="spot",zone="us-east-1a"} 0.07"#;
        assert!(text.contains(series), "{series} in the metrics");
        assert!(text.contains(r#"nodesmith_offering_prices{capacity_type="spot",source="spot-price-history"} 1"#));
        assert!(text.contains(r#"nodesmith_offering_prices{capacity_type="on-demand",source="pricing-api"} "#));
        refresh.abort();
    }
}
