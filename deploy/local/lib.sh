# shellcheck shell=bash
# Shared helpers for the native local stack. Sourced by stack.sh; not executable.

# ---------------------------------------------------------------------------
# Configuration (every value can be overridden from the environment)
# ---------------------------------------------------------------------------
# /var/tmp rather than $HOME: the postgres system user must be able to
# traverse every parent directory of its data dir, and /root is 0700.
MERCATO_STATE_DIR="${MERCATO_STATE_DIR:-/var/tmp/mercato}"
MERCATO_PG_PORT="${MERCATO_PG_PORT:-5432}"
MERCATO_REDIS_PORT="${MERCATO_REDIS_PORT:-6379}"
MERCATO_KAFKA_PORT="${MERCATO_KAFKA_PORT:-9092}"
MERCATO_KAFKA_CONTROLLER_PORT="${MERCATO_KAFKA_CONTROLLER_PORT:-9093}"
MERCATO_KAFKA_HEAP="${MERCATO_KAFKA_HEAP:--Xmx512m -Xms256m}"
# Seconds to wait for a server to become ready / to exit.
MERCATO_START_TIMEOUT="${MERCATO_START_TIMEOUT:-60}"
MERCATO_STOP_TIMEOUT="${MERCATO_STOP_TIMEOUT:-60}"

LOG_DIR="$MERCATO_STATE_DIR/logs"
RUN_DIR="$MERCATO_STATE_DIR/run"
# Everything binds here and nowhere else.
BIND_ADDR=127.0.0.1

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------
info() { printf 'stack: %s\n' "$*" >&2; }
warn() { printf 'stack: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'stack: ERROR: %s\n' "$*" >&2
    exit 1
}

# die_with_log LOGFILE MESSAGE...: fail and show where to look.
die_with_log() {
    local logf=$1
    shift
    printf 'stack: ERROR: %s\n' "$*" >&2
    if [[ -s $logf ]]; then
        printf 'stack: ---- last 30 lines of %s ----\n' "$logf" >&2
        tail -n 30 "$logf" >&2 || true
        printf 'stack: ---- end of %s ----\n' "$logf" >&2
    fi
    printf 'stack: full log: %s\n' "$logf" >&2
    exit 1
}

# status_line NAME STATE PID PORT
status_line() { printf '%-9s %-8s pid=%-8s port=%s\n' "$@"; }

# log_marker LOGFILE TEXT: separates runs in an append-only server log, so
# the tail shown on failure is recognisably from this attempt.
log_marker() { printf '\n==== %s: %s ====\n' "$(date -Is)" "$2" >>"$1"; }

# ---------------------------------------------------------------------------
# Privileges
# ---------------------------------------------------------------------------
is_root() { [[ $(id -u) -eq 0 ]]; }

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root privileges (and sudo is not installed) to run: $*"
    fi
}

# ---------------------------------------------------------------------------
# State directory and locking
# ---------------------------------------------------------------------------
ensure_state_dirs() {
    # 0755 so the postgres system user can traverse into its own subdir.
    mkdir -p "$MERCATO_STATE_DIR" "$LOG_DIR" "$RUN_DIR"
    chmod 0755 "$MERCATO_STATE_DIR" "$LOG_DIR" "$RUN_DIR"
}

# Serialise start/stop/install: test runners may call `stack.sh start` from
# several processes at once, and two of them must not both initdb or format.
# Every command that may leave a daemon behind (servers, apt postinst
# scripts) is run with fd 9 closed, or the daemon would hold the lock forever.
take_lock() {
    exec 9>"$RUN_DIR/stack.lock"
    if ! flock -w 600 9; then
        die "timed out waiting for another stack.sh holding $RUN_DIR/stack.lock"
    fi
}

# ---------------------------------------------------------------------------
# Processes and ports
# ---------------------------------------------------------------------------
pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# pid_cmdline PID: the command line with NULs turned into spaces.
pid_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

