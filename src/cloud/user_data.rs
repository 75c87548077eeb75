//! The user data a node boots with, in the dialect of its AMI family: AL2023 (a nodeadm NodeConfig, MIME-merged
//! with the user's own user data), AL2 (bootstrap.sh flags) and Bottlerocket (TOML settings). Each carries the
//! node's max pods, its labels and its taints, so the kubelet registers exactly what the scheduler planned for.

use std::collections::BTreeMap;

use handlebars::{Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason};
use serde::Serialize;

const AL2023: &str = include_str!("user_data/al2023.yaml.hbs");
const AL2: &str = include_str!("user_data/al2.sh.hbs");
const BOTTLEROCKET: &str = include_str!("user_data/bottlerocket.toml.hbs");

/// Separates the MIME parts of AL2023 user data.
const MIME_BOUNDARY: &str = "//";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AmiFamily {
    AL2023,
    AL2,
    Bottlerocket,
}

impl AmiFamily {
    /// From an EC2NodeClass's `amiFamily` or alias (`al2023@latest`); `Custom` and unknown families boot as AL2023.
    pub fn from_name(name: &str) -> Self {
        let family = name.split('@').next().unwrap_or_default().to_ascii_lowercase();
        match family.as_str() {
            "al2" => Self::AL2,
            "bottlerocket" => Self::Bottlerocket,
            _ => Self::AL2023,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NodeTaint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// Everything the bootstrap needs to join this node to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BootstrapSettings {
    pub family: AmiFamily,
    pub cluster_name: String,
    pub endpoint: String,
    /// The cluster's CA bundle, base64 (as DescribeCluster returns it).
    pub ca_bundle: String,
    pub service_cidr: String,
    pub cluster_dns: Vec<String>,
    pub max_pods: u32,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<NodeTaint>,
    /// `instanceStorePolicy: RAID0`: the instance-store disks become one RAID0 volume for the kubelet, the
    /// container runtime and pod logs (a type without instance store boots as usual).
    pub instance_store_raid0: bool,
    /// The EC2NodeClass's own `userData`, merged in (AL2023, AL2) or prepended (Bottlerocket settings).
    pub custom: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("rendering {family:?} user data: {source}")]
pub struct UserDataError {
    family: AmiFamily,
    source: Box<handlebars::RenderError>,
}

/// `{{shell x}}`: one single-quoted shell word that means exactly `x`.
fn shell_helper(h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let value = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("shell", 0))?.value();
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    out.write(&format!("'{}'", text.replace('\'', r"'\''")))?;
    Ok(())
}

fn registry() -> Handlebars<'static> {
    let mut handlebars = Handlebars::new();
    handlebars.set_strict_mode(true);
    handlebars.register_escape_fn(handlebars::no_escape);
    handlebars.register_helper("yaml", Box::new(crate::render::yaml_helper));
    handlebars.register_helper("shell", Box::new(shell_helper));
    handlebars
}

#[derive(Serialize)]
struct TemplateValues<'a> {
    cluster_name: &'a str,
    endpoint: &'a str,
    ca_bundle: &'a str,
    service_cidr: &'a str,
    cluster_dns: &'a [String],
    max_pods: u32,
    labels: &'a BTreeMap<String, String>,
    taints: Vec<serde_json::Value>,
    node_labels_flag: String,
    kubelet_extra_args: String,
    bottlerocket_taints: BTreeMap<String, Vec<String>>,
    instance_store_raid0: bool,
}

fn taint_flag_value(t: &NodeTaint) -> String {
    match &t.value {
        Some(value) => format!("{}={value}:{}", t.key, t.effect),
        None => format!("{}:{}", t.key, t.effect),
    }
}

