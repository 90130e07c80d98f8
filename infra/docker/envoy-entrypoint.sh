#!/bin/sh
# Starts one edge Envoy on ECS: writes the secrets ECS passed in the environment to files (the
# module reads secrets from files only, README "Secrets"), writes the bootstrap (node identity,
# region, the region's control plane, reached over mutual TLS), and replaces itself with Envoy
# without those variables.
set -eu

: "${EDGE_REGION:?EDGE_REGION is required}"
: "${EDGE_XDS_HOST:?EDGE_XDS_HOST is required}"
: "${EDGE_POW_SECRET:?EDGE_POW_SECRET is required}"
: "${EDGE_REDIS_AUTH:?EDGE_REDIS_AUTH is required}"
: "${EDGE_XDS_TLS_CERT:?EDGE_XDS_TLS_CERT (the client certificate for ADS, PEM) is required}"
: "${EDGE_XDS_TLS_KEY:?EDGE_XDS_TLS_KEY (its private key, PEM) is required}"
: "${EDGE_XDS_TLS_CA:?EDGE_XDS_TLS_CA (the CA of the control plane's certificate, PEM) is required}"
EDGE_XDS_PORT="${EDGE_XDS_PORT:-18000}"
secrets=/run/secrets
umask 077

# Written beside and renamed over, as the module expects a rotation to be made.
printf '%s' "$EDGE_POW_SECRET" > "$secrets/pow-secret.new"
mv "$secrets/pow-secret.new" "$secrets/pow-secret"
if [ -n "${EDGE_SITEVERIFY_SECRET:-}" ]; then
  printf '%s' "$EDGE_SITEVERIFY_SECRET" > "$secrets/siteverify-secret.new"
  mv "$secrets/siteverify-secret.new" "$secrets/siteverify-secret"
fi
printf '%s' "$EDGE_REDIS_AUTH" > "$secrets/redis-auth.new"
mv "$secrets/redis-auth.new" "$secrets/redis-auth"
# ADS over mutual TLS: Envoy reads these at start; a new certificate comes with a new task.
printf '%s\n' "$EDGE_XDS_TLS_CERT" > "$secrets/xds-tls-cert.new"
mv "$secrets/xds-tls-cert.new" "$secrets/xds-tls-cert"
printf '%s\n' "$EDGE_XDS_TLS_KEY" > "$secrets/xds-tls-key.new"
mv "$secrets/xds-tls-key.new" "$secrets/xds-tls-key"
printf '%s\n' "$EDGE_XDS_TLS_CA" > "$secrets/xds-ca.new"
mv "$secrets/xds-ca.new" "$secrets/xds-ca"
unset EDGE_POW_SECRET EDGE_SITEVERIFY_SECRET EDGE_REDIS_AUTH EDGE_XDS_TLS_CERT EDGE_XDS_TLS_KEY EDGE_XDS_TLS_CA

# Unique per task: the control plane keys its snapshots and metrics by node.
node_id="edge-$EDGE_REGION-$(cat /proc/sys/kernel/hostname)"

# The same bootstrap as envoy/bootstrap.yaml.tmpl, with the control plane found by DNS (its
# tasks come and go) instead of on 127.0.0.1, and its certificate checked for that name.
cat > /tmp/envoy.yaml <<YAML
node:
  id: "$node_id"
  cluster: edge
  metadata:
    region: "$EDGE_REGION"
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
      - envoy_grpc:
          cluster_name: xds_cluster
          retry_policy:
            retry_back_off: { base_interval: 0.25s, max_interval: 2s }
  lds_config:
    ads: {}
    resource_api_version: V3
  cds_config:
    ads: {}
    resource_api_version: V3
static_resources:
  clusters:
    - name: xds_cluster
      type: STRICT_DNS
      dns_refresh_rate: 5s
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options:
              connection_keepalive: { interval: 30s, timeout: 10s }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: "$EDGE_XDS_HOST"
          common_tls_context:
            alpn_protocols: [h2]
            tls_params: { tls_minimum_protocol_version: TLSv1_2 }
            tls_certificates:
              - certificate_chain: { filename: $secrets/xds-tls-cert }
                private_key: { filename: $secrets/xds-tls-key }
            validation_context:
              trusted_ca: { filename: $secrets/xds-ca }
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: { exact: "$EDGE_XDS_HOST" }
      load_assignment:
        cluster_name: xds_cluster
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: "$EDGE_XDS_HOST", port_value: $EDGE_XDS_PORT }
YAML

# ECS stops a task with SIGTERM, then SIGKILL after the stop timeout; the NLB has already
# drained it (deregistration delay).
exec envoy -c /tmp/envoy.yaml --disable-hot-restart --drain-time-s 20 -l info
