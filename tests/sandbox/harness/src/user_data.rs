//! What a node's bootstrap would hand its kubelet, read from its user data the way each image reads it: AL2023's
//! nodeadm NodeConfig parts of a MIME document (later parts refine earlier ones), AL2's bootstrap.sh
//! `--kubelet-extra-args` in a shell script (alone or a MIME part) and Bottlerocket's TOML `settings.kubernetes`.
//! Only the settings that shape a Node's capacity and allocatable, and the taints it registers with, are read. Written apart from nodesmith's own
//! renderer, with real parsers, so that a test of what nodesmith writes is not nodesmith agreeing with itself.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Taint;

/// The kubelet settings a Node's resources follow; unset ones keep the image's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeletFacts {
    pub max_pods: Option<u32>,
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    /// Signal → threshold (`memory.available` → `500Mi` or `5%`).
    pub eviction_hard: BTreeMap<String, String>,
    /// The taints the kubelet registers its Node with (`--register-with-taints`, `registerWithTaints`,
    /// Bottlerocket's `node-taints`); `None` when the user data names none.
    pub register_with_taints: Option<Vec<Taint>>,
}

impl KubeletFacts {
    /// Settings read later override earlier ones key by key, as nodeadm merges NodeConfigs.
    fn merge(&mut self, later: KubeletFacts) {
        self.max_pods = later.max_pods.or(self.max_pods);
        self.kube_reserved.extend(later.kube_reserved);
        self.system_reserved.extend(later.system_reserved);
        self.eviction_hard.extend(later.eviction_hard);
        self.register_with_taints = later.register_with_taints.or(self.register_with_taints.take());
    }
}

/// `user_data` is the base64 text EC2 stores; undecodable data sets nothing.
pub fn kubelet_facts_from_base64(user_data: &str) -> KubeletFacts {
    match base64::engine::general_purpose::STANDARD.decode(user_data.trim()) {
        Ok(bytes) => kubelet_facts_from_text(&String::from_utf8_lossy(&bytes)),
        Err(_) => KubeletFacts::default(),
    }
}

pub fn kubelet_facts_from_text(text: &str) -> KubeletFacts {
    if let Some(parts) = mime_parts(text) {
        let mut facts = KubeletFacts::default();
        for (content_type, body) in parts {
            if content_type.contains("application/node.eks.aws") {
                facts.merge(node_config(&body));
            } else if content_type.contains("shellscript") {
                facts.merge(shell(&body));
            }
        }
        return facts;
    }
    if let Ok(document) = text.parse::<toml::Table>()
        && let Some(kubernetes) = document.get("settings").and_then(|s| s.get("kubernetes"))
    {
        return bottlerocket(kubernetes);
    }
    if text.contains("bootstrap.sh") {
        return shell(text);
    }
    node_config(text)
}

