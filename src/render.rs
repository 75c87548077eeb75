//! The NodePool and EC2NodeClass templates of `nodeclasses/` (handlebars), filled in for one cluster.

use handlebars::{Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason};
use serde::Serialize;

/// (file name, template), embedded so the binary renders without the source tree.
const TEMPLATES: [(&str, &str); 5] = [
    ("ec2nodeclass.yaml", include_str!("../nodeclasses/ec2nodeclass.yaml.hbs")),
    ("nodepool-default.yaml", include_str!("../nodeclasses/nodepool-default.yaml.hbs")),
    ("nodepool-on-demand.yaml", include_str!("../nodeclasses/nodepool-on-demand.yaml.hbs")),
    ("nodepool-arm64.yaml", include_str!("../nodeclasses/nodepool-arm64.yaml.hbs")),
    ("nodepool-gpu.yaml", include_str!("../nodeclasses/nodepool-gpu.yaml.hbs")),
];

/// What the rendered pools are for: staging adds burstable (t) types to the default pool and disrupts freely;
/// production leaves burstable types out and disrupts at most 10% of a pool's nodes at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Staging,
    #[default]
    Production,
}

/// What the templates need to know.
#[derive(Debug, Clone, Serialize)]
pub struct NodeClassValues {
    pub cluster: String,
    /// The EC2NodeClass's name (the NodePools refer to it as `nodeclass`).
    pub name: String,
    pub nodeclass: String,
    pub node_role: String,
    pub discovery_value: String,
    pub root_volume_gib: u32,
    pub cpu_limit: u32,
    pub on_demand_weight: i32,
    /// Above 0 (the arm64 and GPU pools'): unconstrained pods go to the default pool first.
    pub default_weight: i32,
    pub gpu_limit: u32,
    pub profile: Profile,
    /// Set for the templates' `{{#if staging}}`.
    pub staging: bool,
    /// The EC2NodeClass turns VPC CNI prefix delegation on (`spec.prefixDelegation: Enabled`): nodes get the
    /// prefix-delegated max pods.
    pub prefix_delegation: bool,
}

