//! `nodesmith migrate manifests` over real public manifests of Karpenter's older APIs (tests/data/migrate, their
//! sources in SOURCE.md): every object it writes is accepted by the API server serving nodesmith's CRDs
//! (server-side dry run, unknown fields refused), and a file that is not valid YAML is refused with its line.
//! Needs `make sandbox-up`.

mod support;

use anyhow::{Context, Result, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, ValidationDirective};
use support::Sandbox;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/migrate");

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn every_converted_public_manifest_is_accepted_by_the_api_server() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    support::controller::install_crds(&sandbox).await?;
    let mut files: Vec<_> = std::fs::read_dir(FIXTURES)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let (mut pools, mut classes) = (0, 0);
    for path in &files {
        let file = path.to_string_lossy();
        let output = support::nodesmith()?
            .args(["migrate", "manifests", &file, "--role", "KarpenterNodeRole-demo", "--output", "json"])
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if file.contains("duplicate-taints") {
            // Invalid YAML (a key twice): refused, saying where.
            ensure!(!output.status.success() && stderr.contains("duplicate entry with key \"taints\""), "{stderr}");
            ensure!(stderr.contains(&format!("{file}:")), "the error names the file and line: {stderr}");
            continue;
        }
        ensure!(output.status.success(), "{file}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        for object in report["objects"].as_array().context("objects")? {
            dry_run(&sandbox.kube, object).await.with_context(|| format!("{file}: {object:#}"))?;
            match object["kind"].as_str() {
                Some("NodePool") => pools += 1,
                Some("EC2NodeClass") => classes += 1,
                _ => {}
            }
        }
        // The human form is the same objects, YAML after the findings as comments: ready for kubectl apply -f -.
        let human =
            support::nodesmith()?.args(["migrate", "manifests", &file, "--role", "KarpenterNodeRole-demo"]).output()?;
        let text = String::from_utf8_lossy(&human.stdout);
        ensure!(
            text.matches("\n---\n").count() + usize::from(text.starts_with("---\n"))
                >= report["objects"].as_array().map_or(0, Vec::len),
            "{text}"
        );
    }
    ensure!(pools >= 25 && classes >= 20, "{pools} NodePools and {classes} EC2NodeClasses converted");
    Ok(())
}

/// `--from-cluster` reads what a cluster of Karpenter v0.31 serves (its CRDs, vendored in tests/data/migrate/crds)
/// and converts it as the same manifests from a file are converted.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn old_objects_read_from_the_cluster_convert_as_their_manifests_do() -> Result<()> {
    let sandbox = Sandbox::connect().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(sandbox.kube.clone());
    let crd_files = ["karpenter.sh_provisioners.yaml", "karpenter.k8s.aws_awsnodetemplates.yaml"];
    for file in crd_files {
        let text = std::fs::read_to_string(format!("{FIXTURES}/crds/{file}"))?;
        let crd: CustomResourceDefinition = serde_json::from_value(
            documents(&text)?.into_iter().next().with_context(|| format!("{file} holds no CRD"))?,
        )?;
        let name = crd.metadata.name.clone().context("a CRD name")?;
        crds.patch(&name, &PatchParams::apply("nodesmith-migrate-test").force(), &Patch::Apply(&crd)).await?;
        support::wait_established(&sandbox.kube, &name).await?;
    }
    let fixture = format!("{FIXTURES}/v1alpha5-aws-examples-general-purpose.yaml");
    let text = std::fs::read_to_string(&fixture)?;
    let objects = documents(&text)?;
    ensure!(objects.len() == 2, "a Provisioner and an AWSNodeTemplate: {objects:#?}");
    for object in &objects {
        support::chart::apply(&sandbox.kube, object, false).await?;
    }
    let convert = |args: &[&str]| -> Result<serde_json::Value> {
        let output = support::nodesmith()?
            .args(["migrate", "manifests"])
            .args(args)
            .args(["--role", "KarpenterNodeRole-demo", "--output", "json"])
            .output()?;
        ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        Ok(serde_json::from_slice(&output.stdout)?)
    };
    let read = convert(&["--from-cluster"]);
    let from_file = convert(&[&fixture]);
    for object in &objects {
        support::chart::delete(&sandbox.kube, object).await?;
    }
    for file in crd_files {
        let name = file.trim_end_matches(".yaml").split_once('_').map(|(group, plural)| format!("{plural}.{group}"));
        crds.delete(&name.context("a CRD file name")?, &Default::default()).await?;
    }
    let (read, from_file) = (read?, from_file?);
    ensure!(read["objects"] == from_file["objects"], "from the cluster:\n{read:#}\nfrom the file:\n{from_file:#}");
    ensure!(read["findings"] == from_file["findings"], "{read:#}");
    Ok(())
}

/// The non-empty documents of a YAML text.
fn documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let all: Vec<serde_json::Value> =
        serde_yaml_ng::Deserializer::from_str(text).map(serde::Deserialize::deserialize).collect::<Result<_, _>>()?;
    Ok(all.into_iter().filter(|d| !d.is_null()).collect())
}

/// Server-side apply as a dry run, fields the schema does not know refused.
async fn dry_run(kube: &kube::Client, object: &serde_json::Value) -> Result<()> {
    let mut params = PatchParams::apply("nodesmith-migrate-test").force();
    params.dry_run = true;
    params.field_validation = Some(ValidationDirective::Strict);
    support::chart::apply_with(kube, object, &params).await
}
