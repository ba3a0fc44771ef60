#!/usr/bin/env bash
# Unchanged poll (304) on one Chatty node with one worker, against nginx
# answering 304 for a static file with one worker, on the same machine in
# the same run; and, as a third server, a bare actix-web handler on Chatty's
# poll route (`chatty-bench bare-304`: same route and path extractor, a
# constant 304, no middleware), the framework's ceiling for this request.
# See docs/benchmarks.md for what is measured and the results.
#
#   benches/wrk/compare-304.sh
#
# Knobs (environment):
#   ROUNDS=5        wrk runs per server, alternating nginx, bare, chatty,
#                   nginx, bare, chatty, ...
#   DURATION=10s    length of each wrk run
#   CONNECTIONS=64  wrk connections (one wrk thread: -t1)
#   SKIP_BUILD=1    do not run
#                   `cargo build --release -p chatty-web -p chatty-bench`
#   PERF_DATA=FILE  after the measured rounds, one extra (uncounted) chatty
#                   run with `perf record --call-graph dwarf` attached for
#                   5 s, saved to FILE
#   KEEP_WORK=1     keep the temporary directory (logs, wrk outputs)
#   QUIET_WAIT=60   seconds (in all) to wait for an idle machine before runs
#   OTHER_MAX=15    a run during which other processes used more than this
#                   share of a core (%) is discarded and run again,
#   RETRIES=2       at most this many times per run,
#   RETRY_BUDGET=8  and this many times in all; a run still disturbed is
#                   kept, marked suspect, and left out of the medians
# Any other CHATTY__SECTION__KEY variable in the environment reaches the node
# (e.g. CHATTY__CHAT__RECONCILE_SECS=3600 to silence the 30 s reconcile query).
#
# Each server is pinned to CPU 0 and wrk to CPU 1 (when taskset exists), so
# each server has one core and the load generator the other. The three
# servers run side by side for the whole script, idle while another is
# measured. Traffic goes to 127.0.0.1 only. Everything started here is
# stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
CHATTY_PORT=18080
NGINX_PORT=18081 # fixed in nginx-static-304.conf
BARE_PORT=18082

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LUA="$HERE/poll-304.lua"
NGINX_CONF="$HERE/nginx-static-304.conf"
CHATTY_BIN="$ROOT/target/release/chatty"
BENCH_BIN="$ROOT/target/release/chatty-bench"

die() {
    echo "compare-304: $*" >&2
    exit 1
}

for tool in curl wrk nginx jq /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y curl wrk nginx jq time)"
done
if command -v taskset >/dev/null; then
    SERVER_CPU=(taskset -c 0)
    CLIENT_CPU=(taskset -c 1)
else
    echo "compare-304: taskset not found; servers and wrk are not pinned" >&2
    SERVER_CPU=()
    CLIENT_CPU=()
fi
for port in "$CHATTY_PORT" "$NGINX_PORT" "$BARE_PORT"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
        die "something already listens on 127.0.0.1:$port"
    fi
done

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p chatty-web -p chatty-bench)
fi
[[ -x "$CHATTY_BIN" ]] || die "$CHATTY_BIN not built"
[[ -x "$BENCH_BIN" ]] || die "$BENCH_BIN not built"

WORK=$(mktemp -d /tmp/chatty-bench.XXXXXX)
chmod 755 "$WORK" # nginx's worker runs as an unprivileged user
CHATTY_PID=""
NGINX_PID=""
BARE_PID=""
KEEPALIVE_PID=""

