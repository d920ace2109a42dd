#!/usr/bin/env bash
# Palaver vs. ceiling benchmark.
#
#   benches/run.sh [--postgres ADMIN_URL] [--ceiling-only]
#
# Builds the release binaries, runs the same scenarios against the ceiling (the
# thinnest broadcast server on Palaver's transport crates) and against Palaver, and
# prints palaver/ceiling ratios. Every scenario gets a freshly started server, so memory
# figures are not skewed by an earlier scenario. Result lines (one JSON object per
# scenario) go to benches/results/latest.jsonl, the table to latest-summary.txt (with the
# target table, met/missed, appended), and a report page with charts to latest.html
# (self-contained: inline SVG, nothing fetched; open it in any browser).
#
#   benches/run.sh --report FILE.jsonl [OUT.html]
#
# only renders the report of earlier result lines (e.g. benches/measurements/*.jsonl) to
# OUT.html (default: FILE with .html) and prints its target table; no scenarios run.
# Same as: cargo run --release -p palaver-bench --bin report -- FILE.jsonl --out OUT.html
#
#   --postgres URL   run Palaver on PostgreSQL: URL is an admin connection
#                    (e.g. postgres://postgres:pw@127.0.0.1/postgres); a fresh database
#                    is created for each scenario and dropped after it.
#   --ceiling-only   skip Palaver (e.g. while it does not build yet).
#   --cluster N      several nodes (needs --postgres, and NATS at $NATS_URL, default
#                    nats://127.0.0.1:4222): runs fanout-s$SENDERS, fanout-s$SENDERS_HIGH,
#                    ingest and idle on one Palaver node, then on N nodes sharing the database
#                    with sockets spread round-robin over them (labels c<N>-…), and prints
#                    cluster/single ratios. CPU of every node and of nats-server is counted.
#                    Then failover (cluster only, label failover): $SENDERS senders spread over
#                    the nodes, the channel's owner SIGKILLed FAILOVER_KILL_AFTER=10 s into
#                    FAILOVER_DURATION=30 s; reports the unavailable window and acked-but-lost.
#
# Parameters (env), with defaults; a quick smoke run:
#   RECEIVERS=200 SENDERS=5 SENDERS_HIGH=10 SATURATION= DURATION=5 IDLE_CONNECTIONS=2000 benches/run.sh
#   SATURATION=200,300 (more fan-out runs at these sender counts; empty: none)
#   CLUSTER_NODE_ENV= (VAR=value settings for the cluster's nodes only)
#   CEILING_ARGS= (e.g. --per-frame: the ceiling writes each frame on its own; default: it
#        gathers each drained batch into one write with a 64 KiB write buffer)
#   RECEIVERS=1000 SENDERS=20 SENDERS_HIGH=100 RATE=5 DURATION=20 DRAIN=5 PAYLOAD_BYTES=64
#   IDLE_CONNECTIONS=19500 IDLE_HOLD=10 SOURCE_IPS=127.0.0.1,...,127.0.0.8
#   CONNECT_CONCURRENCY=200 HISTORY_CLIENTS=64 HISTORY_SEED=200 INGEST_CHANNELS=200
#   PRESENCE_CONNECTIONS=5000 (one user per socket, all in one community)
#   REGISTRATIONS=200 REGISTER_CONCURRENCY=8 (register: argon2 per account, then server RSS)
#   RECOVERY_WAVE_SHARE=0.1 RECOVERY_WAVE_EVERY=10 (recovery: the fanout-s$SENDERS load while
#        this share of the receivers drops and resumes with `since` every N seconds)
#   SCENARIO_TIMEOUT=900 (seconds per loadgen run) SKIP_BUILD=1 PALAVER_RUST_LOG=warn
#   REPORT_NOTE="2-core VM, idle" (a line shown at the top of latest.html)
#   PALAVER_BIN=path (default: the release build in the target dir)
#   LOADGEN_BIN=path (default: the release build in the target dir)
#   ONLY=history,ingest (run only these scenario labels: fanout-sN, idle, history,
#        history-nocache, ingest, presence, register, recovery; the ceiling runs only where it
#        has a counterpart). RSS after 200 registrations alone:
#        ONLY=register benches/run.sh
#        Resume waves against plain fan-out at the same load:
#        ONLY=fanout-s20,recovery benches/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/benches"
RESULTS_DIR=${RESULTS_DIR:-$BENCH/results}

