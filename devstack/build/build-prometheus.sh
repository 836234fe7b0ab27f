#!/usr/bin/env bash
# Builds the Prometheus server and promtool from the Go module proxy (the module has no replace
# directives, so a plain `go install` works; the web UI's assets are not needed: the tests use
# the HTTP API), and `promql-names`, a small wrapper around the same module's PromQL parser that
# the tests use to parse the chart's expressions and list the metric names they select.
# Usage: build-prometheus.sh <cache-root> [module-version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-0.316.0}
out="$cache_root/prometheus-$version"
if [[ -x "$out/bin/prometheus" && -x "$out/bin/promtool" && -x "$out/bin/promql-names" ]]; then
  echo "prometheus $version: cached in $out"
  exit 0
fi
mkdir -p "$out/bin"
export GOFLAGS=-mod=mod
GOBIN="$out/bin" go install -trimpath \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$version" \
  "github.com/prometheus/prometheus/cmd/prometheus@v$version" \
  "github.com/prometheus/prometheus/cmd/promtool@v$version"

src="$out/src/promql-names"
mkdir -p "$src"
cat > "$src/go.mod" <<GO
module smartflow.local/promqlnames

go 1.26

require github.com/prometheus/prometheus v$version
GO
cat > "$src/main.go" <<'GO'
// promql-names reads PromQL expressions, one JSON string per line on stdin, and writes one JSON
// object per line: {"names": [...]} with the metric names the expression selects ("" for a
// selector without a fixed name), or {"error": "..."} when it does not parse.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Names []string `json:"names,omitempty"`
	Error string   `json:"error,omitempty"`
}

func names(expr string) result {
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return result{Error: err.Error()}
	}
	seen := map[string]bool{}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if selector, ok := n.(*parser.VectorSelector); ok {
			name := selector.Name
			for _, m := range selector.LabelMatchers {
				if name == "" && m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			seen[name] = true
		}
		return nil
	})
	found := make([]string, 0, len(seen))
	for name := range seen {
		found = append(found, name)
	}
	sort.Strings(found)
	return result{Names: found}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var expr string
		if err := json.Unmarshal(in.Bytes(), &expr); err != nil {
			_ = out.Encode(result{Error: "not a JSON string: " + err.Error()})
			continue
		}
		_ = out.Encode(names(expr))
	}
}
GO
cd "$src"
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$out/bin/promql-names.tmp" .
mv "$out/bin/promql-names.tmp" "$out/bin/promql-names"
echo "prometheus $version: built into $out/bin"
