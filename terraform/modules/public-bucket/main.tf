# The public bucket medgate writes sealed blobs to, locked down, with its access-log bucket
# and least-privilege IAM identities. medgate trusts this bucket for availability only (every
# record is encrypted and integrity-checked on premises before it is uploaded); the settings
# here are defence in depth and protect history against a compromised gateway or account.
#
# Every checkov check this file does not satisfy is skipped in place with its reason
# (`#checkov:skip=ID:reason` inside the resource); terraform/README.md lists them.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  # "" or "some/prefix/": what medgate's s3://BUCKET/PREFIX URL puts before v1/.
  key_prefix = var.prefix == "" ? "" : "${var.prefix}/"
  # Everything medgate writes (DESIGN.md, "Public store layout (v1, pinned)").
  data_prefix = "${local.key_prefix}v1/"
  # The transparency log's checkpoint and tiles: never deletable with Object Lock on.
  log_prefix = "${local.key_prefix}v1/log/"

  log_bucket_name       = coalesce(var.log_bucket_name, "${var.bucket_name}-access-logs")
  access_log_prefix     = "s3-access/${var.bucket_name}/"
  gateway_user_name     = coalesce(var.gateway_user_name, "${var.bucket_name}-gateway")
  peer_reader_user_name = coalesce(var.peer_reader_user_name, "${var.bucket_name}-peer-reader")

  use_kms     = var.kms_key_arn != null
  public_arn  = aws_s3_bucket.public.arn
  objects_arn = "${aws_s3_bucket.public.arn}/${local.data_prefix}*"
  log_arn     = "${aws_s3_bucket.public.arn}/${local.log_prefix}*"
}

# ---------------------------------------------------------------------------
# The public bucket
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "public" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is left to the institution (a second region doubles cost and is a data-residency decision); the sealed blobs are useless without the on-premises private store, whose backups are what disaster recovery depends on.
  #checkov:skip=CKV2_AWS_62:Event notifications have no consumer: medgate learns of every write from its own private store, and access is audited through the server access logs.
  #checkov:skip=CKV_AWS_145:SSE-KMS is an option (kms_key_arn); SSE-S3 is the default because every object is already encrypted client-side by medgate before upload, so bucket encryption is defence in depth only and a KMS key adds cost and an availability dependency.
  bucket              = var.bucket_name
  object_lock_enabled = var.object_lock_enabled
  force_destroy       = var.force_destroy
  tags                = var.tags
}

resource "aws_s3_bucket_ownership_controls" "public" {
  bucket = aws_s3_bucket.public.id

  rule {
    # ACLs off: only the policies below decide access.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "public" {
  bucket = aws_s3_bucket.public.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "public" {
  bucket = aws_s3_bucket.public.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "public" {
  bucket = aws_s3_bucket.public.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.use_kms ? "aws:kms" : "AES256"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = local.use_kms
  }
}

resource "aws_s3_bucket_object_lock_configuration" "public" {
  count  = var.object_lock_enabled ? 1 : 0
  bucket = aws_s3_bucket.public.id

  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.public]
}

resource "aws_s3_bucket_lifecycle_configuration" "public" {
  bucket = aws_s3_bucket.public.id

  # Current versions never expire: medgate's gc decides what is garbage. What gc deletes (and
  # every overwritten log checkpoint) becomes a noncurrent version, kept for the recovery
  # window and then removed.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.public]
}

resource "aws_s3_bucket_logging" "public" {
  bucket        = aws_s3_bucket.public.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = local.access_log_prefix

  depends_on = [aws_s3_bucket_policy.logs]
}

data "aws_iam_policy_document" "public_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.public_arn,
      "${local.public_arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid     = "DenyOutdatedTls"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.public_arn,
      "${local.public_arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }

  # With Object Lock on, nobody (not the gateway, not an administrator working through IAM)
  # may hide or remove the transparency log: no delete markers, no version deletes.
  dynamic "statement" {
    for_each = var.object_lock_enabled ? [1] : []

    content {
      sid    = "DenyLogDeletion"
      effect = "Deny"
      actions = [
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
      ]
      resources = [local.log_arn]

      principals {
        type        = "*"
        identifiers = ["*"]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "public" {
  bucket = aws_s3_bucket.public.id
  policy = data.aws_iam_policy_document.public_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.public]
}

# ---------------------------------------------------------------------------
# The access-log bucket
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:Cross-region replication of access logs is left to the institution, as for the public bucket.
  #checkov:skip=CKV2_AWS_62:Event notifications have no consumer for access logs.
  #checkov:skip=CKV_AWS_145:S3 server access logging can only deliver to a bucket encrypted with SSE-S3, not SSE-KMS.
  bucket        = local.log_bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket = aws_s3_bucket.logs.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "S3ServerAccessLogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.access_log_prefix}*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [local.public_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.logs.arn,
      "${aws_s3_bucket.logs.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs.json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

# ---------------------------------------------------------------------------
# IAM: the gateway (read/write on PREFIX/v1/ only) and peers (read-only)
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "gateway" {
  statement {
    sid       = "ListOwnPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.public_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.data_prefix}*"]
    }
  }

  statement {
    sid = "ReadWriteOwnPrefix"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.objects_arn]
  }

  # An explicit deny, so that no policy attached to this user later can re-open it.
  dynamic "statement" {
    for_each = var.object_lock_enabled ? [1] : []

    content {
      sid    = "NeverDeleteTheLog"
      effect = "Deny"
      actions = [
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
        "s3:PutObjectRetention",
        "s3:PutObjectLegalHold",
      ]
      resources = [local.log_arn]
    }
  }

  dynamic "statement" {
    for_each = local.use_kms ? [1] : []

    content {
      sid = "UseBucketKmsKey"
      actions = [
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
      ]
      resources = [var.kms_key_arn]
    }
  }
}

