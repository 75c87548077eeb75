//! The mappings of Karpenter's upgrade guides, one example each, and every public fixture converted.

use serde_json::{Value, json};

use super::*;

fn yaml(text: &str) -> Vec<Value> {
    text.split("\n---\n").map(|doc| serde_yaml_ng::from_str(doc).expect("a YAML document")).collect()
}

fn with_role() -> Options {
    Options { role: Some("KarpenterNodeRole-demo".into()), instance_profile: None }
}

fn object<'m>(migration: &'m Migration, kind: &str, name: &str) -> &'m Value {
    migration
        .objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:#?}", migration.objects))
}

fn said(migration: &Migration, field: &str) -> Finding {
    migration
        .findings
        .iter()
        .find(|f| f.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("nothing said about {field}: {:#?}", migration.findings))
}

const PROVISIONER: &str = r#"
apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata: {name: default, annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}}
spec:
  labels: {team: search}
  annotations: {karpenter.sh/do-not-consolidate: "true"}
  requirements:
    - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
    - {key: karpenter.k8s.aws/instance-pods, operator: Gt, values: ["10"]}
    - {key: karpenter.sh/provisioner-name, operator: DoesNotExist}
  kubeletConfiguration: {maxPods: 50, containerRuntime: containerd}
  providerRef: {name: default}
  ttlSecondsAfterEmpty: 120
  ttlSecondsUntilExpired: 2592000
  limits: {resources: {cpu: 1000}}
  weight: 10
---
apiVersion: karpenter.k8s.aws/v1alpha1
kind: AWSNodeTemplate
metadata: {name: default}
spec:
  subnetSelector: {karpenter.sh/discovery: demo, tier: "private,internal"}
  securityGroupSelector: {aws-ids: "sg-1, sg-2", karpenter.sh/discovery: demo}
  instanceProfile: KarpenterNodeInstanceProfile-demo
  tags: {team: search, karpenter.sh/nodepool: x}
"#;

#[test]
fn a_provisioner_and_its_node_template_become_a_nodepool_and_an_ec2nodeclass() {
    let migration = migrate(&yaml(PROVISIONER), &Options::default()).expect("converted");
    let pool = object(&migration, "NodePool", "default");
    assert_eq!(pool["apiVersion"], "karpenter.sh/v1");
    assert!(pool["metadata"]["annotations"].is_null(), "kubectl's annotation is not carried: {pool:#}");
    let template = &pool["spec"]["template"];
    assert_eq!(template["metadata"]["labels"], json!({"team": "search"}));
    assert_eq!(template["metadata"]["annotations"], json!({"karpenter.sh/do-not-disrupt": "true"}));
    assert_eq!(
        template["spec"]["nodeClassRef"],
        json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"})
    );
    assert_eq!(template["spec"]["expireAfter"], "720h");
    assert_eq!(pool["spec"]["disruption"], json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "2m"}));
    assert_eq!(pool["spec"]["limits"], json!({"cpu": 1000}));
    assert_eq!(pool["spec"]["weight"], 10);
    let keys: Vec<&str> = template["spec"]["requirements"]
        .as_array()
        .expect("requirements")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "karpenter.sh/capacity-type",
            "kubernetes.io/os",
            "kubernetes.io/arch",
            "karpenter.k8s.aws/instance-category",
            "karpenter.k8s.aws/instance-generation"
        ],
        "instance-pods and provisioner-name left out, the webhook's defaults written out"
    );
    assert_eq!(said(&migration, "spec.requirements[karpenter.k8s.aws/instance-pods]").kind, FindingKind::Dropped);
    assert!(
        said(&migration, "spec.requirements[karpenter.sh/provisioner-name]")
            .message
            .contains("select karpenter.sh/nodepool now")
    );
    assert_eq!(said(&migration, "spec.kubeletConfiguration.containerRuntime").kind, FindingKind::Dropped);
    assert!(said(&migration, "spec.annotations.karpenter.sh/do-not-consolidate").message.contains("drift"));

    let class = object(&migration, "EC2NodeClass", "default");
    assert_eq!(class["apiVersion"], "karpenter.k8s.aws/v1");
    assert_eq!(class["spec"]["kubelet"], json!({"maxPods": 50}), "kubelet moved to the class");
    assert_eq!(
        class["spec"]["subnetSelectorTerms"],
        json!([{"tags": {"karpenter.sh/discovery": "demo", "tier": "private"}}, {"tags": {"karpenter.sh/discovery": "demo", "tier": "internal"}}])
    );
    assert_eq!(class["spec"]["securityGroupSelectorTerms"], json!([{"id": "sg-1"}, {"id": "sg-2"}]));
    assert_eq!(said(&migration, "spec.securityGroupSelector").kind, FindingKind::Dropped, "the tag beside the ids");
    assert_eq!(class["spec"]["amiSelectorTerms"], json!([{"alias": "al2@latest"}]), "no amiFamily meant AL2");
    assert!(class["spec"]["amiFamily"].is_null());
    assert_eq!(class["spec"]["instanceProfile"], "KarpenterNodeInstanceProfile-demo");
    assert_eq!(class["spec"]["tags"], json!({"team": "search"}));
    assert_eq!(said(&migration, "spec.tags.karpenter.sh/nodepool").kind, FindingKind::Dropped);
    assert_eq!(class["spec"]["metadataOptions"]["httpPutResponseHopLimit"], 2, "the old default written out");
}

