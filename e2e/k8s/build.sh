#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane binaries (kube-apiserver,
# kube-controller-manager, kubectl), etcd and helm from Go modules into a cache
# outside the repo, and prints the bin directory as the last line of stdout.
#
#   e2e/k8s/build.sh                  build if needed, print the bin dir
#   e2e/k8s/build.sh --print-bin-dir  print the bin dir only, never build
#
# Cache: ${RINGMASTER_CACHE:-$HOME/.cache/ringmaster}/k8s/<key>/bin, where <key>
# names the pinned versions plus a hash of the wrapper modules and this script,
# so any pin or build-flag change lands in a fresh directory. Progress goes to
# stderr. See README.md next to this file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
binaries=(kube-apiserver kube-controller-manager kubectl etcd helm)

# Git commits of the pinned releases, shown by `version` commands. The Go
# module proxy does not carry them; update with the pins, or leave empty when
# unknown. ETCD_GIT_SHA is the short hash of etcd's release tag (v3.6.6).
K8S_GIT_COMMIT=""
HELM_GIT_COMMIT=""
ETCD_GIT_SHA="d2809cf"

die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

mode=build
case "${1:-}" in
  "") ;;
  --print-bin-dir) mode=print ;;
  -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

# Version of a required module, read straight from a wrapper go.mod.
pinned() { # <go.mod> <module path>
  local v
  v="$(awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }
                      $1 == "require" && $2 == m { print $3; exit }' "$1")"
  [[ -n "$v" ]] || die "no pin for $2 in $1"
  echo "$v"
}

k8s_version="$(pinned "$here/kubernetes/go.mod" k8s.io/kubernetes)"
etcd_version="$(pinned "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
helm_version="$(pinned "$here/helm/go.mod" helm.sh/helm/v3)"

hash_cmd=sha256sum
command -v sha256sum >/dev/null 2>&1 || hash_cmd="shasum -a 256"
inputs_hash="$(cd "$here" && cat build.sh kubernetes/go.mod kubernetes/go.sum \
  etcd/go.mod etcd/go.sum etcd/main.go helm/go.mod helm/go.sum | $hash_cmd | cut -c1-12)"
key="k8s-${k8s_version}_etcd-${etcd_version}_helm-${helm_version}_${inputs_hash}"

cache_root="${RINGMASTER_CACHE:-$HOME/.cache/ringmaster}/k8s"
final="$cache_root/$key"
bin_dir="$final/bin"

if [[ "$mode" == print ]]; then
  echo "$bin_dir"
  exit 0
fi

complete() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}

if complete; then
  log "up to date: $key"
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "Go is not installed (or not on PATH); it is needed to build the Kubernetes binaries (Go >= 1.26)"

mkdir -p "$cache_root"

# One build at a time per cache; a second caller waits, then finds it done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache_root/.lock"
  flock -n 9 || { log "waiting for another build.sh to finish"; flock 9; }
  if complete; then
    log "up to date: $key (built by another run)"
    echo "$bin_dir"
    exit 0
  fi
  # Holding the lock, no build is running: clear leftovers of killed ones.
  rm -rf "$cache_root"/.build-* "$cache_root"/.stale-*
fi

tmp="$(mktemp -d "$cache_root/.build-$key.XXXXXX")"
# On a signal, stop the running go build too (SIGINT: go passes it on to the
# compilers), so nothing keeps writing into the scratch directory.
child=""
on_signal() {
  [[ -z "$child" ]] || kill -INT "$child" 2>/dev/null || true
  wait || true
  exit 130
}
trap 'rm -rf "$tmp"' EXIT
trap on_signal INT TERM HUP
gobuild() { # <module dir> <go build args...>
  local dir="$1" rc=0
  shift
  go -C "$dir" build -trimpath "$@" &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}
chmod 755 "$tmp"
mkdir "$tmp/bin"

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

# Kubernetes: the same -X flags and tags as hack/lib/version.sh and
# hack/lib/golang.sh use for a release build.
k8s_time="$(cd "$here/kubernetes" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
k8s_minor="${k8s_version#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
add_k8s_ldflag() {
  local pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    k8s_ldflags+=" -X $pkg.$1=$2"
  done
}
add_k8s_ldflag gitVersion "$k8s_version"
add_k8s_ldflag gitMajor 1
add_k8s_ldflag gitMinor "$k8s_minor"
add_k8s_ldflag buildDate "${k8s_time:-1970-01-01T00:00:00Z}"
# Unknown commit: empty rather than the "$Format:%H$" placeholder.
add_k8s_ldflag gitCommit "$K8S_GIT_COMMIT"
[[ -z "$K8S_GIT_COMMIT" ]] || add_k8s_ldflag gitTreeState clean

# Helm: the same -X flags as helm's Makefile for a tagged release.
client_go="$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
client_go="${client_go#v}"
k8s_major_for_helm=$(( ${client_go%%.*} + 1 ))
k8s_minor_for_helm="$(cut -d. -f2 <<<"$client_go")"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
if [[ -n "$HELM_GIT_COMMIT" ]]; then
  helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitCommit=$HELM_GIT_COMMIT"
  helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
fi
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major_for_helm -X $pkg.k8sVersionMinor=$k8s_minor_for_helm"
done

start=$SECONDS
log "building $key (first build takes a long while on a small machine)"

log "etcd $etcd_version"
etcd_ldflags="-s -w"
[[ -z "$ETCD_GIT_SHA" ]] || etcd_ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_GIT_SHA"
gobuild "$here/etcd" -ldflags "$etcd_ldflags" -o "$tmp/bin/etcd" .

log "helm $helm_version"
gobuild "$here/helm" -ldflags "$helm_ldflags" -o "$tmp/bin/helm" helm.sh/helm/v3/cmd/helm

for b in kubectl kube-apiserver kube-controller-manager; do
  log "$b $k8s_version"
  gobuild "$here/kubernetes" -tags selinux,notest,grpcnotrace \
    -ldflags "$k8s_ldflags" -o "$tmp/bin/$b" "k8s.io/kubernetes/cmd/$b"
done

cat >"$tmp/versions.txt" <<EOF
key=$key
kubernetes=$k8s_version
etcd=$etcd_version
helm=$helm_version
go=$(go env GOVERSION) $(go env GOOS)/$(go env GOARCH)
EOF

# Publish atomically: the final directory appears complete or not at all.
if [[ -e "$final" ]]; then
  stale="$(mktemp -d "$cache_root/.stale-$key.XXXXXX")"
  mv "$final" "$stale/"
  rm -rf "$stale"
fi
mv -T "$tmp" "$final"
trap - EXIT INT TERM HUP
log "built $key in $((SECONDS - start))s"
echo "$bin_dir"
