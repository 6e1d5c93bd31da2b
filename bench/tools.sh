#!/usr/bin/env bash
# Installs what the benchmarks drive, once:
#   nginx, wrk          (Debian packages)            -> /usr/sbin/nginx, /usr/bin/wrk
#   k6                  (go install, pinned)         -> $TOOLS_DIR/bin/k6
#   pgbench             (comes with the stack's Postgres packages)
# Idempotent; prints the locations as KEY=VALUE lines. `tools.sh k6`: k6 alone (the tests'
# soak drives the system with it).
set -euo pipefail

K6_VERSION=v1.8.1

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../deploy/local/lib.sh
source "$BENCH_DIR/../deploy/local/lib.sh"
TOOLS_DIR="${MERCATO_TOOLS_DIR:-$MERCATO_STATE_DIR/tools}"
BIN_DIR="$TOOLS_DIR/bin"
mkdir -p "$BIN_DIR" "$LOG_DIR"

only_k6=false
[[ ${1:-} == k6 ]] && only_k6=true

if ! $only_k6; then
    missing=()
    [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    apt_install "${missing[@]}"
fi

k6="$BIN_DIR/k6"
stamp="$BIN_DIR/.k6-$K6_VERSION"
if [[ ! -x $k6 || ! -e $stamp ]]; then
    command -v go >/dev/null 2>&1 || die "Go is required to build k6 (https://go.dev/dl/)"
    info "building k6 $K6_VERSION into $BIN_DIR (once; a few minutes)"
    (cd "$TOOLS_DIR" && GOFLAGS="${GOFLAGS:-} -mod=mod" GOBIN="$BIN_DIR" go install "go.k6.io/k6@$K6_VERSION")
    rm -f "$BIN_DIR"/.k6-*
    touch "$stamp"
fi

if ! $only_k6; then
    echo "NGINX=/usr/sbin/nginx"
    echo "WRK=$(command -v wrk)"
fi
echo "K6=$k6"
