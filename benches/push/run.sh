#!/usr/bin/env bash
# Runs one push benchmark against a fresh release node on loopback:
# shared mode (MariaDB + Redis, as in production), its own database and
# Redis key prefix, both removed afterwards.
#
#   benches/push/run.sh idle   [VISITORS]          # connections held, memory per connection
#   benches/push/run.sh fanout [VISITORS] [RATE]   # one room, RATE messages/s
#   benches/push/run.sh rooms  [VISITORS] [RATE]   # rooms of 10, RATE messages/s in total
#
# Needs MariaDB (root over TCP on 127.0.0.1:3306, or BENCH_MYSQL_URL) and
# Redis on 127.0.0.1:6379. Results: JSON on stdout and in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/../.."

scenario="${1:-idle}"
visitors="${2:-10000}"
rate="${3:-}"
duration="${DURATION:-30}"
mysql_server="${BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
db="chatty_bench_push_$$"
port="${PORT:-18080}"
out="target/bench/push-${scenario}-${visitors}.json"
mkdir -p target/bench

case "$scenario" in
  idle)   room_size=10; rate="${rate:-0}" ;;
  fanout) room_size=0;  rate="${rate:-10}" ;;
  rooms)  room_size=10; rate="${rate:-$((visitors / 60))}" ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac

cargo build --release -q -p chatty-web -p chatty-bench
# Run from an empty directory so no chatty.toml is picked up.
workdir="$(mktemp -d)"
mysql -h127.0.0.1 -uroot -e "CREATE DATABASE $db" 2>/dev/null || mariadb -uroot -e "CREATE DATABASE $db"

cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$workdir"
  mysql -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db" 2>/dev/null || mariadb -uroot -e "DROP DATABASE IF EXISTS $db" || true
  redis-cli --scan --pattern "bench_$$:*" | xargs -r redis-cli del >/dev/null || true
}
trap cleanup EXIT

root="$PWD"
(
  cd "$workdir"
  exec env -u CHATTY_CONFIG \
    CHATTY__SERVER__PORT="$port" \
    CHATTY__DATABASE__URL="$mysql_server/$db" \
    CHATTY__DATABASE__MAX_CONNECTIONS=32 \
    CHATTY__REDIS__URL=redis://127.0.0.1:6379 \
    CHATTY__REDIS__KEY_PREFIX="bench_$$:" \
    CHATTY__AUTH__TOKEN_SECRET="bench-secret-0123456789abcdef0123456789" \
    CHATTY__CHAT__SENDS_PER_MINUTE=0 \
    CHATTY__LIMITS__EXEMPT_IPS=127.0.0.0/8,::1 \
    CHATTY__LIMITS__SITE_SENDS_PER_MINUTE=0 \
    CHATTY__PUSH__MAX_CONNECTIONS_PER_IP=100000 \
    CHATTY__LOG__FILTER=warn \
    "$root/target/release/chatty"
) > target/bench/push-server.log 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

target/release/chatty-bench push \
  --url "http://127.0.0.1:$port" \
  --visitors "$visitors" --room-size "$room_size" --rate "$rate" \
  --duration-secs "$duration" --settle-secs "${SETTLE:-15}" \
  --server-pid "$server_pid" --json-out "$out"
