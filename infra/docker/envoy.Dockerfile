# The edge image: the official Envoy of the pinned version with our vote filter module.
# Build from the repository root:
#   docker build -f infra/docker/envoy.Dockerfile -t $REGISTRY/voting/envoy:$(git rev-parse --short HEAD) .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# cgo, c-shared: Envoy loads it as a dynamic module. Built on glibc 2.36; the Envoy image's
# glibc is at least as new, which is what a shared object needs.
RUN CGO_ENABLED=1 go build -trimpath -buildmode=c-shared -o /out/libvotefilter.so ./filters/votefilter/module

# README "Toolchain pins": 1.38.x speaks the SDK's ABI (v0.1.0).
FROM envoyproxy/envoy:v1.38.3
COPY --from=build /out/libvotefilter.so /usr/local/lib/envoy/libvotefilter.so
COPY --chmod=0555 infra/docker/envoy-entrypoint.sh /usr/local/bin/envoy-entrypoint.sh
# Envoy finds the module named in the filter config (votefilter) here.
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/envoy
# The SDK returns Go pointers to Envoy, which Go's cgo pointer check aborts on.
ENV GODEBUG=cgocheck=0
# The image's envoy user (its own entrypoint drops to it), by number.
USER 101:101
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/envoy-entrypoint.sh"]
