//! Leaks in both directions, every 30 s: an instance of this cluster's node pools that no NodeClaim accounts for
//! (older than 30 s, so a launch being recorded is not mistaken for one; its NodeClaim confirmed gone by a read
//! from the API server; at most 50 a pass) is terminated; a NodeClaim whose
//! instance is gone is deleted; a launch template no launch used for an hour is deleted (the next launch that needs
//! it makes it again).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use super::leader::Leadership;
use super::{Context, Error, conditions};
use crate::apis::nodeclaim::NodeClaim;
use crate::cloud::CloudProvider;
use crate::cloud::instances::{self, InstanceSummary};

/// The `controller` label of this module's cloud calls.
const CONTROLLER: &str = "nodeclaim.garbagecollection";
const EVERY: Duration = Duration::from_secs(30);
/// An instance younger than this may belong to a launch whose NodeClaim status is still being written.
const MIN_AGE: Duration = Duration::from_secs(30);
/// A launch template unused for this long goes.
const TEMPLATE_IDLE: Duration = Duration::from_secs(3600);

pub async fn run(ctx: Arc<Context>, leadership: Leadership) {
    loop {
        tokio::time::sleep(EVERY).await;
        if !leadership.is_leader() {
            continue;
        }
        if let Err(error) = collect(&ctx).await {
            tracing::warn!("garbage collection failed, retrying: {error}");
        }
    }
}

/// The instances no NodeClaim accounts for, old enough to be sure. `claims` maps each NodeClaim to the instance
/// it recorded, if any: an instance tagged for a NodeClaim that recorded another one is a duplicate, and goes.
pub fn orphans<'a>(
    instances: &'a [InstanceSummary],
    claims: &HashMap<String, Option<String>>,
    now: SystemTime,
) -> Vec<&'a InstanceSummary> {
    let recorded: HashSet<&str> = claims.values().flatten().map(String::as_str).collect();
    instances
        .iter()
        .filter(|i| i.is_alive())
        .filter(|i| !recorded.contains(i.instance_id.as_str()))
        // Tagged for a NodeClaim still launching (nothing recorded yet): its launch may be about to record it.
        .filter(|i| i.nodeclaim.as_ref().is_none_or(|c| !matches!(claims.get(c), Some(None))))
        .filter(|i| i.launch_time.is_some_and(|t| now.duration_since(t).unwrap_or_default() > MIN_AGE))
        .collect()
}

/// At most this many instances are terminated per pass: a wrong picture of the cluster (a cache gone empty, a bug)
/// must not take every node at once. The rest wait for the next pass.
const MAX_TERMINATIONS_PER_PASS: usize = 50;

/// What the API server itself (not the controller's cache) says of a NodeClaim: `None` when it does not exist,
/// else the instance it recorded, if any.
#[async_trait::async_trait]
pub trait NodeClaimLookup: Send + Sync {
    async fn recorded_instance(&self, nodeclaim: &str) -> Result<Option<Option<String>>, kube::Error>;
}

#[async_trait::async_trait]
impl NodeClaimLookup for Api<NodeClaim> {
    async fn recorded_instance(&self, nodeclaim: &str) -> Result<Option<Option<String>>, kube::Error> {
        Ok(self.get_opt(nodeclaim).await?.map(|claim| {
            claim
                .status
                .and_then(|s| s.provider_id)
                .and_then(|p| instances::instance_id_from_provider_id(&p).map(str::to_string))
        }))
    }
}

