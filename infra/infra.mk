# AWS deployment description: tools and offline checks (cfn-lint, checkov, hadolint).
