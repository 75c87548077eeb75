//! Node requirements: the `key operator values` terms of nodeSelector, node affinity and NodePool
//! requirements, and how they match a label.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    /// Karpenter's: at least the value (NodePool requirements only; Kubernetes has Gt and Lt).
    Gte,
    /// Karpenter's: at most the value.
    Lte,
}

impl Operator {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            "Gt" => Self::Gt,
            "Lt" => Self::Lt,
            "Gte" => Self::Gte,
            "Lte" => Self::Lte,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
    /// NodePool `minValues`: at least this many distinct values of the key among a node's instance-type options.
    pub min_values: Option<u32>,
}

impl Requirement {
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Self {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
            min_values: None,
        }
    }

    /// `key=value`, as a nodeSelector entry means.
    pub fn equals(key: &str, value: &str) -> Self {
        Self::new(key, Operator::In, &[value])
    }

    /// Whether a node whose label `key` is `value` (None: no such label) satisfies the requirement.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self.operator, value) {
            (Operator::In, Some(v)) => self.values.iter().any(|allowed| allowed == v),
            (Operator::In, None) => false,
            (Operator::NotIn, Some(v)) => !self.values.iter().any(|denied| denied == v),
            (Operator::NotIn, None) => true,
            (Operator::Exists, value) => value.is_some(),
            (Operator::DoesNotExist, value) => value.is_none(),
            (Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte, None) => false,
            (operator, Some(v)) => {
                let (Ok(actual), Some(Ok(bound))) = (v.parse::<i64>(), self.values.first().map(|b| b.parse::<i64>()))
                else {
                    return false;
                };
                match operator {
                    Operator::Gt => actual > bound,
                    Operator::Lt => actual < bound,
                    Operator::Gte => actual >= bound,
                    _ => actual <= bound,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            Operator::Exists | Operator::DoesNotExist => {
                write!(f, "{} {:?}", self.key, self.operator)
            }
            Operator::In if self.values.len() == 1 => write!(f, "{}={}", self.key, self.values[0]),
            _ => write!(f, "{} {:?} [{}]", self.key, self.operator, self.values.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operator() {
        let r = |op, values: &[&str]| Requirement::new("k", op, values);
        assert!(r(Operator::In, &["a", "b"]).matches(Some("b")));
        assert!(!r(Operator::In, &["a"]).matches(None));
        assert!(r(Operator::NotIn, &["a"]).matches(None));
        assert!(!r(Operator::NotIn, &["a"]).matches(Some("a")));
        assert!(r(Operator::Exists, &[]).matches(Some("")));
        assert!(r(Operator::DoesNotExist, &[]).matches(None));
        assert!(r(Operator::Gt, &["4"]).matches(Some("5")));
        assert!(!r(Operator::Gt, &["4"]).matches(Some("4")));
        assert!(r(Operator::Lt, &["4"]).matches(Some("3")));
        assert!(!r(Operator::Lt, &["4"]).matches(Some("x")));
        assert!(!r(Operator::Lt, &["4"]).matches(None));
        assert!(r(Operator::Gte, &["4"]).matches(Some("4")) && !r(Operator::Gte, &["4"]).matches(Some("3")));
        assert!(r(Operator::Lte, &["4"]).matches(Some("4")) && !r(Operator::Lte, &["4"]).matches(Some("5")));
        assert!(!r(Operator::Gte, &["4"]).matches(None));
        assert_eq!(Operator::parse("Gte"), Some(Operator::Gte));
        assert_eq!(Operator::parse("Lte"), Some(Operator::Lte));
    }

    #[test]
    fn display_reads_like_a_selector() {
        assert_eq!(Requirement::equals("zone", "a").to_string(), "zone=a");
        assert_eq!(Requirement::new("cpu", Operator::Gt, &["4"]).to_string(), "cpu Gt [4]");
    }
}
