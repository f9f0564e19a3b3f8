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
#
# The disk's own write rate (dd conv=fsync) is measured in the same run, and the report gives
# the ratios to the issue-14 targets: 1 MiB objects end to end >= 0.8x of (dd rate / 2), both
# sites writing to one disk; the big object end to end <= 1.3x its upload alone; the upload
# >= 0.8x of the dd rate. The load average at the start and the end is printed too.
#   MIRRORGATE_BIN=target/release/mirrorgate  KEEP=1 keeps the work directory.
#   GROUP_WINDOW_US sets both sites' [metadata] group_commit_window_us (default: theirs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N_SMALL="${N_SMALL:-1000}"
CONC="${CONC:-8}"
WORKERS="${WORKERS:-4}"
BIG_GIB="${BIG_GIB:-4}"
IPERF_SECS="${IPERF_SECS:-5}"
DD_MIB="${DD_MIB:-1024}"
BIN="${MIRRORGATE_BIN:-$ROOT/target/release/mirrorgate}"
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
if [ ! -x "$BIN" ]; then
    log "building mirrorgate (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
fi

# ---- work directory, processes, cleanup ----------------------------------------------------
WORK="$(mktemp -d /tmp/mirrorgate-replication.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
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

PA=$(free_port); PB=$(free_port); PI=$(free_port)
while [ "$PB" = "$PA" ]; do PB=$(free_port); done
while [ "$PI" = "$PA" ] || [ "$PI" = "$PB" ]; do PI=$(free_port); done

site_config() { # id port peer-id peer-port replication-enabled
    mkdir -p "$WORK/$1"
    cat > "$WORK/$1.toml" <<EOF
[site]
id = "$1"
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"
data_dir = "$WORK/$1"

[storage]
backend = "fs"

[[peers]]
id = "$3"
url = "http://127.0.0.1:$4"

[replication]
enabled = $5
workers = $WORKERS

[auth]
enabled = false
EOF
    if [ -n "${GROUP_WINDOW_US:-}" ]; then
        printf '\n[metadata]\ngroup_commit_window_us = %s\n' "$GROUP_WINDOW_US" >> "$WORK/$1.toml"
    fi
}
# A fans its writes out to B; B knows A (it pulls the bytes from A) but sends nothing back.
site_config site-a "$PA" site-b "$PB" true
site_config site-b "$PB" site-a "$PA" false
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$WORK/site-a.toml" > "$WORK/site-a.log" 2>&1 &
PIDS+=($!)
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$WORK/site-b.toml" > "$WORK/site-b.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PA/healthz"
wait_http "http://127.0.0.1:$PB/healthz"
A="http://127.0.0.1:$PA"
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
log "(a) $N_SMALL objects of 1 MiB at A, $CONC clients"
for i in $(seq 0 $((N_SMALL - 1))); do
    printf '%s %s\n' "$WORK/src/$((i % 16))" "$A/cloudclonestore/$BUCKET/small/$i"
done > "$WORK/small.list"
t0=$(now)
xargs -r -P "$CONC" -n 2 sh -c \
    'exec curl -fsS -o /dev/null --max-time 120 -X POST -H "'"$H"'" -H "Expect:" -T "$0" "$1"' \
    < "$WORK/small.list"
tw=$(now)
te=$(wait_replicated $((base + N_SMALL)) 900)
at_b "small/0" 1048576; at_b "small/$((N_SMALL - 1))" 1048576
record "small $N_SMALL $((N_SMALL * 1048576)) $t0 $tw $te"

# ---- (b) one big object --------------------------------------------------------------------
if [ "$BIG_GIB" -gt 0 ]; then
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
        t0=$(now)
        curl -fsS -o /dev/null --max-time 1800 -X POST -H "$H" -H "Expect:" -T "$WORK/big.bin" \
            "$A/cloudclonestore/$BUCKET/big.bin"
        tw=$(now)
        te=$(wait_replicated $((base + 1)) 1800)
        at_b big.bin "$((BIG_GIB * 1024 * 1024 * 1024))"
        record "big 1 $((BIG_GIB * 1024 * 1024 * 1024)) $t0 $tw $te"
        rm -f "$WORK/big.bin"
    fi
fi

# ---- report --------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)
python3 - "$RESULTS" "$IPERF_GBS" "$CONC" "$WORKERS" "$DD_MBS" "$LOAD_START" "$LOAD_END" <<'PY'
import sys, os, datetime
results, iperf, conc, workers = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
dd, load_start, load_end = float(sys.argv[5]), sys.argv[6], sys.argv[7]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print()
print(f"replication.sh, {datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), A -> B on 127.0.0.1,"
      f" [replication] workers = {workers}, {conc} writing clients")
print()
print(f"loopback TCP (iperf3, 1 stream, same run): {iperf:.2f} GB/s; disk (dd conv=fsync): {dd:.0f} MB/s;"
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
    else:
        overlap, upload = e2e / w, size / w / 1e6 / dd
        targets.append(f"big object end to end: {overlap:.2f}x its upload (target <= 1.3x: {'met' if overlap <= 1.3 else 'missed'})")
        targets.append(f"big object upload: {upload:.2f}x of dd (target >= 0.8x: {'met' if upload >= 0.8 else 'missed'})")
print()
for t in targets:
    print(f"- {t}")
PY
