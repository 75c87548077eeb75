//! The user data a node boots with, in the dialect of its AMI family, merged with the EC2NodeClass's own `userData`
//! as Karpenter merges it: AL2023 (a MIME document: nodesmith's nodeadm NodeConfig first, then the user's parts),
//! AL2 (a MIME document: the user's parts, then the bootstrap.sh script), Bottlerocket (one TOML document: the
//! user's settings with nodesmith's written over the keys it owns) and Custom (the user's user data, untouched).
//! Each carries the node's max pods, labels, taints and kubelet settings, so the kubelet registers exactly what
//! the scheduler planned for.

use std::collections::BTreeMap;

use handlebars::{Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason};
use serde::Serialize;

const AL2023: &str = include_str!("user_data/al2023.yaml.hbs");
const AL2: &str = include_str!("user_data/al2.sh.hbs");

/// Separates the MIME parts of AL2023 user data.
const MIME_BOUNDARY: &str = "//";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AmiFamily {
    AL2023,
    AL2,
    Bottlerocket,
    /// The user's AMI and the user's user data: nodesmith adds nothing (it cannot know how that image boots).
    Custom,
}

impl AmiFamily {
    /// From an EC2NodeClass's `amiFamily` or alias (`al2023@latest`); unknown families boot as AL2023.
    pub fn from_name(name: &str) -> Self {
        let family = name.split('@').next().unwrap_or_default().to_ascii_lowercase();
        match family.as_str() {
            "al2" => Self::AL2,
            "bottlerocket" => Self::Bottlerocket,
            "custom" => Self::Custom,
            _ => Self::AL2023,
        }
    }
}

/// The EC2NodeClass `kubelet` settings that reach the bootstrap beyond max pods and cluster DNS, named as the
/// kubelet's configuration names them. Maps are written in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KubeletSettings {
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    pub eviction_max_pod_grace_period: Option<i32>,
    pub image_gc_high_threshold_percent: Option<i32>,
    pub image_gc_low_threshold_percent: Option<i32>,
    pub cpu_cfs_quota: Option<bool>,
}

/// A kubelet setting's name in each dialect: nodeadm's KubeletConfiguration (AL2023), the kubelet flag (AL2) and
/// Bottlerocket's `settings.kubernetes`.
struct Names {
    node_config: &'static str,
    flag: &'static str,
    bottlerocket: &'static str,
}

const fn names(node_config: &'static str, flag: &'static str, bottlerocket: &'static str) -> Names {
    Names { node_config, flag, bottlerocket }
}

impl KubeletSettings {
    /// The map settings, each with the separator its flag puts between a key and its value.
    fn maps(&self) -> [(Names, &'static str, &BTreeMap<String, String>); 5] {
        [
            (names("kubeReserved", "--kube-reserved", "kube-reserved"), "=", &self.kube_reserved),
            (names("systemReserved", "--system-reserved", "system-reserved"), "=", &self.system_reserved),
            (names("evictionHard", "--eviction-hard", "eviction-hard"), "<", &self.eviction_hard),
            (names("evictionSoft", "--eviction-soft", "eviction-soft"), "<", &self.eviction_soft),
            (
                names("evictionSoftGracePeriod", "--eviction-soft-grace-period", "eviction-soft-grace-period"),
                "=",
                &self.eviction_soft_grace_period,
            ),
        ]
    }

    /// The number settings, each with whether Bottlerocket takes it as a string (the image GC percentages).
    fn numbers(&self) -> [(Names, bool, Option<i32>); 3] {
        [
            (
                names("evictionMaxPodGracePeriod", "--eviction-max-pod-grace-period", "eviction-max-pod-grace-period"),
                false,
                self.eviction_max_pod_grace_period,
            ),
            (
                names("imageGCHighThresholdPercent", "--image-gc-high-threshold", "image-gc-high-threshold-percent"),
                true,
                self.image_gc_high_threshold_percent,
            ),
            (
                names("imageGCLowThresholdPercent", "--image-gc-low-threshold", "image-gc-low-threshold-percent"),
                true,
                self.image_gc_low_threshold_percent,
            ),
        ]
    }

    const CPU_CFS_QUOTA: Names = names("cpuCFSQuota", "--cpu-cfs-quota", "cpu-cfs-quota-enforced");

    /// As nodeadm's KubeletConfiguration names them (AL2023).
    fn node_config_entries(&self) -> BTreeMap<&'static str, serde_json::Value> {
        let mut entries = BTreeMap::new();
        for (names, _, map) in self.maps().into_iter().filter(|(_, _, map)| !map.is_empty()) {
            entries.insert(names.node_config, serde_json::json!(map));
        }
        for (names, _, number) in self.numbers() {
            if let Some(number) = number {
                entries.insert(names.node_config, number.into());
            }
        }
        if let Some(quota) = self.cpu_cfs_quota {
            entries.insert(Self::CPU_CFS_QUOTA.node_config, quota.into());
        }
        entries
    }

