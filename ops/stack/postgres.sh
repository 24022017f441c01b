# shellcheck shell=bash disable=SC2153  # ports and dirs are set in common.sh
# PostgreSQL 15 from Debian's binaries, in a cluster of our own under the stack dir.

PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA="$STACK_DIR/postgres"
PG_SOCKET_DIR="$STACK_DIR/postgres-run"
PG_LOG="$LOG_DIR/postgres.log"

# postgres refuses to run as root, so as root we run it as the postgres OS user.
pg_owner() {
    if is_root; then echo postgres; else id -un; fi
}

pg_as_owner() {
    if is_root; then
        # cwd may be unreadable to postgres (e.g. /root); its tools warn about that.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"
}

pg_pid() {
    read_our_pid "$PG_DATA/postmaster.pid"
}

pg_answers() {
    "$PG_BIN/pg_isready" -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d postgres -t 2
}

pg_ensure_installed() {
    [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/psql" ] && return 0
    apt_install postgresql-15 || true
    [ -x "$PG_BIN/postgres" ] || { show_log_tail "$LOG_DIR/apt.log"; die "postgres: $PG_BIN/postgres still missing after installing postgresql-15"; }
}

# A repo in a mode-0700 folder (mktemp -d) keeps the postgres user out of its own
# data dir; give that user traverse-only permission on the blocking ancestors.
pg_grant_traverse() {
    is_root || return 0
    local d="" part parts how changed=()
    if command -v setfacl >/dev/null 2>&1; then
        how="setfacl -m u:postgres:x"
    else
        how="chmod o+x"
    fi
    IFS=/ read -ra parts <<<"$STACK_DIR"
    # Top down, fixing as we go: a blocked parent makes every child look blocked.
    for part in "${parts[@]}"; do
        [ -n "$part" ] || continue
        d="$d/$part"
        [ -d "$d" ] || break
        runuser -u postgres -- test -x "$d" 2>/dev/null && continue
        if [ "$how" = "chmod o+x" ]; then
            chmod o+x "$d"
        else
            setfacl -m u:postgres:x "$d"
        fi
        changed+=("$d")
    done
    [ "${#changed[@]}" -eq 0 ] || log "postgres: let the postgres user traverse to its data dir ($how) on: ${changed[*]}"
}

pg_init_cluster() {
    [ -f "$PG_DATA/PG_VERSION" ] && return 0
    log "postgres: initialising a new cluster in $PG_DATA"
    mkdir -p "$PG_DATA"
    chown "$(pg_owner):" "$PG_DATA"
    chmod 0700 "$PG_DATA"
    if ! pg_as_owner "$PG_BIN/initdb" -D "$PG_DATA" --username=postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$LOG_DIR/postgres-initdb.log" 2>&1; then
        show_log_tail "$LOG_DIR/postgres-initdb.log"
        die "postgres: initdb failed"
    fi
    # Our settings live in a file we rewrite on every start (ports may change).
    printf "\ninclude_if_exists = 'omnistock.conf'\n" >>"$PG_DATA/postgresql.conf"
    # Unix socket: trust (only this machine's users reach the stack dir).
    # TCP: passwords, as with the docker-compose stack, so URLs are really checked.
    cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
EOF
    chown "$(pg_owner):" "$PG_DATA/pg_hba.conf"
}

pg_write_config() {
    cat >"$PG_DATA/omnistock.conf" <<EOF
# Written by ops/stack.sh on every start; edits here are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 400
shared_buffers = 512MB
# Durability stays on: crash tests depend on it.
fsync = on
synchronous_commit = on
full_page_writes = on
# Logical decoding for change data capture.
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = 2GB
# Commit timestamps let the benchmarks measure commit-to-apply latency on one clock.
track_commit_timestamp = on
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
    chown "$(pg_owner):" "$PG_DATA/omnistock.conf"
}

pg_ensure_role() {
    pg_psql -d postgres >/dev/null <<'EOF'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'omnistock') THEN
    CREATE ROLE omnistock LOGIN SUPERUSER PASSWORD 'omnistock';
  ELSE
    ALTER ROLE omnistock LOGIN SUPERUSER PASSWORD 'omnistock';
  END IF;
END
$$;
SELECT 'CREATE DATABASE omnistock OWNER omnistock'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'omnistock')\gexec
EOF
}

postgres_start() {
    local pid
    if pid=$(pg_pid); then
        if pg_answers; then
            log "postgres: already running on 127.0.0.1:$PG_PORT (pid $pid)"
            return 0
        fi
        die "postgres: process $pid is running but does not answer on $PG_SOCKET_DIR port $PG_PORT; see $PG_LOG or run: ops/stack.sh stop postgres"
    fi
    pg_ensure_installed
    ensure_dirs
    require_free_port postgres "$PG_PORT"
    pg_grant_traverse
    mkdir -p "$PG_SOCKET_DIR"
    chown "$(pg_owner):" "$PG_SOCKET_DIR"
    touch "$PG_LOG"
    chown "$(pg_owner):" "$PG_LOG"
    pg_init_cluster
    pg_write_config
    if ! pg_as_owner "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" -s 9>&-; then
        show_log_tail "$PG_LOG"
        die "postgres: did not start within ${START_TIMEOUT}s"
    fi
    pg_answers || { show_log_tail "$PG_LOG"; die "postgres: started but does not answer"; }
    pg_ensure_role || { show_log_tail "$PG_LOG"; die "postgres: could not create role/database omnistock"; }
    log "postgres: running on 127.0.0.1:$PG_PORT (pid $(pg_pid)), data in $PG_DATA"
}

postgres_stop() {
    local pid
    if ! pid=$(pg_pid); then
        log "postgres: not running"
        return 0
    fi
    if ! pg_as_owner "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s; then
        warn "postgres: pg_ctl stop failed, sending SIGTERM to $pid"
        terminate_pid postgres "$pid" 30
    fi
    wait_pid_gone "$pid" 10 || die "postgres: pid $pid still running"
    log "postgres: stopped (was pid $pid)"
}

postgres_kill() {
    local pid children
    if ! pid=$(pg_pid); then
        log "postgres: not running"
        return 0
    fi
    # Backends would outlive a killed postmaster and block its restart: kill them too,
    # collected before the postmaster dies and they get reparented.
    children=$(ps -o pid= --ppid "$pid" | xargs)
    # shellcheck disable=SC2086 # word splitting of the pid list is intended
    kill -KILL "$pid" $children 2>/dev/null || true
    wait_pid_gone "$pid" 10 || die "postgres: pid $pid survived SIGKILL"
    log "postgres: killed with SIGKILL (postmaster $pid${children:+, children $children})"
}

postgres_status() {
    status_line postgres "$PG_PORT" pg_pid pg_answers
}
