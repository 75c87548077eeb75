//! Provisioner (v1alpha5) and NodePool (v1beta1) → NodePool (v1), and where their kubelet settings go: v1 keeps
//! them on the EC2NodeClass, so pools that share a class but not their kubelet settings get a class each.

use serde_json::{Map, Value, json};

use super::{NODECLASS_API, NODEPOOL_API, Out, Report, metadata, put, renamed_keys, seconds, unknown_fields};
use crate::names::{
    CAPACITY_TYPE_LABEL, INSTANCE_CATEGORY_LABEL, INSTANCE_FAMILY_LABEL, INSTANCE_GENERATION_LABEL, INSTANCE_TYPE_LABEL,
};

/// A converted pool, with the kubelet settings it carried (to be placed on its EC2NodeClass).
pub struct Pool {
    pub object: Value,
    pub kubelet: Option<Value>,
    /// `Kind/name` of the input, for findings.
    pub source: String,
}

impl Pool {
    fn class_name(&self) -> String {
        self.object["spec"]["template"]["spec"]["nodeClassRef"]["name"].as_str().unwrap_or_default().to_string()
    }
}

const PROVISIONER_FIELDS: [&str; 13] = [
    "labels",
    "annotations",
    "taints",
    "startupTaints",
    "requirements",
    "kubeletConfiguration",
    "providerRef",
    "provider",
    "ttlSecondsAfterEmpty",
    "ttlSecondsUntilExpired",
    "consolidation",
    "limits",
    "weight",
];

/// A Provisioner as a v1 NodePool, and its inline `provider` (if any) as an AWSNodeTemplate to convert.
pub fn from_provisioner(document: &Value, report: &mut Report<'_>) -> Option<(Pool, Option<Value>)> {
    let spec = &document["spec"];
    unknown_fields(spec, "spec", &PROVISIONER_FIELDS, report);
    let name = document["metadata"]["name"].as_str().unwrap_or_default();
    let mut template = json!({"spec": {}});
    if let Some(labels) = renamed_keys(&spec["labels"], "spec.labels", report) {
        put(&mut template, &["metadata", "labels"], labels);
    }
    if let Some(annotations) = renamed_keys(&spec["annotations"], "spec.annotations", report) {
        put(&mut template, &["metadata", "annotations"], annotations);
    }
    for key in ["taints", "startupTaints"] {
        if spec[key].as_array().is_some_and(|t| !t.is_empty()) {
            template["spec"][key] = spec[key].clone();
        }
    }
    template["spec"]["requirements"] = Value::Array(alpha_requirements(&spec["requirements"], report)?);

    // The class: a reference, or the inline provider turned into one of the Provisioner's name.
    let (class, inline) = if spec["provider"].is_object() {
        report.changed(
            "spec.provider",
            format!("v1 has no inline provider: it becomes EC2NodeClass {name}, which the NodePool refers to"),
        );
        let template = json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1",
            "kind": "AWSNodeTemplate",
            "metadata": {"name": name},
            "spec": spec["provider"],
        });
        (name.to_string(), Some(template))
    } else {
        (spec["providerRef"]["name"].as_str().unwrap_or(name).to_string(), None)
    };
    template["spec"]["nodeClassRef"] = node_class_ref(&class);

    let mut disruption = Map::new();
    let after_empty = seconds(&spec["ttlSecondsAfterEmpty"]);
    let consolidation = spec["consolidation"]["enabled"].as_bool() == Some(true);
    if consolidation {
        disruption.insert("consolidationPolicy".into(), "WhenEmptyOrUnderutilized".into());
        disruption.insert("consolidateAfter".into(), "0s".into());
        if after_empty.is_some() {
            report.dropped(
                "spec.ttlSecondsAfterEmpty",
                "v1alpha5 refused it beside consolidation.enabled; consolidation, which also removes empty nodes, is kept",
            );
        }
    } else if let Some(after) = after_empty {
        disruption.insert("consolidationPolicy".into(), "WhenEmpty".into());
        disruption.insert("consolidateAfter".into(), after.into());
    } else {
        disruption.insert("consolidationPolicy".into(), "WhenEmpty".into());
        disruption.insert("consolidateAfter".into(), "Never".into());
        report.changed(
            "spec.consolidation",
            "the Provisioner removed no node for being empty or underutilized; written as consolidateAfter: Never \
             (v1 would otherwise consolidate)",
        );
    }
    template["spec"]["expireAfter"] = match seconds(&spec["ttlSecondsUntilExpired"]) {
        Some(after) => after.into(),
        None => {
            report.changed(
                "spec.ttlSecondsUntilExpired",
                "the Provisioner's nodes never expired; written as expireAfter: Never (v1 would expire them at 720h)",
            );
            "Never".into()
        }
    };

    let mut pool = json!({
        "apiVersion": NODEPOOL_API,
        "kind": "NodePool",
        "metadata": metadata(document),
        "spec": {"template": template, "disruption": disruption},
    });
    if let Some(limits) = spec["limits"]["resources"].as_object() {
        pool["spec"]["limits"] = Value::Object(limits.clone());
    }
    if !spec["weight"].is_null() {
        pool["spec"]["weight"] = spec["weight"].clone();
    }
    let kubelet = kubelet(&spec["kubeletConfiguration"], "spec.kubeletConfiguration", report);
    Some((Pool { object: pool, kubelet, source: report.object.clone() }, inline))
}

