//! `nodesmith setup` against the sandbox's AWS (moto): each resource checked through the AWS API, not through
//! setup's own report. Needs `make sandbox-up` (run by `make test`).

mod support;

use anyhow::{Context, Result};
use aws_sdk_sqs::types::QueueAttributeName;
use nodesmith::bootstrap::cidr::Ipv4Block;
use nodesmith::bootstrap::policies::MANAGED_POLICY_MAX_CHARS;
use nodesmith::bootstrap::setup::{self, DiscoveryValue, SetupError};
use nodesmith_sandbox::seed::{Environment, seed};
use serde_json::Value;
use support::{Sandbox, setup_options, unique_name};

fn decode(document: &str) -> Result<Value> {
    Ok(serde_json::from_str(&percent_encoding::percent_decode_str(document).decode_utf8()?)?)
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_fresh_setup_creates_everything_and_a_second_run_changes_nothing() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let cluster = unique_name("setup");
    let seeded = seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
    // As a role holding only `nodesmith operator-policy` (the IAM check evaluates its requests).
    let (_, operator) = support::iam::operator(&sandbox).await?;
    let ledger = setup::run(&operator, &setup_options(&sandbox, &cluster)).await?;
    assert!(ledger.changes > 20, "{} changes", ledger.changes);

    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    // Node role: trusted by EC2, the four managed policies, in an instance profile; all tagged as ours.
    let node_role = iam.get_role().role_name(support::names(&cluster).node_role).send().await?.role.context("role")?;
    let trust = decode(node_role.assume_role_policy_document().context("trust")?)?;
    assert_eq!(trust["Statement"][0]["Principal"]["Service"], "ec2.amazonaws.com");
    assert!(node_role.tags().iter().any(|t| t.key() == "nodesmith.io/cluster" && t.value() == cluster));
    let attached = iam.list_attached_role_policies().role_name(node_role.role_name()).send().await?;
    let mut names: Vec<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_name()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "AmazonEC2ContainerRegistryPullOnly",
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonSSMManagedInstanceCore"
        ]
    );
    let profile = iam.get_instance_profile().instance_profile_name(support::names(&cluster).node_role).send().await?;
    assert_eq!(profile.instance_profile().context("profile")?.roles()[0].role_name(), node_role.role_name());

    // Controller role: IRSA for nodesmith/nodesmith through the cluster's issuer, with its scoped policies.
    let issuer =
        seeded["cluster"]["oidc_issuer"].as_str().context("issuer")?.trim_start_matches("https://").to_string();
    let controller =
        iam.get_role().role_name(support::names(&cluster).controller_role).send().await?.role.context("role")?;
    let trust = decode(controller.assume_role_policy_document().context("trust")?)?;
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"][format!("{issuer}:sub")],
        "system:serviceaccount:nodesmith:nodesmith"
    );
    let providers = iam.list_open_id_connect_providers().send().await?;
    assert!(providers.open_id_connect_provider_list().iter().any(|p| p.arn().is_some_and(|a| a.ends_with(&issuer))));
    let attached = iam.list_attached_role_policies().role_name(controller.role_name()).send().await?;
    assert!(!attached.attached_policies().is_empty());
    for policy in attached.attached_policies() {
        let arn = policy.policy_arn().context("arn")?;
        let version = iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await?
            .policy
            .and_then(|p| p.default_version_id)
            .context("version")?;
        let document = iam.get_policy_version().policy_arn(arn).version_id(version).send().await?;
        let document = decode(document.policy_version().and_then(|v| v.document()).context("document")?)?;
        assert!(document.to_string().len() <= MANAGED_POLICY_MAX_CHARS);
        assert!(document.to_string().contains(&format!("kubernetes.io/cluster/{cluster}")));
    }

    // Queue: 300 s retention, SQS-managed encryption, TLS only.
    let sqs = aws_sdk_sqs::Client::new(&sandbox.sdk);
    let url = sqs.get_queue_url().queue_name(format!("nodesmith-{cluster}")).send().await?.queue_url.context("url")?;
    let attributes = sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::All).send().await?;
    let attributes = attributes.attributes().context("attributes")?;
    assert_eq!(attributes[&QueueAttributeName::MessageRetentionPeriod], "300");
    assert_eq!(attributes[&QueueAttributeName::SqsManagedSseEnabled], "true");
    let policy: Value = serde_json::from_str(&attributes[&QueueAttributeName::Policy])?;
    assert_eq!(policy["Statement"][1]["Condition"]["Bool"]["aws:SecureTransport"], "false");
    let queue_arn = &attributes[&QueueAttributeName::QueueArn];

    // Rules: five, each with its pattern and the queue as target.
    let events = aws_sdk_eventbridge::Client::new(&sandbox.sdk);
    for (kind, source, detail_type) in [
        ("scheduled-change", "aws.health", "AWS Health Event"),
        ("spot-interruption", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
        ("rebalance", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
        ("instance-state-change", "aws.ec2", "EC2 Instance State-change Notification"),
        ("capacity-reservation-interruption", "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
    ] {
        let name = format!("{kind}-nodesmith-{cluster}");
        let rule = events.describe_rule().name(&name).send().await?;
        let pattern: Value = serde_json::from_str(rule.event_pattern().context("pattern")?)?;
        assert_eq!(pattern["source"][0], source);
        assert_eq!(pattern["detail-type"][0], detail_type);
        let targets = events.list_targets_by_rule().rule(&name).send().await?;
        assert_eq!(targets.targets()[0].arn(), queue_arn.as_str());
    }

    // Discovery tags on the cluster's subnets and security group; three new /22s beside the /24s.
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let vpc_id = seeded["vpc_id"].as_str().context("vpc")?;
    let subnets = ec2
        .describe_subnets()
        .filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await?;
    let subnets = subnets.subnets();
    assert!(subnets.iter().all(|s| tag(s.tags(), "karpenter.sh/discovery") == Some(cluster.as_str())));
    let new: Vec<Ipv4Block> = subnets
        .iter()
        .filter(|s| tag(s.tags(), "nodesmith.io/cluster") == Some(cluster.as_str()))
        .map(|s| s.cidr_block().unwrap_or_default().parse())
        .collect::<Result<_, _>>()?;
    let old: Vec<Ipv4Block> =
        ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"].iter().map(|c| c.parse()).collect::<Result<_, _>>()?;
    assert_eq!(new.len(), 3);
    let vpc: Ipv4Block = "10.0.0.0/16".parse()?;
    for (i, block) in new.iter().enumerate() {
        assert_eq!(block.prefix, 22);
        assert!(vpc.contains(block));
        assert!(!old.iter().chain(&new[..i]).any(|o| o.overlaps(block)), "{block} overlaps");
    }
    let sg = seeded["node_security_group_id"].as_str().context("sg")?;
    let groups = ec2.describe_security_groups().group_ids(sg).send().await?;
    assert_eq!(tag(groups.security_groups()[0].tags(), "karpenter.sh/discovery"), Some(cluster.as_str()));

    // Again, through the command line: nothing to do.
    let env = support::sandbox_env()?;
    let out = std::env::temp_dir().join(&cluster);
    let values = out.join("values.yaml");
    let nodeclasses = out.join("nodeclasses");
    std::fs::create_dir_all(&out)?;
    let output = support::nodesmith_binary()
        .args([
            "setup",
            "--cluster",
            &cluster,
            "--node-access",
            "aws-auth",
            "--create-subnets",
            "22",
            "--output",
            "json",
        ])
        .args([
            "--values-out",
            values.to_str().context("path")?,
            "--nodeclasses-out",
            nodeclasses.to_str().context("path")?,
        ])
        .envs(env)
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["changes"], 0, "{report}");
    // Off a terminal, progress is plain lines on stderr: each step, then each resource.
    let progress = String::from_utf8_lossy(&output.stderr);
    for line in ["setup: node access", "setup: interruption queue", "setup:   unchanged sqs-queue nodesmith-"] {
        assert!(progress.contains(line), "no {line:?} in:\n{progress}");
    }

    // The chart values and manifests for this cluster, from what setup made.
    let values: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&values)?)?;
    assert_eq!(values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"], controller.arn());
    assert_eq!(values["settings"]["interruptionQueue"], format!("nodesmith-{cluster}"));
    assert_eq!(values["settings"]["clusterName"], cluster.as_str());
    let nodeclass: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(nodeclasses.join("ec2nodeclass.yaml"))?)?;
    assert_eq!(nodeclass["spec"]["role"], node_role.role_name());
    assert_eq!(nodeclass["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"], cluster.as_str());
    assert!(nodeclasses.join("nodepool-default.yaml").exists());
    std::fs::remove_dir_all(&out).ok();

    // Nodes are let in through aws-auth, as EKS maps node roles (read back through the Kubernetes API).
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(sandbox.kube.clone(), "kube-system");
    let map_roles =
        config_maps.get("aws-auth").await?.data.and_then(|d| d.get("mapRoles").cloned()).unwrap_or_default();
    let mappings: Vec<Value> = serde_yaml_ng::from_str(&map_roles)?;
    let mapping = mappings.iter().find(|m| m["rolearn"] == node_role.arn()).context("no aws-auth mapping")?;
    assert_eq!(mapping["username"], "system:node:{{EC2PrivateDNSName}}");
    assert_eq!(mapping["groups"], serde_json::json!(["system:bootstrappers", "system:nodes"]));

    // --apply, as a dry run: the API server validates the CRDs, the EC2NodeClass and the NodePools; nothing is
    // written (another test's controller must not see these pools).
    let output = support::nodesmith()?
        .args(["setup", "--cluster", &cluster, "--node-access", "aws-auth", "--apply", "--dry-run", "--output", "json"])
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let planned: Vec<(&str, &str)> = report["resources"]
        .as_array()
        .context("resources")?
        .iter()
        .filter_map(|r| Some((r["kind"].as_str()?, r["id"].as_str()?)))
        .filter(|(kind, _)| matches!(*kind, "crd" | "ec2nodeclass" | "nodepool"))
        .collect();
    assert_eq!(planned.len(), 3 + 1 + 4, "{planned:?}");
    let pools: kube::Api<nodesmith::apis::nodepool::NodePool> = kube::Api::all(sandbox.kube.clone());
    // Before any other test installed the CRDs, the API does not even serve NodePools (404): nothing was written.
    match pools.get_opt("gpu").await {
        Ok(found) => assert!(found.is_none(), "a dry run wrote a NodePool"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn vpc_scoped_discovery_uses_the_vpc_name_and_needs_one() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let named = unique_name("setup-vpc");
    let vpc_name = format!("{named}-shared-vpc");
    seed(&sandbox.sdk, &Environment::named(&named, Some(&vpc_name))).await?;
    let mut opts = setup_options(&sandbox, &named);
    opts.discovery = DiscoveryValue::Vpc;
    opts.create_subnets = None;
    let ledger = setup::run(&sandbox.sdk, &opts).await?;
    assert!(ledger.resources.iter().any(|r| r.kind == "subnet-discovery-tag"));
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.sdk);
    let tagged = ec2
        .describe_subnets()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:karpenter.sh/discovery").values(&vpc_name).build())
        .send()
        .await?;
    assert_eq!(tagged.subnets().len(), 3);

    let unnamed = unique_name("setup-unnamed");
    seed(&sandbox.sdk, &Environment::named(&unnamed, None)).await?;
    let mut opts = setup_options(&sandbox, &unnamed);
    opts.discovery = DiscoveryValue::Vpc;
    let error = setup::run(&sandbox.sdk, &opts).await.expect_err("no VPC name");
    assert!(matches!(error, SetupError::VpcWithoutName { .. }), "{error}");
    assert!(error.to_string().contains("--discovery-value"), "{error}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn an_unknown_cluster_and_a_name_taken_by_someone_else_are_clear_errors() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let error =
        setup::run(&sandbox.sdk, &setup_options(&sandbox, &unique_name("no-such-cluster"))).await.expect_err("unknown");
    assert!(error.to_string().starts_with("EKS cluster"), "{error}");
    assert!(error.to_string().contains("check --cluster and --region"), "{error}");

    let cluster = unique_name("setup-taken");
    seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    // A look-alike: the name setup would use, without the ownership tag.
    iam.create_role()
        .role_name(support::names(&cluster).node_role)
        .assume_role_policy_document(nodesmith::bootstrap::policies::node_trust_policy().to_string())
        .send()
        .await?;
    let error = setup::run(&sandbox.sdk, &setup_options(&sandbox, &cluster)).await.expect_err("not ours");
    assert!(error.to_string().contains("exists but was not made by nodesmith"), "{error}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_dry_run_makes_no_change() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let cluster = unique_name("setup-dry");
    seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
    let mut opts = setup_options(&sandbox, &cluster);
    opts.dry_run = true;
    let ledger = setup::run(&sandbox.sdk, &opts).await?;
    assert!(ledger.changes > 20);
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let role = iam.get_role().role_name(support::names(&cluster).node_role).send().await;
    assert!(role.is_err(), "a dry run created the node role");
    let sqs = aws_sdk_sqs::Client::new(&sandbox.sdk);
    assert!(sqs.get_queue_url().queue_name(format!("nodesmith-{cluster}")).send().await.is_err());
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_setup_killed_part_way_converges_on_the_next_run() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let env = support::sandbox_env()?;
    // Kill points spread over a run (a full one takes about half a second against moto).
    for (i, after_ms) in [20u64, 80, 150, 250, 400].into_iter().enumerate() {
        let cluster = unique_name(&format!("setup-killed{i}"));
        seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
        let mut child = support::nodesmith_binary()
            .args(["setup", "--cluster", &cluster, "--node-access", "aws-auth", "--create-subnets", "22"])
            .envs(env.clone())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
        child.kill().ok();
        child.wait()?;

        setup::run(&sandbox.sdk, &setup_options(&sandbox, &cluster)).await?;
        let settled = setup::run(&sandbox.sdk, &setup_options(&sandbox, &cluster)).await?;
        assert_eq!(settled.changes, 0, "killed after {after_ms} ms: {:?}", settled.resources);
        let count = |kind: &str| settled.resources.iter().filter(|r| r.kind == kind).count();
        assert_eq!(count("iam-role"), 2);
        assert_eq!(count("eventbridge-rule"), 5);
        assert_eq!(count("eventbridge-target"), 5);
        assert_eq!(count("subnet"), 3);
        assert_eq!(count("sqs-queue"), 1);
    }
    Ok(())
}

/// IAM keeps five versions of a managed policy: a policy already changed that often (by earlier releases, or by
/// hand) is still brought back to what setup writes, the oldest versions making room.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_policy_with_five_versions_is_still_updated() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let cluster = unique_name("setup-versions");
    seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
    let opts = setup_options(&sandbox, &cluster);
    setup::run(&sandbox.sdk, &opts).await?;
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let name = support::names(&cluster).controller_policy(1);
    let arn = format!("arn:aws:iam::123456789012:policy/{name}");
    let edited = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "EditedByHand", "Effect": "Allow", "Action": "ec2:DescribeRegions", "Resource": "*"}
    ]});
    for _ in 0..4 {
        iam.create_policy_version()
            .policy_arn(&arn)
            .policy_document(edited.to_string())
            .set_as_default(true)
            .send()
            .await?;
    }
    assert_eq!(iam.list_policy_versions().policy_arn(&arn).send().await?.versions().len(), 5);

    setup::run(&sandbox.sdk, &opts).await?;
    let versions = iam.list_policy_versions().policy_arn(&arn).send().await?;
    assert_eq!(versions.versions().len(), 5, "one version made room for the new one");
    let default = versions.versions().iter().find(|v| v.is_default_version()).context("a default version")?;
    let document = iam
        .get_policy_version()
        .policy_arn(&arn)
        .version_id(default.version_id().context("an id")?)
        .send()
        .await?
        .policy_version
        .and_then(|v| v.document)
        .context("a document")?;
    assert!(!decode(&document)?.to_string().contains("EditedByHand"), "setup's document is the default again");
    let ids: Vec<&str> = versions.versions().iter().filter_map(|v| v.version_id()).collect();
    assert!(!ids.contains(&"v1"), "the oldest version went: {ids:?}");
    Ok(())
}

