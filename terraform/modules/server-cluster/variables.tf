variable "name" {
  description = "Prefix of every resource's name; also the default cloud auto-join tag value."
  type        = string
  default     = "berth-server"
}

variable "server_count" {
  description = "How many servers: 3 or 5 (bootstrap_expect)."
  type        = number
  default     = 3

  validation {
    condition     = contains([3, 5], var.server_count)
    error_message = "server_count is 3 or 5: a Raft cluster needs an odd number of servers."
  }
}

variable "vpc_id" {
  description = "The VPC of the servers."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets, in different availability zones, to spread the servers over."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "Give at least two subnets, in different availability zones."
  }
}

variable "allowed_cidr_blocks" {
  description = "Networks that may reach the servers' HTTP(S) and RPC ports (the ECS tasks' subnets)."
  type        = list(string)
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "AMI (Amazon Linux 2023 or any systemd Linux with curl and the AWS CLI) [default: the latest Amazon Linux 2023]."
  type        = string
  default     = null
}

variable "berth_server_url" {
  description = "Where the user data downloads the berth-server binary from."
  type        = string
}

variable "berth_server_sha256" {
  description = "The SHA-256 of that binary; the user data refuses anything else."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.berth_server_sha256))
    error_message = "berth_server_sha256 is 64 lowercase hex digits."
  }
}

variable "datacenter" {
  description = "The datacenter name."
  type        = string
  default     = "dc1"
}

variable "retry_join_tag" {
  description = "The tag (key and value) cloud auto-join finds the servers by [default: berth-cluster = name]."
  type = object({
    key   = string
    value = string
  })
  default = null
}

variable "data_volume_size" {
  description = "Size (GiB) of each server's EBS data volume."
  type        = number
  default     = 20
}

variable "kms_key_id" {
  description = "KMS key for the EBS volumes [default: the account's EBS default key]."
  type        = string
  default     = null
}

variable "tls" {
  description = "Serve HTTPS on 8501 and TLS on RPC with the certificate from the secrets below."
  type        = bool
  default     = false
}

variable "tls_secret_arns" {
  description = "Secrets Manager ARNs of the CA, the servers' certificate and key (PEM), when tls is on."
  type = object({
    ca   = string
    cert = string
    key  = string
  })
  default = null
}

variable "acl_bootstrap_token_secret_arn" {
  description = "Secrets Manager ARN of the initial management token; ACLs are on (default deny) when given."
  type        = string
  default     = null
}

variable "load_balancer_deletion_protection" {
  description = "Deletion protection of the internal load balancer."
  type        = bool
  default     = true
}

variable "access_logs_bucket" {
  description = "S3 bucket for the load balancer's access logs (none when null)."
  type        = string
  default     = null
}

variable "tags" {
  description = "AWS tags for the resources this module creates."
  type        = map(string)
  default     = {}
}