/// v1alpha5's requirements, with the defaults its webhook added written out (v1 adds none).
fn alpha_requirements(requirements: &Value, report: &mut Report<'_>) -> Option<Vec<Value>> {
    let mut out = requirements_of(requirements, "spec.requirements", report)?;
    let has = |out: &[Value], key: &str| out.iter().any(|r| r["key"] == key);
    let mut defaulted = Vec::new();
    for (key, values) in [
        ("kubernetes.io/os", vec!["linux"]),
        ("kubernetes.io/arch", vec!["amd64"]),
        (CAPACITY_TYPE_LABEL, vec!["on-demand"]),
    ] {
        if !has(&out, key) {
            out.push(json!({"key": key, "operator": "In", "values": values}));
            defaulted.push(key);
        }
    }
    let shapes = [INSTANCE_TYPE_LABEL, INSTANCE_FAMILY_LABEL, INSTANCE_CATEGORY_LABEL, INSTANCE_GENERATION_LABEL];
    if !shapes.iter().any(|key| has(&out, key)) {
        out.push(json!({"key": INSTANCE_CATEGORY_LABEL, "operator": "In", "values": ["c", "m", "r"]}));
        out.push(json!({"key": INSTANCE_GENERATION_LABEL, "operator": "Gt", "values": ["2"]}));
        defaulted.extend([INSTANCE_CATEGORY_LABEL, INSTANCE_GENERATION_LABEL]);
    }
    if !defaulted.is_empty() {
        report.changed(
            "spec.requirements",
            format!("v1alpha5's webhook defaulted {}; written out, as v1 defaults nothing", defaulted.join(", ")),
        );
    }
    Some(out)
}

/// Requirements without the labels v1 dropped; None when one is not a requirement at all (reported: the pool is
/// not converted, as leaving it out would launch nodes where it forbade them).
fn requirements_of(requirements: &Value, field: &str, report: &mut Report<'_>) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for requirement in requirements.as_array().into_iter().flatten() {
        let key = requirement["key"].as_str().unwrap_or_default();
        let values = &requirement["values"];
        if key.is_empty() || !(values.is_null() || values.as_array().is_some_and(|v| v.iter().all(Value::is_string))) {
            report.not_converted(
                &format!("{field}[{key}]"),
                format!(
                    "not a requirement (values {values} is not a list of strings: a template placeholder left in?)"
                ),
            );
            return None;
        }
        match key {
            "karpenter.k8s.aws/instance-pods" => {
                report
                    .dropped(&format!("{field}[{key}]"), "v1 has no instance-pods label; the requirement is left out");
            }
            super::PROVISIONER_NAME_LABEL => {
                report.dropped(&format!("{field}[{key}]"), super::PROVISIONER_NAME_GONE);
            }
            _ => out.push(requirement.clone()),
        }
    }
    Some(out)
}

fn node_class_ref(name: &str) -> Value {
    json!({"group": NODECLASS_API.split('/').next().unwrap_or_default(), "kind": "EC2NodeClass", "name": name})
}

/// Kubelet settings as v1 takes them (on the EC2NodeClass), without `containerRuntime`.
fn kubelet(kubelet: &Value, field: &str, report: &mut Report<'_>) -> Option<Value> {
    let mut kubelet = kubelet.as_object()?.clone();
    if kubelet.remove("containerRuntime").is_some() {
        report.dropped(&format!("{field}.containerRuntime"), "EKS runs containerd only; v1 has no such setting");
    }
    (!kubelet.is_empty()).then_some(Value::Object(kubelet))
}

const V1BETA1_FIELDS: [&str; 4] = ["template", "disruption", "limits", "weight"];

