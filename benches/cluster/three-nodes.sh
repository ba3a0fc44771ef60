#!/usr/bin/env bash
# Starts three Chatty nodes in the shared mode on loopback (ports 18101-18103)
# against the local MariaDB and Redis, runs `chatty-bench cluster` against
# them with the arguments given to this script, and stops exactly what it
# started. Traffic goes to 127.0.0.1 only; the run is bounded by the bench's
# --duration-secs (default 20 s).
#
#   benches/cluster/three-nodes.sh --senders 24 --pollers 300 --duration-secs 20
#
# Uses MariaDB as root on 127.0.0.1:3306 (database chatty_bench, recreated).
# Environment: REDIS_URL (default redis://127.0.0.1:6379), WORKERS per node
# (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."

MYSQL_URL=mysql://root@127.0.0.1:3306
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
WORKERS=${WORKERS:-1}
DB=chatty_bench
PREFIX="chatty_bench_$(date +%s):"

cargo build --release -q -p chatty-web -p chatty-bench

mysql_args=(--protocol=tcp -h 127.0.0.1 -P 3306 -u root)
mariadb "${mysql_args[@]}" -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT

nodes=()
for port in 18101 18102 18103; do
  CHATTY__SERVER__PORT=$port \
  CHATTY__SERVER__WORKERS=$WORKERS \
  CHATTY__DATABASE__URL="$MYSQL_URL/$DB" \
  CHATTY__DATABASE__MAX_CONNECTIONS=32 \
  CHATTY__REDIS__URL="$REDIS_URL" \
  CHATTY__REDIS__KEY_PREFIX="$PREFIX" \
  CHATTY__AUTH__TOKEN_SECRET=bench-secret-0123456789abcdef0123456789 \
  CHATTY__LOG__FILTER=warn \
  CHATTY__CHAT__SENDS_PER_MINUTE=0 \
  CHATTY__LIMITS__EXEMPT_IPS=127.0.0.0/8,::1 \
  CHATTY__LIMITS__SITE_SENDS_PER_MINUTE=0 \
    ./target/release/chatty >"/tmp/chatty-bench-node-$port.log" 2>&1 &
  pids+=($!)
  nodes+=(--node "http://127.0.0.1:$port")
done
for port in 18101 18102 18103; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
done

./target/release/chatty-bench cluster "${nodes[@]}" "$@"
