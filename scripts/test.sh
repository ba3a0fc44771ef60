#!/usr/bin/env bash
# Runs every Chatty test: formatting, lints, the protocol crate's dependency
# rule, the storage suite on SQLite and MariaDB, the API suite in the
# embedded mode (SQLite, then MariaDB) and in the shared mode (MariaDB +
# Redis), the multi-node cluster suite, and the widget in headless Chromium
# against two nodes.
#
# Works on a fresh Debian machine: a missing or stopped MariaDB or Redis is
# installed (apt-get) and started; where MariaDB's root can only log in over
# the unix socket (Debian's default), a test user is created that way;
# Chromium and Node.js are installed from Debian when missing.
#
# Environment:
#   CHATTY_TEST_MYSQL_URL  server URL for tests (default: root over TCP, or
#                          the test user this script creates)
#   CHATTY_TEST_REDIS_URL  Redis for tests (default redis://127.0.0.1:6379)
set -euo pipefail
cd "$(dirname "$0")/.."

# Every cargo test run is also logged here, to print one total at the end.
results=$(mktemp)
# The total is printed on every exit, so a failing run reports its failures.
summary() {
  awk '/^test result:/ { passed += $4; failed += $6 } /^test .* FAILED$/ { failing += 1 }
       END { printf "tests: %d passed, %d failed\n", passed, failed + (failed == 0 && failing > 0 ? failing : 0) }' "$results"
  rm -f "$results"
}
trap summary EXIT
counted() { "$@" 2>&1 | tee -a "$results"; }

say() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Rust toolchain components -------------------------------------------
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  say "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# --- MariaDB ---------------------------------------------------------------
mysql_tcp() { mariadb --protocol=tcp -h 127.0.0.1 -P 3306 "$@"; }

ensure_mariadb() {
  if ! command -v mariadb >/dev/null 2>&1 || [ ! -x /usr/sbin/mariadbd ]; then
    say "installing MariaDB"
    apt_install mariadb-server mariadb-client
  fi
  if ! mysql_tcp -u root -e 'SELECT 1' >/dev/null 2>&1 && ! mariadb -u root -e 'SELECT 1' >/dev/null 2>&1; then
    say "starting MariaDB"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
      || as_root service mariadb start
    for _ in $(seq 1 60); do
      mysql_tcp -u root -e 'SELECT 1' >/dev/null 2>&1 && break
      mariadb -u root -e 'SELECT 1' >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  if [ -n "${CHATTY_TEST_MYSQL_URL:-}" ]; then
    return
  fi
  if mysql_tcp -u root -e 'SELECT 1' >/dev/null 2>&1; then
    export CHATTY_TEST_MYSQL_URL="mysql://root@127.0.0.1:3306"
  else
    # Fresh Debian: root authenticates by unix socket only. Create a test
    # user that may create and drop the tests' own databases.
    say "creating the MariaDB test user chatty_test"
    as_root mariadb -u root <<'SQL'
CREATE USER IF NOT EXISTS 'chatty_test'@'127.0.0.1' IDENTIFIED BY 'chatty_test';
CREATE USER IF NOT EXISTS 'chatty_test'@'localhost' IDENTIFIED BY 'chatty_test';
GRANT ALL PRIVILEGES ON `chatty\_test\_%`.* TO 'chatty_test'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `chatty\_test\_%`.* TO 'chatty_test'@'localhost';
FLUSH PRIVILEGES;
SQL
    export CHATTY_TEST_MYSQL_URL="mysql://chatty_test:chatty_test@127.0.0.1:3306"
  fi
}

