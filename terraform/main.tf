# What setup learns from eks:DescribeCluster and EC2, and the values every other file shares. Setup's steps map to
# files: iam.tf (steps 1-4 and 7), queue.tf (5-6), network.tf (8-9); names.tf and policies.tf hold its pure
# derivations (names within AWS's limits, IAM and queue documents).

data "aws_eks_cluster" "this" {
  name = var.cluster_name

  lifecycle {
    postcondition {
      condition     = var.identity != "irsa" || try(self.identity[0].oidc[0].issuer, "") != ""
      error_message = "cluster ${var.cluster_name} reports no OIDC issuer (IRSA needs one): use identity = \"pod-identity\"."
    }
  }
}

locals {
  # arn:<partition>:eks:<region>:<account>:cluster/<name>: setup takes partition, region and account from here.
  cluster_arn_parts = split(":", data.aws_eks_cluster.this.arn)
  partition         = local.cluster_arn_parts[1]
  region            = local.cluster_arn_parts[3]
  account_id        = local.cluster_arn_parts[4]

  vpc_config = data.aws_eks_cluster.this.vpc_config[0]
  # Some EKS look-alikes (moto) leave the VPC out of DescribeCluster: the subnets know it.
  vpc_id = try(length(local.vpc_config.vpc_id) > 0, false) ? local.vpc_config.vpc_id : try(values(data.aws_subnet.cluster)[0].vpc_id, null)

  oidc_issuer = try(data.aws_eks_cluster.this.identity[0].oidc[0].issuer, "")
  # IAM names the provider, and keys its condition variables, by the issuer without its scheme.
  oidc_issuer_host_path = trimprefix(local.oidc_issuer, "https://")

  cluster_subnet_ids = toset(local.vpc_config.subnet_ids)
  cluster_security_group_ids = toset([
    for id in concat(tolist(local.vpc_config.security_group_ids), [local.vpc_config.cluster_security_group_id]) : id
    if id != null && id != ""
  ])

  discovery_value = (
    var.discovery_value != null ? var.discovery_value :
    var.discovery_scope == "vpc" ? lookup(data.aws_vpc.cluster.tags, "Name", "") :
    var.cluster_name
  )
}

data "aws_vpc" "cluster" {
  id = local.vpc_id

  lifecycle {
    postcondition {
      condition     = var.discovery_scope != "vpc" || var.discovery_value != null || lookup(self.tags, "Name", "") != ""
      error_message = "the VPC ${self.id} of cluster ${var.cluster_name} has no Name tag to use as the discovery value: tag it, or set discovery_value (or discovery_scope = \"cluster\")."
    }
  }
}

# The cluster's subnets give the zones for new subnets; their tags, with those of subnets given explicitly, let
# discovery tagging refuse a subnet another cluster already discovers, as setup does.
data "aws_subnet" "cluster" {
  for_each = local.cluster_subnet_ids

  id = each.key
}

data "aws_subnet" "discovery" {
  for_each = var.subnet_ids == null ? toset([]) : setsubtract(toset(var.subnet_ids), local.cluster_subnet_ids)

  id = each.key
}

data "aws_security_group" "discovery" {
  for_each = local.discovery_security_group_ids

  id = each.key
}

# Every route table of the VPC: which subnets are private (setup tags only those) and which table a new subnet
# shares with an existing private subnet of its zone.
data "aws_route_tables" "vpc" {
  vpc_id = local.vpc_id
}

data "aws_route_table" "vpc" {
  for_each = toset(data.aws_route_tables.vpc.ids)

  route_table_id = each.key
}

locals {
  # A table is public when it routes to an internet gateway.
  public_route_tables = toset([
    for id, table in data.aws_route_table.vpc : id
    if anytrue([for route in table.routes : startswith(route.gateway_id == null ? "" : route.gateway_id, "igw-")])
  ])
  main_route_table = try([for id, table in data.aws_route_table.vpc : id if anytrue([for a in table.associations : a.main])][0], null)
  main_is_public   = local.main_route_table == null ? false : contains(local.public_route_tables, local.main_route_table)

  # Subnet => the table explicitly associated with it (null: it uses the main table).
  explicit_route_table = {
    for subnet in local.cluster_subnet_ids : subnet => try([
      for id, table in data.aws_route_table.vpc : id if contains([for a in table.associations : a.subnet_id], subnet)
    ][0], null)
  }
  private_cluster_subnet_ids = toset([
    for subnet, table in local.explicit_route_table : subnet
    if !(table == null ? local.main_is_public : contains(local.public_route_tables, table))
  ])

  discovery_subnet_ids         = var.subnet_ids == null ? local.private_cluster_subnet_ids : toset(var.subnet_ids)
  discovery_security_group_ids = var.security_group_ids == null ? local.cluster_security_group_ids : toset(var.security_group_ids)

  # Existing tags of every subnet to tag, whichever data source read it.
  subnet_tags = merge(
    { for id, subnet in data.aws_subnet.cluster : id => subnet.tags },
    { for id, subnet in data.aws_subnet.discovery : id => subnet.tags },
  )
}
