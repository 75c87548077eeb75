//! The Helm chart against the pinned Helm and the sandbox's API server: `helm lint`, the values schema, every
//! rendered object through server-side dry-run, and the RBAC the end-to-end tests ran under, read back from the
//! API server's audit log.
//!
//! `the_chart_grants_nothing_the_controller_does_not_use` reads what the controller tests did, so `scripts/test`
//! runs it on its own after every other sandbox test.

mod support;

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
use support::chart::{CHART_DIR, HelmValue, apply, render, run_helm};
use support::yaml::parse_documents;
use support::{Sandbox, sandbox_env};

#[test]
#[ignore = "needs the sandbox's Helm (make test)"]
fn helm_lint_passes_and_the_schema_names_each_bad_value() -> Result<()> {
    let lint = run_helm(&["lint", CHART_DIR, "--strict", "--set", "settings.clusterName=demo"])?;
    ensure!(lint.is_ok(), "helm lint failed: {lint:?}");

    let bad = run_helm(&[
        "lint",
        CHART_DIR,
        "--set",
        "settings.clusterName=demo,replicas=two,settings.rebalance=sometimes,setings.clusterName=typo",
        "--set",
        "extraEnv[0].name=RUST_BACKTRACE,extraEnv[0].value=1",
    ])?;
    let Err(error) = bad else { bail!("helm lint accepted bad values: {bad:?}") };
    for expected in [
        "'/replicas': got string, want integer",
        "'/settings/rebalance': value must be one of 'event', 'replace'",
        "additional properties 'setings' not allowed",
        // The API server would refuse a number here; the schema says so before anything is installed.
        "'/extraEnv/0/value': got number, want string",
    ] {
        ensure!(error.contains(expected), "helm lint's error does not say {expected:?}:\n{error}");
    }

    let unnamed = run_helm(&["template", "nodesmith", CHART_DIR, "--kube-version", "1.36.3"])?;
    let Err(error) = unnamed else { bail!("helm template rendered without settings.clusterName") };
    ensure!(error.contains("settings.clusterName is required"), "{error}");
    Ok(())
}

