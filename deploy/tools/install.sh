#!/usr/bin/env bash
# Installs the tools that validate the deployment artefacts offline, once:
#   kustomize          (go install, pinned)      -> $TOOLS_DIR/bin/kustomize
#   KEDA's Go module   (go mod download, pinned) -> ScaledObject CRD schema
#   compose-go module  (go mod download, pinned) -> Compose specification schema
#   prometheus-operator module (go mod download, pinned) -> PrometheusRule CRD schema
# Idempotent: a second run only checks that everything is in place. Prints the
# locations as KEY=VALUE lines for the tests to read.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
KEDA_VERSION=v2.16.1
COMPOSE_GO_VERSION=v2.9.1
PROMETHEUS_OPERATOR_VERSION=v0.85.0

STATE_DIR="${MERCATO_STATE_DIR:-/var/tmp/mercato}"
TOOLS_DIR="${MERCATO_TOOLS_DIR:-$STATE_DIR/tools}"
BIN_DIR="$TOOLS_DIR/bin"
mkdir -p "$BIN_DIR"

command -v go >/dev/null 2>&1 || { echo "install.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:-} -mod=mod"
GOMODCACHE="$(go env GOMODCACHE)"

kustomize="$BIN_DIR/kustomize"
stamp="$BIN_DIR/.kustomize-$KUSTOMIZE_VERSION"
if [[ ! -x $kustomize || ! -e $stamp ]]; then
    echo "installing kustomize $KUSTOMIZE_VERSION into $BIN_DIR" >&2
    GOBIN="$BIN_DIR" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    rm -f "$BIN_DIR"/.kustomize-*
    touch "$stamp"
fi

# Prints the module's directory in the module cache, downloading it if missing.
module_dir() {
    local dir="$GOMODCACHE/$1@$2"
    if [[ ! -d $dir ]]; then
        echo "downloading $1@$2" >&2
        (cd "$TOOLS_DIR" && go mod download -json "$1@$2" >/dev/null)
    fi
    echo "$dir"
}

keda_dir="$(module_dir github.com/kedacore/keda/v2 "$KEDA_VERSION")"
compose_dir="$(module_dir github.com/compose-spec/compose-go/v2 "$COMPOSE_GO_VERSION")"
operator_dir="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")"
keda_crd="$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml"
compose_schema="$compose_dir/schema/compose-spec.json"
rule_crd="$operator_dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
for file in "$keda_crd" "$compose_schema" "$rule_crd"; do
    [[ -s $file ]] || { echo "install.sh: $file is missing" >&2; exit 1; }
done

echo "KUSTOMIZE=$kustomize"
echo "KEDA_SCALEDOBJECT_CRD=$keda_crd"
echo "COMPOSE_SCHEMA=$compose_schema"
echo "PROMETHEUS_RULE_CRD=$rule_crd"
