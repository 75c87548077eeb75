# Setup steps 8-9: discovery tags on existing subnets and security groups, and optional new subnets
# (src/bootstrap/setup/network.rs).

locals {
  discovery_tag        = "karpenter.sh/discovery"
  discovery_set_by_tag = "nodesmith.io/discovery-set-by"

  # A resource may be tagged unless another value is there already: another cluster discovers it (setup fails
  # the same way). A value this cluster set, recorded by the set-by tag, may change.
  existing_discovery_tags = merge(
    { for id in local.discovery_subnet_ids : id => try(local.subnet_tags[id], {}) },
    { for id in local.discovery_security_group_ids : id => try(data.aws_security_group.discovery[id].tags, {}) },
  )
  # Subnet or security group => the discovery value another cluster gave it.
  discovery_conflicts = {
    for id, tags in local.existing_discovery_tags : id => tags[local.discovery_tag]
    if(
      lookup(tags, local.discovery_tag, local.discovery_value) != local.discovery_value
      && lookup(tags, local.discovery_set_by_tag, "") != var.cluster_name
    )
  }
  # A resource that already carries this very value, set by someone else, is left alone (as setup leaves it):
  # managing it would have destroy (and teardown) remove a tag this module did not add.
  discovery_tagged_by_others = toset([
    for id, tags in local.existing_discovery_tags : id
    if lookup(tags, local.discovery_tag, "") == local.discovery_value && lookup(tags, local.discovery_set_by_tag, "") != var.cluster_name
  ])
  discovery_subnets_to_tag         = setsubtract(local.discovery_subnet_ids, local.discovery_tagged_by_others)
  discovery_security_groups_to_tag = setsubtract(local.discovery_security_group_ids, local.discovery_tagged_by_others)
}

# Step 8: karpenter.sh/discovery, and beside it nodesmith.io/discovery-set-by so teardown removes only the
# discovery tags nodesmith added.
resource "aws_ec2_tag" "subnet_discovery" {
  for_each = local.discovery_subnets_to_tag

  resource_id = each.key
  key         = local.discovery_tag
  value       = local.discovery_value

  lifecycle {
    precondition {
      condition     = !contains(keys(local.discovery_conflicts), each.key)
      error_message = "${each.key} already has ${local.discovery_tag}=${lookup(local.discovery_conflicts, each.key, "")}, not ${local.discovery_value}: another cluster discovers it; set discovery_value = \"${lookup(local.discovery_conflicts, each.key, "")}\" to share it."
    }
  }
}

resource "aws_ec2_tag" "subnet_discovery_set_by" {
  for_each = local.discovery_subnets_to_tag

  resource_id = each.key
  key         = local.discovery_set_by_tag
  value       = var.cluster_name
}

resource "aws_ec2_tag" "security_group_discovery" {
  for_each = local.discovery_security_groups_to_tag

  resource_id = each.key
  key         = local.discovery_tag
  value       = local.discovery_value

  lifecycle {
    precondition {
      condition     = !contains(keys(local.discovery_conflicts), each.key)
      error_message = "${each.key} already has ${local.discovery_tag}=${lookup(local.discovery_conflicts, each.key, "")}, not ${local.discovery_value}: another cluster discovers it; set discovery_value = \"${lookup(local.discovery_conflicts, each.key, "")}\" to share it."
    }
  }
}

resource "aws_ec2_tag" "security_group_discovery_set_by" {
  for_each = local.discovery_security_groups_to_tag

  resource_id = each.key
  key         = local.discovery_set_by_tag
  value       = var.cluster_name
}

# Step 9: one new subnet per zone of the cluster's subnets. Setup carves free blocks out of the VPC itself;
# Terraform cannot see free space, so the blocks come from var.subnet_cidrs.
locals {
  cluster_zones    = toset([for subnet in data.aws_subnet.cluster : subnet.availability_zone])
  new_subnet_zones = var.create_subnets_prefix_length == null ? toset([]) : local.cluster_zones

  # Zone => the table explicitly associated with a private subnet of the cluster there (the first by ID), for the
  # new subnet to share; none: the new subnet uses the VPC's main table.
  new_subnet_route_tables = {
    for zone in local.new_subnet_zones : zone => try([
      for id in sort(tolist(local.private_cluster_subnet_ids)) : local.explicit_route_table[id]
      if data.aws_subnet.cluster[id].availability_zone == zone && local.explicit_route_table[id] != null
    ][0], null)
  }
}

resource "aws_subnet" "nodes" {
  for_each = local.new_subnet_zones

  vpc_id            = local.vpc_id
  availability_zone = each.key
  cidr_block        = lookup(var.subnet_cidrs, each.key, null)
  tags = merge(local.tags, {
    (local.discovery_tag) = local.discovery_value
    Name                  = "nodesmith-${var.cluster_name}-${each.key}"
  })

  lifecycle {
    precondition {
      condition     = lookup(var.subnet_cidrs, each.key, null) != null
      error_message = "subnet_cidrs has no CIDR block for ${each.key}: give one free /${var.create_subnets_prefix_length} of the VPC for every zone of the cluster's subnets (${join(", ", sort(tolist(local.cluster_zones)))})."
    }
    precondition {
      condition     = try(tonumber(split("/", var.subnet_cidrs[each.key])[1]) == var.create_subnets_prefix_length, true)
      error_message = "subnet_cidrs[\"${each.key}\"] is not a /${var.create_subnets_prefix_length} (create_subnets_prefix_length)."
    }
    precondition {
      condition     = length(setsubtract(keys(var.subnet_cidrs), local.cluster_zones)) == 0
      error_message = "subnet_cidrs names zones without a subnet of the cluster (${join(", ", setsubtract(keys(var.subnet_cidrs), local.cluster_zones))}); the cluster's zones are ${join(", ", sort(tolist(local.cluster_zones)))}."
    }
  }
}

resource "aws_route_table_association" "nodes" {
  for_each = { for zone, table in local.new_subnet_route_tables : zone => table if table != null }

  subnet_id      = aws_subnet.nodes[each.key].id
  route_table_id = each.value
}