/// The variants a user installs: the defaults with IRSA and an interruption queue; everything optional turned on;
/// an existing ServiceAccount (Pod Identity) with a pinned digest.
const VARIANTS: [&[HelmValue]; 3] = [
    &[
        ("settings.clusterName", "demo"),
        ("settings.interruptionQueue", "nodesmith-demo"),
        ("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn", "arn:aws:iam::123456789012:role/nodesmith"),
    ],
    &[
        ("settings.clusterName", "demo"),
        ("settings.clusterEndpoint", "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com"),
        ("settings.rebalance", "replace"),
        ("settings.awsRegion", "eu-west-1"),
        ("settings.observe", "true"),
        ("serviceMonitor.enabled", "true"),
        ("serviceMonitor.labels.release", "kube-prometheus-stack"),
        ("dashboards.enabled", "true"),
        ("prometheusRule.enabled", "true"),
        ("prometheusRule.labels.release", "kube-prometheus-stack"),
        ("extraEnv[0].name", "RUST_BACKTRACE"),
        ("extraEnv[0].value", "full"),
        ("extraNodeAffinityExpressions[0].key", "eks.amazonaws.com/nodegroup"),
        ("extraNodeAffinityExpressions[0].operator", "In"),
        ("extraNodeAffinityExpressions[0].values[0]", "system"),
    ],
    &[
        ("settings.clusterName", "demo"),
        ("serviceAccount.create", "false"),
        ("serviceAccount.name", "nodesmith-pod-identity"),
        ("image.digest", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("podDisruptionBudget.enabled", "false"),
        ("service.enabled", "false"),
    ],
];

#[tokio::test]
#[ignore = "needs the sandbox (make test)"]
async fn every_rendered_object_passes_server_side_dry_run() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    install_operator_crd(&sandbox, "NODESMITH_SERVICEMONITOR_CRD", "servicemonitors.monitoring.coreos.com").await?;
    install_operator_crd(&sandbox, "NODESMITH_PROMETHEUSRULE_CRD", "prometheusrules.monitoring.coreos.com").await?;
    let namespace = sandbox.namespace("chart").await?;
    for (variant, values) in VARIANTS.iter().enumerate() {
        let objects = render("nodesmith", &namespace, values, true)?;
        let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        for object in &objects {
            apply(&sandbox.kube, object, true).await.with_context(|| format!("variant {variant}"))?;
        }
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").context("no Deployment")?;
        check_deployment(deployment, values).with_context(|| format!("variant {variant}"))?;
        match variant {
            0 => ensure!(
                kinds.contains("ServiceAccount")
                    && !kinds.contains("ServiceMonitor")
                    && !kinds.contains("PrometheusRule"),
                "{kinds:?}"
            ),
            1 => {
                ensure!(kinds.contains("ServiceMonitor") && kinds.contains("PrometheusRule"), "{kinds:?}");
                let dashboards = objects
                    .iter()
                    .filter(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
                    .count();
                ensure!(dashboards == 2, "expected the capacity and performance dashboards, got {dashboards}");
            }
            _ => ensure!(
                !kinds.contains("ServiceAccount")
                    && !kinds.contains("PodDisruptionBudget")
                    && !kinds.contains("Service"),
                "{kinds:?}"
            ),
        }
    }
    sandbox.delete_namespace(&namespace).await
}

#[tokio::test]
#[ignore = "needs the sandbox (make test)"]
async fn the_values_file_setup_writes_installs_the_chart_for_its_cluster() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let values_file = std::env::temp_dir().join(format!("nodesmith-values-{}.yaml", std::process::id()));
    let output = support::nodesmith()?
        .args(["setup", "--cluster", &sandbox.cluster, "--node-access", "aws-auth", "--output", "json", "--values-out"])
        .arg(&values_file)
        .output()?;
    ensure!(output.status.success(), "setup failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let namespace = sandbox.namespace("chart-setup").await?;
    let objects = support::chart::render_with_files("nodesmith", &namespace, &[values_file.as_path()], &[], false)?;
    std::fs::remove_file(&values_file)?;
    for object in &objects {
        apply(&sandbox.kube, object, true).await?;
    }
    let account = objects.iter().find(|o| o["kind"] == "ServiceAccount").context("no ServiceAccount")?;
    ensure!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == report["outputs"]["controller_role_arn"],
        "the ServiceAccount does not carry setup's controller role: {account}"
    );
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").context("no Deployment")?;
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().context("env")?;
    let value_of = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
    ensure!(value_of("CLUSTER_NAME") == Some(sandbox.cluster.clone().into()), "{env:?}");
    ensure!(value_of("INTERRUPTION_QUEUE") == Some(report["outputs"]["interruption_queue"].clone()), "{env:?}");
    sandbox.delete_namespace(&namespace).await
}

