#!/usr/bin/env bash
# Mercato's own processes on loopback: the gateway and every service's api and worker.
# Runs the same console scripts a container runs; the servers come from stack.sh.
set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$STACK_DIR/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=./lib.sh
source "$STACK_DIR/lib.sh"

VENV_BIN="${MERCATO_VENV_BIN:-$REPO_DIR/.venv/bin}"
KEY_DIR="$MERCATO_STATE_DIR/keys"
JAEGER="$STACK_DIR/jaeger.sh"
# auto: trace into Jaeger when `make traces` has built it; on: build it first if missing
# (several minutes, once); off: no trace backend, no exporter.
MERCATO_TRACES="${MERCATO_TRACES:-auto}"
PROMETHEUS="$STACK_DIR/prometheus.sh"
# auto: run Prometheus when `make metrics` has installed it; on: install it first if
# missing; off: no Prometheus.
MERCATO_METRICS="${MERCATO_METRICS:-auto}"
SERVICES=(order inventory payment notification)
# process name -> health port (the port table of docs/architecture.md)
declare -A PORTS=(
    [payment-sandbox]=8090 [mail-catcher]=8025
    [gateway]=8080
    [order-api]=8001 [inventory-api]=8002 [payment-api]=8003 [notification-api]=8004
    [order-worker]=9101 [inventory-worker]=9102 [payment-worker]=9103 [notification-worker]=9104
)
PROCESSES=(
    payment-sandbox mail-catcher
    order-api inventory-api payment-api notification-api
    order-worker inventory-worker payment-worker notification-worker
    gateway
)

usage() {
    cat >&2 <<USAGE
usage: $(basename "$0") {run|start|stop|status|env}

  run     start everything (servers, migrations, demo catalogue, processes and,
          when installed, Jaeger and Prometheus) and stay in the foreground
          following the logs; Ctrl-C stops it all
  start   the same, in the background
  stop    stop the processes, then Jaeger, Prometheus and the servers
  status  one line per process and server
  env     print, as export lines, the environment start gives the processes
Logs: $LOG_DIR   Traces: MERCATO_TRACES=$MERCATO_TRACES   Metrics: MERCATO_METRICS=$MERCATO_METRICS
(each auto, on or off)
USAGE
    exit 2
}

# The identity key pair (the gateway signs with the private key, services verify) and the
# secret of the development token issuer (`make token`).
ensure_keys() {
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    mkdir -p "$KEY_DIR"
    chmod 0700 "$KEY_DIR"
    if [[ ! -s $KEY_DIR/dev-token-secret ]]; then
        (umask 077 && openssl rand -hex 32 >"$KEY_DIR/dev-token-secret")
        info "generated the development token secret in $KEY_DIR"
    fi
    [[ -s $KEY_DIR/identity.pem && -s $KEY_DIR/identity.pub.pem ]] && return 0
    openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null |
        openssl pkcs8 -topk8 -nocrypt -out "$KEY_DIR/identity.pem"
    openssl ec -in "$KEY_DIR/identity.pem" -pubout -out "$KEY_DIR/identity.pub.pem" 2>/dev/null
    info "generated a development identity key pair in $KEY_DIR"
}

# Every variable export_env sets, for `env`.
EXPORTED=()

export_env() {
    local svc upper
    for svc in "${SERVICES[@]}"; do
        upper=${svc^^}
        local var="${upper}_DATABASE_URL"
        export "$var=${!var:-postgresql+asyncpg://mercato:mercato@127.0.0.1:$MERCATO_PG_PORT/$svc}"
        var="${upper}_KAFKA_BOOTSTRAP_SERVERS"
        export "$var=${!var:-127.0.0.1:$MERCATO_KAFKA_PORT}"
        var="${upper}_IDENTITY_PUBLIC_KEYS"
        export "$var=${!var:-$KEY_DIR/identity.pub.pem}"
        EXPORTED+=("${upper}_DATABASE_URL" "${upper}_KAFKA_BOOTSTRAP_SERVERS" "$var")
    done
    export GATEWAY_IDENTITY_PRIVATE_KEY_FILE="${GATEWAY_IDENTITY_PRIVATE_KEY_FILE:-$KEY_DIR/identity.pem}"
    EXPORTED+=(GATEWAY_IDENTITY_PRIVATE_KEY_FILE)
    local endpoint
    endpoint=$(traces_endpoint)
    if [[ -n ${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-} ]]; then
        EXPORTED+=(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    elif [[ -n $endpoint ]]; then
        # The base URL: every process's OTLP/HTTP exporter appends /v1/traces.
        export OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint"
        EXPORTED+=(OTEL_EXPORTER_OTLP_ENDPOINT)
    fi
}

# An endpoint set by the caller (their own collector) wins over Jaeger.
user_endpoint() { printf '%s\n' "${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-${OTEL_EXPORTER_OTLP_ENDPOINT:-}}"; }

# Whether start runs Jaeger: not when traces are off or go elsewhere, nor before it is built
# (unless MERCATO_TRACES=on, which builds it).
jaeger_wanted() {
    [[ -z $(user_endpoint) ]] || return 1
    case $MERCATO_TRACES in
    off) return 1 ;;
    on) return 0 ;;
    *) bash "$JAEGER" installed ;;
    esac
}