/// (content type, body) of each part of a MIME multipart document; `None` when `text` is not one.
pub fn mime_parts(text: &str) -> Option<Vec<(String, String)>> {
    let text = text.replace("\r\n", "\n");
    let (headers, body) = text.split_once("\n\n")?;
    let content_type = header(headers, "content-type")?;
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    let boundary = content_type.split("boundary=").nth(1)?.split(';').next()?.trim().trim_matches('"');
    let delimiter = format!("--{boundary}");
    let parts = body
        .split(&delimiter)
        .skip(1)
        .take_while(|part| !part.starts_with("--"))
        .filter_map(|part| {
            let (headers, body) = part.trim_start_matches('\n').split_once("\n\n")?;
            Some((header(headers, "content-type").unwrap_or_default().to_ascii_lowercase(), body.to_string()))
        })
        .collect();
    Some(parts)
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

/// A NodeConfig (YAML or JSON): `spec.kubelet.config`, or `kubelet.config` for a bare spec.
fn node_config(text: &str) -> KubeletFacts {
    let Ok(document) = serde_yaml_ng::from_str::<serde_json::Value>(text) else { return KubeletFacts::default() };
    let spec = document.get("spec").unwrap_or(&document);
    let empty = serde_json::Value::Object(Default::default());
    let Some(kubelet) = spec.get("kubelet") else { return KubeletFacts::default() };
    let config = kubelet.get("config").unwrap_or(&empty);
    let map = |key: &str| -> BTreeMap<String, String> {
        config
            .get(key)
            .and_then(|m| m.as_object())
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default()
    };
    let configured = config.get("registerWithTaints").and_then(|t| serde_json::from_value(t.clone()).ok());
    // nodeadm passes `kubelet.flags` after the config file, so a flag wins.
    let flags: Vec<String> =
        kubelet.get("flags").and_then(|f| serde_json::from_value(f.clone()).ok()).unwrap_or_default();
    KubeletFacts {
        max_pods: config.get("maxPods").and_then(serde_json::Value::as_u64).and_then(|n| u32::try_from(n).ok()),
        kube_reserved: map("kubeReserved"),
        system_reserved: map("systemReserved"),
        eviction_hard: map("evictionHard"),
        register_with_taints: kubelet_flags(&flags).register_with_taints.or(configured),
    }
}

/// Bottlerocket's `settings.kubernetes` table.
fn bottlerocket(kubernetes: &toml::Value) -> KubeletFacts {
    let map = |key: &str| -> BTreeMap<String, String> {
        kubernetes
            .get(key)
            .and_then(toml::Value::as_table)
            .map(|t| t.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default()
    };
    KubeletFacts {
        max_pods: kubernetes.get("max-pods").and_then(toml::Value::as_integer).and_then(|n| u32::try_from(n).ok()),
        kube_reserved: map("kube-reserved"),
        system_reserved: map("system-reserved"),
        eviction_hard: map("eviction-hard"),
        register_with_taints: kubernetes.get("node-taints").and_then(toml::Value::as_table).map(bottlerocket_taints),
    }
}

/// `node-taints`: each key maps to a list of `value:Effect` (or a single one).
fn bottlerocket_taints(table: &toml::Table) -> Vec<Taint> {
    let mut taints = Vec::new();
    for (key, values) in table {
        let values = match values {
            toml::Value::Array(list) => list.iter().filter_map(toml::Value::as_str).collect(),
            other => other.as_str().into_iter().collect::<Vec<_>>(),
        };
        for value_effect in values {
            let (value, effect) = value_effect.rsplit_once(':').unwrap_or(("", value_effect));
            taints.push(taint(key, value, effect));
        }
    }
    taints
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_string(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect: effect.to_string(),
        ..Default::default()
    }
}

/// `--register-with-taints`: `key=value:Effect` or `key:Effect`, comma-separated.
fn flag_taints(value: &str) -> Vec<Taint> {
    value
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (key_value, effect) = t.trim().rsplit_once(':').unwrap_or((t.trim(), ""));
            let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
            taint(key, value, effect)
        })
        .collect()
}

/// The kubelet flags of every bootstrap.sh line of a shell script, as the shell would split them.
fn shell(script: &str) -> KubeletFacts {
    let mut facts = KubeletFacts::default();
    for line in script.lines().filter(|l| l.contains("bootstrap.sh")) {
        // The template continues its bootstrap.sh command over lines ending in a backslash.
        let command = continued(script, line);
        let Some(words) = shlex::split(&command) else { continue };
        let Some(at) = words.iter().position(|w| w == "--kubelet-extra-args") else { continue };
        let Some(extra) = words.get(at + 1).and_then(|args| shlex::split(args)) else { continue };
        facts.merge(kubelet_flags(&extra));
    }
    facts
}

/// `line` and the lines that follow it while each ends in `\`.
fn continued(script: &str, line: &str) -> String {
    let mut command = String::new();
    let mut lines = script.lines().skip_while(|l| *l != line);
    for next in lines.by_ref() {
        match next.strip_suffix('\\') {
            Some(head) => command.push_str(head),
            None => {
                command.push_str(next);
                break;
            }
        }
    }
    command
}

