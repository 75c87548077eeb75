# The outputs `nodesmith setup` reports, under the same names.

output "node_role" {
  description = "Name of the node IAM role (EC2NodeClass spec.role)."
  value       = aws_iam_role.node.name
}

output "node_role_arn" {
  description = "ARN of the node IAM role (for an aws-auth mapping when node_access = \"aws-auth\")."
  value       = aws_iam_role.node.arn
}

output "instance_profile" {
  description = "Name of the instance profile holding the node role."
  value       = aws_iam_instance_profile.node.name
}

output "controller_role_arn" {
  description = "ARN of the controller's role: the chart's serviceAccount.annotations.\"eks.amazonaws.com/role-arn\" with IRSA."
  value       = aws_iam_role.controller.arn
}

output "interruption_queue" {
  description = "Name of the interruption queue: the chart's settings.interruptionQueue."
  value       = aws_sqs_queue.interruption.name
}

output "interruption_queue_arn" {
  description = "ARN of the interruption queue."
  value       = aws_sqs_queue.interruption.arn
}

output "cluster_endpoint" {
  description = "The cluster's API server endpoint: the chart's settings.clusterEndpoint."
  value       = data.aws_eks_cluster.this.endpoint
}

output "discovery_value" {
  description = "Value of karpenter.sh/discovery on the tagged subnets and security groups (EC2NodeClass selectors)."
  value       = local.discovery_value
}
