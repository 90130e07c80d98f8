# The controlplane image. Build from the repository root:
#   docker build -f infra/docker/controlplane.Dockerfile -t $REGISTRY/voting/controlplane:$(git rev-parse --short HEAD) .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, no cgo: the runtime image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/controlplane ./xds/cmd/controlplane && \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/secretfiles ./infra/docker/secretfiles

FROM gcr.io/distroless/static-debian12:nonroot
# RDS's certificate authorities, for sslmode=verify-full in the database URL.
ADD --chmod=0444 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/ssl/rds/global-bundle.pem
COPY --from=build /out/controlplane /out/secretfiles /usr/local/bin/
# distroless's nonroot user, by number so the runtime need not resolve it.
USER 65532:65532
# secretfiles writes the SECRETFILE_* secrets (ADS mutual TLS) to /run/secrets, then runs the
# control plane without them; the image has no shell for a script like the edge's.
ENTRYPOINT ["/usr/local/bin/secretfiles", "/usr/local/bin/controlplane"]