fn kubelet_flags(words: &[String]) -> KubeletFacts {
    let mut facts = KubeletFacts::default();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let (flag, value) = match word.split_once('=') {
            Some((flag, value)) => (flag, value.to_string()),
            None => (word.as_str(), words.next().cloned().unwrap_or_default()),
        };
        let pairs = |separator: char| -> BTreeMap<String, String> {
            value
                .split(',')
                .filter_map(|pair| pair.split_once(separator))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        };
        match flag {
            "--max-pods" => facts.max_pods = value.parse().ok(),
            "--kube-reserved" => facts.kube_reserved = pairs('='),
            "--system-reserved" => facts.system_reserved = pairs('='),
            "--eviction-hard" => facts.eviction_hard = pairs('<'),
            "--register-with-taints" => facts.register_with_taints = Some(flag_taints(&value)),
            _ => {}
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn al2023_node_configs_inside_mime_merge_in_order() {
        let text = r#"MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="//"

--//
Content-Type: application/node.eks.aws

apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  kubelet:
    config:
      maxPods: 110
      kubeReserved: {"cpu": "100m", "memory": "1Gi"}
      evictionHard: {"memory.available": "5%"}
--//
Content-Type: text/x-shellscript

echo hi
--//
Content-Type: application/node.eks.aws

apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  kubelet:
    config:
      kubeReserved:
        cpu: 300m
--//--
"#;
        let facts = kubelet_facts_from_text(text);
        assert_eq!(facts.max_pods, Some(110));
        assert_eq!(facts.kube_reserved["cpu"], "300m", "the later NodeConfig refines the earlier");
        assert_eq!(facts.kube_reserved["memory"], "1Gi");
        assert_eq!(facts.eviction_hard["memory.available"], "5%");
    }

    #[test]
    fn al2_bootstrap_kubelet_extra_args_alone_or_in_mime() {
        let script = "#!/bin/bash\n/etc/eks/bootstrap.sh demo \\\n  --use-max-pods false \\\n  --kubelet-extra-args '--node-labels=a=b --max-pods=58 --kube-reserved=cpu=250m,memory=1Gi --eviction-hard=memory.available<500Mi,nodefs.available<10%'\n";
        let facts = kubelet_facts_from_text(script);
        assert_eq!(facts.max_pods, Some(58));
        assert_eq!(facts.kube_reserved["memory"], "1Gi");
        assert_eq!(facts.eviction_hard["memory.available"], "500Mi");
        assert_eq!(facts.eviction_hard["nodefs.available"], "10%");
        let mime = format!(
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\nContent-Type: text/x-shellscript\n\necho first\n--B\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{script}\n--B--\n"
        );
        assert_eq!(kubelet_facts_from_text(&mime), facts);
        assert_eq!(
            kubelet_facts_from_text("bootstrap.sh demo --kubelet-extra-args '--max-pods 17'").max_pods,
            Some(17)
        );
    }

    #[test]
    fn bottlerocket_toml() {
        let text = "[settings.kubernetes]\ncluster-name = \"demo\"\nmax-pods = 234\n\n[settings.kubernetes.system-reserved]\nmemory = \"300Mi\"\n";
        let facts = kubelet_facts_from_text(text);
        assert_eq!(facts.max_pods, Some(234));
        assert_eq!(facts.system_reserved["memory"], "300Mi");
    }

    #[test]
    fn taints_the_kubelet_registers_with_in_each_format() {
        let unregistered = taint("karpenter.sh/unregistered", "", "NoExecute");
        let dedicated = taint("dedicated", "gpu", "NoSchedule");
        let al2023 = "spec:\n  kubelet:\n    config:\n      registerWithTaints:\n        - {key: karpenter.sh/unregistered, effect: NoExecute}\n        - {key: dedicated, value: gpu, effect: NoSchedule}\n    flags: [--node-labels=a=b]\n";
        let expected = Some(vec![unregistered.clone(), dedicated.clone()]);
        assert_eq!(kubelet_facts_from_text(al2023).register_with_taints, expected);
        let al2 = "/etc/eks/bootstrap.sh demo --kubelet-extra-args '--register-with-taints=karpenter.sh/unregistered:NoExecute,dedicated=gpu:NoSchedule'";
        assert_eq!(kubelet_facts_from_text(al2).register_with_taints, expected);
        let bottlerocket = "[settings.kubernetes]\nmax-pods = 3\n[settings.kubernetes.node-taints]\n\"karpenter.sh/unregistered\" = [\":NoExecute\"]\ndedicated = [\"gpu:NoSchedule\"]\n";
        let mut taints = kubelet_facts_from_text(bottlerocket).register_with_taints.unwrap_or_default();
        taints.sort_by(|a, b| b.key.cmp(&a.key));
        assert_eq!(Some(taints), expected);
        assert_eq!(kubelet_facts_from_text("spec:\n  kubelet:\n    config: {maxPods: 3}\n").register_with_taints, None);
    }

    #[test]
    fn json_node_config() {
        assert_eq!(kubelet_facts_from_text(r#"{"kubelet":{"config":{"maxPods": 29}}}"#).max_pods, Some(29));
    }

    #[test]
    fn user_data_without_settings() {
        assert_eq!(kubelet_facts_from_text("#!/bin/bash\necho --use-max-pods false\n"), KubeletFacts::default());
        assert_eq!(kubelet_facts_from_base64("not base64 at all!"), KubeletFacts::default());
    }

    #[test]
    fn base64_is_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("[settings.kubernetes]\nmax-pods = 8\n");
        assert_eq!(kubelet_facts_from_base64(&encoded).max_pods, Some(8));
    }
}
