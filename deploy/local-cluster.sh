#!/usr/bin/env bash
# A whole Chatty cluster on this machine, on loopback only: MariaDB and
# Redis (reused if running, else started), N chatty nodes in the shared mode
# and nginx in front of them as the load balancer, with the shipped nginx/
# configuration rendered the way the edge tests do
# (crates/chatty-web/tests/edge/harness.rs, start_nginx).
#
#   deploy/local-cluster.sh start [N]     N nodes (default 3) behind nginx
#   deploy/local-cluster.sh status        each node's port, pid and /readyz, nginx's
#   deploy/local-cluster.sh add           one more node, then nginx reload
#   deploy/local-cluster.sh remove PORT   out of nginx, reload, SIGTERM (drain), wait
#   deploy/local-cluster.sh stop          stop exactly what start/add started
#
# Environment:
#   CHATTY_BIN              the chatty binary (default target/release/chatty,
#                           built with cargo if missing)
#   CHATTY_LOCAL_PORT       nginx's port on 127.0.0.1 (default 8080)
#   CHATTY_LOCAL_BASE_PORT  the first node's port (default 8081)
#   CHATTY_LOCAL_STATE      state directory: pids, logs, rendered nginx
#                           config, token secret (default ./.chatty-local)
#   CHATTY_LOCAL_POLL_CACHE `on` (default): nginx answers polls from its
#                           1-second micro-cache; `off`: every poll reaches
#                           a node (to load the nodes themselves, e.g. when
#                           benchmarking 1, 2, 3 nodes behind nginx)
# Other CHATTY__* variables in the environment reach every node too (for
# example CHATTY__LOG__FILTER=debug). The nodes run in the state directory,
# so a chatty.toml in the current directory is not read.
#
# The database is `chatty_local` (utf8mb4/utf8mb4_bin) on MariaDB at
# 127.0.0.1:3306, as root if root may log in over TCP without a password,
# else as the user chatty_local@127.0.0.1, created over the unix socket.
# Redis is 127.0.0.1:6379 with the key prefix `chatty_local:`.
# `stop` leaves the database, the Redis keys, the logs and the token secret
# (so guest tokens survive a restart) in place.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

lb_port_default=${CHATTY_LOCAL_PORT:-8080}
base_port=${CHATTY_LOCAL_BASE_PORT:-8081}
state=${CHATTY_LOCAL_STATE:-$PWD/.chatty-local}

nginx_bin=/usr/sbin/nginx
db_name=${CHATTY_LOCAL_DATABASE:-chatty_local}
mysql_host=127.0.0.1
mysql_port=3306
redis_host=127.0.0.1
redis_port=6379
redis_prefix=${CHATTY_LOCAL_REDIS_PREFIX:-chatty_local:}
ready_timeout=180 # a first start may wait up to 60 s for the migration lock
stop_timeout=60   # above server.shutdown_timeout_secs (default 10)

# Files under $state:
#   run/               what is running now (removed by stop)
#     lb.port bin node-PORT.pid, and what this script started besides:
#     started-mariadb (+ mariadbd.pid), started-redis (+ redis.pid)
#   logs/              node-PORT.log, redis.log (kept)
#   nginx/             nginx prefix: nginx.conf, chatty/*.conf, logs/, cache/, tmp/
#   token_secret database_url database_password redis_url   (kept)
run=$state/run
logs=$state/logs
prefix=$state/nginx

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

usage() {
  sed -n '8,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# How to run this script again with the same state directory.
self_cmd() {
  local cmd=$0
  if [ -n "${CHATTY_LOCAL_STATE:-}" ]; then
    cmd="CHATTY_LOCAL_STATE=$CHATTY_LOCAL_STATE $cmd"
  fi
  printf '%s' "$cmd"
}

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

port_in_use() {
  # A connection that succeeds means something listens there.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_code() {
  curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null || true
}

# --- processes ----------------------------------------------------------------

# The pid of a live process (not a zombie) whose executable is $2, read from
# the pid file $1; nothing when there is none. Checking the executable keeps
# a reused pid from being taken for ours. A binary replaced on disk while
# running (a rebuild) shows as "PATH (deleted)".
live_pid() {
  local file=$1 exe=$2 pid actual stat
  [ -s "$file" ] || return 0
  pid=$(head -n1 "$file" | tr -dc '0-9')
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  stat=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || true)
  [ "$stat" != Z ] || return 0
  actual=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  actual=${actual% (deleted)}
  if [ -z "$actual" ] || [ "$actual" = "$exe" ]; then
    # An unreadable exe (another user's process) is trusted as ours.
    printf '%s\n' "$pid"
  fi
}