/// What the issue asks of the Deployment, read from the rendered object.
fn check_deployment(deployment: &serde_json::Value, values: &[HelmValue]) -> Result<()> {
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let observe = values.iter().any(|(k, v)| *k == "settings.observe" && *v == "true");
    // Observing, one replica: it takes no Lease.
    ensure!(deployment["spec"]["replicas"] == if observe { 1 } else { 2 }, "replicas");
    ensure!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1, "maxUnavailable");
    ensure!(pod["priorityClassName"] == "system-cluster-critical", "priority class");
    let node_terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    ensure!(
        node_terms["nodeSelectorTerms"][0]["matchExpressions"][0]
            == serde_json::json!({"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"}),
        "the controller could land on a node it manages: {node_terms}"
    );
    ensure!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
            == "kubernetes.io/hostname",
        "hostname anti-affinity"
    );
    ensure!(pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone", "zone spread");
    ensure!(pod["nodeSelector"]["kubernetes.io/os"] == "linux", "linux nodes");
    let tolerations = pod["tolerations"].as_array().context("tolerations")?;
    ensure!(tolerations.iter().any(|t| t["key"] == "CriticalAddonsOnly"), "CriticalAddonsOnly toleration");
    ensure!(
        tolerations
            .iter()
            .any(|t| t["key"] == nodesmith::names::CONTROLLER_ONLY_TAINT_KEY && t["operator"] == "Exists"),
        "the controller does not tolerate the nodes `migrate from-cluster-autoscaler` keeps for it: {tolerations:?}"
    );
    let security = &container["securityContext"];
    ensure!(security["readOnlyRootFilesystem"] == true && security["allowPrivilegeEscalation"] == false, "{security}");
    ensure!(security["capabilities"]["drop"] == serde_json::json!(["ALL"]), "{security}");
    ensure!(pod["securityContext"]["runAsNonRoot"] == true, "non-root");
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "seccomp");
    ensure!(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe");
    ensure!(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe");
    // Each `settings.*` value reaches the controller as the environment variable its flag reads.
    let env = container["env"].as_array().context("env")?;
    let value_of = |name: &str| env.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str());
    for (key, variable) in [
        ("settings.clusterName", "CLUSTER_NAME"),
        ("settings.clusterEndpoint", "CLUSTER_ENDPOINT"),
        ("settings.interruptionQueue", "INTERRUPTION_QUEUE"),
        ("settings.rebalance", "REBALANCE"),
        ("settings.awsRegion", "AWS_REGION"),
        ("settings.observe", "OBSERVE"),
    ] {
        if let Some((_, value)) = values.iter().find(|(k, _)| *k == key) {
            ensure!(value_of(variable) == Some(value), "{key}={value} did not become {variable}: {env:?}");
        }
    }
    ensure!(observe || value_of("OBSERVE").is_none(), "OBSERVE set without settings.observe: {env:?}");
    ensure!(value_of("BATCH_IDLE_DURATION") == Some("1s") && value_of("BATCH_MAX_DURATION") == Some("10s"), "{env:?}");
    ensure!(value_of("INSTANCE_TYPES_REFRESH") == Some("1h") && value_of("PRICES_REFRESH") == Some("12h"), "{env:?}");
    Ok(())
}

/// A Prometheus Operator CRD (pinned in versions.env; its file named by `variable`), so the chart's objects of
/// that kind are validated too.
async fn install_operator_crd(sandbox: &Sandbox, variable: &str, name: &str) -> Result<()> {
    let env = sandbox_env()?;
    let path = env.get(variable).with_context(|| format!("{variable} is not set: restart the sandbox"))?;
    let crd = parse_documents(&std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?)?;
    let crd = crd.first().with_context(|| format!("an empty CRD file {path}"))?;
    apply(&sandbox.kube, crd, false).await?;
    support::wait_established(&sandbox.kube, name).await
}

