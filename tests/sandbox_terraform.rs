//! The Terraform module (`terraform/`) makes what `nodesmith setup` makes. Two views of the module are compared
//! with setup:
//! - its derivations (names within AWS's limits, trust and permission policies split by size, the queue policy,
//!   event patterns, tags), evaluated by the pinned Terraform itself on a copy of the module's pure files, against
//!   `nodesmith setup --dry-run --output json` on the sandbox cluster, and against setup's functions for
//!   a cluster name long enough to be shortened and another partition;
//! - its resources, parsed with hcl-rs: a Terraform resource for every kind of resource setup reports, and the
//!   literal attributes (queue retention and encryption, the node's managed policies, the rule target).
//!
//! `terraform validate` and `terraform apply` need the AWS provider, which `terraform init` cannot download here
//! (no registry access); see terraform/README.md.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use hcl::{Block, Body, Expression};
use nodesmith::bootstrap::policies::{self, PolicyContext};
use nodesmith::bootstrap::setup::queue::INTERRUPTION_EVENTS;
use serde_json::{Value, json};
use support::{Sandbox, sandbox_env};

const MODULE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/terraform");

/// The module's files that hold only variables and locals: Terraform evaluates them without any provider.
const PURE_FILES: [&str; 3] = ["variables.tf", "names.tf", "policies.tf"];

fn terraform() -> Result<PathBuf> {
    let env = sandbox_env()?;
    let path = env.get("NODESMITH_TERRAFORM").context("NODESMITH_TERRAFORM is not set: restart the sandbox")?;
    Ok(PathBuf::from(path))
}

fn run_terraform(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(terraform()?)
        .args(args)
        .current_dir(dir)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .context("running terraform")?;
    ensure!(
        output.status.success(),
        "terraform {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What the module's data sources would read from DescribeCluster.
struct ClusterFacts {
    cluster: String,
    partition: String,
    region: String,
    account_id: String,
    oidc_issuer: String,
}

/// Terraform's values of the module's locals for `facts`, with every other variable at its default.
fn evaluate_module(facts: &ClusterFacts) -> Result<Value> {
    let dir = tempfile_dir("nodesmith-terraform")?;
    for file in PURE_FILES {
        std::fs::copy(Path::new(MODULE_DIR).join(file), dir.join(file))?;
    }
    // main.tf derives these from data.aws_eks_cluster; here they are given.
    let inputs = format!(
        r#"locals {{
  partition             = "{partition}"
  region                = "{region}"
  account_id            = "{account}"
  oidc_issuer           = "{issuer}"
  oidc_issuer_host_path = trimprefix(local.oidc_issuer, "https://")
}}

output "evaluated" {{
  value = {{
    names                         = local.names
    controller_policy_name_prefix = local.controller_policy_name_prefix
    node_trust_policy             = local.node_trust_policy
    controller_trust_policy       = local.controller_trust_policy
    controller_policies           = local.controller_policies
    queue_policy                  = local.queue_policy
    event_patterns                = local.event_patterns
    tags                          = local.tags
    iam_tags                      = local.iam_tags
    node_role_arn                 = local.node_role_arn
    queue_arn                     = local.queue_arn
  }}
}}
"#,
        partition = facts.partition,
        region = facts.region,
        account = facts.account_id,
        issuer = facts.oidc_issuer,
    );
    std::fs::write(dir.join("inputs.tf"), inputs)?;
    run_terraform(&dir, &["init", "-input=false", "-no-color"])?;
    let cluster_var = format!("cluster_name={}", facts.cluster);
    run_terraform(&dir, &["apply", "-auto-approve", "-input=false", "-no-color", "-var", &cluster_var])?;
    let evaluated: Value = serde_json::from_str(&run_terraform(&dir, &["output", "-json", "evaluated"])?)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(evaluated)
}

fn tempfile_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(support::unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Every block of every `.tf` file of the module.
fn module_blocks() -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(MODULE_DIR)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tf") {
            let body: Body =
                hcl::parse(&std::fs::read_to_string(&path)?).with_context(|| format!("parsing {}", path.display()))?;
            blocks.extend(body.into_blocks());
        }
    }
    Ok(blocks)
}

