# shellcheck shell=bash disable=SC2153  # ports and dirs are set in common.sh
# MariaDB for the legacy monolith's schema, with a row-based binlog for CDC.

MARIADB_DATA="$STACK_DIR/mariadb"
MARIADB_SOCKET="$STACK_DIR/mariadb.sock"
MARIADB_PID="$RUN_DIR/mariadb.pid"
MARIADB_LOG="$LOG_DIR/mariadb.log"  # server error log
MARIADB_OUT="$LOG_DIR/mariadb.out"  # stdout/stderr before the error log opens

# /usr/sbin is not on a normal user's PATH.
mariadb_server_bin() {
    local b
    for b in mariadbd mysqld /usr/sbin/mariadbd /usr/sbin/mysqld; do
        if command -v "$b" >/dev/null 2>&1; then
            command -v "$b"
            return 0
        fi
    done
    return 1
}

# --no-defaults everywhere: the system's /etc/mysql config (socket, datadir, log
# paths) belongs to the Debian service, not to this stack.
mariadb_client() {
    mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot "$@"
}

mariadb_admin() {
    mariadb-admin --no-defaults --socket="$MARIADB_SOCKET" -uroot "$@"
}

mariadb_pid() {
    read_our_pid "$MARIADB_PID"
}

mariadb_answers() {
    mariadb_admin --connect-timeout=2 ping >/dev/null 2>&1
}

mariadb_ensure_installed() {
    if mariadb_server_bin >/dev/null && command -v mariadb >/dev/null 2>&1 &&
        command -v mariadb-admin >/dev/null 2>&1; then
        return 0
    fi
    # The package's own service start may fail without systemd; we never use that
    # service, so only the presence of the binaries matters.
    apt_install mariadb-server mariadb-client || true
    mariadb_server_bin >/dev/null || { show_log_tail "$LOG_DIR/apt.log"; die "mariadb: mariadbd still missing after installing mariadb-server"; }
}

mariadb_init_datadir() {
    [ -d "$MARIADB_DATA/mysql" ] && return 0
    log "mariadb: initialising a new data dir in $MARIADB_DATA"
    mkdir -p "$MARIADB_DATA"
    # normal root authentication: root@localhost without a password (see
    # mariadb_ensure_user for the TCP accounts).
    if ! mariadb-install-db --no-defaults --datadir="$MARIADB_DATA" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db \
        >"$LOG_DIR/mariadb-install-db.log" 2>&1; then
        show_log_tail "$LOG_DIR/mariadb-install-db.log"
        rm -rf "$MARIADB_DATA"
        die "mariadb: mariadb-install-db failed"
    fi
}

mariadb_ensure_user() {
    local host account sql="CREATE DATABASE IF NOT EXISTS legacy;"
    # install-db also creates password-less root accounts for 127.0.0.1, ::1 and the
    # host name, i.e. reachable over TCP: keep root to the socket in the stack dir.
    while read -r account; do
        [ -n "$account" ] && sql+="
DROP USER IF EXISTS $account;"
    done < <(mariadb_client -N -B -e \
        "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'")
    for host in '%' '127.0.0.1' 'localhost'; do
        sql+="
CREATE USER IF NOT EXISTS 'omnistock'@'$host' IDENTIFIED BY 'omnistock';
ALTER USER 'omnistock'@'$host' IDENTIFIED BY 'omnistock';
GRANT ALL PRIVILEGES ON *.* TO 'omnistock'@'$host';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'omnistock'@'$host';"
    done
    mariadb_client -e "$sql"
}

mariadb_start() {
    local pid bin deadline
    if pid=$(mariadb_pid); then
        if mariadb_answers; then
            log "mariadb: already running on 127.0.0.1:$MARIADB_PORT (pid $pid)"
            return 0
        fi
        die "mariadb: process $pid is running but does not answer on $MARIADB_SOCKET; see $MARIADB_LOG or run: ops/stack.sh stop mariadb"
    fi
    mariadb_ensure_installed
    ensure_dirs
    require_free_port mariadb "$MARIADB_PORT"
    bin=$(mariadb_server_bin)
    mariadb_init_datadir
    # --user is required by mariadbd when it runs as root; as anyone else it is a no-op.
    # --skip-name-resolve: else TCP from 127.0.0.1 counts as root@localhost (no password).
    setsid nohup "$bin" --no-defaults --datadir="$MARIADB_DATA" --port="$MARIADB_PORT" \
        --bind-address=127.0.0.1 --socket="$MARIADB_SOCKET" --pid-file="$MARIADB_PID" \
        --user="$(id -un)" --log-error="$MARIADB_LOG" \
        --log-bin=mariadb-bin --binlog-format=ROW --binlog-row-image=FULL --server-id=1 \
        --binlog-expire-logs-seconds=604800 --max-connections=400 --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        </dev/null >>"$MARIADB_OUT" 2>&1 9>&- &
    pid=$!
    # mariadbd writes the same pid itself later; write it now so stop/kill work meanwhile.
    printf '%s\n' "$pid" >"$MARIADB_PID"
    deadline=$((SECONDS + START_TIMEOUT))
    until mariadb_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail "$MARIADB_OUT" "$MARIADB_LOG"
            die "mariadb: mariadbd exited during startup"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tail "$MARIADB_OUT" "$MARIADB_LOG"
            die "mariadb: did not answer within ${START_TIMEOUT}s (pid $pid is left running; ops/stack.sh stop mariadb)"
        fi
        sleep 0.3
    done
    mariadb_ensure_user || { show_log_tail "$MARIADB_LOG"; die "mariadb: could not create database legacy / user omnistock"; }
    log "mariadb: running on 127.0.0.1:$MARIADB_PORT (pid $pid), data in $MARIADB_DATA"
}

mariadb_stop() {
    local pid
    if ! pid=$(mariadb_pid); then
        rm -f "$MARIADB_PID"
        log "mariadb: not running"
        return 0
    fi
    if ! mariadb_admin shutdown >/dev/null 2>&1; then
        warn "mariadb: mariadb-admin shutdown failed, sending SIGTERM to $pid"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! wait_pid_gone "$pid" 60; then
        terminate_pid mariadb "$pid" 10
    fi
    rm -f "$MARIADB_PID"
    log "mariadb: stopped (was pid $pid)"
}

mariadb_kill() {
    kill_component mariadb mariadb_pid
}

mariadb_status() {
    status_line mariadb "$MARIADB_PORT" mariadb_pid mariadb_answers
}