impl NodeClassValues {
    pub fn for_cluster(cluster: &str, node_role: &str, discovery_value: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            name: "default".into(),
            nodeclass: "default".into(),
            node_role: node_role.to_string(),
            discovery_value: discovery_value.to_string(),
            root_volume_gib: 20,
            cpu_limit: 1000,
            on_demand_weight: 10,
            default_weight: 5,
            gpu_limit: 16,
            profile: Profile::Production,
            staging: false,
            prefix_delegation: false,
        }
    }

    pub fn with_profile(self, profile: Profile) -> Self {
        Self { profile, staging: profile == Profile::Staging, ..self }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rendering nodeclasses/{template}.hbs: {source}")]
pub struct RenderError {
    template: &'static str,
    source: Box<handlebars::RenderError>,
}

/// `{{yaml x}}`: the value as a YAML scalar that means exactly it (a JSON string is valid YAML), so names with
/// colons, quotes or leading digits cannot change the document's structure.
pub(crate) fn yaml_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("yaml", 0))?.value();
    let text = serde_json::to_string(value).map_err(|e| RenderErrorReason::Other(e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

fn registry() -> Handlebars<'static> {
    let mut handlebars = Handlebars::new();
    // A misspelt variable is an error, not an empty string in a manifest.
    handlebars.set_strict_mode(true);
    handlebars.register_escape_fn(handlebars::no_escape);
    handlebars.register_helper("yaml", Box::new(yaml_helper));
    handlebars
}

/// Every template rendered: (file name, YAML).
pub fn render_nodeclasses(values: &NodeClassValues) -> Result<Vec<(&'static str, String)>, RenderError> {
    let handlebars = registry();
    TEMPLATES
        .iter()
        .map(|(file, template)| {
            handlebars
                .render_template(template, values)
                .map(|yaml| (*file, yaml))
                .map_err(|source| RenderError { template: file, source: Box::new(source) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn demo() -> NodeClassValues {
        NodeClassValues::for_cluster("demo", "nodesmith-node-demo", "demo")
    }

    /// Render-and-compare: the output for the demo cluster is exactly the reviewed files under tests/data/render.
    #[test]
    fn renders_the_reviewed_manifests() {
        let golden = [
            ("ec2nodeclass.yaml", include_str!("../tests/data/render/ec2nodeclass.yaml")),
            ("nodepool-default.yaml", include_str!("../tests/data/render/nodepool-default.yaml")),
            ("nodepool-on-demand.yaml", include_str!("../tests/data/render/nodepool-on-demand.yaml")),
            ("nodepool-arm64.yaml", include_str!("../tests/data/render/nodepool-arm64.yaml")),
            ("nodepool-gpu.yaml", include_str!("../tests/data/render/nodepool-gpu.yaml")),
        ];
        assert_eq!(golden.len(), TEMPLATES.len(), "every template has a reviewed rendering");
        let rendered = render_nodeclasses(&demo()).expect("renders");
        for ((file, yaml), (golden_file, expected)) in rendered.iter().zip(golden) {
            assert_eq!(*file, golden_file);
            assert_eq!(yaml, expected, "{file} differs from tests/data/render/{file}");
        }
    }

    #[test]
    fn every_manifest_parses_and_says_what_it_is() {
        for (file, yaml) in render_nodeclasses(&demo()).expect("renders") {
            let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
            let kind = doc["kind"].as_str().unwrap_or_default();
            assert!(kind == "EC2NodeClass" || kind == "NodePool", "{file}: {kind}");
            if kind == "NodePool" {
                assert_eq!(doc["spec"]["template"]["spec"]["nodeClassRef"]["name"], "default");
                let spec: crate::apis::nodepool::NodePoolSpec =
                    serde_json::from_value(doc["spec"].clone()).expect("a NodePool spec");
                assert!(!spec.template.spec.requirements.is_empty());
            } else {
                assert_eq!(doc["spec"]["role"], "nodesmith-node-demo");
                assert_eq!(doc["spec"]["metadataOptions"]["httpTokens"], "required");
                assert_eq!(doc["spec"]["blockDeviceMappings"][0]["ebs"]["encrypted"], true);
            }
        }
    }

    fn parsed(values: &NodeClassValues) -> std::collections::BTreeMap<&'static str, Value> {
        render_nodeclasses(values)
            .expect("renders")
            .into_iter()
            .map(|(file, yaml)| (file, serde_yaml_ng::from_str(&yaml).expect("YAML")))
            .collect()
    }

    fn requirement<'a>(pool: &'a Value, key: &str) -> &'a Value {
        let requirements = pool["spec"]["template"]["spec"]["requirements"].as_array().expect("requirements");
        &requirements.iter().find(|r| r["key"] == key).unwrap_or_else(|| panic!("no requirement {key}"))["values"]
    }

    #[test]
    fn the_staging_profile_adds_burstable_types_and_spot_gpus_and_drops_the_budget() {
        let production = parsed(&demo());
        let staging = parsed(&demo().with_profile(Profile::Staging));
        let category = "karpenter.k8s.aws/instance-category";
        assert_eq!(requirement(&production["nodepool-default.yaml"], category), &serde_json::json!(["c", "m", "r"]));
        assert_eq!(requirement(&staging["nodepool-default.yaml"], category), &serde_json::json!(["c", "m", "r", "t"]));
        let capacity = "karpenter.sh/capacity-type";
        assert_eq!(requirement(&production["nodepool-gpu.yaml"], capacity), &serde_json::json!(["on-demand"]));
        assert_eq!(requirement(&staging["nodepool-gpu.yaml"], capacity), &serde_json::json!(["spot", "on-demand"]));
        assert_eq!(production["nodepool-default.yaml"]["spec"]["disruption"]["budgets"][0]["nodes"], "10%");
        assert!(staging["nodepool-default.yaml"]["spec"]["disruption"].get("budgets").is_none());
    }

    #[test]
    fn the_pools_cover_arm64_and_tainted_gpus() {
        let pools = parsed(&demo());
        assert_eq!(requirement(&pools["nodepool-arm64.yaml"], "kubernetes.io/arch"), &serde_json::json!(["arm64"]));
        let gpu = &pools["nodepool-gpu.yaml"];
        assert_eq!(gpu["spec"]["template"]["spec"]["taints"][0]["key"], "nvidia.com/gpu");
        assert_eq!(gpu["spec"]["template"]["spec"]["taints"][0]["effect"], "NoSchedule");
        assert_eq!(gpu["spec"]["limits"]["nvidia.com/gpu"], "16");
        for (file, pool) in pools.iter().filter(|(file, _)| file.starts_with("nodepool-")) {
            let spec: crate::apis::nodepool::NodePoolSpec =
                serde_json::from_value(pool["spec"].clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(spec.template.spec.node_class_ref.name, "default", "{file}");
        }
    }

    #[test]
    fn prefix_delegation_is_declared_on_the_nodeclass_only_when_asked() {
        let off = parsed(&demo());
        assert!(off["ec2nodeclass.yaml"]["spec"].get("prefixDelegation").is_none());
        let on = parsed(&NodeClassValues { prefix_delegation: true, ..demo() });
        assert_eq!(on["ec2nodeclass.yaml"]["spec"]["prefixDelegation"], "Enabled");
        let class: crate::apis::ec2nodeclass::EC2NodeClassSpec =
            serde_json::from_value(on["ec2nodeclass.yaml"]["spec"].clone()).expect("an EC2NodeClass spec");
        assert!(class.prefix_delegation.is_some());
    }

    #[test]
    fn awkward_values_stay_scalars() {
        let values = NodeClassValues::for_cluster("a: b", "role\"x", "vpc: #1");
        let rendered = render_nodeclasses(&values).expect("renders");
        let doc: Value = serde_yaml_ng::from_str(&rendered[0].1).expect("still YAML");
        assert_eq!(doc["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"], "vpc: #1");
        assert_eq!(doc["spec"]["role"], "role\"x");
    }
}
