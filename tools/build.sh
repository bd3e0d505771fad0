#!/usr/bin/env bash
# Builds the local control plane's tools from the Go modules pinned under tools/, one module per
# tool family, into $CD_TOOLS_DIR (default: .tools in the repository root, which git ignores).
#
# A family is rebuilt only when its pinned inputs change: each build records a digest of the
# family's go.mod, go.sum, sources and build recipe, and a matching digest skips the build.
#
# usage: tools/build.sh [k8s|etcd|kwok|helm|cri-double ...]   (no argument: all families)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${CD_TOOLS_DIR:-$root/.tools}
bin=$out/bin
mkdir -p "$bin"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -modcacherw"

module_version() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }

build_k8s() {
  local kv minor ldf p
  kv=$(module_version k8s k8s.io/kubernetes)
  minor=$(echo "$kv" | cut -d. -f2)
  ldf="-s -w"
  # Unstamped binaries report v0.0.0-master; Helm and version checks read the stamp.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$kv -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldf="$ldf -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here/k8s" && go build -ldflags "$ldf" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet)
}

# The container runtime of the test bed's real kubelets (tools/cri-double/main.go says what it does).
build_cri-double() { (cd "$here/cri-double" && go build -ldflags "-s -w" -o "$bin/cri-double" .); }

build_etcd() { (cd "$here/etcd" && go build -ldflags "-s -w" -o "$bin/etcd" .); }
build_kwok() {
  local src
  (cd "$here/kwok" && go build -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # kwok >= 0.8 has no built-in stages: take the upstream "fast" stages from the same module version.
  src=$(cd "$here/kwok" && go mod download -json sigs.k8s.io/kwok | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$out/kwok-stages"
  cp "$src/kustomize/stage/node/fast/node-initialize.yaml" \
    "$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    "$src/kustomize/stage/pod/fast/pod-ready.yaml" "$src/kustomize/stage/pod/fast/pod-delete.yaml" \
    "$out/kwok-stages/"
  chmod 644 "$out/kwok-stages/"*.yaml
}
build_helm() {
  (cd "$here/helm" && go build \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$(module_version helm helm.sh/helm/v4)" \
    -o "$bin/helm" helm.sh/helm/v4/cmd/helm)
}

# The digest covers the family's module files and its own build recipe, so editing one family's
# recipe does not rebuild the others.
digest() {
  { declare -f "build_$1"; cat "$here/$1"/go.mod "$here/$1"/go.sum $(ls "$here/$1"/*.go 2>/dev/null); } \
    | sha256sum | cut -c1-16
}

families=("$@")
[ ${#families[@]} -gt 0 ] || families=(etcd kwok helm k8s cri-double)
for family in "${families[@]}"; do
  stamp=$out/$family.stamp
  want=$(digest "$family")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "tools: $family is up to date"
    continue
  fi
  echo "tools: building $family ..."
  start=$(date +%s)
  "build_$family"
  echo "$want" > "$stamp"
  echo "tools: built $family in $(( $(date +%s) - start ))s"
done
