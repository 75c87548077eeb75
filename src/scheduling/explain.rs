//! Why a pod fits nowhere, in words a person can act on.

use std::collections::HashMap;

use super::bitset::BitSet;
use super::model::{PodRequest, Taint, Toleration};
use super::options::{Catalog, Compat, Pool, apply_requirements, cached_compat, distinct_values, max_allocatable};
use super::plan::NodePoolRefusal;
use super::requirements::Requirement;
use crate::catalog::resources::{ResourceName, format_quantity};

/// For each NodePool, the first thing that rules it out for the pod; where none of the pod's own requirements
/// stands in the way, its `topology` (pod affinity, anti-affinity, spread) is why.
pub(super) fn why_unschedulable(
    pod: &PodRequest,
    pools: &[Pool],
    catalog: &Catalog,
    cache: &mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
    topology: Option<String>,
) -> Vec<NodePoolRefusal> {
    pools
        .iter()
        .enumerate()
        .map(|(p, pool)| NodePoolRefusal {
            nodepool: pool.spec.name.clone(),
            reason: refusal(p, pool, pod, catalog, cache, topology.as_deref()),
        })
        .collect()
}

fn refusal(
    p: usize,
    pool: &Pool,
    pod: &PodRequest,
    catalog: &Catalog,
    cache: &mut HashMap<(usize, Vec<Requirement>), Option<Compat>>,
    topology: Option<&str>,
) -> String {
    if let Some(taint) = untolerated(&pod.tolerations, &pool.spec.taints) {
        return format!("the pod does not tolerate its taint {}", describe_taint(taint));
    }
    if pool.base.types.is_empty() {
        return "no instance type meets its own requirements".into();
    }
    let Some(compat) = cached_compat(cache, p, &pod.requirements, pool, catalog) else {
        let blocking = pod
            .requirements
            .iter()
            .find(|r| apply_requirements(&pool.base, std::slice::from_ref(r), catalog).is_none());
        return match blocking {
            Some(r) => match pool.base.custom.get(&r.key) {
                // A label of the pool's own (its template's labels or requirements), not of an instance type.
                Some(values) => format!("its nodes get {}={}, and the pod requires {r}", r.key, values.join(",")),
                None => format!("no instance type it allows has {r}"),
            },
            None => "no instance type it allows meets all of the pod's requirements".into(),
        };
    };
    let largest = max_allocatable(&compat.types, pool);
    if let Some(resource) = pod.requests.first_exceeding(&largest) {
        let requested = format!("{} {}", format_quantity(resource, pod.requests.get(resource)), unit(resource));
        return match largest.get(resource) {
            0 => format!("the pod requests {requested}, and no instance type it allows has any"),
            most => format!(
                "the pod requests {requested}; the largest instance type it allows has {} allocatable",
                format_quantity(resource, most)
            ),
        };
    }
    let mut fitting = compat.types.clone();
    fitting.retain(|t| pod.requests.fits_in(&pool.allocatable[t]));
    if let Some((key, min)) = unmet_min_values(&fitting, pool, catalog) {
        return format!(
            "the instance types that fit the pod have fewer than minValues {min} distinct values of {key} (the \
             controller's minValues policy is Strict)"
        );
    }
    if let Some(why) = limits_block(pool, &fitting, catalog) {
        return why;
    }
    if let Some(topology) = topology {
        return topology.to_string();
    }
    if pool.remaining_limits.is_some() {
        return "its limits leave no room for a node that fits the pod".into();
    }
    "no single instance type holds all of the pod's requests".into()
}

fn unit(resource: ResourceName) -> String {
    if resource == ResourceName::Cpu { "CPU".to_string() } else { resource.as_str().to_string() }
}

/// Why the pool's limits leave no room for any type that fits the pod: what is left of the limit that the type
/// that comes closest still exceeds. None when some fitting type is within the limits.
fn limits_block(pool: &Pool, fitting: &BitSet, catalog: &Catalog) -> Option<String> {
    let remaining = pool.remaining_limits?;
    if fitting.iter().any(|t| pool.capacity[t].fits_in(&remaining)) {
        return None;
    }
    let (t, resource) = fitting
        .iter()
        .filter_map(|t| Some((t, pool.capacity[t].first_exceeding(&remaining)?)))
        .min_by(|&(a, ra), &(b, rb)| {
            let (name_a, name_b) = (&catalog.types[a].name, &catalog.types[b].name);
            pool.capacity[a].get(ra).cmp(&pool.capacity[b].get(rb)).then_with(|| name_a.cmp(name_b))
        })?;
    let left = remaining.get(resource).max(0);
    Some(format!(
        "its limits are reached: {} {} left under them, and the smallest instance type that fits the pod ({}) \
         has {}",
        format_quantity(resource, left),
        unit(resource),
        catalog.types[t].name,
        format_quantity(resource, pool.capacity[t].get(resource)),
    ))
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
