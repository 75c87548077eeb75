terraform {
  # The project tests with 1.5.7; the module itself needs 1.3 (startswith, postconditions on data sources).
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.81 made thumbprint_list optional on aws_iam_openid_connect_provider: setup sends no thumbprint (IAM then
      # trusts the issuer's CA), and so does this module. Access entries and Pod Identity came earlier in 5.x.
      version = "~> 5.81"
    }
  }
}
