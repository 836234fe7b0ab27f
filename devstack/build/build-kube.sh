#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl
# from the Go module proxy (the control plane and the one real node of the local stack).
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules), so we
# write a small wrapper module that requires it, replaces every staging module with its
# published v0.x twin, and builds three tiny mains. Output is cached and reused.
# Usage: build-kube.sh <cache-root> [version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-1.34.4}
minor=$(echo "$version" | cut -d. -f2)
patch=$(echo "$version" | cut -d. -f3)
out="$cache_root/kube-$version"
binaries="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
missing=""
for b in $binaries; do [[ -x "$out/bin/$b" ]] || missing="$missing $b"; done
if [[ -z "$missing" ]]; then
  echo "kube $version: cached in $out"; exit 0
fi
src="$out/src"
for b in $binaries; do mkdir -p "$src/cmd/$b"; done
mkdir -p "$out/bin"
staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller"
{
  echo "module smartflow.local/kubebuild"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes v$version"
  echo
  for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m v0.$minor.$patch"; done
} > "$src/go.mod"
cat > "$src/cmd/kube-apiserver/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
cat > "$src/cmd/kube-controller-manager/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
GO
cat > "$src/cmd/kube-scheduler/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() { os.Exit(cli.Run(app.NewSchedulerCommand())) }
GO
cat > "$src/cmd/kubelet/main.go" <<'GO'
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() { os.Exit(cli.Run(app.NewKubeletCommand(context.Background()))) }
GO
cat > "$src/cmd/kube-proxy/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() { os.Exit(cli.Run(app.NewProxyCommand())) }
GO
cat > "$src/cmd/kubectl/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
	os.Exit(0)
}
GO
cd "$src"
export GOFLAGS=-mod=mod
go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=v$version"
for b in $missing; do
  echo "building $b $version"
  go build -trimpath -ldflags "$ldflags" -o "$out/bin/$b.tmp" "./cmd/$b"
  mv "$out/bin/$b.tmp" "$out/bin/$b"
done
echo "kube $version: built into $out/bin"
