//! The CRDs nodesmith generates: committed in the chart as generated, compatible with Karpenter v1.14.1's (every
//! property with the same type, the same constraints and CEL rules, names, scope and printer columns), and able to
//! carry Karpenter's documentation examples through nodesmith's types without losing a field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nodesmith::apis::crds;
use nodesmith::apis::ec2nodeclass::EC2NodeClass;
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::apis::nodepool::NodePool;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[path = "support/yaml.rs"]
mod yaml;

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    yaml::parse_documents(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn generated(file_name: &str) -> Value {
    let crd = crds::all().into_iter().find(|c| c.file_name == file_name);
    crd.unwrap_or_else(|| panic!("no generated {file_name}")).to_value().expect("a CRD is JSON")
}

#[test]
fn the_chart_holds_the_crds_as_generated() {
    let mut stale = Vec::new();
    for crd in crds::all() {
        let yaml = crd.to_yaml().expect("YAML");
        let path = repo("charts/nodesmith/crds").join(crd.file_name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "the committed CRDs differ from the types ({}): run `cargo run -- crds --out charts/nodesmith/crds`",
        stale.join(", ")
    );
}

/// Schema keywords that constrain or default a value, compared between Karpenter's CRDs and ours.
const KEYWORDS: [&str; 16] = [
    "type",
    "format",
    "enum",
    "pattern",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "required",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
];

/// Where nodesmith's schema deliberately differs from Karpenter's: (CRD file, property path, keyword, why).
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str)] = &[
    // Karpenter's CRD generator hack puts a label value's length and syntax on the `values` *array*, where string
    // keywords check nothing: copying them would be a no-op, putting them on the items a new restriction.
    ("karpenter.sh_nodepools.yaml", ".spec.template.spec.requirements[].values", "maxLength", "no-op on an array"),
    ("karpenter.sh_nodepools.yaml", ".spec.template.spec.requirements[].values", "pattern", "no-op on an array"),
    ("karpenter.sh_nodeclaims.yaml", ".spec.requirements[].values", "maxLength", "no-op on an array"),
    ("karpenter.sh_nodeclaims.yaml", ".spec.requirements[].values", "pattern", "no-op on an array"),
    // Karpenter requires `spec` by its root schema; kube's derive makes the root require it in every CRD.
    ("karpenter.k8s.aws_ec2nodeclasses.yaml", "", "required", "spec required at the root"),
];

/// Properties nodesmith adds to Karpenter's API (optional, so every Karpenter manifest stays valid).
const ADDITIONS: &[(&str, &str)] = &[("karpenter.k8s.aws_ec2nodeclasses.yaml", ".spec.prefixDelegation")];

/// CEL rules nodesmith's CRDs carry beyond the generic Karpenter ones: the AWS provider's own copies of the NodePool
/// and NodeClaim CRDs restrict the `karpenter.k8s.aws` label domain.
const ADDED_RULE_MESSAGES: &[&str] = &[r#"label domain "karpenter.k8s.aws" is restricted"#];

/// Every property path of a schema (`.spec.a[].b{}`: `[]` an array's items, `{}` a map's values) with its node.
fn schema_paths<'a>(path: String, node: &'a Value, out: &mut BTreeMap<String, &'a Value>) {
    out.insert(path.clone(), node);
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            schema_paths(format!("{path}.{name}"), child, out);
        }
    }
    if let Some(items) = node.get("items") {
        schema_paths(format!("{path}[]"), items, out);
    }
    if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
        schema_paths(format!("{path}{{}}"), values, out);
    }
}

fn keyword(node: &Value, key: &str) -> Value {
    match (key, node.get(key)) {
        // `required` is a set; `anyOf` of int-or-string is compared through `x-kubernetes-int-or-string`.
        ("required", Some(Value::Array(list))) => {
            let mut names: Vec<&Value> = list.iter().collect();
            names.sort_by_key(|v| v.as_str().unwrap_or_default().to_string());
            json!(names)
        }
        (_, Some(value)) => value.clone(),
        (_, None) => Value::Null,
    }
}

