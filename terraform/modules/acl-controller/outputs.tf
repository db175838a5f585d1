output "ecs_service_name" {
  description = "The controller's ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "The controller's task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "task_role_arn" {
  description = "The controller's task role (ecs:ListTasks and ecs:DescribeTasks on its cluster)."
  value       = aws_iam_role.task.arn
}
