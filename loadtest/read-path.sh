#!/usr/bin/env bash
# Read-path benchmark: mirrorgate against nginx and against the machine's own limits, on
# 127.0.0.1 only, in one run.
#
#   large:  GET of a 64 MiB object through two mirrorgate hops
#           (client -> A /replicator/local/... -> topology lookup -> B /replicator/remote/...,
#            SHA-256 verified at B on the way out of storage and at A on the way through)
#           vs client -> nginx reverse proxy (proxy_buffering off, upstream keepalive)
#                     -> nginx file server (sendfile on).
#   small:  GET and HEAD of a 1 KiB object at B, with SMALL_CONC and BIG_CONC connections, on
#           two routes: the replicator remote route (peer class; the sites run with auth off)
#           and the accessor route (client class), each vs the same nginx proxy -> file
#           server pair serving a 1 KiB file.
#   single: one site (B), 1 GiB upload vs `dd conv=fsync` of the same bytes on the same disk,
#           1 GiB download vs `openssl speed -evp sha256` on one core (a download hashes
#           every byte once).
#   memory: A and B restarted, then MEM_STREAMS concurrent GETs of the 64 MiB object through
#           both hops; peak resident memory (VmHWM) of each site.
#
# Every oha scenario is run ROUNDS times with the same oha settings, alternating which side
# goes first; the table shows medians, per-round values and the ratio to the reference of the
# same run. A benchmark, not a test: nothing is asserted beyond the bytes being right.
#
# Usage: loadtest/read-path.sh            (from anywhere; needs root or sudo-less apt for nginx)
# Environment (all optional):
#   DURATION=10s  LARGE_CONC=8  SMALL_CONC=32  BIG_CONC=256  ROUNDS=3  WARMUP=3s  LARGE_MIB=64
#   SINGLE_MIB=1024 (0 skips the single-site scenario)  MEM_STREAMS=64 (0 skips the memory one)
#   SKIP_SMALL=1 skips the 1 KiB scenarios (for a quick look at the large path)
#   NGINX_WORKERS=$(nproc)  PROXY_BUFFER=64k  MIRRORGATE_BIN=target/release/mirrorgate
#   KEEP=1 keeps the work directory (configs, logs, raw oha JSON).
#   PIN=1 runs oha on CPU 0 and every server (mirrorgate, nginx) on the other CPUs (taskset),
#   so the load generator and the servers do not share cores (nginx then gets one worker per
#   server CPU unless NGINX_WORKERS says otherwise).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/loadtest"
DURATION="${DURATION:-10s}"
LARGE_CONC="${LARGE_CONC:-8}"
SMALL_CONC="${SMALL_CONC:-32}"
BIG_CONC="${BIG_CONC:-256}"
SINGLE_MIB="${SINGLE_MIB:-1024}"
MEM_STREAMS="${MEM_STREAMS:-64}"
RUN_SMALL=$([ "${SKIP_SMALL:-0}" = 1 ] && echo 0 || echo 1)
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-3s}"
LARGE_MIB="${LARGE_MIB:-64}"
NGINX_WORKERS_ASKED="${NGINX_WORKERS:-}"
NGINX_WORKERS="${NGINX_WORKERS:-$(nproc)}"
PROXY_BUFFER="${PROXY_BUFFER:-64k}"
BIN="${MIRRORGATE_BIN:-$ROOT/target/release/mirrorgate}"
ON_SERVER_CPUS=(); ON_CLIENT_CPU=()
if [ "${PIN:-0}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    ON_SERVER_CPUS=(taskset -c "1-$(( $(nproc) - 1 ))"); ON_CLIENT_CPU=(taskset -c 0)
    NGINX_WORKERS="${NGINX_WORKERS_ASKED:-$(( $(nproc) - 1 ))}"   # one per server CPU
fi
CLIENT=bench
BUCKET=bench
H="x-clonecloudstore-client-id: $CLIENT"

log() { printf '[read-path] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nginx >/dev/null 2>&1; then
    log "installing nginx (Debian)"
    as_root apt-get update
    as_root apt-get install -y nginx
fi
NGINX="$(command -v nginx)"
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
    log "installing oha"
    # The newest oha first; if it needs a newer rustc than the one installed, a pinned one.
    cargo install oha --locked || cargo install oha --locked --version 1.16.0
fi
command -v python3 >/dev/null 2>&1 || { as_root apt-get update; as_root apt-get install -y python3; }
command -v curl >/dev/null 2>&1 || { as_root apt-get update; as_root apt-get install -y curl; }
if [ ! -x "$BIN" ]; then
    log "building mirrorgate (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
fi
# oha renamed its JSON switch: -j up to 1.4, --output-format json from 1.5 on.
if oha --help 2>&1 | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); else OHA_JSON=(-j); fi
OHA_WAIT=()
if oha --help 2>&1 | grep -q -- '--wait-ongoing-requests-after-deadline'; then
    OHA_WAIT=(--wait-ongoing-requests-after-deadline)
fi

# ---- work directory, processes, cleanup ----------------------------------------------------
WORK="$(mktemp -d /tmp/mirrorgate-read-path.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
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
wait_http() { # url: bounded wait until it answers
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not come up"
}

PA=$(free_port); PB=$(free_port); PF=$(free_port); PP=$(free_port)
while [ "$PB" = "$PA" ]; do PB=$(free_port); done
while [ "$PF" = "$PA" ] || [ "$PF" = "$PB" ]; do PF=$(free_port); done
while [ "$PP" = "$PA" ] || [ "$PP" = "$PB" ] || [ "$PP" = "$PF" ]; do PP=$(free_port); done

site_config() { # id port peer-id peer-port
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

# Reads only: nothing written here is fanned out, so B's copy stays the only one.
[replication]
enabled = false

[auth]
enabled = false
EOF
}
site_config site-a "$PA" site-b "$PB"
site_config site-b "$PB" site-a "$PA"
start_site() { # id: starts it in the background, its pid in $STARTED
    RUST_LOG="${RUST_LOG:-warn}" "${ON_SERVER_CPUS[@]}" "$BIN" serve --config "$WORK/$1.toml" \
        >> "$WORK/$1.log" 2>&1 &
    STARTED=$!; PIDS+=("$STARTED")
}
stop_site() { # pid: TERM, then KILL after 5 s
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
start_site site-a; PID_A=$STARTED
start_site site-b; PID_B=$STARTED

# nginx: a file server and a reverse proxy in front of it, each its own master.
NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"
WWW="$WORK/www"
mkdir -p "$WWW"
nginx_conf() { # template dir port [upstream-port]
    mkdir -p "$2"
    sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@UPSTREAM_PORT@#${4:-}#g" \
        -e "s#@ROOT@#$WWW#g" -e "s#@WORKERS@#$NGINX_WORKERS#g" -e "s#@USER@#$NGINX_USER#g" \
        -e "s#@PROXY_BUFFER@#$PROXY_BUFFER#g" "$1" > "$2/nginx.conf"
}
nginx_conf "$HERE/nginx-files.conf.in" "$WORK/nginx-files" "$PF"
nginx_conf "$HERE/nginx-proxy.conf.in" "$WORK/nginx-proxy" "$PP" "$PF"
"${ON_SERVER_CPUS[@]}" "$NGINX" -p "$WORK/nginx-files" -c "$WORK/nginx-files/nginx.conf" -e "$WORK/nginx-files/error.log" &
PID_NF=$!; PIDS+=("$PID_NF")
"${ON_SERVER_CPUS[@]}" "$NGINX" -p "$WORK/nginx-proxy" -c "$WORK/nginx-proxy/nginx.conf" -e "$WORK/nginx-proxy/error.log" &
PID_NP=$!; PIDS+=("$PID_NP")

wait_http "http://127.0.0.1:$PA/healthz"
wait_http "http://127.0.0.1:$PB/healthz"

# ---- data ----------------------------------------------------------------------------------
LARGE=large.bin
SMALL=small.bin
log "writing a ${LARGE_MIB} MiB and a 1 KiB object at site B"
head -c "$((LARGE_MIB * 1024 * 1024))" /dev/urandom > "$WWW/$LARGE"
head -c 1024 /dev/urandom > "$WWW/$SMALL"
chmod 755 "$WORK" "$WWW"; chmod 644 "$WWW"/*
curl -fsS -o /dev/null -X POST -H "$H" "http://127.0.0.1:$PB/cloudclonestore/$BUCKET"
for f in "$LARGE" "$SMALL"; do
    curl -fsS -o /dev/null -X POST -H "$H" --data-binary "@$WWW/$f" \
        "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/$f"
done
wait_http "http://127.0.0.1:$PF/$SMALL"
wait_http "http://127.0.0.1:$PP/$SMALL"

MG_LARGE="http://127.0.0.1:$PA/replicator/local/buckets/$BUCKET/$LARGE"
MG_REMOTE="http://127.0.0.1:$PB/replicator/remote/buckets/$BUCKET/$SMALL"
MG_ACCESSOR="http://127.0.0.1:$PB/cloudclonestore/$BUCKET/$SMALL"
NX_LARGE="http://127.0.0.1:$PP/$LARGE"
NX_SMALL="http://127.0.0.1:$PP/$SMALL"

# Every path must return the very bytes written, A naming B as the holder.
want=$(sha256sum < "$WWW/$LARGE" | cut -d' ' -f1)
got=$(curl -fsS -H "$H" -D "$WORK/headers" "$MG_LARGE" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || die "mirrorgate A returned other bytes than written"
grep -qi '^x-clonecloudstore-target-id: site-b' "$WORK/headers" || die "A did not read through B"
got=$(curl -fsS "$NX_LARGE" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || die "nginx returned other bytes than written"
for url in "$MG_REMOTE" "$MG_ACCESSOR"; do
    [ "$(curl -fsS -H "$H" "$url" | sha256sum)" = "$(sha256sum < "$WWW/$SMALL")" ] \
        || die "$url returned other bytes than written"
done

# ---- load ----------------------------------------------------------------------------------
# run NAME DURATION CONC METHOD URL [header]: one oha run, JSON kept as $WORK/NAME.json
run() {
    local name=$1 dur=$2 conc=$3 method=$4 url=$5
    shift 5
    local hdr=()
    [ $# -gt 0 ] && hdr=(-H "$1")
    timeout 300 "${ON_CLIENT_CPU[@]}" oha --no-tui "${OHA_JSON[@]}" "${OHA_WAIT[@]}" -z "$dur" -c "$conc" -m "$method" \
        "${hdr[@]}" "$url" > "$WORK/$name.json"
}
scenario() { # label side conc method round [duration]
    local label=$1 side=$2 conc=$3 method=$4 round=$5 dur=${6:-$DURATION}
    local url hdr=()
    case "$label/$side" in
        large/mg) url=$MG_LARGE; hdr=("$H") ;;
        large/nginx) url=$NX_LARGE ;;
        small/remote) url=$MG_REMOTE; hdr=("$H") ;;
        small/accessor) url=$MG_ACCESSOR; hdr=("$H") ;;
        small/nginx) url=$NX_SMALL ;;
    esac
    log "round $round: $label $method $side (-z $dur -c $conc)"
    run "$label-$method-$conc-$side-$round" "$dur" "$conc" "$method" "$url" "${hdr[@]}"
}

log "warm-up ($WARMUP per scenario)"
for side in mg nginx; do scenario large "$side" "$LARGE_CONC" GET warm "$WARMUP"; done
if [ "$RUN_SMALL" = 1 ]; then
    for side in remote accessor nginx; do scenario small "$side" "$SMALL_CONC" GET warm "$WARMUP"; done
fi
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
        large_order="mg nginx"; small_order="remote accessor nginx"
    else
        large_order="nginx mg"; small_order="nginx accessor remote"
    fi
    for side in $large_order; do scenario large "$side" "$LARGE_CONC" GET "$r"; done
    [ "$RUN_SMALL" = 1 ] || continue
    for conc in "$SMALL_CONC" "$BIG_CONC"; do
        for method in GET HEAD; do
            for side in $small_order; do scenario small "$side" "$conc" "$method" "$r"; done
        done
    done
done
LOAD_AVG_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- peak memory of the load phase ---------------------------------------------------------
peak_memory() { # out-file: "what|pid|VmHWM kB" of every server process
    {
        echo "mirrorgate site A $PID_A"
        echo "mirrorgate site B $PID_B"
        for m in "$PID_NF:nginx files" "$PID_NP:nginx proxy"; do
            pid=${m%%:*}; what=${m#*:}
            echo "$what master $pid"
            for w in $(pgrep -P "$pid" || true); do echo "$what worker $w"; done
        done
    } | while read -r line; do
        pid=${line##* }
        hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        echo "${line% *}|$pid|${hwm:-0}"
    done > "$1"
}
peak_memory "$WORK/memory.txt"

# ---- single site: 1 GiB upload and download ------------------------------------------------
# seconds NAME CMD...: runs CMD, appends "NAME seconds" to $WORK/single.txt
seconds() {
    local name=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    echo "$name $(python3 -c "print($t1 - $t0)")" >> "$WORK/single.txt"
}
upload() { # name
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "$H" -H 'Expect:' \
        --max-time 300 -T "$WORK/single.bin" "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/$1")
    [ "$code" = 201 ] || die "upload of $1 answered $code"
}
download() { # name
    curl -fsS -o /dev/null --max-time 300 -H "$H" "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/$1"
}
: > "$WORK/single.txt"
if [ "$SINGLE_MIB" -gt 0 ]; then
    log "single site: ${SINGLE_MIB} MiB upload vs dd conv=fsync, download vs openssl sha256"
    head -c "$((SINGLE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/single.bin"
    for r in $(seq "$ROUNDS"); do
        log "round $r: dd conv=fsync, upload, download, openssl speed"
        # Same bytes, same disk, the file's pages already cached: what this disk takes.
        seconds "dd-$r" dd if="$WORK/single.bin" of="$WORK/dd.bin" bs=1M conv=fsync status=none
        rm -f "$WORK/dd.bin"
        seconds "upload-$r" upload "single-$r.bin"
        seconds "download-$r" download "single-$r.bin"
        # openssl speed reports 1000s of bytes per second in its last column.
        kbs=$(openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null | tail -1 \
            | awk '{print $NF}' | tr -d k)
        echo "sha256-$r $kbs" >> "$WORK/single.txt"
        if [ "$r" -lt "$ROUNDS" ]; then
            curl -fsS -o /dev/null -X DELETE -H "$H" \
                "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/single-$r.bin"
        fi
    done
    got=$(curl -fsS -H "$H" "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/single-$ROUNDS.bin" \
        | sha256sum | cut -d' ' -f1)
    [ "$got" = "$(sha256sum < "$WORK/single.bin" | cut -d' ' -f1)" ] \
        || die "the ${SINGLE_MIB} MiB download returned other bytes than uploaded"
    curl -fsS -o /dev/null -X DELETE -H "$H" \
        "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/single-$ROUNDS.bin"
    rm -f "$WORK/single.bin"
fi

# ---- memory under MEM_STREAMS concurrent large streams -------------------------------------
: > "$WORK/memory-streams.txt"
if [ "$MEM_STREAMS" -gt 0 ]; then
    log "restarting A and B, then $MEM_STREAMS concurrent ${LARGE_MIB} MiB GETs through both hops"
    stop_site "$PID_A"; stop_site "$PID_B"
    start_site site-a; PID_A=$STARTED
    start_site site-b; PID_B=$STARTED
    wait_http "http://127.0.0.1:$PA/healthz"
    wait_http "http://127.0.0.1:$PB/healthz"
    for pid in "$PID_A" "$PID_B"; do
        echo "idle $pid $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")" >> "$WORK/memory-streams.txt"
    done
    timeout 300 oha --no-tui "${OHA_JSON[@]}" -n "$((MEM_STREAMS * 2))" -c "$MEM_STREAMS" \
        -H "$H" "$MG_LARGE" > "$WORK/memory-streams.json"
    for pid in "$PID_A" "$PID_B"; do
        echo "loaded $pid $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")" >> "$WORK/memory-streams.txt"
    done
fi

# ---- report --------------------------------------------------------------------------------
python3 - "$WORK" "$ROUNDS" "$LARGE_MIB" "$DURATION" "$LARGE_CONC" "$SMALL_CONC" "$BIG_CONC" \
    "$PROXY_BUFFER" "$SINGLE_MIB" "$MEM_STREAMS" "$PID_A" "$PID_B" "$LOAD_AVG_LOAD" "$RUN_SMALL" \
    <<'PY'
import json, statistics, sys, os, datetime
(work, rounds, mib, dur, lc, sc, bc, pbuf, single_mib, streams, pid_a, pid_b,
 loadavg, run_small) = sys.argv[1:]
rounds = int(rounds)

def load(name):
    with open(os.path.join(work, name + ".json")) as f:
        return json.load(f)

def check(d, name):
    codes = d.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if not k.startswith("2")}
    errs = d.get("errorDistribution", {})
    if bad or errs:
        print(f"WARNING {name}: status {codes} errors {errs}", file=sys.stderr)

def metric(prefix, side, what):
    vals = []
    for r in range(1, rounds + 1):
        name = f"{prefix}-{side}-{r}"
        d = load(name)
        check(d, name)
        s = d["summary"]
        if what == "mibs":
            vals.append(s["sizePerSec"] / 2**20)
        elif what == "rps":
            # successful requests per second
            vals.append(s["requestsPerSec"] * s.get("successRate", 1.0))
        else:
            vals.append(d["latencyPercentiles"][what] * 1000.0)
    return statistics.median(vals), vals

def fmt_for(what):
    return (lambda v: f"{v:,.0f}") if what in ("mibs", "rps") else (lambda v: f"{v:.2f}")

def row(title, prefix, side, what, unit, higher_better):
    m, mv = metric(prefix, side, what)
    n, nv = metric(prefix, "nginx", what)
    ratio = m / n if n else float("nan")
    fmt = fmt_for(what)
    per = lambda vs: "/".join(fmt(v) for v in vs)
    met = ratio >= 1.0 if higher_better else ratio <= 1.0
    print(f"| {title} | {fmt(m)} {unit} ({per(mv)}) | {fmt(n)} {unit} ({per(nv)}) "
          f"| **{ratio:.2f}x** | {'met' if met else 'missed'} |")

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print()
print(f"read-path.sh, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, nproc {os.cpu_count()} ({cpu}),"
      f" load average at the end of the oha rounds {loadavg}; medians of {rounds} rounds"
      f" (per-round values in brackets), oha -z {dur}, {lc} connections (large),"
      f" nginx proxy_buffer_size {pbuf}")
print()
print("| scenario | mirrorgate | nginx | mirrorgate / nginx | target (>= 1.0x; latency <= 1.0x) |")
print("|---|---|---|---|---|")
row(f"GET {mib} MiB, 2 hops, -c {lc}: throughput", f"large-GET-{lc}", "mg", "mibs", "MiB/s", True)
for conc in (sc, bc) if run_small == "1" else ():
    for route in ("remote", "accessor"):
        for method in ("GET", "HEAD"):
            prefix = f"small-{method}-{conc}"
            t = f"{method} 1 KiB, {route} route, -c {conc}"
            row(f"{t}: requests/s", prefix, route, "rps", "req/s", True)
            row(f"{t}: p99 latency", prefix, route, "p99", "ms", False)

single = {}
for line in open(os.path.join(work, "single.txt")):
    name, value = line.split()
    single[name] = float(value)
if single:
    nbytes = int(single_mib) * 2**20
    def series(kind):
        if kind == "sha256":
            return [single[f"sha256-{r}"] * 1000 / 1e6 for r in range(1, rounds + 1)]
        return [nbytes / single[f"{kind}-{r}"] / 1e6 for r in range(1, rounds + 1)]
    per = lambda vs: "/".join(f"{v:,.0f}" for v in vs)
    print()
    print(f"Single site (B), {single_mib} MiB, MB/s = 10^6 bytes/s:")
    print()
    print("| scenario | mirrorgate | reference | ratio | target |")
    print("|---|---|---|---|---|")
    for kind, ref, title in (("upload", "dd", "upload vs dd conv=fsync"),
                             ("download", "sha256", "download vs openssl sha256, one core")):
        m, r = series(kind), series(ref)
        ratio = statistics.median(m) / statistics.median(r)
        print(f"| {title} | {statistics.median(m):,.0f} MB/s ({per(m)}) | "
              f"{statistics.median(r):,.0f} MB/s ({per(r)}) | **{ratio:.2f}x** | "
              f">= 0.8x: {'met' if ratio >= 0.8 else 'missed'} |")

print()
print("Peak RSS (VmHWM) after the oha rounds:")
print()
print("| process (pid) | peak RSS |")
print("|---|---|")
for line in open(os.path.join(work, "memory.txt")):
    what, pid, kb = line.strip().split("|")
    print(f"| {what} ({pid}) | {int(kb)/1024:.1f} MiB |")

lines = [l.split() for l in open(os.path.join(work, "memory-streams.txt"))]
if lines:
    d = load("memory-streams")
    check(d, "memory-streams")
    names = {pid_a: "A (proxies, verifies)", pid_b: "B (reads storage, verifies)"}
    print()
    print(f"Peak RSS with {streams} concurrent {mib} MiB GETs through both hops (fresh processes,"
          f" {d['summary']['sizePerSec'] / 2**20:,.0f} MiB/s in all):")
    print()
    print("| site | idle | under load | target |")
    print("|---|---|---|---|")
    idle = {pid: int(kb) for phase, pid, kb in lines if phase == "idle"}
    for phase, pid, kb in lines:
        if phase == "loaded":
            mb = int(kb) / 1024
            print(f"| {names.get(pid, pid)} | {idle[pid]/1024:.1f} MiB | {mb:.1f} MiB |"
                  f" <= 64 MiB: {'met' if mb <= 64 else 'missed'} |")
PY