data "aws_iam_policy_document" "peer_reader" {
  statement {
    sid       = "ListPublishedPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.public_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.data_prefix}*"]
    }
  }

  statement {
    sid       = "ReadPublishedPrefix"
    actions   = ["s3:GetObject"]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = local.use_kms ? [1] : []

    content {
      sid       = "DecryptWithBucketKmsKey"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_user" "gateway" {
  #checkov:skip=CKV_AWS_273:The gateway runs on premises, outside AWS, as a service and not a person: SSO does not apply, and object_store needs static keys or a web-identity token (IAM Roles Anywhere is the alternative; see terraform/README.md).
  name          = local.gateway_user_name
  path          = var.iam_path
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_iam_user_policy" "gateway" {
  #checkov:skip=CKV_AWS_40:A single-purpose machine user whose one inline policy is scoped to this bucket's prefix; a group with one member would only add a resource to audit.
  name   = "medgate-gateway-${var.bucket_name}"
  user   = aws_iam_user.gateway.name
  policy = data.aws_iam_policy_document.gateway.json
}

resource "aws_iam_access_key" "gateway" {
  count   = var.create_access_keys ? 1 : 0
  user    = aws_iam_user.gateway.name
  pgp_key = var.access_key_pgp_key
}

resource "aws_iam_user" "peer_reader" {
  #checkov:skip=CKV_AWS_273:Peer institutions read from their own premises, outside this AWS account: SSO does not apply (give peers with an AWS account the role instead, via peer_principal_arns).
  count         = var.create_peer_reader ? 1 : 0
  name          = local.peer_reader_user_name
  path          = var.iam_path
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_iam_user_policy" "peer_reader" {
  #checkov:skip=CKV_AWS_40:A single-purpose read-only machine user with one inline policy scoped to this bucket's prefix; a group with one member would only add a resource to audit.
  count  = var.create_peer_reader ? 1 : 0
  name   = "medgate-peer-reader-${var.bucket_name}"
  user   = aws_iam_user.peer_reader[0].name
  policy = data.aws_iam_policy_document.peer_reader.json
}

resource "aws_iam_access_key" "peer_reader" {
  count   = var.create_peer_reader && var.create_access_keys ? 1 : 0
  user    = aws_iam_user.peer_reader[0].name
  pgp_key = var.access_key_pgp_key
}

data "aws_iam_policy_document" "peer_assume" {
  statement {
    sid     = "PeerInstitutionsAssume"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = length(var.peer_principal_arns) > 0 ? var.peer_principal_arns : ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_iam_role" "peer_reader" {
  count                = length(var.peer_principal_arns) > 0 ? 1 : 0
  name                 = "${local.peer_reader_user_name}-role"
  path                 = var.iam_path
  assume_role_policy   = data.aws_iam_policy_document.peer_assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "peer_reader" {
  count  = length(var.peer_principal_arns) > 0 ? 1 : 0
  name   = "medgate-peer-reader-${var.bucket_name}"
  role   = aws_iam_role.peer_reader[0].id
  policy = data.aws_iam_policy_document.peer_reader.json
}
