# IAM and queue documents, statement for statement those of src/bootstrap/policies.rs and
# src/bootstrap/setup/queue.rs. Written as HCL objects (jsonencode'd where used) so a parser can compare them.

locals {
  node_trust_policy = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  }

  # IRSA: the cluster's OIDC provider may assume the controller role for one ServiceAccount.
  irsa_trust_policy = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer_host_path}:aud" = "sts.amazonaws.com"
          "${local.oidc_issuer_host_path}:sub" = "system:serviceaccount:${var.namespace}:${var.service_account}"
        }
      }
    }]
  }

  # EKS Pod Identity: the pods service may assume (and tag) the controller role, for this cluster of this account
  # only and only for the controller's ServiceAccount (the session tags EKS sets).
  pod_identity_trust_policy = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
      Condition = {
        StringEquals = {
          "aws:SourceAccount"                         = local.account_id
          "aws:RequestTag/eks-cluster-name"           = var.cluster_name
          "aws:RequestTag/kubernetes-namespace"       = var.namespace
          "aws:RequestTag/kubernetes-service-account" = var.service_account
        }
        ArnEquals = { "aws:SourceArn" = "arn:${local.partition}:eks:${local.region}:${local.account_id}:cluster/${var.cluster_name}" }
      }
    }]
  }

  # Indexed rather than chosen with ?: because the two documents differ in type (Action is a string in one).
  controller_trust_policy = { "irsa" = local.irsa_trust_policy, "pod-identity" = local.pod_identity_trust_policy }[var.identity]

  # Building blocks of the controller's statements (PolicyContext in policies.rs).
  ec2_arn          = "arn:${local.partition}:ec2:${local.region}:*"
  owned_key        = "kubernetes.io/cluster/${var.cluster_name}"
  created_arns     = [for r in ["fleet/*", "instance/*", "volume/*", "network-interface/*", "launch-template/*", "spot-instances-request/*"] : "${local.ec2_arn}:${r}"]
  instance_profile = "arn:${local.partition}:iam::${local.account_id}:instance-profile/*"
  request_tagged = {
    StringEquals = {
      "aws:RequestTag/${local.owned_key}"   = "owned"
      "aws:RequestTag/eks:eks-cluster-name" = var.cluster_name
    }
    StringLike = { "aws:RequestTag/karpenter.sh/nodepool" = "*" }
  }
  resource_owned = {
    StringEquals = { "aws:ResourceTag/${local.owned_key}" = "owned" }
    StringLike   = { "aws:ResourceTag/karpenter.sh/nodepool" = "*" }
  }
  profile_created = {
    StringEquals = {
      "aws:RequestTag/${local.owned_key}"            = "owned"
      "aws:RequestTag/eks:eks-cluster-name"          = var.cluster_name
      "aws:RequestTag/topology.kubernetes.io/region" = local.region
    }
    StringLike = { "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass" = "*" }
  }
  profile_owned = {
    StringEquals = {
      "aws:ResourceTag/${local.owned_key}"            = "owned"
      "aws:ResourceTag/topology.kubernetes.io/region" = local.region
    }
    StringLike = { "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass" = "*" }
  }

  # Every statement the controller needs, in setup's order (the order decides how they are split).
  controller_statements = [
    {
      Sid    = "AllowScopedEC2InstanceAccessActions"
      Effect = "Allow"
      Action = ["ec2:RunInstances", "ec2:CreateFleet"]
      Resource = [
        "arn:${local.partition}:ec2:${local.region}::image/*",
        "arn:${local.partition}:ec2:${local.region}::snapshot/*",
        "${local.ec2_arn}:security-group/*",
        "${local.ec2_arn}:subnet/*",
        "${local.ec2_arn}:capacity-reservation/*",
      ]
    },
    {
      Sid       = "AllowScopedEC2LaunchTemplateAccessActions"
      Effect    = "Allow"
      Action    = ["ec2:RunInstances", "ec2:CreateFleet"]
      Resource  = "${local.ec2_arn}:launch-template/*"
      Condition = local.resource_owned
    },
    {
      Sid       = "AllowScopedEC2InstanceActionsWithTags"
      Effect    = "Allow"
      Action    = ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"]
      Resource  = local.created_arns
      Condition = local.request_tagged
    },
    {
      Sid      = "AllowScopedResourceCreationTagging"
      Effect   = "Allow"
      Action   = "ec2:CreateTags"
      Resource = local.created_arns
      Condition = {
        StringEquals = {
          "aws:RequestTag/${local.owned_key}"   = "owned"
          "aws:RequestTag/eks:eks-cluster-name" = var.cluster_name
          "ec2:CreateAction"                    = ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]
        }
        StringLike = { "aws:RequestTag/karpenter.sh/nodepool" = "*" }
      }
    },
    {
      Sid      = "AllowScopedResourceTagging"
      Effect   = "Allow"
      Action   = "ec2:CreateTags"
      Resource = "${local.ec2_arn}:instance/*"
      Condition = {
        StringEquals                = { "aws:ResourceTag/${local.owned_key}" = "owned" }
        StringLike                  = { "aws:ResourceTag/karpenter.sh/nodepool" = "*" }
        StringEqualsIfExists        = { "aws:RequestTag/eks:eks-cluster-name" = var.cluster_name }
        "ForAllValues:StringEquals" = { "aws:TagKeys" = ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"] }
      }
    },
    {
      Sid       = "AllowScopedDeletion"
      Effect    = "Allow"
      Action    = ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"]
      Resource  = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:launch-template/*"]
      Condition = local.resource_owned
    },
    {
      Sid    = "AllowRegionalReadActions"
      Effect = "Allow"
      Action = [
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSpotPriceHistory",
        "ec2:DescribeSubnets",
      ]
      Resource  = "*"
      Condition = { StringEquals = { "aws:RequestedRegion" = local.region } }
    },
    {
      Sid      = "AllowSSMReadActions"
      Effect   = "Allow"
      Action   = "ssm:GetParameter"
      Resource = "arn:${local.partition}:ssm:${local.region}::parameter/aws/service/*"
    },
    {
      Sid      = "AllowPricingReadActions"
      Effect   = "Allow"
      Action   = "pricing:GetProducts"
      Resource = "*"
    },
    {
      Sid      = "AllowInterruptionQueueActions"
      Effect   = "Allow"
      Action   = ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]
      Resource = local.queue_arn
    },
    {
      Sid       = "AllowPassingInstanceRole"
      Effect    = "Allow"
      Action    = "iam:PassRole"
      Resource  = local.node_role_arn
      Condition = { StringEquals = { "iam:PassedToService" = ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"] } }
    },
    {
      Sid       = "AllowScopedInstanceProfileCreationActions"
      Effect    = "Allow"
      Action    = ["iam:CreateInstanceProfile"]
      Resource  = local.instance_profile
      Condition = local.profile_created
    },
    {
      Sid      = "AllowScopedInstanceProfileTagActions"
      Effect   = "Allow"
      Action   = ["iam:TagInstanceProfile"]
      Resource = local.instance_profile
      Condition = {
        StringEquals = {
          "aws:ResourceTag/${local.owned_key}"            = "owned"
          "aws:ResourceTag/topology.kubernetes.io/region" = local.region
          "aws:RequestTag/${local.owned_key}"             = "owned"
          "aws:RequestTag/eks:eks-cluster-name"           = var.cluster_name
          "aws:RequestTag/topology.kubernetes.io/region"  = local.region
        }
        StringLike = {
          "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass" = "*"
          "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass"  = "*"
        }
      }
    },
    {
      Sid       = "AllowScopedInstanceProfileActions"
      Effect    = "Allow"
      Action    = ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"]
      Resource  = local.instance_profile
      Condition = local.profile_owned
    },
    {
      Sid      = "AllowInstanceProfileReadActions"
      Effect   = "Allow"
      Action   = "iam:GetInstanceProfile"
      Resource = local.instance_profile
    },
    {
      # Finding the instance profile that already holds an EC2NodeClass's role.
      Sid      = "AllowNodeRoleInstanceProfileLookup"
      Effect   = "Allow"
      Action   = "iam:ListInstanceProfilesForRole"
      Resource = local.node_role_arn
    },
    {
      Sid      = "AllowAPIServerEndpointDiscovery"
      Effect   = "Allow"
      Action   = "eks:DescribeCluster"
      Resource = "arn:${local.partition}:eks:${local.region}:${local.account_id}:cluster/${var.cluster_name}"
    },
  ]
}

# The statements packed, in order, into as few managed policies as keep each within IAM's 6,144 characters
# (counted without whitespace, which is what jsonencode writes): controller_policies in policies.rs. A policy
# takes statements while it fits (one at least), the next policy starts with the first that did not.
locals {
  managed_policy_max_chars = 6144
  statement_count          = length(local.controller_statements)
  # {"Statement":[],"Version":"2012-10-17"}; each statement adds its length, each one after the first a comma.
  empty_document_chars = length(jsonencode({ Version = "2012-10-17", Statement = [] }))
  statement_chars      = [for s in local.controller_statements : length(jsonencode(s)) + 1]
  chars_before         = [for i in range(local.statement_count + 1) : sum(concat([0], slice(local.statement_chars, 0, i)))]

  # next[s]: where the policy starting at statement s ends (exclusive). next[statement_count] = statement_count.
  next_start = [
    for s in range(local.statement_count + 1) : min(local.statement_count, s + max(1, length([
      for e in range(s + 1, local.statement_count + 1) : e
      if local.empty_document_chars + local.chars_before[e] - local.chars_before[s] - 1 <= local.managed_policy_max_chars
    ])))
  ]
  # Policies start at 0, next[0], next[next[0]], ...: Terraform has no loops, so the walk doubles its reach each
  # step (next^2, next^4, next^8), which covers the 16 statements' worst case of one policy each.
  next_start_2  = [for s in local.next_start : local.next_start[s]]
  next_start_4  = [for s in local.next_start_2 : local.next_start_2[s]]
  next_start_8  = [for s in local.next_start_4 : local.next_start_4[s]]
  reach_2       = distinct([0, local.next_start[0]])
  reach_4       = distinct(concat(local.reach_2, [for s in local.reach_2 : local.next_start_2[s]]))
  reach_8       = distinct(concat(local.reach_4, [for s in local.reach_4 : local.next_start_4[s]]))
  reach_16      = distinct(concat(local.reach_8, [for s in local.reach_8 : local.next_start_8[s]]))
  policy_starts = [for s in local.reach_16 : s if s < local.statement_count]

  # "1" => document of controller policy 1, ...: setup numbers its policies from 1.
  controller_policies = {
    for i, start in local.policy_starts : tostring(i + 1) => {
      Version   = "2012-10-17"
      Statement = [for j, s in local.controller_statements : s if j >= start && j < local.next_start[start]]
    }
  }
}

locals {
  # Lets EventBridge (and SQS itself) send, and refuses anything not over TLS.
  queue_policy = {
    Version = "2012-10-17"
    Id      = "nodesmith-interruption-queue"
    Statement = [
      {
        # Only this cluster's interruption rules may send.
        Sid       = "AllowInterruptionRules"
        Effect    = "Allow"
        Principal = { Service = "events.amazonaws.com" }
        Action    = "sqs:SendMessage"
        Resource  = local.queue_arn
        Condition = {
          ArnEquals = {
            "aws:SourceArn" = sort([
              for kind in keys(local.interruption_events) :
              "arn:${local.partition}:events:${local.region}:${local.account_id}:rule/${local.names.rules[kind]}"
            ])
          }
        }
      },
      {
        Sid       = "DenyHTTP"
        Effect    = "Deny"
        Principal = "*"
        Action    = "sqs:*"
        Resource  = local.queue_arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  }

  event_patterns = {
    for kind, event in local.interruption_events : kind => { source = [event.source], "detail-type" = [event.detail_type] }
  }
}