# traces_endpoint: where the processes send spans; empty for no tracing.
traces_endpoint() {
    if [[ -n $(user_endpoint) ]]; then
        user_endpoint
    elif jaeger_wanted; then
        bash "$JAEGER" endpoint
    fi
}

# Jaeger starts before the processes, so their first spans have somewhere to go. Traces are
# a convenience: when Jaeger cannot start, the system still comes up, untraced, and says so.
TRACES_NOTE=
start_traces() {
    if [[ -n $(user_endpoint) ]]; then
        TRACES_NOTE="sent to $(user_endpoint) (your OTEL_EXPORTER_OTLP_* setting; Jaeger not started)"
    elif [[ $MERCATO_TRACES == off ]]; then
        TRACES_NOTE="off (MERCATO_TRACES=off)"
    elif ! jaeger_wanted; then
        TRACES_NOTE="off: Jaeger is not built; 'make traces' builds it once (several minutes), then restart"
    elif bash "$JAEGER" install && bash "$JAEGER" start; then
        TRACES_NOTE=
    else
        warn "Jaeger did not start; running without traces (log: $LOG_DIR/jaeger.log)"
        TRACES_NOTE="off: Jaeger did not start (log: $LOG_DIR/jaeger.log)"
        MERCATO_TRACES=off
    fi
}

# Whether start runs Prometheus: not when metrics are off, nor before `make metrics` has
# installed it (unless MERCATO_METRICS=on, which installs it).
prometheus_wanted() {
    case $MERCATO_METRICS in
    off) return 1 ;;
    on) return 0 ;;
    *) bash "$PROMETHEUS" installed ;;
    esac
}

METRICS_NOTE=
start_metrics() {
    if [[ $MERCATO_METRICS == off ]]; then
        METRICS_NOTE="Prometheus off (MERCATO_METRICS=off)"
    elif ! prometheus_wanted; then
        METRICS_NOTE="Prometheus off: 'make metrics' installs it, then restart"
    elif bash "$PROMETHEUS" install && bash "$PROMETHEUS" start; then
        METRICS_NOTE="Prometheus $(bash "$PROMETHEUS" url)   (alerts: /alerts, the rules of deploy/prometheus/rules.yml)"
    else
        warn "Prometheus did not start; running without it (log: $LOG_DIR/prometheus.log)"
        METRICS_NOTE="Prometheus off: it did not start (log: $LOG_DIR/prometheus.log)"
        MERCATO_METRICS=off
    fi
}

migrate() {
    local svc args
    for svc in "${SERVICES[@]}"; do
        args=()
        [[ $svc == inventory ]] && args=(--seed-demo)
        "$VENV_BIN/$svc-migrate" "${args[@]}" >>"$LOG_DIR/$svc-migrate.log" 2>&1 ||
            die_with_log "$LOG_DIR/$svc-migrate.log" "$svc-migrate failed"
    done
    info "databases migrated; demo catalogue seeded"
}

process_pid() { read_pidfile "$RUN_DIR/$1.pid"; }

process_running() { pid_alive "$(process_pid "$1")"; }

http_ok() {
    "$VENV_BIN/python" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
}

start_process() {
    local name=$1 port=${PORTS[$1]}
    if process_running "$name"; then
        return 0
    fi
    port_listening "$port" && die_port_taken "$name" "$port" "the ${name%%-*} settings"
    [[ -x $VENV_BIN/$name ]] || die "$VENV_BIN/$name not found: run 'make install' first"
    # setsid: a Ctrl-C in the terminal reaches this script, which stops the
    # processes in order, rather than hitting them all at once.
    setsid "$VENV_BIN/$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
}