#[test]
fn consolidation_expiry_and_their_absence_keep_their_meaning() {
    let with = |spec: &str| {
        let doc = format!(
            "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata: {{name: p}}\nspec: {{providerRef: {{name: c}}, {spec}}}"
        );
        migrate(&yaml(&doc), &Options::default()).expect("converted")
    };
    let consolidating = with("consolidation: {enabled: true}");
    let pool = object(&consolidating, "NodePool", "p");
    assert_eq!(
        pool["spec"]["disruption"],
        json!({"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "0s"})
    );
    assert_eq!(pool["spec"]["template"]["spec"]["expireAfter"], "Never", "no ttlSecondsUntilExpired: never expired");
    assert_eq!(said(&consolidating, "spec.ttlSecondsUntilExpired").kind, FindingKind::Changed);

    let neither = with("weight: 1");
    let pool = object(&neither, "NodePool", "p");
    assert_eq!(pool["spec"]["disruption"], json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never"}));
    assert!(said(&neither, "spec.consolidation").message.contains("removed no node"));

    let both = with("consolidation: {enabled: true}, ttlSecondsAfterEmpty: 30, ttlSecondsUntilExpired: 5400");
    let pool = object(&both, "NodePool", "p");
    assert_eq!(pool["spec"]["disruption"]["consolidationPolicy"], "WhenEmptyOrUnderutilized");
    assert_eq!(pool["spec"]["template"]["spec"]["expireAfter"], "1h30m");
    assert_eq!(said(&both, "spec.ttlSecondsAfterEmpty").kind, FindingKind::Dropped);

    let unknown = with("surgeLimit: 3");
    assert_eq!(said(&unknown, "spec.surgeLimit").kind, FindingKind::Dropped);
}

#[test]
fn an_inline_provider_becomes_a_class_of_the_provisioners_name() {
    let doc = r#"
apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata: {name: inline}
spec:
  provider:
    subnetSelector: {karpenter.sh/discovery: demo}
    securityGroupSelector: {karpenter.sh/discovery: demo}
    launchTemplate: my-template
"#;
    let refused = migrate(&yaml(doc), &Options::default()).expect_err("no identity for its nodes");
    assert!(refused.to_string().starts_with("Provisioner/inline has no instance profile"), "{refused}");
    assert!(refused.to_string().contains("--role"), "{refused}");
    let migration = migrate(&yaml(doc), &with_role()).expect("converted");
    let pool = object(&migration, "NodePool", "inline");
    assert_eq!(pool["spec"]["template"]["spec"]["nodeClassRef"]["name"], "inline");
    let class = object(&migration, "EC2NodeClass", "inline");
    assert_eq!(class["spec"]["role"], "KarpenterNodeRole-demo");
    assert!(class["spec"]["launchTemplate"].is_null());
    assert_eq!(said(&migration, "spec.launchTemplate").kind, FindingKind::Dropped);
    assert_eq!(said(&migration, "spec.provider").kind, FindingKind::Changed);
}

#[test]
fn ami_selectors_become_terms_ids_alone_names_with_owners_and_ubuntu_needs_its_amis() {
    let template = |ami: &str, family: &str| {
        format!(
            "apiVersion: karpenter.k8s.aws/v1alpha1\nkind: AWSNodeTemplate\nmetadata: {{name: t}}\nspec: \
             {{amiFamily: {family}, subnetSelector: {{a: b}}, securityGroupSelector: {{a: b}}, instanceProfile: p, \
             amiSelector: {ami}}}"
        )
    };
    let migrated =
        |ami: &str, family: &str| migrate(&yaml(&template(ami, family)), &Options::default()).expect("converted");
    let ids = migrated("{aws::ids: \"ami-1,ami-2\", aws::name: x}", "Bottlerocket");
    let class = object(&ids, "EC2NodeClass", "t");
    assert_eq!(class["spec"]["amiSelectorTerms"], json!([{"id": "ami-1"}, {"id": "ami-2"}]));
    assert_eq!(class["spec"]["amiFamily"], "Bottlerocket");
    let names = migrated("{aws::name: \"a,b\", aws::owners: \"self,amazon\", env: \"\"}", "AL2");
    let terms = &object(&names, "EC2NodeClass", "t")["spec"]["amiSelectorTerms"];
    assert_eq!(terms.as_array().map(Vec::len), Some(4), "{terms:#}");
    assert_eq!(terms[0], json!({"name": "a", "owner": "self", "tags": {"env": "*"}}));
    let ubuntu = migrate(&yaml(&template("{}", "Ubuntu")), &Options::default()).expect("converted");
    assert!(ubuntu.objects.is_empty(), "{:#?}", ubuntu.objects);
    assert_eq!(said(&ubuntu, "spec.amiFamily").kind, FindingKind::NotConverted);
}

const V1BETA1: &str = r#"
apiVersion: karpenter.sh/v1beta1
kind: NodePool
metadata: {name: web}
spec:
  template:
    spec:
      nodeClassRef: {name: shared}
      kubelet: {maxPods: 110}
      resources: {requests: {cpu: "1"}}
      requirements: [{key: karpenter.k8s.aws/instance-category, operator: In, values: [c]}]
  disruption: {consolidationPolicy: WhenUnderutilized, expireAfter: 168h, budgets: [{nodes: "1"}]}
---
apiVersion: karpenter.sh/v1beta1
kind: NodePool
metadata: {name: batch}
spec:
  template:
    spec:
      nodeClassRef: {apiVersion: karpenter.k8s.aws/v1beta1, kind: EC2NodeClass, name: shared}
      kubelet: {maxPods: 29}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 30s}
---
apiVersion: karpenter.k8s.aws/v1beta1
kind: EC2NodeClass
metadata: {name: shared}
spec:
  amiFamily: AL2023
  role: KarpenterNodeRole-demo
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
---
apiVersion: karpenter.sh/v1beta1
kind: NodeClaim
metadata: {name: web-abcde}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}
"#;

#[test]
fn v1beta1_pools_move_their_kubelet_to_the_class_and_a_shared_class_is_split() {
    let migration = migrate(&yaml(V1BETA1), &Options::default()).expect("converted");
    let web = object(&migration, "NodePool", "web");
    assert_eq!(web["spec"]["template"]["spec"]["expireAfter"], "168h");
    assert!(web["spec"]["template"]["spec"]["resources"].is_null());
    assert_eq!(said(&migration, "spec.template.spec.resources").kind, FindingKind::Dropped);
    assert_eq!(
        web["spec"]["disruption"],
        json!({"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "0s", "budgets": [{"nodes": "1"}]})
    );
    let batch = object(&migration, "NodePool", "batch");
    assert_eq!(batch["spec"]["disruption"], json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "30s"}));
    assert_eq!(batch["spec"]["template"]["spec"]["expireAfter"], "720h", "v1beta1's default, kept");
    assert_eq!(batch["spec"]["template"]["spec"]["requirements"], json!([]));
    // The first pool's kubelet goes on the class; the second, different, gets a copy of its own.
    let shared = object(&migration, "EC2NodeClass", "shared");
    assert_eq!(shared["spec"]["kubelet"], json!({"maxPods": 110}));
    assert_eq!(shared["spec"]["amiSelectorTerms"], json!([{"alias": "al2023@latest"}]));
    assert!(shared["spec"]["amiFamily"].is_null());
    let copy = object(&migration, "EC2NodeClass", "shared-batch");
    assert_eq!(copy["spec"]["kubelet"], json!({"maxPods": 29}));
    assert_eq!(batch["spec"]["template"]["spec"]["nodeClassRef"]["name"], "shared-batch");
    // NodeClaims are the controller's: reported, not written; other objects pass through.
    assert!(!migration.objects.iter().any(|o| o["kind"] == "NodeClaim"));
    assert!(
        migration.findings.iter().any(|f| f.object == "NodeClaim/web-abcde" && f.kind == FindingKind::NotConverted)
    );
    assert_eq!(object(&migration, "ConfigMap", "untouched")["apiVersion"], "v1");
}

#[test]
fn a_kubelet_whose_class_is_not_in_the_input_is_reported_with_its_settings() {
    let pool = V1BETA1.split("\n---\n").next().expect("the first document");
    let migration = migrate(&yaml(pool), &Options::default()).expect("converted");
    let finding = said(&migration, "kubelet");
    assert_eq!(finding.kind, FindingKind::NotConverted);
    assert!(
        finding.message.contains("shared is not among the input") && finding.message.contains("110"),
        "{finding:?}"
    );
}

/// Every public fixture converts; every object out is of a v1 Karpenter kind (or passed through), every class has
/// AMI terms and one node identity.
#[test]
fn every_public_fixture_converts() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/migrate");
    let mut converted = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let parsed: Result<Vec<Value>, _> =
            serde_yaml_ng::Deserializer::from_str(&text).map(serde::Deserialize::deserialize).collect();
        let Ok(mut documents) = parsed else {
            assert!(path.to_string_lossy().contains("duplicate-taints"), "{} does not parse", path.display());
            continue;
        };
        documents.retain(|d: &Value| !d.is_null());
        let migration = migrate(&documents, &with_role()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for object in &migration.objects {
            match object["kind"].as_str() {
                Some("NodePool") => assert_eq!(object["apiVersion"], "karpenter.sh/v1"),
                Some("EC2NodeClass") => {
                    assert_eq!(object["apiVersion"], "karpenter.k8s.aws/v1");
                    assert!(object["spec"]["amiSelectorTerms"].as_array().is_some_and(|t| !t.is_empty()), "{object:#}");
                    let identities =
                        ["role", "instanceProfile"].iter().filter(|k| object["spec"][**k].is_string()).count();
                    assert_eq!(identities, 1, "{}: {object:#}", path.display());
                }
                other => panic!("{}: {other:?} out of a Karpenter fixture", path.display()),
            }
        }
        converted += 1;
    }
    assert!(converted >= 30, "{converted} fixtures");
}

