# syntax=docker/dockerfile:1
# ocfcloud: one static binary on distroless, running as non-root.
#   docker build -t ocfcloud:dev .
#   docker run --rm -p 8080:8080 -p 5683:5683 -p 5684:5684 ocfcloud:dev serve --http-addr :8080
# Every service of the Helm chart runs this image with `serve --services <name>`.
# Not built in this repository's CI (no container engine there); see docs/deploy.md.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so source edits do not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=devel
# CGO_ENABLED=0: a static binary (embedded FerretDB uses pure-Go SQLite), so
# the runtime image needs no libc.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o /out/ocfcloud ./cmd/ocfcloud \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
# Same uid/gid as the chart's podSecurityContext (distroless "nonroot").
USER 65532:65532
COPY --from=build /out/ocfcloud /ocfcloud
# Working directory for `serve` without --data-dir (./data); in Kubernetes
# the chart mounts an emptyDir at /var/lib/ocfcloud and the root is read-only.
COPY --from=build --chown=65532:65532 /out/data /home/nonroot/data
WORKDIR /home/nonroot
EXPOSE 8080 5683 5684
ENTRYPOINT ["/ocfcloud"]
CMD ["serve", "--http-addr", ":8080"]