    /// As kubelet flags (AL2's `--kubelet-extra-args`): `--eviction-hard=memory.available<500Mi,...`.
    fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for (names, separator, map) in self.maps().into_iter().filter(|(_, _, map)| !map.is_empty()) {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}{separator}{v}")).collect();
            flags.push(format!("{}={}", names.flag, pairs.join(",")));
        }
        for (names, _, number) in self.numbers() {
            if let Some(number) = number {
                flags.push(format!("{}={number}", names.flag));
            }
        }
        if let Some(quota) = self.cpu_cfs_quota {
            flags.push(format!("{}={quota}", Self::CPU_CFS_QUOTA.flag));
        }
        flags
    }

    /// Into Bottlerocket's `settings.kubernetes`.
    fn write_bottlerocket(&self, kubernetes: &mut toml::Table) {
        for (names, _, map) in self.maps().into_iter().filter(|(_, _, map)| !map.is_empty()) {
            let table: toml::Table = map.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            kubernetes.insert(names.bottlerocket.into(), table.into());
        }
        for (names, as_string, number) in self.numbers() {
            if let Some(number) = number {
                let value = if as_string { number.to_string().into() } else { i64::from(number).into() };
                kubernetes.insert(names.bottlerocket.into(), value);
            }
        }
        if let Some(quota) = self.cpu_cfs_quota {
            kubernetes.insert(Self::CPU_CFS_QUOTA.bottlerocket.into(), quota.into());
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
    pub kubelet: KubeletSettings,
    /// The EC2NodeClass's own `userData`: MIME-merged (AL2023, AL2), TOML-merged (Bottlerocket) or all there is
    /// (Custom).
    pub custom: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error("rendering {family:?} user data: {source}")]
    Render { family: AmiFamily, source: Box<handlebars::RenderError> },
    #[error("spec.userData is not the TOML a Bottlerocket node reads: {0}")]
    BottlerocketToml(String),
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
    kubelet_config: BTreeMap<&'static str, serde_json::Value>,
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
    let custom = settings.custom.as_deref().map(str::trim).filter(|c| !c.is_empty());
    match settings.family {
        AmiFamily::AL2023 => {
            let node_config = render_template(settings, AL2023)?;
            let mut parts = vec![format!("Content-Type: application/node.eks.aws\n\n{}", node_config.trim_end())];
            // nodeadm merges NodeConfigs in order and runs shell parts, so a user's NodeConfig may refine ours.
            parts.extend(custom.map(|c| user_parts(c, true)).unwrap_or_default());
            Ok(mime_document(&parts))
        }
        AmiFamily::AL2 => {
            let script = render_template(settings, AL2)?;
            // bootstrap.sh runs last, after whatever the user's parts prepare.
            let mut parts = custom.map(|c| user_parts(c, false)).unwrap_or_default();
            parts.push(format!("Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{}", script.trim_end()));
            Ok(mime_document(&parts))
        }
        AmiFamily::Bottlerocket => bottlerocket(settings, custom),
        AmiFamily::Custom => Ok(settings.custom.clone().unwrap_or_default()),
    }
}

