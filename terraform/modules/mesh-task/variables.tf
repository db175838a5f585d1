variable "family" {
  description = "The task definition family; also the service name unless service_name is set."
  type        = string
}

variable "container_definitions" {
  description = "The application's container definitions (a list of objects, as for aws_ecs_task_definition)."
  type        = any
}

variable "port" {
  description = "The port the application serves on inside the task."
  type        = number
}

variable "upstreams" {
  description = "Services this one calls, each at 127.0.0.1:local_bind_port."
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
  description = "The application's volumes (objects with name and optionally host_path); berth-data is added."
  type = list(object({
    name      = string
    host_path = optional(string)
  }))
  default = []
}

variable "create_task_role" {
  description = "Create the task role at iam_role_path, tagged berth.service-name, allowed iam:GetRole on itself."
  type        = bool
  default     = true
}

variable "task_role" {
  description = "The task role to use when create_task_role is false (it must carry the tag and the iam:GetRole permission)."
  type = object({
    id  = string
    arn = string
  })
  default = null
}

variable "create_execution_role" {
  description = "Create the task execution role."
  type        = bool
  default     = true
}

variable "execution_role" {
  description = "The execution role to use when create_execution_role is false."
  type = object({
    id  = string
    arn = string
  })
  default = null
}

variable "iam_role_path" {
  description = "Path of the roles this module creates; the ACL controller binds task roles under it."
  type        = string
  default     = "/berth/"
}

variable "additional_task_role_policies" {
  description = "ARNs of more policies for the task role the module creates."
  type        = list(string)
  default     = []
}

variable "acls" {
  description = "Whether the servers have ACLs on (tasks then log in with their task role)."
  type        = bool
  default     = true
}

variable "server_hosts" {
  description = "The servers' addresses, e.g. the server-cluster module's load balancer DNS name."
  type        = list(string)
}

variable "http_port" {
  description = "The servers' HTTP or HTTPS port."
  type        = number
  default     = 8500
}

variable "rpc_port" {
  description = "The servers' RPC port."
  type        = number
  default     = 8300
}

variable "tls" {
  description = "Whether the servers' HTTPS and RPC use TLS."
  type        = bool
  default     = false
}

variable "ca_cert_secret_arn" {
  description = "Secrets Manager ARN of the servers' CA certificate (PEM)."
  type        = string
  default     = null
}

variable "login" {
  description = "Login settings (region defaults to the provider's; endpoints and server ID header if not AWS's)."
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
  description = "Delay the application's SIGTERM this long (0: not at all)."
  type        = number
  default     = 0
}

variable "images" {
  description = "The Berth image and the proxy image."
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
  description = "logConfiguration for Berth's containers."
  type        = any
  default     = null
}

variable "proxy_health_check_interval" {
  description = "Seconds between the proxy's health checks (5 to 300)."
  type        = number
  default     = 5
}

variable "proxy_essential" {
  description = "Whether the proxy is essential (a task whose proxy died is replaced)."
  type        = bool
  default     = true
}

variable "health_sync_essential" {
  description = "Whether berth-health-sync is essential."
  type        = bool
  default     = true
}

variable "extra_config" {
  description = "Fields merged into BERTH_ECS_CONFIG_JSON."
  type        = any
  default     = {}
}

variable "tags" {
  description = "AWS tags for the resources this module creates."
  type        = map(string)
  default     = {}
}
