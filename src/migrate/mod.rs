//! Old Karpenter manifests → Karpenter v1, field by field as Karpenter's upgrade guides map them (v1alpha5
//! Provisioner and v1alpha1 AWSNodeTemplate through v1beta1; v1beta1 NodePool and EC2NodeClass). Pure: documents as
//! JSON in, v1 documents and findings out. Every field that has no v1 meaning, and every behaviour a default would
//! change, is a finding: nothing is dropped without a word.

mod classes;
mod pools;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// What the conversion cannot know from the manifests.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The IAM role nodes run as, for node templates that relied on Karpenter's global default instance profile.
    pub role: Option<String>,
    /// Or an instance profile for them.
    pub instance_profile: Option<String>,
}

/// The v1 objects, and what the conversion changed, dropped or could not do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Migration {
    pub objects: Vec<Value>,
    pub findings: Vec<Finding>,
}

/// One thing a person must know about the conversion of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `Kind/name` of the input object.
    pub object: String,
    /// The input field (`spec.ttlSecondsAfterEmpty`), or the object itself.
    pub field: String,
    pub kind: FindingKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// No v1 meaning: left out.
    Dropped,
    /// Written differently than it was, or written out where v1's default would change behaviour.
    Changed,
    /// Not converted: the object needs a person's decision.
    NotConverted,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "{object} has no instance profile and relied on Karpenter's global default one, which v1 does not have: \
         pass --role (the IAM role its nodes run as) or --instance-profile"
    )]
    NoNodeIdentity { object: String },
}

/// The v1 groups and versions.
pub const NODEPOOL_API: &str = "karpenter.sh/v1";
pub const NODECLASS_API: &str = "karpenter.k8s.aws/v1";

/// Converts every Karpenter object of `documents`; other objects pass through unchanged.
pub fn migrate(documents: &[Value], options: &Options) -> Result<Migration, MigrateError> {
    let mut out = Out::default();
    let mut classes: Vec<Value> = Vec::new();
    let mut pools: Vec<pools::Pool> = Vec::new();
    let mut others = Vec::new();
    for document in documents {
        let api = document["apiVersion"].as_str().unwrap_or_default();
        let kind = document["kind"].as_str().unwrap_or_default();
        let name = document["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let object = format!("{kind}/{name}");
        match (api, kind) {
            ("karpenter.sh/v1alpha5", "Provisioner") => {
                let Some((pool, inline_class)) = pools::from_provisioner(document, &mut out.on(&object)) else {
                    continue;
                };
                if let Some(provider) = inline_class {
                    classes.extend(classes::from_node_template(&provider, &mut out.on(&object), options)?);
                }
                pools.push(pool);
            }
            ("karpenter.k8s.aws/v1alpha1", "AWSNodeTemplate") => {
                classes.extend(classes::from_node_template(document, &mut out.on(&object), options)?);
            }
            ("karpenter.sh/v1beta1", "NodePool") => pools.extend(pools::from_v1beta1(document, &mut out.on(&object))),
            ("karpenter.k8s.aws/v1beta1", "EC2NodeClass") => {
                classes.extend(classes::from_v1beta1(document, &mut out.on(&object)));
            }
            ("karpenter.sh/v1beta1" | "karpenter.sh/v1alpha5", "NodeClaim" | "Machine") => {
                out.on(&object).not_converted(
                    "",
                    "the controller makes these for its NodePools; they are not written by hand, so none is converted \
                 (a running Karpenter's are taken over as they are)",
                )
            }
            _ => others.push(document.clone()),
        }
    }
    let classes = pools::place_kubelets(&mut pools, classes, &mut out);
    out.migration.objects.extend(classes);
    out.migration.objects.extend(pools.into_iter().map(|p| p.object));
    out.migration.objects.extend(others);
    Ok(out.migration)
}

/// Findings being gathered.
#[derive(Default)]
struct Out {
    migration: Migration,
}

impl Out {
    fn on<'o>(&'o mut self, object: &str) -> Report<'o> {
        Report { findings: &mut self.migration.findings, object: object.to_string() }
    }
}

/// The findings of one object.
struct Report<'o> {
    findings: &'o mut Vec<Finding>,
    object: String,
}

