#!/usr/bin/env bash
# Installs helm v3 from the Go module proxy (v3.18+ has no replace directives, so a plain
# `go install` works). Usage: build-helm.sh <cache-root> [version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-3.22.0}
out="$cache_root/helm-$version"
if [[ -x "$out/bin/helm" ]]; then echo "helm $version: cached in $out"; exit 0; fi
mkdir -p "$out/bin"
GOBIN="$out/bin" GOFLAGS=-mod=mod go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$version" \
  "helm.sh/helm/v3/cmd/helm@v$version"
echo "helm $version: built into $out/bin"
