#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Local omnistock stack without Docker: PostgreSQL 15, Kafka 4 (KRaft) and MariaDB,
# each run from this machine's binaries with its data under one stack dir.
# See ops/README.md.
set -euo pipefail
umask 022  # the postgres OS user must be able to traverse the dirs we create

# shellcheck source=stack/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/stack/common.sh"
# shellcheck source=stack/postgres.sh
. "$OPS_DIR/stack/postgres.sh"
# shellcheck source=stack/kafka.sh
. "$OPS_DIR/stack/kafka.sh"
# shellcheck source=stack/mariadb.sh
. "$OPS_DIR/stack/mariadb.sh"

COMPONENTS=(postgres mariadb kafka)

usage() {
    cat <<EOF
usage: ops/stack.sh COMMAND [COMPONENT]

  up                 install what is missing, start all components, wait until they answer
  down               stop all components this stack started (data is kept)
  status             one line per component; exit 0 if all run, 3 otherwise
  env                print the exports a shell or test needs: eval "\$(ops/stack.sh env)"
  start COMPONENT    start one component
  stop COMPONENT     stop one component gracefully
  kill COMPONENT     SIGKILL one component (crash drills)

COMPONENT: postgres | kafka | mariadb
stack dir: $STACK_DIR
EOF
}

component_arg() {
    case "${1:-}" in
        postgres | kafka | mariadb) printf '%s\n' "$1" ;;
        "") usage >&2; die "missing COMPONENT" ;;
        *) usage >&2; die "unknown component '$1'" ;;
    esac
}

cmd_up() {
    local c
    for c in "${COMPONENTS[@]}"; do
        "${c}_start"
    done
}

# A server process that mentions our stack dir but is not tracked by a pid file
# would be a leak; report it rather than kill what we cannot prove is ours.
report_leftovers() {
    local p pid comm found=0
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        { read -r comm <"$p/comm"; } 2>/dev/null || continue
        case "$comm" in postgres | java | mariadbd | mysqld) ;; *) continue ;; esac
        if pid_is_ours "$pid"; then
            warn "still running and using $STACK_DIR: pid $pid: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)"
            found=1
        fi
    done
    return "$found"
}

cmd_down() {
    local c i
    if ! pg_pid >/dev/null && ! kafka_pid >/dev/null && ! mariadb_pid >/dev/null; then
        log "nothing to stop: no component of the stack in $STACK_DIR is running"
        report_leftovers || die "some processes of this stack are still running"
        return 0
    fi
    # Reverse start order: nothing depends on anything yet, but keep it tidy.
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        c=${COMPONENTS[$i]}
        "${c}_stop"
    done
    report_leftovers || die "some processes of this stack are still running"
}

cmd_status() {
    local c rc=0
    log "stack dir: $STACK_DIR"
    for c in "${COMPONENTS[@]}"; do
        "${c}_status" || rc=3
    done
    return "$rc"
}

cmd_env() {
    cat <<EOF
export OMNISTOCK_DATABASE_URL=postgresql://omnistock:omnistock@127.0.0.1:$PG_PORT/omnistock
export OMNISTOCK_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export OMNISTOCK_LEGACY_MYSQL_URL=mysql://omnistock:omnistock@127.0.0.1:$MARIADB_PORT/legacy
EOF
}

main() {
    local cmd="${1:-}" c
    case "$cmd" in
        up) check_stack_dir; take_lock; cmd_up ;;
        down) check_stack_dir; take_lock; cmd_down ;;
        status) cmd_status ;;
        env) cmd_env ;;
        start | stop | kill)
            c=$(component_arg "${2:-}")
            check_stack_dir
            take_lock
            "${c}_${cmd}"
            ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