/// Terminates the listed instances that no NodeClaim accounts for (`orphans`), each confirmed with a read of its
/// NodeClaim from the API server, at most [`MAX_TERMINATIONS_PER_PASS`]; returns their ids.
async fn terminate_orphans(
    cloud: &dyn CloudProvider,
    lookup: &dyn NodeClaimLookup,
    instances: &[InstanceSummary],
    claims: &HashMap<String, Option<String>>,
) -> Result<Vec<String>, Error> {
    let mut leaked: Vec<String> = Vec::new();
    let candidates = orphans(instances, claims, SystemTime::now());
    for instance in &candidates {
        if leaked.len() == MAX_TERMINATIONS_PER_PASS {
            tracing::warn!(
                left = candidates.len() - leaked.len(),
                "more instances than {MAX_TERMINATIONS_PER_PASS} look leaked; the rest wait for the next pass"
            );
            break;
        }
        if let Some(nodeclaim) = &instance.nodeclaim {
            match lookup.recorded_instance(nodeclaim).await? {
                // Still launching, or the cache was behind: its NodeClaim accounts for it.
                Some(None) => continue,
                Some(Some(recorded)) if recorded == instance.instance_id => continue,
                // Gone, or it recorded another instance (this one is a duplicate).
                None | Some(Some(_)) => {}
            }
        }
        leaked.push(instance.instance_id.clone());
    }
    if !leaked.is_empty() {
        tracing::warn!(instances = ?leaked, "terminating instances no NodeClaim accounts for");
        cloud.terminate_instances(&leaked).await?;
    }
    Ok(leaked)
}

