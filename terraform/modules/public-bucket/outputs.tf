# What the gateway's config needs ([public_store] in medgate.toml), and what peers need.

locals {
  public_store_url = var.prefix == "" ? "s3://${aws_s3_bucket.public.id}" : "s3://${aws_s3_bucket.public.id}/${var.prefix}"
  # object_store option names, as medgate's [public_store] options table takes them.
  public_store_options = merge(
    { region = data.aws_region.current.name },
    # Object Lock makes S3 require a checksum on every upload.
    var.object_lock_enabled ? { aws_checksum_algorithm = "sha256" } : {},
  )
  gateway_access_key_id = var.create_access_keys ? aws_iam_access_key.gateway[0].id : null
  gateway_secret        = var.create_access_keys && var.access_key_pgp_key == null ? aws_iam_access_key.gateway[0].secret : null
}

output "bucket" {
  description = "Name of the public bucket."
  value       = aws_s3_bucket.public.id
}

output "bucket_arn" {
  description = "ARN of the public bucket."
  value       = aws_s3_bucket.public.arn
}

output "region" {
  description = "Region of the public bucket (medgate's public store option `region`)."
  value       = data.aws_region.current.name
}

output "prefix" {
  description = "Key prefix medgate writes under (\"\" for the bucket root)."
  value       = var.prefix
}

output "log_bucket" {
  description = "Name of the bucket that receives the public bucket's server access logs."
  value       = aws_s3_bucket.logs.id
}

output "object_lock_enabled" {
  description = "Whether the public bucket has Object Lock (the gateway must then send checksums)."
  value       = var.object_lock_enabled
}

output "public_store_url" {
  description = "medgate's public store URL: [public_store] url, or --public-store."
  value       = local.public_store_url
}

output "public_store_options" {
  description = "Non-secret [public_store] options for medgate (region, and the checksum algorithm with Object Lock). Add the gateway's access key pair from the outputs below."
  value       = local.public_store_options
}

output "gateway_user_name" {
  description = "Name of the gateway's IAM user."
  value       = aws_iam_user.gateway.name
}

output "gateway_access_key_id" {
  description = "Access key id of the gateway's IAM user (medgate option access_key_id); null with create_access_keys = false."
  value       = local.gateway_access_key_id
}

output "gateway_secret_access_key" {
  description = "Secret access key of the gateway's IAM user (medgate option secret_access_key); null when keys are not created or are PGP-encrypted."
  value       = local.gateway_secret
  sensitive   = true
}

output "gateway_encrypted_secret_access_key" {
  description = "The gateway's secret access key encrypted to access_key_pgp_key (base64), when that is set."
  value       = var.create_access_keys && var.access_key_pgp_key != null ? aws_iam_access_key.gateway[0].encrypted_secret : null
}

output "peer_reader_user_name" {
  description = "Name of the read-only IAM user for peers, or null."
  value       = var.create_peer_reader ? aws_iam_user.peer_reader[0].name : null
}

output "peer_reader_access_key_id" {
  description = "Access key id of the read-only peer user, or null."
  value       = var.create_peer_reader && var.create_access_keys ? aws_iam_access_key.peer_reader[0].id : null
}

output "peer_reader_secret_access_key" {
  description = "Secret access key of the read-only peer user, or null (also null when PGP-encrypted)."
  value       = var.create_peer_reader && var.create_access_keys && var.access_key_pgp_key == null ? aws_iam_access_key.peer_reader[0].secret : null
  sensitive   = true
}

output "peer_reader_encrypted_secret_access_key" {
  description = "The peer user's secret access key encrypted to access_key_pgp_key (base64), when that is set."
  value       = var.create_peer_reader && var.create_access_keys && var.access_key_pgp_key != null ? aws_iam_access_key.peer_reader[0].encrypted_secret : null
}

output "peer_reader_role_arn" {
  description = "ARN of the read-only role peers can assume (only with peer_principal_arns), or null."
  value       = length(var.peer_principal_arns) > 0 ? aws_iam_role.peer_reader[0].arn : null
}

output "medgate_public_store_toml" {
  description = "The [public_store] section of medgate.toml, with the gateway's keys when they are in clear. Contains the secret access key: write it to a root-only file, never to a log."
  sensitive   = true
  value = join("\n", concat(
    [
      "[public_store]",
      "url = \"${local.public_store_url}\"",
      "",
      "[public_store.options]",
    ],
    [for k, v in local.public_store_options : "${k} = \"${v}\""],
    local.gateway_access_key_id == null ? [] : ["access_key_id = \"${local.gateway_access_key_id}\""],
    local.gateway_secret == null ? [] : ["secret_access_key = \"${local.gateway_secret}\""],
    [""],
  ))
}
