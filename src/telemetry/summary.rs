//! Prometheus summaries, which prometheus-client does not have. Karpenter exports its pod startup and node
//! termination times as summaries, and its performance dashboard reads their quantiles (`quantile="0.9"`), so
//! they keep that type here: the quantiles of the observations of the last ten minutes, and the sum and count of
//! all of them, as Prometheus's Go client keeps them (its default window).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The quantiles Karpenter's summaries report.
pub const QUANTILES: [f64; 5] = [0.0, 0.5, 0.9, 0.99, 1.0];

/// How long an observation counts towards the quantiles.
pub const WINDOW: Duration = Duration::from_secs(600);

/// Observations kept per series at most: a burst beyond it keeps the newest (quantiles stay exact over those).
const MAX_KEPT: usize = 50_000;

#[derive(Debug, Default)]
struct Series {
    window: VecDeque<(Instant, f64)>,
    sum: f64,
    count: u64,
}

impl Series {
    fn observe(&mut self, now: Instant, value: f64) {
        self.sum += value;
        self.count += 1;
        if self.window.len() == MAX_KEPT {
            self.window.pop_front();
        }
        self.window.push_back((now, value));
    }

    fn forget_before(&mut self, now: Instant) {
        while self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > WINDOW) {
            self.window.pop_front();
        }
    }

    /// Each of `QUANTILES` over the window (NaN when it is empty, as Prometheus's Go client reports).
    fn quantiles(&self) -> [f64; QUANTILES.len()] {
        let mut values: Vec<f64> = self.window.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        QUANTILES.map(|q| quantile(&values, q))
    }
}

/// The `q`-quantile of sorted `values`: the smallest value at or above that share of them.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Less a hair, so that 0.9 × 100 (90.00000000000001 in floating point) is rank 90.
    let rank = (q * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// One summary metric, with one series per set of label values. A summary without labels always shows (as a
/// Go one does); a labelled series shows from its first observation.
#[derive(Debug)]
pub struct SummaryFamily {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl SummaryFamily {
    pub fn new(name: &'static str, help: &'static str, label_names: &'static [&'static str]) -> Self {
        let mut series = BTreeMap::new();
        if label_names.is_empty() {
            series.insert(Vec::new(), Series::default());
        }
        Self { name, help, label_names, series: Mutex::new(series) }
    }

    /// Records `value` under `label_values` (one per label name, in order).
    pub fn observe(&self, label_values: &[&str], value: f64) {
        self.observe_at(Instant::now(), label_values, value);
    }

    fn observe_at(&self, now: Instant, label_values: &[&str], value: f64) {
        debug_assert_eq!(label_values.len(), self.label_names.len(), "{}: label values", self.name);
        let key = label_values.iter().map(|v| (*v).to_string()).collect();
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        series.entry(key).or_default().observe(now, value);
    }

    /// The OpenMetrics text of the family.
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        self.encode_at(Instant::now(), out)
    }

    fn encode_at(&self, now: Instant, out: &mut String) -> std::fmt::Result {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writeln!(out, "# HELP {} {}", self.name, self.help)?;
        writeln!(out, "# TYPE {} summary", self.name)?;
        for (values, one) in series.iter_mut() {
            one.forget_before(now);
            let labels: Vec<String> = self
                .label_names
                .iter()
                .zip(values)
                .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
                .collect();
            for (q, value) in QUANTILES.iter().zip(one.quantiles()) {
                let mut with_quantile = labels.clone();
                with_quantile.push(format!("quantile=\"{q}\""));
                writeln!(out, "{}{{{}}} {}", self.name, with_quantile.join(","), number(value))?;
            }
            let plain = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            writeln!(out, "{}_sum{plain} {}", self.name, number(one.sum))?;
            writeln!(out, "{}_count{plain} {}", self.name, one.count)?;
        }
        Ok(())
    }
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

fn number(value: f64) -> String {
    if value.is_nan() { "NaN".into() } else { value.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_of_the_last_ten_minutes_and_sum_and_count_of_everything() {
        let family = SummaryFamily::new("karpenter_nodes_termination_duration_seconds", "help", &["nodepool"]);
        let start = Instant::now();
        family.observe_at(start, &["default"], 1000.0);
        for value in 1..=100 {
            family.observe_at(start + WINDOW, &["default"], f64::from(value));
        }
        let mut text = String::new();
        family.encode_at(start + WINDOW + Duration::from_secs(1), &mut text).expect("encodes");
        let name = "karpenter_nodes_termination_duration_seconds";
        for expected in [
            format!("# TYPE {name} summary"),
            format!(r#"{name}{{nodepool="default",quantile="0"}} 1"#),
            format!(r#"{name}{{nodepool="default",quantile="0.5"}} 50"#),
            format!(r#"{name}{{nodepool="default",quantile="0.9"}} 90"#),
            format!(r#"{name}{{nodepool="default",quantile="0.99"}} 99"#),
            format!(r#"{name}{{nodepool="default",quantile="1"}} 100"#),
            format!(r#"{name}_sum{{nodepool="default"}} 6050"#),
            format!(r#"{name}_count{{nodepool="default"}} 101"#),
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn an_unlabelled_summary_shows_before_its_first_observation_and_a_labelled_one_after() {
        let unlabelled = SummaryFamily::new("karpenter_pods_startup_duration_seconds", "help", &[]);
        let mut text = String::new();
        unlabelled.encode(&mut text).expect("encodes");
        assert!(text.contains(r#"karpenter_pods_startup_duration_seconds{quantile="0.5"} NaN"#), "{text}");
        assert!(text.contains("karpenter_pods_startup_duration_seconds_count 0"), "{text}");

        let labelled = SummaryFamily::new("x_seconds", "help", &["nodepool"]);
        let mut text = String::new();
        labelled.encode(&mut text).expect("encodes");
        assert!(!text.contains("x_seconds{"), "{text}");
        labelled.observe(&["a \"quoted\" pool"], 2.0);
        let mut text = String::new();
        labelled.encode(&mut text).expect("encodes");
        assert!(text.contains(r#"x_seconds_count{nodepool="a \"quoted\" pool"} 1"#), "{text}");
    }

    #[test]
    fn a_burst_beyond_what_is_kept_keeps_the_newest() {
        let family = SummaryFamily::new("s", "help", &[]);
        let now = Instant::now();
        for value in 0..(MAX_KEPT + 10) {
            family.observe_at(now, &[], value as f64);
        }
        let mut text = String::new();
        family.encode_at(now, &mut text).expect("encodes");
        assert!(text.contains(r#"s{quantile="0"} 10"#), "{text}");
        assert!(text.contains(&format!("s_count {}", MAX_KEPT + 10)), "{text}");
    }
}
