#!/usr/bin/env bash
# Replication throughput benchmark, site A to site B on 127.0.0.1, next to the loopback TCP
# bandwidth (iperf3) measured in the same run.
#
#   (a) N_SMALL objects of 1 MiB written at A by CONC concurrent curl clients;
#   (b) one object of BIG_GIB GiB written at A (skipped, with a message, when the work
#       directory's filesystem has less than 12 GiB free).
#
# Each phase is timed end to end: from the first write at A to the moment A's Backbeat metrics
# (GET /_/backbeat/api/metrics/crr/site-b/all) show nothing pending for site-b and the
# completions counter has grown by the number of objects written. Completions are recorded by
# A when B reports the order done, i.e. after B pulled the bytes, verified their SHA-256 and
# committed them. A benchmark, not a test: nothing is asserted.
#
# Usage: loadtest/replication.sh
# Environment (all optional):
#   N_SMALL=1000  CONC=8  WORKERS=4  BIG_GIB=4  (BIG_GIB=0 skips (b))  IPERF_SECS=5  DD_MIB=1024
#   CLIENT=parallel: the CONC clients of (a) are one `curl --parallel` (CONC transfers at a
#   time over kept-alive connections, as an SDK's pool would); CLIENT=processes: one curl
#   process per object, CONC at a time (the script's client before 2026-12-07, whose 1000
#   process starts took about a third of this 2-core machine's CPU during (a))
#   OVERLAP=true  (false: B pulls the big object only once A committed it, as before issue 14's
#   overlap)
#
# The disk's own write rate (dd conv=fsync) is measured in the same run, and the report gives
# the ratios to the issue-14 targets: 1 MiB objects end to end >= 0.8x of (dd rate / 2), both
# sites writing to one disk; the big object end to end <= 1.3x its upload alone; the upload
# >= 0.8x of the dd rate. The load average at the start and the end is printed too. The same
# disk's rate for durable 1 MiB files (CONC threads: write, fsync, rename, fsync the directory)
# is measured as well: the least a store that keeps each object durable asks of the disk.
#   MIRRORGATE_BIN=target/release/mirrorgate  KEEP=1 keeps the work directory.
#   GROUP_WINDOW_US sets both sites' [metadata] group_commit_window_us (default: theirs).
#
# NODES=2 (issue 18): site A is two `mirrorgate serve` nodes (same [site] id, node_id node-1
# and node-2) sharing one throw-away PostgreSQL cluster (initdb + pg_ctl in the work directory
# on a free 127.0.0.1 port, default settings, fsync on; run as `nobody` when the script runs as
# root) and one fs data directory (fs storage lives in <data_dir>/objects and the config has no
# separate storage path: temporaries are named by UUID and the start-up sweep of <data_dir>/tmp
# runs before any write, so the two nodes can share it). Site B stays one SQLite node and pulls
# from node-1. The CONC clients are split in half, each half writing through one node. The end
# condition is the same: A's Backbeat metrics, read from node-1, are site-wide (they count the
# outbox and the replication events in the shared database). Only phase (a) runs (BIG_GIB is
# ignored). PostgreSQL binaries: initdb and pg_ctl on PATH, else /usr/lib/postgresql/*/bin.
#   NODES=1 (default): the single-node mode, both sites on SQLite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N_SMALL="${N_SMALL:-1000}"
CONC="${CONC:-8}"
WORKERS="${WORKERS:-4}"
BIG_GIB="${BIG_GIB:-4}"
IPERF_SECS="${IPERF_SECS:-5}"
DD_MIB="${DD_MIB:-1024}"
BIN="${MIRRORGATE_BIN:-$ROOT/target/release/mirrorgate}"
NODES="${NODES:-1}"
CLIENT="${CLIENT:-parallel}"
case "$CLIENT" in parallel|processes) ;; *) echo "CLIENT must be parallel or processes" >&2; exit 2 ;; esac
case "$NODES" in 1|2) ;; *) echo "NODES must be 1 or 2" >&2; exit 2 ;; esac
BUCKET=repl
H="x-clonecloudstore-client-id: bench"

