# syntax=docker/dockerfile:1
#
# cardguard container image.
#
#   docker build -t cardguard .
#   docker run -p 8490:8490 cardguard -upstream.url=http://victoria-metrics:8428
#   docker run -p 8490:8490 -v $PWD/configs/cardguard.yml:/etc/cardguard/cardguard.yml:ro \
#       cardguard -config=/etc/cardguard/cardguard.yml
#
# The binary is static (CGO_ENABLED=0), the final image is distroless (no shell, no
# package manager) and runs as an unprivileged user. State snapshots go to the
# /var/lib/cardguard volume.
#
# The target "generator" is the demo traffic generator of e2e/docker-compose.yml; the
# default (last) target is cardguard.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/cardguard ./cmd/cardguard
# The data directory exists in the image, owned by the runtime user, so that a
# named volume mounted there starts with the right owner (there is no shell in the
# final image to fix it later).
RUN mkdir -p /out/data

FROM build AS build-generator
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/generator ./e2e/generator

FROM gcr.io/distroless/static-debian12:nonroot AS generator
COPY --from=build-generator /out/generator /usr/local/bin/generator
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/generator"]

FROM gcr.io/distroless/static-debian12:nonroot AS cardguard
COPY --from=build /out/cardguard /usr/local/bin/cardguard
COPY --from=build --chown=65532:65532 /out/data /var/lib/cardguard
USER 65532:65532
EXPOSE 8490
VOLUME ["/var/lib/cardguard"]
# -dataDir comes before the arguments given to the container: a later -dataDir
# overrides it (the last occurrence of a flag wins).
ENTRYPOINT ["/usr/local/bin/cardguard", "-dataDir=/var/lib/cardguard"]
