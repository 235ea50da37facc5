#!/usr/bin/env bash
# A real, single-node Apache Kafka (KRaft, combined broker+controller) on
# 127.0.0.1 for development, tests and CI. No Docker: the broker jars come
# from Maven Central (see pom.xml next to this script) into a cache outside the
# repository, and the broker runs as a plain background JVM.
#
#   deploy/kafka/kafka.sh fetch|start|stop|status|lag GROUP|reset|help
#
# Run `kafka.sh help` for the settings (environment variables).
set -euo pipefail

readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly POM_TEMPLATE="$SCRIPT_DIR/pom.xml"

VERSION="${STRATA_KAFKA_VERSION:-4.1.2}"
PORT="${STRATA_KAFKA_PORT:-9092}"
CACHE="${STRATA_KAFKA_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/strata/kafka-$VERSION}"
HEAP="${STRATA_KAFKA_HEAP:-512m}"
PARTITIONS="${STRATA_PARTITIONS:-8}"
LOG_LEVEL="${STRATA_KAFKA_LOG_LEVEL:-INFO}"
START_TIMEOUT="${STRATA_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${STRATA_KAFKA_STOP_TIMEOUT:-30}"
SECURITY="${STRATA_KAFKA_SECURITY:-plaintext}"
readonly HOST=127.0.0.1