fn resource<'a>(blocks: &'a [Block], kind: &str, name: &str) -> Result<&'a Block> {
    blocks
        .iter()
        .find(|b| {
            b.identifier() == "resource"
                && b.labels().first().map(|l| l.as_str()) == Some(kind)
                && b.labels().get(1).map(|l| l.as_str()) == Some(name)
        })
        .with_context(|| format!("the module has no resource {kind}.{name}"))
}

fn attribute<'a>(block: &'a Block, key: &str) -> Result<&'a Expression> {
    block
        .body()
        .attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
        .with_context(|| format!("{:?} has no attribute {key}", block.labels()))
}

/// A local's value when it is a literal list of strings (possibly wrapped in `toset(...)`).
fn literal_strings(blocks: &[Block], local: &str) -> Result<BTreeSet<String>> {
    let expr = blocks
        .iter()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == local)
        .map(|a| a.expr().clone())
        .with_context(|| format!("no local {local}"))?;
    let list = match expr {
        Expression::FuncCall(call) => call.args.first().cloned().context("toset() without an argument")?,
        other => other,
    };
    let Expression::Array(items) = list else { bail!("local {local} is not a literal list") };
    items
        .into_iter()
        .map(|item| match item {
            Expression::String(s) => Ok(s),
            other => bail!("local {local} holds a non-literal {other:?}"),
        })
        .collect()
}

/// Setup's report for the sandbox cluster, without changing anything.
fn setup_dry_run(sandbox: &Sandbox) -> Result<Value> {
    let output = support::nodesmith()?
        .args(["setup", "--cluster", &sandbox.cluster, "--node-access", "aws-auth", "--dry-run", "--output", "json"])
        .output()?;
    ensure!(output.status.success(), "setup --dry-run failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn cluster_facts(sandbox: &Sandbox) -> Result<ClusterFacts> {
    let described = aws_sdk_eks::Client::new(&sandbox.sdk).describe_cluster().name(&sandbox.cluster).send().await?;
    let cluster = described.cluster.context("no cluster")?;
    let arn = cluster.arn().context("no cluster ARN")?;
    let parts: Vec<&str> = arn.split(':').collect();
    ensure!(parts.len() > 4, "an odd cluster ARN {arn}");
    Ok(ClusterFacts {
        cluster: sandbox.cluster.clone(),
        partition: parts[1].into(),
        region: parts[3].into(),
        account_id: parts[4].into(),
        oidc_issuer: cluster.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()).context("no issuer")?.into(),
    })
}

/// The Terraform resource types that make each kind of resource setup reports.
const TERRAFORM_TYPES: [(&str, &[&str]); 15] = [
    // With node_access = "aws-auth" the module makes nothing (it only uses the AWS provider; the README says so).
    ("aws-auth-mapping", &[]),
    ("eks-access-entry", &["aws_eks_access_entry"]),
    ("eks-pod-identity-association", &["aws_eks_pod_identity_association"]),
    ("iam-role", &["aws_iam_role"]),
    ("iam-role-policy-attachment", &["aws_iam_role_policy_attachment"]),
    ("iam-instance-profile", &["aws_iam_instance_profile"]),
    ("iam-instance-profile-role", &["aws_iam_instance_profile"]),
    ("iam-oidc-provider", &["aws_iam_openid_connect_provider"]),
    ("iam-policy", &["aws_iam_policy"]),
    ("iam-service-linked-role", &["aws_iam_service_linked_role"]),
    ("sqs-queue", &["aws_sqs_queue", "aws_sqs_queue_policy"]),
    ("eventbridge-rule", &["aws_cloudwatch_event_rule"]),
    ("eventbridge-target", &["aws_cloudwatch_event_target"]),
    ("subnet-discovery-tag", &["aws_ec2_tag"]),
    ("security-group-discovery-tag", &["aws_ec2_tag"]),
];

