//! The command line as a user meets it: the real binary, its output and its exit codes.

use std::process::Command;

use serde_json::Value;

fn nodesmith(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodesmith")).args(args).output().expect("the nodesmith binary runs")
}

#[test]
fn version_as_json_names_the_served_apis() {
    let output = nodesmith(&["version", "--output", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["api_versions"], serde_json::json!(["karpenter.sh/v1", "karpenter.k8s.aws/v1"]));
}

#[test]
fn version_as_a_table_for_people() {
    let output = nodesmith(&["version"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.starts_with(&format!("version  {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("apis     karpenter.sh/v1, karpenter.k8s.aws/v1"), "{text}");
}

#[test]
fn a_wrong_flag_is_a_usage_error_that_names_it() {
    let output = nodesmith(&["version", "--outptu", "json"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--outptu"), "{stderr}");
    assert!(stderr.contains("--output"), "suggests the flag meant: {stderr}");
}

#[test]
fn an_invalid_log_level_is_refused_with_what_to_use() {
    let output = nodesmith(&["--log-level", "nodesmith=loud", "version"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --log-level"), "{stderr}");
    assert!(output.stdout.is_empty());
}

fn tsv_max_pods(args: &[&str]) -> std::collections::HashMap<String, u32> {
    let output = nodesmith(&[&["max-pods", "--output", "tsv"], args].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (name, pods) = line.split_once('\t').expect("instance_type<TAB>max_pods");
            (name.to_string(), pods.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn max_pods_equals_aws_eni_max_pods_table_for_every_type_in_both() {
    let ours = tsv_max_pods(&[]);
    let mut compared = 0;
    for line in include_str!("data/eni-max-pods.txt").lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, expected) = line.split_once(' ').expect("two columns");
        if let Some(pods) = ours.get(name) {
            assert_eq!(pods.to_string(), expected.trim(), "{name}");
            compared += 1;
        }
    }
    assert!(compared > 1000, "only {compared} types in both");
}

#[test]
fn max_pods_with_prefix_delegation_follows_the_formula_and_caps() {
    let ours = tsv_max_pods(&[
        "--prefix-delegation",
        "--instance-type",
        "m5.large",
        "--instance-type",
        "t3.micro",
        "--instance-type",
        "m5.24xlarge",
        "--instance-type",
        "t2.micro",
    ]);
    assert_eq!(ours["m5.large"], 110);
    assert_eq!(ours["t3.micro"], 34);
    assert_eq!(ours["m5.24xlarge"], 250);
    // Xen: no prefixes, the ENI formula.
    assert_eq!(ours["t2.micro"], 4);
    let capped = tsv_max_pods(&["--prefix-delegation", "--pods-per-core", "20", "--instance-type", "m5.large"]);
    assert_eq!(capped["m5.large"], 40);
}

#[test]
fn max_pods_names_an_unknown_type_and_the_likely_one() {
    let output = nodesmith(&["max-pods", "--instance-type", "m5.lrage"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown instance type \"m5.lrage\" (did you mean m5.large?)"), "{stderr}");
}

fn nodesmith_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodesmith"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the nodesmith binary runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("output")
}

#[test]
fn plan_places_every_workload_pod_or_says_why_not() {
    let output = nodesmith(&[
        "plan",
        "--pods",
        "tests/data/plan/workloads.yaml",
        "--nodepool",
        "tests/data/plan/nodepools.yaml",
        "--output",
        "json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plan: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let nodes = plan["nodes"].as_array().expect("nodes");
    let placed: usize = nodes.iter().map(|n| n["pods"].as_array().map_or(0, Vec::len)).sum();
    // 12 web replicas, 4 report pods at once (parallelism 4 of 10 completions), the arm64 pod; the giant does not fit.
    assert_eq!(placed, 17);
    assert_eq!(plan["unschedulable"][0]["pod"], "default/giant");
    assert!(plan["unschedulable"][0]["reason"].as_str().expect("reason").contains("requests 500 CPU"));
    for node in nodes {
        let options = node["instance_type_options"].as_array().expect("options");
        assert!(!options.is_empty() && options.len() <= 60);
        assert_eq!(node["instance_type"], options[0]);
    }
    // The report Job requires on-demand, and the arm64 pod arm64: the heavier graviton pool takes them.
    let total: f64 = nodes.iter().map(|n| n["price_per_hour"].as_f64().expect("price")).sum();
    assert!((plan["total_price_per_hour"].as_f64().expect("total") - total).abs() < 1e-9);
}

#[test]
fn plan_prices_each_region_with_its_own_prices_and_says_where_they_come_from() {
    let plan_in = |region: &str| -> Value {
        let args = ["plan", "--pods", "tests/data/plan/workloads.yaml", "--region", region, "--output", "json"];
        let output = nodesmith(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("JSON")
    };
    let virginia = plan_in("us-east-1");
    let ireland = plan_in("eu-west-1");
    assert_eq!(
        (virginia["region"].clone(), virginia["on_demand_prices"].clone()),
        ("us-east-1".into(), "karpenter-table".into())
    );
    assert_eq!(ireland["on_demand_prices"], "regional-snapshot");
    assert_eq!(ireland["spot_prices"], "regional-snapshot");
    let total = |plan: &Value| plan["total_price_per_hour"].as_f64().expect("total");
    assert!(total(&ireland) > 0.0 && (total(&ireland) - total(&virginia)).abs() > 1e-6, "{ireland}\n{virginia}");
    // The offline catalog knows every commercial region's zones, and says what it describes.
    for plan in [&virginia, &ireland] {
        assert!(plan["zones_note"].is_null(), "{plan}");
        assert!(plan["catalog"].as_str().is_some_and(|c| c.starts_with("embedded") && c.contains("2025")), "{plan}");
    }
    let ireland_nodes = ireland["nodes"].as_array().expect("nodes");
    assert!(!ireland_nodes.is_empty());
    for node in ireland_nodes {
        let zone = node["zone"].as_str().expect("zone");
        assert!(["eu-west-1a", "eu-west-1b", "eu-west-1c"].contains(&zone), "an eu-west-1 zone: {node}");
        assert_eq!(node["price_source"], "regional-snapshot", "{node}");
    }
    let nowhere = plan_in("xx-nowhere-1");
    assert_eq!(nowhere["on_demand_prices"], "home-region-stand-in");
    assert_eq!(nowhere["spot_prices"], "spot-estimate");
    assert!(nowhere["zones_note"].as_str().is_some_and(|n| n.contains("xx-nowhere-1")));
}

#[test]
fn max_pods_lists_the_types_of_the_region_asked_for() {
    let listed = |region: &str| -> Vec<String> {
        let output = nodesmith(&["max-pods", "--region", region, "--output", "json"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert!(report["source"].as_str().is_some_and(|s| s.contains(region)), "{report}");
        let rows = report["instance_types"].as_array().expect("rows");
        rows.iter().map(|r| r["instance_type"].as_str().expect("name").to_string()).collect()
    };
    let (virginia, cape_town) = (listed("us-east-1"), listed("af-south-1"));
    assert!(cape_town.contains(&"m5.large".to_string()));
    assert!(
        cape_town.len() < virginia.len(),
        "{} types in af-south-1, {} in us-east-1",
        cape_town.len(),
        virginia.len()
    );
}

#[test]
fn plan_reads_stdin_and_a_default_nodepool() {
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: a, resources: {requests: {cpu: 100m}}}]\n";
    let output = nodesmith_with_stdin(&["plan", "--pods", "-"], pods);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.contains("1 new node for 1 pod"), "{text}");
    assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("default ")), "{text}");
}

#[test]
fn plan_says_which_file_and_line_is_wrong() {
    let dir = std::env::temp_dir().join(format!("nodesmith-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let malformed = dir.join("malformed.yaml");
    std::fs::write(
        &malformed,
        "kind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: a}]\n---\nkind: Pod\nmetadata:\n  name: [b\n",
    )
    .expect("write");
    let output = nodesmith(&["plan", "--pods", malformed.to_str().expect("path")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("malformed.yaml:8:"), "{stderr}");

    let wrong_kind = dir.join("service.yaml");
    std::fs::write(&wrong_kind, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").expect("write");
    let output = nodesmith(&["plan", "--pods", wrong_kind.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("service.yaml:1: kind Service is not expected here (expected Pod or Deployment or StatefulSet or ReplicaSet or Job)"), "{stderr}");

    let bad_pool = dir.join("pool.yaml");
    std::fs::write(
        &bad_pool,
        "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: p}\nspec:\n  template:\n    spec:\n      requirements: [{key: a, operator: Inn, values: [b]}]\n",
    )
    .expect("write");
    let output = nodesmith(&[
        "plan",
        "--pods",
        "tests/data/plan/workloads.yaml",
        "--nodepool",
        bad_pool.to_str().expect("path"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pool.yaml:1: NodePool p: requirement on a: operator \"Inn\" is not one of"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// IAM names carry the region, so the node role render fills in needs one.
#[test]
fn render_names_the_node_role_of_the_region_and_asks_for_one_when_it_has_none() {
    let render = |extra: &[&str]| {
        let mut args = vec!["render", "--cluster", "demo", "--output", "json"];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_nodesmith"))
            .args(&args)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .expect("the nodesmith binary runs")
    };
    let none = render(&[]);
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("pass --region") && stderr.contains("--node-role"), "{stderr}");
    let west = render(&["--region", "us-west-2"]);
    assert!(west.status.success(), "{}", String::from_utf8_lossy(&west.stderr));
    assert!(String::from_utf8_lossy(&west.stdout).contains("nodesmith-node-demo-us-west-2"));
    let named = render(&["--node-role", "my-nodes"]);
    assert!(named.status.success(), "{}", String::from_utf8_lossy(&named.stderr));
    assert!(String::from_utf8_lossy(&named.stdout).contains("my-nodes"));
}

#[test]
fn a_pod_that_asks_for_nothing_gets_the_rendered_default_pool_not_arm64_or_gpu() {
    let dir = std::env::temp_dir().join(format!("nodesmith-render-plan-{}", std::process::id()));
    let output =
        nodesmith(&["render", "--cluster", "demo", "--region", "us-east-1", "--out", dir.to_str().expect("path")]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let pool = |name: &str| dir.join(format!("nodepool-{name}.yaml")).to_str().expect("path").to_string();
    let pools = [pool("default"), pool("on-demand"), pool("arm64"), pool("gpu")];
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  containers:\n    - name: app\n      \
                image: app\n      resources: {requests: {cpu: '1', memory: 1Gi}}\n";
    let mut args = vec!["plan", "--pods", "-", "--output", "json", "--nodepool"];
    args.extend(pools.iter().map(String::as_str));
    let output = nodesmith_with_stdin(&args, pods);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plan: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(plan["nodes"][0]["nodepool"], "default", "{plan}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn status_and_explain_without_a_cluster_to_read_say_how_to_get_one() {
    for args in [&["status"][..], &["explain", "pod", "shop/web"], &["explain", "node", "ip-10-0-0-1"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_nodesmith"))
            .args(args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", "/nonexistent")
            .output()
            .expect("runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no Kubernetes cluster to read") && stderr.contains("KUBECONFIG"),
            "{args:?}: {stderr}"
        );
    }
}
