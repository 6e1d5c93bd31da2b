#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Native local dev stack: PostgreSQL, Redis and Kafka on 127.0.0.1, no Docker.
# See README.md in this directory.
set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$STACK_DIR/lib.sh"
source "$STACK_DIR/postgres.sh"
source "$STACK_DIR/redis.sh"
source "$STACK_DIR/kafka.sh"

ALL_SERVERS=(postgres redis kafka)

usage() {
    cat >&2 <<EOF
usage: $(basename "$0") {install|start|stop|restart|status} [postgres|redis|kafka ...]

  install   install what is missing (Debian packages, Kafka jars)
  start     install if needed, start servers not yet running, wait until
            ready, create databases and topics
  stop      stop servers
  restart   stop, then start
  status    one line per server; exit 0 iff all are running

Servers default to all of: ${ALL_SERVERS[*]}
State (data, logs, pid files): $MERCATO_STATE_DIR
EOF
    exit 2
}

has() {
    local s
    for s in "${SERVERS[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

cmd_install() {
    local missing=() s
    for s in "${SERVERS[@]}"; do
        mapfile -t -O "${#missing[@]}" missing < <("${s}_missing_packages")
    done
    if ((${#missing[@]})); then
        # Deduplicate, keep order.
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
        apt_install "${missing[@]}"
    fi
    if has kafka; then
        kafka_install_jars
    fi
}

cmd_start() {
    local t0=$EPOCHREALTIME
    cmd_install
    # Kafka's JVM takes longest to boot; launch it first and wait for it last.
    if has kafka; then kafka_launch; fi
    if has postgres; then postgres_start; fi
    if has redis; then redis_start; fi
    if has kafka; then kafka_await; fi
    info "ready in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
    cmd_status || true
}

cmd_stop() {
    if has kafka; then kafka_stop; fi
    if has redis; then redis_stop; fi
    if has postgres; then postgres_stop; fi
}

cmd_status() {
    local s rc=0
    for s in "${SERVERS[@]}"; do
        "${s}_status" || rc=1
    done
    return "$rc"
}

main() {
    (($# >= 1)) || usage
    local cmd=$1 s
    shift
    SERVERS=("$@")
    ((${#SERVERS[@]})) || SERVERS=("${ALL_SERVERS[@]}")
    for s in "${SERVERS[@]}"; do
        case $s in
        postgres | redis | kafka) ;;
        *) usage ;;
        esac
    done

    case $cmd in
    status)
        cmd_status
        return
        ;;
    install | start | stop | restart) ;;
    *) usage ;;
    esac

    ensure_state_dirs
    take_lock
    case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    esac
}

main "$@"