#[tokio::test]
#[ignore = "needs the sandbox's Terraform and cluster (make test)"]
async fn the_terraform_module_makes_what_setup_makes() -> Result<()> {
    run_terraform(Path::new(MODULE_DIR), &["fmt", "-check", "-recursive", "-no-color"])?;
    let sandbox = Sandbox::connect().await?;
    let report = setup_dry_run(&sandbox)?;
    let facts = cluster_facts(&sandbox).await?;
    let module = evaluate_module(&facts)?;
    let blocks = module_blocks()?;
    let resources = report["resources"].as_array().context("no resources in setup's report")?;
    let of_kind = |kind: &'static str| resources.iter().filter(move |r| r["kind"] == kind);
    let names = &module["names"];
    let tags = &module["tags"];
    ensure!(*tags == json!({"nodesmith.io/cluster": facts.cluster}), "module tags {tags}");
    let iam_tags = &module["iam_tags"];
    let region_tagged = json!({"nodesmith.io/cluster": facts.cluster, "topology.kubernetes.io/region": facts.region});
    ensure!(*iam_tags == region_tagged, "module IAM tags {iam_tags}");

    // Every kind of resource setup makes has its Terraform resource type in the module.
    let types: BTreeSet<String> = blocks
        .iter()
        .filter(|b| b.identifier() == "resource")
        .filter_map(|b| b.labels().first().map(|l| l.as_str().to_string()))
        .collect();
    let mapping: BTreeMap<&str, &[&str]> = TERRAFORM_TYPES.into_iter().collect();
    for kind in resources.iter().filter_map(|r| r["kind"].as_str()).collect::<BTreeSet<_>>() {
        let wanted =
            mapping.get(kind).with_context(|| format!("setup makes {kind}, which the test maps to nothing"))?;
        for terraform_type in *wanted {
            ensure!(types.contains(*terraform_type), "setup makes {kind}; the module has no {terraform_type}");
        }
    }

    // Roles: names and trust policies.
    for (role, trust) in [("node_role", "node_trust_policy"), ("controller_role", "controller_trust_policy")] {
        let name = &names[role];
        let made = of_kind("iam-role").find(|r| r["id"] == *name).with_context(|| format!("setup makes no {name}"))?;
        ensure!(
            made["spec"]["assume_role_policy"] == module[trust],
            "{role} trust: setup {made} ≠ module {}",
            module[trust]
        );
        ensure!(made["spec"]["tags"] == *iam_tags, "{role} tags: setup {}", made["spec"]["tags"]);
    }
    ensure!(of_kind("iam-instance-profile").any(|r| r["id"] == names["instance_profile"]), "instance profile name");

    // The node role's AWS managed policies.
    let setup_managed: BTreeSet<String> = of_kind("iam-role-policy-attachment")
        .filter_map(|r| r["id"].as_str())
        .filter_map(|id| id.strip_prefix(&format!("{} <- ", names["node_role"].as_str().unwrap_or_default())))
        .filter_map(|arn| arn.rsplit('/').next().map(str::to_string))
        .collect();
    ensure!(
        setup_managed == literal_strings(&blocks, "node_managed_policies")?,
        "node managed policies: {setup_managed:?}"
    );

    // Controller policies: as many, named alike, statement for statement.
    let module_policies = module["controller_policies"].as_object().context("controller_policies")?;
    let setup_policies: Vec<&Value> = of_kind("iam-policy").collect();
    ensure!(
        setup_policies.len() == module_policies.len(),
        "{} policies vs {}",
        setup_policies.len(),
        module_policies.len()
    );
    let prefix = module["controller_policy_name_prefix"].as_str().context("prefix")?;
    for made in setup_policies {
        let id = made["id"].as_str().context("policy id")?;
        let number = id.strip_prefix(prefix).with_context(|| format!("policy {id} is not named {prefix}N"))?;
        let document = module_policies.get(number).with_context(|| format!("the module has no policy {number}"))?;
        ensure!(
            made["spec"]["policy"] == *document,
            "policy {id}:\nsetup  {}\nmodule {document}",
            made["spec"]["policy"]
        );
    }

    // The queue: name, attributes, policy.
    let queue = of_kind("sqs-queue").next().context("setup makes no queue")?;
    ensure!(queue["id"] == names["queue"], "queue name {} vs {}", queue["id"], names["queue"]);
    let attributes = &queue["spec"]["attributes"];
    ensure!(attributes["Policy"] == module["queue_policy"], "queue policy");
    let sqs_queue = resource(&blocks, "aws_sqs_queue", "interruption")?;
    let retention = attribute(sqs_queue, "message_retention_seconds")?;
    ensure!(
        matches!(retention, Expression::Number(n) if n.to_string() == attributes["MessageRetentionPeriod"].as_str().unwrap_or_default()),
        "retention {retention:?} vs {}",
        attributes["MessageRetentionPeriod"]
    );
    let encrypted = attribute(sqs_queue, "sqs_managed_sse_enabled")?;
    ensure!(
        matches!(encrypted, Expression::Bool(true)) && attributes["SqsManagedSseEnabled"] == "true",
        "queue encryption {encrypted:?}"
    );

    // Rules: one per kind, same name and pattern; each targets the queue with the same target id.
    let rules: Vec<&Value> = of_kind("eventbridge-rule").collect();
    ensure!(rules.len() == INTERRUPTION_EVENTS.len(), "setup makes {} rules", rules.len());
    for rule in rules {
        let kind = rule["spec"]["kind"].as_str().context("rule kind")?;
        ensure!(rule["id"] == names["rules"][kind], "rule {kind}: {} vs {}", rule["id"], names["rules"][kind]);
        ensure!(rule["spec"]["event_pattern"] == module["event_patterns"][kind], "rule {kind} pattern");
        ensure!(rule["spec"]["tags"] == *tags, "rule {kind} tags");
    }
    let target = resource(&blocks, "aws_cloudwatch_event_target", "interruption")?;
    for made in of_kind("eventbridge-target") {
        ensure!(made["spec"]["arn"] == module["queue_arn"], "target {made} vs queue {}", module["queue_arn"]);
        let target_id = attribute(target, "target_id")?;
        ensure!(
            matches!(target_id, Expression::String(id) if made["spec"]["id"] == *id),
            "target id {target_id:?} vs {}",
            made["spec"]["id"]
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs the sandbox's Terraform (make test)"]
fn the_module_shortens_names_and_splits_policies_as_setup_does() -> Result<()> {
    // A 100-character name (EKS's longest): every name is shortened and hashed; a GovCloud partition and region.
    let cluster = format!("platform-{}", "x".repeat(91));
    let facts = ClusterFacts {
        cluster: cluster.clone(),
        partition: "aws-us-gov".into(),
        region: "us-gov-west-1".into(),
        account_id: "123456789012".into(),
        oidc_issuer: "https://oidc.eks.us-gov-west-1.amazonaws.com/id/0123456789ABCDEF".into(),
    };
    let module = evaluate_module(&facts)?;
    let names = nodesmith::cloud::resource_names::ClusterNames::for_cluster(&cluster, &facts.region);
    let evaluated = &module["names"];
    for (what, setup, terraform) in [
        ("node role", &names.node_role, &evaluated["node_role"]),
        ("instance profile", &names.instance_profile, &evaluated["instance_profile"]),
        ("controller role", &names.controller_role, &evaluated["controller_role"]),
        ("queue", &names.queue, &evaluated["queue"]),
    ] {
        ensure!(terraform == setup.as_str(), "{what}: setup {setup}, module {terraform}");
    }
    // IAM role names stop at 64 characters: these two had to be shortened (and so hashed).
    for role in [&names.node_role, &names.controller_role] {
        ensure!(role.len() <= 64 && !role.ends_with(&cluster), "{role} was not shortened");
    }
    for (kind, _, _) in INTERRUPTION_EVENTS {
        ensure!(evaluated["rules"][kind] == names.rule(kind), "rule {kind}: {}", evaluated["rules"][kind]);
    }
    let context = PolicyContext {
        partition: facts.partition.clone(),
        region: facts.region.clone(),
        account_id: facts.account_id.clone(),
        cluster: cluster.clone(),
        node_role_arn: module["node_role_arn"].as_str().context("node_role_arn")?.into(),
        queue_arn: module["queue_arn"].as_str().context("queue_arn")?.into(),
    };
    let setup_policies = policies::controller_policies(&context);
    ensure!(setup_policies.len() > 1, "a long name should need more than one policy");
    for (index, document) in setup_policies.iter().enumerate() {
        let number = (index + 1).to_string();
        ensure!(
            module["controller_policies"][&number] == *document,
            "policy {number}:\nsetup  {document}\nmodule {}",
            module["controller_policies"][&number]
        );
        ensure!(
            format!("{}{number}", module["controller_policy_name_prefix"].as_str().unwrap_or_default())
                == names.controller_policy(index + 1),
            "policy {number} name"
        );
    }
    let provider =
        format!("arn:aws-us-gov:iam::123456789012:oidc-provider/{}", facts.oidc_issuer.trim_start_matches("https://"));
    let trust = policies::irsa_trust_policy(&provider, &facts.oidc_issuer, "nodesmith", "nodesmith");
    ensure!(module["controller_trust_policy"] == trust, "IRSA trust: {}", module["controller_trust_policy"]);
    Ok(())
}