stop() {
    local pid=$1
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    stop "$KEEPALIVE_PID"
    stop "$CHATTY_PID"
    stop "$NGINX_PID"
    stop "$BARE_PID"
    if [[ "${KEEP_WORK:-0}" == 1 || $status -ne 0 ]]; then
        echo "compare-304: logs and wrk outputs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # URL
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

# --- start the three servers, one worker each, on CPU 0 --------------------

mkdir -p "$WORK/nginx/html" "$WORK/nginx/logs" "$WORK/nginx/tmp"
# A 200-byte JSON file, about the size of a small poll answer.
STATIC_BODY='{"events":[],"cursor":"0.00000000.0","more":false,"pad":"'
while [[ ${#STATIC_BODY} -lt 198 ]]; do STATIC_BODY+=x; done
printf '%s"}' "$STATIC_BODY" >"$WORK/nginx/html/poll.json"
chmod 755 "$WORK/nginx" "$WORK/nginx/html"
chmod 644 "$WORK/nginx/html/poll.json"

"${SERVER_CPU[@]}" nginx -p "$WORK/nginx/" -c "$NGINX_CONF" \
    -e "$WORK/nginx/logs/error.log" -g 'daemon off;' \
    >"$WORK/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!

# Run from $WORK, so that no chatty.toml in the caller's directory applies:
# compiled defaults (logging included: the per-request span is on) plus the
# variables below (and any CHATTY__* inherited).
SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(
    cd "$WORK"
    CHATTY__SERVER__WORKERS=1 \
        CHATTY__SERVER__PORT=$CHATTY_PORT \
        CHATTY__DATABASE__URL="sqlite://$WORK/chatty.db?mode=rwc" \
        CHATTY__AUTH__TOKEN_SECRET="$SECRET" \
        exec "${SERVER_CPU[@]}" "$CHATTY_BIN"
) >"$WORK/chatty.log" 2>&1 &
CHATTY_PID=$!

# The bare actix-web reference: one worker, Chatty's poll route and path
# extractor, a constant 304; no middleware, no logging. SIGTERM ends it.
"${SERVER_CPU[@]}" "$BENCH_BIN" bare-304 --port "$BARE_PORT" >"$WORK/bare.log" 2>&1 &
BARE_PID=$!

wait_for "http://127.0.0.1:$NGINX_PORT/poll.json" || die "nginx did not start (see $WORK/nginx/logs)"
wait_for "http://127.0.0.1:$CHATTY_PORT/healthz" || die "chatty did not start (see $WORK/chatty.log)"
wait_for "http://127.0.0.1:$BARE_PORT/api/v1/rooms/1/events" || die "bare-304 did not start (see $WORK/bare.log)"

# --- nginx: the file's ETag, and a checked 304 ------------------------------

STATIC_PATH=/poll.json
STATIC_ETAG=$(curl -s -o /dev/null -D - "http://127.0.0.1:$NGINX_PORT$STATIC_PATH" |
    tr -d '\r' | awk 'tolower($1)=="etag:" {print $2}')
[[ -n "$STATIC_ETAG" ]] || die "nginx sent no ETag"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $STATIC_ETAG" \
    "http://127.0.0.1:$NGINX_PORT$STATIC_PATH")
[[ "$code" == 304 ]] || die "nginx answered $code, not 304, to If-None-Match: $STATIC_ETAG"

# --- chatty: join, first poll for the ETag, and a checked 304 ---------------

JOIN=$(curl -s -X POST "http://127.0.0.1:$CHATTY_PORT/api/v1/join" \
    -H 'content-type: application/json' \
    -d '{"site_key":"demo","nickname":"bench"}')
TOKEN=$(jq -r .token <<<"$JOIN")
ROOM=$(jq -r .room.id <<<"$JOIN")
JOIN_CURSOR=$(jq -r .cursor <<<"$JOIN")
[[ -n "$TOKEN" && "$TOKEN" != null && "$ROOM" != null ]] || die "join failed: $JOIN"
ETAG=$(curl -s -o /dev/null -D - -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$CHATTY_PORT/api/v1/rooms/$ROOM/events?cursor=$JOIN_CURSOR" |
    tr -d '\r' | awk 'tolower($1)=="etag:" {print $2}')
CURSOR=${ETAG//\"/}
[[ -n "$CURSOR" ]] || die "chatty's first poll sent no ETag"
POLL_URL="http://127.0.0.1:$CHATTY_PORT/api/v1/rooms/$ROOM/events?cursor=$CURSOR"
chatty_poll_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        -H "Authorization: Bearer $TOKEN" -H "If-None-Match: \"$CURSOR\"" "$POLL_URL"
}
code=$(chatty_poll_code)
[[ "$code" == 304 ]] || die "chatty answered $code, not 304, to the unchanged poll"

# --- bare actix: the very request wrk sends to chatty, a checked 304 --------

BARE_URL="http://127.0.0.1:$BARE_PORT/api/v1/rooms/$ROOM/events?cursor=$CURSOR"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
    -H "Authorization: Bearer $TOKEN" -H "If-None-Match: \"$CURSOR\"" "$BARE_URL")
[[ "$code" == 304 ]] || die "bare-304 answered $code, not 304 (see $WORK/bare.log)"

# Presence expires after 3 poll intervals without a poll, which would change
# the room's version and turn the 304s into 200s. While nginx and the bare
# server are measured the guest must keep polling: one poll a second, from
# the client's CPU. Bounded to 15 minutes in any case.
(
    for _ in $(seq 900); do
        chatty_poll_code >/dev/null || true
        sleep 1
    done
) &
KEEPALIVE_PID=$!
if [[ ${#CLIENT_CPU[@]} -gt 0 ]]; then taskset -pc 1 "$KEEPALIVE_PID" >/dev/null; fi

# --- machine ----------------------------------------------------------------

echo "== machine"
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "cpus:    $(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "kernel:  $(uname -srm)"
echo "nginx:   $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "wrk:     $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
echo "chatty:  $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes to crates/ or Cargo.*)')"
echo "load:    wrk -t1 -c$CONNECTIONS -d$DURATION --latency, $ROUNDS rounds per server, alternating nginx, bare, chatty"
echo "pinning: servers ${SERVER_CPU[*]:-unpinned}, wrk ${CLIENT_CPU[*]:-unpinned}"
echo

# --- the runs ---------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
NGINX_WORKER=$(tr ' ' '\n' <"/proc/$NGINX_PID/task/$NGINX_PID/children" | grep -m1 .) ||
    die "nginx has no worker process"

cpu_ticks() { # PID → utime + stime of all its threads, in clock ticks
    awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"
}
all_busy_ticks() { # non-idle ticks of all CPUs since boot
    awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat
}
busy_pct() { # share of all CPUs not idle over 1 s (all servers are idle then)
    local a b
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " ");
        printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2] + 1e-9)}'
}
# Before each run, wait (up to QUIET_WAIT seconds over the whole script) for
# the machine to be idle, so another process's build or tests does not share
# the cores with the run. The busy share seen last is reported per run.
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_DEADLINE=$((SECONDS + QUIET_WAIT))
wait_quiet() {
    local busy
    busy=$(busy_pct)
    while ((busy > 10 && SECONDS < QUIET_DEADLINE)); do
        sleep 2
        busy=$(busy_pct)
    done
    echo "$busy"
}
scrape() { # → "db_queries polls_not_modified poll_answers_not_304"
    curl -s "http://127.0.0.1:$CHATTY_PORT/metrics" | awk '
        $1 == "chatty_db_queries_total" {db = $2}
        $1 == "chatty_polls_total{path=\"not_modified\"}" {nm = $2}
        /^chatty_http_requests_total\{/ && index($1, "route=\"/api/v1/rooms/{room_id}/events\"") &&
            !index($1, "status=\"304\"") {other += $2}
        END {print db + 0, nm + 0, other + 0}'
}

: >"$WORK/results.txt"
: >"$WORK/discarded.txt"
run_wrk() { # SIDE ROUND COUNT_STATUS DURATION
    local side=$1 round=$2 count=$3 duration=$4 out="$WORK/wrk-$1-$2.txt"
    local pid port busy t0 t1 c0 c1 a0 a1 m0=(0 0 0) m1=(0 0 0) result cpu other
    local env=(POLL304_COUNT_STATUS="$count")
    case "$side" in
    nginx)
        pid=$NGINX_WORKER port=$NGINX_PORT
        env+=(STATIC_PATH="$STATIC_PATH" STATIC_ETAG="$STATIC_ETAG")
        ;;
    bare) # the same request bytes as chatty's (token, cursor, If-None-Match)
        pid=$BARE_PID port=$BARE_PORT
        env+=(CHATTY_TOKEN="$TOKEN" CHATTY_ROOM="$ROOM" CHATTY_CURSOR="$CURSOR")
        ;;
    chatty)
        pid=$CHATTY_PID port=$CHATTY_PORT
        env+=(CHATTY_TOKEN="$TOKEN" CHATTY_ROOM="$ROOM" CHATTY_CURSOR="$CURSOR")
        ;;
    *) die "unknown side $side" ;;
    esac
    busy=$(wait_quiet)
    [[ "$side" == chatty ]] && read -r -a m0 <<<"$(scrape)"
    c0=$(cpu_ticks "$pid")
    a0=$(all_busy_ticks)
    t0=$(date +%s%N)
    /usr/bin/time -f '%U %S' -o "$out.time" \
        env "${env[@]}" "${CLIENT_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"$duration" --latency \
        -s "$LUA" "http://127.0.0.1:$port" >"$out" 2>&1
    t1=$(date +%s%N)
    a1=$(all_busy_ticks)
    c1=$(cpu_ticks "$pid")
    [[ "$side" == chatty ]] && read -r -a m1 <<<"$(scrape)"
    result=$(grep '^RESULT ' "$out") || {
        cat "$out" >&2
        die "wrk printed no RESULT line for $side round $round"
    }
    cpu=$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) \
        'BEGIN {printf "%.0f", 100 * c / hz / (ns / 1e9)}')
    # CPU used during the run by anything but the server and wrk (kernel
    # work outside process context included): high means someone else
    # (a build, tests) shared the machine and the run is suspect.
    other=$(awk -v a=$((a1 - a0)) -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) \
        -v w="$(tail -1 "$out.time")" 'BEGIN {split(w, x, " ");
        printf "%.0f", 100 * ((a - c) / hz - x[1] - x[2]) / (ns / 1e9)}')
    result="$side $round ${result#RESULT } server_cpu_pct=$cpu other_cpu_pct=$other busy_before_pct=$busy"
    result+=" db_queries=$((m1[0] - m0[0])) polls_304=$((m1[1] - m0[1])) poll_answers_not_304=$((m1[2] - m0[2]))"
    echo "$result" >"$WORK/last.txt"
    echo "$result"
}

