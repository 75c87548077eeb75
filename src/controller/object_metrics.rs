//! Karpenter's per-object metrics, from the shared watches: the status conditions of NodeClaims, Nodes, NodePools
//! and EC2NodeClasses (what operatorpkg reports for Karpenter), and when pods are bound and start. Gauges are
//! computed from the caches at each scrape (`object_gauges`); transitions are counted as each change arrives,
//! against the cached copy it replaces (`ObjectTransitions`, a `state::Changes`). Only the leader counts, so sums
//! over replicas do not double-count.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::leader::Leadership;
use super::state::Changes;
use crate::apis::ec2nodeclass::EC2NodeClass;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;
use crate::apis::pod::Pod;
use crate::names::{EC2NODECLASS_LABEL, NODE_INITIALIZED_LABEL, NODEPOOL_LABEL};
use crate::telemetry::Metrics;
use crate::telemetry::objects::{ConditionGauge, ObjectKind, ObjectLabels, TerminatingGauge};

/// A status condition as the metrics read it.
#[derive(Debug, PartialEq)]
pub struct ConditionView<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub since: Option<Timestamp>,
}

/// A kind whose status conditions are reported.
pub trait Reported: kube::Resource {
    const KIND: ObjectKind;
    fn conditions(&self) -> Vec<ConditionView<'_>>;
    /// The labels operatorpkg adds for the kind (read from the object's own labels).
    fn own_labels(&self) -> ObjectLabels;
}

fn view(conditions: &[Condition]) -> Vec<ConditionView<'_>> {
    conditions
        .iter()
        .map(|c| ConditionView {
            type_: &c.type_,
            status: &c.status,
            reason: &c.reason,
            since: Some(c.last_transition_time.0),
        })
        .collect()
}

fn label_of<K: kube::Resource>(object: &K, key: &str) -> String {
    object.meta().labels.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or_default()
}

impl Reported for NodeClaim {
    const KIND: ObjectKind = ObjectKind::NodeClaim;

    fn conditions(&self) -> Vec<ConditionView<'_>> {
        self.status.as_ref().map(|s| view(&s.conditions)).unwrap_or_default()
    }

    fn own_labels(&self) -> ObjectLabels {
        let class = Some(label_of(self, EC2NODECLASS_LABEL))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| self.spec.node_class_ref.name.clone());
        vec![("karpenter_k8s_aws_ec2nodeclass", class), ("karpenter_sh_nodepool", label_of(self, NODEPOOL_LABEL))]
    }
}

impl Reported for Node {
    const KIND: ObjectKind = ObjectKind::Node;

    fn conditions(&self) -> Vec<ConditionView<'_>> {
        let conditions = self.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
        conditions
            .iter()
            .map(|c| ConditionView {
                type_: &c.type_,
                status: &c.status,
                reason: c.reason.as_deref().unwrap_or_default(),
                since: c.last_transition_time.as_ref().map(|t| t.0),
            })
            .collect()
    }

    fn own_labels(&self) -> ObjectLabels {
        vec![
            ("karpenter_k8s_aws_ec2nodeclass", label_of(self, EC2NODECLASS_LABEL)),
            ("karpenter_sh_nodepool", label_of(self, NODEPOOL_LABEL)),
            ("karpenter_sh_initialized", label_of(self, NODE_INITIALIZED_LABEL)),
        ]
    }
}

impl Reported for NodePool {
    const KIND: ObjectKind = ObjectKind::NodePool;

    fn conditions(&self) -> Vec<ConditionView<'_>> {
        self.status.as_ref().map(|s| view(&s.conditions)).unwrap_or_default()
    }

    fn own_labels(&self) -> ObjectLabels {
        Vec::new()
    }
}

impl Reported for EC2NodeClass {
    const KIND: ObjectKind = ObjectKind::EC2NodeClass;

