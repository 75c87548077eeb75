//! Finds the `maxPods` a node's bootstrap would hand its kubelet, in the three user-data dialects nodesmith writes:
//! AL2023 nodeadm NodeConfig (`maxPods: N`, possibly inside a MIME multipart document), AL2 bootstrap.sh
//! (`--max-pods=N` in the kubelet extra args) and Bottlerocket TOML (`max-pods = N`).

use base64::Engine;

/// `user_data` is the base64 text EC2 stores. `None` when it sets no max pods.
pub fn max_pods_from_base64(user_data: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(user_data.trim())
        .ok()?;
    max_pods_from_text(&String::from_utf8_lossy(&bytes))
}

pub fn max_pods_from_text(text: &str) -> Option<u32> {
    // The last setting wins, as it would for a kubelet flag given twice or a merged NodeConfig.
    text.lines().filter_map(max_pods_on_line).last()
}

fn max_pods_on_line(line: &str) -> Option<u32> {
    const KEYS: [(&str, &[char]); 3] = [
        ("maxPods", &[':']),
        ("--max-pods", &['=', ' ']),
        ("max-pods", &['=']),
    ];
    KEYS.iter().find_map(|(key, separators)| {
        let at = line.find(key)?;
        let rest = line[at + key.len()..].trim_start_matches(|c: char| c == ' ' || c == '"');
        let rest = rest.strip_prefix(*separators)?;
        let digits: String = rest
            .trim_start_matches([' ', '"', '\''])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn al2023_node_config_inside_mime() {
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
--//--
"#;
        assert_eq!(max_pods_from_text(text), Some(110));
    }

    #[test]
    fn al2_bootstrap_kubelet_extra_args() {
        let text = "#!/bin/bash\n/etc/eks/bootstrap.sh demo --use-max-pods false --kubelet-extra-args '--node-labels=a=b --max-pods=58'\n";
        assert_eq!(max_pods_from_text(text), Some(58));
        assert_eq!(
            max_pods_from_text("bootstrap.sh demo --kubelet-extra-args '--max-pods 17'"),
            Some(17)
        );
    }

    #[test]
    fn bottlerocket_toml() {
        let text = "[settings.kubernetes]\ncluster-name = \"demo\"\nmax-pods = 234\n";
        assert_eq!(max_pods_from_text(text), Some(234));
    }

    #[test]
    fn json_node_config() {
        assert_eq!(
            max_pods_from_text(r#"{"kubelet":{"config":{"maxPods": 29}}}"#),
            Some(29)
        );
    }

    #[test]
    fn user_data_without_max_pods() {
        assert_eq!(
            max_pods_from_text("#!/bin/bash\necho --use-max-pods false\n"),
            None
        );
        assert_eq!(max_pods_from_base64("not base64 at all!"), None);
    }

    #[test]
    fn base64_is_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("max-pods = 8\n");
        assert_eq!(max_pods_from_base64(&encoded), Some(8));
    }
}