read_pidfile() {
    local f=$1 pid=
    if [[ -r $f ]]; then read -r pid <"$f" 2>/dev/null || true; fi
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
    return 0
}

# port_listening PORT: true when anything listens on PORT (any address).
port_listening() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -ltnH "sport = :$port" 2>/dev/null) ]]
    else
        port_accepts "$port"
    fi
}

# port_accepts PORT: true when 127.0.0.1:PORT accepts a TCP connection.
port_accepts() {
    local port=$1
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$BIND_ADDR" "$port" 2>/dev/null
}

# port_owner_pids PORT: pids of processes listening on PORT (needs root to
# see other users' processes; may print nothing).
port_owner_pids() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

# describe_port PORT: human-readable owner(s) of a listening port.
describe_port() {
    local port=$1 pid out=
    for pid in $(port_owner_pids "$port"); do
        out+="${out:+; }pid $pid: $(pid_cmdline "$pid")"
    done
    [[ -n $out ]] || out="unknown process (run as root to see it, or: ss -ltnp \"sport = :$port\")"
    printf '%s\n' "$out"
}

die_port_taken() {
    local what=$1 port=$2 var=$3
    die "port $port is already in use by something that is not Mercato's $what: $(describe_port "$port")
       Stop that process, or choose another port with $var=<port>."
}

# wait_until TIMEOUT LOGFILE WHAT READY_FN [ALIVE_FN]
# Polls READY_FN until it succeeds. Fails (pointing at LOGFILE) on timeout or
# as soon as ALIVE_FN reports that the server process has died.
wait_until() {
    local timeout=$1 logf=$2 what=$3 ready_fn=$4 alive_fn=${5:-}
    local deadline=$((SECONDS + timeout))
    while ! "$ready_fn"; do
        if [[ -n $alive_fn ]] && ! "$alive_fn"; then
            die_with_log "$logf" "$what exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            die_with_log "$logf" "$what not ready after ${timeout}s"
        fi
        sleep 0.3
    done
}

# wait_pid_exit PID TIMEOUT: true when PID exits before TIMEOUT seconds.
wait_pid_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# terminate NAME PID: SIGTERM, then SIGKILL if NAME has not exited within
# MERCATO_STOP_TIMEOUT seconds. SIGTERM is each server's clean shutdown.
terminate() {
    local name=$1 pid=$2
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" "$MERCATO_STOP_TIMEOUT"; then
        warn "$name (pid $pid) did not exit within ${MERCATO_STOP_TIMEOUT}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_exit "$pid" 10 || die "could not kill $name (pid $pid)"
    fi
}

# ---------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------
APT_LOG="$LOG_DIR/install-apt.log"

# run_apt ARGS...: apt-get, waiting out a concurrent apt/dpkg run instead of
# failing on its lock.
run_apt() {
    local deadline=$((SECONDS + 900)) start_line
    while :; do
        start_line=$(($(wc -l <"$APT_LOG" 2>/dev/null || echo 0) + 1))
        if as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 "$@" >>"$APT_LOG" 2>&1 9>&-; then
            return 0
        fi
        if tail -n "+$start_line" "$APT_LOG" | grep -q 'Could not get lock' && ((SECONDS < deadline)); then
            info "apt is busy (another apt/dpkg run holds its lock); retrying in 5s"
            sleep 5
            continue
        fi
        return 1
    done
}

# apt_install PKG...: install the given packages (callers pass only the
# missing ones). Runs `apt-get update` first, once.
apt_install() {
    (($#)) || return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    info "installing Debian packages: $* (log: $APT_LOG)"
    printf '\n==== %s: apt-get install %s ====\n' "$(date -Is)" "$*" >>"$APT_LOG"
    run_apt update || die_with_log "$APT_LOG" "apt-get update failed"
    run_apt install -y --no-install-recommends "$@" ||
        die_with_log "$APT_LOG" "apt-get install $* failed"
}
