# The containers of a mesh task, named and ordered as DESIGN.md's "An ECS task in the mesh":
# berth-agent, berth-mesh-init, berth-proxy, berth-health-sync, then the application's.
#
# Objects are built with null for "absent" and the nulls stripped by a for expression
# (`{ for k, v in o : k => v if v != null }`), because a conditional cannot choose between
# objects of different shapes.

locals {
  module_version = "0.1.0"
  bootstrap_dir  = "/berth"
  volume         = "berth-data"
  entrypoint     = "${local.bootstrap_dir}/berth-envoy-entrypoint"
  service_name   = coalesce(var.service_name, var.family)
  ca_cert_file   = "${local.bootstrap_dir}/ca.pem"

  # ECS treats a container without `essential` as essential.
  health_sync_containers = [
    for c in var.container_definitions : c.name
    if try(c.essential, true) && try(c.healthCheck, null) != null
  ]

  login = { for k, v in {
    enabled             = var.acls
    method              = var.acls ? var.login.method : null
    clientMethod        = var.acls ? var.login.client_method : null
    region              = var.acls ? var.login.region : null
    stsEndpoint         = var.acls ? var.login.sts_endpoint : null
    iamEndpoint         = var.acls ? var.login.iam_endpoint : null
    serverIdHeaderValue = var.acls ? var.login.server_id_header_value : null
  } : k => v if v != null }

  servers = {
    hosts = var.server_hosts
    http = { for k, v in {
      port       = var.http_port
      https      = var.tls ? true : null
      caCertFile = var.tls ? local.ca_cert_file : null
    } : k => v if v != null }
    rpc = { for k, v in {
      port       = var.rpc_port
      tls        = var.tls ? true : null
      caCertFile = var.tls ? local.ca_cert_file : null
    } : k => v if v != null }
  }

  service = { for k, v in {
    name = local.service_name
    port = var.port
    tags = length(var.service_tags) > 0 ? var.service_tags : null
    meta = length(var.service_meta) > 0 ? var.service_meta : null
  } : k => v if v != null }

  proxy = length(var.upstreams) == 0 ? null : {
    upstreams = [for u in var.upstreams : {
      destinationName = u.destination_name
      localBindPort   = u.local_bind_port
    }]
  }

  config = merge({ for k, v in {
    bootstrapDir         = local.bootstrap_dir
    servers              = local.servers
    login                = local.login
    service              = local.service
    healthSyncContainers = local.health_sync_containers
    proxy                = local.proxy
  } : k => v if v != null }, var.extra_config)

  environment = [{ name = "BERTH_ECS_CONFIG_JSON", value = jsonencode(local.config) }]
  secrets     = var.ca_cert_secret_arn == null ? null : [{ name = "BERTH_CA_CERT_PEM", valueFrom = var.ca_cert_secret_arn }]
  mount       = [{ sourceVolume = local.volume, containerPath = local.bootstrap_dir }]
  after_init  = [{ containerName = "berth-mesh-init", condition = "SUCCESS" }]

  agent = { for k, v in {
    name             = "berth-agent"
    image            = var.images.berth
    essential        = true
    command          = ["berth", "agent"]
    environment      = local.environment
    secrets          = local.secrets
    mountPoints      = local.mount
    logConfiguration = var.log_configuration
  } : k => v if v != null }

  mesh_init = { for k, v in {
    name             = "berth-mesh-init"
    image            = var.images.berth
    essential        = false
    command          = ["berth-mesh-init"]
    environment      = local.environment
    secrets          = local.secrets
    mountPoints      = local.mount
    dependsOn        = [{ containerName = "berth-agent", condition = "START" }]
    logConfiguration = var.log_configuration
  } : k => v if v != null }

  proxy_container = { for k, v in {
    name        = "berth-proxy"
    image       = var.images.envoy
    essential   = var.proxy_essential
    entryPoint  = [local.entrypoint]
    command     = ["envoy", "-c", "${local.bootstrap_dir}/envoy-bootstrap.json", "--disable-hot-restart", "--log-level", var.envoy_log_level]
    environment = local.environment
    mountPoints = local.mount
    healthCheck = {
      command     = ["CMD", local.entrypoint, "ready"]
      interval    = var.proxy_health_check_interval
      timeout     = 2
      retries     = 3
      startPeriod = 0
    }
    dependsOn        = local.after_init
    logConfiguration = var.log_configuration
  } : k => v if v != null }

  health_sync = { for k, v in {
    name             = "berth-health-sync"
    image            = var.images.berth
    essential        = var.health_sync_essential
    command          = ["${local.bootstrap_dir}/berth-health-sync"]
    environment      = local.environment
    secrets          = local.secrets
    mountPoints      = local.mount
    dependsOn        = local.after_init
    logConfiguration = var.log_configuration
  } : k => v if v != null }

  shutdown_delay = var.application_shutdown_delay_seconds > 0 ? [
    local.entrypoint, "app-entrypoint", "-shutdown-delay", "${var.application_shutdown_delay_seconds}s"
  ] : []

  # The application's containers, unchanged but for: after the proxy is HEALTHY, the shared
  # volume read-only, and (with a shutdown delay) under app-entrypoint.
  apps = [for c in var.container_definitions : { for k, v in merge(c, {
    entryPoint  = length(local.shutdown_delay) > 0 ? concat(local.shutdown_delay, try(c.entryPoint, [])) : try(c.entryPoint, null)
    dependsOn   = concat(try(c.dependsOn, []), [{ containerName = "berth-proxy", condition = "HEALTHY" }])
    mountPoints = concat(try(c.mountPoints, []), [{ sourceVolume = local.volume, containerPath = local.bootstrap_dir, readOnly = true }])
  }) : k => v if v != null }]

  container_definitions = concat([local.agent, local.mesh_init, local.proxy_container, local.health_sync], local.apps)

  task_definition = { for k, v in {
    family                  = var.family
    networkMode             = "awsvpc"
    requiresCompatibilities = var.requires_compatibilities
    cpu                     = tostring(var.cpu)
    memory                  = tostring(var.memory)
    taskRoleArn             = var.task_role_arn
    executionRoleArn        = var.execution_role_arn
    volumes                 = concat([{ name = local.volume }], var.volumes)
    tags                    = [for k, v in local.tags : { key = k, value = v }]
    containerDefinitions    = local.container_definitions
  } : k => v if v != null }

  tags = {
    "berth/mesh"           = "true"
    "berth/service-name"   = local.service_name
    "berth/module-version" = local.module_version
  }
}
