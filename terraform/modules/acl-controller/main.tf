data "aws_partition" "current" {}

locals {
  # arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME
  arn_parts    = split(":", var.ecs_cluster_arn)
  region       = local.arn_parts[3]
  account      = local.arn_parts[4]
  cluster_name = split("/", local.arn_parts[5])[1]
  ecs_prefix   = "arn:${data.aws_partition.current.partition}:ecs:${local.region}:${local.account}"

  trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  secrets = concat(
    [{ name = "BERTH_HTTP_TOKEN", valueFrom = var.bootstrap_token_secret_arn }],
    var.ca_cert_secret_arn == null ? [] : [{ name = "BERTH_CA_CERT_PEM", valueFrom = var.ca_cert_secret_arn }],
  )

  # Cluster, account, partition and region come from the task's own metadata.
  container = { for k, v in {
    name                   = "berth-acl-controller"
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    command = concat([
      "berth-acl-controller",
      "-http-addr", var.server_http_addr,
      "-iam-role-path", var.iam_role_path,
      "-interval", var.interval,
      "-log-json",
    ], var.extra_args)
    secrets          = local.secrets
    portMappings     = [{ containerPort = 9102, protocol = "tcp" }]
    logConfiguration = var.log_configuration
  } : k => v if v != null }
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  path               = "/berth-controller/"
  assume_role_policy = local.trust
  tags               = var.tags
}

# Only this cluster's tasks: ListTasks is scoped by the ecs:cluster condition, DescribeTasks
# by the task ARNs of the cluster.
resource "aws_iam_role_policy" "task_ecs" {
  name = "berth-acl-controller-ecs"
  role = aws_iam_role.task.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Action    = ["ecs:ListTasks"]
        Resource  = "${local.ecs_prefix}:container-instance/${local.cluster_name}/*"
        Condition = { ArnEquals = { "ecs:cluster" = var.ecs_cluster_arn } }
      },
      {
        Effect   = "Allow"
        Action   = ["ecs:DescribeTasks"]
        Resource = "${local.ecs_prefix}:task/${local.cluster_name}/*"
      },
    ]
  })
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  path               = "/berth-controller/"
  assume_role_policy = local.trust
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.id
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution_secrets" {
  name = "berth-acl-controller-secrets"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = compact([var.bootstrap_token_secret_arn, var.ca_cert_secret_arn])
    }]
  })
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn
  container_definitions    = jsonencode([local.container])
  tags                     = var.tags
}

resource "aws_ecs_service" "this" {
  name             = var.name
  cluster          = var.ecs_cluster_arn
  task_definition  = aws_ecs_task_definition.this.arn
  desired_count    = var.desired_count
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  propagate_tags   = "TASK_DEFINITION"

  network_configuration {
    subnets          = var.subnets
    security_groups  = var.security_groups
    assign_public_ip = false
  }

  # Two controllers may overlap while one replaces the other: the lock keeps one active.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 200
  tags                               = var.tags
}