log() { printf '[replication] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need_pkg() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (Debian)"
    as_root apt-get update
    as_root apt-get install -y "$2"
}
need_pkg iperf3 iperf3
need_pkg curl curl
need_pkg jq jq
need_pkg python3 python3
need_pkg openssl openssl
pg_bin_dir() { # the directory holding initdb and pg_ctl (symlinks resolved), as the tests look
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    return 1
}
if [ "$NODES" = 2 ]; then
    if ! PG_BIN="$(pg_bin_dir)"; then
        log "installing postgresql (Debian)"
        as_root apt-get update
        as_root apt-get install -y postgresql
        PG_BIN="$(pg_bin_dir)" || die "no PostgreSQL server binaries (initdb, pg_ctl)"
    fi
fi
if [ ! -x "$BIN" ]; then
    log "building mirrorgate (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
fi

# ---- work directory, processes, cleanup ----------------------------------------------------
WORK="$(mktemp -d /tmp/mirrorgate-replication.XXXXXX)"
PIDS=()
PGDATA_DIR=""
# as_pg CMD...: runs a PostgreSQL tool as the cluster's owner (nobody when we are root:
# PostgreSQL refuses to run as root)
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi
}
stop_pg() {
    [ -n "$PGDATA_DIR" ] && [ -f "$PGDATA_DIR/postmaster.pid" ] || return 0
    local pid
    pid=$(head -1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop > /dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
}
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    stop_pg
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
wait_http() {
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not come up"
}

PORTS=()
new_port() { # a free port none of the others picked (sets PORT; no subshell, PORTS grows)
    while :; do
        PORT=$(free_port)
        [[ " ${PORTS[*]:-} " == *" $PORT "* ]] || break
    done
    PORTS+=("$PORT")
}
new_port; PA=$PORT; new_port; PB=$PORT; new_port; PI=$PORT
new_port; PA2=$PORT; new_port; PG_PORT=$PORT   # NODES=2: A's second node, PostgreSQL
PG_URL=""

# ---- NODES=2: a throw-away PostgreSQL cluster in the work directory --------------------------
if [ "$NODES" = 2 ]; then
    chmod 711 "$WORK"   # nobody must reach $WORK/pg
    mkdir -p "$WORK/pg"
    [ "$(id -u)" -ne 0 ] || chown nobody:nogroup "$WORK/pg"
    PGDATA_DIR="$WORK/pg/data"
    log "PostgreSQL ($("$PG_BIN/postgres" --version | awk '{print $3}')) in $PGDATA_DIR on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --no-sync -E UTF8 \
        > "$WORK/pg/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$WORK/pg/initdb.log")"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$WORK/pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=100" start \
        > /dev/null 2>&1 || die "PostgreSQL did not start: $(tail -5 "$WORK/pg/server.log" 2>/dev/null)"
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi

site_config() { # id port peer-id peer-port replication-enabled [node-id data-dir metadata-url]
    local file="$WORK/$1${6:+-$6}.toml" dir="${7:-$WORK/$1}" node_line=""
    [ -z "${6:-}" ] || node_line="node_id = \"$6\""
    mkdir -p "$dir"
    cat > "$file" <<EOF
[site]
id = "$1"
$node_line
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"
data_dir = "$dir"

[storage]
backend = "fs"

[[peers]]
id = "$3"
url = "http://127.0.0.1:$4"

[replication]
enabled = $5
workers = $WORKERS
overlap_uploads = ${OVERLAP:-true}

[auth]
enabled = false

[metadata]
EOF
    [ -z "${8:-}" ] || printf 'url = "%s"\n' "$8" >> "$file"
    [ -z "${GROUP_WINDOW_US:-}" ] || printf 'group_commit_window_us = %s\n' "$GROUP_WINDOW_US" >> "$file"
}
serve() { # config-name: starts a node, logs to $WORK/<config-name>.log
    RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$WORK/$1.toml" > "$WORK/$1.log" 2>&1 &
    PIDS+=($!)
}
# A fans its writes out to B; B knows A (it pulls the bytes from A, node-1 with NODES=2) but
# sends nothing back.
if [ "$NODES" = 2 ]; then
    # One data directory for both nodes: it holds the shared fs storage (objects/, tmp/).
    site_config site-a "$PA" site-b "$PB" true node-1 "$WORK/site-a" "$PG_URL"
    site_config site-a "$PA2" site-b "$PB" true node-2 "$WORK/site-a" "$PG_URL"
    serve site-a-node-1
    wait_http "http://127.0.0.1:$PA/healthz"   # node-1 migrates the database first
    serve site-a-node-2
    wait_http "http://127.0.0.1:$PA2/healthz"
else
    site_config site-a "$PA" site-b "$PB" true
    serve site-a
fi
A_PID=${PIDS[-1]}
site_config site-b "$PB" site-a "$PA" false
serve site-b
B_PID=${PIDS[-1]}
# cpu_secs PID: user + system CPU seconds of a process so far
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# busy_jiffies: "busy total" jiffies of the whole machine so far
busy_jiffies() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
# cpu_mark: remembers the CPU used so far by A (first node), B and the machine
cpu_mark() { CA0=$(cpu_secs "$A_PID"); CB0=$(cpu_secs "$B_PID"); read -r BUSY0 TOTAL0 < <(busy_jiffies); }
# cpu_report PHASE SECONDS: what A, B and the machine used since cpu_mark, into the diagnostics
cpu_report() {
    local busy1 total1
    read -r busy1 total1 < <(busy_jiffies)
    awk -v p="$1" -v w="$2" -v a="$(cpu_secs "$A_PID")" -v a0="$CA0" -v b="$(cpu_secs "$B_PID")" \
        -v b0="$CB0" -v n="$(nproc)" -v busy=$((busy1 - BUSY0)) -v total=$((total1 - TOTAL0)) 'BEGIN {
        hz = '"$(getconf CLK_TCK)"'
        printf "CPU during %s: A %.1f core-s, B %.1f core-s, the rest (writers, kernel threads) %.1f core-s, over %.1f s of wall time; the machine'"'"'s %d cores %.0f%% busy\n",
            p, a - a0, b - b0, busy / hz - (a - a0) - (b - b0), w, n, 100 * busy / total}' >> "$WORK/diagnostics.txt"
}
wait_http "http://127.0.0.1:$PA/healthz"
wait_http "http://127.0.0.1:$PB/healthz"
A="http://127.0.0.1:$PA"
A_NODES=("$A")
[ "$NODES" = 1 ] || A_NODES+=("http://127.0.0.1:$PA2")
METRICS="$A/_/backbeat/api/metrics/crr/site-b/all"

