//! nodesmith's CRDs in the sandbox's real kube-apiserver: they install (server-side apply, field manager
//! `nodesmith`) and re-apply as a no-op; Karpenter's documentation examples and the rendered `nodeclasses/`
//! templates are accepted; invalid objects are refused with a message a person understands. Objects are sent with
//! server-side dry run, except for the one update test, which deletes what it made. Needs `make sandbox-up` (run by
//! `make test`).

mod support;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{CustomResourceExt, ResourceExt};
use nodesmith::apis::crds;
use nodesmith::apis::ec2nodeclass::EC2NodeClass;
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::apis::nodepool::NodePool;
use nodesmith::render::{NodeClassValues, Profile, render_nodeclasses};
use serde_json::{Value, json};
use support::{Sandbox, unique_name};

/// Applies every CRD (server-side, field manager `nodesmith`) and waits until the API server serves them.
async fn install(client: &kube::Client) -> Result<Api<CustomResourceDefinition>> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for generated in crds::all() {
        let name = generated.crd.name_any();
        api.patch(&name, &PatchParams::apply("nodesmith").force(), &Patch::Apply(&generated.crd))
            .await
            .with_context(|| format!("applying {name}"))?;
    }
    for generated in crds::all() {
        let name = generated.crd.name_any();
        support::wait_established(client, &name).await?;
    }
    Ok(api)
}

fn api_resource(kind: &str) -> Result<ApiResource> {
    Ok(match kind {
        "NodePool" => NodePool::api_resource(),
        "NodeClaim" => NodeClaim::api_resource(),
        "EC2NodeClass" => EC2NodeClass::api_resource(),
        other => bail!("not one of nodesmith's kinds: {other}"),
    })
}

/// Creates `object` with server-side dry run, under a name of its own (so that no real object is in the way): the
/// API server's answer.
async fn dry_run_create(client: &kube::Client, object: &Value) -> Result<Result<(), kube::Error>> {
    let resource = api_resource(object["kind"].as_str().unwrap_or_default())?;
    let mut object: DynamicObject = serde_json::from_value(object.clone())?;
    object.metadata.name = Some(unique_name("crds"));
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    Ok(api.create(&PostParams { dry_run: true, ..Default::default() }, &object).await.map(|_| ()))
}

fn example(file: &str) -> Result<Vec<Value>> {
    let path = format!("{}/tests/data/karpenter-examples/{file}", env!("CARGO_MANIFEST_DIR"));
    support::yaml::parse_documents(&std::fs::read_to_string(&path).with_context(|| path.clone())?)
}