/// Renders the user data as text (EC2 wants it base64-encoded; the caller does that).
pub fn render(settings: &BootstrapSettings) -> Result<String, UserDataError> {
    let labels_csv: Vec<String> = settings.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels_csv = labels_csv.join(",");
    let mut extra_args = vec![format!("--node-labels={labels_csv}"), format!("--max-pods={}", settings.max_pods)];
    if !settings.taints.is_empty() {
        let taints: Vec<String> = settings.taints.iter().map(taint_flag_value).collect();
        extra_args.push(format!("--register-with-taints={}", taints.join(",")));
    }
    let mut bottlerocket_taints: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &settings.taints {
        let value = format!("{}:{}", t.value.as_deref().unwrap_or_default(), t.effect);
        bottlerocket_taints.entry(t.key.clone()).or_default().push(value);
    }
    let values = TemplateValues {
        cluster_name: &settings.cluster_name,
        endpoint: &settings.endpoint,
        ca_bundle: &settings.ca_bundle,
        service_cidr: &settings.service_cidr,
        cluster_dns: &settings.cluster_dns,
        max_pods: settings.max_pods,
        labels: &settings.labels,
        taints: settings
            .taints
            .iter()
            .map(|t| {
                let mut taint = serde_json::json!({"key": t.key, "effect": t.effect});
                if let Some(value) = &t.value {
                    taint["value"] = value.clone().into();
                }
                taint
            })
            .collect(),
        node_labels_flag: format!("--node-labels={labels_csv}"),
        kubelet_extra_args: extra_args.join(" "),
        bottlerocket_taints,
        instance_store_raid0: settings.instance_store_raid0,
    };
    let template = match settings.family {
        AmiFamily::AL2023 => AL2023,
        AmiFamily::AL2 => AL2,
        AmiFamily::Bottlerocket => BOTTLEROCKET,
    };
    let ours = registry()
        .render_template(template, &values)
        .map_err(|source| UserDataError { family: settings.family, source: Box::new(source) })?;
    Ok(match settings.family {
        AmiFamily::AL2023 => mime_merge(&ours, settings.custom.as_deref()),
        // bootstrap.sh runs last, after whatever the user's script prepares.
        AmiFamily::AL2 => match settings.custom.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(custom) => format!("{custom}\n{ours}"),
            None => ours,
        },
        // Bottlerocket merges TOML tables; ours comes last so that the node's max pods, labels and taints hold.
        AmiFamily::Bottlerocket => match settings.custom.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(custom) => format!("{custom}\n\n{ours}"),
            None => ours,
        },
    })
}

/// The parts of a MIME multipart document (headers and body each), or `None` when `text` is not one.
fn mime_parts(text: &str) -> Option<Vec<String>> {
    let header_end = text.find("\n\n").or_else(|| text.find("\r\n\r\n"))?;
    let headers = &text[..header_end];
    let content_type = headers.lines().find(|l| l.to_ascii_lowercase().starts_with("content-type:"))?;
    if !content_type.to_ascii_lowercase().contains("multipart/") {
        return None;
    }
    let boundary = content_type.split("boundary=").nth(1)?.trim().trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &text[header_end..];
    let parts = body
        .split(&delimiter)
        .skip(1)
        .take_while(|part| !part.starts_with("--"))
        .map(|part| part.trim_matches(['\r', '\n']).to_string())
        .filter(|part| !part.is_empty())
        .collect();
    Some(parts)
}