# A run during which other work took more than OTHER_MAX % of a core is
# discarded and done again (at most RETRIES times per run, RETRY_BUDGET times
# in all, so the script stays bounded). A run still disturbed after that is
# kept, marked suspect and left out of the medians. Discarded runs are listed
# at the end.
OTHER_MAX=${OTHER_MAX:-15}
RETRIES=${RETRIES:-2}
RETRY_BUDGET=${RETRY_BUDGET:-8}
measure() { # SIDE ROUND COUNT_STATUS DURATION
    local try other
    for try in $(seq 0 "$RETRIES"); do
        run_wrk "$@"
        other=$(grep -o 'other_cpu_pct=-\?[0-9]*' "$WORK/last.txt" | cut -d= -f2)
        if ((other <= OTHER_MAX)); then
            sed 's/$/ suspect=0/' "$WORK/last.txt" >>"$WORK/results.txt"
            return
        fi
        if ((try == RETRIES || RETRY_BUDGET == 0)); then
            echo "  ^ still disturbed (other work: $other % of a core): kept as suspect, not in the medians"
            sed 's/$/ suspect=1/' "$WORK/last.txt" >>"$WORK/results.txt"
            return
        fi
        RETRY_BUDGET=$((RETRY_BUDGET - 1))
        echo "  ^ discarded: other work used $other % of a core during the run; again"
        cat "$WORK/last.txt" >>"$WORK/discarded.txt"
    done
}

