variable "family" {
  description = "The task definition family; also the service name unless service_name is set."
  type        = string
}

variable "container_definitions" {
  description = "The application's container definitions, as for aws_ecs_task_definition (a list of objects)."
  type        = any

  validation {
    condition     = length(var.container_definitions) > 0
    error_message = "container_definitions must hold at least one application container."
  }
  validation {
    condition     = alltrue([for c in var.container_definitions : !startswith(c.name, "berth-")])
    error_message = "Container names starting with berth- are Berth's own; rename the application container."
  }
}

variable "port" {
  description = "The port the application serves on inside the task."
  type        = number
}

variable "upstreams" {
  description = "Services this one calls: each reachable at 127.0.0.1:local_bind_port through the proxy."
  type = list(object({
    destination_name = string
    local_bind_port  = number
  }))
  default = []
}

variable "service_name" {
  description = "The service's name in the mesh [default: family]."
  type        = string
  default     = null
}

variable "service_tags" {
  description = "The service's tags in the catalog."
  type        = list(string)
  default     = []
}

variable "service_meta" {
  description = "The service's meta in the catalog."
  type        = map(string)
  default     = {}
}

variable "requires_compatibilities" {
  description = "FARGATE, EC2 or both."
  type        = list(string)
  default     = ["FARGATE"]

  validation {
    condition     = length(var.requires_compatibilities) > 0 && alltrue([for c in var.requires_compatibilities : contains(["FARGATE", "EC2"], c)])
    error_message = "requires_compatibilities takes FARGATE and/or EC2."
  }
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

variable "volumes" {
  description = "The application's volumes; the shared berth-data volume is added."
  type        = any
  default     = []
}

variable "task_role_arn" {
  description = "The task role (it logs in to the mesh)."
  type        = string
  default     = null
}

variable "execution_role_arn" {
  description = "The task execution role."
  type        = string
  default     = null
}

variable "acls" {
  description = "Whether the servers have ACLs on: the agent and mesh-init then log in with the task role."
  type        = bool
  default     = true
}

variable "server_hosts" {
  description = "The servers' addresses (DNS names or IPs), e.g. the server-cluster module's NLB."
  type        = list(string)

  validation {
    condition     = length(var.server_hosts) > 0
    error_message = "server_hosts must name at least one server."
  }
}

variable "http_port" {
  description = "The servers' HTTP (or HTTPS) port."
  type        = number
  default     = 8500
}

variable "rpc_port" {
  description = "The servers' RPC port."
  type        = number
  default     = 8300
}

variable "tls" {
  description = "Whether the servers' HTTPS and RPC use TLS; the CA comes from ca_cert_secret_arn."
  type        = bool
  default     = false
}

variable "ca_cert_secret_arn" {
  description = "Secrets Manager ARN of the servers' CA certificate (PEM), given to Berth's containers as BERTH_CA_CERT_PEM."
  type        = string
  default     = null
}

variable "login" {
  description = "Login settings: the region, and STS/IAM endpoints and the server ID header value if not AWS's defaults."
  type = object({
    region                 = optional(string)
    sts_endpoint           = optional(string)
    iam_endpoint           = optional(string)
    server_id_header_value = optional(string)
    method                 = optional(string)
    client_method          = optional(string)
  })
  default = {}
}

variable "application_shutdown_delay_seconds" {
  description = "Delay the application's SIGTERM this long (0: not at all), so its peers stop sending first."
  type        = number
  default     = 0
}

variable "images" {
  description = "The Berth image (every Berth binary) and the proxy image (Envoy and berth-envoy-entrypoint)."
  type = object({
    berth = string
    envoy = string
  })
  default = {
    berth = "public.ecr.aws/berth/berth:0.1.0"
    envoy = "public.ecr.aws/berth/berth-envoy:0.1.0"
  }
}

variable "log_configuration" {
  description = "logConfiguration for Berth's containers (the application's keep their own)."
  type        = any
  default     = null
}

variable "proxy_health_check_interval" {
  description = "Seconds between the proxy's health checks (ECS allows 5 to 300; berth-ecs-local also less)."
  type        = number
  default     = 5
}

variable "proxy_essential" {
  description = "Whether the proxy is essential: a task whose proxy died is then replaced instead of lingering in the mesh."
  type        = bool
  default     = true
}

variable "health_sync_essential" {
  description = "Whether berth-health-sync is essential."
  type        = bool
  default     = true
}

variable "envoy_log_level" {
  description = "Envoy's --log-level."
  type        = string
  default     = "warn"
}

variable "extra_config" {
  description = "Fields merged into BERTH_ECS_CONFIG_JSON at its top level (see ecs/berth-ecs-config.schema.json)."
  type        = any
  default     = {}
}
