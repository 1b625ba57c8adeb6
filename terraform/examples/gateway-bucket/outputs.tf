output "bucket" {
  description = "Name of the public bucket."
  value       = module.public_bucket.bucket
}

output "region" {
  description = "Region of the public bucket."
  value       = module.public_bucket.region
}

output "log_bucket" {
  description = "Bucket that receives the access logs."
  value       = module.public_bucket.log_bucket
}

output "public_store_url" {
  description = "medgate's [public_store] url."
  value       = module.public_bucket.public_store_url
}

output "public_store_options" {
  description = "Non-secret [public_store] options."
  value       = module.public_bucket.public_store_options
}

output "gateway_access_key_id" {
  description = "The gateway's access key id."
  value       = module.public_bucket.gateway_access_key_id
}

output "gateway_secret_access_key" {
  description = "The gateway's secret access key."
  value       = module.public_bucket.gateway_secret_access_key
  sensitive   = true
}

output "peer_reader_access_key_id" {
  description = "The read-only peer user's access key id."
  value       = module.public_bucket.peer_reader_access_key_id
}

output "peer_reader_secret_access_key" {
  description = "The read-only peer user's secret access key."
  value       = module.public_bucket.peer_reader_secret_access_key
  sensitive   = true
}

output "peer_reader_role_arn" {
  description = "Role peers can assume, if peer_principal_arns was set."
  value       = module.public_bucket.peer_reader_role_arn
}

output "medgate_public_store_toml" {
  description = "The [public_store] section of medgate.toml, secret included."
  value       = module.public_bucket.medgate_public_store_toml
  sensitive   = true
}
