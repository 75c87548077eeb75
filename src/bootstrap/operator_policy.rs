//! The IAM policy whoever runs `setup` and `teardown` needs (a person, or CI): what those two commands call, on
//! the resources they name, and no more. Writes are limited to nodesmith's own names (`nodesmith-*` roles,
//! policies, profiles and queues, `*-nodesmith-*` rules); instances, subnets and launch templates may be deleted only
//! when they carry nodesmith's owner tag. The sandbox evaluates every request setup and teardown make in the tests
//! against this policy (tests/sandbox_iam.rs), as it does the controller's against the policies setup writes.

use serde_json::{Value, json};

use crate::names::OWNER_TAG;

/// The operator policy for `partition` (`aws`, `aws-cn`, `aws-us-gov`).
pub fn operator_policy(partition: &str) -> Value {
    let iam = |resource: &str| format!("arn:{partition}:iam::*:{resource}");
    let owned = json!({"Null": {format!("aws:ResourceTag/{OWNER_TAG}"): "false"}});
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTheClusterAndWhatSetupMade",
                "Effect": "Allow",
                "Action": [
                    "eks:DescribeCluster", "eks:DescribeAccessEntry", "eks:ListAccessEntries",
                    "eks:ListPodIdentityAssociations", "eks:DescribePodIdentityAssociation",
                    "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeRouteTables",
                    "ec2:DescribeInstances", "ec2:DescribeLaunchTemplates", "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeAvailabilityZones",
                    "iam:GetRole", "iam:ListAttachedRolePolicies", "iam:GetPolicy", "iam:GetPolicyVersion",
                    "iam:ListPolicyVersions", "iam:ListEntitiesForPolicy", "iam:GetInstanceProfile",
                    "iam:ListInstanceProfiles", "iam:ListInstanceProfilesForRole", "iam:ListRoles",
                    "iam:ListOpenIDConnectProviders", "iam:GetOpenIDConnectProvider", "iam:ListOpenIDConnectProviderTags",
                    "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ListQueueTags",
                    "events:DescribeRule", "events:ListTargetsByRule", "events:ListTagsForResource"
                ],
                "Resource": "*"
            },
            {
                "Sid": "ManageNodesmithRolesAndProfiles",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateRole", "iam:TagRole", "iam:UpdateAssumeRolePolicy", "iam:AttachRolePolicy",
                    "iam:DetachRolePolicy", "iam:DeleteRole", "iam:CreateInstanceProfile", "iam:TagInstanceProfile",
                    "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"
                ],
                "Resource": [iam("role/nodesmith-*"), iam("instance-profile/nodesmith-*")]
            },
            {
                "Sid": "ManageNodesmithPolicies",
                "Effect": "Allow",
                "Action": [
                    "iam:CreatePolicy", "iam:TagPolicy", "iam:CreatePolicyVersion", "iam:DeletePolicyVersion",
                    "iam:DeletePolicy"
                ],
                "Resource": iam("policy/nodesmith-*")
            },
            {
                "Sid": "ManageTheClustersOidcProvider",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateOpenIDConnectProvider", "iam:TagOpenIDConnectProvider",
                    "iam:DeleteOpenIDConnectProvider"
                ],
                "Resource": iam("oidc-provider/oidc.eks.*")
            },
            {
                "Sid": "PassTheControllerRoleToPodIdentity",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": iam("role/nodesmith-controller-*"),
                "Condition": {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}}
            },
            {
                "Sid": "PassTheNodeRoleToItsInstanceProfile",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": iam("role/nodesmith-node-*"),
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
            },
            {
                "Sid": "CreateTheSpotServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}
            },
            {
                "Sid": "ManageTheInterruptionQueue",
                "Effect": "Allow",
                "Action": ["sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:TagQueue", "sqs:DeleteQueue"],
                "Resource": format!("arn:{partition}:sqs:*:*:nodesmith-*")
            },
            {
                "Sid": "ManageTheInterruptionRules",
                "Effect": "Allow",
                "Action": [
                    "events:PutRule", "events:PutTargets", "events:TagResource", "events:RemoveTargets",
                    "events:DeleteRule"
                ],
                "Resource": format!("arn:{partition}:events:*:*:rule/*-nodesmith-*")
            },
            {
                "Sid": "ManageNodeAccessAndPodIdentity",
                "Effect": "Allow",
                "Action": [
                    "eks:CreateAccessEntry", "eks:DeleteAccessEntry", "eks:TagResource",
                    "eks:CreatePodIdentityAssociation", "eks:DeletePodIdentityAssociation"
                ],
                "Resource": [
                    format!("arn:{partition}:eks:*:*:cluster/*"),
                    format!("arn:{partition}:eks:*:*:access-entry/*"),
                    format!("arn:{partition}:eks:*:*:podidentityassociation/*")
                ]
            },
            {
                "Sid": "CreateSubnetsAndTagForDiscovery",
                "Effect": "Allow",
                "Action": ["ec2:CreateSubnet", "ec2:AssociateRouteTable", "ec2:CreateTags", "ec2:DeleteTags"],
                "Resource": "*"
            },
            {
                "Sid": "DeleteOnlyWhatNodesmithMade",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate", "ec2:DeleteSubnet"],
                "Resource": "*",
                "Condition": owned
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_scoped_to_nodesmiths_names_and_deletes_to_its_tag() {
        let policy = operator_policy("aws");
        let statements = policy["Statement"].as_array().expect("statements");
        for statement in statements {
            let actions: Vec<&str> = match &statement["Action"] {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let writes_iam = actions
                .iter()
                .any(|a| a.starts_with("iam:") && !a.starts_with("iam:Get") && !a.starts_with("iam:List"));
            if writes_iam && statement["Condition"].is_null() {
                let resources = statement["Resource"].to_string();
                assert!(!resources.contains("\"*\""), "{} writes IAM anywhere", statement["Sid"]);
            }
        }
        let deletes =
            statements.iter().find(|s| s["Sid"] == "DeleteOnlyWhatNodesmithMade").expect("the delete statement");
        assert_eq!(deletes["Condition"]["Null"][format!("aws:ResourceTag/{OWNER_TAG}")], "false");
        assert!(policy.to_string().len() < 6_144, "within a managed policy's size");
    }
}
