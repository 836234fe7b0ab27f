#!/usr/bin/env bash
# Builds the Prometheus server and promtool from the Go module proxy (the module has no replace
# directives, so a plain `go install` works; the web UI's assets are not needed: the tests use
# the HTTP API). Usage: build-prometheus.sh <cache-root> [module-version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-0.316.0}
out="$cache_root/prometheus-$version"
if [[ -x "$out/bin/prometheus" && -x "$out/bin/promtool" ]]; then
  echo "prometheus $version: cached in $out"
  exit 0
fi
mkdir -p "$out/bin"
GOBIN="$out/bin" GOFLAGS=-mod=mod go install -trimpath \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$version" \
  "github.com/prometheus/prometheus/cmd/prometheus@v$version" \
  "github.com/prometheus/prometheus/cmd/promtool@v$version"
echo "prometheus $version: built into $out/bin"