# "pending completions failures" for site-b, as A sees them
counts() {
    curl -fsS "$METRICS" | jq -r '"\(.pending.results.count) \(.completions.results.count) \(.failures.results.count)"'
}
# wait_replicated TARGET_COMPLETIONS MAX_SECONDS: polls every 50 ms; prints the end time
wait_replicated() {
    local target=$1 deadline pending completed failed
    deadline=$(( $(date +%s) + $2 ))
    while :; do
        read -r pending completed failed < <(counts)
        if [ "$pending" -eq 0 ] && [ "$completed" -ge "$target" ]; then now; return 0; fi
        [ "$failed" -eq 0 ] || die "replication failures: $failed (see $WORK/site-*.log)"
        [ "$(date +%s)" -lt "$deadline" ] || die "not replicated after $2 s: pending $pending, completions $completed/$target"
        sleep 0.05
    done
}

# at_b NAME SIZE: B's own store (the remote route) holds the object, with that size
at_b() {
    local size
    size=$(curl -fsS -I -H "$H" "http://127.0.0.1:$PB/replicator/remote/buckets/$BUCKET/$1" \
        | tr -d '\r' | awk -F': ' 'tolower($1) == "x-clonecloudstore-size" {print $2}')
    [ "$size" = "$2" ] || die "B does not hold $1 with $2 bytes (size: '$size')"
}

# ---- loopback TCP bandwidth ----------------------------------------------------------------
log "iperf3 on 127.0.0.1 for ${IPERF_SECS}s"
iperf3 -s -1 -B 127.0.0.1 -p "$PI" > "$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    iperf3 -c 127.0.0.1 -p "$PI" -t "$IPERF_SECS" -J > "$WORK/iperf3.json" 2>/dev/null || true
    jq -e '.error == null' "$WORK/iperf3.json" > /dev/null 2>&1 && break
    sleep 0.1