RECEIVERS=${RECEIVERS:-1000}
SENDERS=${SENDERS:-20}
SENDERS_HIGH=${SENDERS_HIGH:-100}
# Saturation: fan-out at these sender counts too (1-1.5 M deliveries/s offered at 1 000
# receivers × 5/s); empty to skip.
SATURATION=${SATURATION:-200,300}
# Extra ceiling flags, e.g. CEILING_ARGS=--per-frame (one write per frame, the naive server)
# or CEILING_ARGS="--write-buffer 8192" (Palaver's own write buffer).
CEILING_ARGS=${CEILING_ARGS:-}
# Extra VAR=value settings for every cluster node (not the single node), e.g.
# CLUSTER_NODE_ENV="TOKIO_WORKER_THREADS=1" (three nodes on a small machine).
CLUSTER_NODE_ENV=${CLUSTER_NODE_ENV:-}
RATE=${RATE:-5}
DURATION=${DURATION:-20}
DRAIN=${DRAIN:-5}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-64}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-19500}
IDLE_HOLD=${IDLE_HOLD:-10}
FAILOVER_DURATION=${FAILOVER_DURATION:-30}
FAILOVER_KILL_AFTER=${FAILOVER_KILL_AFTER:-10}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-200}
HISTORY_CLIENTS=${HISTORY_CLIENTS:-64}
HISTORY_SEED=${HISTORY_SEED:-200}
INGEST_CHANNELS=${INGEST_CHANNELS:-200}
PRESENCE_CONNECTIONS=${PRESENCE_CONNECTIONS:-5000}
REGISTRATIONS=${REGISTRATIONS:-200}
REGISTER_CONCURRENCY=${REGISTER_CONCURRENCY:-8}
RECOVERY_WAVE_SHARE=${RECOVERY_WAVE_SHARE:-0.1}
RECOVERY_WAVE_EVERY=${RECOVERY_WAVE_EVERY:-10}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-900}

