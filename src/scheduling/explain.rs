//! Why a pod fits nowhere, in words a person can act on.

use std::collections::HashMap;

use super::bitset::BitSet;
use super::model::{PodRequest, Taint, Toleration};
use super::options::{Catalog, Compat, Pool, apply_requirements, cached_compat, distinct_values, max_allocatable};
use super::requirements::Requirement;
use crate::catalog::resources::{ResourceName, format_quantity};

/// A reason a person can act on, for each NodePool, from the pod's own requirements; where none of them stands in
/// the way, its `topology` (pod affinity, anti-affinity, spread) is why.
pub(super) fn why_unschedulable(
    pod: &PodRequest,
    pools: &[Pool],
    catalog: &Catalog,
    cache: &mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
    topology: Option<String>,
) -> String {
    if pools.is_empty() {
        return "no NodePool to launch a node from, and no existing node fits".to_string();
    }
    let reasons: Vec<String> = pools
        .iter()
        .enumerate()
        .map(|(p, pool)| {
            let name = &pool.spec.name;
            if let Some(taint) = untolerated(&pod.tolerations, &pool.spec.taints) {
                return format!("NodePool {name}: does not tolerate its taint {}", describe_taint(taint));
            }
            if pool.base.types.is_empty() {
                return format!("NodePool {name}: no instance type meets its own requirements");
            }
            let Some(compat) = cached_compat(cache, p, &pod.requirements, pool, catalog) else {
                let blocking = pod
                    .requirements
                    .iter()
                    .find(|r| apply_requirements(&pool.base, std::slice::from_ref(r), catalog).is_none());
                return match blocking {
                    Some(r) => format!("NodePool {name}: no instance type it allows has {r}"),
                    None => format!("NodePool {name}: no instance type it allows meets all of the pod's requirements"),
                };
            };
            let largest = max_allocatable(&compat.types, pool);
            if let Some(resource) = pod.requests.first_exceeding(&largest) {
                let unit =
                    if resource == ResourceName::Cpu { "CPU".to_string() } else { resource.as_str().to_string() };
                return format!(
                    "NodePool {name}: requests {} {unit}; the largest allowed type has {} allocatable",
                    format_quantity(resource, pod.requests.get(resource)),
                    format_quantity(resource, largest.get(resource)),
                );
            }
            let mut fitting = compat.types.clone();
            fitting.retain(|t| pod.requests.fits_in(&pool.allocatable[t]));
            if let Some((key, min)) = unmet_min_values(&fitting, pool, catalog) {
                return format!(
                    "NodePool {name}: the instance types that fit the pod have fewer than minValues {min} distinct \
                     values of {key} (the controller's minValues policy is Strict)"
                );
            }
            if let Some(topology) = &topology {
                return format!("NodePool {name}: {topology}");
            }
            if pool.remaining_limits.is_some() {
                return format!("NodePool {name}: its limits leave no room for a node that fits the pod");
            }
            format!("NodePool {name}: no single instance type holds all of the pod's requests")
        })
        .collect();
    reasons.join("; ")
}

/// The first requirement of the pool whose `minValues` the types do not meet, where some types are left.
fn unmet_min_values<'p>(types: &BitSet, pool: &'p Pool, catalog: &Catalog) -> Option<(&'p str, u32)> {
    if types.is_empty() {
        return None;
    }
    pool.spec.requirements.iter().find_map(|r| {
        let min = r.min_values?;
        (distinct_values(types, &r.key, catalog) < min as usize).then_some((r.key.as_str(), min))
    })
}

fn untolerated<'t>(tolerations: &[Toleration], taints: &'t [Taint]) -> Option<&'t Taint> {
    taints
        .iter()
        .filter(|t| t.effect != "PreferNoSchedule")
        .find(|taint| !tolerations.iter().any(|t| t.tolerates(taint)))
}

fn describe_taint(taint: &Taint) -> String {
    match &taint.value {
        Some(value) => format!("{}={}:{}", taint.key, value, taint.effect),
        None => format!("{}:{}", taint.key, taint.effect),
    }
}