fn rules(node: &Value) -> BTreeSet<(String, String)> {
    node.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            (r["rule"].as_str().unwrap_or_default().to_string(), r["message"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn compare_schemas(file: &str) -> Vec<String> {
    let upstream_crd = yaml_documents(&format!("tests/data/karpenter-crds/{file}")).remove(0);
    let ours_crd = generated(file);
    let schema = |crd: &Value| crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let (upstream_schema, ours_schema) = (schema(&upstream_crd), schema(&ours_crd));
    let (mut upstream, mut ours) = (BTreeMap::new(), BTreeMap::new());
    schema_paths(String::new(), &upstream_schema, &mut upstream);
    schema_paths(String::new(), &ours_schema, &mut ours);
    let known =
        |path: &str, key: &str| KNOWN_DIFFERENCES.iter().any(|(f, p, k, _)| *f == file && *p == path && *k == key);

    let mut problems = Vec::new();
    for (f, path, key, _) in KNOWN_DIFFERENCES.iter().filter(|d| d.0 == file) {
        let same = match (upstream.get(*path), ours.get(*path)) {
            (Some(theirs), Some(mine)) => keyword(theirs, key) == keyword(mine, key),
            _ => false,
        };
        if same {
            problems.push(format!("{f}: {path}: {key} is listed as a known difference but is now the same"));
        }
    }
    for (path, theirs) in &upstream {
        // apiVersion, kind and metadata are the API server's; only spec and status are nodesmith's to match.
        if !(path.is_empty() || path.starts_with(".spec") || path.starts_with(".status")) {
            continue;
        }
        let Some(mine) = ours.get(path) else {
            problems.push(format!("{file}: {path} is missing"));
            continue;
        };
        for key in KEYWORDS {
            let (a, b) = (keyword(theirs, key), keyword(mine, key));
            if a != b && !known(path, key) {
                problems.push(format!("{file}: {path}: {key} is {b} here, {a} in Karpenter"));
            }
        }
        let (their_rules, my_rules) = (rules(theirs), rules(mine));
        for missing in their_rules.difference(&my_rules) {
            problems.push(format!("{file}: {path}: rule {:?} ({:?}) is missing", missing.0, missing.1));
        }
        for extra in my_rules.difference(&their_rules) {
            if !ADDED_RULE_MESSAGES.contains(&extra.1.as_str()) {
                problems.push(format!("{file}: {path}: rule {:?} ({:?}) is not Karpenter's", extra.0, extra.1));
            }
        }
    }
    for path in ours.keys() {
        let added = ADDITIONS.iter().any(|(f, p)| *f == file && (path == p || path.starts_with(&format!("{p}."))));
        if !upstream.contains_key(path) && !added && (path.starts_with(".spec") || path.starts_with(".status")) {
            problems.push(format!("{file}: {path} is not in Karpenter's schema"));
        }
    }

    let names = |crd: &Value| {
        let mut names = crd["spec"]["names"].clone();
        for list in ["categories", "shortNames"] {
            if names[list].is_null() {
                names[list] = json!([]);
            }
        }
        names
    };
    if names(&upstream_crd) != names(&ours_crd) {
        problems.push(format!("{file}: names {} differ from Karpenter's {}", names(&ours_crd), names(&upstream_crd)));
    }
    for key in ["group", "scope"] {
        if upstream_crd["spec"][key] != ours_crd["spec"][key] {
            problems
                .push(format!("{file}: {key} is {}, Karpenter's {}", ours_crd["spec"][key], upstream_crd["spec"][key]));
        }
    }
    let version = |crd: &Value| crd["spec"]["versions"][0].clone();
    let (theirs, mine) = (version(&upstream_crd), version(&ours_crd));
    for key in ["name", "served", "storage", "subresources", "additionalPrinterColumns"] {
        if theirs[key] != mine[key] {
            problems.push(format!("{file}: version {key} is {}, Karpenter's {}", mine[key], theirs[key]));
        }
    }
    problems
}

#[test]
fn the_crds_match_karpenters_schemas() {
    let problems: Vec<String> =
        ["karpenter.sh_nodepools.yaml", "karpenter.sh_nodeclaims.yaml", "karpenter.k8s.aws_ec2nodeclasses.yaml"]
            .iter()
            .flat_map(|file| compare_schemas(file))
            .collect();
    assert!(problems.is_empty(), "{} differences from Karpenter v1.14.1:\n{}", problems.len(), problems.join("\n"));
}

/// Differences between a manifest and what nodesmith's type writes back: a field of the manifest that is missing
/// or changed, or a field added that is not one of `defaults` (paths the API server would fill in). A quantity
/// written as a number reads back as the same digits in a string.
fn round_trip_differences(path: &str, original: &Value, back: &Value, defaults: &[&str], out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => round_trip_differences(&format!("{path}.{key}"), value, other, defaults, out),
                    None => out.push(format!("{path}.{key} was lost")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                let added = format!("{path}.{key}");
                if !defaults.contains(&added.as_str()) {
                    out.push(format!("{added} was added"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                round_trip_differences(&format!("{path}[{i}]"), x, y, defaults, out);
            }
        }
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path} was {a}, reads back as {b}")),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(file: &str, doc: &Value, defaults: &[&str]) -> Vec<String> {
    let typed: T = match serde_json::from_value(doc.clone()) {
        Ok(typed) => typed,
        Err(e) => return vec![format!("{file}: does not read: {e}")],
    };
    let back = serde_json::to_value(&typed).expect("serializes");
    let mut differences = Vec::new();
    round_trip_differences("", doc, &back, defaults, &mut differences);
    differences.into_iter().map(|d| format!("{file} ({}): {d}", doc["kind"])).collect()
}

#[test]
fn karpenters_documentation_examples_read_and_write_back_unchanged() {
    // What the API server defaults (and the types default the same way when they read a manifest).
    let nodepool_defaults = [
        ".spec.template.spec.expireAfter",
        ".spec.disruption.budgets",
        ".spec.disruption",
        ".spec.disruption.consolidationPolicy",
    ];
    let nodeclass_defaults = [".spec.metadataOptions"];
    let mut problems = Vec::new();
    let mut kinds = BTreeSet::new();
    for file in [
        "getting-started.yaml",
        "nodepool-reference.yaml",
        "nodepool-budgets.yaml",
        "ec2nodeclass-reference.yaml",
        "nodeclaim.yaml",
    ] {
        for doc in yaml_documents(&format!("tests/data/karpenter-examples/{file}")) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            problems.extend(match kind.as_str() {
                "NodePool" => round_trip::<NodePool>(file, &doc, &nodepool_defaults),
                "EC2NodeClass" => round_trip::<EC2NodeClass>(file, &doc, &nodeclass_defaults),
                "NodeClaim" => round_trip::<NodeClaim>(file, &doc, &[]),
                other => vec![format!("{file}: unexpected kind {other}")],
            });
            kinds.insert(kind);
        }
    }
    assert_eq!(kinds, BTreeSet::from(["EC2NodeClass".into(), "NodeClaim".into(), "NodePool".into()]));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_examples_keep_their_meaning_in_the_types() {
    let docs = yaml_documents("tests/data/karpenter-examples/nodepool-reference.yaml");
    let pool: NodePool = serde_json::from_value(docs[0].clone()).expect("a NodePool");
    assert_eq!(pool.spec.limits["cpu"], "1000");
    assert_eq!(pool.spec.template.spec.requirements[0].min_values, Some(2));
    assert_eq!(pool.spec.disruption.budgets[1].schedule.as_deref(), Some("0 9 * * mon-fri"));
    assert_eq!(pool.spec.template.spec.node_class_ref.kind, "EC2NodeClass");
    let status = pool.status.expect("status");
    assert_eq!(status.resources["memory"], "8192Mi");

    let docs = yaml_documents("tests/data/karpenter-examples/ec2nodeclass-reference.yaml");
    let class: EC2NodeClass = serde_json::from_value(docs[0].clone()).expect("an EC2NodeClass");
    assert_eq!(class.spec.kubelet.as_ref().and_then(|k| k.max_pods), Some(20));
    let ebs = class.spec.block_device_mappings[0].ebs.as_ref().expect("ebs");
    assert_eq!(
        (ebs.kms_key_id.as_deref(), ebs.snapshot_id.as_deref()),
        (Some("1234abcd-12ab-34cd-56ef-1234567890ab"), Some("snap-0123456789"))
    );
    assert_eq!(class.spec.associate_public_ip_address, Some(true));
    assert_eq!(class.status.expect("status").subnets[0].zone_id.as_deref(), Some("use2-az2"));

    // Without metadataOptions, the IMDS defaults are Karpenter's: IMDSv2 required, hop limit 1.
    let docs = yaml_documents("tests/data/karpenter-examples/getting-started.yaml");
    let class: EC2NodeClass = serde_json::from_value(docs[1].clone()).expect("an EC2NodeClass");
    let imds = class.spec.metadata_options.expect("defaulted");
    assert_eq!((imds.http_tokens.as_deref(), imds.http_put_response_hop_limit), (Some("required"), Some(1)));

    let docs = yaml_documents("tests/data/karpenter-examples/nodeclaim.yaml");
    let claim: NodeClaim = serde_json::from_value(docs[0].clone()).expect("a NodeClaim");
    let status = claim.status.expect("status");
    assert_eq!(status.provider_id.as_deref(), Some("aws:///us-west-2b/i-0967c60c9e25bc4d1"));
    assert_eq!(status.allocatable["cpu"].0, "3860m");
}