    fn conditions(&self) -> Vec<ConditionView<'_>> {
        self.status.as_ref().map(|s| view(&s.conditions)).unwrap_or_default()
    }

    fn own_labels(&self) -> ObjectLabels {
        Vec::new()
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

fn identity<K: kube::Resource>(object: &K) -> ObjectLabels {
    vec![("namespace", object.namespace().unwrap_or_default()), ("name", object.name_any())]
}

/// Each status condition of `objects`, and those of them being deleted, as they are at `now`.
pub fn object_gauges<K: Reported>(
    objects: &[Arc<K>],
    now: Timestamp,
    conditions: &mut Vec<ConditionGauge>,
    terminating: &mut Vec<TerminatingGauge>,
) {
    for object in objects {
        let own = object.own_labels();
        for condition in object.conditions() {
            let mut labels = identity(object.as_ref());
            labels.extend([
                ("type", condition.type_.to_string()),
                ("status", condition.status.to_string()),
                ("reason", condition.reason.to_string()),
            ]);
            labels.extend(own.iter().cloned());
            let seconds = condition.since.map_or(0.0, |since| seconds_between(since, now));
            conditions.push(ConditionGauge { kind: K::KIND, labels, seconds });
        }
        if let Some(deleted) = object.meta().deletion_timestamp.as_ref() {
            let mut labels = identity(object.as_ref());
            labels.extend(own);
            terminating.push(TerminatingGauge { kind: K::KIND, labels, seconds: seconds_between(deleted.0, now) });
        }
    }
}

/// A status condition that changed between two copies of an object: (type, status, reason now, the status
/// before and how long it held, when the condition was there before).
type Transition<'a> = (&'a str, &'a str, &'a str, Option<(&'a str, f64)>);

/// The conditions of `after` that are new or changed since `before`.
pub fn transitions<'a, K: Reported>(before: &'a K, after: &'a K) -> Vec<Transition<'a>> {
    let old = before.conditions();
    after
        .conditions()
        .into_iter()
        .filter_map(|now| {
            let was = old.iter().find(|c| c.type_ == now.type_);
            if was.is_some_and(|was| was.status == now.status && was.since == now.since) {
                return None;
            }
            let held = was.and_then(|was| Some((was.status, seconds_between(was.since?, now.since?))));
            Some((now.type_, now.status, now.reason, held))
        })
        .collect()
}

/// Counts what the watches see change, while this replica leads.
pub struct ObjectTransitions {
    metrics: Arc<Metrics>,
    leadership: Leadership,
}

impl ObjectTransitions {
    pub fn new(metrics: Arc<Metrics>, leadership: Leadership) -> Arc<Self> {
        Arc::new(Self { metrics, leadership })
    }
}

impl<K: Reported> Changes<K> for ObjectTransitions {
    fn changed(&self, before: Option<&K>, after: &K) {
        // An object first seen (created, or listed at start) has no transition this process saw.
        let Some(before) = before.filter(|_| self.leadership.is_leader()) else { return };
        let own = after.own_labels();
        for (type_, status, reason, held) in transitions(before, after) {
            self.metrics.condition_transition(K::KIND, type_, status, reason, &own, held);
        }
    }

    fn deleted(&self, last: &K) {
        let Some(deleted) = last.meta().deletion_timestamp.as_ref().filter(|_| self.leadership.is_leader()) else {
            return;
        };
        self.metrics.object_terminated(K::KIND, &last.own_labels(), seconds_between(deleted.0, Timestamp::now()));
    }
}

/// Pods: when each is bound, and when it runs, counted from its creation.
impl Changes<Pod> for ObjectTransitions {
    fn changed(&self, before: Option<&Pod>, after: &Pod) {
        let Some(before) = before.filter(|_| self.leadership.is_leader()) else { return };
        let Some(created) = after.metadata.creation_timestamp.as_ref() else { return };
        let age = || seconds_between(created.0, Timestamp::now());
        if before.node_name().is_none() && after.node_name().is_some() {
            self.metrics.pod_bound(age());
        }
        if !is_running(before) && is_running(after) {
            self.metrics.pod_started(age());
        }
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(yaml: &str) -> NodeClaim {
        serde_yaml_ng::from_str(yaml).expect("a NodeClaim")
    }

    const LAUNCHED: &str = r#"
metadata: {name: default-a, labels: {karpenter.sh/nodepool: default}}
spec: {nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}, requirements: []}
status:
  conditions:
  - {type: Launched, status: "True", reason: Launched, message: "", lastTransitionTime: "2026-12-05T03:00:00Z"}
  - {type: Ready, status: Unknown, reason: AwaitingReconciliation, message: "", lastTransitionTime: "2026-12-05T03:00:00Z"}
"#;

    const READY: &str = r#"
metadata: {name: default-a, labels: {karpenter.sh/nodepool: default}, deletionTimestamp: "2026-12-05T03:02:00Z"}
spec: {nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}, requirements: []}
status:
  conditions:
  - {type: Launched, status: "True", reason: Launched, message: "", lastTransitionTime: "2026-12-05T03:00:00Z"}
  - {type: Ready, status: "True", reason: Ready, message: "", lastTransitionTime: "2026-12-05T03:00:45Z"}
  - {type: Registered, status: "True", reason: Registered, message: "", lastTransitionTime: "2026-12-05T03:00:40Z"}
"#;

    #[test]
    fn a_changed_condition_is_a_transition_with_how_long_the_status_before_held() {
        let (before, after) = (claim(LAUNCHED), claim(READY));
        let changed = transitions(&before, &after);
        assert_eq!(
            changed,
            vec![("Ready", "True", "Ready", Some(("Unknown", 45.0))), ("Registered", "True", "Registered", None)],
            "Launched did not change; Ready held Unknown 45 s; Registered is new"
        );
        assert!(transitions(&after, &after).is_empty());
    }

    #[test]
    fn each_condition_is_a_gauge_with_the_kinds_labels_and_a_deletion_is_timed() {
        let now: Timestamp = "2026-12-05T03:03:00Z".parse().expect("a time");
        let (mut conditions, mut terminating) = (Vec::new(), Vec::new());
        object_gauges(&[Arc::new(claim(READY))], now, &mut conditions, &mut terminating);
        assert_eq!(conditions.len(), 3);
        let ready = conditions.iter().find(|c| c.labels.contains(&("type", "Ready".into()))).expect("Ready");
        assert_eq!(ready.seconds, 135.0);
        for label in [
            ("name", "default-a"),
            ("status", "True"),
            ("reason", "Ready"),
            ("karpenter_sh_nodepool", "default"),
            ("karpenter_k8s_aws_ec2nodeclass", "default"),
        ] {
            assert!(ready.labels.contains(&(label.0, label.1.to_string())), "{label:?} in {:?}", ready.labels);
        }
        assert_eq!(terminating.len(), 1);
        assert_eq!(terminating[0].seconds, 60.0);
        assert_eq!(terminating[0].kind, ObjectKind::NodeClaim);
    }

    #[test]
    fn transitions_are_counted_only_while_leading_and_only_for_objects_seen_before() {
        let metrics = Arc::new(Metrics::default());
        let leadership = Leadership::without_lease();
        let observer = ObjectTransitions::new(metrics.clone(), leadership);
        let (before, after) = (claim(LAUNCHED), claim(READY));
        Changes::changed(observer.as_ref(), None, &after);
        assert!(!metrics.encode().contains("operator_nodeclaim_status_condition_transitions_total{"));
        Changes::changed(observer.as_ref(), Some(&before), &after);
        Changes::deleted(observer.as_ref(), &after);
        let text = metrics.encode();
        for expected in [
            r#"operator_nodeclaim_status_condition_transitions_total{type="Ready",status="True",reason="Ready",karpenter_k8s_aws_ec2nodeclass="default",karpenter_sh_nodepool="default"} 1"#,
            r#"operator_nodeclaim_status_condition_transition_seconds_sum{type="Ready",status="Unknown",karpenter_k8s_aws_ec2nodeclass="default",karpenter_sh_nodepool="default"} 45.0"#,
            r#"operator_nodeclaim_termination_duration_seconds_count{karpenter_k8s_aws_ec2nodeclass="default",karpenter_sh_nodepool="default"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
        let follower = ObjectTransitions::new(Arc::new(Metrics::default()), Leadership::default());
        Changes::changed(follower.as_ref(), Some(&before), &after);
        assert!(!follower.metrics.encode().contains("operator_nodeclaim_status_condition_transitions_total{"));
    }
}
