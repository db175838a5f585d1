output "task_definition_arn" {
  description = "The task definition's ARN (with revision)."
  value       = aws_ecs_task_definition.this.arn
}

output "family" {
  description = "The task definition family."
  value       = aws_ecs_task_definition.this.family
}

output "revision" {
  description = "The task definition revision."
  value       = aws_ecs_task_definition.this.revision
}

output "container_definitions_json" {
  description = "The rendered container definitions (JSON)."
  value       = module.container_definitions.container_definitions_json
}

output "task_role_arn" {
  description = "The task role's ARN."
  value       = local.task_role_arn
}

output "execution_role_arn" {
  description = "The execution role's ARN."
  value       = local.execution_role_arn
}

output "service_name" {
  description = "The service's name in the mesh."
  value       = local.service_name
}
