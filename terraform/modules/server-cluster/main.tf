data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  tag = coalesce(var.retry_join_tag, { key = "berth-cluster", value = var.name })
  secret_arns = compact(concat(
    var.tls ? [var.tls_secret_arns.ca, var.tls_secret_arns.cert, var.tls_secret_arns.key] : [],
    [var.acl_bootstrap_token_secret_arn],
  ))
  ports = merge(
    { http = 8500, rpc = 8300 },
    var.tls ? { https = 8501 } : {},
  )
  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    berth_server_url    = var.berth_server_url
    berth_server_sha256 = var.berth_server_sha256
    datacenter          = var.datacenter
    server_count        = var.server_count
    tag_key             = local.tag.key
    tag_value           = local.tag.value
    region              = data.aws_region.current.name
    tls                 = var.tls
    tls_ca              = var.tls ? var.tls_secret_arns.ca : ""
    tls_cert            = var.tls ? var.tls_secret_arns.cert : ""
    tls_key             = var.tls ? var.tls_secret_arns.key : ""
    acl_token_secret    = coalesce(var.acl_bootstrap_token_secret_arn, "")
  })
}

resource "aws_security_group" "servers" {
  name        = "${var.name}-servers"
  description = "Berth servers: RPC between servers and from agents, HTTP(S) from the mesh"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "rpc_self" {
  security_group_id            = aws_security_group.servers.id
  description                  = "Raft and RPC between servers"
  referenced_security_group_id = aws_security_group.servers.id
  from_port                    = 8300
  to_port                      = 8300
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each          = { for p in flatten([for name, port in local.ports : [for c in var.allowed_cidr_blocks : { key = "${name}-${c}", port = port, cidr = c }]]) : p.key => p }
  security_group_id = aws_security_group.servers.id
  description       = "Berth ${split("-", each.key)[0]} from the mesh (and the load balancer's health checks)"
  cidr_ipv4         = each.value.cidr
  from_port         = each.value.port
  to_port           = each.value.port
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "health_checks" {
  for_each          = local.ports
  security_group_id = aws_security_group.servers.id
  description       = "Load balancer health checks on ${each.key}"
  cidr_ipv4         = data.aws_vpc.this.cidr_block
  from_port         = each.value
  to_port           = each.value
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "rpc_self" {
  security_group_id            = aws_security_group.servers.id
  description                  = "Raft and RPC to the other servers"
  referenced_security_group_id = aws_security_group.servers.id
  from_port                    = 8300
  to_port                      = 8300
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.servers.id
  description       = "HTTPS: the berth-server download, EC2 (cloud auto-join), STS and IAM (logins), Secrets Manager"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_iam_role" "server" {
  name = "${var.name}-instance"
  path = "/berth-server/"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = var.tags
}

# Cloud auto-join lists instances by tag; DescribeInstances has no resource-level scope.
resource "aws_iam_role_policy" "auto_join" {
  name = "berth-cloud-auto-join"
  role = aws_iam_role.server.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["ec2:DescribeInstances"]
      Resource = "*"
    }]
  })
}

resource "aws_iam_role_policy" "secrets" {
  count = length(local.secret_arns) > 0 ? 1 : 0
  name  = "berth-server-secrets"
  role  = aws_iam_role.server.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = local.secret_arns
    }]
  })
}

resource "aws_iam_instance_profile" "server" {
  name = "${var.name}-instance"
  role = aws_iam_role.server.name
  tags = var.tags
}

resource "aws_launch_template" "server" {
  name_prefix   = "${var.name}-"
  image_id      = coalesce(var.ami_id, try(nonsensitive(data.aws_ssm_parameter.al2023[0].value), null))
  instance_type = var.instance_type
  user_data     = base64encode(local.user_data)
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.server.arn
  }

  vpc_security_group_ids = [aws_security_group.servers.id]

  # IMDSv2 only: the SDK's instance credentials, not a token any SSRF could read.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 8
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_id
      delete_on_termination = true
    }
  }

  block_device_mappings {
    device_name = "/dev/xvdb"
    ebs {
      volume_size           = var.data_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_id
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = var.name, (local.tag.key) = local.tag.value })
  }

  tags = var.tags
}

resource "aws_lb" "servers" {
  #checkov:skip=CKV_AWS_91:access logs are opt-in (access_logs_bucket): the servers log every request themselves, and a bucket policy is the operator's to set
  name                             = var.name
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.load_balancer_deletion_protection

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      enabled = true
    }
  }

  tags = var.tags
}

resource "aws_lb_target_group" "servers" {
  for_each    = local.ports
  name        = "${var.name}-${each.key}"
  port        = each.value
  protocol    = "TCP"
  vpc_id      = var.vpc_id
  target_type = "instance"

  health_check {
    protocol = "TCP"
    port     = each.value
  }

  tags = var.tags
}

resource "aws_lb_listener" "servers" {
  #checkov:skip=CKV_AWS_2:TCP pass-through: with tls on, the servers terminate HTTPS and RPC TLS themselves with their own certificates
  #checkov:skip=CKV_AWS_103:TCP pass-through: TLS (when on) is the servers' own, end to end
  for_each          = local.ports
  load_balancer_arn = aws_lb.servers.arn
  port              = each.value
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.servers[each.key].arn
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "servers" {
  name                = var.name
  min_size            = var.server_count
  max_size            = var.server_count
  desired_capacity    = var.server_count
  vpc_zone_identifier = var.subnet_ids
  target_group_arns   = [for tg in aws_lb_target_group.servers : tg.arn]
  health_check_type   = "ELB"

  launch_template {
    id      = aws_launch_template.server.id
    version = aws_launch_template.server.latest_version
  }

  tag {
    key                 = local.tag.key
    value               = local.tag.value
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = var.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
