# No provider: this module only computes JSON, so it can be initialised, applied and tested
# offline.
terraform {
  required_version = ">= 1.5"
}
