terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Pinned exactly: the build machines have no access to the provider registry and
      # install this version from a local plugin mirror (/opt/tf-plugins, see
      # terraform/README.md). Raise it only together with the mirror.
      version = "= 5.100.0"
    }
  }
}
