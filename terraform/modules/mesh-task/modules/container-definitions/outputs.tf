output "container_definitions_json" {
  description = "The container definitions (JSON), for aws_ecs_task_definition's container_definitions."
  value       = jsonencode(local.container_definitions)
}

output "task_definition_json" {
  description = "The whole task definition (JSON), as `aws ecs register-task-definition --cli-input-json` takes it."
  value       = jsonencode(local.task_definition)
}

output "health_sync_containers" {
  description = "The application containers whose ECS health berth-health-sync mirrors (essential, with a health check)."
  value       = local.health_sync_containers
}

output "tags" {
  description = "The tags mesh tasks carry (berth/mesh, berth/service-name, berth/module-version)."
  value       = local.tags
}

output "service_name" {
  description = "The service's name in the mesh."
  value       = local.service_name
}