impl Report<'_> {
    fn say(&mut self, field: &str, kind: FindingKind, message: impl Into<String>) {
        self.findings.push(Finding {
            object: self.object.clone(),
            field: field.to_string(),
            kind,
            message: message.into(),
        });
    }

    fn dropped(&mut self, field: &str, message: impl Into<String>) {
        self.say(field, FindingKind::Dropped, message);
    }

    fn changed(&mut self, field: &str, message: impl Into<String>) {
        self.say(field, FindingKind::Changed, message);
    }

    fn not_converted(&mut self, field: &str, message: impl Into<String>) {
        self.say(field, FindingKind::NotConverted, message);
    }
}

/// The object's metadata as v1 keeps it: name, labels and annotations, without what only a controller or kubectl
/// writes (the last applied configuration, Karpenter's hashes).
fn metadata(document: &Value) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), document["metadata"]["name"].clone());
    if let Some(labels) = document["metadata"]["labels"].as_object().filter(|l| !l.is_empty()) {
        metadata.insert("labels".into(), Value::Object(labels.clone()));
    }
    let annotations: Map<String, Value> = document["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !is_written_by_tools(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    Value::Object(metadata)
}

fn is_written_by_tools(annotation: &str) -> bool {
    let karpenter = annotation.starts_with("karpenter.sh/") || annotation.starts_with("karpenter.k8s.aws/");
    annotation == "kubectl.kubernetes.io/last-applied-configuration"
        || annotation.starts_with("compatibility.karpenter.")
        || (karpenter && (annotation.ends_with("-hash") || annotation.ends_with("-hash-version")))
}

/// Reports every field of `spec` not in `known` as dropped (with no v1 meaning).
fn unknown_fields(spec: &Value, prefix: &str, known: &[&str], report: &mut Report<'_>) {
    for key in spec.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains(&key.as_str()) {
            report.dropped(&format!("{prefix}.{key}"), "not a field Karpenter ever defined here; left out");
        }
    }
}

/// Seconds as a Go duration (`2m`, `720h`).
fn seconds(value: &Value) -> Option<String> {
    let seconds = value.as_u64().or_else(|| value.as_str()?.parse().ok())?;
    Some(crate::duration::format(std::time::Duration::from_secs(seconds)))
}

/// Inserts `value` at `path` (object keys), making the objects on the way.
fn put(target: &mut Value, path: &[&str], value: Value) {
    let mut at = target;
    for key in &path[..path.len() - 1] {
        if !at[*key].is_object() {
            at[*key] = json!({});
        }
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
}

/// v1alpha5's pool label. v1 sets `karpenter.sh/nodepool` itself and refuses `karpenter.sh/` keys in a NodePool.
const PROVISIONER_NAME_LABEL: &str = "karpenter.sh/provisioner-name";
const PROVISIONER_NAME_GONE: &str = "v1 refuses karpenter.sh/ keys in a NodePool and labels each node with \
                                     karpenter.sh/nodepool itself: pods that selected karpenter.sh/provisioner-name \
                                     select karpenter.sh/nodepool now";

/// The labels and annotations v1 renamed, in a map of either: (old, new, what changes with the name).
const RENAMED: [(&str, &str, &str); 2] = [
    (
        "karpenter.sh/do-not-consolidate",
        crate::names::DO_NOT_DISRUPT_ANNOTATION,
        ", which holds the node from drift as well as consolidation",
    ),
    ("karpenter.sh/do-not-evict", crate::names::DO_NOT_DISRUPT_ANNOTATION, ""),
];

/// `map` (labels or annotations) with the keys v1 renamed under their new names.
fn renamed_keys(map: &Value, field: &str, report: &mut Report<'_>) -> Option<Value> {
    let map = map.as_object()?;
    let mut out = Map::new();
    for (key, value) in map {
        if key == PROVISIONER_NAME_LABEL {
            report.dropped(&format!("{field}.{key}"), PROVISIONER_NAME_GONE);
            continue;
        }
        match RENAMED.iter().find(|(old, _, _)| old == key) {
            Some((_, new, note)) => {
                report.changed(&format!("{field}.{key}"), format!("v1 names it {new}{note}"));
                out.insert((*new).to_string(), value.clone());
            }
            None => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests;
