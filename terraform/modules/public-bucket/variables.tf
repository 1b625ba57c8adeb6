# Inputs of the public-bucket module. Only `bucket_name` is required; every default is the
# locked-down choice. See terraform/README.md for how the outputs map onto medgate's config.

variable "bucket_name" {
  description = "Name of the public bucket that holds medgate's sealed blobs, patient indexes and log tiles (globally unique in S3)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 characters, lower-case letters, digits, dots and hyphens."
  }
}

variable "prefix" {
  description = "Key prefix medgate writes under inside the bucket, without slashes at either end (\"\" for the bucket root). The gateway's public store URL is s3://BUCKET/PREFIX and every object it writes is PREFIX/v1/...; the IAM policies grant nothing outside PREFIX/v1/."
  type        = string
  default     = ""

  validation {
    condition     = var.prefix == "" || can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.prefix))
    error_message = "prefix must be empty or path segments of safe S3 key characters, with no leading, trailing or doubled slash."
  }
}

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for default bucket encryption (SSE-KMS with an S3 Bucket Key). null (the default) uses SSE-S3 (AES256). Either way this is defence in depth: medgate encrypts every record before upload. With a key set, the gateway and peer-reader policies also get the kms: permissions they need on it."
  type        = string
  default     = null
}

variable "object_lock_enabled" {
  description = "Create the bucket with S3 Object Lock, so that neither a compromised gateway nor a compromised cloud account can destroy history. Can only be chosen when the bucket is created. When true the gateway must send a checksum with every upload (set the public store option aws_checksum_algorithm = \"sha256\"; the public_store_options output does), and deleting anything under PREFIX/v1/log/ is denied to everyone."
  type        = bool
  default     = false
}

variable "object_lock_mode" {
  description = "Default retention mode with Object Lock on: GOVERNANCE (principals with s3:BypassGovernanceRetention may shorten it; the gateway never has it) or COMPLIANCE (nobody can, not even the account root)."
  type        = string
  default     = "GOVERNANCE"

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "object_lock_days" {
  description = "Default retention in days for every object version written while Object Lock is on."
  type        = number
  default     = 30

  validation {
    condition     = var.object_lock_days >= 1
    error_message = "object_lock_days must be at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which a version that was overwritten or deleted (medgate's gc deletes unreferenced blobs; log checkpoints are overwritten) is removed for good. This is the window in which a deleted blob can still be recovered from the bucket; with Object Lock it cannot be shorter than the retention in practice."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which S3 aborts a multipart upload that was never completed. Keep it longer than medgate's gc grace period and the longest upload; gc normally aborts them itself."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

variable "log_bucket_name" {
  description = "Name of the separate bucket that receives the public bucket's S3 server access logs. null means \"<bucket_name>-access-logs\"."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Days the access-log bucket keeps log objects."
  type        = number
  default     = 365

  validation {
    condition     = var.log_retention_days >= 1
    error_message = "log_retention_days must be at least 1."
  }
}

variable "gateway_user_name" {
  description = "Name of the IAM user the medgate gateway uses. null means \"<bucket_name>-gateway\"."
  type        = string
  default     = null
}

variable "create_peer_reader" {
  description = "Create the read-only IAM user for peer institutions, witnesses and patient recovery (`patient pull` needs read access to PREFIX/v1/)."
  type        = bool
  default     = true
}

variable "peer_reader_user_name" {
  description = "Name of the read-only IAM user. null means \"<bucket_name>-peer-reader\"."
  type        = string
  default     = null
}

variable "peer_principal_arns" {
  description = "AWS principals (peer institutions' account or role ARNs) allowed to assume a read-only role with the same permissions as the peer-reader user. Empty (the default) creates no role."
  type        = list(string)
  default     = []
}

variable "create_access_keys" {
  description = "Create access keys for the gateway and peer-reader users. Their secrets end up in the Terraform state (encrypted with access_key_pgp_key if that is set): keep the state in an encrypted, access-controlled backend, or set false and create the keys out of band."
  type        = bool
  default     = true
}

variable "access_key_pgp_key" {
  description = "Optional PGP public key (base64, or keybase:USERNAME) that encrypts the created secret access keys in the state and outputs. When set, the *_secret_access_key outputs are null and the *_encrypted_secret_access_key outputs hold the ciphertext."
  type        = string
  default     = null
}

variable "iam_path" {
  description = "IAM path for the users, role and policies the module creates."
  type        = string
  default     = "/medgate/"
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the buckets with their contents. Leave false for anything but throw-away test setups: losing the bucket loses every record."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default     = {}
}
