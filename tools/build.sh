#!/usr/bin/env bash
# Builds the local control plane's tools from the Go modules pinned under tools/, one module per
# tool family, into $CD_TOOLS_DIR (default: .tools in the repository root, which git ignores).
#
# A family is rebuilt only when its pinned inputs change: each build records a digest of the
# family's go.mod, go.sum, sources and build recipe, and a matching digest skips the build.
#
# usage: tools/build.sh [k8s|etcd|kwok|helm|promtool|cri-double|containerd|runc|cni|pause|nvidia-ctk ...]
#        (no argument: all families)
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

# promtool checks the chart's alerting rules and runs their unit tests (tests/promtool). The Go module
# of Prometheus 3.N.P is tagged v0.3NN.P; the binary is stamped with the release it is.
build_promtool() {
  local pkg=github.com/prometheus/common/version kv minor
  kv=$(module_version promtool github.com/prometheus/prometheus)
  minor=$(echo "$kv" | cut -d. -f2)
  (cd "$here/promtool" && go build \
    -ldflags "-s -w -X $pkg.Version=3.$((minor - 300)).${kv##*.} -X $pkg.Revision=$kv -X $pkg.Branch=HEAD" \
    -o "$bin/promtool" github.com/prometheus/prometheus/cmd/promtool)
}

# containerd, runc, the CNI plugins and the pause image make a real container runtime for the test
# bed's kubelets (tools/containerd/config.toml.example: how one runs without touching the host).
# All three without cgo (upstream builds only the shim so): containerd then lacks just the btrfs
# snapshotter, which the bed does not use.
build_containerd() {
  local pkg=github.com/containerd/containerd/v2 kv
  kv=$(module_version containerd "$pkg")
  # The kubelet reports the runtime version from the stamp (unstamped: 2.4.2+unknown).
  local ldf="-s -w -X $pkg/version.Version=$kv -X $pkg/version.Package=$pkg"
  (cd "$here/containerd" &&
    go build -tags urfave_cli_no_docs -ldflags "$ldf" -o "$bin/" "$pkg/cmd/containerd" "$pkg/cmd/ctr" &&
    CGO_ENABLED=0 go build -tags "urfave_cli_no_docs no_grpc" -ldflags "$ldf" -o "$bin/" \
      "$pkg/cmd/containerd-shim-runc-v2")
}

# runc's container setup (nsexec) is C, and seccomp profiles need libseccomp; libpathrs, upstream's
# other default tag, is a Rust library Debian 12 does not ship.
build_runc() {
  "$here/host-packages.sh"
  local kv
  kv=$(module_version runc github.com/opencontainers/runc)
  (cd "$here/runc" && CGO_ENABLED=1 go build -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-s -w -X main.version=${kv#v}" -o "$bin/runc" github.com/opencontainers/runc)
}

# A CNI bin dir of their own: plugins are found by type name (bridge, loopback), too generic a
# name for .tools/bin.
build_cni() {
  local pkg=github.com/containernetworking/plugins kv
  kv=$(module_version cni "$pkg")
  mkdir -p "$out/cni/bin"
  (cd "$here/cni" && go build -ldflags "-s -w -X $pkg/pkg/utils/buildversion.BuildVersion=$kv" \
    -o "$out/cni/bin/" "$pkg/plugins/main/bridge" "$pkg/plugins/ipam/host-local" \
    "$pkg/plugins/main/loopback" "$pkg/plugins/meta/portmap")
}

# The sandbox image, built without a container engine or a registry: an OCI archive that
# `ctr -n k8s.io images import` loads under the name the containerd config pins.
build_pause() {
  "$here/host-packages.sh"
  local work=$out/pause.build name=localhost/pause tag=3.10
  rm -rf "$work" && mkdir -p "$work" "$out/images"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  # Not `umoci insert`: Debian 12's umoci 0.4.7 writes its layer without the tar trailer.
  umoci unpack --image "$work/oci:$tag" "$work/bundle"
  gcc -Os -static -s -Wall -o "$work/bundle/rootfs/pause" "$here/pause/pause.c"
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --image "$work/oci:$tag" --config.entrypoint /pause --config.user 65535 \
    --config.workingdir /
  umoci gc --layout "$work/oci"
  # umoci records the bare tag; an import names the image after this annotation as it stands.
  sed -i "s|\"org.opencontainers.image.ref.name\":\"$tag\"|\"org.opencontainers.image.ref.name\":\"$name:$tag\"|" \
    "$work/oci/index.json"
  grep -q "\"$name:$tag\"" "$work/oci/index.json"
  tar -C "$work/oci" -cf "$out/images/pause.oci.tar" .
  rm -rf "$work"
}

# NVIDIA's CDI generator, only to check the kubelet plugin's own management-mode set against it
# (tests/integration/test_management_set.py). go-nvml loads libnvidia-ml with dlopen: cgo.
build_nvidia-ctk() {
  local pkg=github.com/NVIDIA/nvidia-container-toolkit kv
  kv=$(module_version nvidia-ctk "$pkg")
  (cd "$here/nvidia-ctk" && CGO_ENABLED=1 go build -ldflags "-s -w -X $pkg/internal/info.version=${kv#v}" \
    -o "$bin/nvidia-ctk" "$pkg/cmd/nvidia-ctk")
}

# The digest covers the family's module files (the pause family has only its C source) and its own
# build recipe, so editing one family's recipe does not rebuild the others.
digest() {
  { declare -f "build_$1"
    cat $(ls "$here/$1"/go.mod "$here/$1"/go.sum 2>/dev/null) $(ls "$here/$1"/*.go 2>/dev/null) \
      $(ls "$here/$1"/*.c 2>/dev/null); } \
    | sha256sum | cut -c1-16
}

families=("$@")
[ ${#families[@]} -gt 0 ] || families=(etcd kwok helm promtool k8s cri-double containerd runc cni pause nvidia-ctk)
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