#[test]
fn what_v1_would_refuse_is_not_converted_and_said_why() {
    let docs = yaml(
        r#"
apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata: {name: templated}
spec:
  providerRef: {name: lt}
  requirements: [{key: topology.kubernetes.io/zone, operator: In, values: "${jsonencode(local.azs)}"}]
---
apiVersion: karpenter.k8s.aws/v1alpha1
kind: AWSNodeTemplate
metadata: {name: lt}
spec: {subnetSelector: {a: b}, launchTemplate: my-template, instanceProfile: p}
---
apiVersion: karpenter.k8s.aws/v1alpha1
kind: AWSNodeTemplate
metadata: {name: placeholder-ids}
spec: {subnetSelector: {a: b}, securityGroupSelector: {a: b}, amiSelector: {aws::ids: "ami123"}, instanceProfile: p}
"#,
    );
    let migration = migrate(&docs, &Options::default()).expect("converted");
    assert!(migration.objects.is_empty(), "{:#?}", migration.objects);
    let finding = said(&migration, "spec.requirements[topology.kubernetes.io/zone]");
    assert_eq!(finding.kind, FindingKind::NotConverted);
    assert!(finding.message.contains("placeholder"), "{finding:?}");
    let finding = said(&migration, "spec.securityGroupSelector");
    assert!(finding.message.contains("the launch template my-template chose them"), "{finding:?}");
    let finding = said(&migration, "spec.amiSelectorTerms");
    assert!(finding.message.starts_with("ami123 is not an id"), "{finding:?}");
}
