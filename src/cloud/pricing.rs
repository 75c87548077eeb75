//! Prices from AWS: the Pricing API's Linux on-demand list prices for a region, and EC2's current spot price of
//! each type in each zone. Both are asked as Karpenter asks them, so that both pick the same prices.

use std::collections::HashMap;

use aws_sdk_pricing::types::{Filter, FilterType};
use serde::Deserialize;

use super::error::CloudError;

/// One zone's current spot price of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPrice {
    pub instance_type: String,
    pub zone: String,
    pub usd_per_hour: f64,
}

/// The Pricing API answers in three regions only: each region asks the nearest, as Karpenter does.
pub fn pricing_api_region(region: &str) -> &'static str {
    if region.starts_with("ap-") {
        "ap-south-1"
    } else if region.starts_with("eu-") {
        "eu-central-1"
    } else {
        "us-east-1"
    }
}

/// The region's Linux on-demand price of every instance type (shared tenancy, and bare metal, which the price
/// list files under dedicated tenancy).
pub async fn on_demand_prices(
    pricing: &aws_sdk_pricing::Client,
    region: &str,
) -> Result<HashMap<String, f64>, CloudError> {
    let mut prices = HashMap::new();
    for (tenancy, family) in [("Shared", "Compute Instance"), ("Dedicated", "Compute Instance (bare metal)")] {
        let terms = [
            ("regionCode", region),
            ("serviceCode", "AmazonEC2"),
            ("preInstalledSw", "NA"),
            ("operatingSystem", "Linux"),
            ("capacitystatus", "Used"),
            ("marketoption", "OnDemand"),
            ("tenancy", tenancy),
            ("productFamily", family),
        ];
        let filters = terms
            .iter()
            .map(|(field, value)| Filter::builder().r#type(FilterType::TermMatch).field(*field).value(*value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CloudError::call("pricing:GetProducts", e.to_string()))?;
        let mut pages = pricing
            .get_products()
            .service_code("AmazonEC2")
            .format_version("aws_v1")
            .set_filters(Some(filters))
            .max_results(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("pricing:GetProducts", None, e))?;
            for item in page.price_list() {
                match on_demand_price(item) {
                    Some((instance_type, price)) => {
                        prices.insert(instance_type, price);
                    }
                    None => {
                        tracing::debug!(item = %item.chars().take(200).collect::<String>(), "price list item without a usable price")
                    }
                }
            }
        }
    }
    Ok(prices)
}

/// The instance type and USD hourly price of one price list item (a JSON document in a string, as GetProducts
/// returns it); None for an item that is not an instance's or has no non-zero USD price.
pub fn on_demand_price(item: &str) -> Option<(String, f64)> {
    #[derive(Deserialize)]
    struct Item {
        product: Product,
        terms: Terms,
    }
    #[derive(Deserialize)]
    struct Product {
        attributes: Attributes,
    }
    #[derive(Deserialize)]
    struct Attributes {
        #[serde(rename = "instanceType")]
        instance_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Terms {
        #[serde(rename = "OnDemand", default)]
        on_demand: HashMap<String, Term>,
    }
    #[derive(Deserialize)]
    struct Term {
        #[serde(rename = "priceDimensions", default)]
        price_dimensions: HashMap<String, Dimension>,
    }
    #[derive(Deserialize)]
    struct Dimension {
        #[serde(rename = "pricePerUnit", default)]
        price_per_unit: HashMap<String, String>,
    }
    let item: Item = serde_json::from_str(item).ok()?;
    let instance_type = item.product.attributes.instance_type.filter(|t| !t.is_empty())?;
    let price = item
        .terms
        .on_demand
        .values()
        .flat_map(|term| term.price_dimensions.values())
        .filter_map(|d| d.price_per_unit.get("USD")?.parse::<f64>().ok())
        .find(|price| *price > 0.0)?;
    Some((instance_type, price))
}

/// The current spot price of every type in every zone of the client's region (Linux), the latest record of each.
pub async fn spot_prices(ec2: &aws_sdk_ec2::Client) -> Result<Vec<SpotPrice>, CloudError> {
    // A start time of now asks for the price in force now, one record per type and zone.
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    let mut pages = ec2
        .describe_spot_price_history()
        .product_descriptions("Linux/UNIX")
        .product_descriptions("Linux/UNIX (Amazon VPC)")
        .start_time(now)
        .max_results(1000)
        .into_paginator()
        .send();
    let mut latest: HashMap<(String, String), (aws_smithy_types::DateTime, f64)> = HashMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeSpotPriceHistory", None, e))?;
        for record in page.spot_price_history() {
            let (Some(instance_type), Some(zone), Some(price), Some(at)) =
                (record.instance_type(), record.availability_zone(), record.spot_price(), record.timestamp())
            else {
                continue;
            };
            let Ok(price) = price.parse::<f64>() else { continue };
            let key = (instance_type.as_str().to_string(), zone.to_string());
            if latest.get(&key).is_none_or(|(seen, _)| at.secs() >= seen.secs()) {
                latest.insert(key, (*at, price));
            }
        }
    }
    Ok(latest
        .into_iter()
        .map(|((instance_type, zone), (_, usd_per_hour))| SpotPrice { instance_type, zone, usd_per_hour })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item as GetProducts returns it (trimmed from AWS's documented example, m5.large in eu-west-1).
    const ITEM: &str = r#"{"product":{"productFamily":"Compute Instance","attributes":{"instanceType":"m5.large",
        "regionCode":"eu-west-1","operatingSystem":"Linux","tenancy":"Shared"},"sku":"ABC"},"serviceCode":"AmazonEC2",
        "terms":{"OnDemand":{"ABC.JRTCKXETXF":{"priceDimensions":{"ABC.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs",
        "pricePerUnit":{"USD":"0.1070000000"}}},"sku":"ABC","offerTermCode":"JRTCKXETXF"}}},"version":"1",
        "publicationDate":"2026-11-01T00:00:00Z"}"#;

    #[test]
    fn a_price_list_item_gives_its_type_and_usd_price() {
        assert_eq!(on_demand_price(ITEM), Some(("m5.large".to_string(), 0.107)));
    }

    #[test]
    fn items_without_a_type_or_a_price_give_nothing() {
        assert_eq!(on_demand_price("not json"), None);
        let no_type = ITEM.replace(r#""instanceType":"m5.large","#, "");
        assert_eq!(on_demand_price(&no_type), None);
        let free = ITEM.replace("0.1070000000", "0.0000000000");
        assert_eq!(on_demand_price(&free), None);
        let yuan = ITEM.replace(r#""USD""#, r#""CNY""#);
        assert_eq!(on_demand_price(&yuan), None);
    }

    #[test]
    fn each_region_asks_the_nearest_pricing_endpoint() {
        assert_eq!(pricing_api_region("eu-west-1"), "eu-central-1");
        assert_eq!(pricing_api_region("ap-southeast-2"), "ap-south-1");
        assert_eq!(pricing_api_region("us-west-2"), "us-east-1");
        assert_eq!(pricing_api_region("sa-east-1"), "us-east-1");
    }
}