echo "== checked runs: wrk counts every status (slower client; not in the figures)"
measure nginx check 1 3s
measure bare check 1 3s
measure chatty check 1 3s
echo
echo "== measured runs"
for round in $(seq "$ROUNDS"); do
    measure nginx "$round" 0 "$DURATION"
    measure bare "$round" 0 "$DURATION"
    measure chatty "$round" 0 "$DURATION"
done

code=$(chatty_poll_code)
[[ "$code" == 304 ]] || echo "  !! after the runs chatty answers $code to the same poll (room version changed?)" >&2

if [[ -n "${PERF_DATA:-}" ]]; then
    command -v perf >/dev/null || die "PERF_DATA set but perf is missing (apt-get install -y linux-perf)"
    echo
    echo "== profiling one extra chatty run (not counted): perf record --call-graph dwarf -p $CHATTY_PID, 5 s"
    (
        sleep 2
        "${CLIENT_CPU[@]}" perf record -F 999 --call-graph dwarf,16384 -p "$CHATTY_PID" -o "$PERF_DATA" -- sleep 5 \
            >"$WORK/perf.log" 2>&1
    ) &
    perf_pid=$!
    POLL304_COUNT_STATUS=0 CHATTY_TOKEN=$TOKEN CHATTY_ROOM=$ROOM CHATTY_CURSOR=$CURSOR \
        "${CLIENT_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
        -s "$LUA" "http://127.0.0.1:$CHATTY_PORT" >"$WORK/wrk-chatty-perf.txt" 2>&1
    wait "$perf_pid" || true
    echo "perf data: $PERF_DATA (perf report -i $PERF_DATA --stdio --no-children | head -80)"
fi

# --- summary ----------------------------------------------------------------