await_ready() {
    local name=$1 path=/readyz
    case $name in
    payment-sandbox) path=/healthz ;;
    mail-catcher) path=/api/messages ;;
    esac
    local url="http://127.0.0.1:${PORTS[$1]}$path"
    # shellcheck disable=SC2317 # called indirectly by wait_until
    ready() { http_ok "$url"; }
    # shellcheck disable=SC2317
    alive() { process_running "$name"; }
    wait_until "$MERCATO_START_TIMEOUT" "$LOG_DIR/$name.log" "$name" ready alive
}

cmd_start() {
    ensure_state_dirs
    bash "$STACK_DIR/stack.sh" start
    ensure_keys
    start_traces
    start_metrics
    export_env
    migrate
    local name
    for name in "${PROCESSES[@]}"; do start_process "$name"; done
    for name in "${PROCESSES[@]}"; do await_ready "$name"; done
    print_urls
}

print_urls() {
    local traces=$TRACES_NOTE
    if [[ -z $traces ]]; then
        traces="make trace ORDER=<id>   (Jaeger's query API: $(bash "$JAEGER" query-url)/api/traces;
                    this build has no web UI, see docs/observability.md)"
    fi
    cat <<URLS

Mercato is running on loopback:
  gateway           http://127.0.0.1:8080   (try: curl http://127.0.0.1:8080/api/v1/products)
  API docs          http://127.0.0.1:8080/docs   (the public OpenAPI document: /openapi.json)
  token             TOKEN=\$(make -s token SUB=alice ROLES=customer)   (then -H "Authorization: Bearer \$TOKEN")
  traces            $traces
  mail catcher      http://127.0.0.1:8025        (SMTP on 127.0.0.1:1025)
  metrics           http://127.0.0.1:8080/metrics, :8001-8004/metrics (apis), :9101-9104/metrics (workers)
                    $METRICS_NOTE
  service APIs      http://127.0.0.1:8001-8004/docs   (they require the gateway's identity header)
  worker health     http://127.0.0.1:9101-9104/readyz
  payment sandbox   http://127.0.0.1:8090/docs   (ledger: /v1/ledger)
  Postgres 127.0.0.1:$MERCATO_PG_PORT  Redis 127.0.0.1:$MERCATO_REDIS_PORT  Kafka 127.0.0.1:$MERCATO_KAFKA_PORT
  logs              $LOG_DIR
URLS
}

stop_process() {
    local name=$1 pid
    pid=$(process_pid "$name")
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_pid_exit "$pid" 20 || { warn "$name did not stop in 20s; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$RUN_DIR/$name.pid"
}

cmd_stop() {
    local i
    # Reverse order: the gateway first, so no request reaches a stopping service.
    for ((i = ${#PROCESSES[@]} - 1; i >= 0; i--)); do stop_process "${PROCESSES[i]}"; done
    # After the processes, which flush their last spans as they exit.
    bash "$JAEGER" stop
    bash "$PROMETHEUS" stop
    bash "$STACK_DIR/stack.sh" stop
}

cmd_status() {
    local name pid rc=0
    for name in "${PROCESSES[@]}"; do
        pid=$(process_pid "$name")
        if pid_alive "$pid"; then
            printf "%-20s running  pid=%-8s port=%s\n" "$name" "$pid" "${PORTS[$name]}"
        else
            printf "%-20s stopped  pid=%-8s port=%s\n" "$name" - "${PORTS[$name]}"
            rc=1
        fi
    done
    # Jaeger not running only counts as a failure where start would have run it.
    bash "$JAEGER" status || { jaeger_wanted && rc=1; }
    bash "$PROMETHEUS" status || { prometheus_wanted && rc=1; }
    bash "$STACK_DIR/stack.sh" status || rc=1
    return "$rc"
}

cmd_env() {
    export_env
    local var
    for var in "${EXPORTED[@]}"; do printf 'export %s=%q\n' "$var" "${!var}"; done
}

cmd_run() {
    # Once stopping, finish it: a second Ctrl-C or the terminal closing must not leave
    # half of the system running.
    trap 'trap "" INT TERM HUP; echo; info "stopping..."; kill %1 2>/dev/null; cmd_stop; exit 0' INT TERM HUP
    cmd_start
    info "following the logs; Ctrl-C stops everything"
    local logs=()
    for name in "${PROCESSES[@]}"; do logs+=("$LOG_DIR/$name.log"); done
    tail -n 0 -F "${logs[@]}" &
    wait
}

[[ $# -eq 1 ]] || usage
case $1 in
run) cmd_run ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*) usage ;;
esac
