# Names derived from the cluster name (and, for IAM, the region) exactly as src/bootstrap/names.rs derives them, so that Terraform and
# `nodesmith setup` (and teardown) agree on every name. fit(rule, base): each character the rule refuses becomes
# "-"; a result longer than the rule allows is cut to max - 9 characters, stripped of trailing "-", and suffixed
# with "-" and the first 8 hex digits of sha256(base), so it stays unique and the same on every run.

locals {
  owner_tags = { "nodesmith.io/cluster" = var.cluster_name }
  # The ownership tag last, so var.tags cannot take it away: teardown finds resources by it.
  tags = merge(var.tags, local.owner_tags)
  # IAM is global: its resources also say which region's cluster they serve (teardown elsewhere leaves them).
  iam_tags = merge(local.tags, { "topology.kubernetes.io/region" = local.region })

  # Characters each kind of name refuses, as RE2 classes.
  iam_refused         = "/[^0-9A-Za-z+=,.@_-]/"
  sqs_refused         = "/[^0-9A-Za-z_-]/"
  eventbridge_refused = "/[^0-9A-Za-z._-]/"

  # (rule kind, source, detail type) of every event the controller handles: INTERRUPTION_EVENTS in
  # src/bootstrap/setup/queue.rs. The keys are setup's rule kinds and name the rules.
  interruption_events = {
    "scheduled-change"                  = { source = "aws.health", detail_type = "AWS Health Event" }
    "spot-interruption"                 = { source = "aws.ec2", detail_type = "EC2 Spot Instance Interruption Warning" }
    "rebalance"                         = { source = "aws.ec2", detail_type = "EC2 Instance Rebalance Recommendation" }
    "instance-state-change"             = { source = "aws.ec2", detail_type = "EC2 Instance State-change Notification" }
    "capacity-reservation-interruption" = { source = "aws.ec2", detail_type = "EC2 Capacity Reservation Instance Interruption Warning" }
  }

  name_rules = merge(
    {
      node_role        = { base = "nodesmith-node-${var.cluster_name}-${local.region}", max = 64, refused = local.iam_refused }
      instance_profile = { base = "nodesmith-node-${var.cluster_name}-${local.region}", max = 128, refused = local.iam_refused }
      controller_role  = { base = "nodesmith-controller-${var.cluster_name}-${local.region}", max = 64, refused = local.iam_refused }
      queue            = { base = "nodesmith-${var.cluster_name}", max = 80, refused = local.sqs_refused }
    },
    # The kind goes first so that a shortened cluster part never cuts it off.
    { for kind in keys(local.interruption_events) : "rule:${kind}" => {
      base = "${kind}-nodesmith-${var.cluster_name}", max = 64, refused = local.eventbridge_refused
    } },
  )

  cleaned_names = { for key, rule in local.name_rules : key => replace(rule.base, rule.refused, "-") }
  fitted_names = {
    for key, rule in local.name_rules : key => (
      length(local.cleaned_names[key]) <= rule.max ? local.cleaned_names[key] :
      "${replace(substr(local.cleaned_names[key], 0, rule.max - 9), "/-+$/", "")}-${substr(sha256(rule.base), 0, 8)}"
    )
  }

  names = {
    node_role        = local.fitted_names.node_role
    instance_profile = local.fitted_names.instance_profile
    controller_role  = local.fitted_names.controller_role
    queue            = local.fitted_names.queue
    rules            = { for kind in keys(local.interruption_events) : kind => local.fitted_names["rule:${kind}"] }
  }

  # Controller policy n (from 1) is fit(IAM_POLICY, "<controller role>-<n>"): the role name is already clean and at
  # most 64 characters, so the policy name (limit 128) is never changed by fit.
  controller_policy_name_prefix = "${local.names.controller_role}-"

  # Setup knows these ARNs before the resources exist (its dry run prints them); so does the plan, which lets the
  # controller policies be split by length at plan time.
  node_role_arn = "arn:${local.partition}:iam::${local.account_id}:role/${local.names.node_role}"
  queue_arn     = "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${local.names.queue}"
  oidc_provider_arn = (
    var.oidc_provider_arn != null ? var.oidc_provider_arn :
    "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${local.oidc_issuer_host_path}"
  )
}