/// The refusal's message, or a failure saying the object was accepted (or refused for another reason).
fn refusal(result: Result<(), kube::Error>) -> Result<String> {
    match result {
        Ok(()) => bail!("accepted"),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(other) => bail!("refused, but not as invalid: {other}"),
    }
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn the_crds_install_and_applying_them_again_changes_nothing() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let api = install(&sandbox.kube).await?;
    let versions = |crd: &CustomResourceDefinition| (crd.resource_version(), crd.metadata.generation);
    let mut before = Vec::new();
    for generated in crds::all() {
        before.push(versions(&api.get(&generated.crd.name_any()).await?));
    }
    install(&sandbox.kube).await?;
    for (generated, before) in crds::all().iter().zip(before) {
        let after = api.get(&generated.crd.name_any()).await?;
        assert_eq!(versions(&after), before, "re-applying {} changed it", generated.file_name);
        let manager = after.metadata.managed_fields.iter().flatten().any(|m| m.manager.as_deref() == Some("nodesmith"));
        assert!(manager, "{}: nodesmith is not a field manager", generated.file_name);
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn karpenters_examples_and_the_rendered_templates_are_accepted() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    install(&sandbox.kube).await?;
    let mut objects = Vec::new();
    for file in [
        "getting-started.yaml",
        "nodepool-reference.yaml",
        "nodepool-budgets.yaml",
        "ec2nodeclass-reference.yaml",
        "nodeclaim.yaml",
    ] {
        objects.extend(example(file)?.into_iter().map(|doc| (file.to_string(), doc)));
    }
    // Every template in every combination `nodesmith render` offers.
    for profile in [Profile::Production, Profile::Staging] {
        for prefix_delegation in [false, true] {
            let values = NodeClassValues {
                prefix_delegation,
                ..NodeClassValues::for_cluster("demo", "nodesmith-node-demo", "demo").with_profile(profile)
            };
            for (file, yaml) in render_nodeclasses(&values)? {
                let source = format!("nodeclasses/{file}.hbs ({profile:?}, prefix delegation {prefix_delegation})");
                objects.extend(support::yaml::parse_documents(&yaml)?.into_iter().map(|doc| (source.clone(), doc)));
            }
        }
    }
    let mut refused = Vec::new();
    for (source, object) in &objects {
        if let Err(e) = dry_run_create(&sandbox.kube, object).await? {
            refused.push(format!("{source} ({}): {e}", object["kind"]));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    assert!(objects.len() >= 26, "{} objects", objects.len());
    Ok(())
}

/// A valid object with the value at `pointer` replaced (or, with `Value::Null`, removed).
fn with(object: &Value, pointer: &str, value: Value) -> Result<Value> {
    let mut object = object.clone();
    let (parent, key) = pointer.rsplit_once('/').context("a JSON pointer")?;
    let parent = object.pointer_mut(parent).with_context(|| format!("{parent} in the base object"))?;
    match (parent, key.parse::<usize>()) {
        (Value::Array(list), Ok(index)) if value.is_null() => {
            list.remove(index);
        }
        (Value::Array(list), Ok(index)) => list[index] = value,
        (Value::Object(map), _) if value.is_null() => {
            map.remove(key);
        }
        (Value::Object(map), _) => {
            map.insert(key.to_string(), value);
        }
        _ => bail!("{pointer} is not in the base object"),
    }
    Ok(object)
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn invalid_objects_are_refused_with_a_message_that_says_why() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    install(&sandbox.kube).await?;
    let started = example("getting-started.yaml")?;
    let (pool, class) = (&started[0], &started[1]);
    let claim = &example("nodeclaim.yaml")?[0];
    let requirement = "/spec/template/spec/requirements/0";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a NodePool requirement with operator Inn",
            with(pool, &format!("{requirement}/operator"), json!("Inn"))?,
            r#"spec.template.spec.requirements[0].operator: Unsupported value: "Inn""#,
        ),
        (
            "a NodePool requirement on karpenter.sh/nodepool",
            with(pool, &format!("{requirement}/key"), json!("karpenter.sh/nodepool"))?,
            r#"label "karpenter.sh/nodepool" is restricted"#,
        ),
        (
            "a NodePool requirement on another karpenter.sh label",
            with(pool, &format!("{requirement}/key"), json!("karpenter.sh/anything"))?,
            r#"label domain "karpenter.sh" is restricted"#,
        ),
        (
            "a NodePool requirement on an unknown karpenter.k8s.aws label",
            with(pool, &format!("{requirement}/key"), json!("karpenter.k8s.aws/made-up"))?,
            r#"label domain "karpenter.k8s.aws" is restricted"#,
        ),
        (
            "a NodePool labelling nodes kubernetes.io/hostname",
            with(pool, "/spec/template/metadata", json!({"labels": {"kubernetes.io/hostname": "x"}}))?,
            r#"label "kubernetes.io/hostname" is restricted"#,
        ),
        (
            "a NodePool In requirement without values",
            with(pool, &format!("{requirement}/values"), json!([]))?,
            "requirements with operator 'In' must have a value defined",
        ),
        (
            "a NodePool Gt requirement on a word",
            with(pool, "/spec/template/spec/requirements/4/values", json!(["two"]))?,
            "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
        ),
        (
            "a NodePool expiring after 30d",
            with(pool, "/spec/template/spec/expireAfter", json!("30d"))?,
            "spec.template.spec.expireAfter in body should match '^(([0-9]+(s|m|h))+|Never)$'",
        ),
        (
            "a NodePool without nodeClassRef",
            with(pool, "/spec/template/spec/nodeClassRef", Value::Null)?,
            "spec.template.spec.nodeClassRef: Required value",
        ),
        (
            "a NodePool with an empty nodeClassRef name",
            with(pool, "/spec/template/spec/nodeClassRef/name", json!(""))?,
            "name may not be empty",
        ),
        ("a NodePool of weight 0", with(pool, "/spec/weight", json!(0))?, "should be greater than or equal to 1"),
        (
            "a NodePool budget with a schedule and no duration",
            with(pool, "/spec/disruption/budgets", json!([{"nodes": "1", "schedule": "@daily"}]))?,
            "'schedule' must be set with 'duration'",
        ),
        (
            "a NodePool budget of 150%",
            with(pool, "/spec/disruption/budgets", json!([{"nodes": "150%"}]))?,
            "spec.disruption.budgets[0].nodes in body should match",
        ),
        (
            "a NodePool with disruption but no consolidateAfter",
            with(pool, "/spec/disruption", json!({"consolidationPolicy": "WhenEmpty"}))?,
            "spec.disruption.consolidateAfter: Required value",
        ),
        (
            "a NodePool with a CPU limit of lots",
            with(pool, "/spec/limits", json!({"cpu": "lots"}))?,
            "spec.limits.cpu in body should match",
        ),
        (
            "an EC2NodeClass with both role and instanceProfile",
            with(class, "/spec/instanceProfile", json!("KarpenterNodeInstanceProfile"))?,
            "must specify exactly one of ['role', 'instanceProfile']",
        ),
        (
            "an EC2NodeClass with neither role nor instanceProfile",
            with(class, "/spec/role", Value::Null)?,
            "must specify exactly one of ['role', 'instanceProfile']",
        ),
        (
            "an EC2NodeClass with no subnetSelectorTerms",
            with(class, "/spec/subnetSelectorTerms", json!([]))?,
            "subnetSelectorTerms cannot be empty",
        ),
        (
            "an EC2NodeClass subnet term with both id and tags",
            with(class, "/spec/subnetSelectorTerms/0/id", json!("subnet-0123"))?,
            "'id' is mutually exclusive, cannot be set with a combination of other fields in a subnet selector term",
        ),
        (
            "an EC2NodeClass with an empty security group term",
            with(class, "/spec/securityGroupSelectorTerms", json!([{}]))?,
            "expected at least one, got none, ['tags', 'id', 'name']",
        ),
        (
            "an EC2NodeClass alias without a version",
            with(class, "/spec/amiSelectorTerms", json!([{"alias": "al2023"}]))?,
            "'alias' is improperly formatted, must match the format 'family@version'",
        ),
        (
            "an EC2NodeClass with amiFamily AL2 and an al2023 alias",
            with(class, "/spec/amiFamily", json!("AL2"))?,
            "if set, amiFamily must be 'AL2023' or 'Custom' when using an AL2023 alias",
        ),
        (
            "an EC2NodeClass selecting AMIs by tag without amiFamily",
            with(class, "/spec/amiSelectorTerms", json!([{"tags": {"team": "a"}}]))?,
            "must specify amiFamily if amiSelectorTerms does not contain an alias",
        ),
        (
            "an EC2NodeClass tagging instances kubernetes.io/cluster/x",
            with(class, "/spec/tags", json!({"kubernetes.io/cluster/x": "owned"}))?,
            "tag contains a restricted tag matching kubernetes.io/cluster/",
        ),
        (
            "an EC2NodeClass with IMDS tokens sometimes",
            with(class, "/spec/metadataOptions", json!({"httpTokens": "sometimes"}))?,
            r#"spec.metadataOptions.httpTokens: Unsupported value: "sometimes""#,
        ),
        (
            "an EC2NodeClass with two root volumes",
            with(
                class,
                "/spec/blockDeviceMappings",
                json!([
                    {"deviceName": "/dev/xvda", "rootVolume": true, "ebs": {"volumeSize": "20Gi"}},
                    {"deviceName": "/dev/xvdb", "rootVolume": true, "ebs": {"volumeSize": "20Gi"}},
                ]),
            )?,
            "must have only one blockDeviceMappings with rootVolume",
        ),
        (
            "an EC2NodeClass whose kubelet reserves negative memory",
            with(class, "/spec/kubelet", json!({"kubeReserved": {"memory": "-1Gi"}}))?,
            "kubeReserved value cannot be a negative resource quantity",
        ),
        (
            "an EC2NodeClass with prefixDelegation Maybe",
            with(class, "/spec/prefixDelegation", json!("Maybe"))?,
            r#"spec.prefixDelegation: Unsupported value: "Maybe""#,
        ),
        (
            "a NodeClaim without requirements",
            with(claim, "/spec/requirements", Value::Null)?,
            "spec.requirements: Required value",
        ),
    ];
    let mut failures = Vec::new();
    for (what, object, expected) in &cases {
        match refusal(dry_run_create(&sandbox.kube, object).await?) {
            Ok(message) if message.contains(expected) => println!("{what}: {message}"),
            Ok(message) => failures.push(format!("{what}: refused with {message:?}, expected {expected:?} in it")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_nodepool_keeps_its_node_class_group_and_kind() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    install(&sandbox.kube).await?;
    let api = Api::<NodePool>::all(sandbox.kube.clone());
    // A pool no pod can use (it asks for an OS no node has) and whose node class does not exist, removed at the end.
    let mut pool: NodePool = serde_json::from_value(example("getting-started.yaml")?.remove(0))?;
    let name = unique_name("crds-immutable");
    pool.metadata.name = Some(name.clone());
    pool.spec.template.spec.requirements[1].values = vec!["nodesmith-test-none".into()];
    pool.spec.template.spec.node_class_ref.name = name.clone();
    let created = api.create(&PostParams::default(), &pool).await?;
    let result = async {
        let mut changed = created.clone();
        changed.spec.template.spec.node_class_ref.group = "example.com".into();
        let group = refusal(
            api.replace(&name, &PostParams { dry_run: true, ..Default::default() }, &changed).await.map(|_| ()),
        )?;
        let mut changed = created.clone();
        changed.spec.template.spec.node_class_ref.kind = "OtherNodeClass".into();
        let kind = refusal(
            api.replace(&name, &PostParams { dry_run: true, ..Default::default() }, &changed).await.map(|_| ()),
        )?;
        // The name may change: a NodePool moves to another EC2NodeClass that way.
        let mut renamed = created.clone();
        renamed.spec.template.spec.node_class_ref.name = format!("{name}-2");
        api.replace(&name, &PostParams { dry_run: true, ..Default::default() }, &renamed).await?;
        anyhow::Ok((group, kind))
    }
    .await;
    api.delete(&name, &DeleteParams::default()).await?;
    let (group, kind) = result?;
    assert!(group.contains("nodeClassRef.group is immutable"), "{group}");
    assert!(kind.contains("nodeClassRef.kind is immutable"), "{kind}");
    // What the API server filled in is what the types default to.
    assert_eq!(created.spec.disruption.budgets[0].nodes, "10%");
    assert_eq!(created.spec.template.spec.expire_after.as_deref(), Some("720h"));
    Ok(())
}
