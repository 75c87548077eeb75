//! Shadow mode (`controller --observe`) in the sandbox: beside a workload no autoscaler serves, the controller
//! says what it would launch (metrics, and Events on the pods and the NodePool) and changes nothing: the AWS
//! proxy's log shows only reads, the API server's audit log only reads and Events. Needs `make sandbox-up`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use nodesmith_sandbox::fault_proxy::FaultPlan;
use support::controller::*;
use support::{sandbox_env, wait_until};

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn observing_says_what_it_would_launch_and_changes_nothing() -> Result<()> {
    let test = ControllerTest::with_simple_pool("observe").await?;
    let (aws_proxy, aws_log) = support::aws_fault_proxy(FaultPlan::default()).await?;
    let controller = test.start(Start { aws_endpoint: Some(&aws_proxy), args: &["--observe"], ..Start::default() })?;
    test.run(async |t| {
        let (sandbox, test) = (&t.sandbox, &t.name);
        deployment(sandbox, &t.namespace, test, 3, "1", "1Gi").await?;

        // What it would launch: nodes of the test's pool, and what they cost.
        let launches = format!("nodesmith_observe_launches{{nodepool=\"{test}\"");
        let price = format!("nodesmith_observe_launch_price_dollars_per_hour{{nodepool=\"{test}\"}}");
        let nodes = wait_until("the observing controller's plan in its metrics", RUN_WAIT, || async {
            // Not listening yet while it starts.
            let Ok(text) = support::controller::http_get(controller.metrics_port, "/metrics").await else {
                return Ok(None);
            };
            let nodes: f64 = text
                .lines()
                .filter(|l| l.starts_with(&launches))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let dollars = controller.metric(&price).await?;
            Ok((nodes >= 1.0 && dollars > 0.0).then_some(nodes))
        })
        .await?;
        // Three pods of one CPU: at most one node each.
        ensure!(nodes <= 3.0, "{nodes} nodes for three pods");

        // Each pod, and the NodePool, are told.
        let events: Api<Event> = Api::all(sandbox.kube.clone());
        wait_until("WouldLaunch Events on the pods and the NodePool", RUN_WAIT, || async {
            let all = events.list(&ListParams::default().fields("reason=WouldLaunch")).await?.items;
            let on_pods: BTreeSet<String> = all
                .iter()
                .filter(|e| e.involved_object.namespace.as_deref() == Some(t.namespace.as_str()))
                .filter_map(|e| e.involved_object.name.clone())
                .collect();
            let on_pool = all.iter().any(|e| {
                e.involved_object.kind.as_deref() == Some("NodePool")
                    && e.involved_object.name.as_deref() == Some(test.as_str())
                    && e.message.as_deref().is_some_and(|m| m.contains("pending pod(s)"))
            });
            Ok((on_pods.len() == 3 && on_pool).then_some(()))
        })
        .await?;

        // A while longer, for any write to show: garbage collection and disruption pass every 30 and 10 s.
        tokio::time::sleep(Duration::from_secs(35)).await;
        ensure!(nodeclaims_of(sandbox, test).await?.is_empty(), "an observing controller created a NodeClaim");
        ensure!(running_pods(sandbox, &t.namespace).await?.is_empty(), "a pod runs: something launched a node");

        let actions = aws_log.actions.lock().map(|a| a.clone()).unwrap_or_default();
        let reads = ["Describe", "Get", "List"];
        let writes: BTreeSet<&String> =
            actions.iter().filter(|a| !reads.iter().any(|r| a.starts_with(r) || a.starts_with("GET "))).collect();
        ensure!(!actions.is_empty(), "no AWS request went through the proxy");
        ensure!(writes.is_empty(), "AWS calls that change something: {writes:?}");

        let env = sandbox_env()?;
        let audit_log = env.get("NODESMITH_AUDIT_LOG").context("NODESMITH_AUDIT_LOG is not set")?;
        let user = format!("system:serviceaccount:{}:nodesmith", t.controller_namespace);
        let mut requests = 0;
        let mut changes = BTreeSet::new();
        for line in std::fs::read_to_string(audit_log)?.lines() {
            let event: serde_json::Value = serde_json::from_str(line)?;
            if event["user"]["username"] != user.as_str() {
                continue;
            }
            requests += 1;
            let verb = event["verb"].as_str().unwrap_or_default();
            let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
            if !["get", "list", "watch"].contains(&verb) && resource != "events" {
                changes.insert(format!("{verb} {resource}"));
            }
        }
        ensure!(requests > 0, "the audit log holds no request of the observing controller ({user})");
        ensure!(changes.is_empty(), "the observing controller changed the cluster: {changes:?}");
        ensure!(
            controller.log_lines_with("not sent while observing") == 0
                && controller.log_lines_with("not called while observing") == 0,
            "a component tried to write and was stopped by the guard rail (see {})",
            controller.log.display()
        );
        Ok(())
    })
    .await
}