drop_leftover_test_databases() {
  local user=root pass=""
  if [[ "$CHATTY_TEST_MYSQL_URL" =~ ^mysql://([^:@/]+)(:([^@/]*))?@ ]]; then
    user="${BASH_REMATCH[1]}"; pass="${BASH_REMATCH[3]}"
  fi
  local dbs
  dbs=$(MYSQL_PWD="$pass" mysql_tcp -u "$user" -N -e "SHOW DATABASES LIKE 'chatty\\_test\\_%'" 2>/dev/null || true)
  for db in $dbs; do
    MYSQL_PWD="$pass" mysql_tcp -u "$user" -e "DROP DATABASE \`$db\`" >/dev/null 2>&1 || true
  done
}

# --- Redis -------------------------------------------------------------------
ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    say "installing Redis"
    apt_install redis-server redis-tools
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/chatty-tests.log
    for _ in $(seq 1 30); do
      redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  export CHATTY_TEST_REDIS_URL="${CHATTY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
}

drop_leftover_test_keys() {
  # Test keys carry a per-test prefix and expire by themselves; this only
  # tidies up after interrupted runs.
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'chatty_test_*' 2>/dev/null \
    | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1 || true
}

# --- nginx (the edge tests run the shipped nginx/ configuration) ---------------
ensure_nginx() {
  if [ ! -x /usr/sbin/nginx ]; then
    say "installing nginx"
    apt_install nginx
  fi
  # The tests start their own nginx processes on free loopback ports, from
  # a temporary prefix; a system nginx the package may have started is not
  # used and not touched.
  /usr/sbin/nginx -v
}

# --- Chromium and Node.js (browser tests) -------------------------------------
ensure_browser_tools() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  # Emoji in the widget's screenshots (its emoji button and picker).
  [ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# Starts a local cluster with the deploy script (its own database, Redis
# prefix, ports and state directory), joins and sends through its nginx,
# stops it, and checks that nothing it started still answers.
local_cluster_smoke() {
  local state suffix lb=38080 first=38081 ok=1
  state=$(mktemp -d)
  suffix=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export CHATTY_BIN="$PWD/target/debug/chatty" CHATTY_LOCAL_STATE="$state" \
    CHATTY_LOCAL_PORT=$lb CHATTY_LOCAL_BASE_PORT=$first \
    CHATTY_LOCAL_DATABASE="chatty_test_local_$suffix" CHATTY_LOCAL_REDIS_PREFIX="chatty_test_local_$suffix:"
  deploy/local-cluster.sh start 2 || ok=0
  if [ "$ok" = 1 ]; then
    local join token room
    join=$(curl -fsS --max-time 10 -X POST "http://127.0.0.1:$lb/api/v1/join" \
      -H 'content-type: application/json' -d '{"site_key":"demo","nickname":"Smoke"}') || ok=0
    token=$(printf '%s' "$join" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    room=$(printf '%s' "$join" | sed -n 's/.*"room":{"id":\([0-9]*\).*/\1/p')
    curl -fsS --max-time 10 -X POST "http://127.0.0.1:$lb/api/v1/rooms/$room/messages" \
      -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d '{"client_message_id":"smoke-1","body":"hello through the local cluster"}' >/dev/null || ok=0
    deploy/local-cluster.sh status || ok=0
  fi
  deploy/local-cluster.sh stop || ok=0
  for port in $lb $first $((first + 1)); do
    if curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz"; then
      echo "port $port still answers after stop"; ok=0
    fi
  done
  unset CHATTY_BIN CHATTY_LOCAL_STATE CHATTY_LOCAL_PORT CHATTY_LOCAL_BASE_PORT \
    CHATTY_LOCAL_DATABASE CHATTY_LOCAL_REDIS_PREFIX
  rm -rf "$state"
  if [ "$ok" = 1 ]; then
    echo "test result: deploy. 1 passed; 0 failed;" >>"$results"
  else
    echo "test result: deploy. 0 passed; 1 failed;" >>"$results"
    return 1
  fi
}

# Runs node's test runner and adds its totals to the summary.
browser_tests() {
  local out
  out=$(mktemp)
  set +e
  (cd tests/browser && node --test --test-concurrency=1 --test-reporter=tap) 2>&1 | tee "$out"
  local status=${PIPESTATUS[0]}
  set -e
  local pass fail
  pass=$(awk '/^# pass / { print $3 }' "$out"); fail=$(awk '/^# fail / { print $3 }' "$out")
  echo "test result: browser. ${pass:-0} passed; ${fail:-1} failed;" >>"$results"
  rm -f "$out"
  return "$status"
}

say "MariaDB"
ensure_mariadb
drop_leftover_test_databases
echo "tests use ${CHATTY_TEST_MYSQL_URL%%@*}@…"

say "Redis"
ensure_redis
drop_leftover_test_keys
echo "tests use $CHATTY_TEST_REDIS_URL"

say "nginx"
ensure_nginx

# --- Hygiene ----------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

say "chatty-protocol depends on serde only (no actix, sea-orm, sqlx, redis, tokio)"
forbidden=$(cargo tree -p chatty-protocol -e normal --prefix none | grep -Ei '^(actix|sea-orm|sea-query|sqlx|redis|deadpool|tokio|hyper|reqwest)' || true)
if [ -n "$forbidden" ]; then
  echo "chatty-protocol must not depend on:"; echo "$forbidden"; exit 1
fi
echo "ok"

# --- Tests --------------------------------------------------------------------
say "tests: unit, storage suite (SQLite + MariaDB), API suite (embedded, SQLite), cluster suite (shared), edge suite (nginx + chatty processes)"
counted cargo test --workspace

say "API suite, embedded mode on MariaDB"
CHATTY_TEST_BACKEND=mysql counted cargo test -p chatty-web --test api

say "API suite, shared mode (MariaDB + Redis)"
CHATTY_TEST_MODE=shared counted cargo test -p chatty-web --test api

say "browser tests: the widget in headless Chromium, two nodes (MariaDB + Redis)"
ensure_browser_tools
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
cargo build -q -p chatty-web --bin chatty
CHATTY_BIN="$PWD/target/debug/chatty" browser_tests

say "deploy/local-cluster.sh: 2 nodes + nginx, a visitor through it, then stop"
local_cluster_smoke

drop_leftover_test_databases
drop_leftover_test_keys
say "all tests passed"
