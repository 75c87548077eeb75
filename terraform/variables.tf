variable "cluster_name" {
  description = "The existing EKS cluster (`nodesmith setup --cluster`). Every name below is derived from it."
  type        = string

  validation {
    # EKS's own rule. It also keeps the names below equal to setup's: Terraform normalizes strings to NFC before
    # hashing, which only matters for characters EKS refuses anyway.
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be an EKS cluster name: 1 to 100 letters, digits, '-' or '_', starting with a letter or digit."
  }
}

variable "identity" {
  description = "How the controller gets AWS credentials: \"irsa\" (a role trusted through the cluster's OIDC provider) or \"pod-identity\" (EKS Pod Identity, with an association for the ServiceAccount)."
  type        = string
  default     = "irsa"

  validation {
    condition     = contains(["irsa", "pod-identity"], var.identity)
    error_message = "identity must be \"irsa\" or \"pod-identity\"."
  }
}

variable "namespace" {
  description = "Namespace of the controller's ServiceAccount (`--namespace`)."
  type        = string
  default     = "nodesmith"
}

variable "service_account" {
  description = "The controller's ServiceAccount (`--service-account`)."
  type        = string
  default     = "nodesmith"
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's existing IAM OIDC provider (IRSA only). Null creates one for the cluster's issuer; give the ARN when the account already has it (eksctl, another module), since IAM allows one provider per issuer."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null ? true : can(regex("^arn:[^:]+:iam::[0-9]{12}:oidc-provider/.+", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN (arn:<partition>:iam::<account>:oidc-provider/<issuer host and path>)."
  }
}

variable "node_access" {
  description = "How nodes are let into the cluster: \"access-entry\" (an EKS access entry of type EC2_LINUX for the node role) or \"aws-auth\" (this module creates nothing: map node_role_arn in the aws-auth ConfigMap yourself, as setup does through the Kubernetes API)."
  type        = string
  default     = "access-entry"

  validation {
    condition     = contains(["access-entry", "aws-auth"], var.node_access)
    error_message = "node_access must be \"access-entry\" or \"aws-auth\"."
  }
}

variable "discovery_scope" {
  description = "Value of the karpenter.sh/discovery tag: \"cluster\" (the cluster's name) or \"vpc\" (the VPC's Name tag, for clusters sharing a VPC's subnets). discovery_value overrides both."
  type        = string
  default     = "cluster"

  validation {
    condition     = contains(["cluster", "vpc"], var.discovery_scope)
    error_message = "discovery_scope must be \"cluster\" or \"vpc\"."
  }
}

variable "discovery_value" {
  description = "An explicit karpenter.sh/discovery value (`--discovery-value`); overrides discovery_scope."
  type        = string
  default     = null

  validation {
    condition     = var.discovery_value == null ? true : length(var.discovery_value) > 0
    error_message = "discovery_value must not be empty; leave it null to derive it from discovery_scope."
  }
}

variable "subnet_ids" {
  description = "Subnets to tag for discovery. Null (like setup): the cluster's private subnets, those whose route table has no route to an internet gateway. IDs must be known at plan time."
  type        = list(string)
  default     = null
}

variable "security_group_ids" {
  description = "Security groups to tag for discovery. Null (like setup): the cluster's security groups and its cluster security group. IDs must be known at plan time."
  type        = list(string)
  default     = null
}

variable "create_subnets_prefix_length" {
  description = "Create one subnet of this prefix length per zone of the cluster's subnets (`--create-subnets`); null creates none. Their CIDR blocks come from subnet_cidrs, since Terraform cannot find free space in the VPC."
  type        = number
  default     = null

  validation {
    condition     = var.create_subnets_prefix_length == null ? true : (floor(var.create_subnets_prefix_length) == var.create_subnets_prefix_length && var.create_subnets_prefix_length >= 16 && var.create_subnets_prefix_length <= 28)
    error_message = "create_subnets_prefix_length must be a whole number from 16 to 28, as for `nodesmith setup --create-subnets`."
  }
}

variable "subnet_cidrs" {
  description = "With create_subnets_prefix_length: availability zone => free CIDR block of that length in the cluster's VPC, one for every zone of the cluster's subnets (e.g. { \"us-east-1a\" = \"10.0.64.0/22\" })."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for cidr in values(var.subnet_cidrs) : can(cidrhost(cidr, 0)) ? cidrhost(cidr, 0) == split("/", cidr)[0] : false])
    error_message = "Every subnet_cidrs value must be an IPv4 CIDR block given by its network address (10.0.64.0/22, not 10.0.65.0/22)."
  }
}

variable "create_spot_service_linked_role" {
  description = "Create AWSServiceRoleForEC2Spot, which EC2 needs once per account to launch spot instances. Null (the default): only when the account does not have it yet, as setup does. True or false forces the choice."
  type        = bool
  default     = null
}

variable "tags" {
  description = "Extra tags for everything the module creates that takes tags. nodesmith.io/cluster is always set to cluster_name and wins over a tag of the same key here."
  type        = map(string)
  default     = {}
}
