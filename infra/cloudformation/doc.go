// Package cloudformation holds the AWS deployment's CloudFormation templates (global.yaml,
// regional.yaml, nested/) and, in its tests, the check that every container's environment in
// them is what its program reads: no unknown variable, no required one missing, every value one
// the program's own Load accepts. cfn-lint and checkov check the rest (infra/infra.mk).
package cloudformation
