#!/usr/bin/env bash
# Fetches prometheus-operator's published CRDs (ServiceMonitor, PodMonitor, PrometheusRule) from
# its module on the Go module proxy (example/prometheus-operator-crd), so the chart's monitoring
# objects can be checked by a real apiserver. Usage: fetch-monitoring-crds.sh <cache-root> [version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-0.85.0}
out="$cache_root/prometheus-operator-crds-$version"
kinds=(servicemonitors podmonitors prometheusrules)
if [[ -f "$out/.complete" ]]; then echo "monitoring CRDs $version: cached in $out"; exit 0; fi
mkdir -p "$out"
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@v$version" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
for kind in "${kinds[@]}"; do
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$out/"
done
chmod u+w "$out"/*.yaml
touch "$out/.complete"
echo "monitoring CRDs $version: copied into $out"
