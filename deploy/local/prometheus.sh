#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Debian's prometheus package, for promtool (the rule checks of the test suite). The package
# also ships a prometheus service; installing it must leave no server running nor enabled,
# since the stack starts what it needs itself, on loopback.
set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$STACK_DIR/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $(basename "$0") {install|installed|promtool}

  install    install Debian's prometheus package (promtool), its service stopped and disabled
  installed  exit 0 iff promtool is on PATH
  promtool   print promtool's path
EOF
    exit 2
}

prometheus_installed() { command -v promtool >/dev/null 2>&1; }

# The package's maintainer scripts start the service through invoke-rc.d, which asks
# policy-rc.d first: one that answers 101 (action forbidden) for the install's duration keeps
# it from starting, on sysvinit and systemd alike. A policy already in place is left alone.
prometheus_install() {
    if prometheus_installed; then
        return 0
    fi
    mkdir -p "$LOG_DIR"
    local policy=/usr/sbin/policy-rc.d ours=""
    if [[ ! -e $policy ]] && is_root; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        ours=$policy
    fi
    # shellcheck disable=SC2064 # expand now: the path is fixed here
    trap "rm -f '$ours'" EXIT
    apt_install prometheus
    if [[ -n $ours ]]; then
        rm -f "$ours"
    fi
    trap - EXIT
    prometheus_disable
    prometheus_installed || die "promtool is missing after installing prometheus"
}

# Stops and disables the packaged service wherever an init system knows it.
prometheus_disable() {
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then
        as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
        fi
    fi
}

case "${1:-}" in
install) prometheus_install ;;
installed) prometheus_installed ;;
promtool)
    prometheus_installed || die "promtool not found; run: make metrics"
    command -v promtool
    ;;
*) usage ;;
esac