# Is pid $1 gone (or a zombie)?
gone() {
  local stat
  kill -0 "$1" 2>/dev/null || return 0
  stat=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null || true)
  [ "$stat" = Z ]
}

# Waits up to $2 seconds for pid $1 to exit; false if it did not.
wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while ! gone "$pid"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# SIGTERM, wait, SIGKILL as a last resort.
terminate() {
  local pid=$1 what=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_gone "$pid" "$stop_timeout"; then
    warn "$what (pid $pid) still running after ${stop_timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || warn "$what (pid $pid) did not exit"
  fi
}

# --- cluster records ----------------------------------------------------------

chatty_bin_recorded() { cat "$run/bin" 2>/dev/null || true; }
lb_port() { cat "$run/lb.port" 2>/dev/null || printf '%s' "$lb_port_default"; }

# Ports of the nodes with a pid file, sorted.
node_ports() {
  local f p
  for f in "$run"/node-*.pid; do
    [ -e "$f" ] || continue
    p=${f##*/node-}
    printf '%s\n' "${p%.pid}"
  done | sort -n
}

node_pid() { live_pid "$run/node-$1.pid" "$(chatty_bin_recorded)"; }
nginx_pid() { live_pid "$prefix/nginx.pid" "$nginx_bin"; }

# Does anything of this state directory run?
cluster_running() {
  local port
  [ -n "$(nginx_pid)" ] && return 0
  for port in $(node_ports); do
    [ -n "$(node_pid "$port")" ] && return 0
  done
  return 1
}

# --- the chatty binary --------------------------------------------------------

resolve_bin() {
  local bin
  if [ -n "${CHATTY_BIN:-}" ]; then
    bin=$CHATTY_BIN
    [ -x "$bin" ] || die "CHATTY_BIN=$bin is not an executable file"
  else
    bin=$repo/target/release/chatty
    if [ ! -x "$bin" ]; then
      say "building $bin (cargo build --release -p chatty-web --bin chatty)"
      (cd "$repo" && cargo build --release -p chatty-web --bin chatty) 9>&-
    fi
  fi
  realpath "$bin"
}

# --- MariaDB ------------------------------------------------------------------

mysql_tcp_root() {
  mariadb --no-defaults --protocol=tcp -h "$mysql_host" -P "$mysql_port" -u root "$@"
}
mysql_socket_root() { as_root mariadb -u root "$@"; }

mariadb_alive() {
  # `ping` succeeds whenever the server answers, even with access denied.
  mariadb-admin --no-defaults --protocol=tcp -h "$mysql_host" -P "$mysql_port" \
    --connect-timeout=2 ping >/dev/null 2>&1
}

ensure_mariadb() {
  if mariadb_alive; then
    return
  fi
  if ! command -v mariadb >/dev/null 2>&1 || [ ! -x /usr/sbin/mariadbd ]; then
    say "installing MariaDB"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  fi
  say "starting MariaDB"
  if as_root service mariadb start 9>&- >/dev/null 2>&1; then
    echo service >"$run/started-mariadb"
  else
    # No init script (a bare container): run the daemon directly.
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --background --make-pidfile --pidfile "$run/mariadbd.pid" \
      --exec /usr/sbin/mariadbd -- --user=mysql 9>&-
    echo pid >"$run/started-mariadb"
  fi
  local i
  for i in $(seq 1 60); do
    mariadb_alive && return
    [ "$i" -lt 60 ] && sleep 1
  done
  die "MariaDB did not answer on $mysql_host:$mysql_port within 60 s"
}

new_password() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 32
  else
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
  fi
}