PG_ADMIN_URL=""
CLUSTER=0
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
CEILING_ONLY=0
REPORT_IN=""
REPORT_OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --postgres) PG_ADMIN_URL=${2:?--postgres needs a URL}; shift 2 ;;
        --ceiling-only) CEILING_ONLY=1; shift ;;
        --cluster) CLUSTER=${2:?--cluster needs a node count}; shift 2 ;;
        --report)
            REPORT_IN=${2:?--report needs a .jsonl file}; shift 2
            if [[ $# -gt 0 && $1 != -* ]]; then REPORT_OUT=$1; shift; fi ;;
        -h|--help) sed -n '2,49p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

log() { echo "[run.sh] $*" >&2; }
if (( CLUSTER > 0 )) && [[ -z "$PG_ADMIN_URL" ]]; then
    echo "--cluster needs --postgres (a cluster runs on PostgreSQL)" >&2
    exit 2
fi

# ---- report only --------------------------------------------------------------------------
if [[ -n "$REPORT_IN" ]]; then
    REPORT_IN=$(realpath "$REPORT_IN")
    REPORT_OUT=$(realpath -m "${REPORT_OUT:-${REPORT_IN%.jsonl}.html}")
    cd "$ROOT"
    [[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p palaver-bench --bin report
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    exec "$TARGET_DIR/release/report" "$REPORT_IN" --out "$REPORT_OUT" --note "${REPORT_NOTE:-}"
fi

# ---- limits ---------------------------------------------------------------------------
# Each side of a socket needs a descriptor: raise to the hard limit (20000 here).
ulimit -n "$(ulimit -Hn)" || true
FD_LIMIT=$(ulimit -n)
if (( IDLE_CONNECTIONS + 200 > FD_LIMIT )); then
    log "IDLE_CONNECTIONS=$IDLE_CONNECTIONS does not fit the open-file limit $FD_LIMIT; using $((FD_LIMIT - 200))"
    IDLE_CONNECTIONS=$((FD_LIMIT - 200))
fi

# ---- build ----------------------------------------------------------------------------
cd "$ROOT"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building palaver-bench (release)"
    cargo build --release -p palaver-bench
    if (( ! CEILING_ONLY )); then
        log "building palaver (release)"
        if ! cargo build --release -p palaver; then
            log "palaver does not build: running the ceiling only"
            CEILING_ONLY=1
        fi
    fi
fi
LOADGEN=${LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
CEILING="$TARGET_DIR/release/ceiling"
REPORT="$TARGET_DIR/release/report"
PALAVER=${PALAVER_BIN:-$TARGET_DIR/release/palaver}

mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/latest.jsonl"
SUMMARY="$RESULTS_DIR/latest-summary.txt"
REPORT_HTML="$RESULTS_DIR/latest.html"
LOADGEN_LOG="$RESULTS_DIR/loadgen.log"
: > "$RESULTS"
: > "$LOADGEN_LOG"

# ---- server lifecycle -------------------------------------------------------------------
SERVER_PID=""
SERVER_URL=""
DATA_DIR=""
PG_DB=""
# A cluster's other nodes (SERVER_PID is its first), and every pid whose CPU counts.
CLUSTER_PIDS=()
ALSO_PIDS=""

stop_server() {
    local pid
    for pid in "${CLUSTER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${CLUSTER_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CLUSTER_PIDS=()
    ALSO_PIDS=""
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [[ -n "$DATA_DIR" ]]; then rm -rf "$DATA_DIR"; DATA_DIR=""; fi
    if [[ -n "$PG_DB" ]]; then
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null || log "could not drop database $PG_DB"
        PG_DB=""
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The admin URL with its database name replaced.
pg_url_for() {
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
EOF
}

start_ceiling() { # $1 = log file
    # shellcheck disable=SC2086 # CEILING_ARGS is a list of flags
    "$CEILING" --bind 127.0.0.1:0 $CEILING_ARGS >"$1" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        SERVER_URL=$(grep -m1 -o 'http://[0-9.:]*' "$1" || true)
        [[ -n "$SERVER_URL" ]] && return 0
        sleep 0.1
    done
    log "ceiling did not report its address (see $1)"
    return 1
}

start_palaver() { # $1 = log file; extra VAR=value settings may follow
    local log_file=$1
    shift
    local port
    port=$(free_port)
    DATA_DIR=$(mktemp -d -t palaver-bench.XXXXXX)
    local -a env=(
        PALAVER_BIND="127.0.0.1:$port"
        PALAVER_DATA_DIR="$DATA_DIR"
        PALAVER_REGISTRATION=open
        PALAVER_HTTP_RATE_LIMITS=off
        RUST_LOG="${PALAVER_RUST_LOG:-warn}"
        "$@"
    )
    if [[ -n "$PG_ADMIN_URL" ]]; then
        PG_DB="palaver_bench_$(date +%s)_$RANDOM"
        psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >/dev/null
        env+=(DATABASE_URL="$(pg_url_for "$PG_ADMIN_URL" "$PG_DB")")
    fi
    env "${env[@]}" "$PALAVER" >"$log_file" 2>&1 &
    SERVER_PID=$!
    SERVER_URL="http://127.0.0.1:$port"
    for _ in $(seq 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || { log "palaver exited at start (see $log_file)"; return 1; }
        curl -sf -o /dev/null --max-time 1 "$SERVER_URL/api/health" && return 0
        sleep 0.2
    done
    log "palaver did not become healthy within 60 s (see $log_file)"
    return 1
}

start_cluster() { # $1 = log file prefix: N nodes on one fresh database, waited until settled
    local prefix=$1 i port urls="" pid
    DATA_DIR=$(mktemp -d -t palaver-bench.XXXXXX)
    PG_DB="palaver_bench_$(date +%s)_$RANDOM"
    psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >/dev/null
    local nats_prefix="bench$RANDOM$RANDOM" ports=()
    NODE_PIDS=""
    for i in $(seq "$CLUSTER"); do
        port=$(free_port)
        ports+=("$port")
        # shellcheck disable=SC2086 # CLUSTER_NODE_ENV is a list of settings
        env PALAVER_BIND="127.0.0.1:$port" PALAVER_DATA_DIR="$DATA_DIR" PALAVER_REGISTRATION=open \
            PALAVER_HTTP_RATE_LIMITS=off RUST_LOG="${PALAVER_RUST_LOG:-warn}" \
            DATABASE_URL="$(pg_url_for "$PG_ADMIN_URL" "$PG_DB")" PALAVER_NATS_URL="$NATS_URL" \
            PALAVER_NODE_ID="n$i" PALAVER_NATS_PREFIX="$nats_prefix" $CLUSTER_NODE_ENV \
            "$PALAVER" >"$prefix.n$i.log" 2>&1 &
        pid=$!
        if (( i == 1 )); then SERVER_PID=$pid; else CLUSTER_PIDS+=("$pid"); ALSO_PIDS+="${ALSO_PIDS:+,}$pid"; fi
        NODE_PIDS+="${NODE_PIDS:+,}$pid"
        urls+="${urls:+,}http://127.0.0.1:$port"
    done
    SERVER_URL=$urls
    local nats_pid
    nats_pid=$(pgrep -x nats-server | head -1 || true)
    [[ -n "$nats_pid" ]] && ALSO_PIDS+="${ALSO_PIDS:+,}$nats_pid"
    for _ in $(seq 300); do
        local settled=0
        for port in "${ports[@]}"; do
            curl -sf --max-time 1 "http://127.0.0.1:$port/api/health" | jq -e '.cluster.state == "settled"' >/dev/null \
                && settled=$((settled + 1))
        done
        (( settled == CLUSTER )) && return 0
        sleep 0.2
    done
    log "the cluster did not settle within 60 s (see $prefix.n*.log)"
    return 1
}

# ---- scenarios --------------------------------------------------------------------------
# run_scenario KIND LABEL LOADGEN-ARGS... : fresh server, one loadgen run, server stopped.
# SERVER_ENV (an array of VAR=value) is passed to Palaver for this run.
SERVER_ENV=()
selected() { [[ -z "${ONLY:-}" || ",$ONLY," == *",$1,"* ]]; }
run_scenario() {
    local kind=$1 lb=$2
    shift 2
    selected "$lb" || return 0
    local server_log="$RESULTS_DIR/$kind-$lb.server.log"
    log "$kind / $lb: starting server"
    local -a extra=()
    if [[ $kind == ceiling ]]; then
        start_ceiling "$server_log" || { stop_server; return 0; }
        extra=(--ceiling)
    elif [[ $kind == cluster ]]; then
        start_cluster "$server_log" || { stop_server; return 0; }
        extra=(--also-pids "$ALSO_PIDS" --node-pids "$NODE_PIDS")
    else
        start_palaver "$server_log" "${SERVER_ENV[@]}" || { stop_server; return 0; }
    fi
    local out
    if out=$(timeout --kill-after=10 "$SCENARIO_TIMEOUT" "$LOADGEN" --url "$SERVER_URL" --server-pid "$SERVER_PID" \
            --label "$lb" "${extra[@]}" "$@" 2> >(tee -a "$LOADGEN_LOG" >&2)); then
        echo "$out" >> "$RESULTS"
        echo "$out" | jq -c 'del(.at, .target)' >&2
    else
        log "$kind / $lb: FAILED (see $LOADGEN_LOG)"
        jq -nc --arg k "$kind" --arg l "$lb" '{target_kind: $k, label: $l, error: "loadgen failed"}' >> "$RESULTS"
    fi
    stop_server
}

run_all() { # $1 = ceiling | palaver
    local kind=$1
    local -a common=(--rate "$RATE" --duration "$DURATION" --drain "$DRAIN" --payload-bytes "$PAYLOAD_BYTES"
        --connect-concurrency "$CONNECT_CONCURRENCY")
    run_scenario "$kind" "fanout-s$SENDERS" --scenario fanout "${common[@]}" \
        --receivers "$RECEIVERS" --senders "$SENDERS"
    run_scenario "$kind" "fanout-s$SENDERS_HIGH" --scenario fanout "${common[@]}" \
        --receivers "$RECEIVERS" --senders "$SENDERS_HIGH"
    local saturated
    for saturated in ${SATURATION//,/ }; do
        run_scenario "$kind" "fanout-s$saturated" --scenario fanout "${common[@]}" \
            --receivers "$RECEIVERS" --senders "$saturated"
    done
    run_scenario "$kind" idle --scenario idle --connect-concurrency "$CONNECT_CONCURRENCY" \
        --connections "$IDLE_CONNECTIONS" --hold "$IDLE_HOLD" --source-ips "$SOURCE_IPS"
    if [[ $kind == palaver ]]; then
        # No ceiling counterpart: the ceiling keeps no history.
        run_scenario "$kind" history --scenario history "${common[@]}" \
            --clients "$HISTORY_CLIENTS" --seed-messages "$HISTORY_SEED"
        # The same endpoint with the channel actors' in-memory page turned off.
        SERVER_ENV=(PALAVER_HISTORY_CACHE=off)
        run_scenario "$kind" history-nocache --scenario history "${common[@]}" \
            --clients "$HISTORY_CLIENTS" --seed-messages "$HISTORY_SEED"
        SERVER_ENV=()
        run_scenario "$kind" ingest --scenario ingest "${common[@]}" --channels "$INGEST_CHANNELS"
        # Needs communities: Palaver only. One user per socket: every connect is a presence change.
        run_scenario "$kind" presence --scenario presence --connect-concurrency "$CONNECT_CONCURRENCY" \
            --connections "$PRESENCE_CONNECTIONS" --sockets-per-user 1 --source-ips "$SOURCE_IPS"
        # Password hashing's memory: RSS after N registrations (argon2, 19 MiB each).
        run_scenario "$kind" register --scenario register --registrations "$REGISTRATIONS" \
            --setup-concurrency "$REGISTER_CONCURRENCY"
        # Needs stream positions: Palaver only. Compare its steady receivers with fanout-s$SENDERS.
        run_scenario "$kind" recovery --scenario recovery "${common[@]}" \
            --receivers "$RECEIVERS" --senders "$SENDERS" \
            --wave-share "$RECOVERY_WAVE_SHARE" --wave-every "$RECOVERY_WAVE_EVERY"
    fi
}

if (( CLUSTER > 0 )); then
    # One node, then the cluster, at the same load on the same machine.
    run_cluster_pair() { # LABEL LOADGEN-ARGS...
        local lb=$1
        shift
        run_scenario palaver "$lb" "$@"
        selected "$lb" || return 0
        ONLY="" run_scenario cluster "c$CLUSTER-$lb" "$@"
    }
    common=(--rate "$RATE" --duration "$DURATION" --drain "$DRAIN" --payload-bytes "$PAYLOAD_BYTES"
        --connect-concurrency "$CONNECT_CONCURRENCY")
    run_cluster_pair "fanout-s$SENDERS" --scenario fanout "${common[@]}" --receivers "$RECEIVERS" --senders "$SENDERS"
    run_cluster_pair "fanout-s$SENDERS_HIGH" --scenario fanout "${common[@]}" \
        --receivers "$RECEIVERS" --senders "$SENDERS_HIGH"
    run_cluster_pair ingest --scenario ingest "${common[@]}" --channels "$INGEST_CHANNELS"
    run_cluster_pair idle --scenario idle --connect-concurrency "$CONNECT_CONCURRENCY" \
        --connections "$IDLE_CONNECTIONS" --hold "$IDLE_HOLD" --source-ips "$SOURCE_IPS"
    # No one-node counterpart: the channel's owner is SIGKILLed mid-run.
    if selected failover; then
        ONLY="" run_scenario cluster "c$CLUSTER-failover" --scenario failover --rate "$RATE" \
            --payload-bytes "$PAYLOAD_BYTES" --senders "$SENDERS" \
            --duration "$FAILOVER_DURATION" --kill-after "$FAILOVER_KILL_AFTER"
    fi
    jq -rs --arg n "c$CLUSTER-" '
        def num: if type == "number" then (. * 1000 | round / 1000 | tostring) else "n/a" end;
        def pick($lb): map(select(.label == $lb and (.error | not))) | last;
        def row($lb; $name; f):
            (pick($lb) | if . == null then null else f end) as $s
            | (pick($n + $lb) | if . == null then null else f end) as $c
            | [$lb, $name, ($s | num), ($c | num),
               (if ($s | type) == "number" and ($c | type) == "number" and $s != 0 then ($c / $s | num) else "n/a" end)];
        (["scenario", "metric", "one node", "cluster", "cluster/one node"]),
        ((map(.label) | unique | map(select(startswith("fanout-")))[]) as $f
            | row($f; "recv p99 ms"; .recv_latency_ms.p99), row($f; "ack p99 ms"; .ack_latency_ms.p99),
              row($f; "deliveries/s"; .deliveries_per_s), row($f; "deliveries per CPU-s"; .deliveries_per_cpu_s),
              row($f; "lost"; .lost),
              (pick($n + $f) | if . == null or .by_node == null then empty else
                  [$f, "cluster recv p99 ms by node", "-", (.by_node.recv_latency_ms | map(.p99 | num) | join(" / ")), "-"],
                  [$f, "cluster ack p99 ms by sender node", "-", (.by_node.ack_latency_ms | map(.p99 | num) | join(" / ")), "-"] end)),
        row("ingest"; "committed msgs/s"; .committed_per_s), row("ingest"; "missing after"; .missing_after),
        row("idle"; "connect total s"; .connect_total_s), row("idle"; "RSS per socket KiB (first node)"; .rss_per_socket_kb),
        (pick($n + "failover") | if . == null then empty else
            (["failover", "unavailable window p50 / max ms", "-",
              "\(.unavailable_window_ms.p50 | num) / \(.unavailable_window_ms.max | num)", "-"],
             ["failover", "acked / missing / stored twice", "-",
              "\(.acked) / \(.acked_missing) / \(.stored_twice)", "-"]) end)
        | @tsv' "$RESULTS" | column -t -s $'\t' | tee "$SUMMARY"
    log "results: $RESULTS, summary: $SUMMARY"
    exit 0
fi

run_all ceiling
if (( CEILING_ONLY )); then
    log "skipping palaver (--ceiling-only)"
elif [[ ! -x "$PALAVER" ]]; then
    log "no palaver binary at $PALAVER: skipping palaver"
else
    run_all palaver
fi

# ---- summary ----------------------------------------------------------------------------
# Ratios are palaver/ceiling: above 1 is worse for latencies, times and memory; below 1
# is worse for throughput.
jq -rs --arg s1 "fanout-s$SENDERS" --arg s2 "fanout-s$SENDERS_HIGH" \
    --arg saturation "$SATURATION" '
    def pick($kind; $lb): map(select(.target_kind == $kind and .label == $lb)) | last;
    def num: if type == "number" then (. * 1000 | round / 1000 | tostring) else "n/a" end;
    def row($lb; $name; f):
        (pick("ceiling"; $lb) | if . == null or .error then null else f end) as $c
        | (pick("palaver"; $lb) | if . == null or .error then null else f end) as $p
        | [$lb, $name, ($c | num), ($p | num),
           (if ($c | type) == "number" and ($p | type) == "number" and $c != 0 then ($p / $c | num) else "n/a" end)];
    (["scenario", "metric", "ceiling", "palaver", "palaver/ceiling"]),
    (($s1, $s2, ($saturation | split(",")[] | select(. != "") | "fanout-s\(.)")) as $f
        | row($f; "recv p99 ms"; .recv_latency_ms.p99),
          row($f; "deliveries/s"; .deliveries_per_s),
          row($f; "deliveries per CPU-s"; .deliveries_per_cpu_s),
          row($f; "ack p99 ms"; .ack_latency_ms.p99),
          row($f; "lost"; .lost)),
    row("idle"; "connect total s"; .connect_total_s),
    row("idle"; "connect p99 ms"; .connect_ms.p99),
    row("idle"; "RSS per socket KiB"; .rss_per_socket_kb),
    row("history"; "requests/s"; .requests_per_s),
    row("history"; "p99 ms"; .latency_ms.p99),
    row("history-nocache"; "requests/s"; .requests_per_s),
    (pick("palaver"; "history") as $on | pick("palaver"; "history-nocache") as $off
        | if $on == null or $off == null or $on.error or $off.error then empty
          else ["history", "in-memory page on/off requests/s", "-", "-", ($on.requests_per_s / $off.requests_per_s | num)] end),
    row("ingest"; "committed msgs/s"; .committed_per_s),
    row("ingest"; "missing after"; .missing_after),
    row("presence"; "quiet after s"; .quiet_after_s),
    row("presence"; "max presence frames/socket"; .presence_frames_per_socket.max),
    row("recovery"; "replay p50 ms"; .replay_latency_ms.p50),
    row("recovery"; "replay p99 ms"; .replay_latency_ms.p99),
    row("recovery"; "recovered share"; .recovered_share),
    row("recovery"; "bytes replayed per reconnect"; .replayed_bytes.per_reconnect),
    row("recovery"; "gaps + duplicates"; .gaps + .duplicates + .cseq_not_rising),
    row("recovery"; "steady recv p99 ms"; .steady.recv_latency_ms.p99),
    row("recovery"; "steady recv p99 ms, sent in a wave (2 s)"; .steady.recv_latency_in_waves_ms.p99),
    row("recovery"; "steady recv p99 ms, sent between waves"; .steady.recv_latency_between_waves_ms.p99),
    (pick("palaver"; $s1) as $plain | pick("palaver"; "recovery") as $waves
        | if $plain == null or $waves == null or $plain.error or $waves.error then empty
          else ["recovery", "steady recv p99 / \($s1) recv p99", "-", "-",
                ($waves.steady.recv_latency_ms.p99 / $plain.recv_latency_ms.p99 | num)],
               ["recovery", "steady deliveries/s per receiver / \($s1)", "-", "-",
                ($waves.steady.deliveries_per_s_per_receiver / ($plain.deliveries_per_s / $plain.receivers) | num)] end)
    | @tsv' "$RESULTS" | column -t -s $'\t' | tee "$SUMMARY"

# ---- report -------------------------------------------------------------------------------
# The target table (README's targets, met/missed) after the ratios, and the HTML page.
if [[ -x "$REPORT" ]]; then
    echo | tee -a "$SUMMARY"
    "$REPORT" "$RESULTS" --out "$REPORT_HTML" --note "${REPORT_NOTE:-}" | tee -a "$SUMMARY" \
        || log "report failed"
    log "results: $RESULTS, summary: $SUMMARY, report: $REPORT_HTML"
else
    log "no report binary at $REPORT: skipped $REPORT_HTML"
    log "results: $RESULTS, summary: $SUMMARY"
fi
