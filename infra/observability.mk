# Monitoring stack: Prometheus rules, dashboards and their checks.
#
# tools-observability: Debian's Prometheus (with promtool) and its Redis and PostgreSQL exporters,
# which devstack starts beside the stack (devstack/prometheus.go).
# rules-check: the alert and recording rules (infra/prometheus/) parse, and their unit tests pass.
# dashboards: regenerate infra/grafana/dashboards/*.json from infra/grafana (a Go test keeps the
# committed files equal to the generator's output).
.PHONY: tools-observability rules-check dashboards

PROMETHEUS_RULES := $(wildcard infra/prometheus/*.rules.yml)
PROMETHEUS_RULE_TESTS := $(wildcard infra/prometheus/tests/*.test.yml)

EXTRA_TOOLS += tools-observability
EXTRA_CHECKS += rules-check

tools-observability:
	@missing=(); \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus); \
	command -v prometheus-redis-exporter >/dev/null || missing+=(prometheus-redis-exporter); \
	command -v prometheus-postgres-exporter >/dev/null || missing+=(prometheus-postgres-exporter); \
	if (( $${#missing[@]} )); then \
	  echo "installing with apt: $${missing[*]}"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    "$${missing[@]}" >/dev/null; \
	fi
	promtool --version | head -1

rules-check: tools-observability
	promtool check rules $(PROMETHEUS_RULES)
	promtool test rules $(PROMETHEUS_RULE_TESTS)

dashboards:
	$(GO) run ./infra/grafana
