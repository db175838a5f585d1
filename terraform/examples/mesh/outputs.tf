output "server_http_addr" {
  description = "The servers' HTTP API (inside the VPC)."
  value       = module.servers.http_addr
}

output "bootstrap_token_secret_arn" {
  description = "Where the ACL bootstrap token is kept."
  value       = aws_secretsmanager_secret.bootstrap_token.arn
}
