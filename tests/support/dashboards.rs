//! What a Grafana dashboard reads from Prometheus: every metric its PromQL names (panels and variables), with the
//! labels each query reads it by, found by parsing the queries (`promql-parser`), and checked against what a
//! `/metrics` page shows or the chart README's list of Karpenter metrics nodesmith does not export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use promql_parser::label::Labels;
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};

/// The dashboards of Karpenter's getting-started guide, vendored (see `tests/data/karpenter/SOURCE.md`).
pub const KARPENTER_DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/karpenter");
/// The chart's own dashboards.
pub const CHART_DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/nodesmith/dashboards");
const CHART_README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/nodesmith/README.md");

/// Labels no exporter sets: Prometheus adds them to every series it scrapes (the target's job and instance, the
/// pod of the chart README's scrape config, the cluster label of a multi-cluster setup).
const TARGET_LABELS: [&str; 4] = ["job", "instance", "pod", "cluster"];

/// One metric a dashboard reads, the labels it reads it by, and where.
#[derive(Debug, Clone)]
pub struct Read {
    pub dashboard: String,
    pub panel: String,
    pub metric: String,
    pub labels: BTreeSet<String>,
}

/// Every metric read by the dashboards in `dir` (`*.json`).
pub fn reads_of_dashboards(dir: &str) -> Result<Vec<Read>> {
    let mut reads = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        reads.extend(reads_of_dashboard(path)?);
    }
    Ok(reads)
}

fn reads_of_dashboard(path: &Path) -> Result<Vec<Read>> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let variables = Variables::of(&dashboard);
    let mut queries: Vec<(String, String)> = Vec::new();
    collect_panel_queries(dashboard["panels"].as_array().context("no panels")?, &mut queries);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = match &variable["query"] {
            serde_json::Value::String(q) => q.clone(),
            other => other["query"].as_str().unwrap_or_default().to_string(),
        };
        if variable["type"] == "query" && !query.is_empty() {
            let label = variable["name"].as_str().unwrap_or_default();
            queries.push((format!("variable {label}"), label_values_query(&query)));
        }
    }
    let mut reads = Vec::new();
    for (panel, query) in queries {
        for expanded in variables.expand(&query) {
            let expr = parser::parse(&expanded)
                .map_err(|e| anyhow::anyhow!("{name}, {panel}: cannot parse {expanded:?}: {e}"))?;
            let mut found = BTreeMap::new();
            collect(&expr, &BTreeSet::new(), &mut found);
            for (metric, labels) in found {
                reads.push(Read { dashboard: name.clone(), panel: panel.clone(), metric, labels });
            }
        }
    }
    if reads.is_empty() {
        bail!("{name} reads no metric");
    }
    Ok(reads)
}

/// Every metric alerting or recording rules read: `groups` as in a Prometheus rule file (or a PrometheusRule's
/// spec); `source` names where they come from.
pub fn reads_of_rules(groups: &serde_json::Value, source: &str) -> Result<Vec<Read>> {
    let mut reads = Vec::new();
    for group in groups.as_array().context("no rule groups")? {
        for rule in group["rules"].as_array().context("a rule group without rules")? {
            let name = rule["alert"].as_str().or_else(|| rule["record"].as_str()).unwrap_or_default();
            let expr = rule["expr"].as_str().with_context(|| format!("{source}: rule {name} has no expr"))?;
            let parsed = parser::parse(expr)
                .map_err(|e| anyhow::anyhow!("{source}, rule {name}: cannot parse {expr:?}: {e}"))?;
            let mut found = BTreeMap::new();
            collect(&parsed, &BTreeSet::new(), &mut found);
            for (metric, labels) in found {
                reads.push(Read { dashboard: source.to_string(), panel: format!("rule {name}"), metric, labels });
            }
        }
    }
    Ok(reads)
}

/// Grafana's `label_values(selector, label)` as the PromQL query it stands for, grouped by that label.
fn label_values_query(query: &str) -> String {
    let Some(inner) = query.trim().strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) else {
        return query.to_string();
    };
    match inner.rsplit_once(',') {
        Some((selector, label)) => format!("count by ({}) ({})", label.trim(), selector.trim()),
        None => format!("count by ({}) (up)", inner.trim()),
    }
}

fn collect_panel_queries(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        if let Some(inner) = panel["panels"].as_array() {
            collect_panel_queries(inner, out);
        }
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
        }
    }
}

/// A dashboard's template variables: a custom one stands for each of its options; any other for any value.
struct Variables {
    custom: Vec<(String, Vec<String>)>,
}

impl Variables {
    fn of(dashboard: &serde_json::Value) -> Self {
        let custom = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["type"] == "custom")
            .map(|v| {
                let options = v["query"].as_str().unwrap_or_default().split(',').map(|o| o.trim().to_string());
                (v["name"].as_str().unwrap_or_default().to_string(), options.collect())
            })
            .collect();
        Self { custom }
    }

    /// The query once for each option of each custom variable it uses; Grafana's interval variables as 5m, and
    /// any other variable as the regular expression that matches everything.
    fn expand(&self, query: &str) -> Vec<String> {
        let mut expanded = vec![query.replace("$__rate_interval", "5m").replace("$__interval", "5m")];
        for (name, options) in &self.custom {
            let token = format!("${name}");
            if !expanded.iter().any(|q| q.contains(&token)) {
                continue;
            }
            expanded = expanded.iter().flat_map(|q| options.iter().map(|o| q.replace(&token, o))).collect();
        }
        expanded.into_iter().map(|q| other_variables_match_anything(&q)).collect()
    }
}