/// A v1beta1 NodePool as v1.
pub fn from_v1beta1(document: &Value, report: &mut Report<'_>) -> Option<Pool> {
    let spec = &document["spec"];
    unknown_fields(spec, "spec", &V1BETA1_FIELDS, report);
    let mut pool = json!({"apiVersion": NODEPOOL_API, "kind": "NodePool", "metadata": metadata(document), "spec": {}});
    let mut template = spec["template"].clone();
    if !template.is_object() {
        template = json!({"spec": {}});
    }
    if let Some(labels) = renamed_keys(&template["metadata"]["labels"], "spec.template.metadata.labels", report) {
        template["metadata"]["labels"] = labels;
    }
    if let Some(annotations) =
        renamed_keys(&template["metadata"]["annotations"], "spec.template.metadata.annotations", report)
    {
        template["metadata"]["annotations"] = annotations;
    }
    let template_spec = template["spec"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut out_spec = Map::new();
    for (key, value) in template_spec {
        match key.as_str() {
            "taints" | "startupTaints" => {
                out_spec.insert(key, value);
            }
            "requirements" => {
                let requirements = requirements_of(&value, "spec.template.spec.requirements", report)?;
                out_spec.insert(key, Value::Array(requirements));
            }
            "nodeClassRef" => {
                let name = value["name"].as_str().unwrap_or_default();
                out_spec.insert(key, node_class_ref(name));
            }
            "kubelet" => {} // placed on the class below
            "resources" => report.dropped(
                "spec.template.spec.resources",
                "v1 NodePools have no resources; what a node holds comes from its instance type",
            ),
            other => report.dropped(&format!("spec.template.spec.{other}"), "not a v1beta1 field; left out"),
        }
    }
    out_spec.entry("requirements").or_insert_with(|| json!([]));
    let disruption = &spec["disruption"];
    let expire_after = disruption["expireAfter"].as_str().unwrap_or("720h");
    out_spec.insert("expireAfter".into(), expire_after.into());
    template["spec"] = Value::Object(out_spec);
    pool["spec"]["template"] = template;

    let mut out_disruption = Map::new();
    match disruption["consolidationPolicy"].as_str() {
        Some("WhenEmpty") => {
            out_disruption.insert("consolidationPolicy".into(), "WhenEmpty".into());
            let after = disruption["consolidateAfter"].as_str().unwrap_or("0s");
            out_disruption.insert("consolidateAfter".into(), after.into());
        }
        _ => {
            out_disruption.insert("consolidationPolicy".into(), "WhenEmptyOrUnderutilized".into());
            out_disruption.insert("consolidateAfter".into(), "0s".into());
        }
    }
    if let Some(budgets) = disruption["budgets"].as_array() {
        out_disruption.insert("budgets".into(), Value::Array(budgets.clone()));
    }
    pool["spec"]["disruption"] = Value::Object(out_disruption);
    for key in ["limits", "weight"] {
        if !spec[key].is_null() {
            pool["spec"][key] = spec[key].clone();
        }
    }
    let kubelet = kubelet(&spec["template"]["spec"]["kubelet"], "spec.template.spec.kubelet", report);
    Some(Pool { object: pool, kubelet, source: report.object.clone() })
}

/// Puts each pool's kubelet settings on its EC2NodeClass. A class whose pools disagree is copied once per
/// distinct setting (`<class>-<pool>`), the pool pointed at its copy, as Karpenter's v1 guide says to do; a class
/// not among the input is reported, its settings given in the finding.
pub fn place_kubelets(pools: &mut [Pool], mut classes: Vec<Value>, out: &mut Out) -> Vec<Value> {
    for pool in pools.iter_mut() {
        let Some(kubelet) = pool.kubelet.clone() else { continue };
        let class_name = pool.class_name();
        let pool_name = pool.object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut report = out.on(&pool.source);
        let Some(index) = classes.iter().position(|c| c["metadata"]["name"] == class_name.as_str()) else {
            report.not_converted(
                "kubelet",
                format!(
                    "v1 keeps kubelet settings on the EC2NodeClass; {class_name} is not among the input: add \
                     spec.kubelet: {kubelet} to it"
                ),
            );
            continue;
        };
        let current = &classes[index]["spec"]["kubelet"];
        if current.is_null() {
            classes[index]["spec"]["kubelet"] = kubelet;
            report.changed("kubelet", format!("moved to EC2NodeClass {class_name}, where v1 keeps it"));
        } else if *current != kubelet {
            let mut copy = classes[index].clone();
            let copy_name = format!("{class_name}-{pool_name}");
            copy["metadata"]["name"] = copy_name.clone().into();
            copy["spec"]["kubelet"] = kubelet;
            pool.object["spec"]["template"]["spec"]["nodeClassRef"]["name"] = copy_name.clone().into();
            report.changed(
                "kubelet",
                format!(
                    "EC2NodeClass {class_name} already carries another pool's kubelet settings: this pool gets its \
                     own copy, {copy_name}"
                ),
            );
            classes.push(copy);
        }
    }
    classes
}
