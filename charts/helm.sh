#!/usr/bin/env bash
# Builds helm (the chart tests render charts/freshrank with it) from the Go module proxy with the
# machine's Go, once per machine and helm version.
#
#   charts/helm.sh            build if missing; print the path of the helm binary
#   charts/helm.sh --locate   print the path; fail if not built (no build)
#
# The binary lands in ~/.cache/freshrank/helm/<version>/ (outside the repository). FRESHRANK_HELM
# points at another helm instead; then nothing is built.
set -euo pipefail

version=v3.19.0
if [[ -n ${FRESHRANK_HELM:-} ]]; then
    [[ -x $FRESHRANK_HELM ]] || { echo "helm.sh: FRESHRANK_HELM=$FRESHRANK_HELM is not executable" >&2; exit 1; }
    echo "$FRESHRANK_HELM"
    exit 0
fi
dir=${XDG_CACHE_HOME:-$HOME/.cache}/freshrank/helm/$version
if [[ -x $dir/helm ]]; then
    echo "$dir/helm"
    exit 0
fi
if [[ ${1:-} == --locate ]]; then
    echo "helm.sh: no helm in $dir: run \`make helm\` (builds helm $version, minutes once per machine) or set FRESHRANK_HELM" >&2
    exit 3
fi
mkdir -p "$dir"
echo "helm.sh: building helm $version into $dir (once per machine)" >&2
GOBIN=$dir GOFLAGS=-trimpath go install "helm.sh/helm/v3/cmd/helm@$version" >&2
echo "$dir/helm"