# field SIDE KEY [measured|check|all] → one value per run; "all" includes
# the checked runs and the discarded ones
field() {
    local files=("$WORK/results.txt")
    [[ "${3:-}" == all ]] && files+=("$WORK/discarded.txt")
    awk -v side="$1" -v key="$2" -v which="${3:-measured}" '$1 == side &&
        (which == "all" || ((which == "check") == ($2 == "check") &&
        (which == "check" || !index($0, " suspect=1")))) {
        for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] }
    }' "${files[@]}"
}
median() { sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
total() { awk '{s += $1} END {print s + 0}'; }

echo
echo "== results (wrk -t1 -c$CONNECTIONS --latency; latency in ms; server CPU = share of one core used by the server process during the run)"
echo
echo "| round | server | req/s | avg | p50 | p99 | max | server CPU | other CPU | busy before |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
while read -r side round rest; do
    declare -A f=()
    for kv in $rest; do f[${kv%%=*}]=${kv#*=}; done
    [[ "${f[suspect]:-0}" == 1 ]] && round="$round (suspect)"
    printf '| %s | %s | %.0f | %s | %s | %s | %s | %s %% | %s %% | %s %% |\n' "$round" "$side" \
        "${f[rps]}" "${f[avg_ms]}" "${f[p50_ms]}" "${f[p99_ms]}" "${f[max_ms]}" \
        "${f[server_cpu_pct]}" "${f[other_cpu_pct]}" "${f[busy_before_pct]}"
    unset f
done <"$WORK/results.txt"

if [[ -s "$WORK/discarded.txt" ]]; then
    echo
    echo "discarded runs (machine shared during the run; other CPU > $OTHER_MAX %):"
    awk '{for (i = 3; i <= NF; i++) if ($i ~ /^(rps|other_cpu_pct)=/) r = r " " $i;
        print "  " $1 " " $2 ":" r; r = ""}' "$WORK/discarded.txt"
fi

NGINX_MED=$(field nginx rps | median)
BARE_MED=$(field bare rps | median)
CHATTY_MED=$(field chatty rps | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}'; }
RATIO=$(ratio "$CHATTY_MED" "$NGINX_MED")
RATIO_BARE=$(ratio "$CHATTY_MED" "$BARE_MED")
RATIO_BARE_NGINX=$(ratio "$BARE_MED" "$NGINX_MED")
CHECK_NON304=$(for side in nginx bare chatty; do field "$side" non304 check; done | total)
GE400=$(for side in nginx bare chatty; do
    field "$side" status_ge400 all
    field "$side" socket_errors all
done | total)
DB_DELTA=$(field chatty db_queries all | total)
POLLS_DELTA=$(field chatty polls_304 all | total)
NOT_304=$(field chatty poll_answers_not_304 all | total)
CHATTY_REQS=$(field chatty requests all | total)

echo
printf 'median req/s:  nginx %.0f   bare actix %.0f   chatty %.0f\n' "$NGINX_MED" "$BARE_MED" "$CHATTY_MED"
printf 'median p99:    nginx %s ms   bare actix %s ms   chatty %s ms\n' \
    "$(field nginx p99_ms | median)" "$(field bare p99_ms | median)" "$(field chatty p99_ms | median)"
printf 'median server CPU: nginx %s %%   bare actix %s %%   chatty %s %%\n' \
    "$(field nginx server_cpu_pct | median)" "$(field bare server_cpu_pct | median)" "$(field chatty server_cpu_pct | median)"
SUSPECT=$(grep -c ' suspect=1' "$WORK/results.txt" || true)
echo "ratios of the medians of the measured runs:"
echo "  chatty ÷ nginx:      $RATIO   (the issue's figure; target ≥ 1.0)"
echo "  chatty ÷ bare actix: $RATIO_BARE   (share of the framework's ceiling the real poll path keeps)"
echo "  bare actix ÷ nginx:  $RATIO_BARE_NGINX   (the field notes said about 1.4)"
((SUSPECT == 0)) || echo "  ($SUSPECT suspect run(s) left out of the medians)"
echo
echo "checks:"
echo "  checked runs (all three servers), responses other than 304 (counted by wrk): $CHECK_NON304"
echo "  all runs (discarded ones included), statuses ≥ 400 and socket errors (wrk): $GE400"
echo "  chatty, poll answers other than 304 during its runs (its http_requests_total): $NOT_304"
echo "  chatty, SQL statements during its runs (chatty_db_queries_total delta): $DB_DELTA"
echo "  chatty, chatty_polls_total{path=\"not_modified\"} delta during its runs: $POLLS_DELTA"
echo "    (wrk counted $CHATTY_REQS completed; the difference is requests in flight when wrk stopped and the 1/s keep-alive poll)"
[[ "$CHECK_NON304" == 0 && "$GE400" == 0 && "$NOT_304" == 0 ]] ||
    die "some responses were not 304: the run is not valid"