# Creates the database and decides how the nodes log in; writes the URL to
# $state/database_url.
ensure_database() {
  local create="CREATE DATABASE IF NOT EXISTS \`$db_name\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
  local url
  if mysql_tcp_root -e 'SELECT 1' >/dev/null 2>&1; then
    mysql_tcp_root -e "$create"
    url="mysql://root@$mysql_host:$mysql_port/$db_name"
  elif mysql_socket_root -e 'SELECT 1' >/dev/null 2>&1; then
    # Debian's default: root logs in over the unix socket only. The nodes
    # get a user of their own, with a password kept in the state directory.
    local password
    if [ -s "$state/database_password" ]; then
      password=$(cat "$state/database_password")
    else
      password=$(new_password)
      printf '%s\n' "$password" >"$state/database_password"
    fi
    say "creating the MariaDB user chatty_local@127.0.0.1 (over the unix socket)"
    mysql_socket_root <<SQL
$create
CREATE USER IF NOT EXISTS 'chatty_local'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'chatty_local'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON \`$db_name\`.* TO 'chatty_local'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
    url="mysql://chatty_local:$password@$mysql_host:$mysql_port/$db_name"
  else
    die "cannot log in to MariaDB as root, neither over TCP ($mysql_host:$mysql_port, no password) nor over the unix socket"
  fi
  printf '%s\n' "$url" >"$state/database_url"
}

# --- Redis --------------------------------------------------------------------

redis_alive() { [ "$(redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
  if ! redis_alive; then
    if ! command -v redis-server >/dev/null 2>&1; then
      say "installing Redis"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
    fi
    say "starting Redis on $redis_host:$redis_port"
    mkdir -p "$state/redis"
    # No persistence: MariaDB is the store of record (docs/operations.md).
    redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" --save "" --appendonly no \
      --dir "$state/redis" --logfile "$logs/redis.log" --pidfile "$run/redis.pid" 9>&- >/dev/null
    echo pid >"$run/started-redis"
    local i
    for i in $(seq 1 30); do
      redis_alive && break
      [ "$i" -lt 30 ] || die "Redis did not answer on $redis_host:$redis_port within 30 s (see $logs/redis.log)"
      sleep 1
    done
  fi
  printf '%s\n' "redis://$redis_host:$redis_port/0" >"$state/redis_url"
}

# --- nodes --------------------------------------------------------------------

token_secret() {
  if [ ! -s "$state/token_secret" ]; then
    new_password >"$state/token_secret"
  fi
  cat "$state/token_secret"
}

# Starts the node on port $1 and waits until its /readyz answers 200.
start_node() {
  local port=$1 bin pid log code deadline
  bin=$(chatty_bin_recorded)
  log=$logs/node-$port.log
  port_in_use "$port" && die "port $port is in use"
  # A JSON line like the node's own, so the log stays JSON lines.
  printf '{"timestamp":"%s","level":"INFO","message":"local-cluster.sh: starting the node","port":%s,"target":"local-cluster"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$port" >>"$log"
  (
    cd "$state"
    # setsid: the node outlives this script and a Ctrl-C in its terminal.
    CHATTY__SERVER__HOST=127.0.0.1 \
      CHATTY__SERVER__PORT="$port" \
      CHATTY__DATABASE__URL="$(cat "$state/database_url")" \
      CHATTY__REDIS__URL="$(cat "$state/redis_url")" \
      CHATTY__REDIS__KEY_PREFIX="$redis_prefix" \
      CHATTY__AUTH__TOKEN_SECRET="$(token_secret)" \
      CHATTY__PUSH__MAX_CONNECTIONS_PER_IP=100000 \
      CHATTY__LIMITS__EXEMPT_IPS="${CHATTY__LIMITS__EXEMPT_IPS:-127.0.0.0/8,::1}" \
      CHATTY__LIMITS__SITE_SENDS_PER_MINUTE="${CHATTY__LIMITS__SITE_SENDS_PER_MINUTE:-0}" \
      CHATTY__LOG__FORMAT=json \
      exec setsid "$bin" </dev/null >>"$log" 2>&1 9>&-
  ) &
  pid=$!
  echo "$pid" >"$run/node-$port.pid"
  printf '  node on port %s (pid %s) ' "$port" "$pid"
  deadline=$((SECONDS + ready_timeout))
  while :; do
    if gone "$pid"; then
      wait "$pid" 2>/dev/null || true
      printf 'exited\n'
      # The first lines this start wrote (the error comes before any backtrace).
      awk '/"local-cluster.sh: starting the node"/ { n = NR } { line[NR] = $0 } END { for (i = n + 1; i <= NR && i <= n + 15; i++) print line[i] }' "$log" >&2
      die "the node on port $port exited during start (log: $log)"
    fi
    code=$(http_code "http://127.0.0.1:$port/readyz")
    [ "$code" = 200 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf 'not ready\n'
      die "the node on port $port is not ready after ${ready_timeout}s (last /readyz: ${code:-none}; log: $log)"
    fi
    sleep 0.3
  done
  printf 'ready\n'
}

# --- nginx --------------------------------------------------------------------

ensure_nginx() {
  if [ ! -x "$nginx_bin" ]; then
    say "installing nginx"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  fi
}

nginx_cmd() { "$nginx_bin" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" "$@"; }

write_upstreams() {
  local port
  for port in "$@"; do
    printf 'server 127.0.0.1:%s max_fails=3 fail_timeout=10s;\n' "$port"
  done >"$prefix/chatty/chatty-upstreams.conf"
}

# The shipped nginx/*.conf with paths and ports rewritten, as the edge tests
# do; the load-balancer role (chatty-lb.conf) on 127.0.0.1:$1.
render_nginx() {
  local port=$1 file text p=$prefix user=""
  rm -rf "$prefix/chatty" "$prefix/cache"
  mkdir -p "$prefix/chatty" "$prefix/logs" "$prefix/cache" "$prefix/tmp"
  for file in "$repo"/nginx/*.conf; do
    text=$(<"$file")
    text=${text//"/etc/nginx/chatty/"/"$p/chatty/"}
    text=${text//"/var/cache/nginx/"/"$p/cache/"}
    text=${text//"/var/log/nginx/"/"$p/logs/"}
    text=${text//"listen 80;"/"listen 127.0.0.1:$port;"}
    text=${text//"listen [::]:80;"/}
    # chatty-node.conf (the web-node role) is copied but not included.
    text=${text//"listen 8080;"/"listen 127.0.0.1:8080;"}
    text=${text//"listen [::]:8080;"/}
    if [ "${CHATTY_LOCAL_POLL_CACHE:-on}" = off ]; then
      text=${text//'set $chatty_poll_cache_off 0;'/'set $chatty_poll_cache_off 1;'}
    fi
    printf '%s\n' "$text" >"$prefix/chatty/${file##*/}"
  done
  # Every visitor comes from loopback here (the bench suite spreads its
  # connections over 127.0.0.1 … 127.0.0.N): exempt it from the
  # per-address limits, as the edge tests do.
  printf '127.0.0.0/8 0;\n' >"$prefix/chatty/chatty-limits-exempt.conf"
  if [ "$(id -u)" -eq 0 ]; then
    user="user root root;"$'\n'
  fi
  cat >"$prefix/nginx.conf" <<EOF
${user}worker_processes 2;
pid $p/nginx.pid;
error_log $p/logs/error.log warn;
events { worker_connections 8192; }
http {
  include /etc/nginx/mime.types;
  client_body_temp_path $p/tmp/body;
  proxy_temp_path $p/tmp/proxy;
  fastcgi_temp_path $p/tmp/fastcgi;
  uwsgi_temp_path $p/tmp/uwsgi;
  scgi_temp_path $p/tmp/scgi;
  include $p/chatty/chatty-http.conf;
  include $p/chatty/chatty-lb.conf;
}
EOF
}

nginx_test() {
  local out
  if ! out=$(nginx_cmd -t 2>&1); then
    printf '%s\n' "$out" >&2
    die "nginx rejects the configuration in $prefix"
  fi
}

nginx_reload() {
  nginx_test
  nginx_cmd -s reload 9>&-
  # The new workers take over; the old ones finish their requests.
  sleep 1
}

start_nginx() {
  local port=$1 deadline
  port_in_use "$port" && die "port $port (nginx) is in use"
  nginx_test
  nginx_cmd 9>&-
  deadline=$((SECONDS + 15))
  until [ "$(http_code "http://127.0.0.1:$port/readyz")" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "nginx on 127.0.0.1:$port does not answer /readyz (see $prefix/logs/error.log)"
    sleep 0.2
  done
  printf '  nginx on 127.0.0.1:%s (pid %s) ready\n' "$port" "$(nginx_pid)"
}

# --- commands -----------------------------------------------------------------

stop_all() {
  local port pid what
  pid=$(nginx_pid)
  if [ -n "$pid" ]; then
    say "stopping nginx (pid $pid)"
    nginx_cmd -s stop 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 15 || { kill -KILL "$pid" 2>/dev/null || true; }
  fi
  # All nodes drain at once.
  local pids=()
  for port in $(node_ports); do
    pid=$(node_pid "$port")
    if [ -n "$pid" ]; then
      say "stopping the node on port $port (pid $pid, SIGTERM: it drains)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    if ! wait_gone "$pid" "$stop_timeout"; then
      warn "node pid $pid still running after ${stop_timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ -f "$run/started-redis" ]; then
    pid=$(live_pid "$run/redis.pid" "$(realpath "$(command -v redis-server)" 2>/dev/null || true)")
    if [ -n "$pid" ]; then
      say "stopping Redis (pid $pid; this script started it)"
      terminate "$pid" Redis
    fi
  fi
  if [ -f "$run/started-mariadb" ]; then
    what=$(cat "$run/started-mariadb")
    say "stopping MariaDB (this script started it)"
    if [ "$what" = service ]; then
      as_root service mariadb stop >/dev/null 2>&1 || warn "service mariadb stop failed"
    else
      pid=$(live_pid "$run/mariadbd.pid" /usr/sbin/mariadbd)
      [ -z "$pid" ] || terminate "$pid" MariaDB
    fi
  fi
  # Pid files and records go; logs, settings and the database stay.
  rm -rf "$run" "$prefix/nginx.pid"
}

# EXIT trap while start runs.
start_failed() {
  local code=$?
  if [ "$code" -ne 0 ]; then
    echo "start failed; stopping what was started" >&2
    stop_all
  fi
}

cmd_start() {
  local n=${1:-3} lb i port
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ]; then
    die "start: N must be a positive number, not '$n'"
  fi
  lb=$lb_port_default
  is_port "$lb" || die "CHATTY_LOCAL_PORT=$lb is not a port"
  if ! is_port "$base_port" || ! is_port "$((base_port + n - 1))"; then
    die "CHATTY_LOCAL_BASE_PORT=$base_port: no room for $n ports"
  fi
  if cluster_running; then
    die "a local cluster of $state is already running: $(self_cmd) status | stop"
  fi
  command -v curl >/dev/null 2>&1 || die "curl is needed"
  # Leftovers of a cluster that died by itself. A MariaDB or Redis it
  # started stays on the record, for stop.
  if [ -d "$run" ]; then
    find "$run" -mindepth 1 ! -name 'started-*' ! -name mariadbd.pid ! -name redis.pid -delete
  fi
  rm -f "$prefix/nginx.pid"
  mkdir -p "$run" "$logs"
  for ((i = 0; i < n; i++)); do
    port=$((base_port + i))
    [ "$port" != "$lb" ] || die "node port $port is nginx's port (CHATTY_LOCAL_PORT)"
    port_in_use "$port" && die "port $port is in use (set CHATTY_LOCAL_BASE_PORT)"
  done
  port_in_use "$lb" && die "port $lb is in use (set CHATTY_LOCAL_PORT)"

  # From here on a failure stops what was started.
  trap start_failed EXIT
  resolve_bin >"$run/bin"
  echo "$lb" >"$run/lb.port"
  ensure_nginx

  say "MariaDB on $mysql_host:$mysql_port"
  ensure_mariadb
  ensure_database
  # The URL without its password.
  echo "  database $(sed 's|//\([^:@/]*\):[^@/]*@|//\1:***@|' "$state/database_url")"
  say "Redis on $redis_host:$redis_port (key prefix $redis_prefix)"
  ensure_redis

  say "starting $n chatty node(s) from $(chatty_bin_recorded), one at a time"
  local ports=()
  for ((i = 0; i < n; i++)); do
    port=$((base_port + i))
    start_node "$port"
    ports+=("$port")
  done

  say "starting nginx (the load balancer) on 127.0.0.1:$lb"
  render_nginx "$lb"
  write_upstreams "${ports[@]}"
  start_nginx "$lb"
  trap - EXIT

  cat <<EOF

Chatty is running: $n node(s) on ports ${ports[*]}, behind nginx.

  Open http://127.0.0.1:$lb/ (the demo page) in two browser tabs and chat.

  Logs:    $logs/node-PORT.log (JSON, one per node)
           $prefix/logs/ (nginx: chatty-access.log, error.log)
  Status:  $(self_cmd) status
  Add:     $(self_cmd) add
  Remove:  $(self_cmd) remove PORT
  Stop:    $(self_cmd) stop
EOF
}

cmd_stop() {
  if [ ! -d "$run" ]; then
    echo "nothing to stop (no cluster records in $state)"
    return
  fi
  stop_all
  echo "stopped; logs are kept in $logs and $prefix/logs"
}

cmd_status() {
  local port pid code body lb rc=0 any=0
  lb=$(lb_port)
  if [ ! -d "$run" ]; then
    echo "not running (no cluster records in $state)"
    return 3
  fi
  printf '%-8s %-8s %s\n' PORT PID /readyz
  for port in $(node_ports); do
    pid=$(node_pid "$port")
    if [ -z "$pid" ]; then
      printf '%-8s %-8s %s\n' "$port" - "not running (log: $logs/node-$port.log)"
      rc=1
      continue
    fi
    any=1
    body=$(curl -s -m 3 -w ' %{http_code}' "http://127.0.0.1:$port/readyz" 2>/dev/null || true)
    code=${body##* }
    [ "$code" = 200 ] || rc=1
    printf '%-8s %-8s %s %s\n' "$port" "$pid" "$code" "${body% *}"
  done
  pid=$(nginx_pid)
  if [ -n "$pid" ]; then
    any=1
    body=$(curl -s -m 3 -w ' %{http_code}' "http://127.0.0.1:$lb/readyz" 2>/dev/null || true)
    code=${body##* }
    [ "$code" = 200 ] || rc=1
    printf 'nginx    %-8s %s %s   http://127.0.0.1:%s/ upstreams: %s\n' "$pid" "$code" "${body% *}" "$lb" \
      "$(sed -n 's/^server 127.0.0.1:\([0-9]*\).*/\1/p' "$prefix/chatty/chatty-upstreams.conf" | tr '\n' ' ')"
  else
    printf 'nginx    %-8s %s\n' - "not running"
    rc=1
  fi
  local started=""
  [ -f "$run/started-mariadb" ] && started+=" MariaDB"
  [ -f "$run/started-redis" ] && started+=" Redis"
  printf 'MariaDB  %s   Redis %s   started by this script:%s\n' \
    "$(mariadb_alive && echo up || echo down)" "$(redis_alive && echo up || echo down)" "${started:- none (reused)}"
  [ "$any" -eq 1 ] || return 3
  return "$rc"
}

cmd_add() {
  local port last
  [ -n "$(nginx_pid)" ] || die "no running cluster in $state (start one first)"
  last=$(node_ports | tail -n1)
  port=$((${last:-$((base_port - 1))} + 1))
  is_port "$port" || die "no port left after $last"
  say "adding a node on port $port"
  start_node "$port"
  # shellcheck disable=SC2046 # one port per word
  write_upstreams $(node_ports)
  nginx_reload
  echo "  nginx reloaded; upstreams: $(node_ports | tr '\n' ' ')"
}

cmd_remove() {
  local port=${1:-} pid rest
  is_port "$port" || die "usage: $0 remove PORT"
  [ -f "$run/node-$port.pid" ] || die "no node of this cluster on port $port (nodes: $(node_ports | tr '\n' ' '))"
  [ -n "$(nginx_pid)" ] || die "nginx of this cluster is not running"
  rest=$(node_ports | grep -vx "$port" || true)
  [ -n "$rest" ] || die "port $port is the last node; use stop"
  say "taking port $port out of nginx's upstream"
  # shellcheck disable=SC2086 # one port per word
  write_upstreams $rest
  nginx_reload
  pid=$(node_pid "$port")
  if [ -n "$pid" ]; then
    say "SIGTERM to the node on port $port (pid $pid); waiting while it drains"
    local started=$SECONDS
    terminate "$pid" "the node on port $port"
    echo "  exited after $((SECONDS - started))s"
  else
    echo "  the node on port $port was not running"
  fi
  rm -f "$run/node-$port.pid"
  echo "  upstreams: $(node_ports | tr '\n' ' ')"
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    start | stop | status | add | remove) shift ;;
    -h | --help | help)
      usage
      return
      ;;
    *)
      usage
      exit 2
      ;;
  esac
  case "$state" in
    /*) ;;
    *) state=$PWD/$state ;;
  esac
  run=$state/run
  logs=$state/logs
  prefix=$state/nginx
  # nginx's configuration cannot quote these paths.
  [[ "$state" =~ ^[A-Za-z0-9_./@+-]+$ ]] || die "CHATTY_LOCAL_STATE must be a path without spaces or special characters: '$state'"
  umask 077
  # nginx (8192 worker_connections) and the nodes want many open files.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  mkdir -p "$state"
  # One command at a time per state directory. Started processes close
  # fd 9 (9>&-), so the lock is gone when this script exits.
  exec 9>"$state/.lock"
  flock -n 9 || die "another local-cluster.sh command is running on $state"
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    add) cmd_add ;;
    remove) cmd_remove "$@" ;;
  esac
}

# Sourcing the file defines the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