/// A fresh seeded cluster and setup's options for it with nodes let in through EKS access entries (setup's default).
async fn access_entry_cluster(sandbox: &Sandbox, prefix: &str) -> Result<(String, setup::SetupOptions)> {
    let cluster = unique_name(prefix);
    seed(&sandbox.sdk, &Environment::named(&cluster, Some(&format!("{cluster}-vpc")))).await?;
    let mut opts = setup_options(sandbox, &cluster);
    opts.node_access = setup::NodeAccess::AccessEntry;
    Ok((cluster, opts))
}

/// The defaults a new user gets, `--node-access access-entry` (and here `--identity pod-identity`), end to end
/// against the sandbox's EKS (moto_server.py serves access entries and Pod Identity associations as EKS does);
/// teardown removes both.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn access_entries_and_pod_identity_are_set_up_and_torn_down() -> Result<()> {
    use nodesmith::bootstrap::setup::Identity;
    use nodesmith::bootstrap::teardown;
    let sandbox = Sandbox::connect().await?;
    let (cluster, mut opts) = access_entry_cluster(&sandbox, "setup-access").await?;
    opts.identity = Identity::PodIdentity;
    let (_, operator) = support::iam::operator(&sandbox).await?;
    setup::run(&operator, &opts).await?;
    let again = setup::run(&operator, &opts).await?;
    assert_eq!(again.changes, 0, "a second run changes nothing: {:?}", again.resources);

    let eks = aws_sdk_eks::Client::new(&sandbox.sdk);
    let node_role = format!("arn:aws:iam::123456789012:role/{}", support::names(&cluster).node_role);
    let entry = eks.describe_access_entry().cluster_name(&cluster).principal_arn(&node_role).send().await?;
    assert_eq!(entry.access_entry().and_then(|e| e.r#type()), Some("EC2_LINUX"));
    let associations = eks.list_pod_identity_associations().cluster_name(&cluster).send().await?;
    let association = associations.associations().first().context("a Pod Identity association")?;
    assert_eq!((association.namespace(), association.service_account()), (Some("nodesmith"), Some("nodesmith")));
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let role = iam.get_role().role_name(support::names(&cluster).controller_role).send().await?;
    let trust = decode(role.role().and_then(|r| r.assume_role_policy_document()).context("a trust policy")?)?;
    let condition = &trust["Statement"][0]["Condition"];
    assert_eq!(condition["StringEquals"]["aws:RequestTag/kubernetes-service-account"], "nodesmith");
    assert_eq!(condition["StringEquals"]["aws:SourceAccount"], "123456789012");

    let ledger = teardown::run(&operator, &support::teardown_without_kubernetes(&cluster)).await?;
    let deleted = |kind: &str| {
        ledger.resources.iter().any(|r| r.kind == kind && r.action == nodesmith::bootstrap::report::Action::Deleted)
    };
    assert!(deleted("eks-access-entry") && deleted("eks-pod-identity-association"), "{:?}", ledger.resources);
    assert!(eks.describe_access_entry().cluster_name(&cluster).principal_arn(&node_role).send().await.is_err());
    let left = eks.list_pod_identity_associations().cluster_name(&cluster).send().await?;
    assert!(left.associations().is_empty(), "association left");
    Ok(())
}

/// What EKS already holds is never overwritten: an access entry of another type for the node role, or the
/// controller's ServiceAccount associated with another role, is a clear error. A dry run only looks. Teardown
/// deletes only the entry and association tagged for the cluster.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn access_entries_and_associations_of_someone_else_are_refused_and_left_alone() -> Result<()> {
    use nodesmith::bootstrap::report::Action;
    use nodesmith::bootstrap::setup::Identity;
    use nodesmith::bootstrap::teardown;
    let sandbox = Sandbox::connect().await?;
    let (cluster, mut opts) = access_entry_cluster(&sandbox, "setup-eks-conflict").await?;
    opts.identity = Identity::PodIdentity;
    let eks = aws_sdk_eks::Client::new(&sandbox.sdk);
    let node_role = format!("arn:aws:iam::123456789012:role/{}", support::names(&cluster).node_role);
    let controller_role = format!("arn:aws:iam::123456789012:role/{}", support::names(&cluster).controller_role);

    let dry = setup::run(&sandbox.sdk, &setup::SetupOptions { dry_run: true, ..opts.clone() }).await?;
    let planned = |kind: &str| dry.resources.iter().any(|r| r.kind == kind && r.action == Action::Created);
    assert!(planned("eks-access-entry") && planned("eks-pod-identity-association"), "{:?}", dry.resources);
    assert!(eks.list_access_entries().cluster_name(&cluster).send().await?.access_entries().is_empty());
    assert!(eks.list_pod_identity_associations().cluster_name(&cluster).send().await?.associations().is_empty());

    // The node role already let in as a STANDARD entry (by hand, say): setup says what to do, changes nothing.
    eks.create_access_entry().cluster_name(&cluster).principal_arn(&node_role).r#type("STANDARD").send().await?;
    let refused = setup::run(&sandbox.sdk, &opts).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("type STANDARD") && refused.contains("delete-access-entry"), "{refused}");
    let entry = eks.describe_access_entry().cluster_name(&cluster).principal_arn(&node_role).send().await?;
    assert_eq!(entry.access_entry().and_then(|e| e.r#type()), Some("STANDARD"));
    eks.delete_access_entry().cluster_name(&cluster).principal_arn(&node_role).send().await?;

    // The controller's ServiceAccount already associated with another role.
    let someone_else = "arn:aws:iam::123456789012:role/someone-else";
    let taken = eks
        .create_pod_identity_association()
        .cluster_name(&cluster)
        .namespace("nodesmith")
        .service_account("nodesmith")
        .role_arn(someone_else)
        .send()
        .await?;
    let refused = setup::run(&sandbox.sdk, &opts).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("someone-else"), "{refused}");
    let taken_id = taken.association().and_then(|a| a.association_id()).context("an association id")?;
    eks.delete_pod_identity_association().cluster_name(&cluster).association_id(taken_id).send().await?;
    setup::run(&sandbox.sdk, &opts).await?;

    // Beside setup's own: an association of the controller role nobody tagged, one of another role tagged for the
    // cluster (an add-on's), and the node role's entry re-made as another cluster's.
    for (namespace, role, tagged) in [("other", controller_role.as_str(), false), ("apps", someone_else, true)] {
        let mut create = eks
            .create_pod_identity_association()
            .cluster_name(&cluster)
            .namespace(namespace)
            .service_account("app")
            .role_arn(role);
        if tagged {
            create = create.tags("nodesmith.io/cluster", &cluster);
        }
        create.send().await?;
    }
    let ledger = teardown::run(&sandbox.sdk, &support::teardown_without_kubernetes(&cluster)).await?;
    let deleted: Vec<&str> = ledger
        .resources
        .iter()
        .filter(|r| r.kind == "eks-pod-identity-association" && r.action == Action::Deleted)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(deleted.len(), 1, "only setup's association goes: {:?}", ledger.resources);
    let left = eks.list_pod_identity_associations().cluster_name(&cluster).send().await?;
    let mut namespaces: Vec<&str> = left.associations().iter().filter_map(|a| a.namespace()).collect();
    namespaces.sort();
    assert_eq!(namespaces, ["apps", "other"]);

    let other_cluster = "arn:aws:iam::123456789012:role/kept-entry";
    eks.create_access_entry()
        .cluster_name(&cluster)
        .principal_arn(other_cluster)
        .r#type("EC2_LINUX")
        .tags("nodesmith.io/cluster", "someone-else")
        .send()
        .await?;
    eks.create_access_entry()
        .cluster_name(&cluster)
        .principal_arn(&node_role)
        .r#type("EC2_LINUX")
        .tags("nodesmith.io/cluster", "someone-else")
        .send()
        .await?;
    let ledger = teardown::run(&sandbox.sdk, &support::teardown_without_kubernetes(&cluster)).await?;
    assert!(
        ledger.resources.iter().any(|r| r.kind == "eks-access-entry" && r.action == Action::Kept),
        "{:?}",
        ledger.resources
    );
    assert!(eks.describe_access_entry().cluster_name(&cluster).principal_arn(&node_role).send().await.is_ok());
    Ok(())
}

