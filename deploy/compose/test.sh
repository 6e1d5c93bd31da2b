#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `make compose-test`: the whole system from its images, with `docker compose up`.
# Starts the engine if none runs (and stops it at the end), builds the stand-ins and
# every image, starts docker-compose.yml with offline/compose.yaml (the stand-ins) and
# offline/compose-test.yaml (nothing published but the gateway, on a free loopback
# port), waits for every healthcheck, then in the ops image on the compose network:
# `mercato demo` and `mercato check`; a second demo during which one worker container
# is killed (`docker kill`) and comes back; `mercato check` again. Then
# `docker compose down -v`, on failure too. Every step has a deadline.
set -euo pipefail

COMPOSE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$COMPOSE_DIR/../.." && pwd)"
source "$COMPOSE_DIR/images.sh"

# Its own project name: a user's `docker compose up` (project `mercato`) is untouched.
PROJECT="${MERCATO_COMPOSE_TEST_PROJECT:-mercato-compose-test}"
ORDERS="${MERCATO_COMPOSE_TEST_ORDERS:-200}"
KILLED="${MERCATO_COMPOSE_TEST_KILL:-inventory-worker}"
UP_TIMEOUT="${MERCATO_COMPOSE_TEST_UP_TIMEOUT:-420}"
DEMO_WITHIN=300
LOGS="$CONTAINERS_DIR/compose-test-logs"

compose_files=(-f "$REPO/docker-compose.yml" -f "$COMPOSE_DIR/offline/compose.yaml"
    -f "$COMPOSE_DIR/offline/compose-test.yaml")
# compose SECONDS ARGS...: docker compose on this project, bounded in time.
compose() {
    local seconds=$1
    shift
    timeout --kill-after=10 "$seconds" docker compose -p "$PROJECT" "${compose_files[@]}" "$@"
}

step() { printf '\ncompose-test: === %s (%ss)\n' "$*" "$((SECONDS - started))" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

started=$SECONDS
up=0
demo=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $demo ]]; then
        kill "$demo" 2>/dev/null || true
    fi
    if ((up)); then
        if ((status)); then
            rm -rf "$LOGS"
            mkdir -p "$LOGS"
            compose 60 ps -a >"$LOGS/ps.txt" 2>&1 || true
            compose 60 logs --no-color --timestamps >"$LOGS/all.log" 2>&1 || true
            printf 'compose-test: containers at failure (logs: %s):\n' "$LOGS" >&2
            cat "$LOGS/ps.txt" >&2
            tail -n 60 "$LOGS/all.log" >&2 || true
        fi
        step "docker compose down -v"
        compose 180 down -v --remove-orphans --timeout 10 >&2 || true
    fi
    engine_stop
    if ((status)); then
        printf '\ncompose-test: FAILED after %ss\n' "$((SECONDS - started))" >&2
    else
        printf '\ncompose-test: passed in %ss\n' "$((SECONDS - started))" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if reason=$(engine_unavailable); then
    die "cannot run the Docker engine here: $reason"
fi
step "engine"
engine_install
engine_start

# compose-test.yaml publishes the gateway there (and compose reads it for every command).
export MERCATO_COMPOSE_TEST_PORT
MERCATO_COMPOSE_TEST_PORT=$(free_port)

step "images: the stand-ins and every Mercato image"
build_images 1 dev
# The compose file's own build sections (target, MEMBER): from the cache just filled.
compose 900 build --quiet

step "docker compose up (gateway on 127.0.0.1:$MERCATO_COMPOSE_TEST_PORT)"
# Leftovers of an interrupted run would make this one meaningless.
compose 180 down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
up=1
compose "$((UP_TIMEOUT + 60))" up -d --no-build --quiet-pull --wait --wait-timeout "$UP_TIMEOUT"
compose 30 ps -a --format 'table {{.Service}}\t{{.Status}}' >&2
# The compose file promises convergence without restarts: dependencies wait on health.
mapfile -t containers < <(compose 30 ps -aq)
restarted=$(docker inspect -f '{{.Name}} {{.RestartCount}}' "${containers[@]}" | awk '$2 > 0')
[[ -z $restarted ]] || die "containers restarted while the system converged: $restarted"

gateway="http://127.0.0.1:$MERCATO_COMPOSE_TEST_PORT"
step "the gateway's published port"
# python3 rather than curl, which a fresh Debian may lack.
get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
get "$gateway/readyz" >/dev/null
catalogue=$(get "$gateway/api/v1/products")
printf '%s...\n' "${catalogue:0:160}" >&2

mercato() { compose "$((DEMO_WITHIN + 120))" run --rm -T --no-deps mercato "$@"; }

step "mercato demo $ORDERS, then mercato check"
mercato demo "$ORDERS" --within "$DEMO_WITHIN"
mercato check

step "mercato demo $ORDERS while $KILLED is killed"
mercato demo "$ORDERS" --within "$DEMO_WITHIN" &
demo=$!
# Let orders flow before the kill, so that it lands mid-saga.
sleep 8
victim=$(compose 30 ps -q "$KILLED")
restarts_before=$(docker inspect -f '{{.RestartCount}}' "$victim")
docker kill "$victim" >/dev/null
info "killed $KILLED ($victim)"
# Engine 20.10 counts `docker kill` as a stop by hand: the restart policy
# (unless-stopped) leaves the container down, so compose starts it again, as an
# operator would. Engines that do restart it are given a few seconds first.
deadline=$((SECONDS + 10))
until [[ $(docker inspect -f '{{.State.Running}} {{.RestartCount}}' "$victim") == "true $((restarts_before + 1))" ]]; do
    if ((SECONDS >= deadline)); then
        info "the engine left $KILLED down: docker compose up -d $KILLED"
        break
    fi
    sleep 1
done
compose 180 up -d --no-build --no-deps --wait --wait-timeout 120 "$KILLED"
info "$KILLED is back: $(docker inspect -f '{{.State.Status}} {{.State.Health.Status}} restarts={{.RestartCount}}' "$victim")"
wait "$demo"
mercato check
