//! `nodesmith teardown`: everything setup and the controller made for a cluster, and nothing else.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use serde::Serialize;

use super::{CliError, GlobalArgs, Report};
use crate::bootstrap::report::{Action, Ledger, ResourceChange};
use crate::bootstrap::teardown::{self, TeardownOptions};

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// The cluster whose nodesmith resources go.
    #[arg(long)]
    pub cluster: String,
    /// Do not ask for confirmation (needed when not on a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Show what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave the cluster's NodePools and aws-auth mapping when its Kubernetes API cannot be reached (uninstall the
    /// controller first: it would replace the instances teardown terminates).
    #[arg(long)]
    pub skip_kubernetes: bool,
}

/// What went and what stayed (and why).
#[derive(Debug, Serialize)]
pub struct TeardownReport {
    pub changes: u32,
    pub dry_run: bool,
    pub deleted: Vec<ResourceChange>,
    pub kept: Vec<ResourceChange>,
    #[serde(skip)]
    ledger: Ledger,
}

pub async fn run(args: &TeardownArgs, global: &GlobalArgs) -> Result<TeardownReport, CliError> {
    if !args.dry_run && !args.yes {
        confirm(&args.cluster)?;
    }
    let sdk = crate::aws::sdk_config(global.region.as_deref()).await;
    let kube = crate::bootstrap::kube_target::KubeTarget::infer().await;
    let (progress, observer) = super::progress::Progress::start("teardown");
    let options = TeardownOptions {
        cluster: args.cluster.clone(),
        dry_run: args.dry_run,
        kube,
        skip_kubernetes: args.skip_kubernetes,
        progress: Some(observer),
    };
    let ledger = teardown::run(&sdk, &options).await;
    progress.finish();
    let ledger = ledger?;
    let (deleted, kept) = ledger.resources.iter().cloned().partition(|r| r.action == Action::Deleted);
    Ok(TeardownReport { changes: ledger.changes, dry_run: ledger.dry_run, deleted, kept, ledger })
}

impl Report for TeardownReport {
    fn human(&self) -> String {
        self.ledger.human()
    }
}

/// On a terminal, the user types the cluster's name; elsewhere `--yes` is required.
fn confirm(cluster: &str) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::NotConfirmed(format!(
            "teardown deletes the nodesmith resources of cluster {cluster}; not on a terminal, so pass --yes \
             (or --dry-run to see what would go)"
        )));
    }
    eprint!("This deletes every nodesmith resource of cluster {cluster}. Type the cluster's name to go on: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() == cluster {
        Ok(())
    } else {
        Err(CliError::NotConfirmed(format!("{:?} is not {cluster:?}; nothing was deleted", answer.trim())))
    }
}
