//! AWSNodeTemplate (v1alpha1, or a Provisioner's inline provider) and EC2NodeClass (v1beta1) → EC2NodeClass (v1):
//! selector maps become terms, the AMI family becomes an alias where no AMI is selected, and what v1 defaults
//! differently (the IMDS hop limit) is written as it was.

use serde_json::{Map, Value, json};

use super::{MigrateError, NODECLASS_API, Options, Report, metadata, unknown_fields};

/// Families v1 selects AMIs for by alias.
const ALIAS_FAMILIES: [&str; 5] = ["AL2", "AL2023", "Bottlerocket", "Windows2019", "Windows2022"];

/// Tags v1 refuses on an EC2NodeClass: the controller sets them.
const RESTRICTED_TAGS: [&str; 4] =
    ["eks:eks-cluster-name", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim", "karpenter.k8s.aws/ec2nodeclass"];

/// What the old versions defaulted the instance metadata options to (v1 lowers the hop limit to 1).
fn old_metadata_defaults() -> Value {
    json!({"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 2, "httpTokens": "required"})
}

const NODE_TEMPLATE_FIELDS: [&str; 14] = [
    "subnetSelector",
    "securityGroupSelector",
    "amiSelector",
    "amiFamily",
    "instanceProfile",
    "userData",
    "tags",
    "metadataOptions",
    "blockDeviceMappings",
    "detailedMonitoring",
    "context",
    "launchTemplate",
    "launchTemplateName",
    "apiVersion",
];

/// An AWSNodeTemplate as a v1 EC2NodeClass; none when it cannot be one (reported).
pub fn from_node_template(
    document: &Value,
    report: &mut Report<'_>,
    options: &Options,
) -> Result<Option<Value>, MigrateError> {
    let spec = &document["spec"];
    unknown_fields(spec, "spec", &NODE_TEMPLATE_FIELDS, report);
    for key in ["launchTemplate", "launchTemplateName"] {
        if !spec[key].is_null() {
            report.dropped(
                &format!("spec.{key}"),
                "v1 launches only from launch templates it makes: move what the template set into the EC2NodeClass \
                 (userData, blockDeviceMappings, metadataOptions, securityGroupSelectorTerms)",
            );
        }
    }
    let mut class = Map::new();
    class.insert("subnetSelectorTerms".into(), selector_terms(&spec["subnetSelector"], "spec.subnetSelector", report));
    class.insert(
        "securityGroupSelectorTerms".into(),
        selector_terms(&spec["securityGroupSelector"], "spec.securityGroupSelector", report),
    );
    for (key, from) in
        [("subnetSelectorTerms", "subnetSelector"), ("securityGroupSelectorTerms", "securityGroupSelector")]
    {
        if class[key].as_array().is_none_or(Vec::is_empty) {
            let by = match spec["launchTemplate"].as_str().or_else(|| spec["launchTemplateName"].as_str()) {
                Some(template) => format!("the launch template {template} chose them"),
                None => "it has none".to_string(),
            };
            report.not_converted(
                &format!("spec.{from}"),
                format!("v1 needs {key} and {by}: add spec.{from} (ids or tags) and convert again"),
            );
            return Ok(None);
        }
    }
    let family = spec["amiFamily"].as_str().unwrap_or("AL2");
    let ami_terms = ami_terms(&spec["amiSelector"], report);
    let Some((family, terms)) = ami_selection(family, ami_terms, report) else { return Ok(None) };
    if let Some(family) = family {
        class.insert("amiFamily".into(), family.into());
    }
    class.insert("amiSelectorTerms".into(), Value::Array(terms));
    if let Some((key, why)) = malformed_id(&class) {
        report.not_converted(&format!("spec.{key}"), why);
        return Ok(None);
    }
    match (spec["instanceProfile"].as_str(), &options.role, &options.instance_profile) {
        (Some(profile), _, _) => {
            class.insert("instanceProfile".into(), profile.into());
        }
        (None, Some(role), _) => {
            class.insert("role".into(), role.clone().into());
        }
        (None, None, Some(profile)) => {
            class.insert("instanceProfile".into(), profile.clone().into());
        }
        (None, None, None) => return Err(MigrateError::NoNodeIdentity { object: report.object.clone() }),
    }
    for key in ["userData", "blockDeviceMappings", "detailedMonitoring", "context"] {
        if !spec[key].is_null() {
            class.insert(key.into(), spec[key].clone());
        }
    }
    if let Some(tags) = allowed_tags(&spec["tags"], report) {
        class.insert("tags".into(), tags);
    }
    class.insert("metadataOptions".into(), metadata_options(&spec["metadataOptions"], report));
    Ok(Some(
        json!({"apiVersion": NODECLASS_API, "kind": "EC2NodeClass", "metadata": metadata(document), "spec": class}),
    ))
}

/// A v1alpha1 selector map as terms: `aws-ids`/`aws::ids` give one id term each (ids select alone: other keys
/// beside them are reported and left out); every other key is a tag, and a comma-separated value (which meant
/// any of them) gives one term per value.
fn selector_terms(selector: &Value, field: &str, report: &mut Report<'_>) -> Value {
    let Some(selector) = selector.as_object() else { return json!([]) };
    if let Some(ids) = id_terms(selector, field, report) {
        return Value::Array(ids);
    }
    let tags: Vec<(String, Vec<String>)> =
        selector.iter().map(|(k, v)| (k.clone(), tag_values(k, v, field, report))).collect();
    Value::Array(cross_product(&tags).into_iter().map(|tags| json!({"tags": tags})).collect())
}

/// The selector's `aws-ids` (or `aws::ids`) as one id term each, where it has them; the other keys beside them are
/// reported and left out (v1 selects by id alone).
fn id_terms(selector: &Map<String, Value>, field: &str, report: &mut Report<'_>) -> Option<Vec<Value>> {
    let ids = selector.get("aws-ids").or_else(|| selector.get("aws::ids")).and_then(Value::as_str)?;
    let others: Vec<&String> = selector.keys().filter(|k| !["aws-ids", "aws::ids"].contains(&k.as_str())).collect();
    if !others.is_empty() {
        report.dropped(field, format!("v1 selects by id alone: {others:?} beside the ids are left out"));
    }
    Some(split(ids).map(|id| json!({"id": id})).collect())
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A selector's tag value: "" (any value, in v1alpha1) is `*` in v1; a comma-separated list, each of its values.
fn tag_values(key: &str, value: &Value, field: &str, report: &mut Report<'_>) -> Vec<String> {
    let value = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
    if value.is_empty() {
        report.changed(&format!("{field}.{key}"), "\"\" matched any value; v1 writes that as \"*\"");
        return vec!["*".into()];
    }
    if value.contains(',') {
        report.changed(
            &format!("{field}.{key}"),
            "a comma-separated value matched any of its values; v1 reads commas literally, so each value is a term \
             of its own",
        );
        return split(&value).map(str::to_string).collect();
    }
    vec![value]
}

/// Every combination of one value per key.
fn cross_product(keys: &[(String, Vec<String>)]) -> Vec<Map<String, Value>> {
    let mut combinations = vec![Map::new()];
    for (key, values) in keys {
        combinations = combinations
            .into_iter()
            .flat_map(|partial| {
                values.iter().map(move |value| {
                    let mut next = partial.clone();
                    next.insert(key.clone(), value.clone().into());
                    next
                })
            })
            .collect();
    }
    combinations.retain(|c| !c.is_empty());
    combinations
}

/// v1alpha1's AMI selector as v1 terms: ids alone; names with owners (each pair); the rest tags.
fn ami_terms(selector: &Value, report: &mut Report<'_>) -> Vec<Value> {
    let Some(selector) = selector.as_object() else { return Vec::new() };
    let field = "spec.amiSelector";
    if let Some(ids) = id_terms(selector, field, report) {
        return ids;
    }
    let names: Vec<String> = selector
        .get("aws::name")
        .and_then(Value::as_str)
        .map(|n| split(n).map(str::to_string).collect())
        .unwrap_or_default();
    let owners: Vec<String> = selector
        .get("aws::owners")
        .and_then(Value::as_str)
        .map(|o| split(o).map(str::to_string).collect())
        .unwrap_or_default();
    let tags: Vec<(String, Vec<String>)> = selector
        .iter()
        .filter(|(k, _)| !["aws::name", "aws::owners"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), tag_values(k, v, field, report)))
        .collect();
    let mut bases: Vec<Map<String, Value>> = Vec::new();
    for name in if names.is_empty() { vec![None] } else { names.iter().map(Some).collect() } {
        for owner in if owners.is_empty() { vec![None] } else { owners.iter().map(Some).collect() } {
            let mut term = Map::new();
            if let Some(name) = name {
                term.insert("name".into(), name.clone().into());
            }
            if let Some(owner) = owner {
                term.insert("owner".into(), owner.clone().into());
            }
            bases.push(term);
        }
    }
    let tag_sets = cross_product(&tags);
    let mut terms = Vec::new();
    for base in bases {
        if tag_sets.is_empty() {
            if !base.is_empty() {
                terms.push(Value::Object(base));
            }
            continue;
        }
        for tags in &tag_sets {
            let mut term = base.clone();
            term.insert("tags".into(), Value::Object(tags.clone()));
            terms.push(Value::Object(term));
        }
    }
    terms
}

/// The family to write and the AMI terms: where no AMI is selected, the family's alias (`al2023@latest`) alone.
/// None for a class v1 cannot select AMIs for (Ubuntu without AMIs), reported.
fn ami_selection(family: &str, terms: Vec<Value>, report: &mut Report<'_>) -> Option<(Option<String>, Vec<Value>)> {
    match family {
        "Ubuntu" if terms.is_empty() => {
            report.not_converted(
                "spec.amiFamily",
                "v1 has no Ubuntu AMI family and selects no Ubuntu AMI by itself: give the class amiSelectorTerms \
                 for your Ubuntu AMIs (with amiFamily: AL2 for the user data) and convert again",
            );
            None
        }
        "Ubuntu" => {
            report.changed("spec.amiFamily", "v1 has no Ubuntu family: the AMIs are kept, with AL2's user data");
            Some((Some("AL2".into()), terms))
        }
        family if terms.is_empty() && ALIAS_FAMILIES.contains(&family) => {
            Some((None, vec![json!({"alias": format!("{}@latest", family.to_lowercase())})]))
        }
        "Custom" if terms.is_empty() => {
            report.not_converted("spec.amiSelector", "amiFamily Custom needs amiSelectorTerms naming its AMIs");
            None
        }
        "Custom" => {
            report.changed(
                "spec.amiFamily",
                "Custom AMIs must register their kubelet with the karpenter.sh/unregistered:NoExecute taint in v1: \
                 check the userData",
            );
            Some((Some("Custom".into()), terms))
        }
        family => Some((Some(family.to_string()), terms)),
    }
}

/// The first id of `terms` that is not an id of its kind (`ami-…`, `subnet-…`, `sg-…`): v1 refuses it.
fn malformed_id(class: &Map<String, Value>) -> Option<(String, String)> {
    [("amiSelectorTerms", "ami-"), ("subnetSelectorTerms", "subnet-"), ("securityGroupSelectorTerms", "sg-")]
        .into_iter()
        .find_map(|(key, prefix)| {
            let ids = class.get(key)?.as_array()?.iter().filter_map(|t| t["id"].as_str());
            let bad = ids.into_iter().find(|id| {
                id.strip_prefix(prefix).is_none_or(|rest| {
                    rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
                })
            })?;
            Some((key.to_string(), format!("{bad} is not an id of the kind {key} selects ({prefix}…): v1 refuses it")))
        })
}

/// Terms whose `id` stands beside other fields keep the id alone (v1 refuses the mix; the others are reported).
fn id_alone(terms: &[Value], field: &str, report: &mut Report<'_>) -> Vec<Value> {
    terms
        .iter()
        .map(|term| match (term.get("id"), term.as_object().map(Map::len)) {
            (Some(id), Some(fields)) if fields > 1 => {
                let others: Vec<&String> =
                    term.as_object().into_iter().flatten().map(|(k, _)| k).filter(|k| *k != "id").collect();
                report.dropped(field, format!("v1 selects by id alone: {others:?} beside id {id} are left out"));
                json!({"id": id})
            }
            _ => term.clone(),
        })
        .collect()
}

/// The tags, without those v1 reserves for the controller (reported).
fn allowed_tags(tags: &Value, report: &mut Report<'_>) -> Option<Value> {
    let tags = tags.as_object()?;
    let mut out = Map::new();
    for (key, value) in tags {
        if RESTRICTED_TAGS.contains(&key.as_str()) || key.starts_with("kubernetes.io/cluster") {
            report.dropped(&format!("spec.tags.{key}"), "v1 sets this tag itself and refuses it in a class");
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The metadata options as they were: written out where absent, since v1's default hop limit is 1, not 2.
fn metadata_options(options: &Value, report: &mut Report<'_>) -> Value {
    match options.as_object() {
        Some(options) => {
            let mut merged = old_metadata_defaults();
            for (key, value) in options {
                merged[key] = value.clone();
            }
            merged
        }
        None => {
            report.changed(
                "spec.metadataOptions",
                "the old default IMDS hop limit 2 is written out (v1's default is 1, which keeps IMDS from pods \
                 that are not on the host network: lower it if nothing needs it)",
            );
            old_metadata_defaults()
        }
    }
}

const V1BETA1_FIELDS: [&str; 15] = [
    "subnetSelectorTerms",
    "securityGroupSelectorTerms",
    "amiSelectorTerms",
    "amiFamily",
    "role",
    "instanceProfile",
    "userData",
    "tags",
    "metadataOptions",
    "blockDeviceMappings",
    "instanceStorePolicy",
    "detailedMonitoring",
    "associatePublicIPAddress",
    "context",
    "kubelet",
];

/// A v1beta1 EC2NodeClass as v1; none when it cannot be one (reported).
pub fn from_v1beta1(document: &Value, report: &mut Report<'_>) -> Option<Value> {
    let spec = &document["spec"];
    unknown_fields(spec, "spec", &V1BETA1_FIELDS, report);
    let mut class = spec.as_object().cloned().unwrap_or_default();
    class.retain(|key, _| V1BETA1_FIELDS.contains(&key.as_str()));
    let family = spec["amiFamily"].as_str().unwrap_or("AL2").to_string();
    let terms = spec["amiSelectorTerms"].as_array().cloned().unwrap_or_default();
    let (family, terms) = ami_selection(&family, terms, report)?;
    class.remove("amiFamily");
    if let Some(family) = family {
        class.insert("amiFamily".into(), family.into());
    }
    class.insert("amiSelectorTerms".into(), Value::Array(terms));
    for key in ["amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms"] {
        if let Some(terms) = class.get(key).and_then(Value::as_array) {
            let terms = id_alone(terms, &format!("spec.{key}"), report);
            class.insert(key.into(), Value::Array(terms));
        }
    }
    for key in ["subnetSelectorTerms", "securityGroupSelectorTerms"] {
        let commas = spec[key].as_array().into_iter().flatten().any(|term| {
            term["tags"].as_object().is_some_and(|t| t.values().any(|v| v.as_str().is_some_and(|v| v.contains(','))))
        });
        if commas {
            report.changed(
                &format!("spec.{key}"),
                "a tag value holds a comma, which v1 reads literally (since v0.33): give each value a term of its own",
            );
        }
    }
    if let Some((key, why)) = malformed_id(&class) {
        report.not_converted(&format!("spec.{key}"), why);
        return None;
    }
    match allowed_tags(&spec["tags"], report) {
        Some(tags) => {
            class.insert("tags".into(), tags);
        }
        None => {
            class.remove("tags");
        }
    }
    class.insert("metadataOptions".into(), metadata_options(&spec["metadataOptions"], report));
    Some(json!({"apiVersion": NODECLASS_API, "kind": "EC2NodeClass", "metadata": metadata(document), "spec": class}))
}
