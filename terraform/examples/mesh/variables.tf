variable "region" {
  description = "The AWS region."
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "The VPC to deploy into."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more AZs) for the servers and the tasks."
  type        = list(string)
}

variable "tasks_cidr_blocks" {
  description = "The CIDR blocks of those subnets (the tasks reach the servers from there)."
  type        = list(string)
}

variable "berth_server_url" {
  description = "Where the servers download berth-server from."
  type        = string
}

variable "berth_server_sha256" {
  description = "Its SHA-256."
  type        = string
}

variable "images" {
  description = "The Berth and proxy images (built from the repository's Dockerfiles)."
  type = object({
    berth = string
    envoy = string
  })
}

variable "app_image" {
  description = "An image holding berth-demo-app (the Berth image does)."
  type        = string
}
