//! What the sandbox's AWS says a price is, asked directly (not through nodesmith), to check nodesmith's prices
//! against.

use anyhow::{Context, Result};
use aws_config::Region;

/// The current spot price of `instance_type` in `zone`, from the spot price history.
pub async fn spot_price_in_history(sdk: &aws_config::SdkConfig, zone: &str, instance_type: &str) -> Result<f64> {
    let region = zone.trim_end_matches(|c: char| c.is_ascii_lowercase());
    let config = aws_sdk_ec2::config::Builder::from(sdk).region(Region::new(region.to_string())).build();
    let ec2 = aws_sdk_ec2::Client::from_conf(config);
    let zone_filter = aws_sdk_ec2::types::Filter::builder().name("availability-zone").values(zone).build();
    let history = ec2
        .describe_spot_price_history()
        .instance_types(instance_type.into())
        .filters(zone_filter)
        .product_descriptions("Linux/UNIX")
        .send()
        .await?;
    let record =
        history.spot_price_history().first().with_context(|| format!("no spot price of {instance_type} in {zone}"))?;
    Ok(record.spot_price().context("a record without a price")?.parse()?)
}

/// The Linux on-demand list price of `instance_type` in `region`, from the Pricing API.
pub async fn list_price(sdk: &aws_config::SdkConfig, region: &str, instance_type: &str) -> Result<f64> {
    use aws_sdk_pricing::types::{Filter, FilterType};
    let pricing = aws_sdk_pricing::Client::from_conf(
        aws_sdk_pricing::config::Builder::from(sdk).region(Region::new("us-east-1")).build(),
    );
    let term =
        |field: &str, value: &str| Filter::builder().r#type(FilterType::TermMatch).field(field).value(value).build();
    let answer = pricing
        .get_products()
        .service_code("AmazonEC2")
        .filters(term("regionCode", region)?)
        .filters(term("instanceType", instance_type)?)
        .filters(term("operatingSystem", "Linux")?)
        .send()
        .await?;
    let item: serde_json::Value = serde_json::from_str(
        answer.price_list().first().with_context(|| format!("{instance_type} is not listed in {region}"))?,
    )?;
    let on_demand = item["terms"]["OnDemand"].as_object().context("no on-demand terms")?;
    let dimensions =
        on_demand.values().next().context("no term")?["priceDimensions"].as_object().context("no dimensions")?;
    let usd =
        dimensions.values().next().context("no dimension")?["pricePerUnit"]["USD"].as_str().context("no USD price")?;
    Ok(usd.parse()?)
}
