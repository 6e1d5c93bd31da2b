#!/usr/bin/env bash
# shellcheck shell=bash
# The Docker engine and CLI plugins for `make images` and `make compose-test`, on a
# machine that may have neither: Debian's docker.io (Engine 20.10, started here with
# `dockerd --iptables=false`, as there is no systemd), Compose v2 and buildx built with
# `go install` (Debian bookworm packages neither) and cached under
# $MERCATO_STATE_DIR/containers. Sourced by images.sh and test.sh; run directly:
#   engine.sh check     exit 0 if this machine can run the engine, else print why not
#   engine.sh install   install whatever is missing, start nothing
set -euo pipefail

MERCATO_STATE_DIR="${MERCATO_STATE_DIR:-/var/tmp/mercato}"
CONTAINERS_DIR="${MERCATO_CONTAINERS_DIR:-$MERCATO_STATE_DIR/containers}"
# Newer compose tags (v2.40) and older ones (v2.24, v2.20) refuse `go install` because
# of replace/exclude directives in their go.mod; these two install cleanly.
COMPOSE_VERSION=v2.29.7
BUILDX_VERSION=v0.19.3
PLUGIN_DIR="$CONTAINERS_DIR/bin"
DOCKERD_LOG="$CONTAINERS_DIR/dockerd.log"
DOCKERD_PIDFILE="$CONTAINERS_DIR/dockerd.pid"
ENGINE_START_TIMEOUT="${MERCATO_ENGINE_START_TIMEOUT:-90}"
# One core for compilers and builds: the machine is shared.
BUILD_JOBS="${MERCATO_BUILD_JOBS:-1}"
# Deadlines of one image build and of one plugin's go install (a cold module cache).
# shellcheck disable=SC2034 # BUILD_TIMEOUT is read by images.sh and standins.sh
BUILD_TIMEOUT="${MERCATO_BUILD_TIMEOUT:-1800}"
GO_INSTALL_TIMEOUT="${MERCATO_GO_INSTALL_TIMEOUT:-3600}"
# Set by engine_start when it started the daemon (engine_stop stops only that one).
ENGINE_STARTED_PID=""

info() { printf 'containers: %s\n' "$*" >&2; }
die() {
    printf 'containers: ERROR: %s\n' "$*" >&2
    exit 1
}

# Heavy work yields to everything else on the machine.
low_priority() { nice -n 19 ionice -c3 "$@"; }

engine_running() { docker info >/dev/null 2>&1; }

# engine_unavailable: prints why this machine cannot run the engine (exit 0), or
# nothing (exit 1) when it can.
engine_unavailable() {
    if engine_running; then
        return 1
    fi
    if [[ $(uname -s) != Linux ]]; then
        echo "not Linux, and no running Docker engine"
    elif [[ $(id -u) -ne 0 ]]; then
        echo "no running Docker engine, and starting one needs root"
    elif ! command -v dockerd >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
        echo "no dockerd, and no apt-get to install docker.io with"
    elif [[ ! -d /sys/fs/cgroup ]] || [[ -z $(ls -A /sys/fs/cgroup 2>/dev/null) ]]; then
        echo "no cgroup filesystem at /sys/fs/cgroup (dockerd cannot start containers)"
    elif ! command -v go >/dev/null 2>&1 && ! [[ -x /usr/local/go/bin/go ]] && ! plugins_present; then
        echo "no Go toolchain to build the compose and buildx CLI plugins with"
    else
        return 1
    fi
}

apt_install() {
    info "installing $* from Debian's packages"
    if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null) ]]; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive low_priority apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive low_priority apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

plugins_present() { docker compose version >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; }

go_bin() { command -v go 2>/dev/null || echo /usr/local/go/bin/go; }

# go_plugin NAME PACKAGE VERSION: builds a CLI plugin once into $PLUGIN_DIR/NAME-VERSION.
go_plugin() {
    local name=$1 package=$2 version=$3 target="$PLUGIN_DIR/$1-$3"
    if [[ ! -x $target ]]; then
        info "building $name $version with go install (several minutes, once; cached in $PLUGIN_DIR)"
        local gobin
        gobin=$(mktemp -d "$CONTAINERS_DIR/gobin.XXXXXX")
        (cd "$CONTAINERS_DIR" && GOBIN="$gobin" GOMAXPROCS="$BUILD_JOBS" GOFLAGS=-mod=mod \
            low_priority timeout "$GO_INSTALL_TIMEOUT" "$(go_bin)" install -p "$BUILD_JOBS" "$package@$version") ||
            { rm -rf "$gobin"; die "go install $package@$version failed"; }
        # The package path ends in /cmd for compose: the binary takes that name.
        mv "$gobin"/* "$target.tmp"
        rm -rf "$gobin"
        mv "$target.tmp" "$target"
    fi
    # The CLI looks for plugins in ~/.docker/cli-plugins (and system directories).
    local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugins"
    ln -sfn "$target" "$plugins/docker-$name"
}

engine_install() {
    mkdir -p "$CONTAINERS_DIR" "$PLUGIN_DIR"
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    docker compose version >/dev/null 2>&1 ||
        go_plugin compose github.com/docker/compose/v2/cmd "$COMPOSE_VERSION"
    docker buildx version >/dev/null 2>&1 ||
        go_plugin buildx github.com/docker/buildx/cmd/buildx "$BUILDX_VERSION"
}

# engine_start: uses a running engine, or starts dockerd (at low priority, so that
# builds and containers yield to the rest of the machine) and waits until it answers.
engine_start() {
    if engine_running; then
        info "using the running Docker engine"
        return 0
    fi
    mkdir -p "$CONTAINERS_DIR"
    info "starting dockerd --iptables=false (log: $DOCKERD_LOG)"
    printf '\n==== %s: starting dockerd ====\n' "$(date -Is)" >>"$DOCKERD_LOG"
    # No NAT rules are wanted on this machine: user-defined bridge networks, container
    # DNS and ports published on 127.0.0.1 all work without them.
    setsid nice -n 19 ionice -c3 dockerd --iptables=false --pidfile "$DOCKERD_PIDFILE" \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    ENGINE_STARTED_PID=$!
    local deadline=$((SECONDS + ENGINE_START_TIMEOUT))
    until engine_running; do
        if ! kill -0 "$ENGINE_STARTED_PID" 2>/dev/null; then
            ENGINE_STARTED_PID=""
            tail -n 30 "$DOCKERD_LOG" >&2
            die "dockerd exited while starting (log: $DOCKERD_LOG)"
        fi
        ((SECONDS < deadline)) || die "dockerd did not answer within ${ENGINE_START_TIMEOUT}s (log: $DOCKERD_LOG)"
        sleep 1
    done
}

# engine_stop: stops the daemon engine_start started (and its containerd), if any.
engine_stop() {
    [[ -n $ENGINE_STARTED_PID ]] || return 0
    info "stopping the dockerd this run started (pid $ENGINE_STARTED_PID)"
    kill -TERM "$ENGINE_STARTED_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$ENGINE_STARTED_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 1
    done
    if kill -0 "$ENGINE_STARTED_PID" 2>/dev/null; then
        info "dockerd did not stop within 60s: killing it"
        kill -KILL "$ENGINE_STARTED_PID" 2>/dev/null || true
    fi
    ENGINE_STARTED_PID=""
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    case "${1:-}" in
        check)
            if reason=$(engine_unavailable); then
                echo "$reason"
                exit 1
            fi
            ;;
        install) engine_install ;;
        *)
            echo "usage: $(basename "$0") {check|install}" >&2
            exit 2
            ;;
    esac
fi
