# A root configuration for medgate's public bucket on AWS. Credentials come from the usual
# AWS chain (environment, shared config, SSO). With `endpoint` set, every AWS API the module
# uses goes to that endpoint instead: the test suite applies this configuration to a local
# moto_server (tests/e2e/test_deploy.py).

locals {
  testing = var.endpoint != null
}

provider "aws" {
  region = var.region

  # Only for a local test endpoint; against AWS all of these stay at their defaults.
  skip_credentials_validation = local.testing
  skip_metadata_api_check     = local.testing
  skip_region_validation      = local.testing
  s3_use_path_style           = local.testing

  endpoints {
    s3  = var.endpoint
    iam = var.endpoint
    sts = var.endpoint
  }

  default_tags {
    tags = var.tags
  }
}

module "public_bucket" {
  source = "../../modules/public-bucket"

  bucket_name         = var.bucket_name
  prefix              = var.prefix
  object_lock_enabled = var.object_lock_enabled
  kms_key_arn         = var.kms_key_arn
  peer_principal_arns = var.peer_principal_arns
  force_destroy       = var.force_destroy
}