done
IPERF_GBS=$(jq -e '.end.sum_received.bits_per_second / 8 / 1e9' "$WORK/iperf3.json") \
    || die "iperf3 failed: $(jq -r .error "$WORK/iperf3.json" 2>/dev/null)"

# ---- the disk's own write rate -------------------------------------------------------------
log "dd conv=fsync, ${DD_MIB} MiB on the work directory's disk"
DD_MBS=$(dd if=/dev/zero of="$WORK/dd.bin" bs=1M count="$DD_MIB" conv=fsync 2>&1 \
    | awk '/copied/ {print $(NF-1) * ($NF == "GB/s" ? 1000 : 1)}')
rm -f "$WORK/dd.bin"
# The same disk's rate for what phase (a) asks of it at the least: N_SMALL files of 1 MiB, each
# written to a temporary name, fsync'd, renamed and its directory fsync'd, by CONC threads (no
# hashing, no metadata database, no network).
log "durable 1 MiB files: $N_SMALL by $CONC threads (write, fsync, rename, fsync dir)"
SMALL_MBS=$(python3 - "$WORK/durable" "$N_SMALL" "$CONC" <<'PY'
import os, sys, time, threading
root, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
block, todo, lock = os.urandom(1 << 20), list(range(n)), threading.Lock()
def work():
    dfd = os.open(root, os.O_RDONLY)
    while True:
        with lock:
            if not todo:
                break
            i = todo.pop()
        tmp, final = f"{root}/.{i}", f"{root}/{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, block); os.fsync(fd); os.close(fd)
        os.rename(tmp, final); os.fsync(dfd)
    os.close(dfd)
t0 = time.monotonic()
threads = [threading.Thread(target=work) for _ in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
print(f"{n * (1 << 20) / (time.monotonic() - t0) / 1e6:.0f}")
PY
)
rm -rf "$WORK/durable"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)

# ---- setup ---------------------------------------------------------------------------------
curl -fsS -o /dev/null -X POST -H "$H" "$A/cloudclonestore/$BUCKET"
wait_replicated 1 60 > /dev/null   # the bucket itself is replicated first
mkdir -p "$WORK/src"
for i in $(seq 0 15); do head -c 1048576 /dev/urandom > "$WORK/src/$i"; done

RESULTS="$WORK/results.txt"
: > "$RESULTS"
# phase NAME OBJECTS BYTES T0 T_WRITTEN T_END
record() { echo "$*" >> "$RESULTS"; }

# ---- (a) many 1 MiB objects ----------------------------------------------------------------
base=$(counts | cut -d' ' -f2)
log "(a) $N_SMALL objects of 1 MiB at A ($NODES node(s)), $CONC clients"
# Object i goes to A's node i mod NODES; each node's list is written by CONC/NODES clients.
for n in "${!A_NODES[@]}"; do : > "$WORK/small.list.$n"; done
for i in $(seq 0 $((N_SMALL - 1))); do
    n=$((i % NODES))
    printf '%s %s\n' "$WORK/src/$((i % 16))" "${A_NODES[$n]}/cloudclonestore/$BUCKET/small/$i" \
        >> "$WORK/small.list.$n"
done
# group_commits URL: "commits writes" of a node's group committer so far
group_commits() {
    curl -fsS "$1/metrics" | awk '$1 == "mirrorgate_meta_group_commits_total" {c = $2}
        $1 == "mirrorgate_meta_group_writes_total" {w = $2} END {printf "%d %d\n", c, w}'
}
GC0=(); for u in "${A_NODES[@]}"; do GC0+=("$(group_commits "$u")"); done
SAMPLER=""
if [ "$NODES" = 2 ]; then
    # What PostgreSQL's client backends are doing, every 0.2 s during phase (a) (one psql,
    # stopped after the phase, bounded by timeout): state and wait event of each.
    printf '%s \\watch 0.2\n' "SELECT 'sample', '' UNION ALL SELECT state,
        COALESCE(wait_event_type || ':' || wait_event, '-') FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" \
        | timeout 900 "$PG_BIN/psql" -X -q -At -F '|' -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
        > "$WORK/pg/activity.txt" 2>/dev/null &
    SAMPLER=$!; PIDS+=($!)