/// EKS refuses a principal IAM has not propagated yet: setup retries, then succeeds. Any other refusal fails at
/// once and names the call and EKS's reason. (The fault proxy answers as EKS does; moto never refuses.)
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn an_access_entry_refused_while_iam_propagates_is_retried_and_any_other_refusal_named() -> Result<()> {
    use axum::http::{Method, StatusCode};
    use nodesmith_sandbox::fault_proxy::{FaultPlan, RestFault};
    let sandbox = Sandbox::connect().await?;
    let through = |proxy: &str| sandbox.sdk.to_builder().endpoint_url(proxy).build();
    let eks = aws_sdk_eks::Client::new(&sandbox.sdk);

    let (cluster, opts) = access_entry_cluster(&sandbox, "setup-propagating").await?;
    let node_role = format!("arn:aws:iam::123456789012:role/{}", support::names(&cluster).node_role);
    let not_yet = RestFault::new(
        Method::POST,
        "/access-entries",
        2,
        StatusCode::BAD_REQUEST,
        "InvalidParameterException",
        &format!("The specified principal {node_role} does not exist"),
    );
    let (proxy, _) =
        support::aws_fault_proxy(FaultPlan { rest_faults: vec![not_yet.clone()], ..FaultPlan::default() }).await?;
    setup::run(&through(&proxy), &opts).await?;
    assert_eq!(not_yet.served(), 2, "both refusals were answered, and setup went on");
    let entry = eks.describe_access_entry().cluster_name(&cluster).principal_arn(&node_role).send().await?;
    assert_eq!(entry.access_entry().and_then(|e| e.r#type()), Some("EC2_LINUX"));

    let (refused_cluster, opts) = access_entry_cluster(&sandbox, "setup-refused").await?;
    let mode = RestFault::new(
        Method::POST,
        "/access-entries",
        u32::MAX,
        StatusCode::BAD_REQUEST,
        "InvalidRequestException",
        "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP]",
    );
    let (proxy, _) =
        support::aws_fault_proxy(FaultPlan { rest_faults: vec![mode.clone()], ..FaultPlan::default() }).await?;
    let error = setup::run(&through(&proxy), &opts).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("eks:CreateAccessEntry") && error.contains("API_AND_CONFIG_MAP"), "{error}");
    assert_eq!(mode.served(), 1, "not retried");

    for cluster in [&cluster, &refused_cluster] {
        nodesmith::bootstrap::teardown::run(&sandbox.sdk, &support::teardown_without_kubernetes(cluster)).await?;
    }
    Ok(())
}
