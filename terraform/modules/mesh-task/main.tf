data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  service_name       = coalesce(var.service_name, var.family)
  task_role_arn      = var.create_task_role ? aws_iam_role.task[0].arn : var.task_role.arn
  execution_role_arn = var.create_execution_role ? aws_iam_role.execution[0].arn : var.execution_role.arn
  login              = merge(var.login, { region = coalesce(var.login.region, data.aws_region.current.name) })
  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

module "container_definitions" {
  source = "./modules/container-definitions"

  family                             = var.family
  container_definitions              = var.container_definitions
  port                               = var.port
  upstreams                          = var.upstreams
  service_name                       = local.service_name
  service_tags                       = var.service_tags
  service_meta                       = var.service_meta
  requires_compatibilities           = var.requires_compatibilities
  cpu                                = var.cpu
  memory                             = var.memory
  volumes                            = [for v in var.volumes : { for k, x in { name = v.name, host = v.host_path == null ? null : { sourcePath = v.host_path } } : k => x if x != null }]
  task_role_arn                      = local.task_role_arn
  execution_role_arn                 = local.execution_role_arn
  acls                               = var.acls
  server_hosts                       = var.server_hosts
  http_port                          = var.http_port
  rpc_port                           = var.rpc_port
  tls                                = var.tls
  ca_cert_secret_arn                 = var.ca_cert_secret_arn
  login                              = local.login
  application_shutdown_delay_seconds = var.application_shutdown_delay_seconds
  images                             = var.images
  log_configuration                  = var.log_configuration
  proxy_health_check_interval        = var.proxy_health_check_interval
  proxy_essential                    = var.proxy_essential
  health_sync_essential              = var.health_sync_essential
  extra_config                       = var.extra_config
}

# The task role is the task's identity in the mesh: the auth method binds roles under
# iam_role_path, and its berth.service-name tag names the service (as Consul on ECS's
# consul.hashicorp.com.service-name does).
resource "aws_iam_role" "task" {
  count              = var.create_task_role ? 1 : 0
  name               = "${var.family}-task"
  path               = var.iam_role_path
  assume_role_policy = local.ecs_tasks_trust
  tags               = merge(var.tags, { "berth.service-name" = local.service_name })
}

# The servers read the role (iam:GetRole, signed by the task) to learn its path and tags.
resource "aws_iam_role_policy" "task_get_role" {
  count = var.create_task_role ? 1 : 0
  name  = "berth-get-own-role"
  role  = aws_iam_role.task[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["iam:GetRole"]
      Resource = aws_iam_role.task[0].arn
    }]
  })
}

resource "aws_iam_role_policy_attachment" "task_additional" {
  for_each   = var.create_task_role ? toset(var.additional_task_role_policies) : toset([])
  role       = aws_iam_role.task[0].id
  policy_arn = each.value
}

resource "aws_iam_role" "execution" {
  count              = var.create_execution_role ? 1 : 0
  name               = "${var.family}-execution"
  path               = var.iam_role_path
  assume_role_policy = local.ecs_tasks_trust
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  count      = var.create_execution_role ? 1 : 0
  role       = aws_iam_role.execution[0].id
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution_ca_secret" {
  count = var.create_execution_role && var.ca_cert_secret_arn != null ? 1 : 0
  name  = "berth-ca-cert"
  role  = aws_iam_role.execution[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = var.ca_cert_secret_arn
    }]
  })
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.family
  requires_compatibilities = var.requires_compatibilities
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = local.task_role_arn
  execution_role_arn       = local.execution_role_arn
  container_definitions    = module.container_definitions.container_definitions_json

  volume {
    name = "berth-data"
  }

  dynamic "volume" {
    for_each = var.volumes
    content {
      name      = volume.value.name
      host_path = volume.value.host_path
    }
  }

  tags = merge(var.tags, module.container_definitions.tags)
}
