# A complete mesh: three servers, the ACL controller, and two services, web calling api.

provider "aws" {
  region = var.region
}

locals {
  name = "berth-example"
}

# The ACL bootstrap token: made here, kept in Secrets Manager, read by the servers (as their
# initial management token) and by the controller.
resource "random_uuid" "bootstrap_token" {}

resource "aws_kms_key" "secrets" {
  description         = "Berth example secrets"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "account"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

data "aws_caller_identity" "current" {}

resource "aws_secretsmanager_secret" "bootstrap_token" {
  #checkov:skip=CKV2_AWS_57:a bootstrap token is rotated by re-bootstrapping, not by a Lambda
  name       = "${local.name}-bootstrap-token"
  kms_key_id = aws_kms_key.secrets.arn
}

resource "aws_secretsmanager_secret_version" "bootstrap_token" {
  secret_id     = aws_secretsmanager_secret.bootstrap_token.id
  secret_string = random_uuid.bootstrap_token.result
}

module "servers" {
  source = "../../modules/server-cluster"

  name                           = "${local.name}-server"
  vpc_id                         = var.vpc_id
  subnet_ids                     = var.private_subnet_ids
  allowed_cidr_blocks            = var.tasks_cidr_blocks
  berth_server_url               = var.berth_server_url
  berth_server_sha256            = var.berth_server_sha256
  acl_bootstrap_token_secret_arn = aws_secretsmanager_secret.bootstrap_token.arn
}

resource "aws_ecs_cluster" "this" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_security_group" "tasks" {
  name        = "${local.name}-tasks"
  description = "Mesh tasks: the proxies' public port from other tasks"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "mesh" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "mTLS between the tasks' proxies"
  referenced_security_group_id = aws_security_group.tasks.id
  from_port                    = 20000
  to_port                      = 20000
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "mesh" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "mTLS to other tasks' proxies"
  referenced_security_group_id = aws_security_group.tasks.id
  from_port                    = 20000
  to_port                      = 20000
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "servers" {
  for_each          = toset(["8300", "8500"])
  security_group_id = aws_security_group.tasks.id
  description       = "The Berth servers' RPC and HTTP"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "aws_apis" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS: STS, IAM, ECS, image pulls"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

module "acl_controller" {
  source = "../../modules/acl-controller"

  ecs_cluster_arn            = aws_ecs_cluster.this.arn
  subnets                    = var.private_subnet_ids
  security_groups            = [aws_security_group.tasks.id]
  server_http_addr           = module.servers.http_addr
  bootstrap_token_secret_arn = aws_secretsmanager_secret.bootstrap_token.arn
  image                      = var.images.berth
}

module "api" {
  source = "../../modules/mesh-task"

  family                             = "api"
  port                               = 9090
  server_hosts                       = [module.servers.load_balancer_dns_name]
  images                             = var.images
  application_shutdown_delay_seconds = 3
  container_definitions = [{
    name      = "api"
    image     = var.app_image
    essential = true
    command   = ["berth-demo-app", "serve", "-listen", "0.0.0.0:9090", "-name", "api"]
    healthCheck = {
      command  = ["CMD", "berth-demo-app", "probe", "http://127.0.0.1:9090/healthz"]
      interval = 5
      retries  = 3
    }
  }]
}

module "web" {
  source = "../../modules/mesh-task"

  family                             = "web"
  port                               = 9090
  server_hosts                       = [module.servers.load_balancer_dns_name]
  images                             = var.images
  application_shutdown_delay_seconds = 3
  upstreams                          = [{ destination_name = "api", local_bind_port = 1234 }]
  container_definitions = [{
    name      = "web"
    image     = var.app_image
    essential = true
    command   = ["berth-demo-app", "serve", "-listen", "0.0.0.0:9090", "-name", "web", "-upstream", "http://127.0.0.1:1234/"]
    healthCheck = {
      command  = ["CMD", "berth-demo-app", "probe", "http://127.0.0.1:9090/healthz"]
      interval = 5
      retries  = 3
    }
  }]
}

resource "aws_ecs_service" "mesh" {
  for_each         = { api = module.api.task_definition_arn, web = module.web.task_definition_arn }
  name             = each.key
  cluster          = aws_ecs_cluster.this.arn
  task_definition  = each.value
  desired_count    = 2
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  # The task's tags (berth/mesh, berth/service-name) come from its task definition.
  propagate_tags = "TASK_DEFINITION"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }
}