fi
WRITERS=()
SERVERS=("${PIDS[@]}")
cpu_mark
t0=$(now)
for n in "${!A_NODES[@]}"; do
    per_node=$(( (CONC + NODES - 1) / NODES ))
    if [ "$CLIENT" = processes ]; then
        xargs -r -P "$per_node" -n 2 sh -c \
            'exec curl -fsS -o /dev/null --max-time 120 -X POST -H "'"$H"'" -H "Expect:" -T "$0" "$1"' \
            < "$WORK/small.list.$n" &
    else
        # One curl, per_node transfers at a time over kept-alive connections; each object
        # is its own transfer (url, upload-file and output in that order, per line).
        awk '{printf "url = \"%s\"\nupload-file = \"%s\"\noutput = \"/dev/null\"\n", $2, $1}' \
            "$WORK/small.list.$n" > "$WORK/small.curlrc.$n"
        curl -fsS --no-progress-meter --parallel --parallel-max "$per_node" --max-time 120 -X POST -H "$H" \
            -H "Expect:" --config "$WORK/small.curlrc.$n" &
    fi
    WRITERS+=($!); PIDS+=($!)
done
for w in "${WRITERS[@]}"; do wait "$w" || die "writes at A failed"; done
PIDS=("${SERVERS[@]}")   # the writers are gone: never signal their (reusable) ids
tw=$(now)
te=$(wait_replicated $((base + N_SMALL)) 900)
cpu_report "(a)" "$(awk -v s="$t0" -v e="$te" 'BEGIN {print e - s}')"
at_b "small/0" 1048576; at_b "small/$((N_SMALL - 1))" 1048576
record "small $N_SMALL $((N_SMALL * 1048576)) $t0 $tw $te"
if [ -n "$SAMPLER" ]; then
    kill -TERM "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    unset 'PIDS[-1]'; SAMPLER=""
fi
DIAG="$WORK/diagnostics.txt"
for n in "${!A_NODES[@]}"; do
    read -r c0 w0 <<< "${GC0[$n]}"; read -r c1 w1 < <(group_commits "${A_NODES[$n]}")
    echo "A node $((n + 1)) group committer during (a): $((c1 - c0)) transactions, $((w1 - w0)) writes" >> "$DIAG"
done
if [ -s "$WORK/pg/activity.txt" ] 2>/dev/null; then
    awk -F'|' '$1 == "sample" {n++; next} {k[$1 " " $2]++}
        END {printf "PostgreSQL client backends, mean over %d samples every 0.2 s during (a):", n;
             for (x in k) printf " %s %.2f;", x, k[x] / n; print ""}' "$WORK/pg/activity.txt" >> "$DIAG"
fi

# ---- (b) one big object --------------------------------------------------------------------
if [ "$NODES" = 2 ] && [ "$BIG_GIB" -gt 0 ]; then
    log "(b) skipped: NODES=2 runs phase (a) only"
elif [ "$BIG_GIB" -gt 0 ]; then
    free_gib=$(( $(df -Pk "$WORK" | awk 'NR==2 {print $4}') / 1048576 ))
    if [ "$free_gib" -lt 12 ]; then
        log "(b) skipped: $free_gib GiB free under $WORK, a ${BIG_GIB} GiB object needs 12 GiB (source, A's and B's copies)"
        record "big-skipped"
    else
        log "(b) generating ${BIG_GIB} GiB of pseudo-random bytes (not timed)"
        openssl enc -aes-128-ctr -nosalt -pass pass:mirrorgate -pbkdf2 < /dev/zero 2>/dev/null \
            | head -c "$((BIG_GIB * 1024 * 1024 * 1024))" > "$WORK/big.bin" || true
        [ "$(stat -c %s "$WORK/big.bin")" -eq $((BIG_GIB * 1024 * 1024 * 1024)) ] || die "could not generate big.bin"
        base=$(counts | cut -d' ' -f2)
        log "(b) one ${BIG_GIB} GiB object at A"
        cpu_mark
        t0=$(now)
        curl -fsS -o /dev/null --max-time 1800 -X POST -H "$H" -H "Expect:" -T "$WORK/big.bin" \
            "$A/cloudclonestore/$BUCKET/big.bin"
        tw=$(now)
        te=$(wait_replicated $((base + 1)) 1800)
        cpu_report "(b)" "$(awk -v s="$t0" -v e="$te" 'BEGIN {print e - s}')"
        at_b big.bin "$((BIG_GIB * 1024 * 1024 * 1024))"
        record "big 1 $((BIG_GIB * 1024 * 1024 * 1024)) $t0 $tw $te"
        rm -f "$WORK/big.bin"
    fi
