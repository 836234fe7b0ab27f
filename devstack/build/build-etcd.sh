#!/usr/bin/env bash
# Builds etcd 3.6 from the Go module proxy through a wrapper module (Debian ships 3.4, which
# Kubernetes 1.34 no longer supports). Usage: build-etcd.sh <cache-root> [version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-3.6.16}
out="$cache_root/etcd-$version"
if [[ -x "$out/bin/etcd" ]]; then echo "etcd $version: cached in $out"; exit 0; fi
src="$out/src"
mkdir -p "$src" "$out/bin"
cat > "$src/go.mod" <<GO
module smartflow.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 v$version
GO
cat > "$src/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cd "$src"
export GOFLAGS=-mod=mod
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd.tmp" .
mv "$out/bin/etcd.tmp" "$out/bin/etcd"
echo "etcd $version: built into $out/bin"