/// The chart's alerts as Helm renders them: `promtool check rules` accepts them, `promtool test rules` fires each
/// on the series it is for with its labels and annotations (tests/data/alerts/nodesmith.test.yaml), and every
/// metric an expression reads is one the controller exports, with the labels it is read by.
#[test]
#[ignore = "needs the sandbox's Helm and promtool (make test)"]
fn the_alerts_pass_promtool_and_read_only_what_the_controller_exports() -> Result<()> {
    let objects = render(
        "nodesmith",
        "nodesmith",
        &[("settings.clusterName", "demo"), ("prometheusRule.enabled", "true")],
        false,
    )?;
    let rule = objects.iter().find(|o| o["kind"] == "PrometheusRule").context("no PrometheusRule rendered")?;
    let groups = &rule["spec"]["groups"];
    let alerts: Vec<&str> = groups
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    ensure!(alerts.len() >= 8, "{alerts:?}");

    let dir = std::env::temp_dir().join(support::unique_name("alerts"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("nodesmith.rules.yaml"),
        serde_yaml_ng::to_string(&serde_json::json!({"groups": groups}))?,
    )?;
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/alerts/nodesmith.test.yaml");
    std::fs::copy(tests, dir.join("nodesmith.test.yaml"))?;
    let env = sandbox_env()?;
    let promtool = env.get("NODESMITH_PROMTOOL").context("NODESMITH_PROMTOOL is not set: restart the sandbox")?;
    let run = |args: &[&str]| std::process::Command::new(promtool).current_dir(&dir).args(args).output();
    let checked = run(&["check", "rules", "nodesmith.rules.yaml"])?;
    let tested = run(&["test", "rules", "nodesmith.test.yaml"])?;
    std::fs::remove_dir_all(&dir)?;
    let said = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    ensure!(checked.status.success(), "promtool check rules:\n{}", said(&checked));
    ensure!(tested.status.success(), "promtool test rules:\n{}", said(&tested));
    // Every alert has a test that fires it.
    let test_file = std::fs::read_to_string(tests)?;
    for alert in &alerts {
        ensure!(test_file.contains(&format!("alertname: {alert}")), "{alert} has no promtool test");
    }

    let reads = support::dashboards::reads_of_rules(groups, "templates/prometheusrule.yaml")?;
    ensure!(reads.len() >= alerts.len(), "only {} metric reads in {} alerts", reads.len(), alerts.len());
    let scraped = support::dashboards::scraped_series(&support::metrics::sampled()?);
    let missing = support::dashboards::missing(&reads, &scraped)?;
    ensure!(missing.is_empty(), "{}", missing.join("\n"));
    Ok(())
}

/// One permission: API group, resource (with `/subresource`), verb.
type Permission = (String, String, String);

#[test]
#[ignore = "reads the audit log of the controller tests; scripts/test runs it after them"]
fn the_chart_grants_nothing_the_controller_does_not_use() -> Result<()> {
    let granted = granted_permissions()?;
    let env = sandbox_env()?;
    // A list of logs, as PATH is (make test runs two sandboxes and checks what both recorded).
    let audit_logs = env.get("NODESMITH_AUDIT_LOG").context("NODESMITH_AUDIT_LOG is not set")?;
    let mut audit = String::new();
    for log in std::env::split_paths(audit_logs) {
        audit += &std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        if !audit.ends_with('\n') {
            audit.push('\n');
        }
    }
    let mut used = BTreeSet::new();
    let mut forbidden = BTreeSet::new();
    for line in audit.lines() {
        let event: serde_json::Value = serde_json::from_str(line).context("an audit log line that is not JSON")?;
        let user = event["user"]["username"].as_str().unwrap_or_default();
        // The controller tests' releases: the chart's ServiceAccount (nodesmith) in namespace ctl-lease-*.
        let Some((namespace, account)) = user.strip_prefix("system:serviceaccount:").and_then(|u| u.split_once(':'))
        else {
            continue;
        };
        if !(namespace.starts_with("ctl-lease-") && account == "nodesmith") {
            continue;
        }
        let object = &event["objectRef"];
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or_default()),
            None => object["resource"].as_str().unwrap_or_default().to_string(),
        };
        let permission = (
            object["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            event["verb"].as_str().unwrap_or_default().to_string(),
        );
        // RBAC's verdict (a 403 can also come from admission, e.g. a namespace being deleted).
        if event["annotations"]["authorization.k8s.io/decision"] == "forbid" {
            forbidden.insert(permission.clone());
        }
        used.insert(permission);
    }
    ensure!(!used.is_empty(), "the audit log holds no request of a controller test's ServiceAccount");
    ensure!(forbidden.is_empty(), "the chart's RBAC refused the controller: {forbidden:?}");
    let unused: Vec<&Permission> = granted.difference(&used).collect();
    ensure!(unused.is_empty(), "the chart grants what the controller never used in the end-to-end tests: {unused:?}");
    let ungranted: Vec<&Permission> = used.difference(&granted).collect();
    ensure!(ungranted.is_empty(), "the controller used what the chart does not grant: {ungranted:?}");
    Ok(())
}

/// Every (group, resource, verb) the chart's ClusterRole and Role grant.
fn granted_permissions() -> Result<BTreeSet<Permission>> {
    let objects = render("nodesmith", "nodesmith", &[("settings.clusterName", "demo")], false)?;
    let mut granted = BTreeSet::new();
    for role in objects.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
        for rule in role["rules"].as_array().context("a role without rules")? {
            let list = |key: &str| -> Vec<String> {
                rule[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        ensure!(group != "*" && resource != "*" && verb != "*", "a wildcard rule: {rule}");
                        granted.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    Ok(granted)
}