fi

# ---- report --------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)
if [ "$NODES" = 2 ]; then
    MODE="site A: 2 nodes on PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (shared fs data directory), site B: 1 node on SQLite"
else
    MODE="site A: 1 node on SQLite, site B: 1 node on SQLite"
fi
case "$CLIENT" in
    parallel) MODE="$MODE; writers: one curl --parallel per node" ;;
    processes) MODE="$MODE; writers: one curl process per object" ;;
esac
python3 - "$RESULTS" "$IPERF_GBS" "$CONC" "$WORKERS" "$DD_MBS" "$LOAD_START" "$LOAD_END" "$MODE" "$SMALL_MBS" <<'PY'
import sys, os, datetime
results, iperf, conc, workers = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
dd, load_start, load_end, mode = float(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8]
small_dd = float(sys.argv[9])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print()
print(f"replication.sh, {datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), A -> B on 127.0.0.1,"
      f" [replication] workers = {workers} per node, {conc} writing clients; {mode}")
print()
print(f"loopback TCP (iperf3, 1 stream, same run): {iperf:.2f} GB/s; disk (dd conv=fsync): {dd:.0f} MB/s;"
      f" durable 1 MiB files ({conc} threads): {small_dd:.0f} MB/s;"
      f" load average {load_start} at the start, {load_end} at the end")
print()
print("| phase | objects | size | writes at A done | end to end (first write to last COMPLETED) | objects/s | GB/s | vs loopback TCP |")
print("|---|---|---|---|---|---|---|---|")
targets = []
for line in open(results):
    f = line.split()
    if f[0] == "big-skipped":
        print("| one big object | - | - | - | skipped: less than 12 GiB free | - | - | - |")
        continue
    name, n, size, t0, tw, te = f[0], int(f[1]), int(f[2]), *map(float, f[3:])
    e2e, w = te - t0, tw - t0
    gbs = size / e2e / 1e9
    label = "1 MiB objects" if name == "small" else "one big object"
    sz = f"{size / 2**20:.0f} MiB" if size < 2**30 else f"{size / 2**30:.0f} GiB"
    rate = f"{n / e2e:,.1f}" if n / e2e >= 10 else f"{n / e2e:.3f}"
    print(f"| {label} | {n} | {sz} | {w:.2f} s | {e2e:.2f} s | {rate} | {gbs:.3f} | {gbs / iperf:.3f}x |")
    if name == "small":
        ratio = gbs * 1000 / (dd / 2)
        targets.append(f"1 MiB objects end to end: {ratio:.2f}x of dd/2 (target >= 0.8x: {'met' if ratio >= 0.8 else 'missed'})")
        targets.append(f"1 MiB objects end to end: {gbs * 1000 / (small_dd / 2):.2f}x of (durable 1 MiB files / 2), the same disk's rate for this workload")
    else:
        overlap, upload = e2e / w, size / w / 1e6 / dd
        targets.append(f"big object end to end: {overlap:.2f}x its upload (target <= 1.3x: {'met' if overlap <= 1.3 else 'missed'})")
        targets.append(f"big object upload: {upload:.2f}x of dd (target >= 0.8x: {'met' if upload >= 0.8 else 'missed'})")
print()
for t in targets:
    print(f"- {t}")
PY
[ ! -s "$WORK/diagnostics.txt" ] || sed 's/^/- /' "$WORK/diagnostics.txt"
