# The results image. Build from the repository root:
#   docker build -f infra/docker/results.Dockerfile -t $REGISTRY/voting/results:$(git rev-parse --short HEAD) .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, no cgo: the runtime image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/results ./workers/results/cmd/results

FROM gcr.io/distroless/static-debian12:nonroot
# RDS's certificate authorities, for sslmode=verify-full in the database URL.
ADD --chmod=0444 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/ssl/rds/global-bundle.pem
COPY --from=build /out/results /usr/local/bin/results
# distroless's nonroot user, by number so the runtime need not resolve it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/results"]
