//! IAM documents `setup` creates: the trust policies of the node and controller roles, and the controller's
//! permissions, every write scoped to resources tagged for this cluster, split into managed policies that each stay
//! under IAM's 6,144-character limit whatever the cluster name and region.

use serde_json::{Value, json};

/// IAM's limit on a managed policy document, counted without whitespace.
pub const MANAGED_POLICY_MAX_CHARS: usize = 6_144;

/// Where the policies apply.
#[derive(Debug, Clone)]
pub struct PolicyContext {
    pub partition: String,
    pub region: String,
    pub account_id: String,
    pub cluster: String,
    pub node_role_arn: String,
    pub queue_arn: String,
}

/// The node role trusts EC2.
pub fn node_trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// IRSA: the cluster's OIDC provider may assume the controller role for one service account.
pub fn irsa_trust_policy(oidc_provider_arn: &str, issuer: &str, namespace: &str, service_account: &str) -> Value {
    let issuer = issuer.trim_start_matches("https://");
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{issuer}:aud"): "sts.amazonaws.com",
                format!("{issuer}:sub"): format!("system:serviceaccount:{namespace}:{service_account}")
            }}
        }]
    })
}

/// EKS Pod Identity: the pods service may assume (and tag) the controller role, for this cluster of this account
/// only (no confused deputy) and only for the controller's ServiceAccount (the session tags EKS sets).
pub fn pod_identity_trust_policy(account_id: &str, cluster_arn: &str, namespace: &str, service_account: &str) -> Value {
    let cluster = cluster_arn.rsplit('/').next().unwrap_or_default();
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {
                "StringEquals": {
                    "aws:SourceAccount": account_id,
                    "aws:RequestTag/eks-cluster-name": cluster,
                    "aws:RequestTag/kubernetes-namespace": namespace,
                    "aws:RequestTag/kubernetes-service-account": service_account
                },
                "ArnEquals": {"aws:SourceArn": cluster_arn}
            }
        }]
    })
}