fn render_template(settings: &BootstrapSettings, template: &str) -> Result<String, UserDataError> {
    let labels_csv: Vec<String> = settings.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels_csv = labels_csv.join(",");
    let mut extra_args = vec![format!("--node-labels={labels_csv}"), format!("--max-pods={}", settings.max_pods)];
    if !settings.taints.is_empty() {
        let taints: Vec<String> = settings.taints.iter().map(taint_flag_value).collect();
        extra_args.push(format!("--register-with-taints={}", taints.join(",")));
    }
    extra_args.extend(settings.kubelet.flags());
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
        kubelet_config: settings.kubelet.node_config_entries(),
        instance_store_raid0: settings.instance_store_raid0,
    };
    registry()
        .render_template(template, &values)
        .map_err(|source| UserDataError::Render { family: settings.family, source: Box::new(source) })
}

/// The user's settings, then nodesmith's over the keys it owns, as Karpenter merges them: cluster identity, max
/// pods, labels (the user's kept where nodesmith sets none), taints (nodesmith's only: they are the NodePool's),
/// the kubelet settings the class sets, and the RAID0 bootstrap command.
fn bottlerocket(settings: &BootstrapSettings, custom: Option<&str>) -> Result<String, UserDataError> {
    let mut document: toml::Table = match custom {
        Some(text) => text.parse().map_err(|e: toml::de::Error| UserDataError::BottlerocketToml(e.to_string()))?,
        None => toml::Table::new(),
    };
    let settings_table = child_table(&mut document, "settings")?;
    if let Some(autoscaling) = settings_table.get_mut("autoscaling").and_then(toml::Value::as_table_mut)
        && autoscaling.contains_key("should-wait")
    {
        // nodesmith's nodes are in no Auto Scaling group: waiting for one would keep the kubelet from starting.
        autoscaling.insert("should-wait".into(), false.into());
    }
    if settings.instance_store_raid0 {
        let commands = child_table(settings_table, "bootstrap-commands")?;
        let words = |words: &[&str]| toml::Value::Array(words.iter().map(|w| (*w).into()).collect());
        let dirs = ["/var/lib/containerd", "/var/lib/kubelet", "/var/log/pods"];
        let mut command = toml::Table::new();
        command.insert(
            "commands".into(),
            toml::Value::Array(vec![
                words(&["apiclient", "ephemeral-storage", "init"]),
                words(&[&["apiclient", "ephemeral-storage", "bind", "--dirs"][..], &dirs[..]].concat()),
            ]),
        );
        command.insert("mode".into(), "always".into());
        command.insert("essential".into(), true.into());
        commands.insert("000-mount-instance-storage".into(), command.into());
    }
    let kubernetes = child_table(settings_table, "kubernetes")?;
    kubernetes.insert("cluster-name".into(), settings.cluster_name.clone().into());
    kubernetes.insert("api-server".into(), settings.endpoint.clone().into());
    kubernetes.insert("cluster-certificate".into(), settings.ca_bundle.clone().into());
    kubernetes.insert("max-pods".into(), i64::from(settings.max_pods).into());
    if !settings.cluster_dns.is_empty() {
        let dns: Vec<toml::Value> = settings.cluster_dns.iter().map(|ip| ip.clone().into()).collect();
        kubernetes.insert("cluster-dns-ip".into(), dns.into());
    }
    let labels = child_table(kubernetes, "node-labels")?;
    for (key, value) in &settings.labels {
        labels.insert(key.clone(), value.clone().into());
    }
    let mut taints = toml::Table::new();
    for t in &settings.taints {
        let value = format!("{}:{}", t.value.as_deref().unwrap_or_default(), t.effect);
        let entry = taints.entry(t.key.clone()).or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(values) = entry {
            values.push(value.into());
        }
    }
    kubernetes.insert("node-taints".into(), taints.into());
    settings.kubelet.write_bottlerocket(kubernetes);
    toml::to_string(&document).map_err(|e| UserDataError::BottlerocketToml(e.to_string()))
}

