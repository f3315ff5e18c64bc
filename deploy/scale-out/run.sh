#!/usr/bin/env bash
# Scale-out check (issue #6): two `sammen serve` nodes, each with its own data dir, in front of one
# three-node RabbitMQ cluster on loopback (quorum queues). Load from several clients, stop one RabbitMQ node
# mid-run, start it again, then check that every message that got a 202 reached a subscriber (distinct
# message ids delivered == distinct ids answered 202; none missing) and reached `delivered` in the outbox
# of the sammen node that answered the 202 (its delivery receipt came back to that node).
#
#   cargo build --release -p sammen && deploy/scale-out/run.sh
#
# Everything it starts (RabbitMQ nodes, sammen nodes, load generators, subscribers) runs under a fresh
# directory and is stopped on exit, also on failure or ctrl-c. It never touches a RabbitMQ node it did not
# start (its nodes have their own names, ports, data dirs and Erlang cookie).
#
# Environment (defaults in brackets):
#   SAMMEN      sammen binary [target/release/sammen]
#   DURATION    seconds of load [60]          CLIENTS  HTTP clients per sammen node [4]
#   STOP_NODE   RabbitMQ node stopped mid-run, 1..3 [2: the node sammen node B is connected to]
#   STOP_AT     seconds into the load when it is stopped [15]   DOWN  seconds it stays down [15]
#   PORT_BASE   AMQP ports PORT_BASE+1..3, distribution ports +11..13, sammen HTTP +21..22, metrics +31..32
#               [the first of 25600, 25700, ... 26500 whose ports are all free]. Below Linux's ephemeral
#               range (32768-60999): a fixed port inside it can be taken by any outgoing connection, as
#               RabbitMQ's dist port once was in CI (`dist_port_already_used`).
#   DRAIN       seconds to wait for the subscribers (and then the receipts) after the load [180]
#   KEEP=1      keep the work directory (logs) after a successful run; it is always kept after a failure
#   WORK        work directory [a fresh mktemp -d]
# Exit 0 when nothing is missing; 1 otherwise (the summary says what); 2 when setting up failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAMMEN=${SAMMEN:-$ROOT/target/release/sammen}
DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-4}
STOP_NODE=${STOP_NODE:-2}
STOP_AT=${STOP_AT:-15}
DOWN=${DOWN:-15}
PORT_BASE=${PORT_BASE:-}
DRAIN=${DRAIN:-180}
RMQ_BIN=${RMQ_BIN:-/usr/lib/rabbitmq/bin}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/sammen-scale-out.XXXXXX")}
mkdir -p "$WORK"

log() { printf '%s scale-out: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "$*"; exit 2; }

[ -x "$SAMMEN" ] || die "no sammen binary at $SAMMEN (cargo build --release -p sammen, or set SAMMEN)"
[ -x "$RMQ_BIN/rabbitmq-server" ] || die "no RabbitMQ in $RMQ_BIN (set RMQ_BIN)"
# Receivers whose inboxes the examples address (sammen's defaults without [[receiver]]).
RECEIVERS=${RECEIVERS:-"5790001348120 5790000209354 5790000121441 5790001382445 5790002508226 5790000201389 5790000127092 5790000121526 5790000123117"}

node() { echo "sammen-so$1@localhost"; }
amqp_port() { echo $((PORT_BASE + $1)); }
dist_port() { echo $((PORT_BASE + 10 + $1)); }
http_port() { echo $((PORT_BASE + 20 + $1)); }
metrics_port() { echo $((PORT_BASE + 30 + $1)); }
amqp_url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }

# A port is taken when something listens on it or a connection uses it as its local port.
port_taken() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }
ports_free() {
  local i
  for i in 1 2 3; do port_taken "$(amqp_port $i)" && return 1; port_taken "$(dist_port $i)" && return 1; done
  for i in 1 2; do port_taken "$(http_port $i)" && return 1; port_taken "$(metrics_port $i)" && return 1; done
  return 0
}
if [ -z "$PORT_BASE" ]; then
  for base in $(seq 25600 100 26500); do
    PORT_BASE=$base
    ports_free && break
    PORT_BASE=
  done
  [ -n "$PORT_BASE" ] || die "no free port range in 25600-26539 (set PORT_BASE)"
