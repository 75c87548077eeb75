//! Finds the `maxPods` a node's bootstrap would hand its kubelet, in the three user-data dialects nodesmith writes:
//! AL2023 nodeadm NodeConfig (`maxPods: N`, possibly inside a MIME multipart document), AL2 bootstrap.sh
//! (`--max-pods=N` in the kubelet extra args) and Bottlerocket TOML (`max-pods = N`).

use base64::Engine;

/// `user_data` is the base64 text EC2 stores. `None` when it sets no max pods.
pub fn max_pods_from_base64(user_data: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(user_data.trim()).ok()?;
    max_pods_from_text(&String::from_utf8_lossy(&bytes))
}

pub fn max_pods_from_text(text: &str) -> Option<u32> {
    // The last setting wins, as it would for a kubelet flag given twice or a merged NodeConfig.
    text.lines().rev().find_map(max_pods_on_line)
}

fn max_pods_on_line(line: &str) -> Option<u32> {
    // (key, the character between key and value; a flag may also take its value after a space)
    const KEYS: [(&str, char, bool); 3] =
        [("maxPods", ':', false), ("--max-pods", '=', true), ("max-pods", '=', false)];
    KEYS.iter().find_map(|&(key, separator, space_separates)| {
        let at = line.find(key)?;
        let after_key = &line[at + key.len()..];
        // A JSON key ends with its closing quote.
        let after_key = after_key.strip_prefix('"').unwrap_or(after_key);
        let trimmed = after_key.trim_start();
        let value = match trimmed.strip_prefix(separator) {
            Some(value) => value,
            None if space_separates && trimmed.len() < after_key.len() => trimmed,
            None => return None,
        };
        let digits: String =
            value.trim_start_matches([' ', '"', '\'']).chars().take_while(char::is_ascii_digit).collect();
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
        assert_eq!(max_pods_from_text("bootstrap.sh demo --kubelet-extra-args '--max-pods 17'"), Some(17));
    }

    #[test]
    fn bottlerocket_toml() {
        let text = "[settings.kubernetes]\ncluster-name = \"demo\"\nmax-pods = 234\n";
        assert_eq!(max_pods_from_text(text), Some(234));
    }

    #[test]
    fn json_node_config() {
        assert_eq!(max_pods_from_text(r#"{"kubelet":{"config":{"maxPods": 29}}}"#), Some(29));
    }

    #[test]
    fn user_data_without_max_pods() {
        assert_eq!(max_pods_from_text("#!/bin/bash\necho --use-max-pods false\n"), None);
        assert_eq!(max_pods_from_base64("not base64 at all!"), None);
    }

    #[test]
    fn base64_is_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("max-pods = 8\n");
        assert_eq!(max_pods_from_base64(&encoded), Some(8));
    }
}