/// Our NodeConfig as the first part, then the user's parts: nodeadm merges NodeConfigs in order and runs shell
/// parts, so a user's NodeConfig may refine ours.
fn mime_merge(node_config: &str, custom: Option<&str>) -> String {
    let mut parts = vec![format!("Content-Type: application/node.eks.aws\n\n{}", node_config.trim_end())];
    if let Some(custom) = custom.map(str::trim).filter(|c| !c.is_empty()) {
        match mime_parts(custom) {
            Some(user_parts) => parts.extend(user_parts),
            None if custom.contains("kind: NodeConfig") => {
                parts.push(format!("Content-Type: application/node.eks.aws\n\n{custom}"));
            }
            None => parts.push(format!("Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{custom}")),
        }
    }
    let mut out = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{MIME_BOUNDARY}\"\n\n");
    for part in parts {
        out.push_str(&format!("--{MIME_BOUNDARY}\n{part}\n"));
    }
    out.push_str(&format!("--{MIME_BOUNDARY}--\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(family: AmiFamily) -> BootstrapSettings {
        BootstrapSettings {
            family,
            cluster_name: "demo".into(),
            endpoint: "https://ABCD.gr7.us-east-1.eks.amazonaws.com".into(),
            ca_bundle: "Q0EK".into(),
            service_cidr: "10.100.0.0/16".into(),
            cluster_dns: vec!["10.100.0.10".into()],
            max_pods: 110,
            labels: BTreeMap::from([
                ("karpenter.sh/nodepool".into(), "default".into()),
                ("team".into(), "it's-ours".into()),
            ]),
            taints: vec![NodeTaint { key: "dedicated".into(), value: Some("gpu".into()), effect: "NoSchedule".into() }],
            instance_store_raid0: true,
            custom: None,
        }
    }

    /// Render-and-compare: the reviewed output for each family.
    #[test]
    fn renders_the_reviewed_user_data() {
        let cases = [
            (AmiFamily::AL2023, "al2023.txt", include_str!("../../tests/data/user_data/al2023.txt")),
            (AmiFamily::AL2, "al2.sh", include_str!("../../tests/data/user_data/al2.sh")),
            (
                AmiFamily::Bottlerocket,
                "bottlerocket.toml",
                include_str!("../../tests/data/user_data/bottlerocket.toml"),
            ),
        ];
        for (family, file, expected) in cases {
            let rendered = render(&settings(family)).expect("renders");
            // NODESMITH_BLESS=1 rewrites the reviewed files after an intended change (review the diff).
            if std::env::var_os("NODESMITH_BLESS").is_some() {
                let path = format!("{}/tests/data/user_data/{file}", env!("CARGO_MANIFEST_DIR"));
                std::fs::write(&path, &rendered).expect("writes the reviewed file");
                continue;
            }
            assert_eq!(rendered, expected, "{family:?} differs from tests/data/user_data/{file}");
        }
    }

    #[test]
    fn al2023_node_config_is_valid_yaml_with_the_node_settings() {
        let rendered = render(&settings(AmiFamily::AL2023)).expect("renders");
        let parts = mime_parts(&rendered).expect("a MIME document");
        assert_eq!(parts.len(), 1);
        let yaml = parts[0].split_once("\n\n").expect("headers, then the body").1;
        let config: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("YAML");
        assert_eq!(config["spec"]["kubelet"]["config"]["maxPods"], 110);
        assert_eq!(config["spec"]["kubelet"]["config"]["registerWithTaints"][0]["value"], "gpu");
        assert_eq!(config["spec"]["kubelet"]["flags"][0], "--node-labels=karpenter.sh/nodepool=default,team=it's-ours");
    }

    #[test]
    fn al2023_keeps_every_part_of_the_users_mime_document() {
        let custom = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type: text/x-shellscript\n\necho hello\n--BOUNDARY\nContent-Type: application/node.eks.aws\n\nkind: NodeConfig\n--BOUNDARY--\n";
        let rendered =
            render(&BootstrapSettings { custom: Some(custom.into()), ..settings(AmiFamily::AL2023) }).expect("renders");
        let parts = mime_parts(&rendered).expect("a MIME document");
        assert_eq!(parts.len(), 3);
        assert!(parts[1].contains("echo hello"));
        assert!(parts[2].ends_with("kind: NodeConfig"));
    }

    #[test]
    fn a_plain_script_becomes_a_shell_part() {
        let rendered = render(&BootstrapSettings { custom: Some("echo hi".into()), ..settings(AmiFamily::AL2023) })
            .expect("renders");
        let parts = mime_parts(&rendered).expect("a MIME document");
        assert!(parts[1].starts_with("Content-Type: text/x-shellscript"));
    }

    #[test]
    fn shell_words_survive_quotes() {
        let rendered = render(&settings(AmiFamily::AL2)).expect("renders");
        assert!(rendered.contains(r"team=it'\''s-ours"));
        assert!(rendered.contains("--max-pods=110"));
    }

    #[test]
    fn families_come_from_names_and_aliases() {
        assert_eq!(AmiFamily::from_name("al2023@latest"), AmiFamily::AL2023);
        assert_eq!(AmiFamily::from_name("AL2"), AmiFamily::AL2);
        assert_eq!(AmiFamily::from_name("bottlerocket@v1.20.0"), AmiFamily::Bottlerocket);
        assert_eq!(AmiFamily::from_name("Custom"), AmiFamily::AL2023);
    }
}
