variable "region" {
  description = "AWS region for the public bucket."
  type        = string
  default     = "eu-central-1"
}

variable "bucket_name" {
  description = "Name of the public bucket (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Key prefix medgate writes under (\"\" for the bucket root)."
  type        = string
  default     = ""
}

variable "object_lock_enabled" {
  description = "Create the bucket with Object Lock (history cannot be destroyed; the log prefix is never deletable)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for default encryption; null for SSE-S3."
  type        = string
  default     = null
}

variable "peer_principal_arns" {
  description = "Peer institutions' AWS principals that may assume the read-only role."
  type        = list(string)
  default     = []
}

variable "force_destroy" {
  description = "Let `terraform destroy` remove non-empty buckets (test setups only)."
  type        = bool
  default     = false
}

variable "endpoint" {
  description = "Test only: an S3/IAM/STS-compatible endpoint (for example a local moto_server, http://127.0.0.1:PORT) that replaces AWS. null (the default) talks to AWS itself."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default = {
    "app"        = "medgate"
    "managed-by" = "terraform"
  }
}
