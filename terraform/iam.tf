# Setup steps 1-4 and 7: node role and instance profile, node access, controller role and its policies, spot
# service-linked role (src/bootstrap/setup/iam.rs).

locals {
  # AWS managed policies a node needs.
  node_managed_policies = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
  ])
}

# Step 1: the node role and its instance profile.
resource "aws_iam_role" "node" {
  name               = local.names.node_role
  description        = "nodesmith, EKS cluster ${var.cluster_name}"
  assume_role_policy = jsonencode(local.node_trust_policy)
  tags               = local.iam_tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = local.node_managed_policies

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.key}"
}

resource "aws_iam_instance_profile" "node" {
  name = local.names.instance_profile
  role = aws_iam_role.node.name
  tags = local.iam_tags
}

# Step 2: nodes join through an access entry (with node_access = "aws-auth" the ConfigMap is left to the caller).
resource "aws_eks_access_entry" "node" {
  count = var.node_access == "access-entry" ? 1 : 0

  cluster_name  = var.cluster_name
  principal_arn = aws_iam_role.node.arn
  type          = "EC2_LINUX"
  tags          = local.tags
}

# Step 3: the controller role, trusted through IRSA or EKS Pod Identity.
resource "aws_iam_openid_connect_provider" "cluster" {
  count = var.identity == "irsa" && var.oidc_provider_arn == null ? 1 : 0

  url            = local.oidc_issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = local.iam_tags
}

resource "aws_iam_role" "controller" {
  name               = local.names.controller_role
  description        = "nodesmith, EKS cluster ${var.cluster_name}"
  assume_role_policy = jsonencode(local.controller_trust_policy)
  tags               = local.iam_tags

  # The trust policy names the provider by its derived ARN; IAM refuses a federated principal that does not exist.
  depends_on = [aws_iam_openid_connect_provider.cluster]
}

resource "aws_eks_pod_identity_association" "controller" {
  count = var.identity == "pod-identity" ? 1 : 0

  cluster_name    = var.cluster_name
  namespace       = var.namespace
  service_account = var.service_account
  role_arn        = aws_iam_role.controller.arn
  tags            = local.tags
}

# Step 4: the controller's permissions, as many managed policies as the size limit needs ("1", "2", ...).
resource "aws_iam_policy" "controller" {
  for_each = local.controller_policies

  name        = "${local.controller_policy_name_prefix}${each.key}"
  description = "nodesmith controller, EKS cluster ${var.cluster_name}"
  policy      = jsonencode(each.value)
  tags        = local.iam_tags

  lifecycle {
    precondition {
      condition     = sum([for p in local.controller_policies : length(p.Statement)]) == local.statement_count
      error_message = "The controller statements were not all packed into policies: extend the walk in policies.tf (reach_32) for more than 16 statements."
    }
  }
}

resource "aws_iam_role_policy_attachment" "controller" {
  for_each = local.controller_policies

  role       = aws_iam_role.controller.name
  policy_arn = aws_iam_policy.controller[each.key].arn
}

# Step 7: EC2 needs this role once per account to launch spot instances; most accounts that ever ran spot have
# it, and creating it again fails, so by default it is created only when absent (as setup does).
data "aws_iam_roles" "spot_service_linked" {
  path_prefix = "/aws-service-role/spot.amazonaws.com/"
}

resource "aws_iam_service_linked_role" "spot" {
  count = coalesce(var.create_spot_service_linked_role, length(data.aws_iam_roles.spot_service_linked.names) == 0) ? 1 : 0

  aws_service_name = "spot.amazonaws.com"
}