pub async fn collect(ctx: &Context) -> Result<(), Error> {
    let cluster = &ctx.settings.cluster_name;
    let cloud = ctx.cloud(CONTROLLER);
    let instances = cloud.node_pool_instances(cluster).await?;
    let claims = ctx.state.nodeclaims.state();
    let recorded: HashMap<String, Option<String>> = claims
        .iter()
        .map(|c| {
            let id = c
                .status
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(instances::instance_id_from_provider_id)
                .map(str::to_string);
            (c.name_any(), id)
        })
        .collect();

    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    terminate_orphans(&cloud, &api, &instances, &recorded).await?;

    // NodeClaims whose launched instance EC2 no longer runs.
    let alive: HashSet<&str> = instances.iter().filter(|i| i.is_alive()).map(|i| i.instance_id.as_str()).collect();
    for claim in &claims {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(status) = claim.status.as_ref() else { continue };
        let Some(id) = status.provider_id.as_deref().and_then(instances::instance_id_from_provider_id) else {
            continue;
        };
        if alive.contains(id) || !conditions::is_true(&status.conditions, "Launched") {
            continue;
        }
        // Confirm with a direct read: the filtered list may lag behind a launch.
        if cloud.describe_instance(id).await?.is_some_and(|i| i.is_alive()) {
            continue;
        }
        tracing::info!(nodeclaim = %claim.name_any(), instance = id, "its instance is gone; deleting the NodeClaim");
        match api.delete(&claim.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if super::is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }

    let recently_used: HashSet<String> = ctx
        .caches()
        .templates_used
        .lock()
        .map(|used| used.iter().filter(|(_, at)| at.elapsed() < TEMPLATE_IDLE).map(|(name, _)| name.clone()).collect())
        .unwrap_or_default();
    let deleted = cloud.delete_unused_launch_templates(cluster, &recently_used, TEMPLATE_IDLE).await?;
    if !deleted.is_empty() {
        tracing::info!(templates = ?deleted, "deleted launch templates no launch used for an hour");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, claim: Option<&str>, age_secs: u64, now: SystemTime) -> InstanceSummary {
        InstanceSummary {
            zone: "z".into(),
            nodeclaim: claim.map(str::to_string),
            nodepool: Some("default".into()),
            launch_time: Some(now - Duration::from_secs(age_secs)),
            owning_clusters: vec!["demo".into()],
            owner: Some("demo".into()),
            ..crate::cloud::fake::running_instance(id)
        }
    }

    /// NodeClaims as the API server has them: name → recorded instance.
    struct ApiServer(HashMap<String, Option<String>>);

    #[async_trait::async_trait]
    impl NodeClaimLookup for ApiServer {
        async fn recorded_instance(&self, nodeclaim: &str) -> Result<Option<Option<String>>, kube::Error> {
            Ok(self.0.get(nodeclaim).cloned())
        }
    }

    #[tokio::test]
    async fn an_instance_the_cache_missed_but_the_api_server_accounts_for_stays() {
        let cloud = crate::cloud::fake::FakeCloud::default();
        cloud.add_instance("i-recorded", Some("default-new"), Duration::from_secs(600));
        cloud.add_instance("i-launching", Some("default-launching"), Duration::from_secs(600));
        cloud.add_instance("i-duplicate", Some("default-new"), Duration::from_secs(600));
        cloud.add_instance("i-gone", Some("default-gone"), Duration::from_secs(600));
        let listed = cloud.node_pool_instances("demo").await.expect("a list");
        // The cache knows none of these NodeClaims (it is behind, or was just started).
        let api = ApiServer(HashMap::from([
            ("default-new".to_string(), Some("i-recorded".to_string())),
            ("default-launching".to_string(), None),
        ]));
        let mut leaked = terminate_orphans(&cloud, &api, &listed, &HashMap::new()).await.expect("terminated");
        leaked.sort();
        assert_eq!(leaked, ["i-duplicate", "i-gone"]);
        assert_eq!(cloud.state_of("i-recorded").as_deref(), Some("running"));
        assert_eq!(cloud.state_of("i-launching").as_deref(), Some("running"));
    }

    #[tokio::test]
    async fn a_pass_terminates_at_most_its_cap_and_the_next_pass_the_rest() {
        let cloud = crate::cloud::fake::FakeCloud::default();
        for i in 0..MAX_TERMINATIONS_PER_PASS + 7 {
            cloud.add_instance(&format!("i-{i:04}"), None, Duration::from_secs(600));
        }
        let api = ApiServer(HashMap::new());
        let listed = cloud.node_pool_instances("demo").await.expect("a list");
        let first = terminate_orphans(&cloud, &api, &listed, &HashMap::new()).await.expect("terminated");
        assert_eq!(first.len(), MAX_TERMINATIONS_PER_PASS);
        let listed = cloud.node_pool_instances("demo").await.expect("a list");
        let second = terminate_orphans(&cloud, &api, &listed, &HashMap::new()).await.expect("terminated");
        assert_eq!(second.len(), 7);
    }

    #[tokio::test]
    async fn orphans_are_terminated_through_the_cloud_and_accounted_instances_stay() {
        let cloud = crate::cloud::fake::FakeCloud::default();
        cloud.add_instance("i-recorded", Some("default-a"), Duration::from_secs(600));
        cloud.add_instance("i-leaked", None, Duration::from_secs(600));
        cloud.add_instance("i-young", None, Duration::from_secs(5));
        let listed = cloud.node_pool_instances("demo").await.expect("a list");
        let claims = HashMap::from([("default-a".to_string(), Some("i-recorded".to_string()))]);
        let leaked = terminate_orphans(&cloud, &ApiServer(claims.clone()), &listed, &claims).await.expect("terminated");
        assert_eq!(leaked, ["i-leaked"]);
        assert_eq!(cloud.state_of("i-leaked").as_deref(), Some("shutting-down"));
        assert_eq!(cloud.state_of("i-recorded").as_deref(), Some("running"));
        assert_eq!(cloud.state_of("i-young").as_deref(), Some("running"));
    }

    #[tokio::test]
    async fn a_denied_terminate_is_an_error_naming_the_action() {
        let cloud = crate::cloud::fake::FakeCloud::default();
        cloud.add_instance("i-leaked", None, Duration::from_secs(600));
        let listed = cloud.node_pool_instances("demo").await.expect("a list");
        cloud.fail_next("TerminateInstances", "UnauthorizedOperation");
        let api = ApiServer(HashMap::new());
        let error = terminate_orphans(&cloud, &api, &listed, &HashMap::new()).await.expect_err("denied");
        let Error::Cloud(error) = error else { panic!("not a cloud error: {error}") };
        assert_eq!(error.code(), "UnauthorizedOperation");
        assert_eq!(cloud.state_of("i-leaked").as_deref(), Some("running"));
    }

    #[test]
    fn only_old_unclaimed_instances_and_duplicates_are_orphans() {
        let now = SystemTime::now();
        let instances = [
            instance("i-launching", Some("default-launching"), 600, now),
            instance("i-recorded", Some("default-abc"), 600, now),
            instance("i-duplicate", Some("default-abc"), 600, now),
            instance("i-young", Some("gone"), 5, now),
            instance("i-orphan", Some("gone"), 600, now),
            instance("i-untagged", None, 600, now),
        ];
        let claims = HashMap::from([
            ("default-launching".to_string(), None),
            ("default-abc".to_string(), Some("i-recorded".to_string())),
        ]);
        let found: Vec<&str> = orphans(&instances, &claims, now).iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(found, ["i-duplicate", "i-orphan", "i-untagged"]);
    }
}
