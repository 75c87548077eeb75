//! IAM, which moto does not enforce: every request a controller made in the sandbox tests (signed as the controller
//! role setup made, recorded by moto with what AWS would authorize it as) is evaluated against that role's policies
//! by a condition-aware evaluator (@cloud-copilot/iam-simulate). A deny on AWS is a failure here.
//! Needs `make sandbox-up` (run by `make test`, which runs the whole-suite check after every controller test).

mod support;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use nodesmith::bootstrap::setup;
use support::controller::{CONTROLLER_SESSION, SANDBOX_ACCOUNT, assume_role};
use support::iam::{IamReport, Only, evaluate};
use support::{Sandbox, sandbox_env, setup_options, unique_name};

/// What the controller tests must have exercised, or the check below would prove little.
const MUST_BE_EVALUATED: [&str; 12] = [
    "ec2:CreateLaunchTemplate launch-template",
    "ec2:CreateFleet launch-template",
    "ec2:CreateFleet instance",
    "ec2:RunInstances network-interface",
    "ec2:RunInstances subnet",
    "ec2:TerminateInstances instance",
    "iam:PassRole role",
    "iam:ListInstanceProfilesForRole role",
    "sqs:ReceiveMessage queue",
    "eks:DescribeCluster cluster",
    "pricing:GetProducts *",
    "ec2:DescribeSpotPriceHistory *",
];

fn summary(report: &IamReport) -> String {
    format!(
        "{} requests, {} authorizations, {} distinct (action, resource type) pairs, {} denies",
        report.requests,
        report.authorizations,
        report.pairs.len(),
        report.denies.len()
    )
}

/// Evaluates what the role sessions named `session` asked AWS for: fails on anything unreadable or unmapped, on a
/// pair in `must` never exercised (`who` did not run first), and on any deny.
fn check(title: &str, session: &str, must: &[&str], who: &str) -> Result<()> {
    let report = evaluate(Only::Session(session))?;
    println!("{title}: {}", summary(&report));
    for pair in &report.pairs {
        println!("  {pair}");
    }
    assert!(report.errors.is_empty(), "the evaluation could not read everything: {:?}", report.errors);
    assert!(
        report.unmapped.is_empty(),
        "operations with no authorization model in iam_recorder.py: {:?}",
        report.unmapped
    );
    let missing: Vec<&str> = must.iter().copied().filter(|p| !report.pairs.iter().any(|x| x == p)).collect();
    assert!(missing.is_empty(), "{who} never made {missing:?}: run them first");
    assert!(report.denies.is_empty(), "AWS would deny {who}:\n{}", report.denies_explained());
    Ok(())
}

/// Run by `make test` after every other sandbox test (scripts/test), over all they recorded.
#[tokio::test]
#[ignore = "needs the sandbox (make sandbox-up), and the controller tests run before it"]
async fn every_aws_request_the_controller_made_is_allowed_by_the_policies_setup_wrote() -> Result<()> {
    check("IAM check", CONTROLLER_SESSION, &MUST_BE_EVALUATED, "the controller tests")
}

/// What setup and teardown must have been evaluated doing: their creates and deletes of each kind.
const OPERATOR_MUST_BE_EVALUATED: [&str; 10] = [
    "iam:CreateRole role",
    "iam:CreatePolicy policy",
    "iam:CreateOpenIDConnectProvider oidc-provider",
    "iam:PassRole role",
    "sqs:CreateQueue queue",
    "events:PutRule rule",
    "ec2:CreateSubnet subnet",
    "eks:CreateAccessEntry cluster",
    "ec2:TerminateInstances instance",
    "iam:DeleteRole role",
];

/// Run by `make test` after every other sandbox test: setup and teardown, run by the tests as a role holding only
/// `nodesmith operator-policy`, are allowed everything they did.
#[tokio::test]
#[ignore = "needs the sandbox (make sandbox-up), and the setup and teardown tests run before it"]
async fn every_aws_request_setup_and_teardown_made_is_allowed_by_the_operator_policy() -> Result<()> {
    check(
        "IAM check (operator)",
        support::iam::OPERATOR_SESSION,
        &OPERATOR_MUST_BE_EVALUATED,
        "setup and teardown tests",
    )
}

#[tokio::test]
#[ignore = "needs the sandbox (make sandbox-up)"]
async fn a_launch_template_the_policy_refuses_is_reported_with_the_missing_tag() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let cluster = &sandbox.cluster;
    setup::run(&sandbox.sdk, &setup_options(&sandbox, cluster)).await?;
    let role = support::names(cluster).controller_role;
    let env = sandbox_env()?;
    let credentials = assume_role(&env, &format!("arn:aws:iam::{SANDBOX_ACCOUNT}:role/{role}"), "iam-probe")?;
    let config = aws_sdk_ec2::config::Builder::from(&sandbox.sdk)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            Some(credentials.session_token.clone()),
            None,
            "probe",
        ))
        .build();
    let ec2 = aws_sdk_ec2::Client::from_conf(config);
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
    let without_pool = TagSpecification::builder()
        .resource_type(ResourceType::LaunchTemplate)
        .tags(tag(&format!("kubernetes.io/cluster/{cluster}"), "owned"))
        .tags(tag("eks:eks-cluster-name", cluster))
        .build();
    let with_pool = TagSpecification::builder()
        .resource_type(ResourceType::LaunchTemplate)
        .tags(tag(&format!("kubernetes.io/cluster/{cluster}"), "owned"))
        .tags(tag("eks:eks-cluster-name", cluster))
        .tags(tag("karpenter.sh/nodepool", "probe"))
        .build();
    let names = [unique_name("iam-probe-refused"), unique_name("iam-probe-allowed")];
    for (name, tags) in names.iter().zip([without_pool, with_pool]) {
        ec2.create_launch_template()
            .launch_template_name(name)
            .launch_template_data(RequestLaunchTemplateData::builder().image_id("ami-12c6146b").build())
            .tag_specifications(tags)
            .send()
            .await
            .context("moto authorizes nothing, so this succeeds whatever the policy says")?;
    }

    let report = evaluate(Only::Credential(&credentials.access_key_id))?;
    let admin = aws_sdk_ec2::Client::new(&sandbox.sdk);
    for name in &names {
        admin.delete_launch_template().launch_template_name(name).send().await?;
    }
    assert_eq!(report.requests, 2, "{}", summary(&report));
    // Both creations and both tag-on-create authorizations were evaluated; only the untagged template's fail.
    assert_eq!(report.authorizations, 4);
    let explained = report.denies_explained();
    assert_eq!(report.denies.len(), 2, "{explained}");
    for deny in &report.denies {
        assert!(["ec2:CreateLaunchTemplate", "ec2:CreateTags"].contains(&deny["action"].as_str().unwrap_or_default()));
        assert_eq!(deny["count"], 1, "{explained}");
        let reasons = deny["reasons"].to_string();
        assert!(reasons.contains("aws:RequestTag/karpenter.sh/nodepool"), "the missing key is named: {explained}");
    }
    Ok(())
}
