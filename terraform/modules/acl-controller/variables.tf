variable "name" {
  description = "Name of the ECS service, task family and roles."
  type        = string
  default     = "berth-acl-controller"
}

variable "ecs_cluster_arn" {
  description = "The ECS cluster whose tasks the controller looks after (it runs in it too)."
  type        = string

  validation {
    condition     = can(regex("^arn:[^:]+:ecs:[^:]+:[0-9]{12}:cluster/[A-Za-z0-9_-]+$", var.ecs_cluster_arn))
    error_message = "ecs_cluster_arn must be an ECS cluster ARN (arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME)."
  }
}

variable "desired_count" {
  description = "1, or 2 for a standby that takes over within one session TTL."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 2], var.desired_count)
    error_message = "desired_count is 1 or 2."
  }
}

variable "subnets" {
  description = "Subnets of the controller's tasks (they must reach the servers and the ECS API)."
  type        = list(string)
}

variable "security_groups" {
  description = "Security groups of the controller's tasks."
  type        = list(string)
  default     = []
}

variable "server_http_addr" {
  description = "A server's HTTP API as a URL, e.g. http://<server-cluster NLB DNS name>:8500."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.server_http_addr))
    error_message = "server_http_addr must be an http:// or https:// URL."
  }
}

variable "bootstrap_token_secret_arn" {
  description = "Secrets Manager ARN of the token the controller uses (the ACL bootstrap token)."
  type        = string
}

variable "ca_cert_secret_arn" {
  description = "Secrets Manager ARN of the servers' CA (PEM), for an https:// server_http_addr."
  type        = string
  default     = null
}

variable "iam_role_path" {
  description = "Task roles under this path may log in (the mesh-task module's iam_role_path)."
  type        = string
  default     = "/berth/"
}

variable "interval" {
  description = "Time between reconciles."
  type        = string
  default     = "10s"
}

variable "image" {
  description = "The Berth image."
  type        = string
  default     = "public.ecr.aws/berth/berth:0.1.0"
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
  default     = 256
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 512
}

variable "log_configuration" {
  description = "logConfiguration of the controller's container."
  type        = any
  default     = null
}

variable "extra_args" {
  description = "More berth-acl-controller flags, e.g. [\"-sts-endpoint\", URL]."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "AWS tags for the resources this module creates."
  type        = map(string)
  default     = {}
}