/// `table[key]` as a table, made empty if missing; a user's non-table there is an error naming it.
fn child_table<'t>(table: &'t mut toml::Table, key: &str) -> Result<&'t mut toml::Table, UserDataError> {
    table
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| UserDataError::BottlerocketToml(format!("{key} must be a table")))
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

/// The user's user data as MIME parts: a MIME document's own parts, a bare NodeConfig (AL2023 only) as a nodeadm
/// part, anything else as a shell script.
fn user_parts(custom: &str, node_config_allowed: bool) -> Vec<String> {
    match mime_parts(custom) {
        Some(parts) => parts,
        None if node_config_allowed && custom.contains("kind: NodeConfig") => {
            vec![format!("Content-Type: application/node.eks.aws\n\n{custom}")]
        }
        None => vec![format!("Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{custom}")],
    }
}

fn mime_document(parts: &[String]) -> String {
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
            kubelet: KubeletSettings {
                kube_reserved: BTreeMap::from([("cpu".into(), "250m".into()), ("memory".into(), "1Gi".into())]),
                system_reserved: BTreeMap::from([("memory".into(), "200Mi".into())]),
                eviction_hard: BTreeMap::from([("memory.available".into(), "5%".into())]),
                eviction_soft: BTreeMap::from([("memory.available".into(), "10%".into())]),
                eviction_soft_grace_period: BTreeMap::from([("memory.available".into(), "1m30s".into())]),
                eviction_max_pod_grace_period: Some(60),
                image_gc_high_threshold_percent: Some(85),
                image_gc_low_threshold_percent: Some(80),
                cpu_cfs_quota: Some(false),
            },
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
    fn al2023_node_config_carries_the_kubelet_settings() {
        let rendered = render(&settings(AmiFamily::AL2023)).expect("renders");
        let parts = mime_parts(&rendered).expect("a MIME document");
        let yaml = parts[0].split_once("\n\n").expect("headers, then the body").1;
        let config: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("YAML");
        let kubelet = &config["spec"]["kubelet"]["config"];
        assert_eq!(kubelet["kubeReserved"], serde_json::json!({"cpu": "250m", "memory": "1Gi"}));
        assert_eq!(kubelet["systemReserved"]["memory"], "200Mi");
        assert_eq!(kubelet["evictionHard"]["memory.available"], "5%");
        assert_eq!(kubelet["evictionSoftGracePeriod"]["memory.available"], "1m30s");
        assert_eq!(kubelet["evictionMaxPodGracePeriod"], 60);
        assert_eq!(
            (kubelet["imageGCHighThresholdPercent"].clone(), kubelet["imageGCLowThresholdPercent"].clone()),
            (85.into(), 80.into())
        );
        assert_eq!(kubelet["cpuCFSQuota"], false);
    }

    #[test]
    fn al2_passes_the_kubelet_settings_as_flags() {
        let rendered = render(&settings(AmiFamily::AL2)).expect("renders");
        for flag in [
            "--kube-reserved=cpu=250m,memory=1Gi",
            "--system-reserved=memory=200Mi",
            "--eviction-hard=memory.available<5%",
            "--eviction-soft=memory.available<10%",
            "--eviction-soft-grace-period=memory.available=1m30s",
            "--eviction-max-pod-grace-period=60",
            "--image-gc-high-threshold=85",
            "--image-gc-low-threshold=80",
            "--cpu-cfs-quota=false",
        ] {
            assert!(rendered.contains(flag), "{flag} missing from\n{rendered}");
        }
    }

    #[test]
    fn al2_keeps_the_users_mime_parts_and_bootstraps_last() {
        let custom = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==B==\"\n\n--==B==\nContent-Type: text/x-shellscript\n\necho one\n--==B==\nContent-Type: text/cloud-config\n\npackages: [jq]\n--==B==--\n";
        let rendered =
            render(&BootstrapSettings { custom: Some(custom.into()), ..settings(AmiFamily::AL2) }).expect("renders");
        let parts = mime_parts(&rendered).expect("a MIME document");
        assert_eq!(parts.len(), 3, "{rendered}");
        assert!(parts[0].ends_with("echo one"));
        assert!(parts[1].starts_with("Content-Type: text/cloud-config"));
        assert!(parts[2].contains("/etc/eks/bootstrap.sh"));
        // A plain script becomes the first of two parts.
        let rendered = render(&BootstrapSettings { custom: Some("echo two".into()), ..settings(AmiFamily::AL2) })
            .expect("renders");
        let parts = mime_parts(&rendered).expect("a MIME document");
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("Content-Type: text/x-shellscript") && parts[0].ends_with("echo two"));
    }

    #[test]
    fn bottlerocket_merges_the_users_toml_under_nodesmiths_keys() {
        let custom = r#"
[settings.kubernetes]
cluster-name = "someone-else"
max-pods = 7
image-gc-high-threshold-percent = "99"

[settings.kubernetes.node-labels]
team = "theirs"
from-user-data = "kept"

[settings.kubernetes.node-taints]
theirs = ["x:NoSchedule"]

[settings.host-containers.admin]
enabled = true

[settings.autoscaling]
should-wait = true
"#;
        let rendered = render(&BootstrapSettings { custom: Some(custom.into()), ..settings(AmiFamily::Bottlerocket) })
            .expect("renders");
        let document: toml::Table = rendered.parse().expect("valid TOML");
        let settings_table = document["settings"].as_table().expect("settings");
        let kubernetes = settings_table["kubernetes"].as_table().expect("settings.kubernetes");
        assert_eq!(kubernetes["cluster-name"].as_str(), Some("demo"));
        assert_eq!(kubernetes["max-pods"].as_integer(), Some(110));
        assert_eq!(kubernetes["image-gc-high-threshold-percent"].as_str(), Some("85"));
        assert_eq!(kubernetes["node-labels"]["team"].as_str(), Some("it's-ours"));
        assert_eq!(kubernetes["node-labels"]["from-user-data"].as_str(), Some("kept"));
        let taints = kubernetes["node-taints"].as_table().expect("taints");
        assert!(!taints.contains_key("theirs"), "the NodePool's taints only: {taints:?}");
        assert_eq!(taints["dedicated"][0].as_str(), Some("gpu:NoSchedule"));
        assert_eq!(kubernetes["kube-reserved"]["memory"].as_str(), Some("1Gi"));
        assert_eq!(kubernetes["eviction-hard"]["memory.available"].as_str(), Some("5%"));
        assert_eq!(kubernetes["cpu-cfs-quota-enforced"].as_bool(), Some(false));
        assert_eq!(settings_table["host-containers"]["admin"]["enabled"].as_bool(), Some(true));
        assert_eq!(settings_table["autoscaling"]["should-wait"].as_bool(), Some(false));
        let raid = &settings_table["bootstrap-commands"]["000-mount-instance-storage"];
        assert_eq!(raid["commands"][0].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn bottlerocket_refuses_user_data_that_is_not_toml() {
        let error = render(&BootstrapSettings {
            custom: Some("#!/bin/bash\necho".into()),
            ..settings(AmiFamily::Bottlerocket)
        })
        .expect_err("not TOML");
        assert!(error.to_string().contains("spec.userData"), "{error}");
        let error =
            render(&BootstrapSettings { custom: Some("settings = 3".into()), ..settings(AmiFamily::Bottlerocket) })
                .expect_err("settings is not a table");
        assert!(error.to_string().contains("settings must be a table"), "{error}");
    }

    #[test]
    fn custom_gets_exactly_the_users_user_data() {
        let custom = "#!/bin/bash\n/opt/my-image/join --cluster demo\n";
        let rendered =
            render(&BootstrapSettings { custom: Some(custom.into()), ..settings(AmiFamily::Custom) }).expect("renders");
        assert_eq!(rendered, custom);
        assert_eq!(render(&settings(AmiFamily::Custom)).expect("renders"), "");
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
        assert_eq!(AmiFamily::from_name("Custom"), AmiFamily::Custom);
        assert_eq!(AmiFamily::from_name("something-new"), AmiFamily::AL2023);
    }
}
