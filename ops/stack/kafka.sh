# shellcheck shell=bash disable=SC2153  # ports and dirs are set in common.sh
# Apache Kafka 4.x, one KRaft node acting as broker and controller, run from the
# jars that ops/kafka/pom.xml resolves.

KAFKA_POM="$OPS_DIR/kafka/pom.xml"
KAFKA_LOG4J="$OPS_DIR/kafka/log4j2.xml"
KAFKA_HOME="$STACK_DIR/kafka"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_PROPS="$KAFKA_HOME/server.properties"
KAFKA_PID="$RUN_DIR/kafka.pid"
KAFKA_LOG="$LOG_DIR/kafka.log"  # written by log4j2 (ops/kafka/log4j2.xml)
KAFKA_OUT="$LOG_DIR/kafka.out"  # JVM stdout/stderr
KAFKA_STAMP="$KAFKA_LIBS/.pom.sha256"
# A second listener for clients that reach the broker through a TCP proxy (the fault drills
# put Toxiproxy on KAFKA_PROXY_PORT, forwarding to KAFKA_PROXIED_PORT). It advertises the
# proxy's address, so that after bootstrap those clients keep going through the proxy rather
# than to the address the first listener advertises. Without a proxy nothing connects to it.
KAFKA_PROXIED_PORT="${OMNISTOCK_KAFKA_PROXIED_PORT:-19094}"
KAFKA_PROXY_PORT="${OMNISTOCK_KAFKA_PROXY_PORT:-19095}"

# Short-lived JVMs (format, probe): no need for the broker's heap or JIT tiers.
kafka_tool() {
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" "$@"
}

kafka_pid() {
    read_our_pid "$KAFKA_PID"
}

kafka_ensure_java() {
    command -v java >/dev/null 2>&1 && return 0
    apt_install openjdk-17-jre-headless || true
    command -v java >/dev/null 2>&1 || die "kafka: java not found and openjdk-17-jre-headless did not install"
}

# The jar cache is keyed on the pom's checksum, so changing the version refetches.
kafka_fetch_libs() {
    local want tmp
    want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    if [ -f "$KAFKA_STAMP" ] && [ "$(cat "$KAFKA_STAMP")" = "$want" ]; then
        return 0
    fi
    if ! command -v mvn >/dev/null 2>&1; then
        apt_install maven || true
        command -v mvn >/dev/null 2>&1 || die "kafka: mvn not found and maven did not install"
    fi
    log "kafka: fetching broker jars with maven into $KAFKA_LIBS"
    mkdir -p "$(dirname "$KAFKA_LIBS")"
    tmp="$KAFKA_LIBS.tmp.$$"
    rm -rf "$tmp"
    if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$tmp" \
        >"$LOG_DIR/kafka-mvn.log" 2>&1; then
        log "kafka: maven failed, retrying once"
        sleep 5
        rm -rf "$tmp"
        if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$tmp" \
            >"$LOG_DIR/kafka-mvn.log" 2>&1; then
            rm -rf "$tmp"
            show_log_tail "$LOG_DIR/kafka-mvn.log"
            die "kafka: could not fetch the broker jars (see $LOG_DIR/kafka-mvn.log)"
        fi
    fi
    printf '%s\n' "$want" >"$tmp/.pom.sha256"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    log "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS"
}

kafka_write_config() {
    mkdir -p "$KAFKA_DATA"
    cat >"$KAFKA_PROPS" <<EOF
# Written by ops/stack.sh on every start; edits here are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,PROXIED://127.0.0.1:$KAFKA_PROXIED_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,PROXIED://127.0.0.1:$KAFKA_PROXY_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# One partition each for the internal topics of a one-broker stack: created and loaded at once,
# where the default 50 kept a fresh broker's first idempotent producers waiting on
# "coordinator load in progress" for tens of seconds.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
EOF
}

# Static quorum (controller.quorum.voters), so the storage is formatted with a
# fixed cluster id and without --standalone. Only ever done once per data dir.
kafka_format_storage() {
    [ -f "$KAFKA_DATA/meta.properties" ] && return 0
    local cluster_id
    if [ ! -s "$KAFKA_HOME/cluster.id" ]; then
        kafka_tool kafka.tools.StorageTool random-uuid >"$KAFKA_HOME/cluster.id"
    fi
    cluster_id=$(cat "$KAFKA_HOME/cluster.id")
    log "kafka: formatting storage in $KAFKA_DATA (cluster id $cluster_id)"
    if ! kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" \
        >"$LOG_DIR/kafka-format.log" 2>&1; then
        show_log_tail "$LOG_DIR/kafka-format.log"
        die "kafka: formatting storage failed"
    fi
}

# Ready = the log says the server started since our launch and the broker answers
# an ApiVersions request; an open port alone is not enough.
kafka_wait_ready() {
    local pid="$1" log_offset="$2" deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail "$KAFKA_OUT" "$KAFKA_LOG"
            die "kafka: the broker exited during startup"
        fi
        if log_has_since "$KAFKA_LOG" "$log_offset" 'Kafka Server started' &&
            timeout 20 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" \
                org.apache.kafka.tools.BrokerApiVersionsCommand \
                --bootstrap-server "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    show_log_tail "$KAFKA_OUT" "$KAFKA_LOG"
    die "kafka: the broker did not answer on 127.0.0.1:$KAFKA_PORT within ${START_TIMEOUT}s (pid $pid is left running; ops/stack.sh stop kafka)"
}

kafka_start() {
    local pid log_offset
    if pid=$(kafka_pid); then
        if port_open "$KAFKA_PORT"; then
            log "kafka: already running on 127.0.0.1:$KAFKA_PORT (pid $pid)"
            return 0
        fi
        log "kafka: pid $pid is starting, waiting for it"
        kafka_wait_ready "$pid" 0
        log "kafka: running on 127.0.0.1:$KAFKA_PORT (pid $pid)"
        return 0
    fi
    ensure_dirs
    require_free_port kafka "$KAFKA_PORT"
    require_free_port "kafka controller" "$KAFKA_CONTROLLER_PORT"
    require_free_port "kafka proxied listener" "$KAFKA_PROXIED_PORT"
    kafka_ensure_java
    kafka_fetch_libs
    kafka_write_config
    kafka_format_storage
    log_offset=$(stat -c %s "$KAFKA_LOG" 2>/dev/null || echo 0)
    # setsid: a Ctrl-C in the calling terminal must not reach the broker.
    # The flags mirror Kafka's own kafka-server-start.sh defaults.
    setsid nohup java -Xms512m -Xmx768m -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true -Dkafka.logs.dir="$LOG_DIR" \
        -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
        </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$KAFKA_PID"
    kafka_wait_ready "$pid" "$log_offset"
    log "kafka: running on 127.0.0.1:$KAFKA_PORT (pid $pid), data in $KAFKA_DATA"
}

kafka_stop() {
    local pid
    if ! pid=$(kafka_pid); then
        rm -f "$KAFKA_PID"
        log "kafka: not running"
        return 0
    fi
    # Controlled shutdown on SIGTERM; a single node normally needs a few seconds.
    terminate_pid kafka "$pid" 30
    rm -f "$KAFKA_PID"
    log "kafka: stopped (was pid $pid)"
}

kafka_kill() {
    kill_component kafka kafka_pid
}

kafka_answers() {
    port_open "$KAFKA_PORT"
}

kafka_status() {
    status_line kafka "$KAFKA_PORT" kafka_pid kafka_answers
}
