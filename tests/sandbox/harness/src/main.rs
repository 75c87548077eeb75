//! The sandbox harness: not part of the product. `seed` creates the demo environment in moto; `registrar` turns
//! running moto instances into Kubernetes Nodes, as kubelets joining a real cluster would.
#![forbid(unsafe_code)]

use nodesmith_sandbox::registrar;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sandbox-harness")]
struct Cli {
    /// The EKS cluster the sandbox plays.
    #[arg(long, global = true, default_value = "demo")]
    cluster: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (idempotently) the demo VPC, subnets, security group and EKS cluster in moto.
    Seed,
    /// Write the instance-type catalog of the region (DescribeInstanceTypes + offerings) as nodesmith embeds it.
    CatalogSnapshot {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Put a spot interruption warning for an instance on the default event bus, as EC2 would.
    SpotInterruption {
        #[arg(long)]
        instance_id: String,
    },
    /// Keep one Node per running instance tagged for the cluster, until stopped.
    Registrar {
        /// How often moto is polled for instances.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        _ => Err(format!("{text:?} is not a duration like 500ms or 2s")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // The registrar's output goes to a log file.
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    let sdk = nodesmith::aws::sdk_config(None).await;
    match cli.command {
        Command::Seed => {
            let seeded = nodesmith_sandbox::seed::seed_demo(&sdk, &cli.cluster).await?;
            println!("{}", serde_json::to_string_pretty(&seeded)?);
        }
        Command::CatalogSnapshot { out } => {
            let ec2 = aws_sdk_ec2::Client::new(&sdk);
            let types = nodesmith::cloud::instance_types::describe_instance_types(&ec2).await?;
            // One type per line keeps the committed file reviewable in diffs.
            let lines: Vec<String> = types.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
            std::fs::write(&out, format!("[\n{}\n]\n", lines.join(",\n")))?;
            eprintln!("wrote {} instance types to {}", types.len(), out.display());
        }
        Command::SpotInterruption { instance_id } => {
            let events = aws_sdk_eventbridge::Client::new(&sdk);
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source("aws.ec2")
                .detail_type("EC2 Spot Instance Interruption Warning")
                .resources(format!(
                    "arn:aws:ec2:{}:123456789012:instance/{instance_id}",
                    sdk.region().map_or("us-east-1", |r| r.as_ref())
                ))
                .detail(serde_json::json!({"instance-id": instance_id, "instance-action": "terminate"}).to_string())
                .build();
            let answer = events.put_events().entries(entry).send().await?;
            eprintln!("put a spot interruption warning for {instance_id} ({} failed)", answer.failed_entry_count());
        }
        Command::Registrar { interval } => {
            let kube = kube::Client::try_default().await?;
            registrar::run(&sdk, kube, &cli.cluster, interval).await?;
        }
    }
    Ok(())
}