fn other_variables_match_anything(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic() || *n == '_' || *n == '{') {
            while chars.peek().is_some_and(|n| n.is_ascii_alphanumeric() || matches!(n, '_' | '{' | '}')) {
                chars.next();
            }
            out.push_str(".*");
        } else {
            out.push(c);
        }
    }
    out
}

/// Each metric under `expr`, with the labels the query reads it by: its matchers, and the grouping and matching
/// labels of the aggregations and binary operations around it.
fn collect(expr: &Expr, around: &BTreeSet<String>, found: &mut BTreeMap<String, BTreeSet<String>>) {
    let with = |labels: &Labels| -> BTreeSet<String> { around.iter().cloned().chain(labels.labels.clone()).collect() };
    match expr {
        Expr::VectorSelector(selector) => selected(selector, around, found),
        Expr::MatrixSelector(matrix) => selected(&matrix.vs, around, found),
        Expr::Aggregate(aggregate) => {
            let labels = match &aggregate.modifier {
                Some(LabelModifier::Include(labels) | LabelModifier::Exclude(labels)) => with(labels),
                None => around.clone(),
            };
            collect(&aggregate.expr, &labels, found);
        }
        Expr::Binary(binary) => {
            let labels = match binary.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(labels) | LabelModifier::Exclude(labels)) => with(labels),
                None => around.clone(),
            };
            collect(&binary.lhs, &labels, found);
            collect(&binary.rhs, &labels, found);
        }
        Expr::Unary(unary) => collect(&unary.expr, around, found),
        Expr::Paren(paren) => collect(&paren.expr, around, found),
        Expr::Subquery(subquery) => collect(&subquery.expr, around, found),
        Expr::Call(call) => {
            // label_replace(v, dst, replacement, src, regex) reads label `src` of v.
            let mut labels = around.clone();
            if call.func.name == "label_replace"
                && let Some(Expr::StringLiteral(source)) = call.args.args.get(3).map(|a| a.as_ref())
            {
                labels.insert(source.val.clone());
            }
            for arg in &call.args.args {
                collect(arg, &labels, found);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selected(selector: &VectorSelector, around: &BTreeSet<String>, found: &mut BTreeMap<String, BTreeSet<String>>) {
    let name = selector
        .name
        .clone()
        .or_else(|| selector.matchers.matchers.iter().find(|m| m.name == "__name__").map(|m| m.value.clone()));
    let Some(name) = name else { return };
    let labels = found.entry(name).or_default();
    labels.extend(around.iter().cloned());
    labels.extend(selector.matchers.matchers.iter().filter(|m| m.name != "__name__").map(|m| m.name.clone()));
}

/// The series names of a `/metrics` page and the labels each carries.
pub fn scraped_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = series.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
            labels.extend(label_names(body));
        }
    }
    series
}

/// The names of `a="x",b="y, z"` (values may hold commas and escaped quotes).
fn label_names(body: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(eq) = rest.find("=\"") {
        names.push(rest[..eq].trim_start_matches(',').trim().to_string());
        let value = &rest[eq + 2..];
        let mut end = 0;
        let bytes = value.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        rest = value.get(end + 1..).unwrap_or_default();
    }
    names
}

/// The metrics the chart README says nodesmith does not export, each with why: the rows of its table whose first
/// cell is a metric name in backquotes.
pub fn documented_as_not_exported() -> Result<BTreeMap<String, String>> {
    let readme = std::fs::read_to_string(CHART_README)?;
    let section = readme
        .split("### Karpenter metrics nodesmith does not export")
        .nth(1)
        .context("the chart README has no section \"Karpenter metrics nodesmith does not export\"")?;
    let mut listed = BTreeMap::new();
    for row in section.lines().take_while(|l| !l.starts_with("## ")).filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        if let [metric, why, ..] = cells.as_slice() {
            listed.insert(metric.trim_matches('`').to_string(), why.to_string());
        }
    }
    Ok(listed)
}

/// Labels a dashboard reads by that the metric does not carry in Karpenter either, each with why it is harmless.
const NOT_LABELS_OF_KARPENTER: [(&str, &str, &str); 1] = [(
    "karpenter_voluntary_disruption_decisions_total",
    "nodepool",
    "Karpenter's capacity dashboard groups it by nodepool, a label it has never had (see \
     karpenter_voluntary_disruption_decisions_by_nodepool_total)",
)];

/// What of `reads` `/metrics` (`scraped`) does not show: a metric without a series, or without a label a query
/// reads it by. A metric the README lists as not exported is skipped, and is a failure if it is in fact exported.
pub fn missing(reads: &[Read], scraped: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<String>> {
    let not_exported = documented_as_not_exported()?;
    let mut missing = BTreeSet::new();
    for read in reads {
        let place = format!("{} ({})", read.dashboard, read.panel);
        if not_exported.contains_key(&read.metric) {
            if scraped.contains_key(&read.metric) {
                missing.insert(format!("{}: exported, yet the chart README lists it as not", read.metric));
            }
            continue;
        }
        let Some(labels) = scraped.get(&read.metric) else {
            missing.insert(format!("{}: no series, read by {place}", read.metric));
            continue;
        };
        for label in &read.labels {
            let harmless = TARGET_LABELS.contains(&label.as_str())
                || NOT_LABELS_OF_KARPENTER.iter().any(|(m, l, _)| *m == read.metric && l == label);
            if !harmless && !labels.contains(label) {
                missing.insert(format!("{}: no label {label}, read by {place}", read.metric));
            }
        }
    }
    Ok(missing.into_iter().collect())
}
