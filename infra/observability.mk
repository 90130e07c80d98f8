# Monitoring stack: Prometheus rules, dashboards and their checks.
