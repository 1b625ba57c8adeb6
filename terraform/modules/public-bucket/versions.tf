terraform {
  # optional() object attributes and `check`-free validation need 1.5 or newer.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The root configuration pins the exact version (terraform/examples/gateway-bucket
      # pins 5.100.0, the one the build machines' local plugin mirror holds); the module
      # accepts any 5.x from that one on.
      version = ">= 5.100.0, < 6.0.0"
    }
  }
}
