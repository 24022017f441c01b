# shellcheck shell=bash disable=SC2034  # the variables are used by the component files
# Shared settings and helpers for ops/stack.sh. Sourced, never run.

OPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
REPO_DIR=$(dirname "$OPS_DIR")

# Absolute path: it is matched against process command lines to recognise our processes.
STACK_DIR=$(realpath -m "${OMNISTOCK_STACK_DIR:-$REPO_DIR/.stack}")
LOG_DIR="$STACK_DIR/logs"
RUN_DIR="$STACK_DIR/run"

PG_PORT="${OMNISTOCK_PG_PORT:-15432}"
KAFKA_PORT="${OMNISTOCK_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${OMNISTOCK_KAFKA_CONTROLLER_PORT:-19093}"
MARIADB_PORT="${OMNISTOCK_MARIADB_PORT:-13306}"
KAFKA_LIBS=$(realpath -m "${OMNISTOCK_KAFKA_LIBS:-$REPO_DIR/.cache/kafka/libs}")

# How long to wait for a component to answer after starting it.
START_TIMEOUT=60

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Unix sockets live in the stack dir and sun_path holds at most 107 bytes.
check_stack_dir() {
    if [ "${#STACK_DIR}" -gt 80 ]; then
        die "stack dir path is too long for unix sockets (${#STACK_DIR} > 80 chars): $STACK_DIR; set OMNISTOCK_STACK_DIR to a shorter path"
    fi
    for p in "$PG_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$MARIADB_PORT"; do
        [[ "$p" =~ ^[0-9]+$ ]] || die "port '$p' is not a number"
    done
}

ensure_dirs() {
    mkdir -p "$STACK_DIR" "$LOG_DIR" "$RUN_DIR"
}

# Serialise concurrent invocations (e.g. two test runs calling `up` at once).
# Daemons we start must not inherit fd 9, or they would hold the lock forever.
take_lock() {
    ensure_dirs
    exec 9>"$STACK_DIR/.lock"
    flock -w 600 9 || die "another ops/stack.sh is still running (lock $STACK_DIR/.lock)"
}

# A pid is ours only if it is alive and its command line mentions our stack dir:
# a stale pid file may point at a pid that the kernel has since given to someone else.
pid_is_ours() {
    local pid="$1"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"$STACK_DIR/"* ]]
}

# Whether FILE has the fixed TEXT past its first OFFSET bytes. Not `tail | grep -q`: under
# pipefail, grep leaving at the first match makes tail die of SIGPIPE when more log follows the
# line, and the pipeline reads as "not found" (a broker that logged much after starting, e.g.
# loading many consumer groups, was waited for until the timeout). A process substitution's
# exit status is nobody's.
log_has_since() {
    local file="$1" offset="$2" text="$3"
    grep -qF -- "$text" < <(tail -c "+$((offset + 1))" "$file" 2>/dev/null)
}

# First line of a pid file, if that pid is still one of ours.
read_our_pid() {
    local file="$1" pid
    [ -f "$file" ] || return 1
    pid=$(head -n1 "$file" 2>/dev/null | tr -dc '0-9')
    pid_is_ours "$pid" || return 1
    printf '%s\n' "$pid"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Refuse to start on a port something else already holds: the failure would
# otherwise surface later as a confusing bind error deep in a log file.
require_free_port() {
    local name="$1" port="$2"
    if port_open "$port"; then
        die "$name: port 127.0.0.1:$port is already in use by a process that is not ours; pick another port (see ops/README.md)"
    fi
}

wait_pid_gone() {
    local pid="$1" secs="$2" i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

# SIGTERM, wait, then SIGKILL.
terminate_pid() {
    local name="$1" pid="$2" secs="$3"
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! wait_pid_gone "$pid" "$secs"; then
        warn "$name: pid $pid still running after ${secs}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || die "$name: pid $pid survived SIGKILL"
    fi
}

show_log_tail() {
    local file
    for file in "$@"; do
        [ -s "$file" ] || continue
        printf -- '----- last lines of %s -----\n' "$file" >&2
        tail -n 40 "$file" >&2
        printf -- '-----\n' >&2
    done
}

# apt may be busy (unattended upgrades, another install): wait for its locks
# instead of failing. `update` runs at most once per invocation, and only when
# something has to be installed.
APT_UPDATED=0
apt_install() {
    is_root || die "missing packages ($*) and not root: install them with: sudo apt-get install -y $*"
    local try
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt: updating package lists (needed to install: $*)"
        for try in $(seq 1 60); do
            if apt-get -q -o DPkg::Lock::Timeout=600 update >"$LOG_DIR/apt.log" 2>&1; then
                APT_UPDATED=1
                break
            fi
            if grep -q 'Could not get lock' "$LOG_DIR/apt.log"; then
                [ "$try" -eq 1 ] && log "apt: package lists are locked by another process, waiting"
                sleep 10
                continue
            fi
            show_log_tail "$LOG_DIR/apt.log"
            die "apt-get update failed"
        done
        [ "$APT_UPDATED" -eq 1 ] || die "apt: gave up waiting for the package list lock"
    fi
    log "apt: installing $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 \
        install --no-install-recommends "$@" >>"$LOG_DIR/apt.log" 2>&1 </dev/null; then
        # Often only a package's own service failed to start (no systemd in a
        # container): callers check for the binaries they need and decide.
        warn "apt-get install $* reported an error (full log: $LOG_DIR/apt.log)"
        return 1
    fi
}

# SIGKILL one component, for crash drills: kill_component NAME PID_FUNCTION
kill_component() {
    local name=$1 pid
    if ! pid=$("$2"); then
        log "$name: not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10 || die "$name: pid $pid survived SIGKILL"
    log "$name: killed with SIGKILL (pid $pid)"
}

# One status line: status_line NAME PORT PID_FUNCTION ANSWERS_FUNCTION; 1 when stopped.
status_line() {
    local name=$1 port=$2 pid label
    label=$(printf '%-9s' "$name:")
    if pid=$("$3"); then
        if "$4"; then
            log "$label running  127.0.0.1:$port  pid $pid"
        else
            log "$label running  127.0.0.1:$port  pid $pid  (not answering)"
        fi
        return 0
    fi
    log "$label stopped  127.0.0.1:$port"
    return 1
}