usage() {
  cat <<EOF
Usage: $(basename "$0") COMMAND

Local single-node Apache Kafka $VERSION (KRaft) on $HOST, no Docker.

Commands:
  fetch        download the broker jars from Maven Central (once; needs mvn + java)
  start        fetch if needed, format storage once, start in the background and
               wait until the broker answers requests
  stop         stop the broker (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s)
  status       exit 0 when running, 3 when stopped, 1 when the process is alive
               but the port does not answer
  lag GROUP    describe a consumer group (Kafka's ConsumerGroupCommand); extra
               arguments are passed on
  reset        stop and delete the data directory
  help         this text

Settings (environment):
  STRATA_KAFKA_VERSION          Kafka version               [$VERSION]
  STRATA_KAFKA_CACHE            jar cache                   [$CACHE]
  STRATA_KAFKA_PORT             client port (loopback)      [$PORT]
  STRATA_KAFKA_CONTROLLER_PORT  KRaft controller port       [${STRATA_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}]
  STRATA_KAFKA_DIR              config, data/, kafka.pid, kafka.log
                                [${STRATA_KAFKA_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/strata/kafka-$PORT}]
  STRATA_KAFKA_HEAP             broker -Xmx                 [$HEAP]
  STRATA_PARTITIONS             num.partitions              [$PARTITIONS]
  STRATA_KAFKA_LOG_LEVEL        broker root log level       [$LOG_LEVEL]
  STRATA_KAFKA_START_TIMEOUT    seconds to wait for ready   [$START_TIMEOUT]
  STRATA_KAFKA_STOP_TIMEOUT     seconds before SIGKILL      [$STOP_TIMEOUT]
  STRATA_KAFKA_SECURITY         plaintext, or sasl_ssl: TLS with a CA and broker certificate
                                generated into STRATA_KAFKA_DIR/tls (clients verify with
                                tls/ca.pem) and SCRAM-SHA-512 for the user
                                STRATA_KAFKA_SASL_USERNAME / STRATA_KAFKA_SASL_PASSWORD,
                                created when the storage is formatted   [$SECURITY]
  STRATA_KAFKA_JAVA_OPTS        extra broker JVM options
  STRATA_KAFKA_MVN_ARGS         extra mvn arguments for fetch (e.g. -o, -s settings.xml)
  JAVA_HOME                     JDK/JRE 17+ to use (else java on PATH)
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { warn "$*"; exit 1; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

valid_port() { is_uint "$1" && (( 10#$1 >= 1 && 10#$1 <= 65535 )); }

valid_port "$PORT" || die "STRATA_KAFKA_PORT must be a port number, got '$PORT'"
PORT=$((10#$PORT))
CPORT="${STRATA_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
valid_port "$CPORT" || die "STRATA_KAFKA_CONTROLLER_PORT must be a port number, got '$CPORT'"
CPORT=$((10#$CPORT))
(( PORT != CPORT )) || die "client port and controller port are both $PORT"
is_uint "$PARTITIONS" && (( 10#$PARTITIONS >= 1 )) || die "STRATA_PARTITIONS must be a positive integer, got '$PARTITIONS'"
is_uint "$START_TIMEOUT" || die "STRATA_KAFKA_START_TIMEOUT must be whole seconds, got '$START_TIMEOUT'"
is_uint "$STOP_TIMEOUT" || die "STRATA_KAFKA_STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'"
PARTITIONS=$((10#$PARTITIONS)) START_TIMEOUT=$((10#$START_TIMEOUT)) STOP_TIMEOUT=$((10#$STOP_TIMEOUT))
[[ "$HEAP" =~ ^[0-9]+[kKmMgG]?$ ]] || die "STRATA_KAFKA_HEAP must look like 512m or 1g, got '$HEAP'"
case "$SECURITY" in
  plaintext) ;;
  sasl_ssl)
    [[ -n "${STRATA_KAFKA_SASL_USERNAME:-}" && -n "${STRATA_KAFKA_SASL_PASSWORD:-}" ]] ||
      die "STRATA_KAFKA_SECURITY=sasl_ssl needs STRATA_KAFKA_SASL_USERNAME and STRATA_KAFKA_SASL_PASSWORD (the SCRAM user to create)"
    [[ "$STRATA_KAFKA_SASL_USERNAME$STRATA_KAFKA_SASL_PASSWORD" =~ ^[A-Za-z0-9._~@%+=:-]+$ ]] ||
      die "STRATA_KAFKA_SASL_USERNAME and STRATA_KAFKA_SASL_PASSWORD may hold letters, digits and ._~@%+=:- only here"
    ;;
  *) die "STRATA_KAFKA_SECURITY must be plaintext or sasl_ssl, got '$SECURITY'" ;;
esac

DIR="${STRATA_KAFKA_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/strata/kafka-$PORT}"
readonly LIBS="$CACHE/libs"
readonly MARKER="$CACHE/.fetched"
readonly TOOLS_LOG4J="$CACHE/tools-log4j2.properties"
readonly DATA="$DIR/data"
readonly CONFIG="$DIR/server.properties"
readonly BROKER_LOG4J="$DIR/log4j2.properties"
readonly PIDFILE="$DIR/kafka.pid"
readonly LOG="$DIR/kafka.log"
readonly BOOTSTRAP="$HOST:$PORT"
readonly TLS="$DIR/tls"

if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

# Short-lived tool JVMs (format, readiness probe, consumer groups): fast start,
# small heap, log4j warnings to stderr only, nothing on stdout but the tool's own output.
TOOL_JVM=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*")
tool_java() { "$JAVA" "${TOOL_JVM[@]}" "$@"; }

now() {
  if [[ -n "${EPOCHREALTIME:-}" ]]; then printf '%s' "${EPOCHREALTIME/,/.}"; else date +%s; fi
}
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- locking
# Serialise concurrent fetches (fd 8) and start/stop on one data dir (fd 9)
# when flock(1) is available. Both fds are closed for the broker JVM, so it
# never inherits a lock.
lock() { # FD FILE WHAT
  local fd="$1" file="$2" what="$3"
  command -v flock >/dev/null 2>&1 || return 0
  mkdir -p "$(dirname "$file")"
  eval "exec $fd>\"\$file\""
  if ! flock -n "$fd"; then
    say "Waiting for another $what ($file) ..."
    flock -w 900 "$fd" || die "timed out waiting for the lock $file"
  fi
}

# ---------------------------------------------------------------- java / fetch
check_java() {
  if ! command -v "$JAVA" >/dev/null 2>&1; then
    die "java not found: install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless, brew install openjdk@17) or set JAVA_HOME"
  fi
  local line major
  line="$("$JAVA" -version 2>&1 | head -n 1)" || true
  major="$(printf '%s' "$line" | sed -n 's/.*version "\([0-9][0-9]*\).*/\1/p')"
  [[ "$major" == 1 ]] && major="$(printf '%s' "$line" | sed -n 's/.*version "1\.\([0-9][0-9]*\).*/\1/p')"
  if [[ -z "$major" ]]; then
    warn "could not tell the Java version from: $line (need 17+); trying anyway"
  elif (( major < 17 )); then
    die "Kafka $VERSION needs Java 17 or newer; $JAVA is: $line"
  fi
}

pom_sum() { cksum <"$POM_TEMPLATE" | awk '{ print $1 "-" $2 }'; }

expected_marker() { printf 'kafka=%s pom=%s\n' "$VERSION" "$(pom_sum)"; }

fetched() {
  [[ -f "$MARKER" && -f "$LIBS/kafka_2.13-$VERSION.jar" && -f "$LIBS/kafka-tools-$VERSION.jar" ]] &&
    [[ "$(cat "$MARKER")" == "$(expected_marker)" ]]
}

write_tools_log4j() {
  [[ -f "$TOOLS_LOG4J" ]] && return 0
  cat >"$TOOLS_LOG4J.tmp" <<'EOF'
# Log4j 2 config for Kafka's command-line tools run by kafka.sh: warnings to stderr.
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
  mv -f "$TOOLS_LOG4J.tmp" "$TOOLS_LOG4J"
}

count_jars() { local n=0 f; for f in "$LIBS"/*.jar; do [[ -e "$f" ]] && n=$((n + 1)); done; printf '%s' "$n"; }

cmd_fetch() { # [quiet-if-present]
  local quiet="${1:-}"
  if fetched; then
    write_tools_log4j
    [[ -n "$quiet" ]] || say "Kafka $VERSION jars already in $LIBS ($(count_jars) jars); nothing to fetch"
    return 0
  fi
  [[ -f "$POM_TEMPLATE" ]] || die "missing $POM_TEMPLATE"
  command -v mvn >/dev/null 2>&1 ||
    die "mvn (Apache Maven) not found: it is needed once to download Kafka $VERSION from Maven Central into $CACHE (apt-get install maven / brew install maven)"
  check_java
  lock 8 "$CACHE.lock" "Kafka $VERSION fetch"
  if fetched; then # someone else fetched while we waited
    write_tools_log4j
    say "Kafka $VERSION jars already in $LIBS ($(count_jars) jars)"
    return 0
  fi

  local t0 tmp="$CACHE/libs.tmp" mvnlog="$CACHE/mvn.log" extra=()
  t0="$(now)"
  if [[ -n "${STRATA_KAFKA_MVN_ARGS:-}" ]]; then read -r -a extra <<<"$STRATA_KAFKA_MVN_ARGS"; fi
  say "Fetching Apache Kafka $VERSION from Maven Central into $CACHE"
  say "  mvn dependency:copy-dependencies -Dkafka.version=$VERSION (log: $mvnlog) ..."
  mkdir -p "$CACHE"
  rm -rf "$tmp" "$MARKER"
  cp "$POM_TEMPLATE" "$CACHE/pom.xml"
  if ! (cd "$CACHE" && mvn -B -q -f "$CACHE/pom.xml" ${extra[@]+"${extra[@]}"} \
        dependency:copy-dependencies \
        -Dkafka.version="$VERSION" -DincludeScope=runtime -DoutputDirectory="$tmp") >"$mvnlog" 2>&1; then
    warn "mvn failed to fetch Kafka $VERSION; last lines of $mvnlog:"
    tail -n 30 "$mvnlog" >&2 || true
    rm -rf "$tmp"
    exit 1
  fi
  local jar
  for jar in "kafka_2.13-$VERSION.jar" "kafka-tools-$VERSION.jar" "kafka-clients-$VERSION.jar"; do
    [[ -f "$tmp/$jar" ]] || { rm -rf "$tmp"; die "mvn succeeded but $jar is missing (see $mvnlog)"; }
  done
  rm -rf "$LIBS" "$CACHE/target"
  mv "$tmp" "$LIBS"
  write_tools_log4j
  expected_marker >"$MARKER"
  say "Fetched $(count_jars) jars in $(since "$t0")s"
}

# ---------------------------------------------------------------- process state
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# true when PID is alive and is the broker started from this data dir
is_our_broker() {
  local pid="$1" args
  is_uint "$pid" && kill -0 "$pid" 2>/dev/null || return 1
  args="$(ps -ww -p "$pid" -o args= 2>/dev/null)" || return 1
  [[ "$args" == *"kafka.Kafka $CONFIG"* ]]
}

# prints the broker's pid when it is alive; cleans up a stale pid file
running_pid() {
  local pid=""
  if [[ -f "$PIDFILE" ]]; then
    pid="$(tr -dc '0-9' <"$PIDFILE" || true)"
    if [[ -n "$pid" ]] && is_our_broker "$pid"; then
      printf '%s' "$pid"
      return 0
    fi
    rm -f "$PIDFILE"
  fi
  # no (valid) pid file: look for an orphan started from this dir
  pid="$(ps -ww -eo pid=,args= 2>/dev/null |
    awk -v needle="kafka.Kafka $CONFIG" 'index($0, needle) && !/awk/ { print $1; exit }')" || true
  if [[ -n "$pid" ]] && is_our_broker "$pid"; then
    printf '%s\n' "$pid" >"$PIDFILE"
    printf '%s' "$pid"
    return 0
  fi
  return 1
}

# A real Kafka request without a JVM: ApiVersions v0 (api key 18, correlation
# id 7, null client id) over bash's /dev/tcp; the broker only answers once it
# processes requests. Needs timeout(1) and od(1), else api_ready uses Kafka's tool.
raw_probe_available() { command -v timeout >/dev/null 2>&1 && command -v od >/dev/null 2>&1; }

raw_api_versions() {
  local reply
  reply="$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\xff\xff" >&3
    od -An -tx1 -N 8 <&3' "$HOST" "$PORT" 2>/dev/null | tr -d ' \n')" || return 1
  [[ "${reply:8:8}" == 00000007 ]] # response header: size, then our correlation id
}

# the broker serves requests (not just a bound port); a TLS listener cannot take the raw
# probe, so there the broker's own "started" line counts
api_ready() {
  if [[ "$SECURITY" == sasl_ssl ]]; then
    port_open "$PORT" && grep -q 'Kafka Server started' "$LOG" 2>/dev/null
  elif raw_probe_available; then
    raw_api_versions
  else
    tool_java org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" >/dev/null 2>&1
  fi
}

# cheap liveness for status / already-running: a real request when possible
answering() {
  if [[ "$SECURITY" != sasl_ssl ]] && raw_probe_available; then raw_api_versions; else port_open "$PORT"; fi
}

log_tail() {
  if [[ -f "$LOG" ]]; then
    warn "last lines of $LOG:"
    tail -n "${1:-40}" "$LOG" >&2 || true
  fi
}

# ---------------------------------------------------------------- config
write_config() {
  mkdir -p "$DIR" "$DATA"
  cat >"$CONFIG.tmp" <<EOF
# Written by deploy/kafka/kafka.sh on every start; edits are overwritten.
# Single-node KRaft: this process is both broker and controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CPORT
controller.listener.names=CONTROLLER
$(listener_config)

log.dirs=$DATA

# topics
num.partitions=$PARTITIONS
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
# keep everything: the events topic is the training log
log.retention.ms=-1
log.retention.bytes=-1

# internal topics on a single node (fewer partitions: faster first group join)
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# consumer groups: no waiting for more members on a dev box
group.initial.rebalance.delay.ms=0

# small-heap friendly
log.cleaner.dedupe.buffer.size=33554432
EOF
  mv -f "$CONFIG.tmp" "$CONFIG"

  cat >"$BROKER_LOG4J.tmp" <<EOF
# Written by deploy/kafka/kafka.sh. Broker log -> stdout -> $LOG
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $LOG_LEVEL
rootLogger.appenderRef.out.ref = STDOUT
# the full config dump (three times per start; the config is in server.properties)
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
# per-partition and per-request chatter
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel\$
logger.channel.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.cluster.name = kafka.cluster
logger.cluster.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
logger.fetcher.name = kafka.server.ReplicaFetcherManager
logger.fetcher.level = WARN
logger.alterdirs.name = kafka.server.ReplicaAlterLogDirsManager
logger.alterdirs.level = WARN
EOF
  mv -f "$BROKER_LOG4J.tmp" "$BROKER_LOG4J"
}

listener_config() {
  if [[ "$SECURITY" == plaintext ]]; then
    cat <<EOF
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return
  fi
  local store_pw admin_pw
  store_pw="$(cat "$TLS/store.password")" admin_pw="$(cat "$TLS/admin.password")"
  cat <<EOF
# SASL_SSL for clients and the broker itself (SCRAM-SHA-512 over TLS); the controller stays on loopback plaintext
listeners=SASL_SSL://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=SASL_SSL://$HOST:$PORT
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS/truststore.p12
ssl.truststore.password=$store_pw
EOF
}

# A CA and a broker certificate for 127.0.0.1 / localhost (keytool, from the JDK), once per data dir:
# tls/ca.pem is what clients verify the broker with.
make_certs() {
  [[ "$SECURITY" == sasl_ssl && ! -f "$TLS/truststore.p12" ]] || return 0
  local keytool="keytool" pw
  [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/keytool" ]] && keytool="$JAVA_HOME/bin/keytool"
  command -v "$keytool" >/dev/null 2>&1 || die "keytool (part of the JDK) not found: needed to make certificates for sasl_ssl"
  mkdir -p "$DIR"
  rm -rf "$TLS.tmp" && mkdir -p "$TLS.tmp" && chmod 700 "$TLS.tmp"
  pw="$(random_cluster_id | tr -dc 'A-Za-z0-9')"
  printf '%s' "$pw" >"$TLS.tmp/store.password"
  random_cluster_id | tr -dc 'A-Za-z0-9' >"$TLS.tmp/admin.password"
  local kt=("$keytool" -noprompt -storetype PKCS12 -storepass "$pw")
  local san="SAN=IP:$HOST,DNS:localhost"
  {
    "${kt[@]}" -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=strata local CA" \
      -ext bc:c -keystore "$TLS.tmp/ca.p12"
    "${kt[@]}" -exportcert -rfc -alias ca -keystore "$TLS.tmp/ca.p12" -file "$TLS.tmp/ca.pem"
    "${kt[@]}" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=localhost" \
      -ext "$san" -keystore "$TLS.tmp/broker.p12"
    "${kt[@]}" -certreq -alias broker -keystore "$TLS.tmp/broker.p12" -file "$TLS.tmp/broker.csr"
    "${kt[@]}" -gencert -rfc -alias ca -keystore "$TLS.tmp/ca.p12" -infile "$TLS.tmp/broker.csr" \
      -outfile "$TLS.tmp/broker.pem" -ext "$san" -validity 3650
    "${kt[@]}" -importcert -alias ca -file "$TLS.tmp/ca.pem" -keystore "$TLS.tmp/broker.p12"
    "${kt[@]}" -importcert -alias broker -file "$TLS.tmp/broker.pem" -keystore "$TLS.tmp/broker.p12"
    "${kt[@]}" -importcert -alias ca -file "$TLS.tmp/ca.pem" -keystore "$TLS.tmp/truststore.p12"
  } >"$DIR/keytool.log" 2>&1 || { warn "keytool failed; see $DIR/keytool.log"; tail -n 20 "$DIR/keytool.log" >&2; exit 1; }
  cat >"$TLS.tmp/client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$TLS.tmp/admin.password")";
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS/truststore.p12
ssl.truststore.password=$pw
EOF
  rm -f "$TLS.tmp/broker.csr" "$TLS.tmp/broker.pem"
  rm -rf "$TLS" && mv "$TLS.tmp" "$TLS"
  say "Made a CA and a broker certificate in $TLS (clients: STRATA_KAFKA_SSL_CAFILE=$TLS/ca.pem)"
}

random_cluster_id() {
  # a Kafka Uuid is 16 random bytes, base64url without padding (22 chars)
  local id=""
  if command -v base64 >/dev/null 2>&1 && [[ -r /dev/urandom ]]; then
    while [[ -z "$id" || "$id" == -* ]]; do
      id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-22)"
    done
  else
    id="$(tool_java kafka.tools.StorageTool random-uuid)"
  fi
  printf '%s' "$id"
}

format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local id out
  id="$(random_cluster_id)"
  say "Formatting new storage in $DATA (cluster id $id)"
  local scram=()
  if [[ "$SECURITY" == sasl_ssl ]]; then
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$TLS/admin.password")]"
      --add-scram "SCRAM-SHA-512=[name=$STRATA_KAFKA_SASL_USERNAME,password=$STRATA_KAFKA_SASL_PASSWORD]")
  fi
  if ! out="$(tool_java kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$CONFIG" ${scram[@]+"${scram[@]}"} 2>&1)"; then
    warn "formatting $DATA failed:"
    printf '%s\n' "$out" >&2
    exit 1
  fi
  printf '%s\n' "$out" >>"$DIR/format.log"
}

# ---------------------------------------------------------------- start/stop
terminate() { # PID SECONDS: SIGTERM, wait, then SIGKILL
  local pid="$1" secs="$2" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  warn "Kafka (pid $pid) still running after ${secs}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

wait_ready() { # PID T0
  local pid="$1" t0="$2" waited last_probe=-100 elapsed
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      warn "Kafka (pid $pid) exited during startup"
      log_tail 40
      exit 1
    fi
    waited="$(since "$t0")"
    elapsed="${waited%.*}"
    if port_open "$PORT"; then
      # the client port is bound before the broker serves requests; ask it for real
      # (with Kafka's own tool, a JVM start, at most every 2 s)
      if raw_probe_available || (( elapsed - last_probe >= 2 )) || grep -q 'Kafka Server started' "$LOG" 2>/dev/null; then
        last_probe="$elapsed"
        if api_ready; then
          say "Kafka $VERSION ready on $BOOTSTRAP (pid $pid, data $DATA) in $(since "$t0")s"
          return 0
        fi
        waited="$(since "$t0")"
        elapsed="${waited%.*}"
      fi
    fi
    if (( elapsed >= START_TIMEOUT )); then
      warn "Kafka (pid $pid) not ready on $BOOTSTRAP after ${START_TIMEOUT}s; stopping it"
      log_tail 40
      terminate "$pid" 10
      rm -f "$PIDFILE"
      exit 1
    fi
    sleep 0.3
  done
}

cmd_start() {
  local t0 pid
  check_java
  cmd_fetch quiet
  lock 9 "$DIR/.lock" "start/stop in $DIR"
  t0="$(now)" # the start timeout counts from here, after any fetch

  if pid="$(running_pid)"; then
    if answering; then
      say "Kafka already running on $BOOTSTRAP (pid $pid)"
      return 0
    fi
    say "Kafka process found (pid $pid) but $BOOTSTRAP is not answering yet; waiting ..."
    wait_ready "$pid" "$t0"
    return 0
  fi

  local p
  for p in "$PORT" "$CPORT"; do
    if port_open "$p"; then
      die "$HOST:$p is already in use by another process (not a broker started from $DIR); stop it or set STRATA_KAFKA_PORT / STRATA_KAFKA_CONTROLLER_PORT"
    fi
  done

  make_certs
  write_config
  format_storage

  local jvm=(-Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$BROKER_LOG4J" -Dkafka.logs.dir="$DIR")
  local extra=()
  if [[ -n "${STRATA_KAFKA_JAVA_OPTS:-}" ]]; then read -r -a extra <<<"$STRATA_KAFKA_JAVA_OPTS"; fi

  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  : >"$LOG"
  rm -f "$PIDFILE"
  say "Starting Kafka $VERSION on $BOOTSTRAP (controller $HOST:$CPORT, heap $HEAP, log $LOG) ..."

  # New session (setsid) so Ctrl-C in the calling terminal does not reach the
  # broker; the wrapper shell writes its own pid and then execs java, so the
  # pid file holds the JVM's pid whatever setsid does.
  local detach=()
  command -v setsid >/dev/null 2>&1 && detach=(setsid)
  nohup ${detach[@]+"${detach[@]}"} bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$JAVA" "${jvm[@]}" ${extra[@]+"${extra[@]}"} -cp "$LIBS/*" kafka.Kafka "$CONFIG" \
    </dev/null >>"$LOG" 2>&1 8>&- 9>&- &

  local i
  for i in $(seq 1 50); do
    [[ -s "$PIDFILE" ]] && break
    sleep 0.1
  done
  pid="$(tr -dc '0-9' <"$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || { log_tail 20; die "Kafka did not start (no pid written to $PIDFILE)"; }
  wait_ready "$pid" "$t0"
}

cmd_stop() {
  local pid t0
  if [[ ! -d "$DIR" ]]; then # never started from this dir; do not create it
    say "Kafka is not running ($BOOTSTRAP, dir $DIR)"
    return 0
  fi
  lock 9 "$DIR/.lock" "start/stop in $DIR"
  if ! pid="$(running_pid)"; then
    say "Kafka is not running ($BOOTSTRAP, dir $DIR)"
    return 0
  fi
  t0="$(now)"
  say "Stopping Kafka (pid $pid) ..."
  terminate "$pid" "$STOP_TIMEOUT"
  rm -f "$PIDFILE"
  say "Kafka stopped (pid $pid) in $(since "$t0")s"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if answering; then
      say "Kafka is running on $BOOTSTRAP (pid $pid, dir $DIR)"
      return 0
    fi
    say "Kafka process is alive (pid $pid, dir $DIR) but $BOOTSTRAP is not answering (starting up? see $LOG)"
    return 1
  fi
  if port_open "$PORT"; then
    say "Kafka is stopped ($BOOTSTRAP, dir $DIR) — but another process is listening on $BOOTSTRAP"
  else
    say "Kafka is stopped ($BOOTSTRAP, dir $DIR)"
  fi
  return 3
}

cmd_lag() {
  [[ $# -ge 1 && -n "$1" ]] || { warn "usage: kafka.sh lag GROUP [ConsumerGroupCommand options]"; exit 2; }
  local group="$1"
  shift
  check_java
  cmd_fetch quiet
  port_open "$PORT" || { warn "nothing is listening on $BOOTSTRAP (start it with: kafka.sh start)"; exit 3; }
  exec 8>&- 9>&-
  local secure=()
  [[ "$SECURITY" == sasl_ssl ]] && secure=(--command-config "$TLS/client.properties")
  local out rc=0
  out=$(tool_java org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$BOOTSTRAP" ${secure[@]+"${secure[@]}"} --describe --group "$group" "$@" 2>&1) || rc=$?
  # The tool reports a failure as "Error: ..." with a Java stack trace, and exits 0.
  if grep -q "GroupIdNotFoundException" <<<"$out"; then
    die "no consumer group '$group' on $BOOTSTRAP (no worker with STRATA_APP_ID=$group has committed offsets there)"
  fi
  if grep -q "^Error: " <<<"$out"; then
    grep "^Error: " <<<"$out" | head -3 >&2
    exit 1
  fi
  printf '%s\n' "$out"
  return "$rc"
}

cmd_reset() {
  cmd_stop
  if [[ -d "$DATA" ]]; then
    case "$DATA" in
      / | "" | "$HOME" | "$HOME/") die "refusing to delete '$DATA'" ;;
    esac
    rm -rf "$DATA"
    say "Deleted $DATA"
  else
    say "No data in $DATA; nothing to delete"
  fi
}

main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    lag) cmd_lag "$@" ;;
    reset) cmd_reset ;;
    help | -h | --help) usage ;;
    *) warn "unknown command '$cmd'"; usage >&2; exit 2 ;;
  esac
}

main "$@"
