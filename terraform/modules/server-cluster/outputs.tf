output "load_balancer_dns_name" {
  description = "The internal load balancer's DNS name: the server_hosts of mesh-task, the host of the controller's server_http_addr."
  value       = aws_lb.servers.dns_name
}

output "http_addr" {
  description = "The servers' HTTP API through the load balancer."
  value       = "http://${aws_lb.servers.dns_name}:8500"
}

output "security_group_id" {
  description = "The servers' security group."
  value       = aws_security_group.servers.id
}

output "retry_join" {
  description = "The cloud auto-join string agents and servers use to find these servers."
  value       = "provider=aws tag_key=${local.tag.key} tag_value=${local.tag.value} region=${data.aws_region.current.name}"
}

output "autoscaling_group_name" {
  description = "The servers' Auto Scaling group."
  value       = aws_autoscaling_group.servers.name
}

output "instance_role_arn" {
  description = "The servers' instance role (ec2:DescribeInstances for cloud auto-join)."
  value       = aws_iam_role.server.arn
}