/// Who a trust policy lets in by name: its federated principals (OIDC providers) and the `aws:SourceArn` values
/// its conditions ask for (the cluster, for Pod Identity). Setup adopts a role only when these are this cluster's.
pub fn trusted_identities(trust: &Value) -> Vec<String> {
    fn strings(value: Option<&Value>) -> Vec<String> {
        match value {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    }
    let statements: &[Value] = match trust.get("Statement") {
        Some(Value::Array(items)) => items,
        Some(one) => std::slice::from_ref(one),
        None => &[],
    };
    let mut found = Vec::new();
    for statement in statements {
        found.extend(strings(statement.pointer("/Principal/Federated")));
        // Under any operator (StringEquals, ArnEquals, ArnLike, ...).
        let keys = statement.get("Condition").and_then(Value::as_object).into_iter().flat_map(|o| o.values());
        let pairs = keys.filter_map(Value::as_object).flat_map(|keys| keys.iter());
        for (_, value) in pairs.filter(|(key, _)| key.eq_ignore_ascii_case("aws:SourceArn")) {
            found.extend(strings(Some(value)));
        }
    }
    found
}

/// Every statement the controller needs.
pub fn controller_statements(ctx: &PolicyContext) -> Vec<Value> {
    let PolicyContext { partition, region, account_id, cluster, node_role_arn, queue_arn } = ctx;
    let ec2 = |resource: &str| format!("arn:{partition}:ec2:{region}:*:{resource}");
    let owned_key = format!("kubernetes.io/cluster/{cluster}");
    let created =
        ["fleet/*", "instance/*", "volume/*", "network-interface/*", "launch-template/*", "spot-instances-request/*"];
    let created_arns: Vec<String> = created.iter().map(|r| ec2(r)).collect();
    let request_tagged = json!({
        "StringEquals": {
            format!("aws:RequestTag/{owned_key}"): "owned",
            "aws:RequestTag/eks:eks-cluster-name": cluster
        },
        "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}
    });
    let resource_owned = json!({
        "StringEquals": {format!("aws:ResourceTag/{owned_key}"): "owned"},
        "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}
    });
    let instance_profile = format!("arn:{partition}:iam::{account_id}:instance-profile/*");
    let profile_created = json!({
        "StringEquals": {
            format!("aws:RequestTag/{owned_key}"): "owned",
            "aws:RequestTag/eks:eks-cluster-name": cluster,
            "aws:RequestTag/topology.kubernetes.io/region": region
        },
        "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}
    });
    let profile_owned = json!({
        "StringEquals": {
            format!("aws:ResourceTag/{owned_key}"): "owned",
            "aws:ResourceTag/topology.kubernetes.io/region": region
        },
        "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}
    });
    vec![
        json!({
            "Sid": "AllowScopedEC2InstanceAccessActions",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Resource": [
                format!("arn:{partition}:ec2:{region}::image/*"),
                format!("arn:{partition}:ec2:{region}::snapshot/*"),
                ec2("security-group/*"),
                ec2("subnet/*"),
                ec2("capacity-reservation/*")
            ]
        }),
        json!({
            "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Resource": ec2("launch-template/*"),
            "Condition": resource_owned
        }),
        json!({
            "Sid": "AllowScopedEC2InstanceActionsWithTags",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            "Resource": created_arns,
            "Condition": request_tagged
        }),
        json!({
            "Sid": "AllowScopedResourceCreationTagging",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": created_arns,
            "Condition": {
                "StringEquals": {
                    format!("aws:RequestTag/{owned_key}"): "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}
            }
        }),
        json!({
            "Sid": "AllowScopedResourceTagging",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": ec2("instance/*"),
            "Condition": {
                "StringEquals": {format!("aws:ResourceTag/{owned_key}"): "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                }
            }
        }),
        json!({
            "Sid": "AllowScopedDeletion",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            "Resource": [ec2("instance/*"), ec2("launch-template/*")],
            "Condition": resource_owned
        }),
        json!({
            "Sid": "AllowRegionalReadActions",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets"
            ],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": region}}
        }),
        json!({
            "Sid": "AllowSSMReadActions",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": format!("arn:{partition}:ssm:{region}::parameter/aws/service/*")
        }),
        json!({
            "Sid": "AllowPricingReadActions",
            "Effect": "Allow",
            "Action": "pricing:GetProducts",
            "Resource": "*"
        }),
        json!({
            "Sid": "AllowInterruptionQueueActions",
            "Effect": "Allow",
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            "Resource": queue_arn
        }),
        json!({
            "Sid": "AllowPassingInstanceRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": node_role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}}
        }),
        json!({
            "Sid": "AllowScopedInstanceProfileCreationActions",
            "Effect": "Allow",
            "Action": ["iam:CreateInstanceProfile"],
            "Resource": instance_profile,
            "Condition": profile_created
        }),
        json!({
            "Sid": "AllowScopedInstanceProfileTagActions",
            "Effect": "Allow",
            "Action": ["iam:TagInstanceProfile"],
            "Resource": instance_profile,
            "Condition": {
                "StringEquals": {
                    format!("aws:ResourceTag/{owned_key}"): "owned",
                    "aws:ResourceTag/topology.kubernetes.io/region": region,
                    format!("aws:RequestTag/{owned_key}"): "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster,
                    "aws:RequestTag/topology.kubernetes.io/region": region
                },
                "StringLike": {
                    "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"
                }
            }
        }),
        json!({
            "Sid": "AllowScopedInstanceProfileActions",
            "Effect": "Allow",
            "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
            "Resource": instance_profile,
            "Condition": profile_owned
        }),
        json!({
            "Sid": "AllowInstanceProfileReadActions",
            "Effect": "Allow",
            "Action": "iam:GetInstanceProfile",
            "Resource": instance_profile
        }),
        json!({
            // Finding the instance profile that already holds an EC2NodeClass's role (cloud/instance_profile.rs).
            "Sid": "AllowNodeRoleInstanceProfileLookup",
            "Effect": "Allow",
            "Action": "iam:ListInstanceProfilesForRole",
            "Resource": node_role_arn
        }),
        json!({
            "Sid": "AllowAPIServerEndpointDiscovery",
            "Effect": "Allow",
            "Action": "eks:DescribeCluster",
            "Resource": format!("arn:{partition}:eks:{region}:{account_id}:cluster/{cluster}")
        }),
    ]
}

/// The statements packed, in order, into as few documents as keep each within the limit.
pub fn controller_policies(ctx: &PolicyContext) -> Vec<Value> {
    let mut documents: Vec<Vec<Value>> = vec![Vec::new()];
    for statement in controller_statements(ctx) {
        let current = documents.last_mut().expect("one document at least");
        current.push(statement);
        if minified_len(&document(current)) > MANAGED_POLICY_MAX_CHARS && current.len() > 1 {
            let moved = current.pop().expect("just pushed");
            documents.push(vec![moved]);
        }
    }
    documents.iter().map(|statements| document(statements)).collect()
}

fn document(statements: &[Value]) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The length IAM counts: the document without whitespace.
pub fn minified_len(document: &Value) -> usize {
    document.to_string().len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_trust_policy_names_the_providers_and_clusters_it_lets_in() {
        let provider = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC";
        let irsa = irsa_trust_policy(provider, "https://oidc.eks.us-east-1.amazonaws.com/id/ABC", "ns", "sa");
        assert_eq!(trusted_identities(&irsa), [provider]);
        let cluster = "arn:aws:eks:us-east-1:123456789012:cluster/demo";
        let pod_identity = pod_identity_trust_policy("123456789012", cluster, "ns", "sa");
        assert_eq!(trusted_identities(&pod_identity), [cluster]);
        let node = node_trust_policy();
        assert!(trusted_identities(&node).is_empty());
    }

    fn context(cluster: &str, region: &str) -> PolicyContext {
        PolicyContext {
            partition: "aws".into(),
            region: region.into(),
            account_id: "123456789012".into(),
            cluster: cluster.into(),
            node_role_arn: format!("arn:aws:iam::123456789012:role/nodesmith-node-{cluster}"),
            queue_arn: format!("arn:aws:sqs:{region}:123456789012:nodesmith-{cluster}"),
        }
    }

    #[test]
    fn every_write_is_scoped_to_the_cluster() {
        for statement in controller_statements(&context("demo", "us-east-1")) {
            let actions = statement["Action"].to_string();
            let writes = ["RunInstances", "CreateFleet", "Terminate", "Delete", "CreateTags", "CreateInstanceProfile"];
            let is_write = writes.iter().any(|w| actions.contains(w));
            let sid = statement["Sid"].as_str().unwrap_or_default();
            if is_write {
                assert_ne!(statement["Resource"], "*", "{sid}");
                // Images, snapshots, subnets and security groups are shared, so only reading them is granted.
                // Otherwise: the resource is this cluster's own (its queue), or a tag condition names the cluster.
                if sid != "AllowScopedEC2InstanceAccessActions" {
                    let condition = statement["Condition"].to_string();
                    let own_resource = statement["Resource"].as_str().is_some_and(|r| r.ends_with("nodesmith-demo"));
                    assert!(own_resource || condition.contains("kubernetes.io/cluster/demo"), "{sid} is not scoped");
                }
            }
        }
    }

    #[test]
    fn pass_role_is_for_the_node_role_only() {
        let statements = controller_statements(&context("demo", "us-east-1"));
        let pass = statements.iter().find(|s| s["Action"] == "iam:PassRole").expect("PassRole");
        assert_eq!(pass["Resource"], "arn:aws:iam::123456789012:role/nodesmith-node-demo");
    }

    #[test]
    fn irsa_trusts_one_service_account_of_the_cluster_issuer() {
        let policy = irsa_trust_policy(
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC",
            "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
            "nodesmith",
            "nodesmith",
        );
        let condition = &policy["Statement"][0]["Condition"]["StringEquals"];
        assert_eq!(
            condition["oidc.eks.us-east-1.amazonaws.com/id/ABC:sub"],
            "system:serviceaccount:nodesmith:nodesmith"
        );
        assert_eq!(condition["oidc.eks.us-east-1.amazonaws.com/id/ABC:aud"], "sts.amazonaws.com");
    }

    #[test]
    fn pod_identity_trusts_one_service_account_of_this_cluster_and_account() {
        let policy = pod_identity_trust_policy(
            "123456789012",
            "arn:aws:eks:us-east-1:123456789012:cluster/demo",
            "nodesmith",
            "controller",
        );
        let condition = &policy["Statement"][0]["Condition"];
        assert_eq!(condition["StringEquals"]["aws:SourceAccount"], "123456789012");
        assert_eq!(condition["StringEquals"]["aws:RequestTag/eks-cluster-name"], "demo");
        assert_eq!(condition["StringEquals"]["aws:RequestTag/kubernetes-namespace"], "nodesmith");
        assert_eq!(condition["StringEquals"]["aws:RequestTag/kubernetes-service-account"], "controller");
        assert_eq!(condition["ArnEquals"]["aws:SourceArn"], "arn:aws:eks:us-east-1:123456789012:cluster/demo");
    }

    proptest! {
        #[test]
        fn policies_stay_under_the_limit_and_keep_every_statement(
            cluster in "[a-zA-Z][a-zA-Z0-9-]{0,99}",
            region in prop::sample::select(vec!["us-east-1", "ap-southeast-5", "us-gov-west-1", "eu-central-2"]),
        ) {
            let ctx = context(&cluster, region);
            let policies = controller_policies(&ctx);
            let mut sids: Vec<String> = Vec::new();
            for policy in &policies {
                prop_assert!(minified_len(policy) <= MANAGED_POLICY_MAX_CHARS, "{} chars", minified_len(policy));
                for s in policy["Statement"].as_array().into_iter().flatten() {
                    sids.push(s["Sid"].as_str().unwrap_or_default().to_string());
                }
            }
            let expected: Vec<String> = controller_statements(&ctx).iter().map(|s| s["Sid"].as_str().unwrap_or_default().to_string()).collect();
            prop_assert_eq!(sids, expected);
        }
    }
}