else
  ports_free || die "a port of PORT_BASE=$PORT_BASE (+1..+32) is in use"
fi

# Our own Erlang cookie and env file: the CLI tools and nodes find both through HOME / RABBITMQ_CONF_ENV_FILE.
mkdir -p "$WORK/home"
if [ ! -f "$WORK/home/.erlang.cookie" ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/home/.erlang.cookie"
  chmod 400 "$WORK/home/.erlang.cookie"
fi
printf 'ERL_EPMD_ADDRESS=127.0.0.1\n' > "$WORK/rabbitmq-env.conf"
echo '[].' > "$WORK/enabled_plugins"   # no management/prometheus plugins: no extra ports
rmq_env() {
  env HOME="$WORK/home" RABBITMQ_CONF_ENV_FILE="$WORK/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/enabled_plugins" "$@"
}
ctl() { local i=$1; shift; rmq_env "$RMQ_BIN/rabbitmqctl" -q -n "$(node "$i")" "$@"; }

declare -A RMQ_PID=()
PIDS=()          # sammen nodes, benches, subscribers (stopped with SIGTERM, by pid)
OK=0

start_rabbit() {
  local i=$1 d="$WORK/rmq$1"
  mkdir -p "$d/log"
  cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$i")
loopback_users.guest = true
disk_free_limit.absolute = 50MB
cluster_partition_handling = pause_minority
EOF
  rmq_env RABBITMQ_NODENAME="$(node "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$i")" RABBITMQ_DIST_PORT="$(dist_port "$i")" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    "$RMQ_BIN/rabbitmq-server" >> "$d/server.out" 2>&1 &
  RMQ_PID[$i]=$!
  timeout 120 bash -c "until HOME='$WORK/home' RABBITMQ_CONF_ENV_FILE='$WORK/rabbitmq-env.conf' \
      '$RMQ_BIN/rabbitmqctl' -q -n '$(node "$i")' await_startup >/dev/null 2>&1; do sleep 1; done" \
    || die "RabbitMQ node $i did not start (see $d/server.out and $d/log)"
}

stop_rabbit() {
  local i=$1
  ctl "$i" stop >/dev/null 2>&1 || true
  if [ -n "${RMQ_PID[$i]:-}" ]; then
    for _ in $(seq 1 30); do kill -0 "${RMQ_PID[$i]}" 2>/dev/null || break; sleep 1; done
    kill "${RMQ_PID[$i]}" 2>/dev/null || true
    wait "${RMQ_PID[$i]}" 2>/dev/null || true
    unset "RMQ_PID[$i]"
  fi
}

cleanup() {
  local rc=$?
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for i in 3 2 1; do stop_rabbit "$i"; done
  if [ "$OK" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    log "work directory kept: $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "work directory $WORK"
log "starting RabbitMQ nodes $(node 1), $(node 2), $(node 3) (AMQP ports $(amqp_port 1)-$(amqp_port 3))"
for i in 1 2 3; do start_rabbit "$i"; done
for i in 2 3; do
  ctl "$i" stop_app
  ctl "$i" join_cluster "$(node 1)"
  ctl "$i" start_app
done
ctl 1 cluster_status | grep -c "sammen-so" >/dev/null || die "cluster did not form"
log "cluster formed; importing deploy/rabbitmq/definitions.json (quorum queues)"
ctl 1 import_definitions "$ROOT/deploy/rabbitmq/definitions.json"

# Two sammen nodes, each with its own data dir, connected to different RabbitMQ nodes (A → 1, B → 2).
start_sammen() {
  local i=$1 rabbit=$2 d="$WORK/sammen$1"
  mkdir -p "$d"
  cat > "$d/sammen.toml" <<EOF
data_dir = "$d/data"
[http]
listen = "127.0.0.1:$(http_port "$i")"
plain = true
metrics_listen = "127.0.0.1:$(metrics_port "$i")"
[bus]
kind = "amqp"
url = "$(amqp_url "$rabbit")"
confirm_timeout = "5s"
[log]
format = "json"
level = "info,lapin=warn,fjall=warn,lsm_tree=warn"
EOF
  "$SAMMEN" serve --config "$d/sammen.toml" > "$d/stdout" 2> "$d/stderr" &
  PIDS+=($!)
  timeout 60 bash -c "until grep -q 'listening on' '$d/stdout'; do sleep 0.2; done" \
    || die "sammen node $i did not start (see $d/stderr)"
  timeout 60 bash -c "until curl -sf http://127.0.0.1:$(http_port "$i")/readyz >/dev/null; do sleep 0.5; done" \
    || die "sammen node $i not ready (see $d/stderr)"
}
log "starting sammen nodes A (→ RabbitMQ 1) and B (→ RabbitMQ 2)"
start_sammen 1 1
start_sammen 2 2

# Subscribers (reference subscriber: one file per distinct message id, synced before ack, receipts) on
# node 1 and 3 alternately; a subscriber whose node goes down reconnects when it is back.
mkdir -p "$WORK/delivered"
n=0
for gln in $RECEIVERS; do
  n=$((n + 1))
  rabbit=$(( n % 2 == 0 ? 3 : 1 ))
  "$SAMMEN" subscribe --amqp-url "$(amqp_url "$rabbit")" --receiver "$gln" --out "$WORK/delivered" \
    > "$WORK/subscribe-$gln.out" 2>&1 &
  PIDS+=($!)
done

log "load: ${DURATION}s, $CLIENTS clients on each sammen node; RabbitMQ node $STOP_NODE stops at ${STOP_AT}s for ${DOWN}s"
BENCH=()
for i in 1 2; do
  ( cd "$ROOT" && "$SAMMEN" bench --url "http://127.0.0.1:$(http_port "$i")" --clients "$CLIENTS" \
      --duration "${DURATION}s" --accepted-ids "$WORK/accepted-$i.txt" ) > "$WORK/bench-$i.out" 2>&1 &
  BENCH+=($!)
  PIDS+=($!)
done
sleep "$STOP_AT"
log "stopping RabbitMQ node $STOP_NODE"
stop_rabbit "$STOP_NODE"
sleep "$DOWN"
log "starting RabbitMQ node $STOP_NODE again"
start_rabbit "$STOP_NODE"
log "node $STOP_NODE back: $(ctl 1 cluster_status --formatter json 2>/dev/null | tr -d '\n' | grep -o '"running_nodes":\[[^]]*\]' || true)"
for p in "${BENCH[@]}"; do wait "$p" || die "a load generator failed (see $WORK/bench-*.out)"; done
log "load done"
for i in 1 2; do sed -n '/^answers:/p;/^accepted:/p;/^accept latency/p' "$WORK/bench-$i.out" | sed "s/^/  node $i: /"; done

sort -u "$WORK"/accepted-*.txt > "$WORK/accepted.txt"
answered_202=$(cat "$WORK"/accepted-*.txt | wc -l)
accepted=$(wc -l < "$WORK/accepted.txt")
[ "$accepted" -gt 0 ] || die "no message was accepted (see $WORK/bench-*.out)"

delivered_ids() { find "$WORK/delivered" -maxdepth 1 -name '*.xml' -printf '%f\n' | sed 's/\.xml$//' | sort -u; }
deadline=$((SECONDS + DRAIN))
while :; do
  delivered_ids > "$WORK/delivered.txt"
  missing=$(comm -23 "$WORK/accepted.txt" "$WORK/delivered.txt" | wc -l)
  [ "$missing" -eq 0 ] && break
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 2
done
delivered=$(wc -l < "$WORK/delivered.txt")
extra=$(comm -13 "$WORK/accepted.txt" "$WORK/delivered.txt" | wc -l)

# Every id a node answered 202 must reach `delivered` in that node's own outbox (GET /v1/messages/ID on
# the node: the record's timeline holds `delivered`). Only ids not yet seen delivered are asked again.
# A failed curl or no match yet is "not delivered yet" (under `set -e -o pipefail` it used to end the
# script silently, with no verdict).
delivered_on() {
  { sed "s|^|http://127.0.0.1:$(http_port "$1")/v1/messages/|" "$2" \
    | xargs -r -n 200 curl -s -w '\n' 2>/dev/null || true; } \
    | { grep -F '"state":"delivered"' || true; } | sed -E 's/^\{"message_id":"([^"]*)".*/\1/' | sort -u
}
deadline=$((SECONDS + DRAIN))
not_delivered=0
for i in 1 2; do
  sort -u "$WORK/accepted-$i.txt" > "$WORK/pending-$i.txt"
  while :; do
    delivered_on "$i" "$WORK/pending-$i.txt" > "$WORK/states-$i.txt"
    comm -23 "$WORK/pending-$i.txt" "$WORK/states-$i.txt" > "$WORK/pending-$i.next"
    mv "$WORK/pending-$i.next" "$WORK/pending-$i.txt"
    [ -s "$WORK/pending-$i.txt" ] || break
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 2
  done
  n=$(wc -l < "$WORK/pending-$i.txt")
  log "node $i: $(sort -u "$WORK/accepted-$i.txt" | wc -l) ids answered 202, not delivered in its outbox $n"
  not_delivered=$((not_delivered + n))
done

metric() { curl -s "http://127.0.0.1:$(metrics_port "$1")/metrics" | grep -E "^$2" | awk '{s += $2} END {print s + 0}'; }
for i in 1 2; do
  log "node $i metrics: accepted $(metric "$i" sammen_messages_accepted_total), confirmed $(metric "$i" 'sammen_publish_confirm_duration_seconds_count\{outcome="ack"'), publish failures $(metric "$i" 'sammen_publish_confirm_duration_seconds_count\{outcome="(nack|timeout|not-connected)"'), bus reconnects $(metric "$i" sammen_bus_reconnects_total), outbox depth $(metric "$i" sammen_outbox_depth), marked delivered by receipts $(metric "$i" sammen_messages_delivered_total)"
done
log "quorum members of sammen.inbox.5790001348120: $(rmq_env "$RMQ_BIN/rabbitmq-queues" -q -n "$(node 1)" quorum_status sammen.inbox.5790001348120 2>/dev/null | grep -c sammen-so || true)"
log "202 answers $answered_202 (distinct ids $accepted); distinct ids delivered $delivered; missing $missing; delivered without a 202 $extra; not delivered on the accepting node $not_delivered"
# Each node must consume its own receipts queue (the reply_to of what it publishes). Without it every
# receipt goes through the shared queue, and the run passes only while the nodes happen to bounce each
# other's receipts in time (a refactoring once dropped that wiring unnoticed).
own_queue=0
for i in 1 2; do
  if grep -F '"message":"receipts: consuming"' "$WORK/sammen$i/stderr" | grep -qE '"queue":"sammen\.receipts\.[^"]+"'; then
    own_queue=$((own_queue + 1))
  else
    log "node $i does not consume a receipts queue of its own (see $WORK/sammen$i/stderr)"
  fi
done
if [ "$missing" -eq 0 ] && [ "$answered_202" -eq "$accepted" ] && [ "$not_delivered" -eq 0 ] && [ "$own_queue" -eq 2 ]; then
  OK=1
  log "PASS: every message that got a 202 was delivered (once in effect: subscribers dedupe by message id) and is delivered in the outbox of the node that accepted it"
  exit 0
fi
comm -23 "$WORK/accepted.txt" "$WORK/delivered.txt" | head -5 | sed 's/^/  missing: /'
for i in 1 2; do head -5 "$WORK/pending-$i.txt" | sed "s/^/  not delivered on node $i: /"; done
log "FAIL"
exit 1
